"""The decoder-only causal LM (Qwen2 / Qwen2.5 / Qwen3 / Llama) in Flax NNX, with a KV cache.

Every parameter carries logical axis names (mapped to mesh axes by sidjax.parallel.rules).
Batches are left-padded: `attention_mask` marks real tokens and `positions` count real
tokens from 0, so a padded row computes exactly what it would alone.

Cache: one stacked K/V array per kind, [layers, batch, slots, kv_heads, head_dim], written
in lock-step for all rows at `index` (prefill writes T slots, each decode step one); `mask`
remembers which slots hold real tokens. A `prefix` cache (batch B) is read-only and shared
by the B*R rows of the call (row i reads prefix row i // R): beam search prefills each
prompt once and its beams only cache the tokens they generate.

Dropout (`config.dropout`, on the embeddings and on each residual branch) runs only when a
forward pass is given a `dropout_key`: the SFT train step passes one, everything else
(eval, decoding, RL log-probs, reference models) does not and stays deterministic.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from sidjax.model.config import ModelConfig, rope_inv_freq
from sidjax.model.dropout import dropout
from sidjax.model.linear import project, project_transposed
from sidjax.model import per_feature
from sidjax.parallel.rules import constrain

_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: a fully masked (padding) row stays NaN-free


@struct.dataclass
class KVCache:
    """Keys/values of past tokens; a pytree so it can be jitted, donated and sharded."""

    k: jax.Array  # [layers, batch, slots, kv_heads, head_dim]
    v: jax.Array
    mask: jax.Array  # bool [batch, slots]: slot holds a real token
    index: jax.Array  # int32 []: next slot to write

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def take_rows(self, rows: jax.Array) -> "KVCache":
        """The cache of rows `rows` (int32 [N]: new row -> old row), e.g. beams reordered after a step."""
        return KVCache(k=jnp.take(self.k, rows, axis=1), v=jnp.take(self.v, rows, axis=1),
                       mask=jnp.take(self.mask, rows, axis=0), index=self.index)

    def repeat_rows(self, times: int) -> "KVCache":
        """Each row `times` times in a row (row i -> rows i * times ... i * times + times - 1)."""
        return KVCache(k=jnp.repeat(self.k, times, axis=1), v=jnp.repeat(self.v, times, axis=1),
                       mask=jnp.repeat(self.mask, times, axis=0), index=self.index)

    def joined(self, second: "KVCache", second_mask: jax.Array) -> "KVCache":
        """One read-only prefix of this cache's slots then `second`'s (same rows); `second_mask` marks its real slots."""
        return KVCache(k=jnp.concatenate([self.k, second.k], axis=2), v=jnp.concatenate([self.v, second.v], axis=2),
                       mask=jnp.concatenate([self.mask, second_mask], axis=1),
                       index=jnp.asarray(self.max_len + second.max_len, jnp.int32))


def _param(value: jax.Array, axes: Sequence[str | None]) -> nnx.Param:
    # Logical names only; placement happens in sidjax.parallel.mesh, so building needs no mesh.
    return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


def _normal(rngs: nnx.Rngs, shape: Sequence[int], config: ModelConfig) -> jax.Array:
    return (config.initializer_range * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(
        config.weight_dtype)


class RMSNorm(nnx.Module):
    """x / rms(x) * scale, normalised in float32 like HF."""

    def __init__(self, size: int, config: ModelConfig):
        self.eps = config.rms_norm_eps
        self.scale = _param(jnp.ones((size,), config.weight_dtype), ("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return per_feature.scale(y.astype(x.dtype), self.scale[...])


def rope_tables(positions: jax.Array, config: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, T, head_dim] in the HF rotate-half layout (frequencies repeated twice)."""
    inv_freq, scale = rope_inv_freq(config)
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles) * scale, jnp.sin(angles) * scale


