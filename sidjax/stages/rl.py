"""Stage 3: outcome-driven RL from the bundle of the model stage entry in `init_from`: `grpo` and `sdpo`.

Both stages read their prompts from `config.<stage>.split` (next-item samples; never
test), start from `ctx.init_from()`'s bundle (which is also the frozen
reference model), train on the one training loop (sidjax.train.loop: checkpoints every
`checkpoint_every` steps and on SIGTERM) so a relaunch resumes where it stopped (step,
data order and RNG are functions of the step number), and end with a model bundle of
their own that `eval` picks up.
"""
from __future__ import annotations

import dataclasses
import shutil
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sidjax import bundle as bundles
from sidjax.configs.lineage import stage_remat
from sidjax.data.tasks import THINK_CLOSE
from sidjax.decode.beam import TrieTables, beam_search
from sidjax.decode.citations import history_citations
from sidjax.decode.sample import SamplingParams
from sidjax.eval.evaluate import Recommender
from sidjax.parallel.mesh import make_mesh
from sidjax.parallel.placement import place_state, put_batch
from sidjax.stages import memory_check
from sidjax.stages.context import StageContext
from sidjax.train import checkpoint as ckpt
from sidjax.train import grpo, sdpo
from sidjax.train.loop import LoopResult, StepFn, train_loop
from sidjax.train.state import TrainState, make_train_state
from sidjax.utils.settings import settings_from


@dataclasses.dataclass
class Prompts:
    """The RL prompts of one split, left-padded to `prompt_length`."""

    tokens: np.ndarray  # int32 [n, P]
    mask: np.ndarray  # bool [n, P]
    targets: np.ndarray  # int32 [n] item ids
    cite_sids: np.ndarray | None = None  # int32 [n, H, L]: the SID tokens each thought may cite (history citations)


def build_prompts(ctx: StageContext, rec: Recommender, c: ml_collections.ConfigDict, mode: str,
                  citations: str = "free") -> Prompts:
    """Next-item prompts (the eval's direct or reasoning wording) of `c.split`, tokenized and left-padded,
    with each prompt's history as the SIDs its thought may cite under `citations="history"`.

    Splits hold their samples in target-time order, so `c.recent_samples` keeps the split's last rows.
    """
    split = ctx.dataset.splits[c.split]
    rows = prompt_rows(len(split), c.recent_samples, c.max_samples, ctx.config.seed)
    histories = [split.history[i, : split.history_len[i]].tolist() for i in rows]
    ids = rec.prompt_ids(histories, mode)
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
    cite_sids = None
    if citations == "history":
        cite_sids = history_citations(rec.sids, histories, rec.level_offsets, rec.token_level).sids
    return Prompts(tokens, mask, split.target[rows].astype(np.int32), cite_sids)


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
    """What both RL stages share: bundle in, train state, the training loop, bundle out."""

    def __init__(self, ctx: StageContext, c: ml_collections.ConfigDict):
        source = ctx.init_from()
        if source is None:
            raise ValueError(f"stage '{ctx.spec}' needs a model stage entry to start from "
                             f"(config key '{ctx.name}.init_from')")
        self.ctx, self.c = ctx, c
        self.source = source
        if bundles.finished_step(ctx.dir) is not None:  # a finished run rerun through config.redo starts over
            for name in (ckpt.CHECKPOINTS, ckpt.BEST):
                shutil.rmtree(ctx.dir / name, ignore_errors=True)
        self.mesh = make_mesh(ctx.config.mesh)  # rollouts and updates share it
        self.bundle = bundle = bundles.load(ctx.output_of(source), mesh=self.mesh,
                                            remat=stage_remat(ctx.config, ctx.name))
        memory_check.check_stage(ctx.config, ctx.name, bundle.model.config, self.mesh)
        self.rec = bundle.recommender(self.mesh)
        if ctx.dataset.selected:  # an entry of some domains of a mix rolls out in their catalogues only
            self.rec = self.rec.within(ctx.dataset.domain_items())
        model = bundle.model
        self.ref_params = jax.tree.map(jnp.copy, nnx.state(model))
        self.state: TrainState = place_state(make_train_state(model, c, c.steps), self.mesh)
        bundles.save(dataclasses.replace(bundle, config=ctx.config), ctx.dir)
        self.checkpoints = ckpt.TrainCheckpoints(ctx.dir, c.keep_checkpoints)

    def train(self, step_fn: StepFn) -> LoopResult:
        """Run the one training loop from the latest checkpoint; `step_fn` derives its batch from the step."""

        def on_mesh(arrays: nnx.State, step: int) -> tuple[nnx.State, dict]:
            with jax.set_mesh(self.mesh):
                return step_fn(arrays, step)

        try:
            return train_loop(self.state.arrays, on_mesh, total_steps=self.c.steps, checkpoints=self.checkpoints,
                              log_every=self.c.log_every, checkpoint_every=self.c.checkpoint_every,
                              desc=self.ctx.spec, writer=self.ctx.writer)
        finally:
            self.checkpoints.close()

    def finish(self, result: LoopResult) -> dict[str, Any]:
        history = result.history
        best = ckpt.BestModel(self.ctx.dir)
        try:
            best.save(self.c.steps, result.arrays[0])
            best.wait()
        finally:
            best.close()
        bundles.finish(self.ctx.dir, self.c.steps, source=self.source)
        return {"steps": self.c.steps, "source": self.source, "first": history[0] if history else None,
                "last": history[-1] if history else None, "mean": mean_metrics(history)}


