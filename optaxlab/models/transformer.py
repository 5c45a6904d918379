"""Decoder-only transformer LM ("In Search of Adam's Secret Sauce", App. A), in Flax NNX.

Pre-norm blocks ``x + attn(rms(x))``, ``x + swiglu(rms(x))``, final RMSNorm, untied
embedding and head, no biases anywhere, rotary position embeddings (RoPE) on the first
``rope_fraction`` of each head's dimensions (GPT-NeoX style, base 10000), causal attention.

Initialization: every kernel and the embedding ~ N(0, init_std^2); the residual output
projections (attention out, MLP down) ~ N(0, (init_std / sqrt(2 * n_layers))^2) (GPT-2 style).

MLP width: ``hidden = 64 * ceil(mlp_ratio * d_model / 64)`` (8/3 * 768 = 2048 exactly;
8/3 * 1024 -> 2752), gated as ``down(silu(gate(x)) * up(x))``.

Attention (``attention_impl``): 'einsum' is plain einsum + float32 softmax, the fastest on CPU
at small sizes (measured against ``jax.nn.dot_product_attention`` at d_model 64-256, T 64-256);
'xla' and 'cudnn' call ``jax.nn.dot_product_attention(..., is_causal=True)`` with that
implementation ('cudnn', flash attention, needs an NVIDIA GPU and ``compute_dtype='bfloat16'``);
'splash' is the Pallas TPU splash-attention kernel (flash attention for TPU), run per example
inside ``jax.shard_map`` over the batch (and, with mesh.tensor > 1, head) axes, and in Pallas'
interpret mode on any other platform (slow; for tests). Flash kernels never materialize the
T x T scores. 'auto' (default) decides at trace time from the platform of the mesh the step is
traced under (``jax.sharding.get_abstract_mesh()``, which ``optaxlab.train.step.compile_steps``
sets; ``jax.default_backend()`` without one): GPU -> 'cudnn' when the compute dtype is bf16 and
head_dim is a multiple of 8 up to 128, else 'xla'; TPU -> 'splash' when T is a multiple of 128,
else 'xla'; anything else (CPU) -> 'einsum'.

Activation sharding: under a mesh with the trainer's axes ('data', 'fsdp', 'tensor';
``optaxlab.train.mesh``) the activations are constrained (``jax.lax.with_sharding_constraint``)
to the batch over ('data', 'fsdp') at the embedding output and every block's input/output,
q/k/v, the MLP hidden layer and the logits, with heads / MLP hidden / vocabulary over
'tensor'. Without such a mesh (plain ``model(x)``, inside shard_map) they are no-ops. Without
them XLA may gather the whole global batch's activations inside the backward matmuls.

Rematerialization (``remat``): 'none' keeps every activation for the backward pass; 'dots'
wraps each block in ``jax.checkpoint`` with ``dots_with_no_batch_dims_saveable`` (the dense
layers' outputs are kept, attention and elementwise ops recomputed); 'block' keeps only each
block's input and recomputes the block in the backward pass (about 1/3 more FLOPs).

Chunked cross entropy (``logits_chunk`` = c > 0): ``token_losses`` computes the head and the
softmax cross entropy over sequence chunks of c positions (``jax.lax.map`` over a
``jax.checkpoint``-ed chunk), so the float32 [B, T, vocab] logits never exist at once (forward
or backward); c must divide the sequence length. Same losses and gradients as c = 0.

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
import optax
from flax import nnx

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ATTENTION_IMPLS = ("auto", "einsum", "xla", "cudnn", "splash")
REMAT_POLICIES = {"none": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                  "block": jax.checkpoint_policies.nothing_saveable}
SPLASH_BLOCKS = (512, 256, 128)  # splash block sizes tried, largest dividing T first


def constrain(x: jax.Array, *spec) -> jax.Array:
    """``x`` constrained to ``spec`` ('batch' = the data axes) under the trainer's mesh, else x.

    See ``optaxlab.train.mesh.constrain``; imported here at call time because
    ``optaxlab.train`` imports the models.
    """
    from optaxlab.train import mesh as mesh_lib

    return mesh_lib.constrain(x, spec)


def platform() -> str:
    """The platform the current trace targets: the context mesh's devices, else the default."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()


