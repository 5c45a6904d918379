"""The pure-noise reference (the same optimizer on iid N(0, 1) gradients): its masses, and the
distance to it through `watch` for noise-dominated vs signal-dominated gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import monitor
from optaxlab.monitor import noise

SHAPE = (200, 250)  # 5e4 coordinates
NOISE_TV_MAX = 0.03  # pure noise, Adam(0.9, 0.999): observed max 0.015 over 200 steps
SIGNAL_TV_MIN = 0.5  # quadratic, steps >= 2: observed 0.97 at step 2, 0.81 at step 200


def test_reference_masses():
    r, bins = 4.0, 65
    edges = np.linspace(-r, r, bins + 1)
    one = noise.noise_reference(0.9, 0.999, 1, bins, r)  # step 1: Delta = -sign(g) exactly
    assert one.shape == (bins + 2,) and one.sum() == pytest.approx(1.0)
    at = lambda x: 1 + int(np.searchsorted(edges, x, side="right") - 1)
    assert one[at(-1.0)] + one[at(1.0)] == pytest.approx(1.0, abs=1e-6)
    assert one[at(1.0)] == pytest.approx(0.5, abs=0.01)
    late = noise.noise_reference(0.9, 0.999, 5000, bins, r)  # beyond the horizon: last block
    assert late is noise.noise_reference(0.9, 0.999, noise.HORIZON, bins, r)
    assert late is noise.noise_reference(0.9, 0.999, noise.HORIZON - noise.BLOCK + 1, bins, r)
    # stationary Adam on noise: Var[Delta] ~ (1 - b1)/(1 + b1) (momentum of unit-variance
    # normalized gradients)
    mid = 0.5 * (edges[:-1] + edges[1:])
    var = (late[1:-1] * mid**2).sum()
    assert var == pytest.approx(0.1 / 1.9, rel=0.15)
    assert late[0] == late[-1] == 0.0  # no mass beyond +-4
    # RMSprop (b1 = 0) on noise, t = 64 (m_eff ~ 62): Var[Delta] ~ 1 (Corollary 1's law)
    rms = noise.noise_reference(0.0, 0.999, 64, bins, r)
    assert (rms[1:-1] * mid**2).sum() == pytest.approx(1.0, rel=0.1)
    assert not noise.supported(None, 0.999) and not noise.supported(0.9, 1.0)


def _noise_tv(grad_fn, steps):
    """noise_tv of one layer at every step of watch(Adam(0.9, 0.999)) fed with grad_fn."""
    tx = monitor.watch(optax.adam(1e-3, b1=0.9, b2=0.999), learning_rate=1e-3, b1=0.9,
                       b2=0.999, eps=1e-8, image_steps=())

    @jax.jit
    def step(params, state, key):
        updates, state = tx.update({"w": grad_fn(params["w"], key)}, state, params)
        return optax.apply_updates(params, updates), state

    params = {"w": jnp.asarray(np.random.default_rng(1).standard_normal(SHAPE), jnp.float32)}
    state, out = tx.init(params), []
    for t in range(1, steps + 1):
        params, state = step(params, state, jax.random.key(t))
        out.append(monitor.summarize(jax.device_get(monitor.latest(state))))
    return out


def test_pure_noise_is_close_and_a_quadratic_far():
    pure = _noise_tv(lambda w, key: 0.01 * jax.random.normal(key, SHAPE), steps=80)
    tvs = [sc["noise_tv/w"] for sc in pure]
    assert max(tvs) < NOISE_TV_MAX, tvs
    # ... while the closed form, which has no momentum, is far for b1 = 0.9
    assert min(sc["theory_tv/w"] for sc in pure[5:]) > 0.4
    lam = jnp.asarray(np.geomspace(1.0, 100.0, SHAPE[1]), jnp.float32)
    quad = _noise_tv(lambda w, key: lam * w + 0.1 * jax.random.normal(key, SHAPE), steps=20)
    tvs = [sc["noise_tv/w"] for sc in quad]
    assert tvs[0] < NOISE_TV_MAX  # step 1: Delta = -sign(g) whatever g is
    assert min(tvs[1:]) > SIGNAL_TV_MIN, tvs


def test_disk_cache_round_trip(tmp_path, monkeypatch):
    """The simulated reference is saved under $OPTAXLAB_DATA/monitor and read back by a fresh
    lookup (no simulation); a torn file is simulated again; OPTAXLAB_MONITOR_CACHE=0 is off."""
    monkeypatch.setenv("OPTAXLAB_DATA", str(tmp_path))
    key = (0.9, 0.95, 0.0, True, 9, 3.0, noise.HORIZON)
    noise._simulated.cache_clear()
    first = noise._simulated(*key)
    (path,) = (tmp_path / "monitor").glob("noise-*.npy")
    assert path == noise._cache_file(key)
    noise._simulated.cache_clear()

    def no_simulation(*args):
        raise AssertionError("simulated although cached")

    real = noise._simulate
    monkeypatch.setattr(noise, "_simulate", no_simulation)
    again = noise._simulated(*key)
    np.testing.assert_array_equal(again, first)
    assert again.shape == (noise.HORIZON, 9 + 2) and not again.flags.writeable
    path.write_bytes(b"torn")
    noise._simulated.cache_clear()
    monkeypatch.setattr(noise, "_simulate", lambda *a: real(*a))
    np.testing.assert_array_equal(noise._simulated(*key), first)
    monkeypatch.setenv("OPTAXLAB_MONITOR_CACHE", "0")
    assert noise.cache_dir() is None and noise._cache_file(key) is None
    noise._simulated.cache_clear()
