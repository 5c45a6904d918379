"""What the long-job safety nets cost: the checkpoint checksum, the stop-signal poll and the
finiteness check of the new state, against a train step and a checkpoint save.

    python experiments/benchmarks/bench_checkpoint.py [--rounds 9] [--configs lm_tiny lm_small]

For each config (its model, adam, one device) in one process, medians over interleaved rounds of:
  step      the trainer's compiled train step (`optaxlab.train.step`), dispatched and blocked on;
  checksum  `checkpoint.checksums(state)`: the per-leaf hash of the whole train state on the
            device, scalars to the host (paid once per save and once per restore);
  finite    a jitted "is every float leaf of (params, opt_state) finite" (an upper bound of what
            the step's own check adds: inside the step it fuses with the update);
  poll      `signals.Stopper.poll()` + reading its result (once per step, dispatched with it);
  save      `checkpoint.save` (synchronous Orbax save of the state with its meta; the checksum
            is part of it) to a local temporary folder.
Ratios are against `step` (and checksum against `save`). CPU wall time; on an accelerator run
the same script.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from optaxlab import configs

ROOT = Path(__file__).resolve().parents[2]


def load_config(name: str):
    return configs.get_config(name)


def timed(fn, reps: int = 3) -> float:
    fn()  # warm
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def bench(name: str, rounds: int) -> list[str]:
    from optaxlab.train import checkpoint as ckpt_lib
    from optaxlab.train import mesh as mesh_lib
    from optaxlab.train import optim
    from optaxlab.train import signals as signals_lib
    from optaxlab.train import state as state_lib
    from optaxlab.train import step as step_lib

    config = load_config(name)
    config.monitor.every = 0
    mesh = mesh_lib.make_mesh((1, 1, 1), jax.devices()[:1])
    tx = optim.make_optimizer(config.optimizer, config.steps)
    graphdef, init_fn, _, shardings = state_lib.create(config.model, tx, mesh, config.seed)
    plain, _ = step_lib.compile_steps(
        graphdef=graphdef, tx=tx, task="lm", state_shardings=shardings,
        batch_sharding=mesh_lib.batch_sharding(mesh), replicated=mesh_lib.replicated(mesh))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.model.vocab_size, (config.batch_size, config.seq_len + 1))
    batch = mesh_lib.global_batch({"inputs": tokens[:, :-1].astype(np.int32),
                                   "targets": tokens[:, 1:].astype(np.int32)}, mesh)
    box = {"state": init_fn()}

    def step():
        box["state"], m, _ = plain(box["state"], batch)
        jax.block_until_ready(m["loss"])

    def checksum():
        ckpt_lib.checksums(box["state"])

    finite_fn = jax.jit(lambda s: step_lib._all_finite((s.params, s.opt_state)))

    def finite():
        jax.block_until_ready(finite_fn(box["state"]))

    stopper = signals_lib.Stopper(mesh)

    def poll():
        jax.device_get(stopper.poll())

    folder = Path(tempfile.mkdtemp(prefix="bench_checkpoint_"))
    mngr = ckpt_lib.manager(folder, keep=2, async_save=False)
    counter = {"step": 0}

    def save():
        counter["step"] += 1
        ckpt_lib.save(mngr, counter["step"], box["state"], {"bench": True})
        mngr.wait_until_finished()

    parts = {"step": step, "checksum": checksum, "finite": finite, "poll": poll, "save": save}
    times: dict[str, list[float]] = {k: [] for k in parts}
    order = list(parts)
    for r in range(rounds):
        for k in order[r % len(order):] + order[:r % len(order)]:
            times[k].append(timed(parts[k]))
    mngr.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    n_state = sum(x.size for x in jax.tree.leaves(box["state"]))
    state_mb = sum(x.nbytes for x in jax.tree.leaves(box["state"])) / 1e6
    rows = [f"| {name} | {n_state / 1e6:.2f}M values, {state_mb:.1f} MB | "
            f"{med['step'] * 1e3:.1f} ms | {med['checksum'] * 1e3:.2f} ms "
            f"({med['checksum'] / med['step']:.2f} x step, {med['checksum'] / med['save']:.0%} "
            f"of save) | {med['finite'] * 1e3:.2f} ms ({med['finite'] / med['step']:.1%}) | "
            f"{med['poll'] * 1e3:.2f} ms ({med['poll'] / med['step']:.1%}) | "
            f"{med['save'] * 1e3:.0f} ms |"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--configs", nargs="+", default=["lm_tiny", "lm_small"])
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].platform}, {args.rounds} rounds, medians\n")
    print("| config | train state | step | checksum | finite check | poll | save |")
    print("|---|---|---|---|---|---|---|")
    for name in args.configs:
        for row in bench(name, args.rounds):
            print(row, flush=True)


if __name__ == "__main__":
    main()
