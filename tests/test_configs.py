import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidjax.configs import ConfigError, base_config, validate


def test_base_config_is_valid():
    validate(base_config())


def test_locked_base_rejects_a_new_key_with_its_name():
    config = base_config()
    with pytest.raises(AttributeError, match="lerning_rate"):
        config.sft.lerning_rate = 1.0


def test_unknown_key_in_a_free_config_is_named():
    config = base_config()
    config.unlock()
    config.data.sourse = "shipped"
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.sourse'"):
        validate(config)


def test_wrong_type_is_named():
    config = base_config()
    config.unlock()
    del config.data["max_history"]
    config.data.max_history = "ten"
    with pytest.raises(ConfigError, match=r"'data\.max_history' must be int"):
        validate(config)


def test_unknown_stage_is_named():
    from sidjax.stages import entries

    config = base_config()
    config.stages = ("data", "sfft")
    with pytest.raises(ConfigError, match=r"'stages': unknown stage 'sfft'"):
        entries.check(config)


def test_redo_must_name_a_listed_stage():
    config = base_config()
    config.redo = ("sids",)
    with pytest.raises(ConfigError, match=r"'redo'"):
        validate(config)


def test_section_value_rules_run():
    config = base_config()
    config.data.source = "recbole"
    with pytest.raises(ConfigError, match=r"'data\.path'"):
        validate(config)


def test_model_dropout_is_a_probability_for_scratch_models_only():
    config = base_config()
    config.model.dropout = 0.1
    validate(config)
    config.model.dropout = 1.0
    with pytest.raises(ConfigError, match=r"'model\.dropout': must be in \[0, 1\)"):
        validate(config)
    config.model.dropout = 0.001  # dropout runs in steps of 1/256 (sidjax.model.dropout)
    with pytest.raises(ConfigError, match=r"'model\.dropout': dropout rate 0.001 rounds to 0.0"):
        validate(config)
    config.model.dropout = 0.1
    config.model.source = "gguf"
    with pytest.raises(ConfigError, match=r"'model\.dropout': is for models trained from scratch"):
        validate(config)


def test_new_rows_init_is_named_when_unknown():
    config = base_config()
    config.model.new_rows_init = "sampled"
    validate(config)
    config.model.new_rows_init = "random"
    with pytest.raises(ConfigError, match=r"'model\.new_rows_init': must be one of \('mean', 'sampled', 'titles'\)"):
        validate(config)


def test_distillation_needs_the_sidseq_task_and_a_weight_below_one():
    config = base_config()
    config.sft.distill_weight = 0.5
    with pytest.raises(ConfigError, match=r"'sft\.distill_weight': distils into 'sidseq' targets only"):
        validate(config)
    config.model.prompt_style = "sid_sequence"
    for task in config.sft.tasks:
        config.sft.tasks[task] = 0
    config.sft.tasks.sidseq = -1
    validate(config)
    config.sft.distill_weight = 1.0
    with pytest.raises(ConfigError, match=r"'sft\.distill_weight': must be in \[0, 1\)"):
        validate(config)


def test_several_thought_paths_need_sampled_reasoning():
    config = base_config()
    config.eval.think_paths = 4
    with pytest.raises(ConfigError, match=r"'eval\.think_paths': 4 paths need mode 'reasoning' and think_temperature"):
        validate(config)
    config.eval.mode = "reasoning"
    with pytest.raises(ConfigError, match=r"'eval\.think_paths'"):
        validate(config)
    config.eval.think_temperature = 1.0
    validate(config)
    config.eval.think_paths = 0
    with pytest.raises(ConfigError, match=r"'eval\.think_paths': must be >= 1"):
        validate(config)


def test_the_search_reward_needs_sampled_reasoning_rollouts():
    config = base_config()
    config.grpo.reward_weights.search = 1.0
    with pytest.raises(ConfigError, match=r"'grpo\.reward_weights\.search': the search after a thought needs "
                                          r"mode='reasoning' and rollout='sample'"):
        validate(config)
    config.grpo.mode, config.grpo.rollout = "reasoning", "sample"
    validate(config)
    config.grpo.search_beams = 0
    with pytest.raises(ConfigError, match=r"'grpo\.search_beams': must be >= 1, got 0"):
        validate(config)
    config.grpo.search_beams = 10
    config.grpo.credit_copies = False
    with pytest.raises(ConfigError, match=r"'grpo\.credit_copies': False needs citations='history'"):
        validate(config)
    config.grpo.citations = "history"
    validate(config)


@pytest.mark.parametrize("name", ["demo", "industrial_scratch", "industrial_smollm2", "industrial_qwen3_1p7b", "tpu_qwen25_7b_v5p64"])
def test_shipped_experiment_configs_validate(name):
    validate(importlib.import_module(f"experiments.configs.{name}").get_config())


