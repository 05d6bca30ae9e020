"""`sidjax.load`: one call from a run directory (or a model stage's bundle) to recommendations.

    import sidjax
    rec = sidjax.load("runs/demo")                 # the run's last finished model stage
    rec.recommend([120, 7, 3051], beams=10)         # item-id history -> top SIDs with items, titles, scores
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import ml_collections
import numpy as np

from sidjax.data.dataset import RecDataset
from sidjax.data.formatting import ChatFormat
from sidjax.eval.evaluate import Recommender, SearchSettings
from sidjax.sid.codes import sid_string, sid_token
from sidjax.train import checkpoint as ckpt


@dataclasses.dataclass
class Loaded:
    """A trained model ready for analysis: everything `load` found, plus `recommend`."""

    model: Any  # sidjax.model.transformer.CausalLM
    tokenizer: Any  # tokenizers.Tokenizer (with the SID tokens)
    format: ChatFormat  # the prompt layout the model was trained with
    sids: np.ndarray  # int32 [num_items, L]
    level_offsets: np.ndarray  # int32 [L]
    level_sizes: tuple[int, ...]  # codes per SID level (token block sizes)
    recommender: Recommender  # holds the SidTrie as `.trie`
    config: ml_collections.ConfigDict  # the resolved config of the run that trained it
    directory: Path  # the model stage directory (bundle)
    step: int
    _dataset: RecDataset | None = None

    @property
    def trie(self):
        return self.recommender.trie

    @property
    def dataset(self) -> RecDataset:
        """The run's dataset (`config.data`), loaded on first use for titles."""
        if self._dataset is None:
            from sidjax.data.sources import load_dataset

            self._dataset = load_dataset(self.config.data)
        return self._dataset

    def recommend(self, history: Sequence[int], *, beams: int = 10, mode: str = "direct",
                  normalize: str = "vocab", max_think_tokens: int = 256,
                  repetition_penalty: float = 1.0) -> list[dict[str, Any]]:
        """Top-`beams` next items for one history of item ids, best first (greedy thinking in reasoning mode)."""
        think = None
        if mode == "reasoning":
            from sidjax.decode.sample import SamplingParams

            think = SamplingParams(max_new_tokens=max_think_tokens, temperature=0.0, top_k=0, top_p=1.0,
                                   repetition_penalty=repetition_penalty, stop_tokens=(), num_samples=1)
        out = self.recommender.recommend([list(history)], SearchSettings(beams=beams, normalize=normalize, mode=mode,
                                                                         think=think))
        titles = self.dataset.titles()
        rows = []
        for b in np.flatnonzero(out.valid[0]):
            items = self.recommender.items(int(out.leaves[0, b]))
            row = {"sid": sid_string(out.codes[0, b]), "score": float(out.scores[0, b]), "items": items,
                   "titles": [titles[i] for i in items]}
            if out.reasoning is not None:
                row["reasoning"] = out.reasoning[0]
            rows.append(row)
        return rows


def level_sizes_of(tokenizer: Any, level_offsets: Sequence[int]) -> tuple[int, ...]:
    """Codes per SID level, read from the tokenizer's contiguous SID token blocks."""
    sizes = []
    for level, offset in enumerate(level_offsets):
        size = 0
        while tokenizer.token_to_id(sid_token(level, size)) == int(offset) + size:
            size += 1
        if size == 0:
            raise ValueError(f"the tokenizer has no SID token block for level {level} at id {offset}")
        sizes.append(size)
    return tuple(sizes)


def chat_format(bundle: ckpt.Bundle) -> ChatFormat:
    """The prompt layout the bundle's model was trained with.

    The bundle's own tokenizer_config.json when it has one; else what `config.model`
    names: an HF directory's template, or the scratch tokenizer's ChatML.
    """
    from sidjax.model import tokenizer as bpe

    if (bundle.directory / "tokenizer_config.json").is_file():
        return ChatFormat.from_hf_dir(bundle.directory)
    source = bundle.config.model.source
    if source == "hf":
        fmt = ChatFormat.from_hf_dir(bundle.config.model.path)
        return ChatFormat(bundle.tokenizer, eos_token=fmt.eos_token, chat_template=fmt.chat_template,
                          bos_token=fmt.bos_token)
    if source == "scratch":
        return ChatFormat(bundle.tokenizer, eos_token=bpe.EOS_TOKEN, chat_template=bpe.CHAT_TEMPLATE)
    raise FileNotFoundError(f"{bundle.directory}: no tokenizer_config.json, and model source '{source}' "
                            "does not say which chat format the model was trained with")


def find_bundle(path: str | os.PathLike) -> Path:
    """A model stage directory: `path` itself if it holds bundle.json, else the run's last finished model stage."""
    from sidjax.stages import DONE, MODEL_STAGES, parse_stage, stage_dirname

    d = Path(path)
    if (d / ckpt.BUNDLE).is_file():
        return d
    config_path = d / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{d}: neither a model bundle ({ckpt.BUNDLE}) nor a run directory (config.json)")
    stages = json.loads(config_path.read_text(encoding="utf-8")).get("stages", [])
    finished = [s for s in stages if parse_stage(s)[0] in MODEL_STAGES and (d / stage_dirname(s) / DONE).is_file()]
    if not finished:
        raise FileNotFoundError(f"{d}: no finished model stage ({', '.join(MODEL_STAGES)}) in this run")
    return d / stage_dirname(finished[-1])


def recommender_from_bundle(bundle: ckpt.Bundle, mesh=None, models: tuple | None = None, rescorer=None
                            ) -> tuple[Recommender, ChatFormat, tuple[int, ...]]:
    """The bundle's Recommender (trie, token layout, chat format), its ChatFormat and SID level sizes.

    `models`: an ensemble over the bundle's tokens to search instead of the bundle's own model.
    `rescorer`: a `sidjax.eval.rescore.DenseRescorer` that re-scores the found beams.
    """
    fmt = chat_format(bundle)
    sizes = level_sizes_of(bundle.tokenizer, bundle.level_offsets)
    model = bundle.model if models is None else models
    recommender = Recommender(model, fmt, bundle.sids, bundle.level_offsets, sizes, mesh=mesh, rescorer=rescorer)
    return recommender, fmt, sizes


def load(workdir_or_checkpoint: str | os.PathLike, *, step: int | None = None, mesh=None) -> Loaded:
    """Model, tokenizer, SIDs / trie and resolved config of a run directory or a model stage directory.

    `step=None` takes the stage's output model; a number, that train checkpoint.
    """
    bundle = ckpt.load_bundle(find_bundle(workdir_or_checkpoint), step=step, mesh=mesh)
    recommender, fmt, sizes = recommender_from_bundle(bundle, mesh)
    return Loaded(model=bundle.model, tokenizer=bundle.tokenizer, format=fmt, sids=bundle.sids,
                  level_offsets=bundle.level_offsets, level_sizes=sizes, recommender=recommender, config=bundle.config,
                  directory=bundle.directory, step=bundle.step)
