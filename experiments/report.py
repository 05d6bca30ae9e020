"""Turn finished runs into a Markdown results table and PNG plots.

    python -m experiments.report --workdir=RUN1 [--workdir=RUN2 ...] [--out=DIR]

Each workdir is one run (one configuration or ablation). Every stage directory
in it is read: `DONE.json` (wall time), `metrics.json` of `eval*` stages and of
experiments.eval's `evals/*` (HR@K / NDCG@K per split) and of `baselines` (per method and split), and
`metrics.jsonl` (training curves; GRPO reward and response length). The papers'
numbers on the same test split are printed beside ours. Output: `report.md` and
PNGs in `--out` (default: `<first workdir>/report`).
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from absl import app, flags, logging  # noqa: E402

from sidjax.stages import DONE, STAGES  # noqa: E402
from sidjax.stages.eval import STANDALONE_DIR  # noqa: E402

KS = (1, 3, 5, 10)
SPLITS = ("valid", "test")
RL_STAGES = ("grpo", "sdpo")
RL_KEYS = ("train/reward/total", "train/response_length")

# MiniOneRec paper, Table 1, Industrial_and_Scientific test split (4,533 rows); also in
# sidjax/data/industrial_and_scientific/PROVENANCE.md. The paper reports no @1 numbers.
PAPERS: tuple[tuple[str, dict[str, float]], ...] = (
    ("SASRec", {"HR@3": .0790, "NDCG@3": .0700, "HR@5": .0909, "NDCG@5": .0748, "HR@10": .1088, "NDCG@10": .0806}),
    ("TIGER", {"HR@3": .0852, "NDCG@3": .0742, "HR@5": .1010, "NDCG@5": .0807, "HR@10": .1321, "NDCG@10": .0908}),
    ("LC-Rec", {"HR@3": .0915, "NDCG@3": .0805, "HR@5": .1057, "NDCG@5": .0862, "HR@10": .1332, "NDCG@10": .0952}),
    ("S-DPO", {"HR@3": .1032, "NDCG@3": .0906, "HR@5": .1238, "NDCG@5": .0991, "HR@10": .1524, "NDCG@10": .1082}),
    ("MiniOneRec (Qwen, SFT + GRPO)",
     {"HR@3": .1143, "NDCG@3": .1011, "HR@5": .1321, "NDCG@5": .1084, "HR@10": .1586, "NDCG@10": .1167}),
)
PAPER_BEST = PAPERS[-1]


class ReportError(ValueError):
    """A run directory or one of its files that cannot be read; the message names it."""


@dataclasses.dataclass
class Stage:
    spec: str  # the config entry, e.g. "eval:after_sft" (from the directory name when not in config.stages)
    name: str  # the registered stage name, e.g. "eval"
    dir: Path
    seconds: float | None  # wall time from DONE.json; None while unfinished
    metrics: dict[str, Any] | None  # metrics.json
    curves: list[dict[str, float]]  # metrics.jsonl rows


@dataclasses.dataclass
class Run:
    label: str
    workdir: Path
    config_name: str
    stages: list[Stage]


@dataclasses.dataclass
class Row:
    run: str
    what: str  # stage and model, or baseline method
    split: str
    metrics: dict[str, float]
    seconds: float | None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def _read_jsonl(path: Path) -> list[dict[str, float]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ReportError(f"{path}, line {number}: not valid JSON ({e.msg})") from None
    return rows


STAGE_FILES = (DONE, "metrics.json", "metrics.jsonl")


def stage_name(dirname: str) -> str:
    """The registered stage a directory belongs to (`reason_sft_x` -> reason_sft), else the name itself."""
    matches = [n for n in STAGES if dirname == n or dirname.startswith(n + "_")]
    return max(matches, key=len) if matches else dirname


def _is_stage_dir(d: Path) -> bool:
    return d.is_dir() and any((d / f).exists() for f in STAGE_FILES)


def _stage(d: Path, spec: str, name: str) -> Stage:
    done = _read_json(d / DONE) if (d / DONE).exists() else None
    return Stage(
        spec=spec, name=name, dir=d, seconds=done["seconds"] if done else None,
        metrics=_read_json(d / "metrics.json") if (d / "metrics.json").exists() else None,
        curves=_read_jsonl(d / "metrics.jsonl") if (d / "metrics.jsonl").exists() else [],
    )


def load_run(workdir: Path, label: str) -> Run:
    """Read every stage directory of a run, in config order, then any others, then experiments.eval's."""
    if not workdir.is_dir():
        raise ReportError(f"--workdir {workdir}: no such directory")
    config_path = workdir / "config.json"
    config = _read_json(config_path) if config_path.exists() else {}
    listed = [str(s).replace(":", "_") for s in config.get("stages", ())]
    found = sorted(d.name for d in workdir.iterdir() if _is_stage_dir(d))
    specs = dict(zip(listed, config.get("stages", ())))
    stages = [_stage(workdir / d, specs.get(d, d), stage_name(d))
              for d in [d for d in listed if d in found] + [d for d in found if d not in listed]]
    standalone = workdir / STANDALONE_DIR
    if standalone.is_dir():
        stages += [_stage(d, f"{STANDALONE_DIR}/{d.name}", "eval")
                   for d in sorted(standalone.iterdir()) if _is_stage_dir(d)]
    if not stages:
        raise ReportError(f"--workdir {workdir}: no stage directory (one holding {' / '.join(STAGE_FILES)}) in it")
    return Run(label=label, workdir=workdir, config_name=config.get("name", ""), stages=stages)


