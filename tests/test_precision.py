"""Mixed precision: "auto" follows the hardware, the bf16 path keeps float32 where it must, and its logits
stay as close to transformers' as transformers' own bf16 logits are to float32.

Tolerances (tiny Qwen3 / Qwen2 with unit-scale random weights, logits of std ~1, 512 positions). bf16 has an
8-bit mantissa (relative rounding 2^-9 ~ 0.002 per op); through two layers the two implementations round
in different places (sidjax: float32 attention scores and logits accumulation; transformers: bf16 q.k and a
bf16 lm_head output), so they agree only to bf16 accuracy, not bit for bit. Measured here (Qwen3 / Qwen2):
max |sidjax bf16 - HF bf16| / std(logits) 0.108 / 0.087, mean 0.0100 / 0.0094, argmax agreement 0.975 / 0.975;
against float32 sidjax bf16 is off by mean 0.0129 / 0.0104, HF bf16 by 0.0131 / 0.0101 and HF float32 under
autocast (float32 residual stream) by 0.0095 / 0.0077. The bounds below leave ~1.5-2x margin.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from tokenizers import Tokenizer, models, pre_tokenizers

from sidjax import bundle as bundles
from sidjax.configs import ConfigError, base_config, validate
from sidjax.model import hf, precision
from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM
from sidjax.sid import rqvae
from sidjax.train import checkpoint as ckpt
from sidjax.utils.checksums import write_manifest

VOCAB = 256
BATCH, LENGTH = 8, 64
MAX_VS_HF_BF16 = 0.2  # max |sidjax bf16 - HF bf16| / std(HF float32 logits)
MEAN_VS_HF_BF16 = 0.02  # mean of the same
ARGMAX_AGREEMENT = 0.94  # next-token argmax agreement on random tokens (near-ties of a random model flip)
VS_HF_OWN_ERROR = 1.5  # sidjax bf16's mean error against float32 <= this x HF bf16's own
VS_AUTOCAST_ERROR = 2.0  # ... and <= this x HF float32 under torch.autocast(bf16) (which keeps a float32 residual)


# --------------------------------------------------------------------------- "auto"


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    return str(path)


@pytest.mark.parametrize("flags, want", [
    ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", "bfloat16"),
    ("fpu sse2 avx2 amx_bf16 amx_tile", "bfloat16"),
    ("fpu sse2 avx2 fma", "float32"),
    ("fpu sse2 avx2 avx512f avx512bw", "float32"),  # AVX512 without its BF16 extension: emulated
])
def test_auto_on_cpu_follows_the_cpu_flags_and_logs_why(flags, want, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(precision, "backend", lambda: "cpu")
    monkeypatch.setattr(precision, "CPUINFO", _cpuinfo(tmp_path, flags))
    with caplog.at_level("INFO", logger="absl"):
        assert precision.resolve_dtype("auto") == want
    lines = [r.getMessage() for r in caplog.records if "compute dtype 'auto'" in r.getMessage()]
    assert len(lines) == 1 and f"-> {want}" in lines[0] and "backend cpu" in lines[0]
    assert ("avx512_bf16" in lines[0] or "amx_bf16" in lines[0])


def test_auto_is_float32_where_the_cpu_flags_cannot_be_read(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "backend", lambda: "cpu")
    monkeypatch.setattr(precision, "CPUINFO", str(tmp_path / "missing"))
    assert precision.auto_dtype() == ("float32", f"backend cpu, CPU flags unreadable ({tmp_path / 'missing'}: "
                                                 "not Linux / x86?)")
    (tmp_path / "noflags").write_text("processor : 0\nFeatures : fp asimd bf16\n")  # arm64: no x86 flags line
    monkeypatch.setattr(precision, "CPUINFO", str(tmp_path / "noflags"))
    assert precision.resolve_dtype("auto") == "float32"


def test_auto_on_accelerators(monkeypatch):
    monkeypatch.setattr(precision, "backend", lambda: "tpu")
    assert precision.resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(precision, "backend", lambda: "gpu")
    monkeypatch.setattr(precision, "_gpu_capability", lambda: 9.0)
    assert precision.resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(precision, "_gpu_capability", lambda: None)  # unknown (ROCm): the GPU default
    assert precision.resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(precision, "_gpu_capability", lambda: 7.0)  # V100 / T4: no bf16 units
    assert precision.auto_dtype()[0] == "float32"


def test_explicit_dtypes_pass_through_and_configs_take_auto():
    assert precision.resolve_dtype("float32") == "float32" and precision.resolve_dtype("bfloat16") == "bfloat16"
    config = base_config()
    config.model.dtype = "auto"
    config.sids.rqvae.dtype = "auto"
    validate(config)
    config.model.param_dtype = "auto"  # master weights are never "auto"
    with pytest.raises(ConfigError, match="model.param_dtype"):
        validate(config)
    with pytest.raises(ValueError, match="dtype"):  # a built model never holds "auto"
        preset("tiny", 64).replace(dtype="auto")


def _tokenizer():
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "<a_0>": 2, "<a_1>": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def test_bundle_load_sets_or_resolves_the_compute_dtype(tmp_path, monkeypatch):
    model = CausalLM(preset("tiny", 16).replace(num_layers=1), rngs=nnx.Rngs(0))
    config = base_config()
    bundles.save(bundles.Bundle(model=model, tokenizer=_tokenizer(), sids=np.array([[0], [1]]),
                                level_offsets=np.array([2]), level_sizes=(2,), tokenizer_config={}, config=config),
                 tmp_path)
    best = ckpt.BestModel(tmp_path)
    best.save(1, nnx.state(model))
    best.wait()
    best.close()
    bundles.finish(tmp_path, 1)
    assert bundles.load(tmp_path).model.config.dtype == "float32"
    loaded = bundles.load(tmp_path, dtype="bfloat16")
    assert loaded.model.config.dtype == "bfloat16" and loaded.model.embed[...].dtype == jnp.float32
    # A run configured with "auto" resolves it again on the machine that loads it.
    saved = json.loads((tmp_path / bundles.CONFIG).read_text())
    saved["model"]["dtype"] = "auto"
    (tmp_path / bundles.CONFIG).write_text(json.dumps(saved))
    write_manifest(tmp_path, bundles.FILES)
    monkeypatch.setattr(precision, "auto_dtype", lambda: ("bfloat16", "test"))
    assert bundles.load(tmp_path).model.config.dtype == "bfloat16"
    monkeypatch.setattr(precision, "auto_dtype", lambda: ("float32", "test"))
    assert bundles.load(tmp_path).model.config.dtype == "float32"


# --------------------------------------------------------------------------- float32 where it must be


def test_bf16_train_step_keeps_float32_weights_grads_optimizer_state_and_loss():
    from sidjax.configs.sft import section
    from sidjax.train import sft
    from sidjax.train.state import make_train_state

    model = CausalLM(preset("tiny", 64).replace(dtype="bfloat16", num_layers=1), rngs=nnx.Rngs(0))
    state = make_train_state(model, section(), 10)
    assert {x.dtype for x in jax.tree.leaves(state.arrays) if jnp.issubdtype(x.dtype, jnp.floating)} == {
        jnp.dtype(jnp.float32)}  # params and AdamW moments
    tokens = np.random.default_rng(0).integers(0, 64, (4, 12)).astype(np.int32)
    batch = {"tokens": tokens, "attention_mask": np.ones(tokens.shape, bool), "loss_mask": np.ones(tokens.shape, bool),
             "example_mask": np.ones(4, bool)}
    arrays, metrics = sft.make_train_step(state)(state.arrays, batch)
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))
    floats = {x.dtype for x in jax.tree.leaves(arrays) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}

    @nnx.jit
    def forward_and_grads(m):
        hidden = m.hidden_states(jnp.asarray(tokens), jnp.zeros_like(tokens))[0]
        return hidden, m.logits(hidden), nnx.grad(lambda m: m.logits(m.hidden_states(
            jnp.asarray(tokens), jnp.zeros_like(tokens))[0]).sum())(m)

    hidden, logits, grads = forward_and_grads(nnx.merge(state.graphdef, arrays)[0])
    assert hidden.dtype == jnp.bfloat16 and logits.dtype == jnp.float32
    assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


def test_bf16_rqvae_keeps_float32_weights_latents_and_losses():
    config = rqvae.RQVAEConfig(input_dim=12, hidden=(16,), code_dim=4, levels=2, codebook_size=8, dtype="bfloat16")
    model = rqvae.RQVAE(config, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32)
    metrics = rqvae.train(model, x, rqvae.TrainConfig(epochs=1, batch_size=16, learning_rate=1e-2, weight_decay=0.0,
                                                      kmeans_init=False, dead_code_every=0, report_every=1))
    assert np.isfinite(metrics["loss"])
    assert {v.dtype for v in jax.tree.leaves(nnx.state(model))} == {jnp.dtype(jnp.float32)}
    assert model.encoder(jnp.asarray(x)).dtype == jnp.float32
    loss, (mse, quant) = model.losses(jnp.asarray(x))
    assert loss.dtype == mse.dtype == quant.dtype == jnp.float32
    assert rqvae.encode(model, x).residuals.dtype == np.float32


# --------------------------------------------------------------------------- parity with transformers


def _hf_model(family, path):
    small = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, max_position_embeddings=LENGTH)
    if family == "qwen3":
        config = transformers.Qwen3Config(**small, tie_word_embeddings=False)
        model_cls = transformers.Qwen3ForCausalLM
    else:
        config = transformers.Qwen2Config(**small, tie_word_embeddings=True, rope_theta=1e6)
        model_cls = transformers.Qwen2ForCausalLM
    torch.manual_seed(0)
    model = model_cls(config).eval()
    with torch.no_grad():  # unit-scale activations: logits of std ~1 whose argmax is not all ties
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight")
                    else torch.randn_like(p) / np.sqrt(p.shape[-1]))
    model.save_pretrained(path)
    return model


def _hf_logits(model, tokens, autocast=False):
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape).copy()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=torch.tensor(tokens), position_ids=torch.tensor(positions))
    return out.logits.float().numpy()


@nnx.jit
def _logits(model, tokens):
    return model(tokens, jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape))[0]


@pytest.mark.parametrize("family", ["qwen3", "qwen2"])
def test_bf16_logits_match_transformers_bf16_to_bf16_accuracy(family, tmp_path):
    hf_model = _hf_model(family, tmp_path)
    tokens = np.random.default_rng(0).integers(0, VOCAB, (BATCH, LENGTH))
    reference = _hf_logits(hf_model, tokens)  # float32
    autocast = _hf_logits(hf_model, tokens, autocast=True)
    hf_bf16 = _hf_logits(hf_model.to(torch.bfloat16), tokens)
    # bf16 compute on float32 master weights: the mode "auto" picks (weights cast to bf16 at use, as HF's bf16).
    ours = np.asarray(_logits(hf.load_model(str(tmp_path), dtype="bfloat16"), jnp.asarray(tokens)))
    assert ours.dtype == np.float32
    scale = reference.std()

    def error(a, b):
        return np.abs(a - b).max() / scale, np.abs(a - b).mean() / scale

    worst, mean = error(ours, hf_bf16)
    assert worst < MAX_VS_HF_BF16 and mean < MEAN_VS_HF_BF16, (worst, mean)
    assert np.mean(ours.argmax(-1) == hf_bf16.argmax(-1)) >= ARGMAX_AGREEMENT
    assert np.mean(ours.argmax(-1) == reference.argmax(-1)) >= ARGMAX_AGREEMENT
    # As accurate (against float32) as transformers' own bf16 paths.
    ours_error, hf_error, autocast_error = error(ours, reference)[1], error(hf_bf16, reference)[1], error(
        autocast, reference)[1]
    assert ours_error <= VS_HF_OWN_ERROR * hf_error, (ours_error, hf_error)
    assert ours_error <= VS_AUTOCAST_ERROR * autocast_error, (ours_error, autocast_error)
    # ... and bf16 is a real change: the float32 path matches float32 far more closely.
    ours32 = np.asarray(_logits(hf.load_model(str(tmp_path)), jnp.asarray(tokens)))
    assert error(ours32, reference)[0] < 1e-3 < mean
