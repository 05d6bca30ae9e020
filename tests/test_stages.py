import json
import subprocess
import sys
from pathlib import Path

from sidjax.configs import base_config
from sidjax.stages import DONE, run_pipeline

REPO = Path(__file__).resolve().parents[1]


def _data_config():
    config = base_config()
    config.stages = ("data",)
    return config


def test_data_stage_writes_statistics_and_resumes(tmp_path):
    config = _data_config()
    summaries = run_pipeline(config, tmp_path)
    stats = summaries["data"]
    assert stats["users"] == 7694 and stats["items"] == 3686
    assert (stats["train_samples"], stats["valid_samples"], stats["test_samples"]) == (36259, 4532, 4533)
    assert json.loads((tmp_path / "config.json").read_text())["stages"] == ["data"]
    done = tmp_path / "data" / DONE
    first = done.stat().st_mtime_ns
    run_pipeline(config, tmp_path)
    assert done.stat().st_mtime_ns == first, "a finished stage must be skipped"
    config.redo = ("data",)
    run_pipeline(config, tmp_path)
    assert done.stat().st_mtime_ns != first, "a stage in config.redo must run again"


def _launch(tmp_path, *flags):
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", "--config=experiments/configs/demo.py",
         f"--workdir={tmp_path}", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def test_launcher_names_a_config_typo_before_any_work(tmp_path):
    result = _launch(tmp_path / "run", "--config.data.max_histroy=3")
    assert result.returncode != 0
    assert "max_histroy" in result.stderr
    assert not (tmp_path / "run").exists()


def test_launcher_rejects_an_unknown_stage(tmp_path):
    result = _launch(tmp_path / "run", "--config.stages=('data','evall')")
    assert result.returncode != 0
    assert "evall" in result.stderr
    assert not (tmp_path / "run").exists()


def test_launcher_refuses_an_entry_that_uses_a_later_entry_naming_the_key(tmp_path):
    result = _launch(tmp_path / "run", "--config.entries['eval:sft'].models=('grpo',)")
    assert result.returncode != 0
    assert """config key 'entries["eval:sft"].models': 'grpo' is not a""" in result.stderr
    assert "listed before 'eval:sft'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_launcher_keeps_its_own_log_and_drops_library_info_lines(tmp_path):
    result = _launch(tmp_path / "run", "--config.stages=('data',)")
    assert result.returncode == 0, result.stderr
    assert "stage data: done" in result.stderr and "users: 7694" in result.stderr
    assert "Unable to initialize backend" not in result.stderr  # jax's INFO line about a missing TPU


def test_standalone_evaluations_never_land_in_a_stage_entry_dir(tmp_path):
    from sidjax.stages import STAGES, stage_dirname
    from sidjax.stages.eval import standalone_dir

    entries = ("sft", "eval:sft", "grpo", "eval:grpo", "grpo:b", "eval:grpo+grpo_b", "eval")
    outputs = [standalone_dir(tmp_path, [tmp_path / "sft"]), standalone_dir(tmp_path, [tmp_path / "grpo"]),
               standalone_dir(tmp_path, [tmp_path / "grpo", tmp_path / "grpo_b"])]
    outputs.append(standalone_dir(tmp_path, [tmp_path / "grpo"], [tmp_path / "sasrec", tmp_path / "markov"]))
    assert [o.relative_to(tmp_path).as_posix() for o in outputs] == [
        "evals/sft", "evals/grpo", "evals/grpo+grpo_b", "evals/grpo@sasrec+markov"]
    top = outputs[0].parent.name
    assert not any(top == name or top.startswith(name + "_") for name in STAGES)
    stage_dirs = {tmp_path / stage_dirname(e) for e in entries}
    assert not stage_dirs & (set(outputs) | {o.parent for o in outputs})


def test_baselines_score_the_dense_stage_models_instead_of_fitting_others(tmp_path):
    from sidjax.baselines import markov, sasrec

    config = _data_config()
    config.stages = ("data", "sasrec", "markov", "baselines")
    s = config.baselines.sasrec
    s.dim, s.layers, s.max_epochs, s.patience, s.dropouts = 8, 1, 2, 1, (0.0,)
    summaries = run_pipeline(config, tmp_path)
    fit, scored = summaries["sasrec"], summaries["baselines"]["sasrec"]
    assert scored["from_stage"] == "sasrec" and scored["valid"] == fit["valid"]
    assert scored["best_epoch"] == fit["best_epoch"] and scored["trials"] == fit["trials"]
    # The saved model is the one that was tuned: it scores valid as the fit recorded.
    from sidjax.data.sources import load_dataset

    dataset = load_dataset(config.data)
    reloaded = sasrec.load(tmp_path / "sasrec")
    c = config.baselines
    assert sasrec.evaluate(reloaded, dataset.splits["valid"], c.topk, c.eval_batch_size) == fit["valid"]
    assert sasrec.evaluate(reloaded, dataset.splits["test"], c.topk, c.eval_batch_size) == scored["test"]
    assert not (tmp_path / "baselines" / "metrics.jsonl").exists(), "no second SASRec was trained"
    chained = summaries["baselines"]["markov"]
    assert chained["from_stage"] == "markov" and chained["valid"] == summaries["markov"]["valid"]
    chain = markov.load(tmp_path / "markov")
    assert chain.evaluate(dataset.splits["test"], c.topk, c.eval_batch_size) == chained["test"]
    assert summaries["markov"]["transitions"] == len(dataset.splits["train"])


def test_baselines_are_scored_at_the_sid_level_of_the_runs_sids(tmp_path):
    import numpy as np

    from sidjax.baselines import markov, ranking_depth, score, sid_groups
    from sidjax.data.sources import load_dataset
    from sidjax.stages.baselines import ranks_file
    from sidjax.utils.ranking import read_ranks

    config = _data_config()
    config.stages = ("data", "sids", "markov", "baselines")
    config.sids.source = "paper"
    config.baselines.methods = ("popularity", "markov")
    results = run_pipeline(config, tmp_path)["baselines"]
    dataset = load_dataset(config.data)
    groups = sid_groups(np.load(tmp_path / "sids" / "sids.npy"))
    chain = markov.load(tmp_path / "markov")
    c = config.baselines
    test = dataset.splits["test"]
    expected = score(chain.top_items(test, ranking_depth(c.topk, groups), c.eval_batch_size), test.target,
                     c.topk, groups)
    got = results["markov"]
    assert got["hit"] == "sid" and got["test"] == expected.metrics
    assert got["item_level"]["test"] == chain.evaluate(test, c.topk, c.eval_batch_size)
    assert got["test"]["NDCG@10"] > got["item_level"]["test"]["NDCG@10"]  # collision groups count, as for SID models
    np.testing.assert_array_equal(read_ranks(tmp_path / "baselines" / ranks_file("markov"))["test"], expected.ranks)
    assert results["popularity"]["hit"] == "sid"
    assert json.loads((tmp_path / "baselines" / "metrics.json").read_text())["markov"]["test"] == got["test"]
