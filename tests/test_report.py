"""experiments.report on a synthetic two-run workdir: table cells, paper rows, plots, clear errors."""
import json

import pytest

from experiments import report


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _metrics(hr10, ndcg10):
    return {"HR@1": 0.05, "NDCG@1": 0.05, "HR@3": 0.08, "NDCG@3": 0.07, "HR@5": 0.1, "NDCG@5": 0.08,
            "HR@10": hr10, "NDCG@10": ndcg10, "HR@20": 0.2, "NDCG@20": 0.11, "users": 4533.0}


def _run(root, name, with_rl):
    run = root / name
    stages = ["data", "sft", "grpo", "eval:after_grpo", "baselines"] if with_rl else ["data", "sft", "eval"]
    _write(run / "config.json", {"name": "industrial_scratch", "stages": stages})
    _write(run / "data" / "DONE.json", {"seconds": 2.0, "summary": {}})
    _write(run / "sft" / "DONE.json", {"seconds": 600.0, "summary": {}})
    _jsonl(run / "sft" / "metrics.jsonl", [{"step": s, "time": 0, "train/loss": 3.0 / s, "train/grad_norm": 1.0}
                                         for s in range(1, 6)] + [{"step": 5, "time": 0, "valid/loss": 0.9}])
    evaluated = "grpo" if with_rl else "sft"
    eval_dir = run / ("eval_after_grpo" if with_rl else "eval")
    _write(eval_dir / "DONE.json", {"seconds": 120.0, "summary": {}})
    _write(eval_dir / "metrics.json", {"model": str(run / evaluated), "mode": "direct", "beams": 20,
                                       "valid": _metrics(0.1601, 0.1201), "test": _metrics(0.1587, 0.1168)})
    if with_rl:
        _write(run / "grpo" / "DONE.json", {"seconds": 900.0, "summary": {}})
        _jsonl(run / "grpo" / "metrics.jsonl", [{"step": s, "time": 0, "train/loss": 0.1, "train/reward/total": s / 10,
                                                 "train/response_length": 40 + s} for s in range(1, 4)])
        _write(run / "baselines" / "DONE.json", {"seconds": 300.0, "summary": {}})
        _write(run / "baselines" / "metrics.json", {
            "popularity": {"valid": _metrics(0.054, 0.0386), "test": _metrics(0.0567, 0.0411)},
            "sasrec": {"valid": _metrics(0.15, 0.1134), "test": _metrics(0.1412, 0.1011), "dropout": 0.3,
                       "seconds": 280.5, "trials": []}})
        # An evaluation run later by experiments.eval, outside config.stages.
        _write(run / "evals" / "sft" / "metrics.json", {"model": str(run / "sft"), "mode": "reasoning", "test": {
            **_metrics(0.1302, 0.0905), "reasoning/closed": 0.97, "reasoning/has_text": 0.96,
            "reasoning/mean_words": 41.5, "reasoning/loop": 0.02, "reasoning/grounded": 0.81}})
        _write(run / "eval_ensemble" / "metrics.json", {"model": [str(run / "grpo"), str(run / "grpo_b")],
                                                        "mode": "direct", "test": _metrics(0.1702, 0.1205)})
    return run


