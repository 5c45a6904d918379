"""Decoder-only transformer LM ("In Search of Adam's Secret Sauce", App. A), in Flax NNX.

Pre-norm blocks ``x + attn(rms(x))``, ``x + swiglu(rms(x))``, final RMSNorm, untied
embedding and head, no biases anywhere, rotary position embeddings (RoPE) on the first
``rope_fraction`` of each head's dimensions (GPT-NeoX style, base 10000), causal attention.

Initialization: every kernel and the embedding ~ N(0, init_std^2); the residual output
projections (attention out, MLP down) ~ N(0, (init_std / sqrt(2 * n_layers))^2) (GPT-2 style).

MLP width: ``hidden = 64 * ceil(mlp_ratio * d_model / 64)`` (8/3 * 768 = 2048 exactly;
8/3 * 1024 -> 2752), gated as ``down(silu(gate(x)) * up(x))``.

Attention: ``attention_impl='einsum'`` (default) is plain einsum + float32 softmax, the fastest
on CPU at small sizes (measured against ``jax.nn.dot_product_attention`` at d_model 64-256,
T 64-256); 'xla' and 'cudnn' call ``jax.nn.dot_product_attention(..., is_causal=True)`` with
that implementation; 'cudnn' (flash attention) needs an NVIDIA GPU and
``compute_dtype='bfloat16'``, and avoids materializing the T x T scores at long T.

Precision: parameters are always float32. With ``compute_dtype='bfloat16'`` the matmuls run in
bf16 (kernels and activations are cast at use), while RMSNorm statistics, the rotary angles
and the attention softmax stay float32, and the logits are returned as float32.

Sharding annotations use the mesh axis names directly ('fsdp' on the d_model side, 'tensor' on
the heads / MLP-hidden / vocab side); ``nnx.get_partition_spec`` turns them into
``PartitionSpec``s.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ATTENTION_IMPLS = ("einsum", "xla", "cudnn")


def mlp_hidden_dim(d_model: int, mlp_ratio: float) -> int:
    """SwiGLU hidden width: ``mlp_ratio * d_model`` rounded up to a multiple of 64."""
    return 64 * math.ceil(mlp_ratio * d_model / 64 - 1e-9)


def rope_dim(head_dim: int, rope_fraction: float) -> int:
    """Number of rotated dimensions per head: ``rope_fraction * head_dim`` rounded down to even."""
    return 2 * int(head_dim * rope_fraction // 2)


def _dense(d_in: int, d_out: int, axes: tuple, std: float, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    init = nnx.with_partitioning(nnx.initializers.normal(std), axes)
    return nnx.Linear(d_in, d_out, use_bias=False, kernel_init=init, dtype=dtype,
                      param_dtype=jnp.float32, rngs=rngs)


class RMSNorm(nnx.Module):
    """y = x / sqrt(mean(x^2) + eps) * scale, statistics in float32, output in ``dtype``."""

    def __init__(self, dim: int, *, dtype=jnp.float32, eps: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32), out_sharding=(None,))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(self.dtype)


def apply_rope(x: jax.Array, rot: int, base: float = 10000.0) -> jax.Array:
    """Rotary embedding on the first ``rot`` dims of ``x`` [B, T, heads, head_dim]."""
    if rot == 0:
        return x
    t = x.shape[1]
    inv_freq = 1.0 / base ** (jnp.arange(0, rot, 2, dtype=jnp.float32) / rot)
    angles = jnp.arange(t, dtype=jnp.float32)[:, None] * inv_freq[None, :]  # [T, rot/2]
    cos = jnp.cos(angles)[None, :, None, :]
    sin = jnp.sin(angles)[None, :, None, :]
    xr = x[..., :rot].astype(jnp.float32)
    x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.concatenate([rotated.astype(x.dtype), x[..., rot:]], axis=-1)


class Attention(nnx.Module):
    """Causal multi-head self-attention with separate q/k/v kernels and RoPE."""

    def __init__(self, d_model: int, n_heads: int, rope_fraction: float, std: float,
                 out_std: float, dtype, rngs: nnx.Rngs, impl: str = "einsum"):
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.impl = impl
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.rot = rope_dim(self.head_dim, rope_fraction)
        self.query = _dense(d_model, d_model, ("fsdp", "tensor"), std, dtype, rngs)
        self.key = _dense(d_model, d_model, ("fsdp", "tensor"), std, dtype, rngs)
        self.value = _dense(d_model, d_model, ("fsdp", "tensor"), std, dtype, rngs)
        self.out = _dense(d_model, d_model, ("tensor", "fsdp"), out_std, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        shape = (b, t, self.n_heads, self.head_dim)
        rows = x.reshape(b * t, d)  # 2-D dense layers (see MLP)
        q = apply_rope(self.query(rows).reshape(shape), self.rot)
        k = apply_rope(self.key(rows).reshape(shape), self.rot)
        v = self.value(rows).reshape(shape)
        if self.impl == "einsum":
            y = causal_attention(q, k, v)
        else:
            y = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=self.impl)
        return self.out(y.reshape(b * t, -1)).reshape(b, t, -1)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d) + causal mask) v on [B, T, heads, head_dim]; softmax in float32."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    t = q.shape[1]
    mask = jnp.tril(jnp.ones((t, t), dtype=bool))
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, hidden: int, std: float, out_std: float, dtype,
                 rngs: nnx.Rngs):
        self.gate = _dense(d_model, hidden, ("fsdp", "tensor"), std, dtype, rngs)
        self.up = _dense(d_model, hidden, ("fsdp", "tensor"), std, dtype, rngs)
        self.down = _dense(hidden, d_model, ("tensor", "fsdp"), out_std, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # Dense layers on 2-D [B*T, D] rows: XLA's CPU backward is much faster than on [B, T, D].
        rows = x.reshape(-1, x.shape[-1])
        return self.down(jax.nn.silu(self.gate(rows)) * self.up(rows)).reshape(x.shape)


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, d_model: int, n_heads: int, hidden: int, rope_fraction: float,
                 std: float, out_std: float, dtype, rngs: nnx.Rngs, impl: str = "einsum"):
        self.attn_norm = RMSNorm(d_model, dtype=dtype)
        self.attn = Attention(d_model, n_heads, rope_fraction, std, out_std, dtype, rngs, impl)
        self.mlp_norm = RMSNorm(d_model, dtype=dtype)
        self.mlp = MLP(d_model, hidden, std, out_std, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nnx.Module):
    """Decoder-only LM: ``model(tokens int32[B, T]) -> float32 logits [B, T, vocab_size]``."""

    def __init__(self, *, vocab_size: int = 256, d_model: int = 128, n_layers: int = 2,
                 n_heads: int = 4, max_len: int = 256, rope_fraction: float = 1.0,
                 mlp_ratio: float = 8 / 3, init_std: float = 0.02,
                 compute_dtype: str = "float32", attention_impl: str = "einsum",
                 rngs: nnx.Rngs):
        if compute_dtype not in DTYPES:
            raise ValueError(f"compute_dtype={compute_dtype!r}; valid: {sorted(DTYPES)}")
        if attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl={attention_impl!r}; valid: {list(ATTENTION_IMPLS)}")
        if not 0.0 <= rope_fraction <= 1.0:
            raise ValueError(f"rope_fraction={rope_fraction} must be in [0, 1]")
        for name, val in (("vocab_size", vocab_size), ("d_model", d_model),
                          ("n_layers", n_layers), ("n_heads", n_heads), ("max_len", max_len)):
            if int(val) < 1:
                raise ValueError(f"{name}={val} must be a positive integer")
        dtype = DTYPES[compute_dtype]
        self.max_len = max_len
        self.dtype = dtype
        out_std = init_std / math.sqrt(2 * n_layers)
        hidden = mlp_hidden_dim(d_model, mlp_ratio)
        emb_init = nnx.with_partitioning(nnx.initializers.normal(init_std), ("tensor", "fsdp"))
        self.embed = nnx.Embed(vocab_size, d_model, embedding_init=emb_init, dtype=dtype,
                               param_dtype=jnp.float32, rngs=rngs)
        self.blocks = nnx.List([
            Block(d_model, n_heads, hidden, rope_fraction, init_std, out_std, dtype, rngs,
                  attention_impl)
            for _ in range(n_layers)
        ])
        self.final_norm = RMSNorm(d_model, dtype=dtype)
        self.head = _dense(d_model, vocab_size, ("fsdp", "tensor"), init_std, dtype, rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        if tokens.shape[-1] > self.max_len:
            raise ValueError(f"sequence length {tokens.shape[-1]} > max_len={self.max_len}")
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        b, t, d = x.shape
        logits = self.head(self.final_norm(x).reshape(b * t, d)).reshape(b, t, -1)
        return logits.astype(jnp.float32)
