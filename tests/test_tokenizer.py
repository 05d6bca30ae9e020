"""Scratch byte-level BPE: trained on item text, special/think tokens whole, any text round-trips."""
from sidjax.data.dataset import Item
from sidjax.model import tokenizer as bpe

TEXTS = ["Cordless drill with 2 batteries", "Nitrile safety gloves, large", "Stainless steel hex bolts M6"] * 30


def test_train_bpe_special_tokens_and_roundtrip():
    tok = bpe.train_bpe(TEXTS, vocab_size=400, min_frequency=2)
    for token in bpe.SPECIAL_TOKENS + bpe.THINK_TOKENS:
        assert len(tok.encode(token).ids) == 1, token
    assert tok.encode("<|im_start|>user\nhi<|im_end|>").tokens[0] == "<|im_start|>"
    # Merges were learned from the corpus: a frequent word is a single token.
    assert len(tok.encode("Cordless").ids) == 1
    text = "Ünïcödé ✓ not in the corpus <think>why</think> 42"
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_item_texts_and_config():
    items = [Item(title="A", description="", brand="B", categories="C > D")]
    assert list(bpe.item_texts(items)) == ["A", "B", "C > D"]
    config = bpe.tokenizer_config()
    assert config["eos_token"] in bpe.SPECIAL_TOKENS and "<|im_start|>" in config["chat_template"]
