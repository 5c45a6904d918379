"""The training loop: validate, set up, resume, train/eval/checkpoint/log, clean up.

Metrics are fetched one step behind (the device runs step t while the host reads step t-1),
except at checkpoint / eval / final steps, which sync first so that a non-finite step is always
caught before anything is saved.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import tqdm

from optaxlab import data as data_lib
from optaxlab import monitor
from optaxlab.train import checkpoint as ckpt_lib
from optaxlab.train import config as config_lib
from optaxlab.train import mesh as mesh_lib
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import optim
from optaxlab.train import state as state_lib
from optaxlab.train import step as step_lib

log = logging.getLogger("optaxlab.train")


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient under nan_policy='halt'."""


class RunResult(NamedTuple):
    records: list[dict[str, Any]]  # what was appended to metrics.jsonl in this run
    state: state_lib.TrainState  # the final (sharded) train state
    start_step: int  # the step this run started from (> 0 when it resumed)


def _datasets(config, task: str):
    """(train dataset, val dataset or None) of global batches (the same on every process:
    mesh.global_batch sends each process's rows to its devices)."""
    if task == "lm":
        make = functools.partial(data_lib.lm_dataset, config.data, seq_len=config.seq_len,
                                 batch_size=config.batch_size, seed=config.seed)
    else:
        make = functools.partial(data_lib.vision_dataset, config.data,
                                 batch_size=config.batch_size, seed=config.seed)
    return make(split="train"), (make(split="val") if config.eval_every else None)


def _save_config(config, workdir: Path, start: int) -> None:
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    path = workdir / "config.json"
    if path.exists() and path.read_text() != text:
        path = workdir / f"config.resumed_at_{start}.json"
        log.warning("config differs from %s; saved this run's config to %s",
                    workdir / "config.json", path)
    path.write_text(text)


