"""SASRec (Kang & McAuley, 2018): causal self-attention over the history, full softmax over all items.

A small Flax NNX module and its trainer. Training uses each train sample's
(history -> target) pair with the loss at the last history position; epochs run
as one jitted `lax.scan` over shuffled batches. The number of epochs (early
stopping) and the dropout rate are chosen on the valid split only.

Given a `resume_dir`, a fit saves its whole state after every epoch (parameters,
optimizer, best parameters, shuffle and dropout RNGs, curve: `dropout_<d>.npz`,
atomically), so a run killed by SIGKILL resumes after its last finished epoch and
ends with the same model; SIGTERM finishes the epoch, saves and raises `Preempted`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from sidjax.baselines import item_metrics
from sidjax.data.dataset import Split
from sidjax.train.checkpoint import BEST, BestModel, restore_model_arrays
from sidjax.train.loop import Preempted, SigtermFlag
from sidjax.utils.metrics import MetricsWriter
from sidjax.utils.progress import progress

MODEL_CONFIG = "sasrec_config.json"


@dataclasses.dataclass(frozen=True)
class SasRecConfig:
    num_items: int
    max_len: int  # longest history (the data's max_history)
    dim: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.3


class Block(nnx.Module):
    """Pre-norm causal self-attention + position-wise feed-forward, both residual with dropout."""

    def __init__(self, dim: int, heads: int, dropout: float, *, rngs: nnx.Rngs):
        self.heads = heads
        self.attn_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.out = nnx.Linear(dim, dim, rngs=rngs)
        self.ff_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.ff_in = nnx.Linear(dim, dim, rngs=rngs)
        self.ff_out = nnx.Linear(dim, dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None) -> jax.Array:
        b, t, d = x.shape
        deterministic = rngs is None
        q, k, v = jnp.split(self.qkv(self.attn_norm(x)).reshape(b, t, 3 * self.heads, d // self.heads), 3, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // self.heads)
        causal = jnp.tril(jnp.ones((t, t), bool))
        weights = jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
        weights = self.dropout(weights, deterministic=deterministic, rngs=rngs)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, d)
        x = x + self.dropout(self.out(attended), deterministic=deterministic, rngs=rngs)
        hidden = self.dropout(jax.nn.relu(self.ff_in(self.ff_norm(x))), deterministic=deterministic, rngs=rngs)
        return x + self.dropout(self.ff_out(hidden), deterministic=deterministic, rngs=rngs)


class SasRec(nnx.Module):
    """Item + recency-position embeddings -> causal blocks -> scores of every item (tied embeddings)."""

    def __init__(self, config: SasRecConfig, *, rngs: nnx.Rngs):
        self.config = config
        init = nnx.initializers.normal(stddev=config.dim ** -0.5)
        # Row num_items is the padding item (history id -1).
        self.items = nnx.Embed(config.num_items + 1, config.dim, embedding_init=init, rngs=rngs)
        self.positions = nnx.Embed(config.max_len, config.dim, embedding_init=init, rngs=rngs)
        self.blocks = nnx.List([Block(config.dim, config.heads, config.dropout, rngs=rngs)
                                for _ in range(config.layers)])
        self.final_norm = nnx.LayerNorm(config.dim, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout)

    def __call__(self, history: jax.Array, history_len: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits f32 [B, num_items] for the next item after `history` int32 [B, H] (-1 padded at the end).

        Padding sits after the last real item, so the causal mask alone keeps it
        out of the last real position, whose state scores the items. Positions
        count back from the most recent item, so "last bought" always shares an
        embedding whatever the history length.
        """
        n = self.config.num_items
        steps = jnp.arange(history.shape[1])
        recency = jnp.clip(history_len[:, None] - 1 - steps[None, :], 0, self.config.max_len - 1)
        x = self.items(jnp.where(history < 0, n, history)) + self.positions(recency)
        x = self.dropout(x, deterministic=rngs is None, rngs=rngs)
        for block in self.blocks:
            x = block(x, rngs=rngs)
        last = self.final_norm(x[jnp.arange(x.shape[0]), history_len - 1])
        return last @ self.items.embedding[...][:n].T


