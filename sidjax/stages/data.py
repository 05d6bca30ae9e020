"""Stage `data`: load and validate the dataset, report its statistics."""
from __future__ import annotations

import json
from typing import Any

from absl import logging


def run(ctx) -> dict[str, Any]:
    stats = ctx.dataset.statistics()
    lines = [f"dataset {ctx.dataset.name} ({ctx.config.data.source})"]
    lines += [f"  {k:>20}: {v}" for k, v in stats.items()]
    report = "\n".join(lines)
    logging.info("\n%s", report)
    (ctx.dir / "statistics.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    return stats
