"""Turn finished runs into a Markdown results table and PNG plots.

    python -m experiments.report --workdir=RUN1 [--workdir=RUN2 ...] [--out=DIR]

Each workdir is one run (one configuration or ablation). Every stage directory
in it is read: `DONE.json` (wall time), `metrics.json` of `eval*` stages and of
experiments.eval's `evals/*` (HR@K / NDCG@K per split) and of `baselines` (per method and split), and
`metrics.jsonl` (training curves; GRPO reward and response length), and the per-sample hit ranks
(`ranks.npz` / `ranks_<method>.npz`, else the eval's `<split>.jsonl`), from which a paired bootstrap
gives every metric a 95 % interval and every row its difference from a reference row on the same
users. Rows are ordered purely generative, ensemble, hybrid, baselines, then the papers' rows on the
same test split with their sources. Output: `report.md` and
PNGs in `--out` (default: `<first workdir>/report`).
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from absl import app, flags, logging  # noqa: E402

import numpy as np  # noqa: E402

from sidjax.configs import saved_config  # noqa: E402
from sidjax.stages import DONE, STAGES  # noqa: E402
from sidjax.stages.baselines import ranks_file  # noqa: E402
from sidjax.stages.eval import STANDALONE_DIR  # noqa: E402
from sidjax.utils import bootstrap  # noqa: E402
from sidjax.utils.bootstrap import Estimate  # noqa: E402
from sidjax.utils.errors import DataError  # noqa: E402
from sidjax.utils.ranking import RANKS_FILE, read_ranks  # noqa: E402

KS = (1, 3, 5, 10, 20)
SPLITS = ("valid", "test")
RL_STAGES = ("grpo", "sdpo")
RL_KEYS = ("train/reward/total", "train/response_length")

# The published rows on the same test split of each shipped benchmark, with where each figure comes from
# (also in the dataset's PROVENANCE.md under sidjax/data/), best last. None reports @1.
MINIONEREC_TABLE_1 = "MiniOneRec paper, Table 1"
UNITOK_TABLE_7 = "UniTok paper, Table 7; leave-one-out, beam 20"


@dataclasses.dataclass(frozen=True)
class Paper:
    name: str
    source: str
    metrics: dict[str, float]


INDUSTRIAL_PAPERS: tuple[Paper, ...] = tuple(Paper(*row) for row in (
    ("SASRec", MINIONEREC_TABLE_1,
     {"HR@3": .0790, "NDCG@3": .0700, "HR@5": .0909, "NDCG@5": .0748, "HR@10": .1088, "NDCG@10": .0806}),
    ("TIGER", MINIONEREC_TABLE_1,
     {"HR@3": .0852, "NDCG@3": .0742, "HR@5": .1010, "NDCG@5": .0807, "HR@10": .1321, "NDCG@10": .0908}),
    ("LC-Rec", MINIONEREC_TABLE_1,
     {"HR@3": .0915, "NDCG@3": .0805, "HR@5": .1057, "NDCG@5": .0862, "HR@10": .1332, "NDCG@10": .0952}),
    ("S-DPO", MINIONEREC_TABLE_1,
     {"HR@3": .1032, "NDCG@3": .0906, "HR@5": .1238, "NDCG@5": .0991, "HR@10": .1524, "NDCG@10": .1082}),
    ("SIDReasoner (Qwen3-1.7B, beam 10)", "README of FSmisaka/Reasoning4GenRec-Reproduction",
     {"HR@5": .1109, "NDCG@5": .0905, "HR@10": .1438, "NDCG@10": .1010}),
    ("V-STAR (value-guided decoding + sibling GRPO)", "quoted second-hand by a MiniOneRec fork",
     {"NDCG@10": .1217}),
    ("MiniOneRec (Qwen, SFT + GRPO)", MINIONEREC_TABLE_1,
     {"HR@3": .1143, "NDCG@3": .1011, "HR@5": .1321, "NDCG@5": .1084, "HR@10": .1586, "NDCG@10": .1167}),
))
OFFICE_PAPERS: tuple[Paper, ...] = tuple(Paper(*row) for row in (
    ("TIGER (T5)", UNITOK_TABLE_7, {"HR@10": .0594, "NDCG@10": .0295}),
    ("LC-Rec", UNITOK_TABLE_7, {"HR@10": .0637, "NDCG@10": .0311}),
    ("LETTER (T5)", UNITOK_TABLE_7, {"HR@10": .0649, "NDCG@10": .0326}),
    ("UniTok (T5)", UNITOK_TABLE_7, {"HR@10": .0897, "NDCG@10": .0432}),
))
PAPERS: dict[str, tuple[Paper, ...]] = {"Industrial_and_Scientific": INDUSTRIAL_PAPERS, "Office": OFFICE_PAPERS}
# Table order: what the rows are, purely generative first.
KINDS = ("generative", "generative ensemble", "hybrid", "baseline")


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
    dataset: str  # config.data.name; a mix: its domains' names joined by '+'
    stages: list[Stage]


@dataclasses.dataclass
class Row:
    run: str
    what: str  # stage and model, or baseline method
    kind: str  # one of KINDS
    level: str  # "sid": a hit is the target's SID among the top K (every row of a SID run); "item": the item itself
    split: str
    metrics: dict[str, float]
    seconds: float | None
    ranks: np.ndarray | None  # per-sample hit ranks (-1 = miss); None when the run kept none (no interval)
    spans: dict[str, Estimate] | None = None  # 95 % intervals of the metrics (`add_intervals`)


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
    data = saved_config(config).data
    dataset = "+".join(data.domains) if data.source == "mix" else data.name
    return Run(label=label, workdir=workdir, config_name=config.get("name", ""), dataset=dataset, stages=stages)


def _eval_ranks(directory: Path) -> dict[str, np.ndarray]:
    """An evaluation's per-sample ranks by split: `ranks.npz`, else the `hit_rank` of its samples files."""
    if (directory / RANKS_FILE).exists():
        return _read_ranks(directory / RANKS_FILE)
    return {s: _samples_ranks(directory / f"{s}.jsonl") for s in SPLITS if (directory / f"{s}.jsonl").exists()}