def _optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """AdamW; decay only on matrices and embeddings, never on norms' scales or biases."""
    return optax.adamw(learning_rate, weight_decay=weight_decay,
                       mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params))


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """One epoch of shuffled sample indices int32 [steps, batch]; the ragged tail is dropped."""
    steps = n // batch_size
    if steps == 0:
        raise ValueError(f"sasrec: the train split has {n} samples, fewer than one batch of {batch_size}")
    return rng.permutation(n)[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


@functools.lru_cache(maxsize=8)
def make_epoch_fn(graphdef: nnx.GraphDef, learning_rate: float, weight_decay: float) -> Callable:
    """Jitted: one epoch of AdamW steps (scanned) -> (params, opt_state, mean loss); cached per model and optimizer."""
    tx = _optimizer(learning_rate, weight_decay)

    def loss_fn(params, history, history_len, target, key):
        model = nnx.merge(graphdef, params)
        logits = model(history, history_len, rngs=nnx.Rngs(dropout=key))
        return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()

    def epoch(params, opt_state, history, history_len, target, batches, key):
        def step(carry, xs):
            params, opt_state = carry
            idx, step_key = xs
            loss, grads = jax.value_and_grad(loss_fn)(params, history[idx], history_len[idx], target[idx], step_key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        keys = jax.random.split(key, batches.shape[0])
        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (batches, keys))
        return params, opt_state, losses.mean()

    return jax.jit(epoch, donate_argnums=(0, 1))


@functools.partial(jax.jit, static_argnames=("graphdef", "k"))
def _rank(graphdef: nnx.GraphDef, params: nnx.State, history: jax.Array, history_len: jax.Array, k: int) -> jax.Array:
    return jax.lax.top_k(nnx.merge(graphdef, params)(history, history_len), k)[1]


def top_items(model: SasRec, split: Split, k: int, batch_size: int) -> np.ndarray:
    """The k highest-scoring items per sample, best first: int32 [n, k]."""
    graphdef, params = nnx.split(model)
    n = len(split)
    padded = -(-n // batch_size) * batch_size
    # Padding rows repeat row 0 so every call has the same static shape; their output is dropped.
    rows = np.concatenate([np.arange(n), np.zeros(padded - n, dtype=np.int64)])
    out = [np.asarray(_rank(graphdef, params, split.history[rows[i:i + batch_size]],
                            split.history_len[rows[i:i + batch_size]], k))
           for i in range(0, padded, batch_size)]
    return np.concatenate(out)[:n]


def evaluate(model: SasRec, split: Split, ks: Iterable[int], batch_size: int) -> dict[str, float]:
    ks = tuple(ks)
    return item_metrics(top_items(model, split, max(ks), batch_size), split.target, ks)


@dataclasses.dataclass
class FitResult:
    model: SasRec  # the parameters of the best valid epoch
    dropout: float
    best_epoch: int
    epochs: int  # epochs run before early stopping
    valid: dict[str, float]  # valid metrics of the best epoch
    curve: list[dict[str, float]]  # per epoch: train loss and valid metrics


@dataclasses.dataclass
class _Progress:
    """Everything a fit carries from one epoch to the next (what `resume_dir` keeps)."""

    epoch: int
    params: Any
    opt_state: Any
    key: jax.Array
    order: np.random.Generator
    best_value: float = -1.0
    best_epoch: int = 0
    best_params: Any = None
    best_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    curve: list[dict[str, float]] = dataclasses.field(default_factory=list)
    finished: bool = False


def _progress_path(resume_dir: Path, dropout: float) -> Path:
    return resume_dir / f"dropout_{dropout}.npz"


def _save_progress(path: Path, p: _Progress, signature: str) -> None:
    """The fit's state after an epoch, replacing the previous one atomically (process 0)."""
    if jax.process_index() != 0:
        return
    leaves = jax.tree.leaves((p.params, p.opt_state, p.best_params))
    meta = {"signature": signature, "epoch": p.epoch, "best_value": p.best_value, "best_epoch": p.best_epoch, "best_metrics": p.best_metrics,
            "curve": p.curve, "finished": p.finished, "order": p.order.bit_generator.state}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), key=np.asarray(jax.random.key_data(p.key)),
             **{f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)})
    os.replace(tmp, path)