def result_rows(run: Run) -> list[Row]:
    """One row per (evaluated model or baseline, split)."""
    rows = []
    for stage in run.stages:
        if stage.metrics is None:
            continue
        if stage.name == "eval":
            model = stage.metrics.get("model", "?")
            models = model if isinstance(model, list) else [model]  # an ensemble names its members
            model = " + ".join(Path(str(m)).name for m in models)
            rescore = stage.metrics.get("rescore")
            if rescore:
                terms = rescore if isinstance(rescore, list) else [rescore]  # runs before a37811f wrote one dict
                model += ", re-scored by " + " + ".join(f"{Path(str(r['model'])).name} x {r['weight']}" for r in terms)
            what = f"{stage.spec} ({model}, {stage.metrics.get('mode', 'direct')})"
            rows += [Row(run.label, what, s, stage.metrics[s], stage.seconds) for s in SPLITS if s in stage.metrics]
        elif stage.name == "baselines":
            for method, result in stage.metrics.items():
                seconds = result.get("seconds")
                rows += [Row(run.label, f"{method} (baseline)", s, result[s], seconds) for s in SPLITS if s in result]
    return rows


def _cell(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(key)
    return "–" if value is None else f"{value:.4f}"


def markdown_table(rows: Sequence[Row], papers: Sequence[tuple[str, dict[str, float]]] = PAPERS) -> str:
    keys = [f"HR@{k}" for k in KS] + [f"NDCG@{k}" for k in KS]
    lines = ["| run | model / stage | split | " + " | ".join(keys) + " | time (s) |",
             "|---|---|---|" + "---:|" * (len(keys) + 1)]
    for r in rows:
        seconds = "–" if r.seconds is None else f"{r.seconds:.0f}"
        lines.append(f"| {r.run} | {r.what} | {r.split} | " + " | ".join(_cell(r.metrics, k) for k in keys)
                     + f" | {seconds} |")
    for name, metrics in papers:
        lines.append(f"| paper | {name} | test | " + " | ".join(_cell(metrics, k) for k in keys) + " | – |")
    return "\n".join(lines)


def _loss_keys(curves: list[dict[str, float]]) -> list[str]:
    return sorted({k for row in curves for k in row if k.endswith("loss")})


def plot_training_curves(run: Run, path: Path) -> bool:
    """One panel per stage that logged a loss; False when no stage did."""
    stages = [s for s in run.stages if _loss_keys(s.curves)]
    if not stages:
        return False
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        for key in _loss_keys(stage.curves):
            points = [(row["step"], row[key]) for row in stage.curves if key in row]
            ax.plot(*zip(*points), label=key, marker="." if len(points) < 30 else None)
        ax.set(title=stage.spec, xlabel="step", ylabel="loss")
        ax.legend(fontsize=7)
    fig.suptitle(f"{run.label}: training curves")
    _save(fig, path)
    return True


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rl(run: Run, path: Path) -> bool:
    """Reward and response length per step of every RL stage; False when there is none."""
    stages = [s for s in run.stages if s.name in RL_STAGES and any(k in row for row in s.curves for k in RL_KEYS)]
    if not stages:
        return False
    fig, axes = plt.subplots(1, len(RL_KEYS), figsize=(9, 3.5), squeeze=False)
    for ax, key in zip(axes[0], RL_KEYS):
        for stage in stages:
            points = [(row["step"], row[key]) for row in stage.curves if key in row]
            if points:
                ax.plot(*zip(*points), label=stage.spec)
        ax.set(title=key.removeprefix("train/"), xlabel="step")
        ax.legend(fontsize=7)
    fig.suptitle(f"{run.label}: RL")
    _save(fig, path)
    return True


def plot_metric_per_stage(rows: Sequence[Row], path: Path, metric: str = "NDCG@10") -> bool:
    """Bars of `metric` per evaluated model / baseline and split, with the papers' best as a line."""
    rows = [r for r in rows if metric in r.metrics]
    if not rows:
        return False
    labels = list(dict.fromkeys(f"{r.run}\n{r.what}" for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(labels)), 4.5))
    width = 0.8 / len(SPLITS)
    for i, split in enumerate(SPLITS):
        values = {f"{r.run}\n{r.what}": r.metrics[metric] for r in rows if r.split == split}
        xs = [j + (i - (len(SPLITS) - 1) / 2) * width for j, label in enumerate(labels) if label in values]
        ax.bar(xs, [values[label] for label in labels if label in values], width, label=split)
    if metric in PAPER_BEST[1]:
        ax.axhline(PAPER_BEST[1][metric], color="black", linestyle="--", linewidth=1,
                   label=f"paper: {PAPER_BEST[0]} (test)")
    top = max([r.metrics[metric] for r in rows] + [PAPER_BEST[1].get(metric, 0.0)])
    ax.set_ylim(0, top * 1.3)  # headroom so the legend never covers a bar
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    ax.set(ylabel=metric, title=f"{metric} per stage")
    ax.legend(fontsize=7, loc="upper left", ncols=3)
    _save(fig, path)
    return True


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def run_labels(workdirs: Sequence[Path]) -> list[str]:
    """Each run's directory name, or its full path when two runs share a name."""
    names = [w.name for w in workdirs]
    return [w.name if names.count(w.name) == 1 else str(w) for w in workdirs]