def test_model_shape_changes_the_scratch_preset_and_is_validated():
    from sidjax.model.config import scratch

    config = base_config()
    config.model.preset = "small"
    config.model.shape.hidden_size = 192
    config.model.shape.head_dim = 48
    config.model.dropout = 0.2
    validate(config)
    model = scratch(config.model.preset, 256, shape=config.model.shape, dropout=config.model.dropout)
    assert (model.hidden_size, model.head_dim, model.num_layers, model.dropout) == (192, 48, 4, 0.2)
    config.model.shape.num_kv_heads = 3
    with pytest.raises(ConfigError, match=r"'model\.shape': .*multiple of num_kv_heads"):
        validate(config)
    config.model.shape.num_kv_heads = 0
    config.model.source = "gguf"
    with pytest.raises(ConfigError, match=r"'model\.shape\.hidden_size': shapes a model trained from scratch"):
        validate(config)


def test_eval_models_name_model_stage_entries_before_it_and_an_ensemble_searches_directly():
    from sidjax.stages import entries

    config = base_config()
    config.stages = ("data", "sids", "sft", "eval:sft", "sft:b", "eval", "eval:reasoning")
    config.eval.models = ("sft", "sft:b")
    config.entries = {"eval:sft": {"models": ("sft",)}, "eval:reasoning": {"mode": "reasoning"}}
    with pytest.raises(ConfigError, match=r"'entries\[\"eval:reasoning\"\]\.models'.*direct mode only"):
        validate(config)
    config.entries["eval:reasoning"].models = ("sft:b",)
    validate(config)
    entries.check(config)
    for bad, message in [(("sft", "sft"), "names an entry twice"), ((), "must name a model stage entry")]:
        config.eval.models = bad
        with pytest.raises(ConfigError, match=rf"'eval\.models': {message}"):
            validate(config)
    for bad, message in [(("sft", "eval:sft"), "'eval:sft' is not a sft / reason_sft / grpo / sdpo entry"),
                         (("sft", "grpo:b"), "'grpo:b' is not a sft / reason_sft / grpo / sdpo entry")]:
        config.eval.models = bad
        validate(config)
        with pytest.raises(ConfigError, match=rf"'eval\.models': {message}"):
            entries.check(config)


def test_an_entry_that_uses_an_entry_listed_after_it_is_refused_naming_the_key():
    from sidjax.stages import entries

    config = base_config()
    config.stages = ("data", "sids", "sft", "eval:early", "grpo", "eval")
    config.eval.models = ("sft",)
    config.entries = {"eval:early": {"models": ("grpo",)}}
    validate(config)
    with pytest.raises(ConfigError,
                       match=r"'entries\[\"eval:early\"\]\.models': 'grpo' is not a .* listed before 'eval:early'"):
        entries.check(config)
    config.entries = {"sft": {"init_from": "grpo"}}
    with pytest.raises(ConfigError, match=r"'entries\[\"sft\"\]\.init_from': 'grpo' is not a .* listed before 'sft'"):
        entries.check(config)
    config.entries = {}
    config.grpo.init_from = "sft:b"
    with pytest.raises(ConfigError, match=r"'grpo\.init_from': 'sft:b' is not"):
        entries.check(config)
    config.grpo.init_from = ""
    with pytest.raises(ConfigError, match=r"'grpo\.init_from': must name the model stage entry it fine-tunes"):
        validate(config)


def test_entries_override_known_knobs_of_their_section_and_unlisted_ones_are_unused(tmp_path):
    from sidjax.stages import StageContext

    config = base_config()
    config.stages = ("data", "sids", "sft", "eval")
    config.eval.models = ("sft",)
    config.entries = {"eval:sft": {"models": ("grpo",)}}
    validate(config)  # an entry the stages do not list (e.g. cut on the command line) changes nothing
    config.entries = {"sasrec": {"dim": 8}}
    with pytest.raises(ConfigError, match=r"'entries\[\"sasrec\"\]': stage 'sasrec' has no config section"):
        validate(config)
    config.entries = {"eval": {"modles": ("sft",)}}
    with pytest.raises(ConfigError, match=r"unknown config key 'entries\[\"eval\"\]\.modles'"):
        validate(config)
    config.entries = {"eval": {"beams": "many"}}
    with pytest.raises(ConfigError, match=r"'entries\[\"eval\"\]\.beams' must be int"):
        validate(config)
    config.entries = {"eval": {"beams": 5}}
    with pytest.raises(ConfigError, match=r"'entries\[\"eval\"\]\.topk': every K must be in 1\.\.beams \(5\)"):
        validate(config)
    config.entries = {"eval": {"models": ("sft",), "beams": 5, "topk": (1, 5)}}
    validate(config)
    assert StageContext(config, tmp_path, "eval").config.eval.beams == 5 and config.eval.beams == 20


