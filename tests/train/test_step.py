"""The train step: gradient accumulation (equal to the full batch, sharded, the microbatch
fold), and the config checks of the model/step options."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab.train import config as config_lib
from optaxlab.train import mesh as mesh_lib
from optaxlab.train import state as state_lib
from optaxlab.train import step as step_lib
from optaxlab.train.errors import ConfigError

MODEL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_len=16)


def _setup(mesh_shape=(1, 1, 1), **model):
    cfg = config_lib.model_config("transformer", **{**MODEL, **model})
    mesh = mesh_lib.make_mesh(mesh_shape, jax.devices()[: int(np.prod(mesh_shape))])
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    graphdef, init_fn, abstract, shardings = state_lib.create(cfg, tx, mesh, 0)
    return graphdef, tx, mesh, init_fn, shardings


def _batch(b=8, t=16, seed=2):
    toks = jax.random.randint(jax.random.key(seed), (b, t + 1), 0, 64, dtype=jnp.int32)
    return {"inputs": toks[:, :-1], "targets": toks[:, 1:]}


def _close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def lm():
    graphdef, tx, _, init_fn, _ = _setup()
    state = init_fn()

    def grads_of(batch, k):
        return step_lib.loss_and_grads(state.params, state.rest, batch, graphdef=graphdef,
                                       loss_fn=step_lib.lm_loss, grad_accum_steps=k,
                                       microbatch_fn=step_lib.squared_norm_fold())

    return graphdef, state, jax.jit(grads_of, static_argnums=1)


@pytest.mark.parametrize("k", [2, 4])
def test_accumulation_equals_the_full_batch(lm, k):
    _, _, grads_of = lm
    batch = _batch()
    loss1, aux1, rest1, g1 = grads_of(batch, 1)
    loss, aux, rest, g = grads_of(batch, k)
    _close((loss, g), (loss1, g1))
    _close((aux["loss_sum"], aux["count"]), (aux1["loss_sum"], aux1["count"]))
    assert float(aux["count"]) == 8 * 16
    np.testing.assert_allclose(float(aux["loss_sum"]) / float(aux["count"]), float(loss),
                               rtol=1e-6)


def test_microbatch_fold_against_a_hand_computation(lm):
    """The fold sees microbatch i = rows i, i + k, ...: the sum of their squared gradient
    norms, computed here by hand from separate full-batch calls."""
    _, _, grads_of = lm
    batch, k = _batch(), 4
    _, aux, _, g = grads_of(batch, k)
    norms, mean = [], None
    for i in range(k):
        micro = jax.tree.map(lambda x, i=i: x[i::k], batch)
        gi = grads_of(micro, 1)[3]
        norms.append(float(optax.tree.norm(gi, squared=True)))
        mean = gi if mean is None else jax.tree.map(jnp.add, mean, gi)
    np.testing.assert_allclose(float(aux["microbatch"]), sum(norms), rtol=1e-5)
    _close(g, jax.tree.map(lambda x: x / k, mean))
    # noise is real: the microbatch norms exceed the mean gradient's
    assert sum(norms) / k > float(optax.tree.norm(g, squared=True))
    _, aux1, _, g1 = grads_of(batch, 1)  # k = 1: the fold of the one full-batch gradient
    np.testing.assert_allclose(float(aux1["microbatch"]),
                               float(optax.tree.norm(g1, squared=True)), rtol=1e-6)


def test_accumulation_rejects_an_indivisible_batch(lm):
    _, _, grads_of = lm
    with pytest.raises(ValueError, match="grad_accum_steps=3 must divide the batch size 8"):
        grads_of(_batch(), 3)


def test_sharded_accumulated_step_equals_the_full_batch_step():
    """compile_steps with grad_accum_steps=2 on fsdp=4 x data=2 (8 devices, 2 rows each):
    same loss, gradient norm and new parameters as the unaccumulated step; the microbatches
    stay sharded (no all-gather of a [8, ...] or [4, ...] batch array)."""
    graphdef, tx, mesh, init_fn, shardings = _setup((2, 4, 1))
    batch = mesh_lib.global_batch({k: np.asarray(v) for k, v in _batch(16).items()}, mesh)
    out = []
    for k in (1, 2):
        train, _ = step_lib.compile_steps(
            graphdef=graphdef, tx=tx, task="lm", state_shardings=shardings,
            batch_sharding=mesh_lib.batch_sharding(mesh), replicated=mesh_lib.replicated(mesh),
            grad_accum_steps=k)
        state, metrics, _ = train(init_fn(), batch)
        out.append((metrics["loss"], metrics["grad_norm"], state.params))
        text = train.lower(init_fn(), batch).compile().as_text()
        assert "all-gather" in text  # the fsdp weight gathers
        assert not any(f"f32[{n},16" in line for line in text.splitlines()
                       if "all-gather(" in line for n in (8, 16))
    _close(out[1], out[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- config checks


def _config(**fields):
    c = config_lib.default_config()
    c.model = config_lib.model_config("transformer", **MODEL)
    c.seq_len = 16
    c.batch_size = 16
    for key, value in fields.items():
        node, *path = key.split(".")
        target = c if not path else c[node]
        target[path[-1] if path else node] = value
    return c


@pytest.mark.parametrize(("fields", "match"), [
    (dict(grad_accum_steps=0), r"^config\.grad_accum_steps: 0 must be a positive int"),
    (dict(grad_accum_steps=3), r"^config\.grad_accum_steps: 3 does not divide the per-device "
                               r"batch 2 .*; valid: 1, 2$"),
    ({"model.logits_chunk": 5}, r"^config\.model\.logits_chunk: 5 does not divide seq_len=16"),
])
def test_config_rejects_bad_step_options(fields, match):
    with pytest.raises(ConfigError, match=match):
        config_lib.validate(_config(**fields), num_devices=8)


def test_config_accepts_the_options():
    c = _config(grad_accum_steps=2, **{"model.logits_chunk": 8, "model.remat": "dots"})
    assert config_lib.validate(c, num_devices=8).task == "lm"
    assert config_lib.default_config().grad_accum_steps == 1


def test_accumulation_under_vmap_over_members(lm):
    """The vectorized groups call `loss_and_grads` per member (vmapped): accumulation inside
    vmap equals the full batch, member by member."""
    graphdef, state, _ = lm
    params = jax.tree.map(lambda p: jnp.stack([p, 1.5 * p]), state.params)
    batches = jax.tree.map(lambda a, b: jnp.stack([a, b]), _batch(seed=3), _batch(seed=4))

    def member(params, batch, k):
        return step_lib.loss_and_grads(params, state.rest, batch, graphdef=graphdef,
                                       loss_fn=step_lib.lm_loss, grad_accum_steps=k)

    run = jax.jit(jax.vmap(member, in_axes=(0, 0, None)), static_argnums=2)
    (loss1, _, _, g1), (loss2, _, _, g2) = run(params, batches, 1), run(params, batches, 4)
    _close((loss2, g2), (loss1, g1))
    assert float(jnp.abs(loss1[0] - loss1[1])) > 1e-3  # the members really differ


def test_all_options_together_sharded_equal_the_plain_step():
    """(2, 2, 2) mesh, remat='block', logits_chunk=8, grad_accum_steps=2 against one device
    with none of them: same loss, gradient norm, eval sums and parameters."""
    out = []
    for shape, model, k in (((1, 1, 1), {}, 1),
                            ((2, 2, 2), dict(remat="block", logits_chunk=8), 2)):
        graphdef, tx, mesh, init_fn, shardings = _setup(shape, **model)
        batch = mesh_lib.global_batch({n: np.asarray(v) for n, v in _batch(16).items()}, mesh)
        train, evaluate = step_lib.compile_steps(
            graphdef=graphdef, tx=tx, task="lm", state_shardings=shardings,
            batch_sharding=mesh_lib.batch_sharding(mesh), replicated=mesh_lib.replicated(mesh),
            grad_accum_steps=k)
        state, metrics, _ = train(init_fn(), batch)
        sums = evaluate(state.params, state.rest, state.opt_state, batch)
        out.append((metrics["loss"], metrics["grad_norm"], sums, state.params))
    _close(out[1], out[0], rtol=2e-5, atol=2e-6)
