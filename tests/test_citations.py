"""Cited SIDs: under `citations` a thought writes SIDs only as whole paths of its row's allowed SIDs, and is
otherwise the model's own greedy / sampled text; the evaluation cites only history items when asked."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sidjax.decode import citations
from sidjax.decode.sample import generate, pad_prompts
from sidjax.model.config import preset
from sidjax.model.transformer import CausalLM
from test_sample import greedy_params

VOCAB = 50
PAD = 0
OFFSETS, SIZES = (20, 30, 40), (10, 10, 10)  # tokens 0..19 are text, then three SID levels
CODES = np.array([[0, 0, 0], [0, 0, 1], [0, 3, 2], [5, 1, 1], [9, 9, 9]])  # five items
HISTORIES = [[0, 1, 2], [3], [4, 0]]
PROMPTS = [[5, 9, 3, 20, 49], [11, 25, 31], [4, 29, 39, 44, 20]]  # they end in SID tokens, which a tiny
# random model tends to copy


@pytest.fixture(scope="module")
def model():
    return CausalLM(preset("tiny", VOCAB), rngs=nnx.Rngs(5))


def _params(**changes):
    return greedy_params(**{"max_new_tokens": 16, **changes})


def _cites():
    levels = citations.token_levels(VOCAB, OFFSETS, SIZES)
    return citations.history_citations(CODES, HISTORIES, OFFSETS, levels, bucket=4)


def _allowed(written, history):
    """The tokens a row may write next, by hand: free text, or the next token of a history SID."""
    paths = [tuple(int(c) + o for c, o in zip(CODES[i], OFFSETS)) for i in history]
    depth = 0
    for token in written:
        depth = (depth + 1) % 3 if token >= OFFSETS[0] else depth
    prefix = tuple(written[len(written) - depth:]) if depth else ()
    nxt = {p[depth] for p in paths if p[:depth] == prefix}
    return nxt | (set(range(OFFSETS[0])) if depth == 0 else set())


def test_token_levels_and_history_citations():
    levels = citations.token_levels(VOCAB, OFFSETS, SIZES)
    assert levels[:20].tolist() == [-1] * 20 and levels[20] == 0 and levels[35] == 1 and levels[49] == 2
    cites = _cites()
    assert cites.sids.shape == (3, 4, 3)
    assert cites.sids[1, 0].tolist() == [25, 31, 41] and (cites.sids[1, 1:] == -1).all()


def test_greedy_cites_only_history_sids_and_is_greedy_otherwise(model):
    """Each token is the argmax of the model's logits over the hand-computed allowed set."""
    tokens, mask = pad_prompts(PROMPTS, bucket=8, pad_id=PAD)
    out = generate(model, jnp.asarray(tokens), jnp.asarray(mask), _params(), rng=jax.random.key(0), pad_id=PAD,
                   cites=_cites())
    free = generate(model, jnp.asarray(tokens), jnp.asarray(mask), _params(), rng=jax.random.key(0), pad_id=PAD)
    assert not np.array_equal(out.tokens, free.tokens)  # the random model writes SIDs of no history
    forward = nnx.jit(lambda m, t: m(t, jnp.broadcast_to(jnp.arange(t.shape[1]), t.shape))[0])
    wrote_sid = False
    for i, (prompt, history) in enumerate(zip(PROMPTS, HISTORIES)):
        row = np.asarray(out.tokens)[i, 0].tolist()
        logits = np.asarray(forward(model, jnp.asarray([prompt + row])))[0, len(prompt) - 1:-1]
        for step in range(len(row)):
            allowed = sorted(_allowed(row[:step], history))
            assert row[step] == allowed[int(np.argmax(logits[step, allowed]))], (i, step)
        wrote_sid |= any(t >= OFFSETS[0] for t in row)
    assert wrote_sid


@pytest.mark.parametrize("no_repeat_ngram", [0, 2])
def test_sampled_groups_cite_only_their_own_history(model, no_repeat_ngram):
    """Each sample of a group keeps its prompt's citations; an n-gram ban never cuts a begun SID short."""
    tokens, mask = pad_prompts(PROMPTS, bucket=8, pad_id=PAD)
    params = _params(temperature=1.5, num_samples=4, no_repeat_ngram=no_repeat_ngram, max_new_tokens=24)
    out = generate(model, jnp.asarray(tokens), jnp.asarray(mask), params, rng=jax.random.key(3), pad_id=PAD,
                   cites=_cites())
    for i, history in enumerate(HISTORIES):
        for row in np.asarray(out.tokens)[i].tolist():
            for step in range(len(row)):
                assert row[step] in _allowed(row[:step], history), (i, row, step)


def test_citations_need_one_row_per_prompt(model):
    tokens, mask = pad_prompts(PROMPTS[:2], bucket=8, pad_id=PAD)
    with pytest.raises(ValueError, match="cites has 3 rows for 2 prompts"):
        generate(model, jnp.asarray(tokens), jnp.asarray(mask), _params(), rng=jax.random.key(0), pad_id=PAD,
                 cites=_cites())


def test_constraints_hold_only_before_the_thought_end(model):
    """With `thought_end`, citations and suppressed tokens shape the thought and free the answer after it:
    greedy, each token is the argmax over the hand-computed allowed set before the end token and over every
    token after it; sampled, answers write what a thought may not."""
    end = 7
    suppressed = tuple(t for t in range(OFFSETS[0]) if t != end)  # the thought's only text token is `end`
    tokens, mask = pad_prompts(PROMPTS, bucket=8, pad_id=PAD)
    forward = jax.jit(lambda t: model(t, jnp.broadcast_to(jnp.arange(t.shape[1]), t.shape))[0])

    def thought_rules(row, history):
        return _allowed(row, history) - set(suppressed)

    greedy = generate(model, jnp.asarray(tokens), jnp.asarray(mask),
                      _params(suppress_tokens=suppressed, thought_end=end), rng=jax.random.key(0), pad_id=PAD,
                      cites=_cites())
    for i, (prompt, history) in enumerate(zip(PROMPTS, HISTORIES)):
        row = np.asarray(greedy.tokens)[i, 0].tolist()
        logits = np.asarray(forward(jnp.asarray([prompt + row])))[0, len(prompt) - 1:-1]
        for step in range(len(row)):
            thinking = end not in row[:step]
            allowed = sorted(thought_rules(row[:step], history)) if thinking else list(range(VOCAB))
            assert row[step] == allowed[int(np.argmax(logits[step, allowed]))], (i, step)

    sampled = generate(model, jnp.asarray(tokens), jnp.asarray(mask),
                       _params(suppress_tokens=suppressed, thought_end=end, temperature=1.5, num_samples=4,
                               max_new_tokens=24), rng=jax.random.key(1), pad_id=PAD, cites=_cites())
    freed = 0
    for i, history in enumerate(HISTORIES):
        for row in np.asarray(sampled.tokens)[i].tolist():
            for step in range(len(row)):
                allowed = row[step] in thought_rules(row[:step], history)
                if end in row[:step]:
                    freed += not allowed
                else:
                    assert allowed, (i, row, step)
    assert freed > 0  # answers do write what the thought's rules forbid
