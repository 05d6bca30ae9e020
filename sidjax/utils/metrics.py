"""Metrics to JSONL and TensorBoard (via tensorboardX), written by process 0 only.

A resumed training loop redoes the steps after its checkpoint: `forget_after(step)` drops
their rows first, so each step is logged once (`prefix`: only the rows of one series, e.g.
one of SASRec's dropout trials).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

import jax
from tensorboardX import SummaryWriter


class MetricsWriter:
    def __init__(self, directory: str | Path):
        self._enabled = jax.process_index() == 0
        self._dir = Path(directory)
        self._jsonl = None
        self._tb = None
        if self._enabled:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self._path, "a", encoding="utf-8")
            self._tb = SummaryWriter(logdir=str(self._dir / "tensorboard"))

    @property
    def _path(self) -> Path:
        return self._dir / "metrics.jsonl"

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
        if not self._enabled:
            return
        values = {f"{prefix}{k}": float(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
        self._jsonl.flush()
        for key, value in values.items():
            # TensorBoard tag names allow [A-Za-z0-9_./-]: HR@10 is written as HR_10 there.
            self._tb.add_scalar(key.replace("@", "_"), value, global_step=int(step))

    def forget_after(self, step: int, prefix: str = "") -> None:
        """Drop the rows of steps after `step` (and a line cut short by a kill), here and in TensorBoard.

        With a `prefix`, only rows whose metrics all carry it; TensorBoard, which purges by step
        alone, then keeps the other series' events (a redone step may show twice there).
        """
        if not self._enabled:
            return
        self._jsonl.close()
        kept = []
        for line in self._path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            names = [k for k in row if k not in ("step", "time")]
            if row["step"] <= step or not all(k.startswith(prefix) for k in names):
                kept.append(line + "\n")
        partial = self._path.with_suffix(".jsonl.tmp")
        partial.write_text("".join(kept), encoding="utf-8")
        partial.replace(self._path)
        self._jsonl = open(self._path, "a", encoding="utf-8")
        # TensorBoard hides the events at or after `purge_step` that earlier runs wrote.
        self._tb.close()
        self._tb = SummaryWriter(logdir=str(self._dir / "tensorboard"), purge_step=None if prefix else step + 1)

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tb.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
