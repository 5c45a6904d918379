"""Transformer options for GPU/TPU: activation sharding constraints, attention_impl
('auto', 'splash'), rematerialization, chunked cross entropy. CPU numerics against the plain
model; the sharded step on 8 simulated CPU devices."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax._src.mesh import AbstractDevice
from jax.sharding import AbstractMesh, AxisType

from optaxlab import models
from optaxlab.models import transformer as tr
from optaxlab.train import config as config_lib
from optaxlab.train import mesh as mesh_lib
from optaxlab.train import state as state_lib
from optaxlab.train import step as step_lib

TINY = dict(name="transformer", vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_len=128)


def _model(**overrides):
    return models.create({**TINY, **overrides}, rngs=nnx.Rngs(0))


def _batch(b=4, t=16, seed=1):
    toks = jax.random.randint(jax.random.key(seed), (b, t + 1), 0, 64, dtype=jnp.int32)
    return {"inputs": toks[:, :-1], "targets": toks[:, 1:]}


@jax.jit
def _loss_grads_logits(graphdef, state, batch):
    def loss(state):
        model = nnx.merge(graphdef, state)
        return step_lib.lm_loss(model, batch, train=True)[0]

    value, grads = jax.value_and_grad(loss)(state)
    return value, grads, nnx.merge(graphdef, state)(batch["inputs"])


def _run(model, batch):
    graphdef, state = nnx.split(model)
    return _loss_grads_logits(graphdef, state, batch)


def _close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------- attention_impl


def test_splash_attention_in_interpret_mode_equals_einsum():
    """Pallas' splash kernel runs on CPU in interpret mode: loss, gradients, logits."""
    batch = _batch(b=2, t=128)
    ref = _run(_model(attention_impl="einsum"), batch)
    got = _run(_model(attention_impl="splash"), batch)
    _close(got, ref, rtol=1e-4, atol=2e-6)
    grads = jax.tree.leaves(got[1])
    assert all(float(jnp.abs(g).max()) > 0 for g in grads)  # really differentiated


def test_splash_attention_sharded_over_batch_and_heads_equals_einsum():
    """Under a (2, 2, 2) mesh splash runs in shard_map (batch over data x fsdp, heads over
    tensor) and still equals einsum."""
    mesh = mesh_lib.make_mesh((2, 2, 2))
    q, k, v = (jax.random.normal(jax.random.key(i), (4, 128, 4, 8)) for i in range(3))
    sharded = jax.jit(step_lib.on_mesh(tr.splash_attention, mesh))
    put = lambda x: jax.device_put(x, jax.NamedSharding(mesh, jax.P(("data", "fsdp"))))
    q, k, v = put(q), put(k), put(v)
    out = sharded(q, k, v)
    np.testing.assert_allclose(np.asarray(out), np.asarray(tr.causal_attention(q, k, v)),
                               rtol=1e-4, atol=1e-5)
    assert "manual_computation" in sharded.lower(q, k, v).as_text()  # inside shard_map
    assert "manual_computation" not in jax.jit(tr.splash_attention).lower(q, k, v).as_text()


def test_splash_lowers_for_tpu_with_the_mosaic_kernel():
    """Under a TPU mesh (abstract: no TPU needed) splash lowers to the Pallas TPU kernel
    (forward, dq and dkv custom calls) inside shard_map, not interpret mode."""
    mesh = AbstractMesh((2, 2, 2), mesh_lib.AXES, axis_types=(AxisType.Auto,) * 3,
                        abstract_device=AbstractDevice("TPU v5 lite", None, "tpu"))

    def loss(q, k, v):
        with jax.sharding.use_abstract_mesh(mesh):
            return tr.splash_attention(q, k, v).astype(jnp.float32).sum()

    q = jax.ShapeDtypeStruct((4, 256, 4, 64), jnp.bfloat16)
    text = (jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, q, q)
            .lower(lowering_platforms=("tpu",)).as_text())
    assert text.count("tpu_custom_call") == 3
    assert "manual_computation" in text


def test_splash_needs_a_multiple_of_128():
    with pytest.raises(ValueError, match="attention_impl='splash'.*multiple of 128; got 16"):
        _run(_model(attention_impl="splash"), _batch(t=16))


