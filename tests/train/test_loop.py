"""The training loop end to end on a tiny LM: sharding equivalence, exact resume, the three
restore outcomes (corrupt -> previous, incompatible -> refused untouched, unreadable -> refused
unmoved), checksums, NaN policies (nothing non-finite is saved), status.json, metrics.jsonl and
TensorBoard (each step once after any restart)."""

import json
import logging
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optaxlab import configs, testing
from optaxlab.testing import nonfinite_at
from optaxlab.train import (
    IncompatibleCheckpointError,
    IOFailure,
    NonFiniteError,
    train,
)
from optaxlab.train import checkpoint as ckpt_lib
from optaxlab.train import loop as loop_lib
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import workdir as workdir_lib

ROOT = Path(__file__).resolve().parents[2]


def load_config(name):
    return configs.get_config(name)


def tiny_lm(**fields):
    return testing.tiny_lm(**fields)


ONE = jax.devices()[:1]


def losses(result):
    return np.array([r["loss"] for r in result.records])


def steps_in(workdir, name="metrics.jsonl"):
    return [r["step"] for r in metrics_lib.read_jsonl(Path(workdir) / name)]


def snapshot(folder) -> dict[str, object]:
    """Every path under `folder` -> its bytes (files), 'dir', or its link target."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = f"-> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes()
    return out


def tb_steps(workdir, tag="train/loss"):
    acc = EventAccumulator(str(Path(workdir) / "tensorboard"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def poison(step, pattern="mlp/down"):
    """wrap_optimizer feeding the optimizer NaN gradients for the leaves matching `pattern` at
    update `step`: its moments and update turn NaN (step 0: never; the same state tree)."""
    return lambda tx: optax.chain(nonfinite_at(step, pattern), tx)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Share compiled steps between the runs of this module and the test workers (identical
    programs compile once: the tests keep steps=10 and the tiny model for that)."""
    previous = (jax.config.jax_compilation_cache_dir,
                jax.config.jax_persistent_cache_min_compile_time_secs)
    cache = tmp_path_factory.getbasetemp().parent / "optaxlab_jax_cache"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    jax.config.update("jax_compilation_cache_dir", previous[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 10-step run on one device."""
    workdir = tmp_path_factory.mktemp("reference")
    result = train(tiny_lm(**{"mesh.data": 1}), workdir, devices=ONE)
    return workdir, result


@pytest.mark.parametrize("shape", [(2, 2, 2), (8, 1, 1)])
def test_sharded_mesh_matches_one_device(reference, tmp_path, shape):
    _, ref = reference
    cfg = tiny_lm(**{"mesh.data": shape[0], "mesh.fsdp": shape[1], "mesh.tensor": shape[2]})
    result = train(cfg, tmp_path)
    assert len(result.records) == 10
    np.testing.assert_allclose(losses(result), losses(ref), rtol=1e-5)
    assert losses(result)[-1] < losses(result)[0]
    kernel = result.state.params["blocks"][0]["mlp"]["up"]["kernel"]
    assert len(kernel.sharding.device_set) == 8
    if shape == (2, 2, 2):
        assert tuple(kernel.sharding.spec) == ("fsdp", "tensor")
        mu = jax.tree.leaves(result.state.opt_state)  # moments follow their parameter
        assert any(getattr(x, "sharding", None) is not None and x.shape == kernel.shape
                   and tuple(x.sharding.spec) == ("fsdp", "tensor") for x in mu)


def test_exact_resume_checkpoint_round_trip_and_status(reference, tmp_path):
    ref_dir, ref = reference
    first = train(tiny_lm(**{"mesh.data": 1}), tmp_path, devices=ONE, stop_after=4)
    assert [r["step"] for r in first.records] == [1, 2, 3, 4]
    assert (tmp_path / "checkpoints" / "4").is_dir()
    status = workdir_lib.read_status(tmp_path)
    assert status["status"] == "finished" and status["step"] == 4 and status["exit_code"] == 0
    assert "stop_after" in status["message"] and not (tmp_path / ".lock").exists()
    second = train(tiny_lm(**{"mesh.data": 1}), tmp_path, devices=ONE)
    assert second.start_step == 4
    np.testing.assert_array_equal(np.concatenate([losses(first), losses(second)]), losses(ref))
    assert steps_in(tmp_path) == list(range(1, 11))
    assert tb_steps(tmp_path) == list(range(1, 11))
    status = workdir_lib.read_status(tmp_path)
    assert {k: status[k] for k in ("status", "step", "steps", "exit_code", "diverged_step")} == \
        {"status": "finished", "step": 10, "steps": 10, "exit_code": 0, "diverged_step": None}
    # Orbax round trip: the final checkpoint holds exactly the final state, with its checksums.
    cfg = tiny_lm(**{"mesh.data": 1})
    mngr = ckpt_lib.manager(tmp_path / "checkpoints", keep=3)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            second.state)
    step, restored, meta = ckpt_lib.restore_latest(
        mngr, abstract, loop_lib.fingerprint(cfg, "lm"), cfg.optimizer.to_dict())
    mngr.close()
    assert step == 10 and meta["checksum"]["leaves"] == ckpt_lib.checksums(second.state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(second.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_moves_later_records_aside_never_deletes(reference, tmp_path):
    cfg = tiny_lm(**{"mesh.data": 1})
    train(cfg, tmp_path, devices=ONE, stop_after=5)
    # A crash after step 5's checkpoint but with records of steps 6-7 (and a torn line) written:
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 6, "loss": 1.0}) + "\n" + json.dumps({"step": 7}) + "\n")
        f.write('{"step": 8, "lo')
    result = train(cfg, tmp_path, devices=ONE)
    assert result.start_step == 5
    assert steps_in(tmp_path) == list(range(1, 11))
    moved = (tmp_path / "metrics.superseded.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in moved[:2]] == [6, 7] and moved[2] == '{"step": 8, "lo'


def test_restart_from_zero_shows_each_step_once(tmp_path):
    """A run that logged steps 1-3 but never got to a checkpoint, then a rerun from step 0:
    metrics.jsonl and TensorBoard show steps 1-10 once; the old records are kept aside."""
    cfg = tiny_lm(**{"mesh.data": 1, "checkpoint_every": 100})
    with pytest.raises(NonFiniteError):
        train(cfg, tmp_path, devices=ONE, wrap_optimizer=poison(4))
    assert steps_in(tmp_path) == [1, 2, 3] and tb_steps(tmp_path) == [1, 2, 3]
    assert not list((tmp_path / "checkpoints").iterdir())
    result = train(cfg, tmp_path, devices=ONE)
    assert result.start_step == 0
    assert steps_in(tmp_path) == list(range(1, 11))
    assert steps_in(tmp_path, "metrics.superseded.jsonl") == [1, 2, 3]
    assert tb_steps(tmp_path) == list(range(1, 11))


def _flip(path: Path, n: int = 64, start: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 2 if start is None else start
    for i in range(start, min(start + n, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _largest_data_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _corrupt_silently(step_dir: Path, n: int = 64) -> None:
    """Flip n bytes of the step's largest data file where the checkpoint still decodes, to
    different values: only the checksum can tell. (OCDBT's file layout depends on the order of
    its concurrent writes, so a fixed offset sometimes hits a header and the damage shows as
    "data unreadable" instead.)"""
    path = _largest_data_file(step_dir)
    original = path.read_bytes()
    clean = jax.tree.leaves(ocp.StandardCheckpointer().restore(step_dir / "state"))
    stride = max(n, len(original) // 64)
    for start in [*range(len(original) // 2, len(original) - n, stride),
                  *range(0, len(original) // 2, stride)]:
        path.write_bytes(original)
        _flip(path, n, start)
        try:
            damaged = jax.tree.leaves(ocp.StandardCheckpointer().restore(step_dir / "state"))
        except Exception:  # noqa: BLE001 - undecodable here: try another place
            continue
        if any(not np.array_equal(a, b) for a, b in zip(clean, damaged, strict=True)):
            return
    raise AssertionError(f"no place in {path} where flipped bytes still decode")


def test_corrupt_flipped_and_half_written_checkpoints_fall_back(reference, tmp_path, caplog):
    ref_dir, ref = reference
    cfg = tiny_lm(**{"mesh.data": 1, "checkpoint_every": 2, "keep_checkpoints": 5})
    train(cfg, tmp_path, devices=ONE, stop_after=6)
    ckpts = tmp_path / "checkpoints"
    _corrupt_silently(ckpts / "6")  # decodes fine: only the checksum can tell
    for f in (ckpts / "4" / "state" / "d").iterdir():
        f.write_bytes(b"garbage")
    half = ckpts / "8.orbax-checkpoint-tmp-1234"
    half.mkdir()
    with caplog.at_level(logging.WARNING, logger="optaxlab.train"):
        result = train(cfg, tmp_path, devices=ONE)
    text = caplog.text
    assert "checkpoint at step 6 is corrupt (checksum mismatch" in text
    assert "checkpoint at step 4 is corrupt (" in text and "falling back to step 2" in text
    assert "checkpoint at step 8 is half-written" in text
    assert result.start_step == 2
    np.testing.assert_array_equal(losses(result), losses(ref)[2:])
    corrupt = tmp_path / "checkpoints_corrupt"
    assert (corrupt / "6").is_dir() and (corrupt / "4").is_dir()  # kept, not deleted
    assert "checksum mismatch" in (corrupt / "6.reason.txt").read_text()
    assert (corrupt / half.name).is_dir()
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [2, 4, 6, 8, 10]
    assert steps_in(tmp_path) == list(range(1, 11))


@pytest.mark.parametrize(("fields", "kwargs", "says"), [
    ({"model.d_model": 64}, {}, "model.d_model: checkpoint 32, config 64"),
    ({"optimizer.name": "sgd"}, {}, "optimizer.name: checkpoint adam, config sgd"),
    ({}, {"wrap_optimizer": poison(5)}, "state opt_state/"),
    ({"batch_size": 16}, {}, "batch_size: checkpoint 8, config 16"),
])
def test_incompatible_checkpoint_refused_workdir_untouched(tmp_path, fields, kwargs, says):
    cfg = tiny_lm(**{"mesh.data": 1, "checkpoint_every": 2})
    train(cfg, tmp_path, devices=ONE, stop_after=2)
    before = snapshot(tmp_path)
    changed = tiny_lm(**{"mesh.data": 1, "checkpoint_every": 2})
    if "optimizer.name" in fields:
        from optaxlab.train.config import switch_optimizer

        changed.optimizer = switch_optimizer(changed.optimizer, "sgd")
    else:
        for k, v in fields.items():
            node = changed
            *parents, leaf = k.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = v
    with pytest.raises(IncompatibleCheckpointError) as info:
        train(changed, tmp_path, devices=ONE, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and says in msg, msg
    assert "new --workdir" in msg and "--restart" in msg
    assert snapshot(tmp_path) == before  # byte-identical: no lock, status or quarantine left


def test_restart_moves_the_old_run_aside(tmp_path):
    cfg = tiny_lm(**{"mesh.data": 1, "checkpoint_every": 2})
    train(cfg, tmp_path, devices=ONE, stop_after=2)
    before = snapshot(tmp_path)
    changed = tiny_lm(**{"mesh.data": 1, "checkpoint_every": 2, "seed": 1})  # other data order
    with pytest.raises(IncompatibleCheckpointError, match="seed: checkpoint 0, config 1"):
        train(changed, tmp_path, devices=ONE)
    result = train(changed, tmp_path, devices=ONE, restart=True, stop_after=4)
    assert result.start_step == 0 and steps_in(tmp_path) == [1, 2, 3, 4]
    (old,) = (tmp_path / "previous_runs").iterdir()
    assert snapshot(old) == before  # everything of the old run, unchanged
    assert tb_steps(tmp_path) == [1, 2, 3, 4]


@pytest.mark.parametrize("how", ["vanished_mount", "permission"])
def test_unreadable_checkpoint_is_an_io_failure_and_nothing_moves(tmp_path, how):
    cfg = tiny_lm(**{"mesh.data": 1, "checkpoint_every": 2})
    train(cfg, tmp_path, devices=ONE, stop_after=4)
    ckpts = tmp_path / "checkpoints"
    if how == "vanished_mount":
        # checkpoints/4/state lived on a mount that is gone: the link points nowhere
        shutil.move(ckpts / "4" / "state", tmp_path.parent / f"{tmp_path.name}_state_elsewhere")
        os.symlink("/mnt/optaxlab-test-vanished/4/state", ckpts / "4" / "state")
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads files whatever their mode; vanished_mount covers (c) here")
        for f in (ckpts / "4" / "state" / "d").iterdir():
            f.chmod(0)
    before = snapshot(tmp_path) if how == "vanished_mount" else None
    with pytest.raises(IOFailure, match=r"cannot read the checkpoint .*checkpoints/4") as info:
        train(cfg, tmp_path, devices=ONE)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "checkpoints_corrupt").exists()  # not mistaken for corruption
    assert sorted(p.name for p in ckpts.iterdir()) == ["2", "4"]
    if before is not None:
        assert snapshot(tmp_path) == before


def test_nan_halts_naming_step_and_parameter_never_saved_then_skip(tmp_path):
    """NaN gradients into the optimizer at step 5 (its moments and the update turn NaN)."""
    # no global-norm clip: it would spread the NaN to every leaf's update
    cfg = tiny_lm(**{"mesh.data": 1, "checkpoint_every": 2, "keep_checkpoints": 10,
                     "optimizer.max_norm": None})
    with pytest.raises(NonFiniteError,
                       match=r"non-finite update at step 5 .*blocks/0/mlp/down/kernel.*step 4"):
        train(cfg, tmp_path, devices=ONE, wrap_optimizer=poison(5))
    status = workdir_lib.read_status(tmp_path)
    assert (status["status"], status["exit_code"], status["diverged_step"], status["step"]) == \
        ("diverged", 3, 5, 4)
    mngr = ocp.CheckpointManager(tmp_path / "checkpoints")
    assert mngr.all_steps() == [2, 4]
    mngr.close()
    assert steps_in(tmp_path) == [1, 2, 3, 4]
    # nan_policy='skip' (host side: the same compiled step) resumes from the intact checkpoint.
    # A skipped step keeps the whole optimizer state, the poison's counter too, so every later
    # step is poisoned and skipped: the state stays exactly the step-4 one, finite.
    cfg.nan_policy = "skip"
    result = train(cfg, tmp_path, devices=ONE, wrap_optimizer=poison(5))
    assert result.start_step == 4 and int(result.state.step) == 10
    assert int(result.state.skipped) == 6
    mngr = ckpt_lib.manager(tmp_path / "checkpoints", keep=3)
    restored = mngr.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    mngr.close()
    for a, b in zip(jax.tree.leaves((restored["params"], restored["opt_state"])),
                    jax.tree.leaves((result.state.params, result.state.opt_state)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.isfinite(np.asarray(b)).all()
    records = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 11))
    assert records[-1]["skipped_steps"] == 6
    assert records[-1]["loss"] is not None  # the loss was finite; the update was not


def test_tensorboard_and_metrics_files(reference):
    workdir, _ = reference
    records = metrics_lib.read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 11))
    for r in records:
        assert {"step", "loss", "lr", "grad_norm", "update_norm", "skipped_steps"} <= set(r)
    assert "tokens_per_sec" in records[-1]
    acc = EventAccumulator(str(workdir / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/update_norm",
                "train/tokens_per_sec"):
        assert tag in tags
    tb_loss = [e.value for e in acc.Scalars("train/loss")]
    np.testing.assert_allclose(tb_loss, [r["loss"] for r in records], rtol=1e-6)
    lrs = [r["lr"] for r in records]
    assert lrs[-1] < lrs[0]  # cosine decay
