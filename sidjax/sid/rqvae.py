"""RQ-VAE (Flax NNX): an MLP autoencoder whose latent is quantized by L residual codebooks.

The codes an item's latent picks at each level are its Semantic ID. Training
follows the recipe the papers use (TIGER / LC-Rec / MiniOneRec): k-means
initialised codebooks, codebook + beta * commitment loss, straight-through
gradients, reconstruction MSE, plus re-seeding of codes nobody uses. One
epoch is ONE jitted call (a `lax.scan` over its batches, buffers donated), so
the tiny per-batch work is not swamped by Python dispatch.

On a device mesh (`train(..., mesh=...)`) the work is data-parallel: each
batch's rows (and, for k-means init and encoding, the catalogue's rows) are
split over the mesh's batch axes (data, fsdp), while the parameters, the
optimizer state and the item embeddings themselves are replicated. The model
is a few MLP layers and codebooks (well under a million floats), so sharding
it would cost more in communication than it saves; GSPMD inserts the
gradient all-reduce. The tensor axis holds copies of the same work.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from sidjax.model import linear
from sidjax.model.per_feature import add_bias
from sidjax.sid.kmeans import kmeans, row_shards, split_rows, sq_distances
from sidjax.utils.progress import progress

_ENCODE_CHUNK = 4096  # rows per chunk when encoding a whole catalogue (bounds the [rows, K] distances)


@dataclasses.dataclass(frozen=True)
class RQVAEConfig:
    input_dim: int
    hidden: tuple[int, ...] = (512, 256, 128)
    code_dim: int = 32
    levels: int = 3
    codebook_size: int = 256
    beta: float = 0.25
    quant_weight: float = 1.0
    # matmul compute dtype of the encoder / decoder (weights float32); latents, distances, codebooks and
    # losses are float32 either way. "auto" is resolved before a config is made (sidjax.model.precision).
    dtype: str = "float32"


class MLP(nnx.Module):
    """Linear layers with ReLU between them (none after the last)."""

    def __init__(self, sizes: Sequence[int], *, rngs: nnx.Rngs, dtype: str = "float32"):
        self.layers = nnx.List([nnx.Linear(a, b, dtype=jnp.dtype(dtype), param_dtype=jnp.float32, rngs=rngs)
                                for a, b in zip(sizes[:-1], sizes[1:])])

    def __call__(self, x: jax.Array) -> jax.Array:
        """float32 outputs whatever the compute dtype."""
        for i, layer in enumerate(self.layers):
            x = add_bias(linear.project(x.astype(layer.dtype), layer.kernel[...]), layer.bias[...])
            if i + 1 < len(self.layers):
                x = jax.nn.relu(x)
        return x.astype(jnp.float32)


class Quantized(NamedTuple):
    quantized: jax.Array  # [N, D] sum of the chosen code vectors (straight-through gradients to the input)
    codes: jax.Array  # int32 [N, L]
    residuals: jax.Array  # [N, L, D] what each level quantized
    loss: jax.Array  # codebook + beta * commitment loss, mean over levels


def residual_quantize(codebooks: jax.Array, z: jax.Array, beta: float) -> Quantized:
    """Quantize z [N, D] with codebooks [L, K, D], level by level on what the previous levels left."""
    residual = z
    quantized = jnp.zeros_like(z)
    codes, inputs, loss = [], [], 0.0
    for level in range(codebooks.shape[0]):
        book = codebooks[level]
        idx = jnp.argmin(sq_distances(residual, book), axis=1).astype(jnp.int32)
        chosen = book[idx]
        loss = loss + jnp.mean((chosen - jax.lax.stop_gradient(residual)) ** 2)
        loss = loss + beta * jnp.mean((jax.lax.stop_gradient(chosen) - residual) ** 2)
        straight = residual + jax.lax.stop_gradient(chosen - residual)
        codes.append(idx)
        inputs.append(residual)
        quantized = quantized + straight
        residual = residual - straight
    return Quantized(quantized, jnp.stack(codes, axis=1), jnp.stack(inputs, axis=1), loss / codebooks.shape[0])


class RQVAE(nnx.Module):
    def __init__(self, config: RQVAEConfig, *, rngs: nnx.Rngs):
        self.config = config
        sizes = (config.input_dim, *config.hidden, config.code_dim)
        self.encoder = MLP(sizes, rngs=rngs, dtype=config.dtype)
        self.decoder = MLP(sizes[::-1], rngs=rngs, dtype=config.dtype)
        bound = 1.0 / config.codebook_size
        shape = (config.levels, config.codebook_size, config.code_dim)
        self.codebooks = nnx.Param(jax.random.uniform(rngs.params(), shape, minval=-bound, maxval=bound))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, Quantized]:
        q = residual_quantize(self.codebooks[...], self.encoder(x), self.config.beta)
        return self.decoder(q.quantized), q

    def losses(self, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Total loss and (reconstruction MSE, quantization loss)."""
        recon, q = self(x)
        mse = jnp.mean((recon - x) ** 2)
        return mse + self.config.quant_weight * q.loss, (mse, q.loss)