def test_eval_rescore_names_dense_model_stages_each_with_a_positive_weight():
    from sidjax.stages import entries

    config = base_config()
    config.stages = ("data", "sids", "sft", "sasrec", "markov", "eval")
    config.eval.models = ("sft",)
    config.eval.rescore, config.eval.rescore_weights = ("sasrec", "markov"), (0.3, 0.4)
    validate(config)
    entries.check(config)
    for rescore, message in [(("sft",), "'sft' is not a sasrec / markov entry"),
                             (("markov:b",), "'markov:b' is not a sasrec / markov entry")]:
        config.eval.rescore, config.eval.rescore_weights = rescore, (1.0,)
        with pytest.raises(ConfigError, match=rf"'eval\.rescore': {message}"):
            entries.check(config)
    for rescore, weights, key, message in [
            (("sasrec", "sasrec"), (1.0, 1.0), "rescore", "names an entry twice"),
            (("sasrec", "markov"), (0.3,), "rescore_weights", "needs one weight per eval.rescore entry"),
            (("sasrec",), (0.0,), "rescore_weights", "every weight must be > 0")]:
        config.eval.rescore, config.eval.rescore_weights = rescore, weights
        with pytest.raises(ConfigError, match=rf"'eval\.{key}': {message}"):
            validate(config)
    config.eval.rescore, config.eval.rescore_weights = (), ()
    config.baselines.markov.decay = 0.0
    with pytest.raises(ConfigError, match=r"'baselines\.markov\.decay': must be in \(0, 1\]"):
        validate(config)


def test_eval_beams_from_names_an_earlier_plain_eval_of_the_same_search():
    from sidjax.stages import entries, fingerprint

    config = base_config()
    config.stages = ("data", "sids", "sft", "sft:b", "sasrec", "markov", "eval:plain", "eval")
    config.eval.models, config.eval.splits = ("sft",), ("valid", "test")
    config.eval.rescore, config.eval.rescore_weights = ("sasrec", "markov"), (0.3, 0.4)
    config.entries = {"eval:plain": {"rescore": (), "rescore_weights": ()}, "eval": {"beams_from": "eval:plain"}}
    validate(config)
    entries.check(config)
    assert fingerprint.uses(config, "eval") == ("sft", "sasrec", "markov", "eval:plain")
    key = r"'entries\[\"eval\"\]\.beams_from'"
    for plain, message in [({"beams": 10}, r"whose search differs: beams 20 vs 10"),
                           ({"models": ("sft:b",)}, r"whose search differs: models \('sft',\) vs \('sft:b',\)"),
                           ({"batch_size": 8}, r"whose search differs: batch_size 32 vs 8"),
                           ({"splits": ("test",)}, r"'eval:plain' did not evaluate the split\(s\) \('valid',\)"),
                           ({"rescore": ("markov",), "rescore_weights": (1.0,)}, r"must be a direct-mode eval without "
                            r"re-scoring that writes its samples \(mode direct, rescore \('markov',\)"),
                           ({"write_samples": False}, r"write_samples False")]:
        config.entries["eval:plain"] = {"rescore": (), "rescore_weights": (), **plain}
        with pytest.raises(ConfigError, match=rf"{key}: .*{message}"):
            entries.check(config)
    config.entries["eval:plain"] = {"rescore": (), "rescore_weights": (), "models": ["sft"]}  # as a saved config
    entries.check(config)
    config.entries["eval"] = {"beams_from": "sasrec"}
    with pytest.raises(ConfigError, match=rf"{key}: 'sasrec' is not a eval entry listed before 'eval'"):
        entries.check(config)
    config.entries["eval"] = {"beams_from": "eval:plain"}
    source, config.data.source = config.data.source, "mix"
    with pytest.raises(ConfigError, match=rf"{key}: re-scoring saved beams of a mix of domains is not supported"):
        entries.check(config)
    config.data.source = source
    config.entries["eval"] = {"beams_from": "eval:plain", "rescore": (), "rescore_weights": ()}
    with pytest.raises(ConfigError, match=rf"{key}: re-scores saved beams, so it needs eval.rescore and direct mode"):
        validate(config)


