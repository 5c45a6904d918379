"""Sweep throughput: one process per point vs one process vs one vectorized program.

The same 8-point learning-rate grid of lm_tiny (optaxlab/configs/lm_tiny.py: 300 steps,
batch 16 x 64
tokens, Adam b2 0.95 with a global-norm clip; monitor off; one final evaluation), end to end
(python start, JAX import, compiles, data, training, checkpoints, metrics, report), each mode in
fresh processes:

  (a) one process per point: `python -m optaxlab.sweep ... --no-vectorize` (the persistent
      compilation cache on; every point still compiles, its learning rate is a constant);
      `--workers 1` (2 threads each) and `--workers 2` (1 pinned core each);
  (b) sequentially in one process, the compiled step reused: `vectorized.train_group` with one
      member per point, one after another (the learning rate is a traced input, so the 2nd..8th
      points compile nothing);
  (c) vectorized: `python -m optaxlab.sweep ...` (default `--vectorize`): `--workers 1` (one
      group of 8 on 2 threads) and `--workers 2` (two groups of 4, one core each).

Wall-clock medians over `--repeats` runs, ratio against (a) with 1 worker. Then the per-member
cost as the group grows (K = 1, 2, 4, 8, 16: the steady-state wall of 300 steps + eval once the
program is compiled, divided by K, and the first run's extra compile time), the largest group
run here, and the largest the memory estimate allows (`--max-members` default). Prints markdown.

    python experiments/benchmarks/bench_sweep.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LRS = [0.001, 0.0016, 0.0027, 0.0045, 0.0075, 0.0125, 0.021, 0.035]
SWEEP = """from optaxlab.sweep import sweep

def get_sweep():
    return sweep(config={config!r}, name="bench", overrides={overrides!r},
                 points=[{{"optimizer.learning_rate": lr}} for lr in {lrs!r}])
