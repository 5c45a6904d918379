"""The training loop end to end on a tiny LM: sharding equivalence, exact resume, checkpoint
fallback, NaN policies, metrics.jsonl and TensorBoard output."""

import importlib.util
import json
import logging
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from optaxlab.train import NonFiniteError, train
from optaxlab.train import checkpoint as ckpt_lib
from optaxlab.train import metrics as metrics_lib

ROOT = Path(__file__).resolve().parents[2]


def load_config(name):
    spec = importlib.util.spec_from_file_location(f"config_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def tiny_lm(**fields):
    c = load_config("lm_tiny")
    c.steps = 10
    c.batch_size = 8
    c.seq_len = 32
    c.model.d_model = 32
    c.model.n_layers = 1
    c.model.n_heads = 4
    c.model.max_len = 32
    c.log_every = 1
    c.eval_every = 0
    c.checkpoint_every = 5
    c.keep_checkpoints = 3
    c.monitor.every = 0
    c.progress_bar = False
    c.data.num_threads = 0
    for k, v in fields.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c


def losses(result):
    return np.array([r["loss"] for r in result.records])


def steps_in(workdir):
    return [r["step"] for r in metrics_lib.read_jsonl(Path(workdir) / "metrics.jsonl")]


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Share compiled steps between the runs of this module (identical programs compile once)."""
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    yield
    jax.config.update("jax_compilation_cache_dir", previous)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 10-step run on one device."""
    workdir = tmp_path_factory.mktemp("reference")
    result = train(tiny_lm(**{"mesh.data": 1}), workdir, devices=jax.devices()[:1])
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


def test_exact_resume_and_checkpoint_round_trip(reference, tmp_path):
    ref_dir, ref = reference
    first = train(tiny_lm(**{"mesh.data": 1}), tmp_path, devices=jax.devices()[:1], stop_after=4)
    assert [r["step"] for r in first.records] == [1, 2, 3, 4]
    assert (tmp_path / "checkpoints" / "4").is_dir()
    second = train(tiny_lm(**{"mesh.data": 1}), tmp_path, devices=jax.devices()[:1])
    assert second.start_step == 4
    np.testing.assert_array_equal(np.concatenate([losses(first), losses(second)]), losses(ref))
    assert steps_in(tmp_path) == list(range(1, 11))
    # Orbax round trip: the final checkpoint holds exactly the final state.
    mngr = ckpt_lib.manager(tmp_path / "checkpoints", keep=3)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            second.state)
    step, restored, _ = ckpt_lib.restore_latest(mngr, abstract, lambda: _Iter())
    mngr.close()
    assert step == 10
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(second.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class _Iter:
    """Stand-in data iterator for a restore-only test."""

    def set_state(self, state):
        self.state = state

    def start_prefetch(self):
        pass


def test_resume_rewrites_metrics_past_the_restored_step(reference, tmp_path):
    cfg = tiny_lm(**{"mesh.data": 1})
    train(cfg, tmp_path, devices=jax.devices()[:1], stop_after=5)
    # A crash after step 5's checkpoint but with records of steps 6-7 (and a torn line) written:
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 6, "loss": 1.0}) + "\n" + json.dumps({"step": 7}) + "\n")
        f.write('{"step": 8, "lo')
    result = train(cfg, tmp_path, devices=jax.devices()[:1])
    assert result.start_step == 5
    assert steps_in(tmp_path) == list(range(1, 11))


def test_corrupt_latest_checkpoint_falls_back(reference, tmp_path, caplog):
    ref_dir, ref = reference
    cfg = tiny_lm(**{"mesh.data": 1, "checkpoint_every": 2, "keep_checkpoints": 5})
    train(cfg, tmp_path, devices=jax.devices()[:1], stop_after=6)
    ckpts = tmp_path / "checkpoints"
    for f in (ckpts / "6" / "state" / "d").iterdir():
        f.write_bytes(b"garbage")
    half = ckpts / "8.orbax-checkpoint-tmp-1234"
    half.mkdir()
    with caplog.at_level(logging.WARNING, logger="optaxlab.train"):
        result = train(cfg, tmp_path, devices=jax.devices()[:1])
    text = caplog.text
    assert "checkpoint at step 6 is unreadable" in text and "falling back to step 4" in text
    assert "checkpoint at step 8 is half-written" in text
    assert result.start_step == 4
    np.testing.assert_array_equal(losses(result), losses(ref)[4:])
    assert (tmp_path / "checkpoints_corrupt" / "6").is_dir()  # kept, not deleted
    assert (tmp_path / "checkpoints_corrupt" / half.name).is_dir()
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [2, 4, 6, 8, 10]
    assert steps_in(tmp_path) == list(range(1, 11))


def test_nan_halt_names_step_and_parameter_and_keeps_last_checkpoint(tmp_path):
    cfg = tiny_lm(**{"mesh.data": 1, "checkpoint_every": 2, "debug.nonfinite_at_step": 5,
                     "debug.nonfinite_param": "mlp.down"})
    with pytest.raises(NonFiniteError, match=r"step 5.*blocks\.0\.mlp\.down\.kernel"):
        train(cfg, tmp_path, devices=jax.devices()[:1])
    mngr = ocp.CheckpointManager(tmp_path / "checkpoints")
    assert mngr.all_steps() == [2, 4]
    mngr.close()
    records = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    # The intact checkpoint resumes (here with the hook off) and finishes the run.
    cfg.debug.nonfinite_at_step = 0
    result = train(cfg, tmp_path, devices=jax.devices()[:1])
    assert result.start_step == 4 and result.records[-1]["step"] == 10


def test_nan_skip_leaves_state_unchanged_and_counts(tmp_path):
    cfg = tiny_lm(**{"mesh.data": 1, "nan_policy": "skip", "debug.nonfinite_at_step": 5,
                     "debug.nonfinite_param": "mlp.down"})  # the same program as the halt test
    before = train(cfg, tmp_path, devices=jax.devices()[:1], stop_after=4).state
    before = jax.device_get(before)
    after = jax.device_get(train(cfg, tmp_path, devices=jax.devices()[:1], stop_after=5).state)
    assert int(after.step) == 5 and int(after.skipped) == 1
    for a, b in zip(jax.tree.leaves((before.params, before.opt_state)),
                    jax.tree.leaves((after.params, after.opt_state)), strict=True):
        np.testing.assert_array_equal(a, b)
    records = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
    assert records[-1]["step"] == 5 and records[-1]["skipped_steps"] == 1
    assert records[-1]["loss"] is not None  # the loss was finite; the gradient was not


def test_tensorboard_and_metrics_files(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir, _ = reference
    records = metrics_lib.read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 11))
    for r in records:
        assert {"step", "loss", "lr", "grad_norm", "update_norm"} <= set(r)
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
