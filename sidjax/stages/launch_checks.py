"""Checks of the config against the data that run at launch, before any stage (a paid teacher among them) runs.

- `sids.source='paper'`: the index's levels and largest code against `sids.levels` /
  `sids.codebook_size` (the `sids` stage's own check, run early).
- eval prompt length: the longest prompt an eval entry can build (the longest history of its
  splits, `data.max_history` at most, each item its SID tokens, the answer's SID and in reasoning
  mode the thinking budget) against the positions of the model it scores. The count is a lower
  bound (SID tokens and one separator per item; the template's words not counted), so a refusal
  is never wrong. Unchecked, a longer prompt does not fail cleanly: the search runs out of memory
  (a 1,000-item history: a 39.5 GB allocation).
"""
from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Sequence

import ml_collections

from sidjax import bundle as bundles
from sidjax.configs import ConfigError, entry_section, stage_of
from sidjax.configs.sids import sid_length
from sidjax.data.dataset import RecDataset
from sidjax.model.config import scratch
from sidjax.stages import sids as sids_stage
from sidjax.stages.context import entry_config, load_dataset_cached, stage_dirname
from sidjax.stages.eval import find_bundle


def check(config: ml_collections.ConfigDict, workdir: Path, to_run: Sequence[str]) -> None:
    """Raise ConfigError / DataError, naming the key, for what the entries in `to_run` would fail on later."""
    paper = "sids" in to_run and entry_config(config, "sids").sids.source == "paper"
    evals = [spec for spec in to_run if stage_of(spec) == "eval"]
    if not paper and not evals:
        return
    dataset = load_dataset_cached(config.data.to_json())
    if paper:
        # The stage's own check; it reads only ctx.config and ctx.dataset.
        sids_stage.paper_sids(types.SimpleNamespace(config=entry_config(config, "sids"), dataset=dataset))
    for spec in evals:
        c = entry_section(config, spec)
        model_dir = find_bundle(c.checkpoint) if c.checkpoint else workdir / stage_dirname(c.models[0])
        check_prompt_length(entry_config(config, spec), dataset, model_dir, spec)


def _positions(config: ml_collections.ConfigDict, model_dir: Path | None) -> tuple[int, str] | None:
    """(max positions, where that number comes from) of the model an eval scores; None when unknown at launch."""
    if model_dir is not None and (model_dir / bundles.MODEL_CONFIG).is_file():
        path = model_dir / bundles.MODEL_CONFIG
        return int(json.loads(path.read_text(encoding="utf-8"))["max_position_embeddings"]), str(path)
    m = config.model
    if m.source == "scratch":
        return scratch(m.preset, 128, shape=m.shape).max_position_embeddings, f"model.preset '{m.preset}'"
    hf_config = Path(m.path) / "config.json"
    if m.source == "hf" and hf_config.is_file():
        positions = json.loads(hf_config.read_text(encoding="utf-8")).get("max_position_embeddings")
        return (int(positions), str(hf_config)) if positions else None
    return None


def _sid_tokens(config: ml_collections.ConfigDict, model_dir: Path | None) -> int:
    """Tokens per item SID: the model's own levels once it is made, else what `config.sids` will make."""
    if model_dir is not None and (model_dir / bundles.BUNDLE).is_file():
        try:
            record = json.loads((model_dir / bundles.BUNDLE).read_text(encoding="utf-8"))
        except ValueError:
            record = {}  # a damaged bundle is named when it loads
        if record.get("level_offsets"):
            return len(record["level_offsets"])
    return sid_length(config)


def check_prompt_length(config: ml_collections.ConfigDict, dataset: RecDataset, model_dir: Path | None,
                        what: str) -> None:
    """Refuse (ConfigError naming data.max_history) an eval whose longest prompt exceeds the model's positions.

    `config` is the eval entry's own (`entry_config`); `model_dir` the model it scores, if made yet.
    """
    known = _positions(config, model_dir)
    if known is None:
        return
    positions, where = known
    c = config.eval
    per_item = _sid_tokens(config, model_dir)
    separator = 0 if config.model.prompt_style == "sid_sequence" else 1
    fixed = per_item + (c.max_think_tokens if c.mode == "reasoning" else 0) - separator
    for split in c.splits:
        lengths = dataset.splits[split].history_len
        longest = int((lengths[:c.max_users] if c.max_users else lengths).max())
        tokens = longest * (per_item + separator) + fixed
        if tokens <= positions:
            continue
        fits = (positions - fixed) // (per_item + separator)
        change = f"set data.max_history to at most {fits}" if fits >= 1 else "use a model with more positions"
        if c.mode == "reasoning":
            change += f" or shorten eval.max_think_tokens ({c.max_think_tokens} of them)"
        raise ConfigError(
            f"config key 'data.max_history': the longest '{split}' history has {longest} items, so a prompt of "
            f"'{what}' is at least {tokens} tokens with its answer, over the {positions} positions of the model "
            f"({where}); {change}")