def test_report_has_every_stage_baseline_and_paper_row_and_plots(tmp_path):
    full, ablation = _run(tmp_path, "full", True), _run(tmp_path, "no_grpo", False)
    out = tmp_path / "out"
    path = report.write_report([full, ablation], out, "python -m experiments.report --workdir=full")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()

    def row(*cells):
        matches = [line for line in lines if all(f"| {c} |" in line for c in cells) and "| 0.970 |" not in line]
        assert len(matches) == 1, (cells, matches)
        return [c.strip() for c in matches[0].strip("|").split("|")]

    cells = row("full", "eval:after_grpo (grpo, direct)", "test")
    assert cells[2:5] == ["generative", "sid", "test"]
    assert cells[5:] == ["0.0500", "0.0800", "0.1000", "0.1587", "0.2000", "0.0500", "0.0700", "0.0800", "0.1168",
                         "0.1100", "120"]
    assert row("full", "eval:after_grpo (grpo, direct)", "valid")[8] == "0.1601"
    assert row("full", "evals/sft (sft, reasoning)", "test")[13] == "0.0905"
    assert row("full", "eval_ensemble (grpo + grpo_b, direct)", "test")[2] == "generative ensemble"
    assert row("full", "eval_ensemble (grpo + grpo_b, direct)", "test")[8] == "0.1702"
    sasrec = row("full", "sasrec (baseline)", "test")
    assert sasrec[2:4] == ["baseline", "item"]  # written before the SID-level yardstick: says so
    assert sasrec[8:] == ["0.1412", "0.2000", "0.0500", "0.0700", "0.0800", "0.1011", "0.1100", "280"]
    assert row("full", "popularity (baseline)", "valid")[8] == "0.0540"
    assert row("no_grpo", "eval (sft, direct)", "test")[8] == "0.1587"
    paper = row("paper", "MiniOneRec (Qwen, SFT + GRPO) (MiniOneRec paper, Table 1)", "test")
    assert paper[5:] == ["–", "0.1143", "0.1321", "0.1586", "–", "–", "0.1011", "0.1084", "0.1167", "–", "–"]
    main = text.split("## Reasoning")[0].splitlines()
    kinds = [line.split("|")[3].strip() for line in main if line.startswith("| full |") and "| test |" in line]
    assert kinds == sorted(kinds, key=report.KINDS.index) and kinds[0] == "generative"
    assert "## Differences" not in text  # no row kept per-sample ranks
    reasoning = text.split("## Reasoning")[1].split("##")[0]
    expected = "| full | evals/sft (sft, reasoning) | test | 0.970 | 0.960 | 41.500 | 0.020 | 0.810 | – | – |"
    assert expected in reasoning
    assert len([line for line in lines if line.startswith("| paper |")]) == len(report.INDUSTRIAL_PAPERS)
    assert row("full", "industrial_scratch")[3] == str(2 + 600 + 900 + 120 + 300)

    for name in ("per_stage_NDCG10.png", "per_stage_HR10.png", "curves_full.png", "curves_no_grpo.png",
                 "rl_full.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in text
    assert not (out / "rl_no_grpo.png").exists()


def test_an_office_run_is_compared_with_the_office_papers_at_its_own_ks(tmp_path):
    run = tmp_path / "office"
    _write(run / "config.json", {"name": "office_scratch", "stages": ["eval"], "data": {"name": "Office"}})
    office = {k: v for k, v in _metrics(0.0912, 0.0451).items() if k[-2:] in ("@5", "10", "20") or k == "users"}
    _write(run / "eval" / "metrics.json", {"model": str(run / "grpo"), "mode": "direct", "test": office})
    text = report.write_report([run], tmp_path / "out", "cmd").read_text(encoding="utf-8")
    header = next(line for line in text.splitlines() if line.startswith("| run |"))
    assert "HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20" in header and "HR@1 " not in header
    assert "| paper | UniTok (T5) (UniTok paper, Table 7; leave-one-out, beam 20) |" in text
    assert "MiniOneRec" not in text and "of Office" in text


def test_bad_files_are_named(tmp_path):
    with pytest.raises(report.ReportError, match="no such directory"):
        report.load_run(tmp_path / "missing", "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(report.ReportError, match="no stage directory"):
        report.load_run(tmp_path / "empty", "x")
    run = tmp_path / "run"
    _jsonl(run / "sft" / "metrics.jsonl", [{"step": 1, "train/loss": 1.0}])
    with open(run / "sft" / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n")
    with pytest.raises(report.ReportError, match=r"sft/metrics.jsonl, line 2"):
        report.load_run(run, "x")


def test_stage_names_follow_the_registry():
    assert report.stage_name("reason_sft") == "reason_sft"
    assert report.stage_name("reason_sft_long") == "reason_sft"
    assert report.stage_name("eval_after_sft") == "eval"
    assert report.stage_name("sft") == "sft"
    assert report.run_labels([report.Path("a/x"), report.Path("b/x"), report.Path("c/y")]) == ["a/x", "b/x", "y"]


def _ranked_run(root):
    """A run whose rows kept per-sample ranks: a one-model eval (ranks.npz), an ensemble eval (only its samples
    file) and the SID-level baselines (ranks_<method>.npz), each metrics.json computed from its ranks."""
    import numpy as np

    from sidjax.stages.baselines import ranks_file
    from sidjax.utils.ranking import RANKS_FILE, ranking_metrics, write_ranks

    rng = np.random.default_rng(0)
    ranks = {name: {split: rng.integers(-1, 12, 300).astype(np.int32) for split in ("valid", "test")}
             for name in ("sft", "ensemble", "markov")}
    ranks["ensemble"]["test"][:150] = 0  # clearly better than the single model on test

    def scored(split_ranks):
        return {split: {**ranking_metrics(r, (1, 3, 5, 10)), "users": 300.0} for split, r in split_ranks.items()}

    run = root / "ranked"
    _write(run / "config.json", {"name": "industrial_scratch", "stages": ["eval", "baselines", "eval:ens"]})
    _write(run / "eval" / "metrics.json", {"model": str(run / "sft"), "mode": "direct", **scored(ranks["sft"])})
    write_ranks(run / "eval" / RANKS_FILE, ranks["sft"])
    _write(run / "eval_ens" / "metrics.json", {"model": [str(run / "sft"), str(run / "sft_b")], "mode": "direct",
                                               **scored(ranks["ensemble"])})
    for split, r in ranks["ensemble"].items():
        _jsonl(run / "eval_ens" / f"{split}.jsonl", [{"index": i, "hit_rank": int(x)} for i, x in enumerate(r)])
    _write(run / "baselines" / "metrics.json", {"markov": {**scored(ranks["markov"]), "hit": "sid"}})
    write_ranks(run / "baselines" / ranks_file("markov"), ranks["markov"])
    return run, ranks


def test_every_row_with_ranks_gets_its_interval_and_a_paired_difference(tmp_path):
    from sidjax.utils import bootstrap

    run, ranks = _ranked_run(tmp_path)
    text = report.write_report([run], tmp_path / "out", "report", resamples=200, seed=3).read_text()
    main, differences = text.split("## Differences")
    table = [line for line in main.splitlines() if line.startswith("| ranked |") and "| test |" in line]
    assert [line.split("|")[2].strip() for line in table] == [
        "eval (sft, direct)", "eval:ens (sft + sft_b, direct)", "markov (baseline)"]
    spans = bootstrap.intervals(ranks["markov"]["test"], (1, 3, 5, 10), 200, 3)
    ndcg10 = spans["NDCG@10"]
    assert f"| {ndcg10.value:.4f} [{ndcg10.low:.4f}, {ndcg10.high:.4f}] |" in table[2]
    assert "| baseline | sid | test |" in table[2]
    assert ndcg10.low < ndcg10.value < ndcg10.high

    diff = bootstrap.paired_difference(ranks["ensemble"]["test"], ranks["sft"]["test"], (1, 3, 5, 10), 200, 3)
    hr10 = diff["HR@10"]
    assert hr10.excludes_zero() and hr10.low > 0
    line = next(line for line in differences.splitlines() if "| test | eval:ens" in line)
    assert "| eval (sft, direct) | 300 |" in line and f"{hr10.value:+.4f} [{hr10.low:+.4f}, {hr10.high:+.4f}]*" in line


def test_ranks_that_disagree_with_the_metrics_or_a_missing_reference_are_refused(tmp_path):
    import numpy as np

    from sidjax.utils.ranking import RANKS_FILE, write_ranks

    run, ranks = _ranked_run(tmp_path)
    with pytest.raises(report.ReportError, match="--reference 'nothing like it'"):
        report.write_report([run], tmp_path / "out", "report", reference="nothing like it", resamples=10)
    write_ranks(run / "eval" / RANKS_FILE, {s: np.full_like(r, -1) for s, r in ranks["sft"].items()})
    with pytest.raises(report.ReportError, match=r"eval \(sft, direct\) / valid: the per-sample ranks give HR@1"):
        report.write_report([run], tmp_path / "out", "report", resamples=10)
    (run / "eval" / RANKS_FILE).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(report.ReportError, match=r"eval/ranks.npz: is not a readable ranks file"):
        report.write_report([run], tmp_path / "out", "report", resamples=10)


def test_a_mix_run_reports_each_domain_as_its_own_run_with_its_own_reference(tmp_path):
    """Rows of a mix's eval, domain by domain (<eval>/<domain>/ranks.npz); differences pair one domain's users."""
    import numpy as np

    from sidjax.utils.ranking import RANKS_FILE, ranking_metrics, write_ranks

    rng = np.random.default_rng(1)
    run = tmp_path / "mix"
    _write(run / "config.json", {"name": "mix_transfer", "stages": ["eval:a", "eval:b"],
                                 "data": {"source": "mix", "domains": {"Office": {"name": "Office"},
                                                                       "Tools": {"name": "Tools"}}}})
    for entry, domains in (("eval_a", ("Office", "Tools")), ("eval_b", ("Office",))):
        scored = {}
        for domain in domains:
            ranks = {"test": rng.integers(-1, 12, 200 if domain == "Office" else 100).astype(np.int32)}
            (run / entry / domain).mkdir(parents=True)
            write_ranks(run / entry / domain / RANKS_FILE, ranks)
            scored[domain] = {"test": {**ranking_metrics(ranks["test"], (5, 10)), "users": len(ranks["test"])}}
        _write(run / entry / "metrics.json", {"model": str(run / entry), "mode": "direct", "domains": scored})
    text = report.write_report([run], tmp_path / "out", "report", resamples=50, seed=0).read_text()
    main, differences = text.split("## Differences")
    rows = [line.split("|")[1:3] for line in main.splitlines() if line.startswith("| mix ·")]
    assert [(r.strip(), w.strip().split(" ")[0]) for r, w in rows] == [
        ("mix · Office", "eval:a"), ("mix · Tools", "eval:a"), ("mix · Office", "eval:b")]
    assert "MiniOneRec" not in text and "UniTok" not in text  # a mix is no paper's split
    paired = [line for line in differences.splitlines() if "| test | eval:b" in line]
    assert len(paired) == 1 and "| eval:a (eval_a, direct) | 200 |" in paired[0]
