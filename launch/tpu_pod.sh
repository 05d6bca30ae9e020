#!/usr/bin/env bash
# sidjax on a Cloud TPU VM slice (v5p-8: 1 host; v5p-64: 8 hosts), one process per host.
#
#   launch/tpu_pod.sh create    # create the TPU VM slice
#   launch/tpu_pod.sh copy      # copy this checkout (and MODEL_DIR) to every worker, install the venv
#   launch/tpu_pod.sh run       # run experiments.train on every worker at once (--distributed=auto)
#   launch/tpu_pod.sh delete    # tear the slice down
#   launch/tpu_pod.sh all       # create, copy, run, delete (delete also runs when run fails)
#
# Settings (environment):
#   PROJECT, ZONE            Google Cloud project and a zone with the accelerator (required)
#   TPU_NAME                 default sidjax
#   ACCELERATOR              default v5p-8 (v5p-64 for experiments/configs/tpu_qwen25_7b_v5p64.py)
#   RUNTIME_VERSION          default v2-alpha-tpuv5 (TPU VM base image for v5p)
#   CONFIG                   default experiments/configs/industrial_qwen3_1p7b.py
#   WORKDIR                  run directory, the SAME path on every worker and shared by all of them
#                            (Filestore NFS or a gcsfuse mount: orbax checkpoints are written by every
#                            host into one directory); default /mnt/shared/sidjax_runs/$TPU_NAME
#   MODEL_DIR                local HF model directory copied to ~/models/<name> on every worker ("" = none)
#   EXTRA_FLAGS              more flags for experiments.train (e.g. --config.grpo.steps=10)
#   SPOT=1                   create a Spot (preemptible) slice; a preempted run resumes from its checkpoints
set -euo pipefail

: "${PROJECT:?set PROJECT to your Google Cloud project}"
: "${ZONE:?set ZONE (e.g. us-east5-a for v5p)}"
TPU_NAME="${TPU_NAME:-sidjax}"
ACCELERATOR="${ACCELERATOR:-v5p-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-v2-alpha-tpuv5}"
CONFIG="${CONFIG:-experiments/configs/industrial_qwen3_1p7b.py}"
WORKDIR="${WORKDIR:-/mnt/shared/sidjax_runs/${TPU_NAME}}"
MODEL_DIR="${MODEL_DIR:-}"
EXTRA_FLAGS="${EXTRA_FLAGS:-}"
JAX_VERSION="0.10.2"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

tpu() {
  gcloud compute tpus tpu-vm "$@" --zone="${ZONE}" --project="${PROJECT}"
}

on_all_workers() {
  tpu ssh "${TPU_NAME}" --worker=all --command="$1"
}

create() {
  local spot=()
  if [[ "${SPOT:-0}" == "1" ]]; then spot=(--spot); fi
  tpu create "${TPU_NAME}" --accelerator-type="${ACCELERATOR}" --version="${RUNTIME_VERSION}" "${spot[@]}"
}

copy() {
  local archive
  archive="$(mktemp -d)/sidjax.tar.gz"
  # Tracked and new (not ignored) files only: no venv, no run directories.
  git -C "${REPO_DIR}" ls-files -z --cached --others --exclude-standard \
    | tar -C "${REPO_DIR}" --null -T - -czf "${archive}"
  tpu scp "${archive}" "${TPU_NAME}:~/sidjax.tar.gz" --worker=all
  on_all_workers "rm -rf ~/sidjax && mkdir -p ~/sidjax && tar -xzf ~/sidjax.tar.gz -C ~/sidjax \
    && cd ~/sidjax && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip \
    && .venv/bin/pip install -q -e . 'jax[tpu]==${JAX_VERSION}' \
       -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
  if [[ -n "${MODEL_DIR}" ]]; then
    on_all_workers "mkdir -p ~/models"
    tpu scp --recurse "${MODEL_DIR}" "${TPU_NAME}:~/models/" --worker=all
  fi
}

run() {
  # Every worker runs the same command; jax.distributed finds the others through the TPU metadata.
  on_all_workers "cd ~/sidjax && mkdir -p '${WORKDIR}' && .venv/bin/python -m experiments.train \
    --config='${CONFIG}' --workdir='${WORKDIR}' --distributed=auto ${EXTRA_FLAGS} \
    2>&1 | tee -a '${WORKDIR}/log_worker_\$(hostname).txt'"
}

delete() {
  tpu delete "${TPU_NAME}" --quiet
}

case "${1:-}" in
  create) create ;;
  copy) copy ;;
  run) run ;;
  delete) delete ;;
  all)
    create
    trap delete EXIT
    copy
    run
    ;;
  *)
    echo "usage: $0 {create|copy|run|delete|all}  (settings: see the header of $0)" >&2
    exit 2
    ;;
esac
