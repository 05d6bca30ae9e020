"""Item embeddings: LSA structure and determinism, .npy validation, LM mean pooling vs. one text at a time."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sidjax.data.dataset import Item
from sidjax.model import pool
from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM
from sidjax.sid import embed
from sidjax.utils.errors import DataError

ITEMS = [
    Item("Stanley staple gun heavy duty", "staples for the staple gun", "Stanley"),
    Item("Stanley narrow crown staples", "heavy duty staples, steel", "Stanley"),
    Item("Brass hex nipple fitting NPT", "brass pipe fitting", "Dixon"),
    Item("Brass hex plug fitting NPT male", "pipe fitting in brass", "Dixon"),
    Item("Nitrile gloves, powder free", "disposable gloves for the lab", "Kimberly"),
    Item("Latex gloves powder free large", "lab gloves, disposable", "Kimberly"),
]


def test_lsa_puts_related_items_together_and_is_deterministic():
    x = embed.tfidf_lsa(ITEMS, dim=3, min_df=2, max_df=0.9, title_weight=2.0, seed=0)
    assert x.shape == (6, 3) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    assert sim.argmax(1).tolist() == [1, 0, 3, 2, 5, 4]
    np.testing.assert_array_equal(x, embed.tfidf_lsa(ITEMS, dim=3, min_df=2, max_df=0.9, title_weight=2.0, seed=0))
    with pytest.raises(ValueError, match="dim=6 must be smaller"):
        embed.tfidf_lsa(ITEMS, dim=6, min_df=2, max_df=0.9, title_weight=2.0, seed=0)
    with pytest.raises(ValueError, match="at least min_df=7"):
        embed.tfidf_lsa(ITEMS, dim=2, min_df=7, max_df=0.9, title_weight=2.0, seed=0)


def test_tfidf_weights_match_the_formula():
    items = [Item("alpha beta", ""), Item("alpha gamma", ""), Item("beta", "")]
    x = embed.tfidf_matrix(items, min_df=1, max_df=1.0, title_weight=1.0).toarray()
    idf = {t: np.log(4 / (1 + df)) + 1 for t, df in {"alpha": 2, "beta": 2, "gamma": 1}.items()}
    row = np.array([idf["alpha"], idf["beta"], 0.0])  # columns sorted: alpha, beta, gamma
    np.testing.assert_allclose(x[0], row / np.linalg.norm(row), rtol=1e-6)


def test_precomputed_is_validated(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.ones((3, 4), dtype=np.float64))
    assert embed.load_precomputed(good, 3).dtype == np.float32
    cases = {"rows.npy": (np.ones((2, 4)), "2 rows"), "nan.npy": (np.array([[1.0], [np.nan], [2.0]]), "item 1"),
             "flat.npy": (np.ones(3), "2-d")}
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(DataError, match=message):
            embed.load_precomputed(tmp_path / name, 3)
    with pytest.raises(DataError, match="not found"):
        embed.load_precomputed(tmp_path / "missing.npy", 3)


def test_lm_mean_pool_matches_unpadded_forward():
    model = CausalLM(preset("tiny", 50), rngs=nnx.Rngs(0))
    texts = ["a bb ccc", "dddd", "e f g h i j k l m n", "bb a"]
    encode = lambda text: [3 + (len(w) * 7 + ord(w[0])) % 40 for w in text.split()]
    got = pool.lm_mean_pool(model, encode, texts, batch_size=3, max_length=8)
    assert got.shape == (4, 64)
    # Reference: right padding (causal, so real tokens never see it), positions 0.., one forward.
    ids = [encode(t)[:8] for t in texts]
    tokens = np.zeros((4, 8), np.int32)
    for row, seq in enumerate(ids):
        tokens[row, : len(seq)] = seq
    hidden, _ = model.hidden_states(jnp.asarray(tokens), jnp.tile(jnp.arange(8), (4, 1)))
    for row, seq in enumerate(ids):
        np.testing.assert_allclose(got[row], np.asarray(hidden[row, : len(seq)].mean(0)), atol=1e-4)
