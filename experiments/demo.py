"""`make demo`: lm_tiny on the bundled corpus with Adam and with Signum, side by side.

Trains optaxlab/configs/lm_tiny.py twice (a few hundred steps each, a few minutes on 2 CPU
cores), writes
both runs under one timestamped folder runs/demo/<time>/{adam,signum}/ (TensorBoard logs with
per-layer update histograms and the theory overlay, metrics.jsonl, checkpoints), plots the two
loss curves into runs/demo/<time>/loss.png, and prints the `tensorboard --logdir` command.
Earlier demos are never overwritten (each run gets its own folder).

    python experiments/demo.py [--steps 300] [--out runs/demo] [--no-monitor]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
from pathlib import Path

from optaxlab import configs

ROOT = Path(__file__).resolve().parents[1]
# Optimizer name -> peak learning rate (Signum's sign steps want a smaller one than Adam's).
RUNS = {"adam": 3e-3, "signum": 1e-3}


def load_config(name: str):
    return configs.get_config(name)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, recs), color in zip(results.items(), ("C0", "C3"), strict=False):
        ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], color=color,
                label=f"{name} (train)")
        ev = [r for r in recs if "eval_loss" in r]
        ax.plot([r["step"] for r in ev], [r["eval_loss"] for r in ev], "o--", color=color,
                label=f"{name} (val)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross entropy (nats / byte)")
    ax.set_title("lm_tiny on the bundled stdlib corpus")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--no-monitor", action="store_true", help="skip update histograms")
    args = parser.parse_args()

    import jax

    # Compiled steps are cached across demo runs (a second `make demo` starts much faster).
    if not jax.config.jax_compilation_cache_dir:
        cache = Path(os.environ.get("OPTAXLAB_DATA", Path.home() / ".cache" / "optaxlab"))
        jax.config.update("jax_compilation_cache_dir", str(cache / "jax_cache"))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("optaxlab.train").setLevel(logging.INFO)

    from optaxlab.train import config as config_lib
    from optaxlab.train import train

    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = args.out / stamp
    results, t0 = {}, time.time()
    for name, lr in RUNS.items():
        config = load_config("lm_tiny")
        config.steps = args.steps
        config.eval_every = max(args.steps // 3, 1)
        config.checkpoint_every = args.steps
        config.optimizer = config_lib.switch_optimizer(config.optimizer, name,
                                                       {"learning_rate": lr})
        if args.no_monitor:
            config.monitor.every = 0
        print(f"== {name} (lr {lr:g}, {args.steps} steps) -> {out / name}", flush=True)
        results[name] = train(config, out / name).records

    plot(results, out / "loss.png")
    print(f"\nDone in {time.time() - t0:.0f} s.")
    print(f"{'optimizer':<10} {'first loss':>10} {'final loss':>10} {'val loss':>9}")
    for name, recs in results.items():
        final_eval = [r["eval_loss"] for r in recs if "eval_loss" in r][-1]
        print(f"{name:<10} {recs[0]['loss']:>10.3f} {recs[-1]['loss']:>10.3f} "
              f"{final_eval:>9.3f}")
    rel = os.path.relpath(out, Path.cwd())
    print(f"\nOutputs in {rel}/: adam/ and signum/ (metrics.jsonl, tensorboard/, checkpoints/),"
          f" loss.png")
    print(f"Loss curves: {rel}/loss.png")
    tb = Path(sys.executable).with_name("tensorboard")
    tb_cmd = os.path.relpath(tb, Path.cwd()) if tb.exists() else "tensorboard"
    print(f"TensorBoard: {tb_cmd} --logdir {rel}")
    if not args.no_monitor:
        print(f"Report (update histograms vs theory): {os.path.relpath(sys.executable)} -m "
              f"optaxlab.report {rel}/adam")


if __name__ == "__main__":
    sys.exit(main())
