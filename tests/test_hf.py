"""HF parity: tiny random Qwen2 / Qwen3 / Llama made by transformers load into sidjax with equal logits,
decode incrementally with equal logits, and export back to transformers unchanged."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
import torch
import transformers
from flax import nnx

from sidjax.model import hf
from sidjax.model.transformer import positions_from_mask

VOCAB = 96
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
FAMILIES = {
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              dict(tie_word_embeddings=True, rope_theta=1e6)),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(tie_word_embeddings=False)),
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
              dict(tie_word_embeddings=False, rope_parameters={
                  "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
}


def _tiny_hf(family: str, path) -> transformers.PreTrainedModel:
    config_cls, model_cls, extra = FAMILIES[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**SMALL, **extra)).eval()
    with torch.no_grad():  # random everything, so biases and norms are checked too
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


def _batch():
    rng = np.random.default_rng(0)
    lengths = np.array([7, 4, 2])
    width = 7
    tokens = rng.integers(0, VOCAB, (3, width))
    mask = np.arange(width)[None, :] >= (width - lengths)[:, None]
    tokens = np.where(mask, tokens, 0)
    return tokens, mask


def _hf_logits(model, tokens, mask) -> np.ndarray:
    positions = np.asarray(positions_from_mask(jnp.asarray(mask)))
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                    position_ids=torch.tensor(positions))
    return out.logits.numpy()


@nnx.jit
def _run(model, tokens, positions, attention_mask=None, cache=None):
    return model(tokens, positions, attention_mask=attention_mask, cache=cache)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_load_decode_export_parity(family, tmp_path):
    reference = _tiny_hf(family, tmp_path / "hf")
    tokens, mask = _batch()
    expected = _hf_logits(reference, tokens, mask)

    model = hf.load_model(str(tmp_path / "hf"))
    positions = positions_from_mask(jnp.asarray(mask))
    logits, _ = _run(model, jnp.asarray(tokens), positions, jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(logits)[mask], expected[mask], atol=1e-4, rtol=1e-4)

    # Prefill all but the last 2 columns, then decode one token at a time.
    cache = model.init_cache(3, tokens.shape[1])
    split = tokens.shape[1] - 2
    first, cache = _run(model, jnp.asarray(tokens[:, :split]), positions[:, :split], jnp.asarray(mask[:, :split]),
                        cache)
    steps = [first]
    for t in range(split, tokens.shape[1]):
        step, cache = _run(model, jnp.asarray(tokens[:, t:t + 1]), positions[:, t:t + 1], None, cache)
        steps.append(step)
    np.testing.assert_allclose(np.concatenate(steps, axis=1)[mask], expected[mask], atol=1e-4, rtol=1e-4)

    hf.save_pretrained(model, str(tmp_path / "out"), max_shard_bytes=40_000)  # forces a sharded index
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    np.testing.assert_allclose(_hf_logits(reloaded, tokens, mask)[mask], expected[mask], atol=1e-5, rtol=1e-5)
    again = hf.load_model(str(tmp_path / "out"))
    np.testing.assert_array_equal(np.asarray(again.embed[...]), np.asarray(model.embed[...]))


def test_export_with_added_tokens_and_bf16(tmp_path):
    _tiny_hf("qwen3", tmp_path / "hf")
    words = [f"w{i}" for i in range(VOCAB - 3)]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.add_tokens(["<a_1>", "<b_2>"])
    model = hf.load_model(str(tmp_path / "hf"), param_dtype="bfloat16", dtype="bfloat16")
    hf.save_pretrained(model, str(tmp_path / "out"), tok, {"eos_token": "<|endoftext|>"})
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["eos_token_id"] == VOCAB - 3 and config["dtype"] == "bfloat16"
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert hf_tok("w5 <a_1><b_2>")["input_ids"] == [5, VOCAB - 2, VOCAB - 1]
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert reloaded.model.embed_tokens.weight.dtype == torch.bfloat16
    np.testing.assert_array_equal(reloaded.model.embed_tokens.weight.detach().float().numpy(),
                                  np.asarray(model.embed[...].astype(jnp.float32)))


def test_unknown_and_missing_tensors_are_named(tmp_path):
    _tiny_hf("qwen3", tmp_path / "hf")
    weights = hf.SafetensorsFile(str(tmp_path / "hf" / "model.safetensors"))
    tensors = {k: np.array(weights.tensor(k)) for k in weights.keys() if k != "model.norm.weight"}
    tensors["model.layers.0.self_attn.o_proj.bias"] = np.zeros(32, np.float32)
    hf.write_safetensors(str(tmp_path / "hf" / "model.safetensors"), tensors)
    with pytest.raises(ValueError, match=r"o_proj\.bias.*missing: \['model\.norm\.weight'\]"):
        hf.load_model(str(tmp_path / "hf"))


def test_unsupported_config_names_the_key():
    with pytest.raises(ValueError, match="hidden_act"):
        hf.config_from_hf({"model_type": "llama", "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        hf.config_from_hf({"model_type": "gpt2"})
