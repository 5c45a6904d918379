"""Transformer LM: shapes, init loss, causality, RoPE, init scales, sharding annotations, bf16."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from optaxlab import models
from optaxlab.models import transformer as tr

TINY = dict(name="transformer", vocab_size=256, d_model=32, n_layers=2, n_heads=2, max_len=16)


def _tiny(**overrides):
    return models.create({**TINY, **overrides}, rngs=nnx.Rngs(0))


_forward = jax.jit(lambda g, s, t: nnx.merge(g, s)(t), static_argnums=0)


def _apply(model, tokens):
    """Jitted forward pass, cached per model structure (eager NNX is slow op by op)."""
    return _forward(*nnx.split(model), tokens)


def _tokens(b=4, t=16, seed=1):  # one shape everywhere: jit caches are shared across tests
    return jax.random.randint(jax.random.key(seed), (b, t), 0, 256, dtype=jnp.int32)


def _loss(model, tokens):
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def test_logits_shape_and_dtype():
    model = _tiny()
    logits = _apply(model, _tokens())
    assert logits.shape == (4, 16, 256)
    assert logits.dtype == jnp.float32


def test_init_loss_is_log_vocab_and_grads_finite():
    model = _tiny()
    toks = _tokens(8, 17)
    graphdef, params = nnx.split(model)
    loss, grads = jax.jit(jax.value_and_grad(lambda p: _loss(nnx.merge(graphdef, p), toks)))(
        params)
    assert abs(float(loss) - math.log(256)) < 0.05
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    # every parameter receives gradient signal
    assert all(float(jnp.abs(g).max()) > 0 for g in leaves)


def test_causal_masking():
    model = _tiny()
    toks = _tokens()
    k = 9
    changed = toks.at[:, k].set((toks[:, k] + 7) % 256)
    a, b = _apply(model, toks), _apply(model, changed)
    np.testing.assert_array_equal(np.asarray(a[:, :k]), np.asarray(b[:, :k]))
    assert float(jnp.abs(a[:, k:] - b[:, k:]).max()) > 1e-4


def test_rope_dims_and_relative_positions():
    assert tr.rope_dim(64, 0.25) == 16
    assert tr.rope_dim(16, 1.0) == 16
    assert tr.rope_dim(10, 0.25) == 2
    assert tr.rope_dim(16, 0.0) == 0
    rope = jax.jit(tr.apply_rope, static_argnums=1)
    x = jax.random.normal(jax.random.key(0), (1, 12, 2, 16))
    y = rope(x, 4)
    # only the first 4 dims of each head rotate; rotation preserves their norm
    np.testing.assert_array_equal(np.asarray(y[..., 4:]), np.asarray(x[..., 4:]))
    assert float(jnp.abs(y[..., :4] - x[..., :4]).max()) > 1e-3
    np.testing.assert_allclose(np.linalg.norm(y[..., :4], axis=-1),
                               np.linalg.norm(x[..., :4], axis=-1), rtol=1e-5)
    # q.k after RoPE depends on positions only through their difference
    q = jnp.tile(jax.random.normal(jax.random.key(1), (1, 1, 1, 8)), (1, 12, 1, 1))
    k = jnp.tile(jax.random.normal(jax.random.key(2), (1, 1, 1, 8)), (1, 12, 1, 1))
    qr, kr = rope(q, 8), rope(k, 8)
    dot = lambda i, j: float(jnp.sum(qr[0, i, 0] * kr[0, j, 0]))
    assert dot(5, 2) == pytest.approx(dot(9, 6), rel=1e-4)
    assert dot(5, 2) != pytest.approx(dot(5, 4), rel=1e-2)


def test_rope_fraction_changes_model():
    toks = _tokens()
    full, quarter = (_apply(_tiny(rope_fraction=f), toks) for f in (1.0, 0.25))
    assert _tiny(rope_fraction=0.25).blocks[0].attn.rot == 4  # head_dim 16
    assert float(jnp.abs(full - quarter).max()) > 1e-5


def test_structure_no_biases_and_init_scales():
    model, std, n_layers = _tiny(), 0.02, 2
    params = nnx.state(model, nnx.Param)
    names = {path[-1] for path, _ in nnx.to_flat_state(params)}
    assert names == {"kernel", "embedding", "scale"}, names
    assert not np.allclose(np.asarray(model.embed.embedding[...]),
                           np.asarray(model.head.kernel[...]).T)  # untied
    out_std = std / math.sqrt(2 * n_layers)
    block = model.blocks[1]
    for kernel, want in [(block.attn.query.kernel, std), (block.mlp.gate.kernel, std),
                         (model.embed.embedding, std), (model.head.kernel, std),
                         (block.attn.out.kernel, out_std), (block.mlp.down.kernel, out_std)]:
        assert float(jnp.std(kernel[...])) == pytest.approx(want, rel=0.1)
    np.testing.assert_array_equal(np.asarray(block.attn_norm.scale[...]), np.ones(32))
    assert block.mlp.up.kernel[...].shape == (32, tr.mlp_hidden_dim(32, 8 / 3))


def test_mlp_hidden_rule():
    assert tr.mlp_hidden_dim(768, 8 / 3) == 2048
    assert tr.mlp_hidden_dim(1024, 8 / 3) == 2752
    assert tr.mlp_hidden_dim(64, 8 / 3) == 192
    assert tr.mlp_hidden_dim(96, 4) == 384


def test_partition_specs_follow_contract():
    model = _tiny()
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    blk = specs["blocks"][0]
    assert specs["embed"]["embedding"].value == P("tensor", "fsdp")
    assert specs["head"]["kernel"].value == P("fsdp", "tensor")
    for name in ("query", "key", "value"):
        assert blk["attn"][name]["kernel"].value == P("fsdp", "tensor")
    assert blk["attn"]["out"]["kernel"].value == P("tensor", "fsdp")
    assert blk["mlp"]["gate"]["kernel"].value == P("fsdp", "tensor")
    assert blk["mlp"]["up"]["kernel"].value == P("fsdp", "tensor")
    assert blk["mlp"]["down"]["kernel"].value == P("tensor", "fsdp")
    assert blk["attn_norm"]["scale"].value == P(None)
    assert specs["final_norm"]["scale"].value == P(None)


def test_create_under_mesh_shards_eagerly_and_matches_single_device():
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    toks = _tokens()
    ref = _apply(_tiny(), toks)
    with jax.set_mesh(mesh):
        model = _tiny()
        kernel = model.blocks[0].attn.query.kernel[...]
        assert kernel.sharding.spec == P("fsdp", "tensor")
        sharded = jax.device_put(toks, NamedSharding(mesh, P(("data", "fsdp"))))
        logits = _apply(model, sharded)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params():
    toks = _tokens()
    f32, bf16 = _tiny(), _tiny(compute_dtype="bfloat16")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    a, b = _apply(f32, toks), _apply(bf16, toks)
    assert b.dtype == jnp.float32
    assert float(jnp.abs(a - b).max()) < 0.05
    assert float(jnp.abs(a - b).max()) > 0  # really computed in bf16


def test_dot_product_attention_impl_matches_einsum():
    toks = _tokens()
    a = _apply(_tiny(), toks)
    b = _apply(_tiny(attention_impl="xla"), toks)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="compute_dtype"):
        _tiny(compute_dtype="float16")
    with pytest.raises(ValueError, match="attention_impl='flash'"):
        _tiny(attention_impl="flash")
    with pytest.raises(ValueError, match="divisible"):
        _tiny(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="max_len"):
        _apply(_tiny(), _tokens(4, 17))
