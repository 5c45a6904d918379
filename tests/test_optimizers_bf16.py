"""Every registry optimizer with bfloat16 parameters: float32 scalars in its state, updates
within a few bfloat16 ulps of the float32 computation; all-zero gradients give finite (zero for
prodigy) updates."""

import jax
import jax.numpy as jnp
import pytest

from optaxlab import optimizers


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"embed": jax.random.normal(k1, (16, 8)), "head": jax.random.normal(k2, (8, 16)),
            "bias": jnp.linspace(-1, 1, 16)}


# Tolerance on max |u_bf16 - u_f32| / max |u_f32| over 3 steps: a few bfloat16 ulps (2^-8) of
# the update's scale (measured 1e-3 - 1.6e-2); muon's Newton-Schulz iterations run in the
# parameters' dtype (measured up to 9e-2).
TOL = {"muon": 0.15}


@pytest.mark.parametrize("name", optimizers.names())
def test_bf16_params_float32_scalars_and_updates_near_the_float32_computation(name):
    tx = optimizers.create(name, 1e-2)
    p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), p16)  # the same values
    s16, s32 = tx.init(p16), tx.init(p32)
    scalars = [x for x in jax.tree.leaves(s16) if hasattr(x, "dtype") and x.ndim == 0
               and jnp.issubdtype(x.dtype, jnp.floating)]
    assert all(x.dtype == jnp.float32 for x in scalars), name
    dtypes = [x.dtype for x in jax.tree.leaves(s16)]
    for t in range(3):
        g16 = jax.tree.map(lambda x: jax.random.normal(jax.random.key(t + 1), x.shape)
                           .astype(jnp.bfloat16), p16)
        g32 = jax.tree.map(lambda x: x.astype(jnp.float32), g16)
        u16, s16 = tx.update(g16, s16, p16)
        u32, s32 = tx.update(g32, s32, p32)
        assert [x.dtype for x in jax.tree.leaves(s16)] == dtypes  # stable from step to step
        for a, b in zip(jax.tree.leaves(u16), jax.tree.leaves(u32), strict=True):
            assert a.dtype == jnp.bfloat16
            scale = float(jnp.max(jnp.abs(b)))
            diff = float(jnp.max(jnp.abs(a.astype(jnp.float32) - b)))
            if scale == 0:  # e.g. adopt's first step
                assert diff == 0, (name, t)
            else:
                assert diff / scale <= TOL.get(name, 2.0**-5), (name, t, diff / scale)


@pytest.mark.parametrize("name", optimizers.names())
def test_zero_gradients_give_finite_updates(name):
    tx = optimizers.create(name, 1e-2)
    params = _params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    u, _ = tx.update(zeros, tx.init(params), params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u)), name
    if name == "prodigy":  # optax's prodigy alone returns NaN here
        assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u))