def _samples_ranks(samples: Path) -> np.ndarray:
    """The `hit_rank` of every record of a samples file, in sample order (runs written before ranks.npz)."""
    records = _read_jsonl(samples)
    try:
        ranks = {int(r["index"]): int(r["hit_rank"]) for r in records}
    except (KeyError, TypeError, ValueError):
        raise ReportError(f"{samples}: a record without an integer 'index' and 'hit_rank'") from None
    if sorted(ranks) != list(range(len(ranks))):
        raise ReportError(f"{samples}: the records' 'index' values are not 0..{len(ranks) - 1}")
    return np.array([ranks[i] for i in range(len(ranks))], np.int32)


def _read_ranks(path: Path) -> dict[str, np.ndarray]:
    try:
        return read_ranks(path)
    except DataError as e:
        raise ReportError(str(e)) from None


def _eval_rows(run: Run, stage: Stage) -> list[Row]:
    model = stage.metrics.get("model", "?")
    models = model if isinstance(model, list) else [model]  # an ensemble names its members
    what = " + ".join(Path(str(m)).name for m in models)
    rescore = stage.metrics.get("rescore")
    if rescore:
        terms = rescore if isinstance(rescore, list) else [rescore]  # runs before a37811f wrote one dict
        what += ", re-scored by " + " + ".join(f"{Path(str(r['model'])).name} x {r['weight']}" for r in terms)
    kind = "hybrid" if rescore else "generative ensemble" if len(models) > 1 else "generative"
    what = f"{stage.spec} ({what}, {stage.metrics.get('mode', 'direct')})"
    # A mix is scored domain by domain (<stage>/<domain>/): each domain's rows are a run of their own, so
    # differences pair rows of one domain's users only.
    scored = stage.metrics.get("domains") or {"": stage.metrics}
    rows = []
    for domain, metrics in scored.items():
        label, ranks = (f"{run.label} · {domain}", _eval_ranks(stage.dir / domain)) if domain else (
            run.label, _eval_ranks(stage.dir))
        rows += [Row(label, what, kind, "sid", s, metrics[s], stage.seconds, ranks.get(s))
                 for s in SPLITS if s in metrics]
    return rows


