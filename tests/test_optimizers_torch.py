"""optaxlab.optimizers against torch.optim (CPU, float32), step for step.

Both sides start from the same parameters and see the same gradient stream (Gaussian and
Student-t(1.5), 120 steps; the gradients do not depend on the parameters). We compare the
parameters after every step with rtol 1e-5 and an absolute floor of 1e-6 of their largest
magnitude (coordinates passing through zero).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import optimizers
from optaxlab.testing import SHAPES, STEPS, stream

torch = pytest.importorskip("torch")
torch.set_num_threads(1)



def init_params(seed: int = 100) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def ours(opt: optax.GradientTransformation, grads: dict, params: dict) -> dict:
    """Parameters after every step, [T, ...] per leaf."""
    params = {k: jnp.asarray(v) for k, v in params.items()}
    step, state, traj = jax.jit(opt.update), opt.init(params), []
    for t in range(STEPS):
        u, state = step({k: v[t] for k, v in grads.items()}, state, params)
        params = optax.apply_updates(params, u)
        traj.append(params)
    return {k: np.stack([np.asarray(p[k]) for p in traj]) for k in SHAPES}


def theirs(make_opt, grads: dict, params: dict, before_step=None, manual=None) -> dict:
    """torch: `make_opt(list_of_params)` (or a `manual(params, grads, state)` update rule);
    `before_step(params)` runs after the gradients are set (e.g. clip_grad_norm_)."""
    ps = [torch.tensor(params[k], requires_grad=True) for k in SHAPES]
    opt = make_opt(ps) if make_opt is not None else None
    traj, state = [], {}
    for t in range(STEPS):
        for p, k in zip(ps, SHAPES, strict=True):
            p.grad = torch.tensor(grads[k][t])
        if before_step is not None:
            before_step(ps)
        if manual is not None:
            with torch.no_grad():
                manual(ps, state)
        else:
            opt.step()
        traj.append([p.detach().numpy().copy() for p in ps])
    return {k: np.stack([step[i] for step in traj]) for i, k in enumerate(SHAPES)}


def assert_traj_close(a: dict, b: dict, rtol: float = 1e-5):
    for k in SHAPES:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=1e-6 * np.abs(b[k]).max(),
                                   err_msg=k)


def _signum_manual(lr, beta):
    def rule(ps, state):
        for i, p in enumerate(ps):
            buf = state.get(i)
            buf = p.grad.clone() if buf is None else buf.mul_(beta).add_(p.grad)
            state[i] = buf
            p.add_(buf.sign(), alpha=-lr)

    return rule


def _cclip_manual(lr, mu, clip):
    def rule(ps, state):
        for i, p in enumerate(ps):
            buf = state.get(i)
            buf = p.grad.clone() if buf is None else buf.mul_(mu).add_(p.grad)
            state[i] = buf
            p.add_(buf.clamp(-clip, clip), alpha=-lr)

    return rule


def _signsgd_manual(lr):
    def rule(ps, state):
        for p in ps:
            p.add_(p.grad.sign(), alpha=-lr)

    return rule


LR = 0.01
CASES = {
    # name: (our optimizer, torch optimizer factory, before_step, manual rule)
    "sgd": (optimizers.create("sgd", LR), lambda ps: torch.optim.SGD(ps, lr=LR), None, None),
    "momentum": (
        optimizers.create("momentum", LR, momentum=0.9),
        lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.9), None, None,
    ),
    "momentum-dampening": (
        optimizers.create("momentum", LR, momentum=0.9, dampening=0.5),
        lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.9, dampening=0.5), None, None,
    ),
    "momentum-nesterov": (
        optimizers.create("momentum", LR, momentum=0.8, nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.8, nesterov=True), None, None,
    ),
    "sgd_gclip": (
        # the streams' global norms are ~30-1000: max_norm=40 clips most but not all steps
        optimizers.create("sgd_gclip", LR, momentum=0.9, max_norm=40.0),
        lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.9),
        lambda ps: torch.nn.utils.clip_grad_norm_(ps, max_norm=40.0), None,
    ),
    "sgd_cclip": (
        optimizers.create("sgd_cclip", LR, momentum=0.9, clip=2.0),
        None, None, _cclip_manual(LR, 0.9, 2.0),
    ),
    "signsgd": (optimizers.create("signsgd", LR), None, None, _signsgd_manual(LR)),
    "signum": (optimizers.create("signum", LR, beta=0.9), None, None, _signum_manual(LR, 0.9)),
    "adam": (
        optimizers.create("adam", LR, b1=0.9, b2=0.99, eps=1e-8),
        lambda ps: torch.optim.Adam(ps, lr=LR, betas=(0.9, 0.99), eps=1e-8), None, None,
    ),
    "adamw": (
        optimizers.create("adamw", LR, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1),
        lambda ps: torch.optim.AdamW(ps, lr=LR, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1),
        None, None,
    ),
    "rmsprop-as-adamw": (
        optimizers.create("rmsprop", LR, b2=0.99, eps=1e-8, weight_decay=0.1),
        lambda ps: torch.optim.AdamW(ps, lr=LR, betas=(0.0, 0.99), eps=1e-8, weight_decay=0.1),
        None, None,
    ),
    # torch's default b2 = 0.999: torch computes 1 - b^t in float64; optax's float32 one is
    # ~1e-5 off there, ours (-expm1(t log b)) is not
    "adam-default-betas": (
        optimizers.create("adam", LR), lambda ps: torch.optim.Adam(ps, lr=LR), None, None,
    ),
    "rmsprop-default-b2-as-adamw": (
        optimizers.create("rmsprop", LR, weight_decay=0.1),
        lambda ps: torch.optim.AdamW(ps, lr=LR, betas=(0.0, 0.999), weight_decay=0.1),
        None, None,
    ),
    # coupled (L2) weight decay: torch's weight_decay in Adam and SGD
    "adam-coupled-weight-decay": (
        optimizers.create("adam", LR, b2=0.99, coupled_weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=LR, betas=(0.9, 0.99), weight_decay=0.1),
        None, None,
    ),
    "momentum-coupled-weight-decay": (
        optimizers.create("momentum", LR, momentum=0.9, coupled_weight_decay=0.1),
        lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.9, weight_decay=0.1), None, None,
    ),
    # clip-first: a per-coordinate clip of the raw gradient, then Adam (clip_grad_value_)
    "adam-coordinate-clip": (
        optimizers.create("adam", LR, coordinate_clip=0.5),
        lambda ps: torch.optim.Adam(ps, lr=LR),
        lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.5), None,
    ),
    "signum-coordinate-clip": (
        optimizers.create("signum", LR, beta=0.9, coordinate_clip=0.5),
        None, lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.5), _signum_manual(LR, 0.9),
    ),
    "rmsprop-torch": (
        optimizers.create("rmsprop", LR, b2=0.99, eps=1e-8, bias_correction=False),
        lambda ps: torch.optim.RMSprop(ps, lr=LR, alpha=0.99, eps=1e-8), None, None,
    ),
}


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch(case, kind):
    opt, make, before, manual = CASES[case]
    grads, params = stream(kind, seed=21), init_params()
    assert_traj_close(ours(opt, grads, params), theirs(make, grads, params, before, manual))


def test_gclip_is_active_in_the_stream():
    """The sgd_gclip comparison is meaningful: some steps are clipped, some not."""
    norms = []
    for kind in ("gaussian", "heavy"):
        g = stream(kind, seed=21)
        norms += [np.sqrt(sum(float(np.sum(v[t] ** 2)) for v in g.values())) for t in range(STEPS)]
    assert min(norms) < 40.0 < max(norms)
