"""Benchmark: the jitted update simulator vs a straightforward numpy loop (same run, interleaved).

Both run the theory model of "On the Distributional Properties of Adaptive Gradients"
(g ~ N(0, 1), Delta_t = g_t / sqrt(mean_{i<=t} g_i^2)) on n
coordinates for T steps in float32 and produce the same per-step outputs: a 200-bin histogram of
Delta on [-5, 5] with under/overflow, and Delta's and the gradient's moments. The jax side is
`optaxlab.theory.make_simulator` (one `lax.scan`, compiled once; the first call, compile included,
is reported separately). Rounds alternate numpy and jax; the table reports medians.

    python experiments/benchmarks/bench_simulator.py [--n 1000000] [--steps 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from optaxlab import theory  # noqa: E402

BINS, LO, HI = 200, -5.0, 5.0


def numpy_simulator(n: int, steps: int, seed: int) -> dict[str, np.ndarray]:
    """The outputs of `theory.simulate('theory', n=n, steps=steps)`, one numpy step at a time."""
    rng = np.random.default_rng(seed)
    sum_sq = np.zeros(n, np.float32)
    counts = np.zeros((steps, BINS + 2), np.int64)
    names = ("mean", "var", "abs_mean", "abs_var", "skew", "kurt", "min", "max", "grad_mean",
             "grad_var", "grad_abs_mean")
    moments = {k: np.zeros(steps) for k in names}
    for t in range(1, steps + 1):
        g = rng.standard_normal(n, dtype=np.float32)
        sum_sq += g * g
        pos = sum_sq > 0
        delta = np.where(pos, g / np.sqrt(np.where(pos, sum_sq, 1) / np.float32(t)), 0)
        idx = np.clip(np.floor((delta - LO) * (BINS / (HI - LO))), -1, BINS).astype(np.int64) + 1
        counts[t - 1] = np.bincount(idx, minlength=BINS + 2)
        mean = delta.mean()
        d = delta - mean
        var = np.mean(d * d)
        a = np.abs(delta)
        m = moments
        m["mean"][t - 1], m["var"][t - 1] = mean, var
        m["abs_mean"][t - 1], m["abs_var"][t - 1] = a.mean(), a.var()
        m["skew"][t - 1] = np.mean(d**3) / var**1.5
        m["kurt"][t - 1] = np.mean(d**4) / var**2 - 3
        m["min"][t - 1], m["max"][t - 1] = delta.min(), delta.max()
        m["grad_mean"][t - 1], m["grad_var"][t - 1] = g.mean(), g.var()
        m["grad_abs_mean"][t - 1] = np.abs(g).mean()
    return {"counts": counts, **moments}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    sim = theory.make_simulator("theory", n=args.n, steps=args.steps, bins=BINS,
                                value_range=(LO, HI))
    t0 = time.perf_counter()
    jax.block_until_ready(sim(0).counts)
    first = time.perf_counter() - t0

    t_np, t_jax = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        ref = numpy_simulator(args.n, args.steps, seed=r)
        t_np.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = sim(r + 1)
        jax.block_until_ready((res.counts, res.moments))
        t_jax.append(time.perf_counter() - t0)

    # Same model, different random numbers: the two agree statistically.
    var_np = ref["var"].mean()
    var_jax = float(np.asarray(res.moments["var"]).mean())
    med_np, med_jax = statistics.median(t_np), statistics.median(t_jax)
    print(f"theory-model simulator, n = {args.n:,} coordinates x T = {args.steps} steps, float32, "
          f"{args.rounds} interleaved rounds, device: {jax.devices()[0].platform}")
    print()
    print("| implementation | median s | per step ms | first call s | ratio vs numpy |")
    print("|---|---|---|---|---|")
    print(f"| numpy loop (reference) | {med_np:.3f} | {1e3 * med_np / args.steps:.2f} | - | 1.00 |")
    print(f"| jitted `theory.make_simulator` | {med_jax:.3f} | {1e3 * med_jax / args.steps:.2f} | "
          f"{first:.2f} (compile incl.) | {med_np / med_jax:.2f}x faster |")
    print()
    print(f"check: mean over steps of Var[Delta]: numpy {var_np:.4f}, jax {var_jax:.4f} "
          "(theory: 1)")


if __name__ == "__main__":
    main()
