"""`python -m optaxlab.train` in real subprocesses: end to end (LM and CNN), exit codes and their
one-line errors, real signals (SIGTERM / SIGINT mid-run, then a rerun equal to the uninterrupted
losses), the workdir lock between two live processes, a full disk."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optaxlab import configs
from optaxlab.train import train

ROOT = Path(__file__).resolve().parents[2]
TINY_LM = ["--config.steps=4", "--config.batch_size=8", "--config.seq_len=32",
           "--config.model.max_len=32", "--config.model.d_model=32", "--config.model.n_layers=1",
           "--config.eval_every=4", "--config.eval_batches=2", "--config.checkpoint_every=2",
           "--config.log_every=1", "--config.progress_bar=false", "--config.data.num_threads=0"]
# A run long enough to be signalled mid-way (each step is a few ms): checkpoints only at the
# end or when stopped.
LONG = {"steps": 300, "batch_size": 8, "seq_len": 32, "model.max_len": 32, "model.d_model": 32,
        "model.n_layers": 1, "eval_every": 0, "checkpoint_every": 1000, "log_every": 1,
        "progress_bar": False, "data.num_threads": 0, "monitor.every": 0}


def _env(cache=None):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # one device: quick compiles
    env["JAX_PLATFORMS"] = "cpu"
    if cache is not None:  # runs of one test share compiled steps
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def command(*args):
    return [sys.executable, "-m", "optaxlab.train", *args]


def run_cli(*args, timeout=600, cache=None):
    return subprocess.run(command(*args), cwd=ROOT, env=_env(cache), capture_output=True,
                          text=True, timeout=timeout)


def flags(overrides: dict) -> list[str]:
    return [f"--config.{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in overrides.items()]


def records(workdir, name="metrics.jsonl"):
    return [json.loads(line) for line in (workdir / name).read_text().splitlines()]


def status(workdir):
    return json.loads((workdir / "status.json").read_text())


def load_config(name):
    return configs.get_config(name)


def test_cli_lm_with_optimizer_switch_and_monitor(tmp_path):
    workdir = tmp_path / "lm"
    proc = run_cli("--config", "lm_tiny", "--workdir", str(workdir), *TINY_LM,
                   "--config.optimizer.name=signum", "--config.optimizer.beta=0.8",
                   "--config.optimizer.learning_rate=1e-3", "--config.seed=1",
                   "--config.monitor.every=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "finished at step 4 of 4"
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
    # signum's registry default: nothing carries over from lm_tiny's Adam block (issue 20)
    assert cfg["optimizer"]["max_norm"] is None
    assert "max_norm = None (the config file has 1.0)" in proc.stderr
    assert "b2" not in cfg["optimizer"] and cfg["seed"] == 1
    assert status(workdir)["status"] == "finished" and status(workdir)["exit_code"] == 0
    assert not (workdir / ".lock").exists()


def test_cli_cnn_digits(tmp_path):
    workdir = tmp_path / "cnn"
    proc = run_cli("--config", "optaxlab/configs/cnn_digits.py", "--workdir", str(workdir),
                   "--config.steps=3", "--config.eval_every=3", "--config.log_every=1",
                   "--config.monitor.every=0", "--config.progress_bar=false",
                   "--config.checkpoint_every=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(workdir)
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert 0.0 <= recs[-1]["eval_accuracy"] <= 1.0 and "accuracy" in recs[-1]
    assert (workdir / "checkpoints" / "3").is_dir()


@pytest.mark.parametrize(("args", "expected"), [
    (["--config.optimizer.bogus=1"], r"^error: config\.optimizer: .*'bogus'.*'adam'.*b2"),
    (["--config.optimizer.name=signum", "--config.optimizer.b2=0.9"],
     r"^error: config\.optimizer: .*'b2'.*'signum'"),
    (["--config.optimizer.b2=1.5"], r"^error: config\.optimizer\.b2=1\.5\b"),  # not config.model
    (["--config.mesh.data=3"], r"^error: config\.mesh: data=3 fsdp=1 tensor=1 needs 3 devices"),
    (["--config.foo=1"], r"^error: config\.foo: unknown field; valid fields of config: .*steps"),
    (["--config.model.d_modle=3"],
     r"^error: config\.model\.d_modle: unknown field; valid fields of config\.model: .*d_model"),
    (["--config.steps=abc"], r"^error: flag --config\.steps=abc: invalid literal for int"),
    (["--bogus"], r"^error: Unknown command line flag 'bogus'"),
    ("missing", r"^error: --config optaxlab/configs/nope\.py: cannot load it "
                r"\(No such file or directory"),
])
def test_cli_bad_input_is_exit_2_with_one_line(tmp_path, args, expected):
    workdir = tmp_path / "bad"
    config = "optaxlab/configs/nope.py" if args == "missing" else "optaxlab/configs/lm_tiny.py"
    proc = run_cli("--config", config, "--workdir", str(workdir),
                   *([] if args == "missing" else args))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and re.match(expected, errors[0]), proc.stderr[-2000:]
    assert not workdir.exists()


def test_cli_verbose_adds_the_traceback(tmp_path):
    workdir = tmp_path / "bad"
    proc = run_cli("--config", "lm_tiny", "--workdir", str(workdir), "--verbose",
                   "--config.mesh.data=3")
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr and "ConfigError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: config.mesh: data=3")


def test_cli_token_ids_above_vocab_is_bad_data(tmp_path):
    data = tmp_path / "tokens"
    data.mkdir()
    ids = np.arange(2000, dtype=np.uint16) % 300  # ids up to 299, vocab 256
    ids.tofile(data / "train.bin")
    ids[:500].tofile(data / "val.bin")
    workdir = tmp_path / "run"
    proc = run_cli("--config", "lm_tiny", "--workdir", str(workdir), *TINY_LM,
                   "--config.data.name=memmap", f"--config.data.path={data}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"error: token id 299 >= model.vocab_size=256 in '{data / 'train.bin'}' "
                    "(largest id in the file): the data was tokenized with a larger vocabulary "
                    "(set --config.model.vocab_size) or data.dtype is wrong")
    assert not workdir.exists()


def test_cli_full_disk_is_exit_4_with_one_line(tmp_path):
    """checkpoints/ on a 200 KB tmpfs (in a private mount namespace of the trainer process)."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -m` (root or CAP_SYS_ADMIN) to mount a small tmpfs")
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    shell = (f"mount -t tmpfs -o size=200k tmpfs {workdir / 'checkpoints'} && exec "
             + " ".join(command("--config", "lm_tiny", "--workdir", str(workdir),
                                *TINY_LM, "--config.monitor.every=0")))
    proc = subprocess.run(["unshare", "-m", "sh", "-c", shell], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 3, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1
    assert re.match(r"^error: I/O failure: No space left on device: .*checkpoints/2", errors[0])
    assert status(workdir)["status"] == "failed" and status(workdir)["exit_code"] == 4
    assert not (workdir / ".lock").exists()


def _wait_for(predicate, proc, timeout=300.0):
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)