def mean_metrics(history: list[dict[str, float]]) -> dict[str, float] | None:
    """Each metric averaged over the logged steps: with few prompts per step, the first and last
    steps alone can show no reward signal although steps in between have it."""
    if not history:
        return None
    return {k: float(np.mean([h[k] for h in history])) for k in history[0] if k != "step"}


def grpo_rollout(run: _Run, c: ml_collections.ConfigDict) -> grpo.RolloutFn:
    """The configured decoder as a rollout: constrained top-G beams, or G sampled completions.

    A reasoning-mode sample is `<think> ... </think> SID` as the eval decodes it: the end of the turn
    is suppressed inside the thought, and with `c.citations = "history"` the thought cites only the
    user's own items. The answer after `</think>` is sampled freely, as SIDReasoner's rollouts are. A
    `search` reward adds the eval's SID search after each thought.
    """
    if c.rollout == "beam":
        return grpo.beam_rollout(c.group_size)
    stops = run.rec.format.stop_ids
    reasoning = c.mode == "reasoning"
    params = SamplingParams(max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_k=0, top_p=c.top_p,
                            repetition_penalty=c.repetition_penalty, no_repeat_ngram=c.no_repeat_ngram,
                            stop_tokens=stops, suppress_tokens=stops if reasoning else (),
                            thought_end=run.rec.think_close_id if reasoning else -1, num_samples=c.group_size)
    token_level = jnp.asarray(run.rec.token_level) if c.citations == "history" else None
    search = None
    if c.reward_weights.get("search", 0.0):
        search = grpo.ThoughtSearch(close_id=run.rec.think_close_id, answer_prefix=tuple(run.rec.answer_prefix_ids),
                                    num_beams=c.search_beams, normalize=run.ctx.config.eval.normalize)
    return grpo.sample_rollout(params, pad_id=run.rec.format.eos_id, token_level=token_level, search=search)


def run_grpo(ctx: StageContext) -> dict[str, Any]:
    c = ctx.config.grpo
    run = _Run(ctx, c)
    think_end = None
    if c.mode == "reasoning":
        think_end = run.rec.think_close_id
        if think_end is None:
            raise ValueError(f"config key 'grpo.mode': 'reasoning' needs a '{THINK_CLOSE}' token, which the "
                             f"tokenizer of {run.bundle.directory} lacks")
    prompts = build_prompts(ctx, run.rec, c, c.mode, c.citations)
    settings = settings_from(grpo.GrpoSettings, c, think_end_id=think_end)
    step = grpo.make_grpo_step(run.state.graphdef, run.state.wrt, grpo_rollout(run, c), settings)
    step_fn = grpo_step_fn(step, prompts, run.bundle.sids[prompts.targets], run.ref_params, run.rec.tables,
                           batch_size=c.batch_size, seed=ctx.config.seed, mesh=run.mesh)
    return run.finish(run.train(step_fn))