@pytest.mark.parametrize(("platform", "dtype", "seq_len", "expected"), [
    ("cpu", jnp.bfloat16, 2048, "einsum"),
    ("gpu", jnp.bfloat16, 2048, "cudnn"),
    ("gpu", jnp.float32, 2048, "xla"),  # cuDNN flash attention needs bf16/fp16
    ("tpu", jnp.bfloat16, 2048, "splash"),
    ("tpu", jnp.bfloat16, 100, "xla"),  # splash needs T % 128 == 0
])
def test_auto_attention_follows_the_mesh_platform(platform, dtype, seq_len, expected):
    mesh = AbstractMesh((1, 1, 1), mesh_lib.AXES, axis_types=(AxisType.Auto,) * 3,
                        abstract_device=AbstractDevice(platform, None, platform))
    with jax.sharding.use_abstract_mesh(mesh):
        assert tr.resolve_attention("auto", dtype=dtype, seq_len=seq_len, head_dim=64) == expected
    assert tr.resolve_attention("xla", dtype=dtype, seq_len=seq_len, head_dim=64) == "xla"


def test_auto_is_the_default_and_einsum_on_cpu():
    assert models.DEFAULTS["transformer"]["attention_impl"] == "auto"
    batch = _batch()
    _close(_run(_model(), batch), _run(_model(attention_impl="einsum"), batch), rtol=0, atol=0)


# ---------------------------------------------------------------------------- remat


@pytest.mark.parametrize("remat", ["dots", "block"])
def test_remat_keeps_loss_and_gradients(remat):
    batch = _batch()
    _close(_run(_model(remat=remat), batch), _run(_model(), batch))


def _grad_program(remat):
    graphdef, state = nnx.split(_model(d_model=64, remat=remat))
    batch = _batch(b=8, t=128)

    def loss(state):
        return step_lib.lm_loss(nnx.merge(graphdef, state), batch, train=True)[0]

    lowered = jax.jit(jax.grad(loss)).lower(state)
    compiled = lowered.compile()
    return (lowered.as_text().count("optimization_barrier"),
            len(re.findall(r" dot\(", compiled.as_text())),
            compiled.memory_analysis().temp_size_in_bytes)


def test_remat_changes_the_compiled_program():
    """The backward pass recomputes the blocks' matmuls: 'block' recomputes every forward dot,
    'dots' only the batched ones (attention), 'none' none. (XLA:CPU's temporaries drop only
    ~6% for this small LM: 27.0 -> 25.4 MB at 2 layers; GPU/TPU memory: the aot tool.)"""
    none, dots, block = (_grad_program(r) for r in ("none", "dots", "block"))
    assert none[0] == 0 and dots[0] > 0 and block[0] > 0  # one barrier per remat'ed block
    assert none[1] < dots[1] < block[1], (none, dots, block)
    assert block[2] <= dots[2] < none[2], (none, dots, block)


# ---------------------------------------------------------------------------- logits_chunk


@pytest.mark.parametrize("chunk", [4, 16])
def test_chunked_cross_entropy_keeps_loss_and_gradients(chunk):
    batch = _batch(t=16)
    got, ref = _run(_model(logits_chunk=chunk), batch), _run(_model(), batch)
    _close(got, ref)


def test_chunked_cross_entropy_never_materializes_the_logits():
    """With vocab 4096, the [B, T, V] float32 logits (8 x 128 x 4096 x 4 = 16 MiB) appear in
    the unchunked gradient program and not in the chunked one."""
    def program(chunk):
        graphdef, state = nnx.split(_model(vocab_size=4096, logits_chunk=chunk))
        toks = jnp.zeros((8, 128), jnp.int32)
        loss = lambda s: step_lib.lm_loss(nnx.merge(graphdef, s),
                                          {"inputs": toks, "targets": toks}, True)[0]
        return jax.jit(jax.grad(loss)).lower(state).compile()

    full, chunked = program(0), program(16)
    pattern = r"f32\[(8,128,4096|1024,4096)\]"
    assert re.search(pattern, full.as_text())
    assert not re.search(pattern, chunked.as_text())
    assert (chunked.memory_analysis().temp_size_in_bytes
            < full.memory_analysis().temp_size_in_bytes / 2)


def test_eval_step_sums_equal_with_chunks():
    batch = _batch(t=16)
    sums = []
    for chunk in (0, 8):
        graphdef, params, rest = state_lib.split(_model(logits_chunk=chunk))
        tx = optax.adam(1e-3)
        sums.append(step_lib.eval_step(params, rest, tx.init(params), batch, graphdef=graphdef,
                                       loss_fn=step_lib.lm_loss))
    _close(sums[0], sums[1])
    assert float(sums[0]["count"]) == 4 * 16