class Encoded(NamedTuple):
    codes: np.ndarray  # int32 [N, L]
    residuals: np.ndarray  # float32 [N, L, D]
    recon_mse: float


def _encode_chunk(model: RQVAE, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    recon, q = model(x)
    return q.codes, q.residuals, jnp.sum((recon - x) ** 2, axis=1)


def _on_mesh(mesh: jax.sharding.Mesh | None) -> contextlib.AbstractContextManager:
    """Trace under `mesh` (so `split_rows` splits rows over its batch axes); no mesh: as before."""
    return jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()


def _replicated(tree, mesh: jax.sharding.Mesh | None):
    """`tree` copied whole onto every device of `mesh` (unchanged without one)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def _whole(tree):
    """Outputs every process can read (replicated) when traced under a mesh."""
    if jax.sharding.get_abstract_mesh().empty:
        return tree
    return jax.lax.with_sharding_constraint(tree, jax.sharding.PartitionSpec())


@nnx.jit
def _encode_all(model: RQVAE, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Chunks of at most `_ENCODE_CHUNK` rows (the last one zero-padded, its extra rows dropped).

    Under a mesh a chunk is a multiple of the row shards and its rows are split over them.
    """
    n = x.shape[0]
    shards = row_shards()
    chunk = -(-min(n, _ENCODE_CHUNK) // shards) * shards
    chunks = -(-n // chunk)
    padded = split_rows(jnp.pad(x, ((0, chunks * chunk - n), (0, 0))).reshape(chunks, chunk, -1), axis=1)
    codes, residuals, sq_err = jax.lax.map(lambda rows: _encode_chunk(model, rows), padded)
    codes = codes.reshape(chunks * chunk, -1)[:n]
    residuals = residuals.reshape(chunks * chunk, *residuals.shape[2:])[:n]
    return _whole((codes, residuals, jnp.sum(sq_err.reshape(-1)[:n]) / x.size))


def encode(model: RQVAE, x: np.ndarray | jax.Array, mesh: jax.sharding.Mesh | None = None) -> Encoded:
    """Codes, per-level residuals and reconstruction MSE of every row of x (rows split over `mesh`)."""
    with _on_mesh(mesh):
        codes, residuals, mse = _encode_all(model, _replicated(jnp.asarray(x, jnp.float32), mesh))
    return Encoded(np.asarray(codes), np.asarray(residuals), float(mse))


@nnx.jit
def _latents(model: RQVAE, x: jax.Array) -> jax.Array:
    pad = -x.shape[0] % row_shards()
    return model.encoder(split_rows(jnp.pad(x, ((0, pad), (0, 0)))))[: x.shape[0]]


def kmeans_init(model: RQVAE, x: np.ndarray | jax.Array, *, seed: int, iters: int, init: str) -> None:
    """Set each level's codebook to k-means centres of that level's residuals of the encoded data.

    Under a mesh (`jax.set_mesh`) the encoder and k-means split the rows over its batch axes.
    """
    residual = _latents(model, jnp.asarray(x, jnp.float32))
    books = []
    for level in range(model.config.levels):
        key = jax.random.fold_in(jax.random.key(seed), level)
        centres, labels = kmeans(residual, key, k=model.config.codebook_size, iters=iters, init=init)
        books.append(centres)
        residual = residual - centres[labels]
    model.codebooks[...] = jnp.stack(books)


@jax.jit
def _reseed(
    codebooks: jax.Array, codes: jax.Array, residuals: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Replace codes that no row chose by residuals of random rows at that level; returns (books, #dead)."""
    levels, k, _ = codebooks.shape
    used = jax.vmap(lambda c: jnp.zeros(k, bool).at[c].set(True), in_axes=1)(codes)  # [L, K]
    rows = jax.random.randint(key, (levels, k), 0, residuals.shape[0])
    fresh = jnp.take_along_axis(residuals.transpose(1, 0, 2), rows[..., None], axis=1)  # [L, K, D]
    return jnp.where(used[..., None], codebooks, fresh), jnp.sum(~used)


def reseed_dead_codes(model: RQVAE, encoded: Encoded, key: jax.Array) -> int:
    books, dead = _reseed(model.codebooks[...], jnp.asarray(encoded.codes), jnp.asarray(encoded.residuals), key)
    model.codebooks[...] = books
    return int(dead)


def make_optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    return optax.adamw(learning_rate, weight_decay=weight_decay)


@functools.partial(jax.jit, static_argnums=(0, 1))
def epoch_batches(num_rows: int, batch_size: int, key: jax.Array) -> jax.Array:
    """A shuffled epoch as int32 [steps, batch]; the last batch is topped up from the start of the order."""
    steps = -(-num_rows // batch_size)
    order = jax.random.permutation(key, num_rows)
    order = jnp.concatenate([order, order[: steps * batch_size - num_rows]])
    return order.reshape(steps, batch_size).astype(jnp.int32)


def make_epoch_fn(graphdef: nnx.GraphDef, tx: optax.GradientTransformation) -> Callable:
    """jit(params, opt_state, x, batches) -> (params, opt_state, mean [loss, recon, quant]); buffers donated.

    Called under a mesh (`jax.set_mesh`), every batch's rows are split over its batch axes.
    """

    def loss_fn(params, batch):
        return nnx.merge(graphdef, params).losses(batch)

    def epoch(params, opt_state, x, batches):
        def step(carry, idx):
            params, opt_state = carry
            rows = split_rows(x[idx])  # idx is split, so each device gathers its own rows
            (loss, (mse, quant)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rows)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), jnp.stack([loss, mse, quant])

        (params, opt_state), metrics = jax.lax.scan(step, (params, opt_state), split_rows(batches, axis=1))
        return params, opt_state, metrics.mean(axis=0)

    return jax.jit(epoch, donate_argnums=(0, 1))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    kmeans_init: bool = True
    kmeans_iters: int = 50
    kmeans_init_method: str = "kmeans++"
    dead_code_every: int = 10
    report_every: int = 10
    seed: int = 0


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh | None) -> None:
    """Every batch is split evenly over the mesh's batch axes, so its size must divide by their product."""
    shards = row_shards(mesh) if mesh is not None else 1
    if batch_size % shards:
        raise ValueError(
            f"batch size {batch_size} must be a multiple of the {shards} batch shards "
            f"of the mesh (data x fsdp = {dict(mesh.shape)}), since every batch is split over them"
        )


def train(
    model: RQVAE,
    x: np.ndarray,
    config: TrainConfig,
    report: Callable[[int, dict[str, float]], None] | None = None,
    stats: Callable[[np.ndarray], dict[str, float]] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, float]:
    """Train `model` in place on x [N, input_dim]; `report(epoch, metrics)` every `report_every` epochs.

    `stats(codes)` adds SID statistics (usage, perplexity, collisions) to each report.
    With `mesh`, k-means init, every epoch and encoding split their rows over its
    batch axes (data, fsdp); parameters and optimizer state are replicated (see the
    module docstring), and the trained model's parameters stay replicated on it.
    Returns the last epoch's metrics.
    """
    check_batch_size(config.batch_size, mesh)
    with _on_mesh(mesh):
        x_dev = _replicated(jnp.asarray(x, jnp.float32), mesh)
        shuffle_key, reseed_key = jax.random.split(jax.random.key(config.seed))
        nnx.update(model, _replicated(nnx.state(model), mesh))
        if config.kmeans_init:
            kmeans_init(model, x_dev, seed=config.seed, iters=config.kmeans_iters, init=config.kmeans_init_method)
        tx = make_optimizer(config.learning_rate, config.weight_decay)
        graphdef, params = nnx.split(model)
        params = _replicated(params, mesh)
        opt_state = _replicated(jax.jit(tx.init)(params), mesh)  # one program, not one per zeros leaf
        run_epoch = make_epoch_fn(graphdef, tx)
        metrics: dict[str, float] = {}
        bar = progress(range(1, config.epochs + 1), desc="rqvae", unit="epoch")
        for epoch in bar:
            batches = epoch_batches(len(x), config.batch_size, jax.random.fold_in(shuffle_key, epoch))
            params, opt_state, means = run_epoch(params, opt_state, x_dev, _replicated(batches, mesh))
            reseed = config.dead_code_every and epoch % config.dead_code_every == 0 and epoch < config.epochs
            if reseed or epoch % config.report_every == 0 or epoch == config.epochs:
                nnx.update(model, params)
                encoded = encode(model, x_dev, mesh)
                loss, mse, quant = np.asarray(means).tolist()
                metrics = {"loss": loss, "recon_loss": mse, "quant_loss": quant, "recon_mse_all": encoded.recon_mse}
                if stats is not None:
                    metrics.update(stats(encoded.codes))
                if reseed:
                    metrics["dead_codes"] = reseed_dead_codes(model, encoded, jax.random.fold_in(reseed_key, epoch))
                    params = _replicated(nnx.state(model), mesh)
                bar.set_postfix(loss=f"{loss:.4f}", recon=f"{mse:.4f}")
                if report is not None:
                    report(epoch, metrics)
        nnx.update(model, params)
    return metrics


def save(model: RQVAE, directory: str | os.PathLike) -> None:
    """The quantizer's parameters (orbax) and its architecture (rqvae_config.json) in one directory."""
    d = Path(directory).absolute()
    d.mkdir(parents=True, exist_ok=True)
    (d / "rqvae_config.json").write_text(json.dumps(dataclasses.asdict(model.config), indent=2), encoding="utf-8")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(d / "params", nnx.state(model), force=True)


def load(directory: str | os.PathLike) -> RQVAE:
    d = Path(directory).absolute()
    values = json.loads((d / "rqvae_config.json").read_text(encoding="utf-8"))
    values["hidden"] = tuple(values["hidden"])
    model = RQVAE(RQVAEConfig(**values), rngs=nnx.Rngs(0))
    with ocp.StandardCheckpointer() as checkpointer:
        nnx.update(model, checkpointer.restore(d / "params", nnx.state(model)))
    return model