def test_model_lineages_continue_and_seed_as_configured(tmp_path):
    from sidjax.stages import StageContext, entries

    config = base_config()
    config.seed = 10
    config.stages = ("data", "sft", "sft:b", "grpo", "eval:sft", "grpo:b", "sft:c", "eval")
    config.entries = {"sft:b": {"seed_offset": 1}, "grpo:b": {"init_from": "sft:b", "seed_offset": 1},
                      "sft:c": {"seed_offset": 2}, "eval:sft": {"models": ("sft",)}, "eval": {"models": ("sft:c",)}}
    validate(config)
    entries.check(config)
    context = {spec: StageContext(config, tmp_path, spec) for spec in config.stages}
    assert {spec: c.init_from() for spec, c in context.items() if c.name in ("sft", "grpo")} == {
        "sft": None, "sft:b": None, "grpo": "sft", "grpo:b": "sft:b", "sft:c": None}
    assert {spec: c.config.eval.models for spec, c in context.items() if c.name == "eval"} == {
        "eval:sft": ("sft",), "eval": ("sft:c",)}
    assert {spec: c.config.seed for spec, c in context.items()} == {
        "data": 10, "sft": 10, "sft:b": 11, "grpo": 10, "eval:sft": 10, "grpo:b": 11, "sft:c": 12, "eval": 10}
    assert config.seed == 10 and config.eval.models == ("grpo",)


def test_the_same_entries_in_another_valid_order_run_the_same_models(tmp_path, monkeypatch):
    from sidjax.stages import entries, registry
    from sidjax.stages.context import DONE

    def record(ctx):
        c = ctx.config.eval
        if ctx.name == "eval":
            return {"uses": ([ctx.output_of(m).name for m in c.models], [ctx.output_of(r).name for r in c.rescore],
                             c.mode, c.beams_from and ctx.output_of(c.beams_from).name)}
        return {"uses": (ctx.init_from(), ctx.config.seed)} if ctx.name in registry.MODEL_STAGES else {}

    monkeypatch.setattr(registry, "STAGES", {name: record for name in registry.STAGES})
    from sidjax.stages import runner

    monkeypatch.setattr(runner, "STAGES", registry.STAGES)
    config = importlib.import_module("experiments.configs.industrial_scratch").get_config()
    config.stages = tuple(s for s in config.stages if s != "baselines")
    reordered = config.copy_and_resolve_references()
    reordered.stages = ("data", "sids", "sasrec", "markov", "sft:c", "sft:b", "grpo:b", "grpo:c", "sft", "eval:sft",
                        "grpo", "eval:grpo", "eval:ensemble", "eval")
    for c in (config, reordered):
        validate(c)
        entries.check(c)
    first = runner.run_pipeline(config, tmp_path / "listed")
    second = runner.run_pipeline(reordered, tmp_path / "reordered")
    assert first == second
    assert first["eval"]["uses"] == (["grpo", "grpo_b", "grpo_c"], ["sasrec", "markov"], "direct", "eval_ensemble")
    assert first["eval:grpo"]["uses"] == (["grpo"], [], "direct", "")
    assert first["eval:ensemble"]["uses"] == (["grpo", "grpo_b", "grpo_c"], [], "direct", "")
    assert (first["sft:b"]["uses"], first["grpo:b"]["uses"]) == ((None, 1), ("sft:b", 1))
    assert (first["sft:c"]["uses"], first["grpo:c"]["uses"]) == ((None, 2), ("sft:c", 2))
    assert (tmp_path / "reordered" / "eval" / DONE).is_file()


def test_loading_a_config_file_imports_no_jax():
    code = ("import runpy, sys; import sidjax.configs\n"
            "for name in ('demo', 'industrial_scratch'):\n"
            "    runpy.run_path(f'experiments/configs/{name}.py')['get_config']()\n"
            "print(sorted(m for m in ('jax', 'flax') if m in sys.modules))")
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_saved_config_without_newer_knobs_reads_them_at_their_defaults():
    from sidjax.configs import saved_config

    old = base_config().to_dict()
    del old["data"]["split"], old["data"]["index_file"]
    old["data"]["max_history"] = 7
    config = saved_config(old)
    assert config.data.split == "time" and config.data.index_file == "" and config.data.max_history == 7
    assert saved_config({"name": "x", "entries": {"eval:sft": {"models": ["sft"]}}}).entries["eval:sft"].models == ["sft"]


def test_a_model_stage_entry_trains_with_its_own_remat_or_the_meshs():
    from sidjax.configs.lineage import stage_remat
    from sidjax.stages.context import entry_config

    config = base_config()
    config.mesh.remat = "dots"
    config.stages = ("data", "sids", "sft", "sft:b")
    config.entries = {"sft:b": {"seed_offset": 1, "remat": "none"}}
    validate(config)
    assert stage_remat(entry_config(config, "sft"), "sft") == "dots"
    assert stage_remat(entry_config(config, "sft:b"), "sft") == "none"
    config.grpo.remat = "half"
    with pytest.raises(ConfigError, match=r"'grpo\.remat': must be one of \('none', 'dots', 'full'\) or ''"):
        validate(config)