def _baseline_rows(run: Run, stage: Stage) -> list[Row]:
    rows = []
    for method, result in stage.metrics.items():
        path = stage.dir / ranks_file(method)
        ranks = _read_ranks(path) if path.exists() else {}
        level = result.get("hit", "item")  # runs before the SID-level yardstick scored items only
        rows += [Row(run.label, f"{method} (baseline)", "baseline", level, s, result[s], result.get("seconds"),
                     ranks.get(s)) for s in SPLITS if s in result]
    return rows


def result_rows(run: Run) -> list[Row]:
    """One row per (evaluated model or baseline, split), in stage order (`write_report` sorts them by KINDS)."""
    rows = []
    for stage in run.stages:
        if stage.metrics is not None and stage.name == "eval":
            rows += _eval_rows(run, stage)
        elif stage.metrics is not None and stage.name == "baselines":
            rows += _baseline_rows(run, stage)
    return rows


def _keys(rows: Sequence[Row] = ()) -> list[str]:
    """HR@K then NDCG@K for every K in KS, or only those some row of `rows` has."""
    keys = [f"HR@{k}" for k in KS] + [f"NDCG@{k}" for k in KS]
    return [k for k in keys if any(k in r.metrics for r in rows)] if rows else keys


def _cell(row: Row, key: str) -> str:
    value = row.metrics.get(key)
    if value is None:
        return "–"
    if row.spans is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{row.spans[key].low:.4f}, {row.spans[key].high:.4f}]"


def add_intervals(rows: Sequence[Row], resamples: int = bootstrap.DEFAULT_RESAMPLES,
                  seed: int = bootstrap.DEFAULT_SEED) -> None:
    """Give every row that kept its per-sample ranks the bootstrap intervals of its metrics."""
    for row in rows:
        if row.ranks is None:
            continue
        spans = bootstrap.intervals(row.ranks, KS, resamples, seed)
        # The ranks must be the ones the metrics came from (a stale ranks file would give other figures).
        stale = [k for k in _keys() if k in row.metrics and abs(spans[k].value - row.metrics[k]) > 1e-9]
        if stale:
            raise ReportError(f"{row.run} / {row.what} / {row.split}: the per-sample ranks give {stale[0]} "
                              f"{spans[stale[0]].value:.4f}, its metrics.json {row.metrics[stale[0]]:.4f}")
        row.spans = spans


def markdown_table(rows: Sequence[Row], papers: Sequence[Paper] = INDUSTRIAL_PAPERS) -> str:
    """Every row with its 95 % interval [low, high] where it has one (`add_intervals`), then the papers' rows."""
    keys = _keys(rows)
    lines = ["| run | model / stage | kind | hit | split | " + " | ".join(keys) + " | time (s) |",
             "|---|---|---|---|---|" + "---:|" * (len(keys) + 1)]
    for r in rows:
        seconds = "–" if r.seconds is None else f"{r.seconds:.0f}"
        lines.append(f"| {r.run} | {r.what} | {r.kind} | {r.level} | {r.split} | "
                     + " | ".join(_cell(r, k) for k in keys) + f" | {seconds} |")
    for paper in papers:
        row = Row("paper", paper.name, "paper", "sid", "test", paper.metrics, None, None)
        lines.append(f"| paper | {paper.name} ({paper.source}) | paper | sid | test | "
                     + " | ".join(_cell(row, k) for k in keys) + " | – |")
    return "\n".join(lines)


REASONING_KEYS = ("closed", "has_text", "mean_words", "loop", "grounded", "cited_valid", "kind_right", "consistent",
                  "distinct")


