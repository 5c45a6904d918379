"""`python -m optaxlab.train` end to end in a subprocess (LM and CNN) and its config errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY_LM = ["--config.steps=4", "--config.batch_size=8", "--config.seq_len=32",
           "--config.model.max_len=32", "--config.model.d_model=32", "--config.model.n_layers=1",
           "--config.eval_every=4", "--config.eval_batches=2", "--config.checkpoint_every=2",
           "--config.log_every=1", "--config.progress_bar=false", "--config.data.num_threads=0"]


def run_cli(*args, timeout=600):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # one device: quick compiles
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run([sys.executable, "-m", "optaxlab.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_cli_lm_with_optimizer_switch_and_monitor(tmp_path):
    workdir = tmp_path / "lm"
    proc = run_cli("--config", "configs/lm_tiny.py", "--workdir", str(workdir), *TINY_LM,
                   "--config.optimizer.name=signum", "--config.optimizer.beta=0.8",
                   "--config.optimizer.learning_rate=1e-3", "--config.seed=1",
                   "--config.monitor.every=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(workdir)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert all(isinstance(r["loss"], float) for r in recs)
    assert "eval_perplexity" in recs[-1]
    assert any(k.startswith("update_var/") for k in recs[1])  # monitor scalars at step 2
    assert not any(k.startswith("update_var/") for k in recs[0])  # plain step at step 1
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["optimizer"]["name"] == "signum" and cfg["optimizer"]["beta"] == 0.8
    assert "b2" not in cfg["optimizer"] and cfg["seed"] == 1


def test_cli_cnn_digits(tmp_path):
    workdir = tmp_path / "cnn"
    proc = run_cli("--config", "configs/cnn_digits.py", "--workdir", str(workdir),
                   "--config.steps=3", "--config.eval_every=3", "--config.log_every=1",
                   "--config.monitor.every=0", "--config.progress_bar=false",
                   "--config.checkpoint_every=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(workdir)
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert 0.0 <= recs[-1]["eval_accuracy"] <= 1.0 and "accuracy" in recs[-1]
    assert (workdir / "checkpoints" / "3").is_dir()


@pytest.mark.parametrize(("args", "expected"), [
    (["--config.optimizer.bogus=1"],
     "error: config.optimizer.bogus: optimizer 'adam' has no hparam 'bogus'; valid: "),
    (["--config.optimizer.name=signum", "--config.optimizer.b2=0.9"],
     "error: config.optimizer.b2: optimizer 'signum' has no hparam 'b2'; valid: "),
    (["--config.mesh.data=3"], "error: config.mesh: data=3 fsdp=1 tensor=1 needs 3 devices but 1"),
])
def test_cli_bad_config_one_line_error(tmp_path, args, expected):
    workdir = tmp_path / "bad"
    proc = run_cli("--config", "configs/lm_tiny.py", "--workdir", str(workdir), *args)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(expected), proc.stderr[-2000:]
    assert not workdir.exists()