def _load_progress(path: Path, fresh: _Progress, signature: str) -> _Progress:
    """The state `_save_progress` wrote, in the structure of `fresh` (the state before epoch 1).

    A state saved by a fit of other settings or data is not resumed: `fresh` is returned.
    """
    with np.load(path, allow_pickle=False) as saved:
        meta = json.loads(str(saved["meta"]))
        if meta["signature"] != signature:
            logging.warning("sasrec: %s was saved by a fit of other settings or data; starting this fit over", path)
            return fresh
        structure = jax.tree.structure((fresh.params, fresh.opt_state, fresh.params))
        leaves = [jnp.asarray(saved[f"leaf_{i}"]) for i in range(structure.num_leaves)]
        key = jax.random.wrap_key_data(jnp.asarray(saved["key"]))
    params, opt_state, best_params = jax.tree.unflatten(structure, leaves)
    fresh.order.bit_generator.state = meta["order"]
    return _Progress(epoch=meta["epoch"], params=params, opt_state=opt_state, key=key, order=fresh.order,
                     best_value=meta["best_value"], best_epoch=meta["best_epoch"], best_params=best_params,
                     best_metrics=meta["best_metrics"], curve=meta["curve"], finished=meta["finished"])


def fit(train: Split, valid: Split, num_items: int, c: ml_collections.ConfigDict, dropout: float, ks: Iterable[int],
        eval_batch_size: int, writer: MetricsWriter | None = None, resume_dir: str | os.PathLike | None = None
        ) -> FitResult:
    """Train one SASRec with `dropout`, early-stopped on the valid `c.select_metric`.

    `resume_dir`: where the fit keeps its state after every epoch and resumes from it (module doc).
    """
    ks = tuple(ks)
    config = SasRecConfig(num_items=num_items, max_len=train.history.shape[1], dim=c.dim, layers=c.layers,
                          heads=c.heads, dropout=dropout)
    model = SasRec(config, rngs=nnx.Rngs(params=c.seed))
    graphdef, params = nnx.split(model)
    opt_state = _optimizer(c.learning_rate, c.weight_decay).init(params)
    epoch_fn = make_epoch_fn(graphdef, c.learning_rate, c.weight_decay)
    data = (jnp.asarray(train.history), jnp.asarray(train.history_len), jnp.asarray(train.target))
    p = _Progress(epoch=0, params=params, opt_state=opt_state, key=jax.random.key(c.seed),
                  order=np.random.default_rng(c.seed))
    path = _progress_path(Path(resume_dir), dropout) if resume_dir is not None else None
    signature = json.dumps({"settings": c.to_dict(), "dropout": dropout, "ks": ks, "items": num_items,
                            "train": len(train), "valid": len(valid)}, sort_keys=True, default=str)
    if path is not None and path.exists():
        p = _load_progress(path, p, signature)
        if p.epoch:
            logging.info("sasrec dropout=%s: resumed after epoch %d", dropout, p.epoch)
    prefix = f"sasrec/dropout_{dropout}/"
    if writer is not None:
        writer.forget_after(p.epoch, prefix=prefix)  # rows of epochs redone after a kill
    desc = f"sasrec dropout={dropout}"
    bar = progress(range(p.epoch + 1, c.max_epochs + 1), desc=desc, unit="epoch")
    # SIGTERM finishes the epoch, saves it and stops (only where there is somewhere to save it).
    with SigtermFlag() if path is not None else contextlib.nullcontext() as sigterm:
        for epoch in bar:
            if p.finished:
                break
            p.key, epoch_key = jax.random.split(p.key)
            p.params, p.opt_state, loss = epoch_fn(p.params, p.opt_state, *data,
                                                   _batches(len(train), c.batch_size, p.order), epoch_key)
            metrics = evaluate(nnx.merge(graphdef, p.params), valid, ks, eval_batch_size)
            value = metrics[c.select_metric]
            p.epoch = epoch
            p.curve.append({"epoch": epoch, "loss": float(loss), **metrics})
            if writer is not None:
                writer.write(epoch, {"train/loss": float(loss), **{f"valid/{k}": v for k, v in metrics.items()
                                                                   if k != "users"}}, prefix=prefix)
            if value > p.best_value:
                p.best_value, p.best_epoch, p.best_metrics = value, epoch, metrics
                p.best_params = jax.tree.map(jnp.copy, p.params)
            bar.set_postfix(loss=f"{float(loss):.4f}", valid=f"{value:.4f}", best=f"{p.best_value:.4f}@{p.best_epoch}")
            p.finished = epoch - p.best_epoch >= c.patience or epoch == c.max_epochs
            if path is not None:
                _save_progress(path, p, signature)
            if sigterm is not None and sigterm.raised:  # (a finished fit too: the next one would not see it)
                raise Preempted(desc, epoch)
    bar.close()
    logging.info("sasrec dropout=%s: best valid %s %.4f at epoch %d of %d", dropout, c.select_metric, p.best_value,
                 p.best_epoch, p.epoch)
    return FitResult(model=nnx.merge(graphdef, p.best_params), dropout=dropout, best_epoch=p.best_epoch,
                     epochs=p.epoch, valid=p.best_metrics, curve=p.curve)