def write_report(workdirs: Sequence[Path], out: Path, command: str) -> Path:
    """Read the runs, write `report.md` and its PNGs into `out`; returns the report's path."""
    runs = [load_run(w, label) for w, label in zip(workdirs, run_labels(workdirs))]
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for run in runs for row in result_rows(run)]
    lines = ["# sidjax results", "", f"Command: `{command}`  ", f"Commit: {_commit()}", "",
             "## HR@K / NDCG@K", "",
             "Tuned on valid, test reported once per configuration. Generative models count a hit when a beam's "
             "SID equals the target's; baselines when the target item is among the top K. Paper rows: MiniOneRec "
             "paper, Table 1 (same test split, 4,533 rows; no @1 reported).", "",
             markdown_table(rows), "", "## Runs", "",
             "| run | config | stages (wall s) | total (s) |", "|---|---|---|---:|"]
    for run in runs:
        done = [s for s in run.stages if s.seconds is not None]
        stages = ", ".join(f"{s.spec} ({s.seconds:.0f})" for s in done)
        lines.append(f"| {run.label} | {run.config_name or '–'} | {stages or '–'} | "
                     f"{sum(s.seconds for s in done):.0f} |")
    plots = []
    for metric in ("NDCG@10", "HR@10"):
        name = f"per_stage_{metric.replace('@', '')}.png"
        if plot_metric_per_stage(rows, out / name, metric):
            plots.append((f"{metric} per stage", name))
    for run in runs:
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in run.label)
        if plot_training_curves(run, out / f"curves_{slug}.png"):
            plots.append((f"{run.label}: training curves", f"curves_{slug}.png"))
        if plot_rl(run, out / f"rl_{slug}.png"):
            plots.append((f"{run.label}: RL reward and response length", f"rl_{slug}.png"))
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({name})\n" for title, name in plots]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "A run directory; repeat for several runs (ablations).")
_OUT = flags.DEFINE_string("out", "", "Where report.md and the PNGs go (default: <first workdir>/report).")
flags.mark_flags_as_required(["workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    workdirs = [Path(w) for w in _WORKDIRS.value]
    out = Path(_OUT.value) if _OUT.value else workdirs[0] / "report"
    try:
        report = write_report(workdirs, out, "python -m experiments.report " + " ".join(sys.argv[1:]))
    except ReportError as e:
        raise app.UsageError(str(e)) from None
    logging.info("report: %s", report)
    print(report.read_text(encoding="utf-8"))


if __name__ == "__main__":
    app.run(main)
