"""Two local CPU processes (jax.distributed over 127.0.0.1) train like one process, each reading
only its own rows of the global batch; SIGTERM to one of them stops both at the same step with a
complete checkpoint, and the relaunch resumes the uninterrupted trajectory."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from optaxlab import configs
from optaxlab.train import train

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = {"steps": 6, "batch_size": 8, "seq_len": 32, "model.max_len": 32, "model.d_model": 32,
             "model.n_layers": 1, "eval_every": 6, "eval_batches": 2, "checkpoint_every": 3,
             "log_every": 1, "progress_bar": False, "data.num_threads": 0, "monitor.every": 0}


def load_config(name, overrides):
    config = configs.get_config(name)
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    config.mesh.data = 1
    return config


def two_processes(workdir, logs, overrides):
    args = [f"--config.{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in overrides.items()]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(LOG_DIR=str(logs), PYTHON=sys.executable)
    return subprocess.Popen(
        [str(ROOT / "tpu_scripts" / "local_two_process.sh"), "--config", "lm_tiny",
         "--workdir", str(workdir), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(workdir):
    return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one_and_read_only_their_rows(tmp_path):
    proc = two_processes(tmp_path / "two", tmp_path / "logs", OVERRIDES)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    two = records(tmp_path / "two")
    state_dir = tmp_path / "two" / "checkpoints" / "6" / "state"
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= {p.name for p in state_dir.iterdir()}
    for i, rows in ((0, "0-3"), (1, "4-7")):  # each process reads only its half of each batch
        log = (tmp_path / "logs" / f"optaxlab_process_{i}.log").read_text()
        assert f"process {i} reads rows {rows} of each global batch of 8" in log

    one = train(load_config("lm_tiny", OVERRIDES), tmp_path / "one",
                devices=jax.devices()[:1]).records
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, 7))
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
    np.testing.assert_allclose(two[-1]["eval_loss"], one[-1]["eval_loss"], rtol=1e-5)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    overrides = {**OVERRIDES, "steps": 200, "eval_every": 0, "checkpoint_every": 1000}
    workdir, logs = tmp_path / "two", tmp_path / "logs"
    proc = two_processes(workdir, logs, overrides)
    try:
        start = time.monotonic()
        while True:  # wait for a step (process 0 writes metrics.jsonl)
            lines = (workdir / "metrics.jsonl").read_text().splitlines() \
                if (workdir / "metrics.jsonl").exists() else []
            if lines and json.loads(lines[-1])["step"] >= 3:
                break
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() - start < 600
            time.sleep(0.05)
        pid = int((logs / "optaxlab_process_1.pid").read_text())
        os.kill(pid, signal.SIGTERM)  # a preemption notice to one host only
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    stops = []
    for i in (0, 1):
        last = (logs / f"optaxlab_process_{i}.log").read_text().strip().splitlines()[-1]
        m = re.fullmatch(r"preempted at step (\d+); checkpoint saved; rerun the same command "
                         "to resume", last)
        assert m, last
        stops.append(int(m.group(1)))
    assert stops[0] == stops[1] and 3 <= stops[0] < 200  # both agreed on the step
    stop = stops[0]
    state_dir = workdir / "checkpoints" / str(stop) / "state"
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= {p.name for p in state_dir.iterdir()}
    st = json.loads((workdir / "status.json").read_text())
    assert (st["status"], st["step"], st["exit_code"]) == ("preempted", stop, 0)

    rerun = two_processes(workdir, logs, overrides)  # the relaunch: the same command
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err[-3000:]
    two = records(workdir)
    assert [r["step"] for r in two] == list(range(1, 201))
    one = train(load_config("lm_tiny", overrides), tmp_path / "one",
                devices=jax.devices()[:1]).records
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