def _put(arrays: tuple[np.ndarray, ...], mesh: jax.sharding.Mesh | None) -> tuple[jax.Array, ...]:
    """A step's batch (the same on every process), copied to every device: RL batch sizes need not divide the mesh."""
    return put_batch(arrays, mesh, rows="replicated")


def grpo_step_fn(step: Callable, prompts: Prompts, target_codes: np.ndarray, ref_params: nnx.State,
                 tables: TrieTables, *, batch_size: int, seed: int, mesh: jax.sharding.Mesh | None) -> StepFn:
    """Loop step i of GRPO: the prompts of `batch_rows(i)`, the rollout key `fold_in(key(seed), i)`.

    `step` is `grpo.make_grpo_step`'s; `target_codes` [n, L] are the SIDs of `prompts.targets`.
    """
    key = jax.random.key(seed)

    def step_fn(arrays: nnx.State, i: int) -> tuple[nnx.State, dict]:
        rows = batch_rows(i, batch_size, len(prompts.targets), seed)
        cites = () if prompts.cite_sids is None else (prompts.cite_sids[rows],)
        tokens, mask, codes, *cites = _put((prompts.tokens[rows], prompts.mask[rows], target_codes[rows], *cites), mesh)
        inputs = grpo.StepInputs(tokens, mask, codes, jax.random.fold_in(key, i), *cites)
        return step(arrays, ref_params, inputs, tables)

    return step_fn


def sdpo_negatives(run: _Run, c, prompts: Prompts, rows: np.ndarray, step: int, arrays: nnx.State,
                   model_graphdef) -> np.ndarray:
    """Negative item ids [B, M] for the batch: random items, or the policy's best wrong beams."""
    targets = prompts.targets[rows]
    if c.negative_source == "random":
        rng = np.random.default_rng([run.ctx.config.seed, step])
        return sdpo.random_negatives(targets, len(run.bundle.sids), c.negatives, rng)
    model = nnx.merge(model_graphdef, arrays[0])
    beams = beam_search(model, *_put((prompts.tokens[rows], prompts.mask[rows]), run.mesh), run.rec.tables,
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

    def negatives(rows: np.ndarray, i: int, arrays: nnx.State) -> np.ndarray:
        return sdpo_negatives(run, c, prompts, rows, i, arrays, model_graphdef)

    step_fn = sdpo_step_fn(step, prompts, run.bundle.sids, run.bundle.level_offsets, negatives, run.ref_params,
                           batch_size=c.batch_size, seed=ctx.config.seed, mesh=run.mesh)
    return run.finish(run.train(step_fn))


def sdpo_step_fn(step: Callable, prompts: Prompts, sids: np.ndarray, level_offsets: np.ndarray,
                 negatives: Callable[[np.ndarray, int, nnx.State], np.ndarray], ref_params: nnx.State, *,
                 batch_size: int, seed: int, mesh: jax.sharding.Mesh | None) -> StepFn:
    """Loop step i of S-DPO: the prompts of `batch_rows(i)`, their target's SID chosen over the SIDs of
    `negatives(rows, i, arrays)` (item ids [B, M]). `step` is `sdpo.make_sdpo_step`'s."""

    def step_fn(arrays: nnx.State, i: int) -> tuple[nnx.State, dict]:
        rows = batch_rows(i, batch_size, len(prompts.targets), seed)
        items = np.concatenate([prompts.targets[rows, None], negatives(rows, i, arrays)], axis=1)  # [B, 1 + M]
        responses = (sids[items] + level_offsets).astype(np.int32)
        batch = sdpo.PreferenceBatch(*_put((prompts.tokens[rows], prompts.mask[rows], responses,
                                            np.ones(responses.shape, bool)), mesh))
        return step(arrays, ref_params, batch)

    return step_fn