def _logged_step(workdir) -> int:
    try:
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.parametrize(("signum", "code", "word"), [
    (signal.SIGTERM, 0, "preempted"),
    pytest.param(signal.SIGINT, 130, "interrupted", marks=pytest.mark.slow),
])
def test_signal_mid_run_checkpoints_lock_refuses_second_and_rerun_matches(
        tmp_path, tmp_path_factory, signum, code, word):
    cache = tmp_path_factory.getbasetemp().parent / "optaxlab_cli_jax_cache"
    workdir = tmp_path / "run"
    cmd = command("--config", "lm_tiny", "--workdir", str(workdir), *flags(LONG))
    first = subprocess.Popen(cmd, cwd=ROOT, env=_env(cache), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _logged_step(workdir) >= 3, first)
        # A second process on the same workdir while the first lives (paused, so it cannot
        # finish meanwhile): refused at once, nothing of the first run touched.
        first.send_signal(signal.SIGSTOP)
        holder = json.loads((workdir / ".lock").read_text())
        second = run_cli("--config", "lm_tiny", "--workdir", str(workdir),
                         *flags(LONG), cache=cache)
        assert second.returncode == 5, second.stderr[-2000:]
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: workdir {workdir} is in use by pid {first.pid} on host {holder['host']} "
            f"(since {holder['start']}); wait for it to end or stop it. If that process is "
            f"gone (e.g. on another machine), delete {workdir / '.lock'}")
        first.send_signal(signal.SIGCONT)
        first.send_signal(signum)
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == code, err[-3000:]
    m = re.fullmatch(rf"{word} at step (\d+); checkpoint saved; rerun the same command to "
                     "resume", err.strip().splitlines()[-1])
    assert m, err[-2000:]
    stop = int(m.group(1))
    assert 3 <= stop < LONG["steps"]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(stop)]
    assert [r["step"] for r in records(workdir)] == list(range(1, stop + 1))
    st = status(workdir)
    assert (st["status"], st["step"], st["exit_code"]) == (word, stop, code)
    assert not (workdir / ".lock").exists()

    rerun = run_cli("--config", "lm_tiny", "--workdir", str(workdir), *flags(LONG),
                    cache=cache)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    got = records(workdir)
    assert [r["step"] for r in got] == list(range(1, LONG["steps"] + 1))
    acc = EventAccumulator(str(workdir / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, LONG["steps"] + 1))

    config = load_config("lm_tiny")  # the uninterrupted run, in this process
    for key, value in LONG.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    config.mesh.data = 1
    ref = train(config, tmp_path / "reference", devices=jax.devices()[:1]).records
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in ref], rtol=1e-5)