def train(config, workdir: str | Path, *, devices=None, stop_after: int | None = None
          ) -> RunResult:
    """Train `config` in `workdir` (resuming from its newest readable checkpoint).

    `devices`: the devices of the mesh (default all). `stop_after`: stop (and checkpoint) at
    that step instead of config.steps; the schedule still spans config.steps.
    """
    config = copy.deepcopy(config)
    config.unlock()
    devices = list(jax.devices() if devices is None else devices)
    plan = config_lib.validate(config, num_devices=len(devices))
    end = config.steps if stop_after is None else int(stop_after)
    if not 0 < end <= config.steps:
        raise ValueError(f"stop_after={stop_after} must be in [1, config.steps={config.steps}]")
    every = config.monitor.get("every", 0)

    mesh = mesh_lib.make_mesh(plan.mesh_shape, devices)
    tx = optim.make_optimizer(config.optimizer, config.steps)
    watch = None  # the monitor wraps the optimizer in the step; every = 0: no monitor code
    if every:
        known = monitor.theory_settings(config.optimizer.name,
                                        optim.optimizer_hparams(config.optimizer))
        watch = monitor.watch(tx, config.monitor,
                              **{k: v for k, v in known.items() if config.monitor.get(k) is None})
    try:
        graphdef, init_fn, abstract, shardings = state_lib.create(config.model, tx, mesh,
                                                                  config.seed)
    except ValueError as e:
        raise ValueError(f"config.model: {e}") from e
    try:
        train_ds, val_ds = _datasets(config, plan.task)
    except ValueError as e:
        raise ValueError(f"config.data: {e}") from e
    train_step, eval_step = step_lib.compile_steps(
        graphdef=graphdef, tx=tx, task=plan.task, config=config, state_shardings=shardings,
        batch_sharding=mesh_lib.batch_sharding(mesh), replicated=mesh_lib.replicated(mesh),
        watch=watch)
    names = state_lib.param_names(abstract.params)

    # The config is valid: from here on the workdir is touched.
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    mngr = ckpt_lib.manager(workdir / "checkpoints", keep=config.keep_checkpoints,
                            async_save=config.async_checkpointing)
    writer = bar = None
    try:
        restored = ckpt_lib.restore_latest(mngr, abstract, lambda: iter(train_ds))
        if restored is None:
            start, state, data_iter = 0, init_fn(), iter(train_ds)
        else:
            start, state, data_iter = restored
            if isinstance(state, dict):  # a target-less restore gives dicts; ours gives TrainState
                state = state_lib.TrainState(**state)
            log.info("resumed from the checkpoint at step %d in %s", start, workdir / "checkpoints")
        if is_main:
            _save_config(config, workdir, start)
        writer = metrics_lib.Writer(workdir, resume_step=start, enabled=is_main)
        per_step = config.batch_size * (config.seq_len if plan.task == "lm" else 1)
        unit = "tokens" if plan.task == "lm" else "examples"
        bar = tqdm.tqdm(total=end, initial=start, disable=not (config.progress_bar and is_main),
                        file=sys.stderr, dynamic_ncols=True, desc="train")
        records: list[dict[str, Any]] = []
        clock = {"time": None, "step": start}

        def evaluate(state) -> dict[str, float]:
            sums: dict[str, float] = {}
            for i, batch in enumerate(iter(val_ds)):
                if config.eval_batches and i >= config.eval_batches:
                    break
                out = eval_step(state.params, state.rest, mesh_lib.global_batch(batch, mesh))
                for k, v in jax.device_get(out).items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            if not sums:
                return {}
            result = {"eval_loss": sums["loss_sum"] / sums["count"]}
            if plan.task == "lm":
                result["eval_perplexity"] = math.exp(min(result["eval_loss"], 80.0))
            else:
                result["eval_accuracy"] = sums["correct"] / sums["count"]
            writer.scalars(int(state.step), {k[5:]: v for k, v in result.items()}, "eval")
            log.info("step %d: %s", int(state.step),
                     ", ".join(f"{k}={v:.4g}" for k, v in result.items()))
            return result

        def handle(pending, force: bool) -> dict[str, Any] | None:
            """Host side of one finished step: NaN policy, then its record (if it is logged)."""
            step, m, stats = pending
            m, stats = jax.device_get((m, stats))
            if not bool(m["finite"]):
                bad = [n for n, ok in zip(names, m["leaf_finite"], strict=True) if not ok]
                what = (f"gradient at step {step} (first offending parameter: {bad[0]})" if bad
                        else f"loss ({float(m['loss'])}) at step {step}")
                if config.nan_policy == "halt":
                    latest = mngr.latest_step()
                    raise NonFiniteError(
                        f"non-finite {what}; nan_policy='halt' stopped the run "
                        f"(last good checkpoint: {f'step {latest}' if latest else 'none'} in "
                        f"{workdir / 'checkpoints'}); --config.nan_policy=skip skips such steps")
                log.warning("non-finite %s: update skipped (%d skipped so far)", what,
                            int(m["skipped"]))
            if not (force or step % config.log_every == 0 or stats):
                return None
            now = time.perf_counter()
            train_metrics = {k: float(m[k]) for k in ("loss", "lr", "grad_norm", "update_norm")}
            if "accuracy" in m:
                train_metrics["accuracy"] = float(m["accuracy"])
            train_metrics["skipped_steps"] = int(m["skipped"])
            if clock["time"] is not None and step > clock["step"]:
                steps_per_sec = (step - clock["step"]) / (now - clock["time"])
                train_metrics["steps_per_sec"] = steps_per_sec
                train_metrics[f"{unit}_per_sec"] = steps_per_sec * per_step
            clock.update(time=now, step=step)
            writer.scalars(step, train_metrics, "train")
            record = {"step": step, **train_metrics}
            if stats is not None and is_main:
                record.update(monitor.write(writer.tb, step, stats))
            bar.set_postfix(loss=f"{train_metrics['loss']:.4f}", refresh=False, **(
                {f"{unit[:3]}/s": f"{train_metrics[f'{unit}_per_sec']:.0f}"}
                if f"{unit}_per_sec" in train_metrics else {}))  # drawn at the next update
            return record

        def emit(record: dict[str, Any] | None) -> None:
            if record is not None:
                writer.record(record)
                records.append(record)

        if start >= end:
            log.info("nothing to do: the workdir is already at step %d (end: %d)", start, end)
        pending = None
        for step in range(start + 1, end + 1):
            batch = mesh_lib.global_batch(next(data_iter), mesh)
            state, m, stats = train_step(state, batch)
            bar.update(1)
            if pending is not None:
                emit(handle(pending, force=False))
            pending = (step, m, stats if every and step % every == 0 else None)
            do_eval = bool(config.eval_every) and (step % config.eval_every == 0 or step == end)
            do_save = step % config.checkpoint_every == 0 or step == end
            if do_eval or do_save:
                record = handle(pending, force=True)
                pending = None
                if do_eval:
                    record.update(evaluate(state))
                emit(record)
                if do_save:
                    ckpt_lib.save(mngr, step, state, data_iter)
                writer.flush()
                clock.update(time=time.perf_counter(), step=step)  # throughput excludes these
        if pending is not None:
            emit(handle(pending, force=True))
    finally:
        if bar is not None:
            bar.close()
        mngr.wait_until_finished()
        mngr.close()
        if writer is not None:
            writer.close()
    return RunResult(records=records, state=state, start_step=start)
