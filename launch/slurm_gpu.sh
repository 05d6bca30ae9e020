#!/usr/bin/env bash
# sidjax on a SLURM GPU cluster. Submit from the repository root (its .venv must exist on every node,
# e.g. a shared home):
#
#   One process per GPU (default; JAX's SLURM detection gives each process its GPU SLURM_LOCALID):
#     sbatch --nodes=1 launch/slurm_gpu.sh                       # 8x H100 on one node
#     sbatch --nodes=4 launch/slurm_gpu.sh                       # 32 GPUs
#   One process per host (each process drives all of its node's GPUs):
#     sbatch --nodes=4 --ntasks-per-node=1 --export=ALL,PER_HOST=1 launch/slurm_gpu.sh
#
# Settings (environment, passed with sbatch --export=ALL,NAME=value,...):
#   CONFIG       default experiments/configs/industrial_qwen3_1p7b.py
#   WORKDIR      run directory on a filesystem every node shares (required for >1 node: orbax
#                checkpoints are written by every process into one directory); default runs/$SLURM_JOB_NAME
#   EXTRA_FLAGS  more flags for experiments.train
#   PER_HOST=1   one process per node (run with --ntasks-per-node=1)
#
#SBATCH --job-name=sidjax
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

CONFIG="${CONFIG:-experiments/configs/industrial_qwen3_1p7b.py}"
WORKDIR="${WORKDIR:-runs/${SLURM_JOB_NAME:-sidjax}}"
EXTRA_FLAGS="${EXTRA_FLAGS:-}"
PER_HOST="${PER_HOST:-0}"
PYTHON="${SLURM_SUBMIT_DIR:-$PWD}/.venv/bin/python"

mkdir -p "${WORKDIR}"
if [[ "${PER_HOST}" == "1" ]]; then
  # JAX's SLURM detection would give each process only GPU SLURM_LOCALID (0): start it explicitly
  # instead, so each process sees all of its node's GPUs.
  SIDJAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1):$((SLURM_JOB_ID % 4096 + 61440))"
  export SIDJAX_COORDINATOR_ADDRESS
  export SIDJAX_NUM_PROCESSES="${SLURM_NTASKS}"
  MODE=explicit
else
  MODE=slurm
fi

# srun starts one task per process; each reads its own SLURM_PROCID (explicit mode: as SIDJAX_PROCESS_ID).
# shellcheck disable=SC2016,SC2086
srun --kill-on-bad-exit=1 bash -c 'export SIDJAX_PROCESS_ID="${SLURM_PROCID}"; exec "$0" -m experiments.train \
  --config="$1" --workdir="$2" --distributed="$3" "${@:4}"' \
  "${PYTHON}" "${CONFIG}" "${WORKDIR}" "${MODE}" ${EXTRA_FLAGS}