@pytest.mark.slow
def test_cli_nonfinite_halt_is_exit_3(tmp_path):
    workdir = tmp_path / "run"
    proc = run_cli("--config", "lm_tiny", "--workdir", str(workdir), *TINY_LM,
                   "--config.monitor.every=0", "--config.optimizer.name=sgd",
                   "--config.optimizer.learning_rate=1e30")
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert re.match(r"^error: non-finite .* at step \d+ \(first offending parameter: ",
                    proc.stderr.strip().splitlines()[-1])
    st = status(workdir)
    assert st["status"] == "diverged" and st["diverged_step"] == st["step"] + 1


@pytest.mark.slow
def test_second_sigint_aborts_at_once_without_a_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    cmd = command("--config", "lm_tiny", "--workdir", str(workdir),
                  *flags({**LONG, "steps": 3000, "checkpoint_every": 3}))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _logged_step(workdir) >= 10, proc)
        proc.send_signal(signal.SIGINT)
        for line in proc.stderr:  # the first one was handled: a graceful stop is under way
            if "SIGINT received" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == \
        "error: interrupted: a second SIGINT: aborting without a checkpoint"
    st = status(workdir)
    assert st["status"] == "interrupted" and st["exit_code"] == 130
    assert st["message"].startswith(f"aborted by a second SIGINT after step {st['step']}")
    last = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert last <= st["step"] and not (workdir / ".lock").exists()


def test_cli_none_sets_a_field_to_none(tmp_path):
    """--config.FIELD=None (a float field's parser cannot read it) turns e.g. clipping off, also
    after an optimizer switch; a misspelt field is still refused."""
    workdir = tmp_path / "noclip"
    proc = run_cli("--config", "lm_tiny", "--workdir", str(workdir), *TINY_LM,
                   "--config.optimizer.name=signum", "--config.optimizer.max_norm=None")
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = json.loads((workdir / "config.json").read_text())["optimizer"]
    assert saved["name"] == "signum" and saved["max_norm"] is None
    proc = run_cli("--config", "lm_tiny", "--workdir", str(tmp_path / "bad"),
                   *TINY_LM, "--config.optimizer.maxnorm=None")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: config.optimizer.maxnorm: unknown field; valid fields of config.optimizer:")
