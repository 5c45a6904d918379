"""optaxlab.transforms.clipping: CClip and ACClip ("Why Adam Beats SGD for Attention Models")
against numpy recurrences."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import transforms as T
from optaxlab.testing import run, stream


def np_acclip(g, b1, b2, alpha, eps):
    g = g.astype(np.float64)
    m, tau_a, out = np.zeros_like(g[0]), np.zeros_like(g[0]), []
    for t in range(len(g)):
        m = b1 * m + (1 - b1) * g[t]
        tau_a = b2 * tau_a + (1 - b2) * np.abs(g[t]) ** alpha
        tau = tau_a ** (1 / alpha)
        out.append(np.minimum(tau / (np.abs(m) + eps), 1.0) * m)
    return np.stack(out), m, tau_a


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0])
def test_acclip_matches_attention_models_recursion(kind, alpha):
    g = stream(kind, seed=int(alpha * 10))
    b1, b2, eps = 0.9, 0.99, 1e-5
    ours, state = run(T.scale_by_acclip(b1, b2, alpha, eps), g)
    for k, v in g.items():
        e, m, tau_a = np_acclip(v, b1, b2, alpha, eps)
        np.testing.assert_allclose(ours[k], e, rtol=1e-5, atol=1e-6 * np.abs(e).max(), err_msg=k)
        # the state holds the momentum and tau^alpha
        np.testing.assert_allclose(state.mu[k], m, rtol=1e-5, atol=1e-6 * np.abs(v).max())
        np.testing.assert_allclose(state.nu[k], tau_a, rtol=1e-5)
    assert isinstance(state, T.ScaleByACClipState)


def test_acclip_clips_only_when_momentum_exceeds_threshold():
    tx = T.scale_by_acclip(b1=0.0, b2=0.0, alpha=1.0, eps=0.0)
    # b1 = b2 = 0: m = g, tau = |g| -> never clipped; then a state with a small tau clips
    g = jnp.array([2.0, -3.0])
    u, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(u, g)
    tx = T.scale_by_acclip(b1=0.5, b2=0.5, alpha=1.0, eps=0.0)
    state = T.ScaleByACClipState(mu=jnp.array([4.0, 0.0]), nu=jnp.array([0.0, 0.0]))
    u, _ = tx.update(jnp.array([0.0, 1.0]), state)
    # coord 0: m = 2, tau = 0 -> 0 ; coord 1: m = 0.5, tau = 0.5 -> 0.5
    np.testing.assert_allclose(u, [0.0, 0.5])


def test_clip_by_coordinate():
    u, _ = T.clip_by_coordinate(1.5).update(jnp.array([-3.0, 0.5, 2.0]), optax.EmptyState())
    np.testing.assert_allclose(u, [-1.5, 0.5, 1.5])


@pytest.mark.parametrize(
    "factory,kw,match",
    [
        (T.clip_by_coordinate, {"threshold": 0.0}, "threshold=0.0"),
        (T.scale_by_acclip, {"alpha": -1.0}, "alpha=-1.0"),
        (T.scale_by_acclip, {"b2": 1.2}, "b2=1.2"),
        (T.scale_by_acclip, {"eps": -1e-3}, "eps=-0.001"),
    ],
)
def test_bad_arguments(factory, kw, match):
    with pytest.raises(ValueError, match=match):
        factory(**kw)
