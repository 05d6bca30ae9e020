"""Stages `sft` -> `reason_sft` on the shipped data with a tiny scratch model: the bundles chain and reload."""
import json
import shutil

import jax
import numpy as np
import pytest

from sidjax import bundle as bundles
from sidjax.configs import base_config, validate
from sidjax.data.formatting import ChatFormat
from sidjax.stages import run_pipeline
from sidjax.sid.codes import sid_string
from sidjax.stages.sids import load_output as load_sids


def _config():
    config = base_config()
    config.stages = ("sids", "teacher", "sft", "reason_sft")
    config.model.preset = "tiny"
    config.model.bpe_vocab_size = 512
    config.teacher.max_items = 8
    config.teacher.max_users = 16
    config.mesh.remat = "dots"  # every model stage's, but sft's own
    config.sft.remat = "none"
    for name, tasks in (("sft", {"title2sid": 24, "sidhis2sid": 24}), ("reason_sft", {"reasoning": 16})):
        c = config[name]
        for task in c.tasks:
            c.tasks[task] = tasks.get(task, 0)
        c.update(dict(epochs=3, batch_size=8, eval_batch_size=8, max_steps=3, warmup_steps=1, log_every=1,
                      length_buckets=(128, 512), truncation="drop", max_eval_batches=1))
    validate(config)
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    return workdir, run_pipeline(_config(), workdir)


def test_sft_then_reason_sft_write_bundles_and_continue_from_each_other(run):
    workdir, summaries = run
    sft, reason = summaries["sft"], summaries["reason_sft"]
    assert sft["source"] == "config.model" and reason["source"] == "sft"
    assert sft["steps"] == reason["steps"] == 3
    assert sft["tasks"] == {"title2sid": 24, "sidhis2sid": 24}
    assert set(reason["tasks"]) == {"reasoning"}
    for summary in (sft, reason):
        assert np.isfinite(summary["best_valid_loss"]) and summary["tokens_per_second"] > 0
    losses = [json.loads(line) for line in (workdir / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in losses if "train/loss" in m] == [1, 2, 3]

    first, second = bundles.load(workdir / "sft"), bundles.load(workdir / "reason_sft")
    assert first.step == sft["best_step"] and second.step == reason["best_step"]
    # Each stage trained with its remat: sft its own, reason_sft (continuing it) the mesh's.
    assert first.model.config.remat == "none" and second.model.config.remat == "dots"
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()
    np.testing.assert_array_equal(first.sids, second.sids)
    np.testing.assert_array_equal(first.level_offsets, second.level_offsets)
    assert first.level_sizes == second.level_sizes == load_sids(workdir / "sids")[1]
    # The bundle carries its chat format: eval formats prompts exactly as training did.
    fmt = ChatFormat.from_hf_dir(workdir / "reason_sft")
    assert fmt.chat_template is not None and fmt.eos_token == first.tokenizer_config["eos_token"]


def test_a_finished_stage_is_skipped_and_its_bundle_stays(run):
    workdir, summaries = run
    before = (workdir / "sft" / bundles.BUNDLE).read_text()
    again = run_pipeline(_config(), workdir)
    assert again["sft"] == json.loads(json.dumps(summaries["sft"]))
    assert (workdir / "sft" / bundles.BUNDLE).read_text() == before
    assert jax.tree.leaves(bundles.load(workdir / "sft").model)


def test_sidjax_load_recommends_from_the_runs_last_model_stage(run):
    import sidjax

    workdir, summaries = run
    rec = sidjax.load(workdir)
    assert rec.bundle.directory == workdir / "reason_sft" and rec.bundle.step == summaries["reason_sft"]["best_step"]
    history = rec.bundle.dataset.splits["test"].histories()[0]
    rows = rec.recommend(history, beams=4)
    assert len(rows) == 4
    titles = rec.bundle.dataset.titles()
    for row in rows:
        assert set(row) == {"sid", "score", "items", "titles"}
        assert row["titles"] == [titles[i] for i in row["items"]]
        assert all(sid_string(rec.sids[i]) == row["sid"] for i in row["items"])


def test_reasoning_grpo_with_history_citations_continues_reason_sft(run, tmp_path):
    """SIDReasoner's stage 3 on the reasoning model, its rollouts decoded as the eval decodes a thought."""
    workdir, _ = run
    shutil.copytree(workdir, tmp_path / "run")
    config = _config()
    config.stages = config.stages + ("grpo",)
    config.grpo.update(dict(init_from="reason_sft", mode="reasoning", rollout="sample", citations="history",
                            no_repeat_ngram=4, steps=2, batch_size=2, group_size=2, pass_k=2, max_new_tokens=24,
                            remat="full"))
    validate(config)
    summary = run_pipeline(config, tmp_path / "run")["grpo"]
    assert summary["source"] == "reason_sft" and summary["steps"] == 2
    for name in ("think_closed", "response_length", "reward/total", "informative_groups"):
        assert np.isfinite(summary["mean"][name]), name
    grpo = bundles.load(tmp_path / "run" / "grpo")
    assert grpo.step == 2 and grpo.model.config.remat == "full"
