"""Cost of the per-step monitor: the trainer's step with its optimizer watched or not, and the
host's cost of writing one step.

    python experiments/benchmarks/bench_monitor.py [--rounds 11] [--steps 5] [--quick] [--ab]
                                                   [--models lm_tiny,lm_small] [--skip-steps]
                                                   [--skip-instruments] [--skip-host]
                                                   [--skip-synthetic]

Part 1 (the real train step, `optaxlab.train.step`): for lm_tiny and lm_small, variants of the
same jitted step in one process, built as the trainer builds it -- off (no `watch`: every = 0),
predicate (`monitor.watch(..., every=10**9)`: the statistics never run, every step pays the
`lax.cond` on the step count, which is what the steps between monitored ones pay), scalars
(every step, histograms = False) and full (every step, histograms of Delta and of the gradient
for every layer) -- timed in interleaved rounds (the variant order rotates every round). Two
times per variant, medians over rounds:
  device  K steps dispatched back to back, then one block: the compiled step alone;
  loop    the trainer's loop with its host side: dispatch step t, fetch step t-1's metrics (one
          step behind, as optaxlab.train does) and log them as the trainer does -- train scalars
          to TensorBoard and a metrics.jsonl record (`optaxlab.train.metrics.Writer`) every
          `log_every` steps when the monitor is off, every step plus `monitor.write` (the
          monitor's scalars and histograms in one event, its scalars in the record) when on.
Each is reported as wall time and as process CPU time (all threads: XLA's and the host's), the
latter being the robust number on a machine shared with other jobs. Overhead = the median over
rounds of time / time(off, same round) - 1 (paired, so slow drifts of the machine cancel), goal
<= 3% (full, lm_small). Images are off (image_steps = ()); they are written at a handful of steps
only.

`--ab` adds "full, leaf by leaf": the same monitor traced with equal-shape leaves counted one by
one (as before they were stacked, `optaxlab.monitor.stats._can_stack`), timed in the same rounds.

Part 1b (instruments): the trainer's gradient-noise step and sharpness measurement
(config.monitor.noise_every / sharpness_every) against the plain step, grad_accum_steps = 2,
interleaved rounds: one event's extra time in plain steps, amortized at the intervals
docs/monitoring.md suggests (noise_every = 50, sharpness_every = 1000).

Part 2 (host): the host's cost of one monitored step, median over 300 writes of the same step's
statistics: fetch (`jax.device_get` of the `Stats`), summarize (`overlay.summarize`: scalars and
the two theory distances), encode + write (TensorBoard protos, framing, file), and `monitor.write`
as a whole.

Part 3 (synthetic tree): `watch(adam).update` against `adam.update` alone on 2^20 coordinates
split into L leaves, for several L and bin counts (the cost the monitor adds to the update).

On a GPU run the same script; it uses whatever `jax.devices()` gives (one device).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import math
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optaxlab import configs, monitor

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("off", "predicate", "scalars", "full")
LEAFWISE = "full, leaf by leaf"  # --ab: `full` as before stacking (optaxlab.monitor.stats)


@contextlib.contextmanager
def _stacking(on: bool):
    """Whether `watch` counts equal-shape leaves stacked, while a step is traced."""
    from optaxlab.monitor import stats as stats_lib

    saved = stats_lib._can_stack
    if not on:
        stats_lib._can_stack = lambda: False
    try:
        yield
    finally:
        stats_lib._can_stack = saved


def _load_config(name: str):
    return configs.get_config(name)


def _variants(config, names=VARIANTS):
    """{variant: (jitted train step, init_fn)}, the batch, the parameter count."""
    from optaxlab.train import config as config_lib
    from optaxlab.train import mesh as mesh_lib
    from optaxlab.train import optim
    from optaxlab.train import state as state_lib
    from optaxlab.train import step as step_lib

    config = copy.deepcopy(config)
    config.unlock()
    plan = config_lib.validate(config, num_devices=1)
    mesh = mesh_lib.make_mesh(plan.mesh_shape, jax.devices()[:1])
    theory = monitor.theory_settings(config.optimizer.name,
                                     optim.optimizer_hparams(config.optimizer))
    out = {}
    for name in names:
        tx = optim.make_optimizer(config.optimizer, config.steps)
        watch = None
        if name != "off":  # as optaxlab.train.loop does
            every = 10**9 if name == "predicate" else 1
            watch = monitor.watch(tx, config.monitor, every=every,
                                  histograms=name != "scalars", image_steps=(), **theory)
        # (LEAFWISE: the same watch, traced with stacking off in bench_step's warm-up)
        graphdef, init_fn, _, shardings = state_lib.create(config.model, tx, mesh, config.seed)
        train, _ = step_lib.compile_steps(
            graphdef=graphdef, tx=tx, task=plan.task, state_shardings=shardings,
            batch_sharding=mesh_lib.batch_sharding(mesh), replicated=mesh_lib.replicated(mesh),
            watch=watch)
        out[name] = (train, init_fn)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.model.vocab_size, (config.batch_size, config.seq_len + 1),
                          np.int32)
    batch = mesh_lib.global_batch({"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(next(iter(out.values()))[1]().params))
    return out, batch, n_params


def bench_step(name: str, rounds: int, steps: int, ab: bool = False) -> list[str]:
    config = _load_config(name)
    variants, batch, n_params = _variants(config, VARIANTS + ((LEAFWISE,) if ab else ()))
    from optaxlab.train import metrics as metrics_lib

    writer = metrics_lib.Writer(Path(tempfile.mkdtemp(prefix="bench_monitor_")))
    states = {v: init() for v, (_, init) in variants.items()}
    monitored = {"scalars", "full", LEAFWISE}

    def log(step: int, v: str, m, stats) -> None:  # the trainer's `handle`, minus the NaN policy
        if v not in monitored and step % config.log_every:
            return
        train = {k: float(m[k]) for k in ("loss", "lr", "grad_norm", "update_norm")}
        writer.scalars(step, train, "train")
        record = {"step": step, **train}
        if v in monitored:
            record.update(monitor.write(writer.tb, step, stats))
        writer.record(record)

    layers = 0
    for v, (fn, _) in variants.items():  # warm-up: compile every variant and write once
        with _stacking(v != LEAFWISE):
            states[v], m, stats = fn(states[v], batch)
        log(1, v, *jax.device_get((m, stats)))
        if stats is not None and v == "full":
            layers = len(stats.names)

    # windows of at least ~0.5 s: tiny steps (lm_tiny: ~15 ms) are too noisy one by one
    fn = variants["off"][0]
    t0 = time.perf_counter()
    for _ in range(3):
        states["off"], m, _ = fn(states["off"], batch)
    jax.block_until_ready(m)
    steps = max(steps, math.ceil(0.5 / ((time.perf_counter() - t0) / 3)))
    times = {v: {k: [] for k in ("device", "loop", "device_cpu", "loop_cpu")} for v in variants}
    order = list(variants)
    step_no = 2
    for _ in range(rounds):
        order = order[1:] + order[:1]  # rotate
        for v in order:
            fn = variants[v][0]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                states[v], m, stats = fn(states[v], batch)
            jax.block_until_ready((states[v], m, stats))
            times[v]["device"].append((time.perf_counter() - t0) / steps)
            times[v]["device_cpu"].append((time.process_time() - c0) / steps)
            pending = None  # the trainer's loop: fetch and write step t-1 while step t runs
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                states[v], m, stats = fn(states[v], batch)
                if pending is not None:
                    log(step_no, v, *jax.device_get(pending))
                    step_no += 1
                pending = (m, stats if v in monitored else None)
            log(step_no, v, *jax.device_get(pending))
            step_no += 1
            times[v]["loop"].append((time.perf_counter() - t0) / steps)
            times[v]["loop_cpu"].append((time.process_time() - c0) / steps)
    writer.close()
    med = {v: {k: statistics.median(x) for k, x in t.items()} for v, t in times.items()}
    rows = []
    for v in variants:
        cells = []
        for k in ("device", "device_cpu", "loop", "loop_cpu"):
            pairs = zip(times[v][k], times["off"][k], strict=True)
            over = 100.0 * statistics.median(a / b - 1.0 for a, b in pairs)
            cells += [f"{1e3 * med[v][k]:.2f}", "-" if v == "off" else f"{over:+.1f}%"]
        desc = f"{name} ({n_params / 1e6:.2f}M params, {layers} layers, {steps} steps/window)"
        rows.append(f"| {desc} | {v} | " + " | ".join(cells) + " |")
    return rows


NOISE_EVERY, SHARPNESS_EVERY = 50, 1000  # the intervals docs/monitoring.md suggests


def bench_instruments(name: str, rounds: int, steps: int) -> list[str]:
    """The trainer's gradient-noise step and sharpness measurement against its plain step.

    grad_accum_steps = 2 for all three (the noise instrument needs k >= 2): `plain` the train
    step, `noise` the second compilation with the noise fold that the trainer runs every
    noise_every steps instead, `sharpness` one call of the jitted Lanczos measurement it adds
    every sharpness_every steps. Interleaved rounds, medians; amortized cost at interval N =
    (extra time of one event) / (N x plain step).
    """
    from optaxlab.train import config as config_lib
    from optaxlab.train import loop as loop_lib
    from optaxlab.train import mesh as mesh_lib
    from optaxlab.train import optim
    from optaxlab.train import state as state_lib
    from optaxlab.train import step as step_lib

    config = copy.deepcopy(_load_config(name))
    config.unlock()
    config.grad_accum_steps = 2
    config.monitor.every = 0
    config.monitor.noise_every = NOISE_EVERY
    config.monitor.sharpness_every = SHARPNESS_EVERY
    plan = config_lib.validate(config, num_devices=1)
    mesh = mesh_lib.make_mesh(plan.mesh_shape, jax.devices()[:1])
    tx = optim.make_optimizer(config.optimizer, config.steps)
    graphdef, init_fn, abstract, shardings = state_lib.create(config.model, tx, mesh,
                                                              config.seed)
    plain, _ = step_lib.compile_steps(
        graphdef=graphdef, tx=tx, task=plan.task, state_shardings=shardings,
        batch_sharding=mesh_lib.batch_sharding(mesh), replicated=mesh_lib.replicated(mesh),
        watch=None, grad_accum_steps=2)
    noise_step, sharpness = loop_lib._instruments(config, plan, mesh, tx, graphdef, shardings,
                                                  None, abstract.params)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.model.vocab_size, (config.batch_size, config.seq_len + 1),
                          np.int32)
    batch = mesh_lib.global_batch({"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}, mesh)
    states = {"plain": init_fn(), "noise": init_fn()}
    fns = {"plain": plain, "noise": noise_step}
    for v in fns:  # compile
        states[v], m, _ = fns[v](states[v], batch)
    st = states["plain"]
    jax.block_until_ready(sharpness(st.params, st.rest, st.opt_state, batch))
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(3):
        states["plain"], m, _ = plain(states["plain"], batch)
    jax.block_until_ready(m)
    steps = max(steps, math.ceil(0.5 / ((time.perf_counter() - t0) / 3)))
    times = {v: {"wall": [], "cpu": []} for v in ("plain", "noise", "sharpness")}
    for r in range(rounds):
        order = ["plain", "noise", "sharpness"]
        order = order[r % 3:] + order[: r % 3]
        for v in order:
            t0, c0 = time.perf_counter(), time.process_time()
            if v == "sharpness":
                st = states["plain"]
                out = sharpness(st.params, st.rest, st.opt_state, batch)
                jax.block_until_ready(out)
                n = 1
            else:
                for _ in range(steps):
                    states[v], m, _ = fns[v](states[v], batch)
                jax.block_until_ready((states[v], m))
                n = steps
            times[v]["wall"].append((time.perf_counter() - t0) / n)
            times[v]["cpu"].append((time.process_time() - c0) / n)
    med = {v: {k: statistics.median(x) for k, x in t.items()} for v, t in times.items()}
    rows = []
    for v, every in (("plain", None), ("noise", NOISE_EVERY), ("sharpness", SHARPNESS_EVERY)):
        cells = []
        for k in ("wall", "cpu"):
            base = med["plain"][k]
            extra = med[v][k] - (base if v == "noise" else 0.0)
            cells += [f"{1e3 * med[v][k]:.2f}",
                      "-" if every is None else f"{extra / base:.1f}",
                      "-" if every is None else f"{100.0 * extra / (every * base):+.1f}%"]
        what = {"plain": "plain step", "noise": f"noise step (noise_every={NOISE_EVERY})",
                "sharpness": f"sharpness, {config.monitor.sharpness_iters} iters "
                             f"(sharpness_every={SHARPNESS_EVERY})"}[v]
        rows.append(f"| {name} (grad_accum_steps=2) | {what} | " + " | ".join(cells) + " |")
    return rows


def bench_host(name: str, writes: int = 300) -> str:
    """Host cost of one monitored step (ms, medians): fetch, summarize, encode + write, all."""
    from optaxlab.monitor import events, overlay, writer

    variants, batch, _ = _variants(_load_config(name), names=("full",))
    fn, init = variants["full"]
    state = init()
    for _ in range(3):
        state, _, stats = fn(state, batch)
    tb = monitor.EventWriter(tempfile.mkdtemp(prefix="bench_monitor_host_"))
    monitor.write(tb, 1, stats)  # the theory references are computed once, then cached
    t = {k: [] for k in ("fetch", "summarize", "encode + write", "monitor.write")}
    for i in range(writes):
        t0 = time.perf_counter()
        host = jax.device_get(stats)
        t1 = time.perf_counter()
        scalars = overlay.summarize(host)
        t2 = time.perf_counter()
        event = events.event(2 + i)
        events.add_scalars(event.summary, scalars)
        for h in writer.histograms(host):
            events.add_histogram(event.summary, *h)
        tb.write(event)
        t3 = time.perf_counter()
        monitor.write(tb, 2 + i, host)
        t4 = time.perf_counter()
        for k, a, b in zip(t, (t0, t1, t2, t3), (t1, t2, t3, t4), strict=True):
            t[k].append(b - a)
    tb.close()
    cells = " | ".join(f"{1e3 * statistics.median(v):.3f}" for v in t.values())
    return f"| {name} ({len(host.names)} layers, {len(scalars)} scalars) | {cells} |"


def bench_synthetic(rounds: int, total: int = 1 << 20) -> list[str]:
    """watch(adam).update vs adam.update on a synthetic tree, for leaf counts and bin counts."""
    rows = []
    rng = np.random.default_rng(0)
    for n_leaves in (4, 16, 64, 256):
        per = total // n_leaves
        side = int(np.sqrt(per))
        shape = (side, per // side)
        params = {
            f"l{i}": jnp.asarray(rng.standard_normal(shape), jnp.float32) for i in range(n_leaves)
        }
        grads = jax.tree.map(lambda p: p * 0.1 + 0.01, params)
        opt = optax.adam(1e-3, b2=0.95)
        txs = {"adam": opt}
        for bins in (33, 65, 129, 257):
            txs[bins] = monitor.watch(opt, learning_rate=1e-3, b1=0.9, b2=0.95, bins=bins)
        txs["scalars"] = monitor.watch(opt, learning_rate=1e-3, histograms=False)
        fns = {}
        for k, tx in txs.items():
            state = tx.init(params)
            fns[k] = functools.partial(jax.jit(tx.update), grads, state, params)
        for f in fns.values():
            jax.block_until_ready(f())
        t = {k: [] for k in fns}
        for _ in range(rounds):
            for k, f in fns.items():
                t0 = time.perf_counter()
                for _ in range(3):
                    out = f()
                jax.block_until_ready(out)
                t[k].append((time.perf_counter() - t0) / 3)
        base = statistics.median(t["adam"])
        cells = [f"{1e3 * base:.2f}"]
        for k in ("scalars", 33, 65, 129, 257):
            m = statistics.median(t[k])
            cells.append(f"{1e3 * m:.2f} ({m / base:.2f}x)")
        rows.append(f"| {n_leaves} x {shape[0]}x{shape[1]} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=5,
                        help="min steps per timed window (windows last >= ~0.5 s)")
    parser.add_argument("--quick", action="store_true", help="lm_tiny only, few rounds")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-host", action="store_true")
    parser.add_argument("--skip-instruments", action="store_true")
    parser.add_argument("--ab", action="store_true",
                        help=f"also time '{LEAFWISE}' (the monitor before equal-shape leaves "
                             "were stacked) in the same rounds")
    parser.add_argument("--skip-steps", action="store_true",
                        help="skip part 1 (the every-step monitor in the train step)")
    parser.add_argument("--models", default="lm_tiny,lm_small")
    args = parser.parse_args()
    rounds = 4 if args.quick else args.rounds
    models = ("lm_tiny",) if args.quick else tuple(args.models.split(","))
    dev = jax.devices()[0]
    print(f"# bench_monitor on {dev.platform} ({dev.device_kind}), jax {jax.__version__}\n")
    print("## Train step with the monitor (medians per step; overhead vs off)\n")
    print("| model | monitor | device ms | overhead | device CPU ms | overhead "
          "| loop ms | overhead | loop CPU ms | overhead |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in models if not args.skip_steps else ():
        for row in bench_step(name, rounds, args.steps, args.ab):
            print(row, flush=True)
    if not args.skip_instruments:
        print("\n## Trainer instruments: gradient noise and sharpness (medians; extra = one "
              "event's extra time in plain steps; amortized = extra / interval)\n")
        print("| model | program | wall ms | extra (plain steps) | amortized | CPU ms "
              "| extra (plain steps) | amortized |")
        print("|---|---|---|---|---|---|---|---|")
        for name in models:
            for row in bench_instruments(name, max(3, rounds // 2), args.steps):
                print(row, flush=True)
    if not args.skip_host:
        print("\n## Host cost of one monitored step (ms, medians of 300)\n")
        print("| model | fetch | summarize | encode + write | monitor.write |")
        print("|---|---|---|---|---|")
        for name in models:
            print(bench_host(name), flush=True)
    if args.skip_synthetic:
        return
    print("\n## watch(adam).update vs adam.update on 2^20 coordinates (ms, ratio to adam)\n")
    print("| leaves | adam update | scalars only | 33 bins | 65 bins | 129 bins | 257 bins |")
    print("|---|---|---|---|---|---|---|")
    for row in bench_synthetic(max(3, rounds // 2)):
        print(row, flush=True)


if __name__ == "__main__":
    main()