def _rotate_half_matrix(head_dim: int) -> np.ndarray:
    """P with x @ P = concat(-x[..., D/2:], x[..., :D/2]): a signed permutation."""
    half = head_dim // 2
    p = np.zeros((head_dim, head_dim), np.float32)
    p[half:, :half] = -np.eye(half)
    p[:half, half:] = np.eye(half)
    return p


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, heads, D]; rotate-half convention (first half paired with second half).

    In bfloat16 the half rotation is a product with a signed permutation matrix rather than slices and
    a concatenation: exact (one +-1 term per output, full precision), and its gradient is a matmul,
    where the sliced form's is a chain of transposes, pads and converts (the bf16 SFT step of
    `industrial_scratch` about 6 % faster on CPU, the weights after training bit-identical to the
    sliced form's). In float32 the slices stay: there the product is no faster, and XLA fuses the
    float32 sums around it differently, so trained weights would differ in their last bits.
    """
    if x.dtype == jnp.bfloat16:
        rotation = jnp.asarray(_rotate_half_matrix(x.shape[-1]), x.dtype)
        rotated = jnp.einsum("bthd,de->bthe", x, rotation, precision=jax.lax.Precision.HIGHEST)
    else:
        half = x.shape[-1] // 2
        rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


class Attention(nnx.Module):
    """Grouped-query attention with optional q/k/v bias (Qwen2) and q/k RMSNorm (Qwen3)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        e, h, k, d = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        self.config = config
        self.q_proj = _param(_normal(rngs, (e, h, d), config), ("embed", "heads", "head_dim"))
        self.k_proj = _param(_normal(rngs, (e, k, d), config), ("embed", "kv_heads", "head_dim"))
        self.v_proj = _param(_normal(rngs, (e, k, d), config), ("embed", "kv_heads", "head_dim"))
        self.o_proj = _param(_normal(rngs, (h, d, e), config), ("heads", "head_dim", "embed"))
        if config.attention_bias:
            self.q_bias = _param(jnp.zeros((h, d), config.weight_dtype), ("heads", "head_dim"))
            self.k_bias = _param(jnp.zeros((k, d), config.weight_dtype), ("kv_heads", "head_dim"))
            self.v_bias = _param(jnp.zeros((k, d), config.weight_dtype), ("kv_heads", "head_dim"))
        if config.qk_norm:
            self.q_norm = RMSNorm(d, config)
            self.k_norm = RMSNorm(d, config)

    def project(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """q [B,T,H,D], k, v [B,T,K,D] with RoPE applied to q and k."""
        q = project(x, self.q_proj[...])
        k = project(x, self.k_proj[...])
        v = project(x, self.v_proj[...])
        if self.config.attention_bias:
            q = per_feature.add_bias(q, self.q_bias[...])
            k = per_feature.add_bias(k, self.k_bias[...])
            v = per_feature.add_bias(v, self.v_bias[...])
        if self.config.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def output(self, attended: jax.Array) -> jax.Array:
        return project(attended, self.o_proj[...], contract=2)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, impl: str,
           prefix: tuple[jax.Array, jax.Array, jax.Array] | None = None) -> jax.Array:
    """Softmax attention. q [B,T,H,D]; k, v [B,S,K,D]; mask bool [B,T,S] (True = may attend).

    impl "xla" is jax.nn.dot_product_attention; with a prefix the grouped einsum path always runs, since
    it reads each prefix row for its R query rows without materialising R copies.
    prefix: (k, v [B0,P,K,D], mask bool [B0,P]) with B = B0 * R, attended jointly with k/v (one softmax).
    """
    b, t, h, d = q.shape
    kv = k.shape[2]
    if prefix is None and impl == "xla":
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="xla")
    scale = d ** -0.5
    qg = q.reshape(b, t, kv, h // kv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(mask[:, None, None], scores, _MASKED)
    if prefix is None:
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, h, d)
    pk, pv, pmask = prefix
    b0, p = pk.shape[0], pk.shape[1]
    r = b // b0
    qp = qg.reshape(b0, r, t, kv, h // kv, d)
    pscores = jnp.einsum("brtkgd,bpkd->brkgtp", qp, pk, preferred_element_type=jnp.float32) * scale
    pscores = jnp.where(pmask[:, None, None, None, None, :], pscores, _MASKED)
    pscores = pscores.reshape(b, kv, h // kv, t, p)
    probs = jax.nn.softmax(jnp.concatenate([pscores, scores], axis=-1), axis=-1).astype(v.dtype)
    pprobs = probs[..., :p].reshape(b0, r, kv, h // kv, t, p)
    out = jnp.einsum("brkgtp,bpkd->brtkgd", pprobs, pv).reshape(b, t, kv, h // kv, d)
    out = out + jnp.einsum("bkgts,bskd->btkgd", probs[..., p:], v)
    return out.reshape(b, t, h, d)


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate x) * up x)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        e, f = config.hidden_size, config.intermediate_size
        self.gate_proj = _param(_normal(rngs, (e, f), config), ("embed", "mlp"))
        self.up_proj = _param(_normal(rngs, (e, f), config), ("embed", "mlp"))
        self.down_proj = _param(_normal(rngs, (f, e), config), ("mlp", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        gate = project(x, self.gate_proj[...])
        up = project(x, self.up_proj[...])
        hidden = constrain(jax.nn.silu(gate) * up, ("activation_batch", "activation_length", "activation_mlp"))
        return project(hidden, self.down_proj[...])


class Block(nnx.Module):
    """Pre-norm decoder layer: x + attn(norm x), then x + mlp(norm x)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(config.hidden_size, config)
        self.attn = Attention(config, rngs)
        self.post_attention_norm = RMSNorm(config.hidden_size, config)
        self.mlp = MLP(config, rngs)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array, cache: KVCache | None,
                 prefix: KVCache | None, index: int, dropout_key: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One layer: its output and this call's keys/values [B, T, K, D] (the caller writes them to a cache).

        With a `cache` the tokens attend to layer `index`'s slots too, theirs at [cache.index, + T).
        With a `dropout_key` both residual branches (attention output, MLP output) get dropout.
        """
        rate = self.attn.config.dropout
        attn_key = mlp_key = None
        if dropout_key is not None and rate > 0.0:
            attn_key, mlp_key = jax.random.split(dropout_key)
        q, new_k, new_v = self.attn.project(self.input_norm(x), cos, sin)
        k, v = new_k, new_v
        if cache is not None:
            # A copy of this layer's slots, not a write into the stacked cache: inside a decode loop XLA
            # copies the whole stacked buffer on every such write (all layers, each layer, each step).
            at = (0, cache.index, 0, 0)
            k = jax.lax.dynamic_update_slice(cache.k[index], new_k.astype(cache.k.dtype), at).astype(q.dtype)
            v = jax.lax.dynamic_update_slice(cache.v[index], new_v.astype(cache.v.dtype), at).astype(q.dtype)
        shared = None if prefix is None else (prefix.k[index].astype(q.dtype), prefix.v[index].astype(q.dtype),
                                              prefix.mask)
        x = x + dropout(self.attn.output(attend(q, k, v, mask, self.attn.config.attention_impl, shared)), rate,
                        attn_key)
        x = x + dropout(self.mlp(self.post_attention_norm(x)), rate, mlp_key)
        return constrain(x, ("activation_batch", "activation_length", "activation_embed")), new_k, new_v


# config.remat -> what a layer keeps for the backward pass (None: no rematerialisation)
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "full": jax.checkpoint_policies.nothing_saveable,
}


class CausalLM(nnx.Module):
    """Token embedding, decoder layers, final norm and (tied or untied) output layer."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = _param(_normal(rngs, (config.vocab_size, config.hidden_size), config), ("vocab", "embed"))
        self.layers = nnx.List([Block(config, rngs) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(config.hidden_size, config)
        if not config.tie_word_embeddings:
            self.lm_head = _param(_normal(rngs, (config.hidden_size, config.vocab_size), config),
                                  ("embed", "vocab"))

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty cache of `max_len` slots per row.

        Size it for every token that will be written: XLA clamps a write past the end (it cannot raise in jit).
        """
        c = self.config
        shape = (c.num_layers, batch, max_len, c.num_kv_heads, c.head_dim)
        return KVCache(k=jnp.zeros(shape, c.compute_dtype), v=jnp.zeros(shape, c.compute_dtype),
                       mask=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32))

    def hidden_states(self, tokens: jax.Array, positions: jax.Array, *, attention_mask: jax.Array | None = None,
                      cache: KVCache | None = None, prefix: KVCache | None = None,
                      dropout_key: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        """Final-norm hidden states [B, T, hidden] (compute dtype) and the updated cache.

        `dropout_key` (training only) turns on `config.dropout`; without it the pass is deterministic.
        """
        c = self.config
        b, t = tokens.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), bool)
        if prefix is not None and b % prefix.batch:
            raise ValueError(f"batch {b} is not a multiple of the prefix cache batch {prefix.batch}")
        table = constrain(self.embed[...], ("vocab", None))  # whole rows, like every fsdp weight at use
        x = jnp.take(table, tokens, axis=0).astype(c.compute_dtype)
        layer_keys = [None] * c.num_layers
        if dropout_key is not None and c.dropout > 0.0:
            embed_key, *layer_keys = jax.random.split(dropout_key, c.num_layers + 1)
            x = dropout(x, c.dropout, embed_key)
        x = constrain(x, ("activation_batch", "activation_length", "activation_embed"))
        cos, sin = rope_tables(positions, c)
        offset = jnp.zeros((), jnp.int32) if cache is None else cache.index
        if cache is None:
            key_valid = attention_mask
        else:
            key_valid = jax.lax.dynamic_update_slice(cache.mask, attention_mask, (0, offset))
        slots = key_valid.shape[1]
        causal = jnp.arange(slots)[None, :] <= (offset + jnp.arange(t))[:, None]
        mask = key_valid[:, None, :] & causal[None]
        run = Block.__call__
        if REMAT_POLICIES[c.remat] is not None and cache is None:  # training: trade recompute for memory
            run = nnx.remat(Block.__call__, policy=REMAT_POLICIES[c.remat], static_argnums=(7,))
        new_ks, new_vs = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = run(layer, x, cos, sin, mask, cache, prefix, i, layer_keys[i])
            new_ks.append(k)
            new_vs.append(v)
        new_cache = None
        if cache is not None:  # every layer's new slots in one write
            at = (0, 0, offset, 0, 0)
            new_cache = KVCache(k=jax.lax.dynamic_update_slice(cache.k, jnp.stack(new_ks).astype(cache.k.dtype), at),
                                v=jax.lax.dynamic_update_slice(cache.v, jnp.stack(new_vs).astype(cache.v.dtype), at),
                                mask=key_valid, index=offset + t)
        return self.final_norm(x), new_cache

    def vocab_block_logits(self, hidden: jax.Array, start: jax.Array | int, size: int) -> jax.Array:
        """float32 logits [..., size] of vocabulary rows [start, start + size) only (a SID level's codes)."""
        if self.config.tie_word_embeddings:
            return project_transposed(hidden, jax.lax.dynamic_slice_in_dim(self.embed[...], start, size, axis=0),
                                      jnp.float32)
        return project(hidden, jax.lax.dynamic_slice_in_dim(self.lm_head[...], start, size, axis=1),
                       out_dtype=jnp.float32)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """float32 logits [..., vocab] of hidden states from `hidden_states`."""
        if self.config.tie_word_embeddings:
            return project_transposed(hidden, self.embed[...], jnp.float32)
        return project(hidden, self.lm_head[...], out_dtype=jnp.float32)

    def __call__(self, tokens: jax.Array, positions: jax.Array, *, attention_mask: jax.Array | None = None,
                 cache: KVCache | None = None, prefix: KVCache | None = None, dropout_key: jax.Array | None = None
                 ) -> tuple[jax.Array, KVCache | None]:
        hidden, cache = self.hidden_states(tokens, positions, attention_mask=attention_mask, cache=cache,
                                           prefix=prefix, dropout_key=dropout_key)
        return self.logits(hidden), cache


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """Positions of a left-padded batch: real tokens count from 0 (padding gets 0)."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)
