"""Speed, memory and precision of optaxlab.optimizers against optax's own.

    python experiments/benchmarks/bench_transforms.py [--reps 21] [--inner 3] [--quick]
        [--only NAME ...]
    python experiments/benchmarks/bench_transforms.py --precision

Speed: for every optimizer in the registry, a jitted training-style step
``(grads, state, params) -> (state, apply_updates(params, updates))`` (state and params donated)
on a ~21M-parameter float32 pytree of transformer-like shapes (embedding 4096 x 512, 6 blocks of
qkv / out / MLP matrices and norm scales). The step returns its outputs in the order of its
donated inputs, as a training step returning its train state does: JAX pairs donated input
buffers with outputs of the same shape in order, so returning (params, state) instead made XLA
copy ~4 full buffers every step and hid real differences (ratios were diluted ~5x).
Where optax has a counterpart (the same math, built by optax's aliases), both are timed
*interleaved* in the same process: each round times ours then optax's (order alternating every
round), `--inner` calls each; we report the median over `--reps` rounds of the per-call time and
the median over rounds of the per-round ratio ours / optax (paired: both timed seconds apart, so
the load of the shared machine mostly cancels). "same HLO" says whether the two jitted steps
lower to identical StableHLO (then any ratio != 1 is noise: where our chain delegates to optax's
transforms, it is the same program). The machine is noisy: read ratios, rerun with --only to
confirm one.

The last columns are the optimizer state in bytes per parameter (float leaves only; scalar
counters excluded) for ours and for the optax counterpart: 0 for signsgd, 4 (one float32
buffer) for momentum / signum / ema_sign / rmsprop, 8 (two) for adam / adam_equal_betas / acclip
/ laprop.

Precision (``--precision``): the largest relative error of the update against a float64 numpy
reference, on positive (log-normal) gradients so that no moment cancels, for the transforms
whose bias correction optaxlab computes itself (ours) and the optax counterparts (what the
registry delegated to before), plus the theory's closed-form scalars (float64 host path vs the
float32 JAX path).

`--quick` uses a ~1.3M-parameter tree and 5 rounds (a smoke run, not a measurement).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optaxlab import optimizers

LR = 1e-3

# our name -> (our keywords, optax counterpart factory or None)
CASES: dict[str, tuple[dict, object]] = {
    "sgd": ({}, lambda: optax.sgd(LR)),
    "momentum": ({"momentum": 0.9}, lambda: optax.sgd(LR, momentum=0.9)),
    "sgd_gclip": (
        {"momentum": 0.9, "max_norm": 1.0},
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(LR, momentum=0.9)),
    ),
    "sgd_cclip": ({"momentum": 0.9, "clip": 1.0}, None),
    "signsgd": ({}, lambda: optax.sign_sgd(LR)),
    "signum": ({"beta": 0.9}, lambda: optax.signum(LR, beta=0.9)),
    "ema_sign": ({"beta": 0.9}, None),
    "signum_fixed_mollifier": ({"beta": 0.9}, None),
    "rmsprop": ({}, lambda: optax.adam(LR, b1=0.0)),
    "adam": ({}, lambda: optax.adam(LR)),
    "adamw": ({"weight_decay": 1e-4}, lambda: optax.adamw(LR, weight_decay=1e-4)),
    "adam_equal_betas": ({"beta": 0.95}, lambda: optax.adam(LR, b1=0.95, b2=0.95, eps=0.0)),
    "laprop": ({}, None),
    "acclip": ({}, None),
    "radam": ({}, lambda: optax.radam(LR)),
    "amsgrad": ({}, lambda: optax.amsgrad(LR)),
    "adagrad": ({}, lambda: optax.adagrad(LR)),
    "lion": ({}, lambda: optax.lion(LR)),
    "nadamw": ({}, lambda: optax.nadamw(LR)),
    "adabelief": ({}, lambda: optax.adabelief(LR)),
    "ademamix": ({}, lambda: optax.contrib.ademamix(LR)),
    "adopt": ({}, lambda: optax.contrib.adopt(LR)),
    "lamb": ({}, lambda: optax.lamb(LR)),
    "prodigy": ({}, lambda: optax.contrib.prodigy(LR)),
    "adafactor": ({}, lambda: optax.adafactor(LR)),
    # optax's partition (every matrix orthogonalized, the embedding too): the same program
    "muon": ({"adam_params": None}, lambda: optax.contrib.muon(LR)),
    "schedule_free_adamw": ({}, lambda: optax.contrib.schedule_free_adamw(LR)),
}


def transformer_tree(vocab: int, d: int, layers: int, mlp: int) -> dict:
    """Shapes of a decoder-only transformer (untied embedding/unembedding omitted)."""
    tree = {"embed": (vocab, d), "final_norm": (d,)}
    for i in range(layers):
        tree[f"block_{i}"] = {
            "attn_norm": (d,), "qkv": (d, 3 * d), "out": (d, d),
            "mlp_norm": (d,), "up": (d, mlp), "down": (mlp, d),
        }
    return tree


def make(shapes: dict, seed: int) -> dict:
    keys = iter(jax.random.split(jax.random.key(seed), 64))
    return jax.tree.map(
        lambda s: 0.02 * jax.random.normal(next(keys), s, jnp.float32), shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def state_bytes_per_param(opt: optax.GradientTransformation, params: dict) -> float:
    n = sum(x.size for x in jax.tree.leaves(params))
    state = jax.eval_shape(opt.init, params)
    leaves = [
        x for x in jax.tree.leaves(state)
        if x.ndim > 0 and jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return sum(x.size * x.dtype.itemsize for x in leaves) / n


class Runner:
    """A donated, jitted update+apply step; `time(k)` returns seconds per call over k calls."""

    def __init__(self, opt: optax.GradientTransformation, params: dict, grads: dict):
        def step(grads, state, params):  # outputs in the donated inputs' order (no copies)
            updates, state = opt.update(grads, state, params)
            return state, optax.apply_updates(params, updates)

        self.step = jax.jit(step, donate_argnums=(1, 2))
        self.grads = grads
        self.params = jax.tree.map(jnp.copy, params)
        # (init from a copy: optax's prodigy keeps the parameters themselves in its state, which
        # could then not be donated with them; optaxlab's prodigy copies them itself)
        self.state = opt.init(jax.tree.map(jnp.copy, params))
        lowered = self.step.lower(grads, self.state, self.params)
        self.hlo = lowered.as_text()  # no debug info
        self.copies = lowered.compile().as_text().count(" copy(")
        self.state, self.params = self.step(grads, self.state, self.params)  # compile + warm
        jax.block_until_ready(self.params)

    def time(self, k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            self.state, self.params = self.step(self.grads, self.state, self.params)
        jax.block_until_ready((self.params, self.state))
        return (time.perf_counter() - t0) / k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=21, help="interleaved rounds (median over them)")
    ap.add_argument("--inner", type=int, default=3, help="calls per timing")
    ap.add_argument("--quick", action="store_true", help="small tree, 5 rounds (smoke run)")
    ap.add_argument("--only", nargs="*", default=None, help="optimizer names to run")
    ap.add_argument("--precision", action="store_true",
                    help="print the precision tables (vs float64) instead of timing")
    args = ap.parse_args()
    if args.precision:
        precision()
        return
    if args.quick:
        shapes, args.reps, args.inner = transformer_tree(1024, 128, 4, 512), 5, 2
    else:
        shapes = transformer_tree(4096, 512, 6, 2048)
    params, grads = make(shapes, 0), make(shapes, 1)
    n = sum(x.size for x in jax.tree.leaves(params))
    print(f"# optaxlab.optimizers vs optax: {n / 1e6:.1f}M float32 params, "
          f"{len(jax.tree.leaves(params))} leaves, device {jax.devices()[0].device_kind}, "
          f"median of {args.reps} interleaved rounds x {args.inner} calls\n")
    print("| optimizer | optax counterpart | ours (ms) | optax (ms) | ratio | same HLO | "
          "copies (ours/optax) | state B/param (ours) | state B/param (optax) |")
    print("|---|---|---:|---:|---:|:---:|:---:|---:|---:|")
    names = args.only or [n for n in optimizers.names() if n in CASES]
    for name in names:
        kw, ref = CASES[name]
        ours = optimizers.create(name, LR, **kw)
        theirs = ref() if ref is not None else None
        runners = [Runner(ours, params, grads)]
        if theirs is not None:
            runners.append(Runner(theirs, params, grads))
        times: list[list[float]] = [[] for _ in runners]
        for r in range(args.reps):
            order = range(len(runners)) if r % 2 == 0 else reversed(range(len(runners)))
            for i in order:
                times[i].append(runners[i].time(args.inner))
        med = [statistics.median(t) * 1e3 for t in times]
        b_ours = state_bytes_per_param(ours, params)
        if theirs is None:
            print(f"| {name} | — | {med[0]:.2f} | — | — | — | {runners[0].copies}/— | "
                  f"{b_ours:g} | — |", flush=True)
        else:
            ref_name = _describe(name)
            b_ref = state_bytes_per_param(theirs, params)
            same = "yes" if runners[0].hlo == runners[1].hlo else "no"
            ratio = statistics.median(a / b for a, b in zip(*times, strict=True))
            print(f"| {name} | {ref_name} | {med[0]:.2f} | {med[1]:.2f} | "
                  f"{ratio:.3f} | {same} | {runners[0].copies}/{runners[1].copies} | "
                  f"{b_ours:g} | {b_ref:g} |", flush=True)
        del runners


def _describe(name: str) -> str:
    return {
        "sgd": "optax.sgd", "momentum": "optax.sgd(momentum)",
        "sgd_gclip": "clip_by_global_norm + optax.sgd", "signsgd": "optax.sign_sgd",
        "signum": "optax.signum", "rmsprop": "optax.adam(b1=0)", "adam": "optax.adam",
        "adamw": "optax.adamw", "adam_equal_betas": "optax.adam(b1=b2, eps=0)",
        "radam": "optax.radam", "amsgrad": "optax.amsgrad", "adagrad": "optax.adagrad",
        "lion": "optax.lion", "nadamw": "optax.nadamw", "adabelief": "optax.adabelief",
        "ademamix": "optax.contrib.ademamix", "adopt": "optax.contrib.adopt",
        "lamb": "optax.lamb", "prodigy": "optax.contrib.prodigy", "adafactor": "optax.adafactor",
        "muon": "optax.contrib.muon",
        "schedule_free_adamw": "optax.contrib.schedule_free_adamw",
    }[name]


# --------------------------------------------------------------------------- precision

P_STEPS = 1000
P_B1, P_B2 = 0.9, 0.999


def _ema64(g: np.ndarray, b: float) -> np.ndarray:
    m, out = np.zeros_like(g[0], np.float64), []
    for x in g:
        m = b * m + (1 - b) * x
        out.append(m)
    return np.stack(out)


def _references(g: np.ndarray) -> dict:
    """float64 updates (per step, per coordinate) of the transforms in `_precision_cases`."""
    g = g.astype(np.float64)
    t = np.arange(1, len(g) + 1, dtype=np.float64)[:, None]
    c = lambda b: -np.expm1(t * np.log(b))  # noqa: E731
    m1, v2, m2 = _ema64(g, P_B1) / c(P_B1), _ema64(g * g, P_B2) / c(P_B2), _ema64(g, P_B2)
    rho_inf = 2 / (1 - P_B2) - 1
    rho = rho_inf - 2 * t * P_B2**t / (1 - P_B2**t)
    r = np.sqrt(np.maximum((rho - 4) * (rho - 2) * rho_inf
                           / ((rho_inf - 4) * (rho_inf - 2) * rho), 0))
    n, mom, laprop = np.zeros_like(g[0]), np.zeros_like(g[0]), []
    for i in range(len(g)):
        n = P_B2 * n + (1 - P_B2) * g[i] ** 2
        mom = P_B1 * mom + (1 - P_B1) * g[i] / np.sqrt(n / (1 - P_B2 ** (i + 1)) + 1e-15)
        laprop.append(mom / (1 - P_B1 ** (i + 1)))
    nesterov = (P_B1 * _ema64(g, P_B1) / -np.expm1((t + 1) * np.log(P_B1))
                + (1 - P_B1) * g / c(P_B1))
    return {
        "adam": m1 / (np.sqrt(v2) + 1e-8),
        "nadam": nesterov / (np.sqrt(v2) + 1e-8),
        "rmsprop": g / (np.sqrt(v2) + 1e-8),
        "radam": np.where(rho >= 5.0, r * m1 / (np.sqrt(v2) + 1e-8), m1),
        "equal_betas": (m2 / c(P_B2)) / np.sqrt(v2),
        "laprop": np.stack(laprop),
    }


def _precision_cases():
    from optaxlab import transforms as T

    return [  # (row, reference key, ours, optax's)
        ("adam (b2 = 0.999)", "adam", T.scale_by_adam(P_B1, P_B2), optax.scale_by_adam(P_B1, P_B2)),
        ("nadamw / adam(nesterov)", "nadam", T.scale_by_adam(P_B1, P_B2, nesterov=True),
         optax.scale_by_adam(P_B1, P_B2, nesterov=True)),
        ("rmsprop (b2 = 0.999)", "rmsprop", T.scale_by_rms(P_B2),
         optax.scale_by_rms(P_B2, 1e-8, 0.0, eps_in_sqrt=False, bias_correction=True)),
        ("radam (defaults)", "radam", T.scale_by_radam(P_B1, P_B2),
         optax.scale_by_radam(P_B1, P_B2)),
        ("adam_equal_betas (beta = 0.999)", "equal_betas",
         optax.chain(T.track_gaussian_vi(P_B2), T.scale_by_mollified_sign()),
         optax.scale_by_adam(P_B2, P_B2, eps=0.0)),
        ("laprop (b2 = 0.999)", "laprop", T.scale_by_laprop(P_B1, P_B2), None),
    ]


def _updates(tx, g: np.ndarray) -> np.ndarray:
    p = jnp.zeros(g.shape[1:], jnp.float32)
    step, state, out = jax.jit(tx.update), tx.init(p), []
    for x in g:
        u, state = step(jnp.asarray(x), state, p)
        out.append(np.asarray(u, np.float64))
    return np.stack(out)


def precision() -> None:
    rng = np.random.default_rng(0)
    g = np.exp(0.3 * rng.normal(size=(P_STEPS, 256))).astype(np.float32)
    refs = _references(g)

    def err(u, ref, steps):
        return float(np.max(np.abs(u[:steps] - ref[:steps]) / np.abs(ref[:steps])))

    print(f"# bias corrections in float32 vs float64: max relative error of the update, "
          f"log-normal gradients, 256 coordinates, b1 = {P_B1}, b2 = {P_B2}\n")
    print("| transform | ours, step 1 | ours, steps 1-10 | ours, 1-1000 | optax, step 1 | "
          "optax, 1-10 | optax, 1-1000 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row, key, ours, theirs in _precision_cases():
        u = _updates(ours, g)
        cells = [f"{err(u, refs[key], n):.1e}" for n in (1, 10, P_STEPS)]
        if theirs is not None:
            v = _updates(theirs, g)
            cells += [f"{err(v, refs[key], n):.1e}" for n in (1, 10, P_STEPS)]
        else:
            cells += ["—"] * 3
        print(f"| {row} | " + " | ".join(cells) + " |", flush=True)

    from optaxlab import optimizers

    tx = optimizers.create("radam", 1.0)
    state, p, ours = tx.init(jnp.zeros(1)), jnp.zeros(1), []
    ref_tx = optax.radam(1.0)
    ref_state, theirs = ref_tx.init(p), []
    for _ in range(6):
        u, state = tx.update(jnp.ones(1), state, p)
        v, ref_state = ref_tx.update(jnp.ones(1), ref_state, p)
        ours.append(float(u[0]))
        theirs.append(float(v[0]))
    exact = -_references(np.ones((6, 1), np.float32))["radam"][5, 0]
    print(f"\nradam(1.0), unit gradient, step 6: ours {ours[5]:.7f}, optax {theirs[5]:.7f}, "
          f"float64 {exact:.7f}\n")

    from optaxlab import theory

    print("# theory closed forms: host (float64) vs JAX (float32) path, relative error\n")
    print("| quantity | exact | host (float64) | rel. error | JAX float32 | rel. error |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [
        ("abs_update_variance(2)", 1 - 8 / np.pi**2, lambda f: f.abs_update_variance, (2.0,)),
        ("abs_update_variance(3)", 0.25, lambda f: f.abs_update_variance, (3.0,)),
        ("effective_sample_size(0.99, 1e5)", 1.99 / (1 - 0.99),
         lambda f: f.effective_sample_size, (0.99, 1e5)),
        ("effective_sample_size(0.999, 1)", 1.0, lambda f: f.effective_sample_size, (0.999, 1.0)),
        ("student_t_variance(3)", 3.0, lambda f: f.student_t_variance, (3.0,)),
    ]
    for label, exact, fn, args in rows:
        host = float(fn(theory)(*args))
        dev = float(fn(theory)(*(jnp.float32(a) for a in args)))
        print(f"| {label} | {exact:.15g} | {host:.15g} | {abs(host / exact - 1):.1e} | "
              f"{dev:.9g} | {abs(dev / exact - 1):.1e} |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