def tune(train: Split, valid: Split, num_items: int, c: ml_collections.ConfigDict, ks: Iterable[int],
         eval_batch_size: int, writer: MetricsWriter | None = None, resume_dir: str | os.PathLike | None = None
         ) -> tuple[FitResult, list[dict[str, Any]]]:
    """Fit one model per `c.dropouts`; keep the one with the best valid metric (first wins ties)."""
    fits = [fit(train, valid, num_items, c, d, ks, eval_batch_size, writer, resume_dir) for d in c.dropouts]
    trials = [{"dropout": f.dropout, "best_epoch": f.best_epoch, "epochs": f.epochs,
               c.select_metric: f.valid[c.select_metric]} for f in fits]
    best = max(fits, key=lambda f: f.valid[c.select_metric])
    return best, trials


def save(model: SasRec, directory: str | os.PathLike, step: int) -> None:
    """The model's shape (`sasrec_config.json`) and parameters (Orbax, `best/<step>/model`), for `load`.

    Every process calls it (Orbax saves collectively); the parameters go as host arrays, which
    the primary process writes.
    """
    directory = Path(directory)
    if jax.process_index() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_CONFIG).write_text(json.dumps(dataclasses.asdict(model.config), indent=2),
                                              encoding="utf-8")
    best = BestModel(directory)
    try:
        best.save(step, jax.tree.map(np.asarray, nnx.state(model)))
        best.wait()
    finally:
        best.close()


def load(directory: str | os.PathLike) -> SasRec:
    """The SASRec that `save` wrote to `directory` (a `sasrec` stage's directory)."""
    directory = Path(directory)
    config_path = directory / MODEL_CONFIG
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: no SASRec model here (the `sasrec` stage writes it)")
    model = SasRec(SasRecConfig(**json.loads(config_path.read_text(encoding="utf-8"))), rngs=nnx.Rngs(params=0))
    best = BestModel(directory)
    try:
        step = best.latest_step()
    finally:
        best.close()
    if step is None:
        raise FileNotFoundError(f"{directory / BEST}: no saved SASRec parameters")
    nnx.update(model, restore_model_arrays(directory / BEST, step, nnx.state(model)))
    return model