def reasoning_table(rows: Sequence[Row]) -> str:
    """The reasoning measures of every reasoning-mode row ("" when there is none)."""
    measured = [r for r in rows if "reasoning/closed" in r.metrics]
    if not measured:
        return ""
    lines = ["| run | model / stage | split | " + " | ".join(REASONING_KEYS) + " |",
             "|---|---|---|" + "---:|" * len(REASONING_KEYS)]
    for r in measured:
        cells = ["–" if f"reasoning/{k}" not in r.metrics else f"{r.metrics[f'reasoning/{k}']:.3f}"
                 for k in REASONING_KEYS]
        lines.append(f"| {r.run} | {r.what} | {r.split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_rows(rows: Sequence[Row], pattern: str = "") -> dict[tuple[str, str], Row]:
    """Per (run, split), the row the others are compared with: the first whose label contains `pattern`,
    else the first purely generative row (one SID model)."""
    refs: dict[tuple[str, str], Row] = {}
    for r in rows:
        chosen = (pattern in r.what) if pattern else r.kind == "generative"
        if chosen and r.ranks is not None and (r.run, r.split) not in refs:
            refs[(r.run, r.split)] = r
    return refs


def differences_table(rows: Sequence[Row], refs: dict[tuple[str, str], Row],
                      metrics: Sequence[str] = ("HR@10", "NDCG@10"), resamples: int = bootstrap.DEFAULT_RESAMPLES,
                      seed: int = bootstrap.DEFAULT_SEED) -> str:
    """Each row minus its run's reference row on the same users (the first n both scored), paired bootstrap.

    `*` marks a difference whose 95 % interval excludes zero.
    """
    lines = ["| run | split | model / stage | minus | users | " + " | ".join(metrics) + " |",
             "|---|---|---|---|---:|" + "---:|" * len(metrics)]
    for r in rows:
        ref = refs.get((r.run, r.split))
        if ref is None or r is ref or r.ranks is None:
            continue
        n = min(len(r.ranks), len(ref.ranks))
        diff = bootstrap.paired_difference(r.ranks[:n], ref.ranks[:n], KS, resamples, seed)
        cells = [f"{diff[m].value:+.4f} [{diff[m].low:+.4f}, {diff[m].high:+.4f}]"
                 + ("*" if diff[m].excludes_zero() else "") for m in metrics]
        lines.append(f"| {r.run} | {r.split} | {r.what} | {ref.what} | {n} | " + " | ".join(cells) + " |")
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


def _error_bar(row: Row, metric: str) -> tuple[float, float]:
    """How far the 95 % interval reaches below and above the value (none without per-sample ranks)."""
    if row.spans is None:
        return 0.0, 0.0
    value = row.metrics[metric]
    return value - row.spans[metric].low, row.spans[metric].high - value


def plot_metric_per_stage(rows: Sequence[Row], path: Path, metric: str = "NDCG@10",
                          best: Paper | None = INDUSTRIAL_PAPERS[-1]) -> bool:
    """Bars of `metric` per evaluated model / baseline and split (95 % intervals as error bars), with the papers'
    `best` as a line."""
    rows = [r for r in rows if metric in r.metrics]
    if not rows:
        return False
    labels = list(dict.fromkeys(f"{r.run}\n{r.what}" for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(labels)), 4.5))
    width = 0.8 / len(SPLITS)
    for i, split in enumerate(SPLITS):
        chosen = {f"{r.run}\n{r.what}": r for r in rows if r.split == split}
        shown = [label for label in labels if label in chosen]
        xs = [j + (i - (len(SPLITS) - 1) / 2) * width for j, label in enumerate(labels) if label in chosen]
        heights = [chosen[label].metrics[metric] for label in shown]
        errors = np.array([_error_bar(chosen[label], metric) for label in shown]).T  # [2, bars]
        ax.bar(xs, heights, width, label=split, yerr=errors, capsize=2)
    if best is not None and metric in best.metrics:
        ax.axhline(best.metrics[metric], color="black", linestyle="--", linewidth=1,
                   label=f"paper: {best.name} (test)")
    top = max([r.spans[metric].high if r.spans else r.metrics[metric] for r in rows]
              + [best.metrics.get(metric, 0.0) if best else 0.0])
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