def resolve_attention(impl: str, *, dtype, seq_len: int, head_dim: int) -> str:
    """The implementation 'auto' stands for on this trace's platform (see the module doc)."""
    if impl != "auto":
        return impl
    plat = platform()
    if plat in ("gpu", "cuda"):
        cudnn_ok = dtype == jnp.bfloat16 and head_dim % 8 == 0 and head_dim <= 128
        return "cudnn" if cudnn_ok else "xla"
    if plat == "tpu":
        return "splash" if seq_len % SPLASH_BLOCKS[-1] == 0 else "xla"
    return "einsum"


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
        heads = ("batch", None, "tensor", None)
        q = constrain(apply_rope(self.query(rows).reshape(shape), self.rot), *heads)
        k = constrain(apply_rope(self.key(rows).reshape(shape), self.rot), *heads)
        v = constrain(self.value(rows).reshape(shape), *heads)
        impl = resolve_attention(self.impl, dtype=q.dtype, seq_len=t, head_dim=self.head_dim)
        if impl == "einsum":
            y = causal_attention(q, k, v)
        elif impl == "splash":
            y = splash_attention(q, k, v)
        else:
            y = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
        y = constrain(y, *heads)
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


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Causal splash attention (Pallas TPU kernel) on [B, T, heads, head_dim].

    The kernel works on one example's [heads, T, head_dim]; it is vmapped over the local batch
    inside ``jax.shard_map`` over the batch axes (and 'tensor' on the heads) when the trainer's
    mesh is set, and runs in Pallas' interpret mode off TPU. T must be a multiple of 128.
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    from optaxlab.train import mesh as mesh_lib

    t, d = q.shape[1], q.shape[-1]
    block = next((s for s in SPLASH_BLOCKS if t % s == 0), None)
    if block is None:
        raise ValueError(f"attention_impl='splash' needs a sequence length that is a multiple "
                         f"of {SPLASH_BLOCKS[-1]}; got {t}")
    interpret = platform() != "tpu"

    def local(q, k, v):  # [b, T, h, d] on one shard
        mask = splash.MultiHeadMask([splash.CausalMask((t, t))] * q.shape[2])
        sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                                  block_q_dkv=block, block_kv_dkv=block,
                                  block_kv_dkv_compute=block, block_q_dq=block,
                                  block_kv_dq=block)
        kernel = splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                        interpret=interpret)
        scaled = (q.astype(jnp.float32) / math.sqrt(d)).astype(q.dtype)  # splash does not scale
        heads_first = lambda x: x.transpose(0, 2, 1, 3)
        out = jax.vmap(kernel)(heads_first(scaled), heads_first(k), heads_first(v))
        return heads_first(out).astype(q.dtype)

    spec = mesh_lib.activation_spec(("batch", None, "tensor", None), q.shape)
    if spec is None:
        return local(q, k, v)
    return jax.shard_map(local, mesh=jax.sharding.get_abstract_mesh(), in_specs=(spec,) * 3,
                         out_specs=spec, check_vma=False)(q, k, v)


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
        hidden = constrain(jax.nn.silu(self.gate(rows)) * self.up(rows), "batch", "tensor")
        return self.down(hidden).reshape(x.shape)


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, d_model: int, n_heads: int, hidden: int, rope_fraction: float,
                 std: float, out_std: float, dtype, rngs: nnx.Rngs, impl: str = "einsum"):
        self.attn_norm = RMSNorm(d_model, dtype=dtype)
        self.attn = Attention(d_model, n_heads, rope_fraction, std, out_std, dtype, rngs, impl)
        self.mlp_norm = RMSNorm(d_model, dtype=dtype)
        self.mlp = MLP(d_model, hidden, std, out_std, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = constrain(x, "batch", None, None)
        x = x + self.attn(self.attn_norm(x))
        return constrain(x + self.mlp(self.mlp_norm(x)), "batch", None, None)


def _run_block(block: Block, x: jax.Array) -> jax.Array:
    return block(x)


class Transformer(nnx.Module):
    """Decoder-only LM: ``model(tokens int32[B, T]) -> float32 logits [B, T, vocab_size]``;
    ``model.token_losses(tokens, targets) -> float32 cross entropy [B, T]`` (chunked with
    ``logits_chunk``)."""

    def __init__(self, *, vocab_size: int = 256, d_model: int = 128, n_layers: int = 2,
                 n_heads: int = 4, max_len: int = 256, rope_fraction: float = 1.0,
                 mlp_ratio: float = 8 / 3, init_std: float = 0.02,
                 compute_dtype: str = "float32", attention_impl: str = "auto",
                 remat: str = "none", logits_chunk: int = 0, rngs: nnx.Rngs):
        if compute_dtype not in DTYPES:
            raise ValueError(f"compute_dtype={compute_dtype!r}; valid: {sorted(DTYPES)}")
        if attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl={attention_impl!r}; valid: {list(ATTENTION_IMPLS)}")
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat={remat!r}; valid: {list(REMAT_POLICIES)}")
        if isinstance(logits_chunk, bool) or not isinstance(logits_chunk, int) or logits_chunk < 0:
            raise ValueError(f"logits_chunk={logits_chunk!r} must be an int >= 0 (0: off)")
        if not 0.0 <= rope_fraction <= 1.0:
            raise ValueError(f"rope_fraction={rope_fraction} must be in [0, 1]")
        for name, val in (("vocab_size", vocab_size), ("d_model", d_model),
                          ("n_layers", n_layers), ("n_heads", n_heads), ("max_len", max_len)):
            if int(val) < 1:
                raise ValueError(f"{name}={val} must be a positive integer")
        dtype = DTYPES[compute_dtype]
        self.max_len = max_len
        self.dtype = dtype
        self.remat = remat
        self.logits_chunk = logits_chunk
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

    def features(self, tokens: jax.Array) -> jax.Array:
        """The final-normed hidden states [B, T, d_model] (compute dtype) the head reads."""
        if tokens.shape[-1] > self.max_len:
            raise ValueError(f"sequence length {tokens.shape[-1]} > max_len={self.max_len}")
        # The lookup reads a whole (all-gathered, compute-dtype) table, like the other weights:
        # with the table's d_model sharded over 'fsdp', XLA would otherwise gather the global
        # batch's [B, T, d/fsdp] embeddings to reshard them over the batch.
        table = constrain(self.embed.embedding[...].astype(self.dtype), None, None)
        x = constrain(jnp.take(table, tokens, axis=0), "batch", None, None)
        policy = REMAT_POLICIES[self.remat]
        run = _run_block if policy is None else nnx.remat(_run_block, policy=policy)
        for block in self.blocks:
            x = run(block, x)
        return self.final_norm(x)

    def _logits(self, h: jax.Array, kernel: jax.Array) -> jax.Array:
        """float32 logits [B, t, vocab] of hidden states [B, t, d] (the head on 2-D rows)."""
        b, t, d = h.shape
        rows = jnp.dot(h.reshape(b * t, d).astype(self.dtype), kernel.astype(self.dtype))
        rows = constrain(rows, "batch", "tensor")
        return constrain(rows.reshape(b, t, -1).astype(jnp.float32), "batch", None, "tensor")

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self._logits(self.features(tokens), self.head.kernel[...])

    def token_losses(self, tokens: jax.Array, targets: jax.Array) -> jax.Array:
        """Softmax cross entropy [B, T] (float32) of next-token ``targets``; with
        ``logits_chunk`` = c > 0 over sequence chunks of c, never holding all the logits."""
        ce = optax.softmax_cross_entropy_with_integer_labels
        h, kernel = self.features(tokens), self.head.kernel[...]
        c = self.logits_chunk
        if c == 0:
            return ce(self._logits(h, kernel), targets)
        b, t, d = h.shape
        if t % c:
            raise ValueError(f"logits_chunk={c} must divide the sequence length {t}")
        hs = constrain(h.reshape(b, t // c, c, d).swapaxes(0, 1), None, "batch", None, None)
        ts = targets.reshape(b, t // c, c).swapaxes(0, 1)

        @jax.checkpoint  # the backward pass recomputes a chunk's logits instead of keeping them
        def chunk(kernel, hc, tc):
            return ce(self._logits(hc, kernel), tc)

        losses = jax.lax.map(lambda xs: chunk(kernel, *xs), (hs, ts))  # [T/c, B, c]
        return losses.swapaxes(0, 1).reshape(b, t)
