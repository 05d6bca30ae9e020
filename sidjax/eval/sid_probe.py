"""Does a model know what its SIDs stand for? It names items from their SIDs, scored by their metadata.

A thought can describe the items it cites only as well as the model knows them (the reasoning issue's
`kind_right`). The probe asks the alignment task 2 (the title of the item with this SID) in the
model's own prompt wording, decodes greedily, and scores each title against the item: its kind
(`sidjax.teacher.evidence.item_kinds`) as whole words, its brand anywhere (case-insensitive), the exact
title. `python -m experiments.probe_sids` runs it on a stage's model.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sidjax.data.dataset import Item, RecDataset, Split
from sidjax.data.tasks import item_title_prompt
from sidjax.decode.sample import SamplingParams, generate, pad_prompts
from sidjax.eval.evaluate import Recommender
from sidjax.eval.reasoning_quality import whole_words
from sidjax.sid.codes import sid_string
from sidjax.teacher.evidence import brand_name, item_kinds


@dataclasses.dataclass(frozen=True)
class TitleGuess:
    item: int
    title: str  # what the model decoded
    kind: bool  # the item's kind is whole words of it
    brand: bool  # the item's brand is in it (False when the item has none)
    exact: bool  # it is the item's title


def score_title(item: Item, kind: str, title: str) -> tuple[bool, bool, bool]:
    """(kind, brand, exact) of a decoded `title` for `item`, whose kind is `kind`."""
    brand = brand_name(item)
    return (bool(whole_words([kind]).search(title)), bool(brand) and brand.casefold() in title.casefold(),
            title.strip() == item.title.strip())


def latest_items(split: Split, users: int) -> list[int]:
    """The most recent history item of each of the split's first `users` samples."""
    return [history[-1] for history in split.histories()[:users]]


def probe_titles(rec: Recommender, dataset: RecDataset, items: Sequence[int], *, max_new_tokens: int = 40,
                 batch_size: int = 50) -> list[TitleGuess]:
    """Each of `items` named by the model from its SID (greedy, at most `max_new_tokens`), scored."""
    kinds = item_kinds(dataset.items)
    style = rec.format.prompt_style
    prompts = rec.format.prompt_ids([item_title_prompt(sid_string(rec.sids[i]), style) for i in items])
    stops = tuple(rec.format.stop_ids)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, top_k=0, top_p=1.0,
                            repetition_penalty=1.0, no_repeat_ngram=0, stop_tokens=stops, suppress_tokens=(),
                            thought_end=-1, num_samples=1)
    guesses = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        tokens, mask = pad_prompts(prompts[start:start + batch_size], bucket=16, pad_id=rec.format.eos_id)
        out = generate(rec.model, jnp.asarray(tokens), jnp.asarray(mask), params, rng=jax.random.key(0),
                       pad_id=rec.format.eos_id)
        rows, lengths = np.asarray(out.tokens)[:, 0], np.asarray(out.lengths)[:, 0]
        for item, row, length in zip(chunk, rows, lengths):
            title = rec.format.tokenizer.decode([int(t) for t in row[:length] if t not in stops]).strip()
            guesses.append(TitleGuess(item, title, *score_title(dataset.items[item], kinds[item], title)))
    return guesses


def summarize(guesses: Sequence[TitleGuess]) -> dict[str, float]:
    """Shares of the items whose decoded title names their kind, their brand, or is their title."""
    n = max(len(guesses), 1)
    return {"items": float(len(guesses)), "kind": sum(g.kind for g in guesses) / n,
            "brand": sum(g.brand for g in guesses) / n, "exact": sum(g.exact for g in guesses) / n}
