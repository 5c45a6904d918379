"""Cost of the per-step monitor: the trainer's step with monitoring off / scalars only / full.

    python experiments/benchmarks/bench_monitor.py [--rounds 15] [--steps 5] [--quick]

Part 1 (the real train step, `optaxlab.train.step`): for lm_tiny and lm_small, three variants of
the same jitted step in one process -- off (no monitor code: every = 0), scalars only
(monitor.histograms = False) and full (histograms of Delta and of the gradient for every layer,
every step) -- timed in interleaved rounds (the variant order rotates every round). Two times per
variant, medians over rounds:
  device  K steps dispatched back to back, then one block: the compiled step alone;
  loop    the trainer's loop with its host side: dispatch step t, fetch step t-1's metrics (one
          step behind, as optaxlab.train does) and log them as the trainer does -- train scalars
          to TensorBoard and a metrics.jsonl record (`optaxlab.train.metrics.Writer`) every
          `log_every` steps when the monitor is off, every step plus `monitor.write` (the
          monitor's scalars and histograms in one event, its scalars in the record) when on.
Each is reported as wall time and as process CPU time (all threads: XLA's and the host's), the
latter being the robust number on a machine shared with other jobs. Overhead = the median over
rounds of time / time(off, same round) - 1 (paired, so slow drifts of the machine cancel), goal
<= 1% (scalars) and <= 3% (full). Images are off (image_steps = ()); they
are written at a handful of steps only.

Part 2 (synthetic tree): `measure` alone on 2^20 coordinates split into L leaves, for several L
and bin counts, against one `optax.adam` update of the same tree (the cost the monitor rides on).

On a GPU run the same script; it uses whatever `jax.devices()` gives (one device).
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import math
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optaxlab import monitor

ROOT = Path(__file__).resolve().parents[2]


def _load_config(name: str):
    """configs/<name>.py's get_config(); lm_small falls back to a scaled-up lm_tiny."""
    path = ROOT / "configs" / f"{name}.py"
    if not path.exists():
        if name != "lm_small":
            raise FileNotFoundError(path)
        c = _load_config("lm_tiny")
        c.model.d_model, c.model.n_layers, c.model.n_heads = 256, 4, 4
        c.seq_len, c.model.max_len, c.batch_size = 128, 128, 16
        c.note = "lm_tiny scaled up (configs/lm_small.py not found)"
        return c
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def _variants(config):
    """{variant: (plain-or-monitored jitted step, init_fn, mesh, monitor config or None)}."""
    from optaxlab.train import config as config_lib
    from optaxlab.train import mesh as mesh_lib
    from optaxlab.train import optim
    from optaxlab.train import state as state_lib
    from optaxlab.train import step as step_lib

    devices = jax.devices()[:1]
    config = copy.deepcopy(config)
    config.unlock()
    plan = config_lib.validate(config, num_devices=1)
    mesh = mesh_lib.make_mesh(plan.mesh_shape, devices)
    tx = optim.make_optimizer(config.optimizer, config.steps)
    graphdef, init_fn, _, shardings = state_lib.create(config.model, tx, mesh, config.seed)
    out = {}
    for name in ("off", "scalars", "full"):
        c = copy.deepcopy(config)
        c.monitor.every = 0 if name == "off" else 1
        c.monitor.histograms = name == "full"
        c.monitor.image_steps = ()
        if c.monitor.theory_b2 is None:
            c.monitor.theory_b2 = optim.second_moment_decay(c.optimizer)
        measure = None if name == "off" else functools.partial(monitor.measure, config=c.monitor)
        plain, monitored, _ = step_lib.compile_steps(
            graphdef=graphdef,
            tx=tx,
            task=plan.task,
            config=c,
            state_shardings=shardings,
            batch_sharding=mesh_lib.batch_sharding(mesh),
            replicated=mesh_lib.replicated(mesh),
            measure=measure,
        )
        out[name] = (plain if name == "off" else monitored, None if name == "off" else c.monitor)
    rows = config.batch_size
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.model.vocab_size, (rows, config.seq_len + 1), np.int32)
    batch = mesh_lib.global_batch({"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(init_fn().params))
    return out, init_fn, batch, n_params


def bench_step(name: str, rounds: int, steps: int) -> list[str]:
    config = _load_config(name)
    variants, init_fn, batch, n_params = _variants(config)
    from optaxlab.train import metrics as metrics_lib

    writer = metrics_lib.Writer(Path(tempfile.mkdtemp(prefix="bench_monitor_")))
    settings = {v: None if c is None else monitor.settings(c) for v, (_, c) in variants.items()}
    states = {v: init_fn() for v in variants}

    def log(step: int, m, stats, mset) -> None:  # the trainer's `handle`, minus the NaN policy
        if mset is None and step % config.log_every:
            return
        train = {k: float(m[k]) for k in ("loss", "lr", "grad_norm", "update_norm")}
        writer.scalars(step, train, "train")
        record = {"step": step, **train}
        if mset is not None:
            record.update(monitor.write(writer.tb, step, stats, mset))
        writer.record(record)

    layers = 0
    # warm-up: compile every variant and write once
    for v, (fn, mcfg) in variants.items():
        states[v], m, stats = fn(states[v], batch)
        jax.block_until_ready(m)
        if mcfg is not None:
            host = jax.device_get(stats)
            log(1, jax.device_get(m), host, settings[v])
            layers = len(monitor.layer_names(host))

    # windows of at least ~0.5 s: tiny steps (lm_tiny: ~20 ms) are too noisy one by one
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
            fn, mcfg = variants[v]
            # device: K steps back to back
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                states[v], m, stats = fn(states[v], batch)
            jax.block_until_ready((states[v], m, stats))
            times[v]["device"].append((time.perf_counter() - t0) / steps)
            times[v]["device_cpu"].append((time.process_time() - c0) / steps)
            # loop: as the trainer, fetch and write step t-1 while step t runs
            pending = None
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                states[v], m, stats = fn(states[v], batch)
                if pending is not None:
                    log(step_no, *jax.device_get(pending), settings[v])
                    step_no += 1
                pending = (m, stats)
            log(step_no, *jax.device_get(pending), settings[v])
            step_no += 1
            times[v]["loop"].append((time.perf_counter() - t0) / steps)
            times[v]["loop_cpu"].append((time.process_time() - c0) / steps)
    writer.close()
    med = {v: {k: statistics.median(x) for k, x in t.items()} for v, t in times.items()}
    rows = []
    for v in variants:
        cells = []
        for k in ("device", "device_cpu", "loop", "loop_cpu"):
            ms = 1e3 * med[v][k]
            pairs = zip(times[v][k], times["off"][k], strict=True)
            over = 100.0 * statistics.median(a / b - 1.0 for a, b in pairs)
            cells += [f"{ms:.2f}", "-" if v == "off" else f"{over:+.1f}%"]
        desc = f"{name} ({n_params / 1e6:.2f}M params, {layers} layers, {steps} steps/window)"
        rows.append(f"| {desc} | {v} | " + " | ".join(cells) + " |")
    note = getattr(config, "note", None)
    return rows + ([f"|  ({note}) | | | | | | | | | |"] if note else [])


def bench_synthetic(rounds: int, total: int = 1 << 20) -> list[str]:
    """`measure` on a synthetic tree vs an adam update, for leaf counts and bin counts."""
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
        state = opt.init(params)
        adam = jax.jit(lambda g, s, p: opt.update(g, s, p))
        u, state = adam(grads, state, params)
        fns = {}
        for bins in (33, 65, 129, 257):
            cfg = monitor.default_config()
            cfg.bins, cfg.theory_b2 = bins, 0.95
            fns[bins] = jax.jit(functools.partial(monitor.measure, config=cfg))
        so = monitor.default_config()
        so.histograms = False
        fns["scalars"] = jax.jit(functools.partial(monitor.measure, config=so))
        allf = {"adam": lambda: adam(grads, state, params)}
        allf |= {k: functools.partial(f, grads, u, params, state, 1e-3, 2) for k, f in fns.items()}
        for f in allf.values():
            jax.block_until_ready(f())
        t = {k: [] for k in allf}
        for _ in range(rounds):
            for k, f in allf.items():
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
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5,
                        help="min steps per timed window (windows last >= ~0.5 s)")
    parser.add_argument("--quick", action="store_true", help="lm_tiny only, few rounds")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    rounds = 4 if args.quick else args.rounds
    dev = jax.devices()[0]
    print(f"# bench_monitor on {dev.platform} ({dev.device_kind}), jax {jax.__version__}\n")
    print("## Train step with the monitor (medians per step; overhead vs off)\n")
    print(
        "| model | monitor | device ms | overhead | device CPU ms | overhead "
        "| loop ms | overhead | loop CPU ms | overhead |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("lm_tiny",) if args.quick else ("lm_tiny", "lm_small"):
        for row in bench_step(name, rounds, args.steps):
            print(row, flush=True)
    if args.skip_synthetic:
        return
    print("\n## measure() alone on 2^20 coordinates vs one adam update (ms, ratio to adam)\n")
    print("| leaves | adam update | scalars only | 33 bins | 65 bins | 129 bins | 257 bins |")
    print("|---|---|---|---|---|---|---|")
    for row in bench_synthetic(max(3, rounds // 2)):
        print(row, flush=True)


if __name__ == "__main__":
    main()