"""


def overrides(steps: int) -> dict:
    return {"steps": steps, "eval_every": steps, "monitor.every": 0}


def write_sweep(folder: Path, steps: int) -> Path:
    path = folder / "bench_sweep_file.py"
    path.write_text(SWEEP.format(config=str(ROOT / "optaxlab" / "configs" / "lm_tiny.py"),
                                 overrides=overrides(steps), lrs=LRS))
    return path


def env() -> dict:
    e = dict(os.environ)
    e.setdefault("JAX_PLATFORMS", "cpu")
    e.pop("XLA_FLAGS", None)  # one CPU device, as a user's sweep
    return e


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr[-2000:]}")
    return wall


def sweep_cmd(sweep_file: Path, workdir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "optaxlab.sweep", str(sweep_file), "--workdir", str(workdir),
            "--quiet", *flags]


# --------------------------------------------------------------------------- child modes


def _configs(sweep_file: Path):
    from optaxlab.sweep import spec

    plan = spec.resolve(spec.load_sweep_file(sweep_file), sweep_file)
    file, _, _ = plan.config.partition(":")
    base = spec.load_config_file(Path(file))
    import copy

    return [spec.point_config(base, copy.deepcopy(base.optimizer), p.overrides, p.name)
            for p in plan.points]


def child_sequential(sweep_file: Path, workdir: Path) -> None:
    """(b): each point alone, one after another, in this process."""
    from optaxlab.train import vectorized

    for i, c in enumerate(_configs(sweep_file)):
        res = vectorized.train_group([c], [workdir / f"p{i}"], workdir / f"g{i}")
        assert res.statuses == ["finished"], res.messages


def child_scan(sweep_file: Path, workdir: Path, ks: list[int], steps: int) -> None:
    """Per-member cost: for each K, a group of K (lr grid x seeds) twice (compile, steady)."""
    from optaxlab.train import vectorized

    base = _configs(sweep_file)
    out = {}
    for k in ks:
        configs = []
        for i in range(k):
            c = base[i % len(base)]
            c = c.copy_and_resolve_references()
            c.seed = i // len(base)
            c.steps, c.eval_every = steps, steps
            configs.append(c)
        walls = []
        for rep in range(2):
            t = time.perf_counter()
            res = vectorized.train_group(configs, [workdir / f"k{k}r{rep}m{i}" for i in range(k)],
                                         workdir / f"k{k}r{rep}g")
            walls.append(time.perf_counter() - t)
            assert set(res.statuses) <= {"finished", "diverged"}, res.messages
        out[k] = walls
        print(json.dumps({"k": k, "walls": walls}), flush=True)
    print("RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------- main


def median_runs(make_cmd, repeats: int, tmp: Path, tag: str) -> list[float]:
    walls = []
    for r in range(repeats):
        d = tmp / f"{tag}{r}"
        walls.append(timed(make_cmd(d)))
        shutil.rmtree(d, ignore_errors=True)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--ks", default="1,2,4,8,16")
    parser.add_argument("--scan-steps", type=int, default=100, help="steps of the per-member "
                        "cost runs")
    parser.add_argument("--max-k", type=int, default=64, help="the largest group to run "
                        "(a short run, to show it fits)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, 1 repeat")
    parser.add_argument("--skip-a", action="store_true", help="skip mode (a) (slowest)")
    parser.add_argument("--child", choices=("sequential", "scan"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats, args.ks, args.max_k, args.scan_steps = 20, 1, "1,2,4", 8, 20

    if args.child:
        folder = Path(args.dir)
        sweep_file = folder / "bench_sweep_file.py"
        if args.child == "sequential":
            child_sequential(sweep_file, folder / "seq")
        else:
            child_scan(sweep_file, folder / "scan", [int(k) for k in args.ks.split(",")],
                       args.steps)
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    try:
        sweep_file = write_sweep(tmp, args.steps)
        rows = []

        def mode(label, make_cmd, tag):
            walls = median_runs(make_cmd, args.repeats, tmp, tag)
            rows.append((label, statistics.median(walls), walls))
            print(f"{label}: {[round(w, 1) for w in walls]}", file=sys.stderr, flush=True)

        me = [sys.executable, str(Path(__file__).resolve())]
        if not args.skip_a:
            mode("(a) process per point, 1 worker x 2 threads",
                 lambda d: sweep_cmd(sweep_file, d, "--no-vectorize", "--workers", "1"), "a1")
            mode("(a) process per point, 2 workers x 1 thread",
                 lambda d: sweep_cmd(sweep_file, d, "--no-vectorize", "--workers", "2"), "a2")

        def sequential(d: Path) -> list[str]:
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(sweep_file, d / sweep_file.name)
            return [*me, "--child", "sequential", "--dir", str(d)]

        mode("(b) one process, points in sequence, step reused", sequential, "b")
        mode("(c) vectorized, 1 worker x 2 threads x 8 members",
             lambda d: sweep_cmd(sweep_file, d, "--workers", "1"), "c1")
        mode("(c) vectorized, 2 workers x 1 thread x 4 members",
             lambda d: sweep_cmd(sweep_file, d, "--workers", "2"), "c2")

        ref = rows[0][1]
        print(f"\n## 8-point lr grid of lm_tiny, {args.steps} steps + final eval, end to end "
              f"(medians of {args.repeats}; {os.cpu_count()} CPUs, load average at start "
              f"{os.getloadavg()[0]:.1f})\n")
        print("| mode | wall s (median) | runs | points/hour | speedup vs first row |")
        print("|---|---|---|---|---|")
        for label, med, walls in rows:
            print(f"| {label} | {med:.1f} | {', '.join(f'{w:.1f}' for w in walls)} | "
                  f"{8 * 3600 / med:.0f} | {ref / med:.2f}x |")

        # Per-member cost as K grows, in one process (2 threads).
        d = tmp / "scan"
        d.mkdir()
        shutil.copy(sweep_file, d / sweep_file.name)
        ks = [int(k) for k in args.ks.split(",")]
        r = subprocess.run([*me, "--child", "scan", "--dir", str(d), "--ks", args.ks,
                            "--steps", str(args.scan_steps)], cwd=ROOT, env=env(),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
        scan = json.loads(r.stdout.split("RESULT ", 1)[1])
        print(f"\n## Per-member cost as the group grows ({args.scan_steps} steps + eval, one "
              "process, 2 threads; steady = second run of the same K, program compiled)\n")
        print("| K | first run s (compile incl.) | steady s | steady s per member | "
              "vs K=1 per member |")
        print("|---|---|---|---|---|")
        one = scan[str(ks[0])][1] / ks[0]
        for k in ks:
            first, steady = scan[str(k)]
            print(f"| {k} | {first:.1f} | {steady:.1f} | {steady / k:.2f} | "
                  f"{one / (steady / k):.2f}x |")

        # The largest group: what the memory estimate allows, and a short run of --max-k.
        from optaxlab.sweep import runner as runner_lib
        from optaxlab.sweep import spec

        plan = spec.resolve(spec.load_sweep_file(sweep_file), sweep_file)
        allowed = runner_lib.GroupRunner(plan, tmp).default_max_members(plan.points[0])
        d = tmp / "maxk"
        d.mkdir()
        shutil.copy(sweep_file, d / sweep_file.name)
        t = time.perf_counter()
        r = subprocess.run([*me, "--child", "scan", "--dir", str(d), "--ks", str(args.max_k),
                            "--steps", "20"], cwd=ROOT, env=env(), capture_output=True,
                           text=True)
        ok = r.returncode == 0
        print(f"\nLargest group run: K={args.max_k} members x 20 steps: "
              f"{'ran' if ok else 'FAILED'} in {time.perf_counter() - t:.1f} s (two runs). "
              f"--max-members default from the memory estimate on this machine: {allowed} "
              f"(cap {runner_lib.MAX_MEMBERS_CAP}; lm_tiny needs "
              f"{runner_lib.member_bytes(plan.points and _configs(sweep_file)[0]) / 2**20:.1f} "
              "MiB per member incl. 2x headroom).")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
