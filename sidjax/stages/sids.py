"""Stage `sids`: give every item a Semantic ID.

`config.sids.source` = `paper` (the papers' index.json, so later stages can be
compared with them on exactly their SIDs), `rqvae` or `rqkmeans` (learned from
item embeddings). Then the collision policy, then the outputs every later
stage reads: `sids.npy` (int32 [num_items, L]), `index.json` and `info.txt`
(the papers' formats) and `report.json` (per-level usage, perplexity,
collisions, reconstruction error, `level_sizes` = the token block sizes).

A mix of domains (`data.source = "mix"`) gets one quantizer over every domain's items, so a
code means the same kind of item in each, and a first level that names the item's domain:
`<a_0>` / `<a_1>` ... then the learned levels. The prefix keeps each domain's catalogue a
subtree of the trie (an eval of one domain ranks that domain's items only, and no SID is
shared across domains), while the shared lower levels let a model trained on one domain
read and write the other's SIDs (`sidjax.data.mix`, cross-domain transfer).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from sidjax.data.minionerec import write_info
from sidjax.model import pool
from sidjax.model.precision import resolve_dtype
from sidjax.parallel.mesh import make_mesh
from sidjax.sid import codes, embed, kmeans, rqvae
from sidjax.stages.settings import config_key
from sidjax.utils.errors import DataError
from sidjax.utils.files import read_json, read_npy
from sidjax.utils.settings import settings_from

SIDS_FILE = "sids.npy"
INDEX_FILE = "index.json"
INFO_FILE = "info.txt"
REPORT_FILE = "report.json"
EMBEDDINGS_FILE = "embeddings.npy"


def load_output(directory: str | Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """What a finished `sids` stage left: (sids int32 [num_items, L], level_sizes = codes per level)."""
    d = Path(directory)
    try:
        report = read_json(d / REPORT_FILE)
        return read_npy(d / SIDS_FILE), tuple(report["final"]["level_sizes"])
    except DataError as e:
        raise DataError(e.path, f"{e.message}; redo the stage that wrote it (add '{d.name}' to config key 'redo')",
                        line=e.line) from None


def paper_sids(ctx) -> np.ndarray:
    """The papers' SIDs: `sids.path` when set, else the index that came with the dataset."""
    c = ctx.config.sids
    n = ctx.dataset.num_items
    if c.path:
        sids = codes.read_sids(c.path, n)
        where = c.path
    else:
        if ctx.dataset.paper_sids is None:
            raise DataError(
                ctx.config.data.path or ctx.dataset.name,
                "sids.source='paper' but the dataset has no index.json; set config key 'sids.path'",
            )
        where = ctx.dataset.paper_sids_origin or ctx.config.data.path or ctx.dataset.name
        sids = codes.index_to_sids(ctx.dataset.paper_sids, n, where=where)
    if sids.shape[1] != c.levels:
        raise DataError(where, f"SIDs have {sids.shape[1]} levels but config key 'sids.levels' is {c.levels}")
    if sids.max() >= c.codebook_size:
        item, level = (int(x[0]) for x in np.nonzero(sids >= c.codebook_size))
        raise DataError(where, f"item {item}: code {int(sids[item, level])} at level {level} >= config key "
                               f"'sids.codebook_size' ({c.codebook_size}); raise it or fix the SID")
    return sids


