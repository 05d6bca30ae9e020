"""`sidjax.load`: one call from a run directory (or a model stage's bundle) to recommendations.

    import sidjax
    rec = sidjax.load("runs/demo")                 # the run's last finished model stage
    rec.recommend([120, 7, 3051], beams=10)         # item-id history -> top SIDs with items, titles, scores
    rec.recommend(history, domain="Office")        # a model of several domains (data.source=mix): one of them

`rec` is a `sidjax.eval.evaluate.Recommender`: `rec.model`, `rec.format`, `rec.sids`, `rec.trie`, and
`rec.bundle` (`sidjax.bundle.Bundle`: tokenizer, SID layout, config, dataset, directory, step).
"""
from __future__ import annotations

import os

import jax

from sidjax import bundle as bundles
from sidjax.eval.evaluate import Recommender
from sidjax.stages.eval import find_bundle


def load(workdir_or_checkpoint: str | os.PathLike, *, step: int | None = None,
         mesh: jax.sharding.Mesh | None = None, dtype: str | None = None) -> Recommender:
    """The recommender of a run directory's last finished model stage, or of a model stage directory.

    `step=None` takes the stage's output model; a number, that train checkpoint. `dtype`: the compute
    dtype (float32 | bfloat16 | float16 | auto; None: the model's own, see `sidjax.bundle.load`).
    """
    return bundles.load(find_bundle(workdir_or_checkpoint), step=step, mesh=mesh, dtype=dtype).recommender(mesh)
