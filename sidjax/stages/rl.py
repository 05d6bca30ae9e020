"""Stage 3: outcome-driven RL from the latest model stage's bundle: `grpo` and `sdpo`.

Both stages read their prompts from `config.<stage>.split` (next-item samples; never
test), start from `ctx.latest_model_stage()`'s bundle (which is also the frozen
reference model), checkpoint the train state every `checkpoint_every` steps so a
relaunch resumes where it stopped (step, data order and RNG are functions of the
step number), and end with a model bundle of their own that `eval` picks up.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from sidjax.api import recommender_from_bundle
from sidjax.data.tasks import THINK_CLOSE
from sidjax.decode.beam import beam_search
from sidjax.decode.sample import SamplingParams
from sidjax.eval.evaluate import Recommender
from sidjax.parallel.mesh import make_mesh
from sidjax.stages import StageContext
from sidjax.stages import memory_check
from sidjax.train import checkpoint as ckpt
from sidjax.train import grpo, sdpo
from sidjax.train.sft import place_state
from sidjax.train.state import TrainState, make_train_state
from sidjax.utils.progress import progress
from sidjax.utils.settings import settings_from


@dataclasses.dataclass
class Prompts:
    """The RL prompts of one split, left-padded to `prompt_length`."""

    tokens: np.ndarray  # int32 [n, P]
    mask: np.ndarray  # bool [n, P]
    targets: np.ndarray  # int32 [n] item ids


def build_prompts(ctx: StageContext, rec: Recommender, c: ml_collections.ConfigDict, mode: str) -> Prompts:
    """Next-item prompts (the eval's direct or reasoning wording) of `c.split`, tokenized and left-padded.

    Splits hold their samples in target-time order, so `c.recent_samples` keeps the split's last rows.
    """
    split = ctx.dataset.splits[c.split]
    rows = prompt_rows(len(split), c.recent_samples, c.max_samples, ctx.config.seed)
    ids = rec.prompt_ids([split.history[i, : split.history_len[i]].tolist() for i in rows], mode)
    longest = max(len(p) for p in ids)
    if longest > c.prompt_length:
        raise ValueError(
            f"config key '{ctx.name}.prompt_length': a {c.split} prompt has {longest} tokens, over {c.prompt_length}"
        )
    tokens = np.full((len(ids), c.prompt_length), rec.format.eos_id, np.int32)
    mask = np.zeros((len(ids), c.prompt_length), bool)
    for i, p in enumerate(ids):
        tokens[i, c.prompt_length - len(p):] = p
        mask[i, c.prompt_length - len(p):] = True
    return Prompts(tokens, mask, split.target[rows].astype(np.int32))


def prompt_rows(num_samples: int, recent: int, max_samples: int, seed: int) -> np.ndarray:
    """Rows of a time-ordered split to prompt with: its last `recent` (0: all), then a seeded subset of them."""
    rows = np.arange(num_samples)
    if recent:
        rows = rows[-recent:]
    if max_samples and max_samples < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_samples, replace=False))
    return rows


def batch_rows(step: int, batch_size: int, num_prompts: int, seed: int) -> np.ndarray:
    """Prompt rows of `step`: epoch-wise seeded permutations, so a resumed run draws the same batches."""
    epoch_len = max(num_prompts // batch_size, 1)
    epoch, offset = divmod(step, epoch_len)
    order = np.random.default_rng([seed, epoch]).permutation(num_prompts)
    if num_prompts < batch_size:
        order = np.resize(order, batch_size)
    return order[offset * batch_size: (offset + 1) * batch_size]


class _Run:
    """What both RL stages share: bundle in, train state, resume, logging, bundle out."""

    def __init__(self, ctx: StageContext, c: ml_collections.ConfigDict):
        source = ctx.latest_model_stage()
        if source is None:
            raise ValueError(f"stage '{ctx.spec}' needs an earlier model stage (sft / reason_sft) in config.stages")
        self.ctx, self.c = ctx, c
        self.source = source
        if ckpt.read_bundle_step(ctx.dir) is not None:  # a finished run rerun through config.redo starts over
            for name in (ckpt.CHECKPOINTS, ckpt.BEST):
                shutil.rmtree(ctx.dir / name, ignore_errors=True)
        self.mesh = make_mesh(ctx.config.mesh)  # rollouts and updates share it
        self.bundle = bundle = ckpt.load_bundle(ctx.output_of(source), mesh=self.mesh)
        memory_check.check_stage(ctx.config, ctx.name, bundle.model.config, self.mesh)
        self.rec = recommender_from_bundle(bundle, self.mesh)[0]
        model = bundle.model
        self.ref_params = jax.tree.map(jnp.copy, nnx.state(model))
        self.state: TrainState = place_state(make_train_state(model, c, c.steps), self.mesh)
        ckpt.save_bundle(ctx.dir, model_config=model.config, tokenizer=bundle.tokenizer, sids=bundle.sids,
                         level_offsets=bundle.level_offsets, config=ctx.config,
                         tokenizer_config=bundle.tokenizer_config, first_new_row=bundle.first_new_row)
        self.checkpoints = ckpt.TrainCheckpoints(ctx.dir, c.keep_checkpoints)

    def resume(self) -> tuple[nnx.State, int]:
        latest = self.checkpoints.latest_step()
        if latest is None:
            return self.state.arrays, 0
        arrays, _, _ = self.checkpoints.restore(latest, self.state.arrays)
        logging.info("%s: resumed from step %d of %d", self.ctx.spec, latest, self.c.steps)
        return arrays, latest

    def loop(self, arrays: nnx.State, start: int, step_fn: Callable[[nnx.State, int], tuple[nnx.State, dict]]
             ) -> tuple[nnx.State, list[dict[str, float]]]:
        history: list[dict[str, float]] = []
        pending: list[tuple[int, dict]] = []
        bar = progress(desc=self.ctx.spec, total=self.c.steps, unit="step")
        bar.update(start)
        began = time.perf_counter()
        try:
            for step in range(start, self.c.steps):
                with jax.set_mesh(self.mesh):
                    arrays, metrics = step_fn(arrays, step)
                pending.append((step + 1, metrics))
                bar.update(1)
                done = step + 1
                if done % self.c.log_every == 0 or done == self.c.steps:
                    for logged_step, m in jax.device_get(pending):
                        values = {k: float(v) for k, v in m.items()}
                        values["seconds_per_step"] = (time.perf_counter() - began) / max(done - start, 1)
                        self.ctx.writer.write(logged_step, values, prefix="train/")
                        history.append({"step": logged_step, **values})
                    pending = []
                    bar.set_postfix(reward=f"{history[-1].get('reward/total', history[-1].get('loss')):.4f}")
                if done % self.c.checkpoint_every == 0 or done == self.c.steps:
                    self.checkpoints.save(done, arrays, {"step": done}, {})
            self.checkpoints.wait()
        finally:
            bar.close()
            self.checkpoints.close()
        return arrays, history

    def finish(self, arrays: nnx.State, history: list[dict[str, float]]) -> dict[str, Any]:
        best = ckpt.BestModel(self.ctx.dir)
        try:
            best.save(self.c.steps, arrays[0])
            best.wait()
        finally:
            best.close()
        ckpt.finish_bundle(self.ctx.dir, self.c.steps, source=self.source)
        return {"steps": self.c.steps, "source": self.source, "first": history[0] if history else None,
                "last": history[-1] if history else None, "mean": mean_metrics(history)}


def mean_metrics(history: list[dict[str, float]]) -> dict[str, float] | None:
    """Each metric averaged over the logged steps: with few prompts per step, the first and last
    steps alone can show no reward signal although steps in between have it."""
    if not history:
        return None
    return {k: float(np.mean([h[k] for h in history])) for k in history[0] if k != "step"}


def grpo_rollout(run: _Run, c: ml_collections.ConfigDict) -> grpo.RolloutFn:
    """The configured decoder as a rollout: constrained top-G beams, or G sampled completions."""
    if c.rollout == "beam":
        return grpo.beam_rollout(c.group_size)
    params = SamplingParams(max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_k=0, top_p=c.top_p,
                            repetition_penalty=c.repetition_penalty, stop_tokens=run.rec.format.stop_ids, num_samples=c.group_size)
    return grpo.sample_rollout(params, pad_id=run.rec.format.eos_id)


def run_grpo(ctx: StageContext) -> dict[str, Any]:
    c = ctx.config.grpo
    run = _Run(ctx, c)
    think_end = None
    if c.mode == "reasoning":
        think_end = run.rec.think_close_id
        if think_end is None:
            raise ValueError(f"config key 'grpo.mode': 'reasoning' needs a '{THINK_CLOSE}' token, which the "
                             f"tokenizer of {run.bundle.directory} lacks")
    prompts = build_prompts(ctx, run.rec, c, c.mode)
    settings = settings_from(grpo.GrpoSettings, c, think_end_id=think_end)
    step = grpo.make_grpo_step(run.state.graphdef, run.state.wrt, grpo_rollout(run, c), settings)
    target_codes = run.bundle.sids[prompts.targets]
    key = jax.random.key(ctx.config.seed)

    def step_fn(arrays, i):
        rows = batch_rows(i, c.batch_size, len(prompts.targets), ctx.config.seed)
        inputs = grpo.StepInputs(jnp.asarray(prompts.tokens[rows]), jnp.asarray(prompts.mask[rows]),
                                 jnp.asarray(target_codes[rows]), jax.random.fold_in(key, i))
        return step(arrays, run.ref_params, inputs, run.rec.tables)

    arrays, start = run.resume()
    arrays, history = run.loop(arrays, start, step_fn)
    return run.finish(arrays, history)


def sdpo_negatives(run: _Run, c, prompts: Prompts, rows: np.ndarray, step: int, arrays: nnx.State,
                   model_graphdef) -> np.ndarray:
    """Negative item ids [B, M] for the batch: random items, or the policy's best wrong beams."""
    targets = prompts.targets[rows]
    if c.negative_source == "random":
        rng = np.random.default_rng([run.ctx.config.seed, step])
        return sdpo.random_negatives(targets, len(run.bundle.sids), c.negatives, rng)
    model = nnx.merge(model_graphdef, arrays[0])
    beams = beam_search(model, jnp.asarray(prompts.tokens[rows]), jnp.asarray(prompts.mask[rows]), run.rec.tables,
                        num_beams=c.negatives + 1)
    leaves = np.asarray(beams.leaves)
    items = np.where(leaves >= 0, run.rec.trie.leaf_items[np.maximum(leaves, 0), 0], -1)
    return sdpo.hard_negatives(items, targets, c.negatives)


def run_sdpo(ctx: StageContext) -> dict[str, Any]:
    c = ctx.config.sdpo
    run = _Run(ctx, c)
    prompts = build_prompts(ctx, run.rec, c, "direct")
    step = sdpo.make_sdpo_step(run.state.graphdef, run.state.wrt, settings_from(sdpo.SdpoSettings, c))
    model_graphdef = nnx.graphdef(run.bundle.model)
    offsets = run.bundle.level_offsets

    def step_fn(arrays, i):
        rows = batch_rows(i, c.batch_size, len(prompts.targets), ctx.config.seed)
        negatives = sdpo_negatives(run, c, prompts, rows, i, arrays, model_graphdef)
        items = np.concatenate([prompts.targets[rows, None], negatives], axis=1)  # [B, 1 + M]
        responses = (run.bundle.sids[items] + offsets).astype(np.int32)
        batch = sdpo.PreferenceBatch(jnp.asarray(prompts.tokens[rows]), jnp.asarray(prompts.mask[rows]),
                                     jnp.asarray(responses), jnp.ones(responses.shape, bool))
        return step(arrays, run.ref_params, batch)

    arrays, start = run.resume()
    arrays, history = run.loop(arrays, start, step_fn)
    return run.finish(arrays, history)