def _embedding_key(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What the cached embeddings depend on; a different key recomputes them."""
    return {"embed": config.sids.embed.to_dict(), "data": config.data.to_dict(), "seed": config.seed,
            "model": config.model.to_dict() if config.sids.embed.method == "lm_mean_pool" else None}


def _language_model(config: ml_collections.ConfigDict):
    """(model, encode) from `config.model` for lm_mean_pool (a pretrained model: hf or gguf)."""
    m = config.model
    overrides = dict(dtype=resolve_dtype(m.dtype), param_dtype=m.param_dtype, attention_impl=m.attention_impl)
    if m.source == "hf":
        from sidjax.model import hf

        model, tokenizer = hf.load_model(m.path, **overrides), hf.load_tokenizer(m.path)
    elif m.source == "gguf":
        from sidjax.model import gguf

        model, (tokenizer, _) = gguf.load_model(m.path or None, **overrides), gguf.load_tokenizer(m.path or None)
    else:
        raise ValueError("config key 'sids.embed.method': 'lm_mean_pool' needs model.source 'hf' or 'gguf'")
    return model, lambda text: tokenizer.encode(text).ids


def item_embeddings(ctx) -> np.ndarray:
    """float32 [num_items, D] per `sids.embed`, cached in the stage dir."""
    e = ctx.config.sids.embed
    cache, key_file = ctx.dir / EMBEDDINGS_FILE, ctx.dir / "embeddings.json"
    key = json.loads(json.dumps(_embedding_key(ctx.config), default=str))
    if cache.exists() and key_file.exists() and json.loads(key_file.read_text(encoding="utf-8")) == key:
        logging.info("sids: reusing cached embeddings %s", cache)
        return np.load(cache)
    items = ctx.dataset.items
    if e.method == "tfidf_lsa":
        with config_key("sids.embed", ValueError):
            x = embed.tfidf_lsa(items, dim=e.dim, min_df=e.min_df, max_df=e.max_df, title_weight=e.title_weight,
                                seed=ctx.config.seed)
    elif e.method == "precomputed":
        x = embed.load_precomputed(e.path, len(items))
    else:
        model, encode = _language_model(ctx.config)
        x = pool.lm_mean_pool(model, encode, [embed.item_text(i) for i in items], batch_size=e.batch_size,
                               max_length=e.max_length)
    np.save(cache, x)
    key_file.write_text(json.dumps(key, indent=2), encoding="utf-8")
    return x


def _flat_stats(stats: dict[str, Any]) -> dict[str, float]:
    """SID statistics as scalars for the metrics writer (lists become one key per level)."""
    out = {}
    for name, value in stats.items():
        if isinstance(value, list):
            out.update({f"{name}_l{level}": float(v) for level, v in enumerate(value)})
        else:
            out[name] = float(value)
    return out


def learn_rqvae(ctx, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(codes [N, L], last-level residuals [N, D], last codebook [K, D], report) of a trained RQ-VAE.

    Trained data-parallel on `config.mesh` (batch rows split over data x fsdp).
    """
    c, r = ctx.config.sids, ctx.config.sids.rqvae
    model_config = rqvae.RQVAEConfig(input_dim=x.shape[1], hidden=tuple(r.hidden), code_dim=r.code_dim,
                                     levels=c.levels, codebook_size=c.codebook_size, beta=r.beta,
                                     quant_weight=r.quant_weight, dtype=resolve_dtype(r.dtype, "rqvae"))
    model = rqvae.RQVAE(model_config, rngs=nnx.Rngs(ctx.config.seed))
    train_config = settings_from(rqvae.TrainConfig, r, kmeans_iters=c.kmeans.iters, kmeans_init_method=c.kmeans.init,
                                 seed=ctx.config.seed)
    sizes = [c.codebook_size] * c.levels
    mesh = make_mesh(ctx.config.mesh)
    with config_key("sids.rqvae.batch_size", ValueError):
        rqvae.check_batch_size(r.batch_size, mesh)

    def report(epoch: int, metrics: dict[str, float]) -> None:
        ctx.writer.write(epoch, metrics, prefix="rqvae/")
        logging.info("rqvae epoch %d: %s", epoch, {k: round(v, 5) for k, v in metrics.items()})

    last = rqvae.train(model, x, train_config, report=report,
                       stats=lambda sids: _flat_stats(codes.sid_statistics(sids, sizes)), mesh=mesh)
    if r.checkpoint:
        rqvae.save(model, ctx.dir / "rqvae_checkpoint")
    encoded = rqvae.encode(model, x, mesh)
    extra = {"recon_mse": encoded.recon_mse, "final_train_loss": last.get("loss")}
    return encoded.codes, encoded.residuals[:, -1], np.asarray(model.codebooks[...][-1]), extra


def learn_rqkmeans(ctx, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    c, k = ctx.config.sids, ctx.config.sids.kmeans
    result = kmeans.rq_kmeans(x, levels=c.levels, k=c.codebook_size, seed=ctx.config.seed, iters=k.iters,
                              init=k.init, balanced=k.balanced, balanced_iters=k.balanced_iters)
    quantized = sum(result.codebooks[level][result.codes[:, level]] for level in range(c.levels))
    extra = {"recon_mse": float(np.mean((x - quantized) ** 2))}
    return result.codes, result.residuals[-1], result.codebooks[-1], extra


def run(ctx) -> dict[str, Any]:
    c = ctx.config.sids
    report: dict[str, Any] = {"source": c.source, "collision_policy": c.collision}
    if c.source == "paper":
        sids = paper_sids(ctx)
        residuals = codebook = None
    else:
        x = item_embeddings(ctx)
        report["embedding"] = {"method": c.embed.method, "shape": list(x.shape)}
        learn = learn_rqvae if c.source == "rqvae" else learn_rqkmeans
        sids, residuals, codebook, extra = learn(ctx, x)
        report.update(extra)
    level_sizes = [c.codebook_size] * c.levels
    report["quantized"] = codes.sid_statistics(sids, level_sizes)
    policy = c.collision
    if c.collision == "sinkhorn" and residuals is not None:
        sids = codes.sinkhorn_reassign(sids, residuals, codebook, epsilon=c.sinkhorn_epsilon,
                                       iters=c.sinkhorn_iters)
    elif c.collision == "sinkhorn":
        report["note"] = "source 'paper': the shipped SIDs are already the papers' Sinkhorn output; kept as is"
        policy = "the papers' Sinkhorn output, kept"
    elif c.collision == "append":
        sids = codes.append_disambiguation_level(sids)
        level_sizes.append(int(sids[:, -1].max()) + 1)
    if ctx.dataset.item_domain is not None:
        sids = codes.prefix_domains(sids, ctx.dataset.item_domain)
        level_sizes.insert(0, len(ctx.dataset.domains))
        report["domain_prefix"] = list(ctx.dataset.domains)
    report["final"] = codes.sid_statistics(sids, level_sizes)
    sids = sids.astype(np.int32)
    np.save(ctx.dir / SIDS_FILE, sids)
    index = codes.sids_to_index(sids)
    codes.write_sids(ctx.dir / INDEX_FILE, sids)
    write_info(ctx.dir / INFO_FILE, ctx.dataset.items, index)
    (ctx.dir / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
    ctx.writer.write(0, _flat_stats(report["final"]), prefix="sids/")
    final = report["final"]
    logging.info("sids (%s, collisions: %s): %d items, %d distinct SIDs, %d items still share a SID; usage %s",
                 c.source, policy, final["items"], final["unique_sids"], final["items_sharing_a_sid"],
                 final["usage"])
    return {"source": c.source, "levels": final["levels"], "level_sizes": final["level_sizes"],
            "unique_sids": final["unique_sids"], "items_sharing_a_sid": final["items_sharing_a_sid"],
            "collision_groups": final["collision_groups"], "recon_mse": report.get("recon_mse")}
