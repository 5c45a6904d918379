"""Speed and memory of optaxlab.optimizers against optax's own, on a transformer-shaped tree.

    python experiments/benchmarks/bench_transforms.py [--reps 21] [--inner 3] [--quick]

For every optimizer in the registry, a jitted training-style step
``(grads, state, params) -> (apply_updates(params, updates), state)`` (state and params donated)
on a ~21M-parameter float32 pytree of transformer-like shapes (embedding 4096 x 512, 6 blocks of
qkv / out / MLP matrices and norm scales). Where optax has a counterpart (the same math, built by
optax's aliases), both are timed *interleaved* in the same process: each round times ours then
optax's (order alternating every round), `--inner` calls each; we report the median over
`--reps` rounds of the per-call time and the ratio ours / optax (goal <= 1.02). "same HLO"
says whether the two jitted steps lower to identical StableHLO (then any ratio != 1 is noise:
where our chain delegates to optax's transforms, it is the same program).

The last columns are the optimizer state in bytes per parameter (float leaves only; scalar
counters excluded) for ours and for the optax counterpart: goal 0 for signsgd, 4 (one float32
buffer) for momentum / signum / ema_sign, 8 (two) for adam / adam_equal_betas / acclip / laprop.

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
        def step(grads, state, params):
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        self.step = jax.jit(step, donate_argnums=(1, 2))
        self.grads = grads
        self.params = jax.tree.map(jnp.copy, params)
        self.state = opt.init(self.params)
        self.hlo = self.step.lower(grads, self.state, self.params).as_text()  # no debug info
        self.params, self.state = self.step(grads, self.state, self.params)  # compile + warm
        jax.block_until_ready(self.params)

    def time(self, k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            self.params, self.state = self.step(self.grads, self.state, self.params)
        jax.block_until_ready((self.params, self.state))
        return (time.perf_counter() - t0) / k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=21, help="interleaved rounds (median over them)")
    ap.add_argument("--inner", type=int, default=3, help="calls per timing")
    ap.add_argument("--quick", action="store_true", help="small tree, 5 rounds (smoke run)")
    ap.add_argument("--only", nargs="*", default=None, help="optimizer names to run")
    args = ap.parse_args()
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
          "state B/param (ours) | state B/param (optax) |")
    print("|---|---|---:|---:|---:|:---:|---:|---:|")
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
            print(f"| {name} | — | {med[0]:.2f} | — | — | — | {b_ours:g} | — |", flush=True)
        else:
            ref_name = _describe(name)
            b_ref = state_bytes_per_param(theirs, params)
            same = "yes" if runners[0].hlo == runners[1].hlo else "no"
            print(f"| {name} | {ref_name} | {med[0]:.2f} | {med[1]:.2f} | "
                  f"{med[0] / med[1]:.3f} | {same} | {b_ours:g} | {b_ref:g} |", flush=True)
        del runners


def _describe(name: str) -> str:
    return {
        "sgd": "optax.sgd", "momentum": "optax.sgd(momentum)",
        "sgd_gclip": "clip_by_global_norm + optax.sgd", "signsgd": "optax.sign_sgd",
        "signum": "optax.signum", "rmsprop": "optax.adam(b1=0)", "adam": "optax.adam",
        "adamw": "optax.adamw", "adam_equal_betas": "optax.adam(b1=b2, eps=0)",
        "radam": "optax.radam", "amsgrad": "optax.amsgrad", "adagrad": "optax.adagrad",
        "lion": "optax.lion",
    }[name]


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
