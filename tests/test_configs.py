import importlib

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
    config = base_config()
    config.stages = ("data", "sfft")
    with pytest.raises(ConfigError, match=r"unknown stage 'sfft'"):
        validate(config)


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
    config.model.dropout = 0.1
    config.model.source = "gguf"
    with pytest.raises(ConfigError, match=r"'model\.dropout': is for models trained from scratch"):
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


def test_eval_ensemble_names_model_stages_before_a_direct_eval():
    config = base_config()
    config.stages = ("data", "sids", "sft", "eval:sft", "sft:b", "eval", "eval:reasoning")
    config.eval.ensemble = ("sft", "sft:b")
    with pytest.raises(ConfigError, match=r"'eval\.ensemble'.*eval:reasoning.*direct mode only"):
        validate(config)
    config.stages = config.stages[:-1]
    validate(config)
    for bad, message in [(("sft",), "two or more"), (("sft", "eval:sft"), "not a model stage"),
                         (("sft", "grpo:b"), "not a model stage")]:
        config.eval.ensemble = bad
        with pytest.raises(ConfigError, match=message):
            validate(config)


def test_eval_rescore_names_dense_model_stages_each_with_a_positive_weight():
    config = base_config()
    config.stages = ("data", "sids", "sft", "sasrec", "markov", "eval")
    config.eval.rescore, config.eval.rescore_weights = ("sasrec", "markov"), (0.3, 0.4)
    validate(config)
    for rescore, weights, key, message in [
            (("sft",), (1.0,), "rescore", "'sft' is not a sasrec / markov stage entry"),
            (("markov:b",), (1.0,), "rescore", "'markov:b' is not a sasrec / markov stage entry"),
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


def test_tagged_model_stages_are_lineages_with_their_own_seed(tmp_path):
    from sidjax.stages import StageContext

    config = base_config()
    config.seed = 10
    config.stages = ("data", "sft", "sft:b", "grpo", "eval:sft", "grpo:b", "sft:c", "eval")
    context = {spec: StageContext(config, tmp_path, spec) for spec in config.stages}
    assert {spec: c.latest_model_stage() for spec, c in context.items()} == {
        "data": None, "sft": None, "sft:b": None, "grpo": "sft", "eval:sft": "grpo", "grpo:b": "sft:b",
        "sft:c": None, "eval": "sft:c"}
    assert {spec: c.config.seed for spec, c in context.items()} == {
        "data": 10, "sft": 10, "sft:b": 11, "grpo": 10, "eval:sft": 10, "grpo:b": 11, "sft:c": 12, "eval": 10}
    assert config.seed == 10
