"""Stages `sft` (stage 1, SID-language alignment) and `reason_sft` (stage 2, reasoning activation).

Both fine-tune the model on a task mixture (`sidjax.data.tasks`) with the loss
on response tokens only. The starting model is the output of the latest model
stage listed before this one (so `reason_sft` continues from `sft`), or a fresh
one built from `config.model` when there is none. The stage directory becomes a
model bundle (`sidjax.bundle`): later stages, eval and `sidjax.load`
read it. A relaunched, unfinished stage resumes exactly from its checkpoints;
a finished one rerun through `config.redo` starts over.
"""
from __future__ import annotations

import dataclasses
import shutil
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from sidjax import bundle as bundles
from sidjax.baselines import markov
from sidjax.baselines.soft_targets import soft_targets
from sidjax.configs.lineage import stage_remat
from sidjax.data import loader
from sidjax.data.formatting import ChatFormat, Encoded, encode_all
from sidjax.data.tasks import Example, TaskMixture, build_mixture, sid_strings, task_counts
from sidjax.parallel.mesh import make_mesh
from sidjax.stages import memory_check
from sidjax.stages.sids import load_output as load_sids
from sidjax.train import checkpoint as ckpt
from sidjax.train.sft import SOFT_IDS, SOFT_WEIGHTS, fit
from sidjax.train.state import frozen_lm, make_train_state
from sidjax.utils.settings import settings_from

def run_alignment(ctx) -> dict[str, Any]:
    return _run(ctx, ctx.config.sft)


def run_reasoning(ctx) -> dict[str, Any]:
    return _run(ctx, ctx.config.reason_sft)


def _starting_bundle(ctx, sids: np.ndarray, level_sizes: tuple[int, ...], mesh) -> tuple[bundles.Bundle, str]:
    """The bundle this stage trains on (with this run's config), and its source: the model stage
    it continues, or "config.model" for a model built from scratch / a pretrained one."""
    previous = ctx.init_from()
    remat = stage_remat(ctx.config, ctx.name)
    if previous is None:
        return bundles.build(ctx.config, ctx.dataset, sids, level_sizes, mesh=mesh, remat=remat), "config.model"
    start = bundles.load(ctx.output_of(previous), mesh=mesh, remat=remat)
    if not np.array_equal(start.sids, sids):
        raise ValueError(
            f"stage '{previous}' was trained on other SIDs than the 'sids' stage now holds "
            f"({ctx.output_of(previous) / bundles.SIDS}); redo it (config key 'redo')"
        )
    return dataclasses.replace(start, config=ctx.config), previous


def _rows(pairs: list[tuple[Example, Encoded]]) -> list[dict[str, np.ndarray]]:
    return [
        {"tokens": e.input_ids, "attention_mask": np.ones(len(e.input_ids), bool), "loss_mask": e.loss_mask}
        for _, e in pairs
    ]


def _add_soft_targets(ctx, c: ml_collections.ConfigDict, rows: list[dict[str, np.ndarray]],
                      pairs: list[tuple[Example, Encoded]], start: bundles.Bundle) -> int:
    """The item Markov chain's soft targets (`sidjax.baselines.soft_targets`) on every row, for distillation;
    returns how many examples have them."""
    if not any(example.items for example, _ in pairs):
        raise ValueError(f"config key '{ctx.name}.distill_weight': no training example has item ids to distil "
                         "the Markov chain into (only the 'sidseq' task has them)")
    chain = markov.fit(ctx.dataset.splits["train"], ctx.dataset.num_items, ctx.config.baselines.markov)
    soft = soft_targets(pairs, start.sids, start.level_offsets, start.level_sizes, chain, c.distill_top_k)
    for row, (ids, weights) in zip(rows, soft):
        row[SOFT_IDS], row[SOFT_WEIGHTS] = ids, weights
    return sum(bool(example.items) for example, _ in pairs)


def _buckets(rows: list[dict[str, np.ndarray]], c: ml_collections.ConfigDict, pad_id: int) -> loader.Buckets:
    pad_values = {"tokens": pad_id, "attention_mask": False, "loss_mask": False}
    if SOFT_IDS in rows[0]:
        pad_values.update({SOFT_IDS: pad_id, SOFT_WEIGHTS: 0.0})
    return loader.Buckets(lengths=[len(r["tokens"]) for r in rows], bounds=tuple(c.length_buckets),
                          pad_values=pad_values)