def write_report(workdirs: Sequence[Path], out: Path, command: str, reference: str = "",
                 resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = bootstrap.DEFAULT_SEED) -> Path:
    """Read the runs, write `report.md` and its PNGs into `out`; returns the report's path.

    `reference`: the differences compare every row with the first row whose label contains it (default:
    each run's first one-SID-model row); `resamples`, `seed`: the paired bootstrap's.
    """
    if resamples < 1:
        raise ReportError(f"--resamples must be >= 1, got {resamples}")
    runs = [load_run(w, label) for w, label in zip(workdirs, run_labels(workdirs))]
    datasets = list(dict.fromkeys(run.dataset for run in runs))
    papers = [p for d in datasets for p in PAPERS.get(d, ())]
    best = PAPERS[datasets[0]][-1] if datasets[0] in PAPERS else None
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted([row for run in runs for row in result_rows(run)], key=lambda r: KINDS.index(r.kind))
    add_intervals(rows, resamples, seed)
    refs = reference_rows(rows, reference)
    if reference and not refs:
        raise ReportError(f"--reference {reference!r}: no row with per-sample ranks has it in its label")
    lines = ["# sidjax results", "", f"Command: `{command}`  ", f"Commit: {_commit()}", "",
             "## HR@K / NDCG@K", "",
             "Tuned on valid, test reported once per configuration. One yardstick: with `hit` = sid, a hit is the "
             "target's SID among the top K (the papers' definition); a baseline's item ranking is turned into a SID "
             "ranking first, each SID counted once, at its first item. `hit` = item (a run without SIDs, or one "
             "scored before the SID-level yardstick): the target item itself. Kinds: generative = one SID model "
             "alone; generative ensemble = SID models only; hybrid = SID models re-scored by dense item models. "
             f"[low, high]: 95 % interval, paired bootstrap over users ({resamples} resamples, seed {seed}); no "
             "interval where the run kept no per-sample ranks. Paper rows: their own reports on the same test split "
             f"of {' / '.join(datasets)}, with sources.", "",
             markdown_table(rows, papers), ""]
    reasoning = reasoning_table(rows)
    if reasoning:
        lines += ["## Reasoning", "", "Measured on each generated thought (`sidjax.eval.reasoning_quality`): the "
                  "share that closed `</think>` itself, that holds text beyond SIDs, that loops (a 4-gram three "
                  "times), that cites a history item (SID or title), whose cited SIDs are all real, and whose last "
                  "cited SID is the one ranked first (the last two over the thoughts that cite a SID); kind_right: "
                  "of the real items cited in a clause that names an item kind, the share named by their own "
                  "kind; distinct: the share of thoughts that differ beyond their SIDs and numbers.", "",
                  reasoning, ""]
    if refs:
        lines += ["## Differences on the same users", "",
                  "Each row minus its run's reference row, paired bootstrap (95 % interval); * = the interval "
                  "excludes zero.", "", differences_table(rows, refs, resamples=resamples, seed=seed), ""]
    lines += ["## Runs", "", "| run | config | stages (wall s) | total (s) |", "|---|---|---|---:|"]
    for run in runs:
        done = [s for s in run.stages if s.seconds is not None]
        stages = ", ".join(f"{s.spec} ({s.seconds:.0f})" for s in done)
        lines.append(f"| {run.label} | {run.config_name or '–'} | {stages or '–'} | "
                     f"{sum(s.seconds for s in done):.0f} |")
    plots = []
    for metric in ("NDCG@10", "HR@10"):
        name = f"per_stage_{metric.replace('@', '')}.png"
        if plot_metric_per_stage(rows, out / name, metric, best):
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
_REFERENCE = flags.DEFINE_string("reference", "", "Compare every row with the first row whose label contains this "
                                 "(default: each run's first one-SID-model row).")
_RESAMPLES = flags.DEFINE_integer("resamples", bootstrap.DEFAULT_RESAMPLES, "Paired bootstrap resamples.")
_SEED = flags.DEFINE_integer("seed", bootstrap.DEFAULT_SEED, "Paired bootstrap seed.")
flags.mark_flags_as_required(["workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    workdirs = [Path(w) for w in _WORKDIRS.value]
    out = Path(_OUT.value) if _OUT.value else workdirs[0] / "report"
    try:
        report = write_report(workdirs, out, "python -m experiments.report " + shlex.join(sys.argv[1:]),
                              _REFERENCE.value, _RESAMPLES.value, _SEED.value)
    except ReportError as e:
        raise app.UsageError(str(e)) from None
    logging.info("report: %s", report)
    print(report.read_text(encoding="utf-8"))


if __name__ == "__main__":
    app.run(main)
