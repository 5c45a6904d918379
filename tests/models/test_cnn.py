"""CNN and MLP: shapes, BatchNorm statistics as nnx.BatchStat, the graphdef/Param/rest split."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from optaxlab import models


def _images(shape, b=8, seed=0):
    return jax.random.uniform(jax.random.key(seed), (b, *shape))


_apply = jax.jit(lambda g, p, rest, x, train: nnx.merge(g, p, rest)(x, train=train),
                 static_argnums=(0, 4))


def _split_apply(model, x, train):
    """Runs the model the way the trainer does: pure function of (params, rest)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    logits = _apply(graphdef, params, rest, x, train)
    return logits


@pytest.mark.parametrize("shape", [(8, 8, 1), (32, 32, 3)])
def test_cnn_shapes(shape):
    model = models.create({"name": "cnn", "input_shape": shape}, rngs=nnx.Rngs(0))
    logits = _split_apply(model, _images(shape), False)
    assert logits.shape == (8, 10) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_cnn_batchnorm_stats_update_only_in_train_mode():
    model = models.create({"name": "cnn"}, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    stats = nnx.state(model, nnx.BatchStat)
    assert len(jax.tree.leaves(stats)) == 4  # mean and var of two BatchNorms
    assert jax.tree.structure(stats) == jax.tree.structure(rest)

    def step(params, rest, x, train):
        m = nnx.merge(graphdef, params, rest)
        logits = m(x, train=train)
        return logits, nnx.state(m, nnx.BatchStat)

    x = _images((8, 8, 1)) * 3 + 1
    step = jax.jit(step, static_argnums=3)
    _, after_eval = step(params, rest, x, False)
    _, after_train = step(params, rest, x, True)
    before = np.asarray(rest["norms"][0]["mean"][...])
    np.testing.assert_array_equal(np.asarray(after_eval["norms"][0]["mean"][...]), before)
    assert float(np.abs(np.asarray(after_train["norms"][0]["mean"][...]) - before).max()) > 1e-3
    # train mode normalizes with the batch statistics: outputs differ from eval mode
    a = _apply(graphdef, params, rest, x, True)
    b = _apply(graphdef, params, rest, x, False)
    assert float(jnp.abs(a - b).max()) > 1e-3


def test_cnn_trains_on_a_fixed_batch():
    model = models.create({"name": "cnn"}, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = _images((8, 8, 1), b=32, seed=1)
    y = jnp.arange(32) % 10
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, rest, opt_state):
        def loss_fn(p, rest):
            # copy=True: merge would otherwise reuse rest's Variables, created outside this
            # grad trace, and BatchNorm's update of them raises TraceContextError
            m = nnx.merge(graphdef, p, rest, copy=True)
            loss = optax.softmax_cross_entropy_with_integer_labels(m(x, train=True), y).mean()
            return loss, nnx.state(m, nnx.BatchStat)
        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    losses = []
    for _ in range(15):
        params, rest, opt_state, loss = step(params, rest, opt_state)
        losses.append(float(loss))
    assert losses[0] == pytest.approx(math.log(10), abs=0.5)
    assert losses[-1] < 0.5 * losses[0]


def test_mlp_shapes_params_and_flops():
    cfg = {"name": "mlp"}  # defaults: (8, 8, 1) -> 256 -> 256 -> 10
    model = models.create(cfg, rngs=nnx.Rngs(0))
    logits = _split_apply(model, _images((8, 8, 1)), True)
    assert logits.shape == (8, 10)
    weights = 64 * 256 + 256 * 256 + 256 * 10
    assert models.count_params(model) == weights + 256 + 256 + 10
    assert models.flops_per_token(cfg) == 6 * weights
    assert not nnx.state(model, nnx.BatchStat)  # nothing besides parameters


def test_cnn_param_count_and_flops():
    cfg = {"name": "cnn"}  # defaults: channels (32, 64), hidden 128, input (8, 8, 1)
    model = models.create(cfg, rngs=nnx.Rngs(0))
    conv = 9 * 1 * 32 + 9 * 32 * 64
    bn = 2 * (32 + 64)
    fc = 2 * 2 * 64 * 128 + 128 + 128 * 10 + 10
    assert models.count_params(model) == conv + bn + fc
    fwd = 2 * (8 * 8 * 9 * 1 * 32 + 4 * 4 * 9 * 32 * 64) + 2 * (256 * 128 + 128 * 10)
    assert models.flops_per_token(cfg) == 3 * fwd


def test_vision_partition_specs():
    model = models.create({"name": "cnn"}, rngs=nnx.Rngs(0))
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    assert specs["fc"]["kernel"].value == P("fsdp", None)
    assert specs["out"]["kernel"].value == P("fsdp", None)
    assert specs["convs"][0]["kernel"].value == P()


def test_wrong_image_shape():
    model = models.create({"name": "mlp"}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="expected"):
        model(jnp.zeros((2, 32, 32, 3)), train=False)