def test_logits_chunk_must_divide_the_sequence():
    with pytest.raises(ValueError, match="logits_chunk=5 must divide the sequence length 16"):
        _run(_model(logits_chunk=5), _batch(t=16))


@pytest.mark.parametrize(("overrides", "match"), [
    (dict(remat="full"), r"remat='full'; valid: \['none', 'dots', 'block'\]"),
    (dict(logits_chunk=-1), r"logits_chunk=-1 must be an int >= 0"),
    (dict(attention_impl="flash"), r"attention_impl='flash'; valid: \['auto', 'einsum'"),
])
def test_bad_options(overrides, match):
    with pytest.raises(ValueError, match=match):
        _model(**overrides)


# ---------------------------------------------------------------------------- sharding


def _lm_step(shape, batch_size=16, seq_len=32, **model):
    cfg = config_lib.model_config("transformer", vocab_size=64, d_model=64, n_layers=2,
                                  n_heads=4, max_len=seq_len, **model)
    mesh = mesh_lib.make_mesh(shape, jax.devices()[: int(np.prod(shape))])
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
    graphdef, init_fn, abstract, shardings = state_lib.create(cfg, tx, mesh, 0)
    train, evaluate = step_lib.compile_steps(
        graphdef=graphdef, tx=tx, task="lm", state_shardings=shardings,
        batch_sharding=mesh_lib.batch_sharding(mesh), replicated=mesh_lib.replicated(mesh))
    batch = mesh_lib.global_batch(
        {k: np.asarray(v) for k, v in _batch(batch_size, seq_len, seed=3).items()}, mesh)
    return train, evaluate, init_fn, abstract, batch


_GATHER = re.compile(r"= (\w+)\[([\d,]*)\][^\n]*? all-gather(?:-start)?\(")


def _all_gathers(text):
    return [(dtype, tuple(int(x) for x in dims.split(",") if x))
            for dtype, dims in _GATHER.findall(text)]


@pytest.mark.parametrize("shape", [(1, 8, 1), (2, 2, 2)])
def test_sharded_step_gathers_weights_only(shape):
    """Every all-gather of the compiled step is of a parameter (its shape or transpose, or its
    'tensor' shard when mesh.tensor > 1): no activations of the global batch (16 x 32
    tokens) are gathered."""
    train, _, _, abstract, batch = _lm_step(shape)
    gathered = _all_gathers(train.lower(abstract, batch).compile().as_text())
    t = shape[2]
    shards = lambda s: {s, (s[0] // t, *s[1:]), (*s[:-1], s[-1] // t)}
    weights = {x for p in jax.tree.leaves(abstract.params)
               for x in shards(p.shape) | shards(p.shape[::-1])}
    assert gathered  # the fsdp weight all-gathers are there
    assert all(g[1] in weights for g in gathered), gathered


def test_without_constraints_xla_gathers_the_global_batch(monkeypatch):
    """The same step with the constraints switched off gathers [16 * 32, ...] activations
    (the failure the constraints fix, measured here so the test above can fail)."""
    monkeypatch.setattr(mesh_lib, "constrain", lambda x, spec: x)
    train, _, _, abstract, batch = _lm_step((1, 8, 1))
    gathered = _all_gathers(train.lower(abstract, batch).compile().as_text())
    assert [g for g in gathered if g[0].startswith("f") and g[1] and g[1][0] == 16 * 32]


@pytest.mark.parametrize("shape", [(1, 8, 1), (2, 2, 2)])
def test_sharded_step_equals_single_device(shape):
    runs = []
    for mesh_shape in ((1, 1, 1), shape):
        train, evaluate, init_fn, _, batch = _lm_step(mesh_shape)
        state, metrics, _ = train(init_fn(), batch)
        state, metrics2, _ = train(state, batch)
        sums = evaluate(state.params, state.rest, state.opt_state, batch)
        runs.append(((metrics["loss"], metrics2["loss"], metrics["grad_norm"], sums),
                     state.params))
    (ref, ref_params), (got, got_params) = runs
    _close(got, ref, rtol=2e-5, atol=2e-6)
    # after two Adam steps of lr 1e-2: within 1% of one step (Adam turns the round-off of
    # near-zero gradient entries into O(lr) differences)
    _close(got_params, ref_params, rtol=0, atol=1e-4)