def _response_window(pairs: list[tuple[Example, Encoded]], name: str) -> int:
    """Positions that cover the longest response (rounded up to 8): logits are computed there only."""
    longest = 0
    for _, e in pairs:
        learned = np.flatnonzero(e.loss_mask)
        if learned.size and learned[-1] - learned[0] + 1 != learned.size:
            raise ValueError(f"a {len(e.input_ids)}-token example's loss mask is not one contiguous response; "
                             f"set config key '{name}.response_logits_only' to False for such data")
        longest = max(longest, int(learned.size))
    return -(-longest // 8) * 8


def _clear_finished_run(ctx) -> None:
    """A bundle that names its model step is a finished run: rerunning it (config.redo) starts over."""
    if bundles.finished_step(ctx.dir) is not None:
        logging.info("%s: redo of a finished run, removing its checkpoints", ctx.spec)
        for name in (ckpt.CHECKPOINTS, ckpt.BEST):
            shutil.rmtree(ctx.dir / name, ignore_errors=True)


def _check_same_tokenizer(ctx, tokenizer) -> None:
    """A relaunched, unfinished run resumes its checkpoints: they must belong to the same vocabulary."""
    from tokenizers import Tokenizer

    saved = ctx.dir / bundles.TOKENIZER
    resuming = any(p.name.isdigit() for p in (ctx.dir / ckpt.CHECKPOINTS).glob("*"))
    if resuming and saved.is_file() and Tokenizer.from_file(str(saved)).to_str() != tokenizer.to_str():
        raise ValueError(f"{saved}: the checkpoints in {ctx.dir} were trained with another tokenizer than the one "
                         f"built now; remove {ctx.dir} or add '{ctx.spec}' to config key 'redo'")


@dataclasses.dataclass
class _Data:
    train: grain.MapDataset
    valid: grain.MapDataset | None
    steps_per_epoch: int
    response_window: int
    summary: dict[str, Any]


def _data(ctx, c: ml_collections.ConfigDict, fmt: ChatFormat, start: bundles.Bundle) -> _Data:
    """The task mixture of both splits, encoded and batched in length buckets."""
    mixture = settings_from(TaskMixture, c)
    corpus = None
    if mixture.needs_corpus():
        from sidjax.data.corpus import load_corpus

        corpus = load_corpus(ctx.output_of("teacher"))
    item_sids = sid_strings(start.sids)
    train_examples = build_mixture(mixture, ctx.dataset, item_sids, "train", corpus, fmt.prompt_style)
    valid_examples = build_mixture(mixture, ctx.dataset, item_sids, "valid", corpus, fmt.prompt_style)
    train_pairs, train_dropped = encode_all(fmt, train_examples)
    valid_pairs, valid_dropped = encode_all(fmt, valid_examples)
    if len(train_pairs) < c.batch_size:
        raise ValueError(f"config key '{ctx.name}.batch_size': {c.batch_size} is more than the "
                         f"{len(train_pairs)} training examples of the task mixture")
    train_rows, valid_rows = _rows(train_pairs), _rows(valid_pairs)
    distilled = _add_soft_targets(ctx, c, train_rows, train_pairs, start) if c.distill_weight > 0 else 0
    train_args = dict(batch_size=c.batch_size, seed=ctx.config.seed, buckets=_buckets(train_rows, c, fmt.eos_id))
    valid = None
    if valid_rows:
        valid = loader.batches(valid_rows, batch_size=c.eval_batch_size, shuffle=False, drop_remainder=False,
                               buckets=_buckets(valid_rows, c, fmt.eos_id))
    window = _response_window(train_pairs + valid_pairs, ctx.name) if c.response_logits_only else 0
    summary = {
        "train_examples": len(train_rows),
        "valid_examples": len(valid_rows),
        "dropped_too_long": {"train": train_dropped, "valid": valid_dropped},
        "tasks": task_counts(train_examples),
        "response_window": window,
        "distilled_examples": distilled,
    }
    return _Data(
        train=loader.batches(train_rows, num_epochs=None, **train_args),
        valid=valid,
        steps_per_epoch=len(loader.batches(train_rows, num_epochs=1, **train_args)),
        response_window=window,
        summary=summary,
    )


def _run(ctx, c: ml_collections.ConfigDict) -> dict[str, Any]:
    config = ctx.config
    _clear_finished_run(ctx)
    sids, level_sizes = load_sids(ctx.output_of("sids"))
    mesh = make_mesh(config.mesh)
    start, source = _starting_bundle(ctx, sids, level_sizes, mesh)
    memory_check.check_stage(config, ctx.name, start.model.config, mesh)
    _check_same_tokenizer(ctx, start.tokenizer)
    bundles.save(start, ctx.dir)
    # Read back from the bundle: training formats prompts exactly as eval and `sidjax.load` will.
    fmt = ChatFormat.from_hf_dir(ctx.dir, max_length=max(c.length_buckets), truncation=c.truncation)
    data = _data(ctx, c, fmt, start)
    total_steps = data.steps_per_epoch * c.epochs
    if c.max_steps:
        total_steps = min(total_steps, c.max_steps)
    logging.info("%s: %s, %d steps per epoch, %d steps, starting from %s", ctx.spec, data.summary,
                 data.steps_per_epoch, total_steps, source)

    wrt, update_scale = nnx.Param, None
    if config.model.train_only_new_rows:
        wrt, update_scale = frozen_lm(start.model, start.first_new_row)
    state = make_train_state(start.model, c, total_steps, wrt=wrt, update_scale=update_scale)
    with jax.set_mesh(mesh):  # the model's activation constraints apply while tracing the steps
        _, result = fit(state, data.train, data.valid, c=c, stage_dir=ctx.dir, steps_per_epoch=data.steps_per_epoch,
                        total_steps=total_steps, writer=ctx.writer, mesh=mesh, response_window=data.response_window,
                        seed=config.seed, desc=ctx.spec)
    bundles.finish(ctx.dir, result.best_step, valid_loss=result.best_valid_loss, source=source)
    return {
        "source": source,
        **data.summary,
        "steps": result.steps,
        "steps_per_epoch": data.steps_per_epoch,
        "best_step": result.best_step,
        "best_valid_loss": result.best_valid_loss,
        "valid_losses": result.valid_losses,
        "final_train_loss": result.train_loss,
        "tokens_per_second": result.tokens_per_second,
        "stopped_early": result.stopped_early,
    }
