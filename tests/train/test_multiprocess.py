"""Two local CPU processes (jax.distributed over 127.0.0.1) train like one process."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from optaxlab.train import train

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = {"steps": 6, "batch_size": 8, "seq_len": 32, "model.max_len": 32, "model.d_model": 32,
             "model.n_layers": 1, "eval_every": 6, "eval_batches": 2, "checkpoint_every": 3,
             "log_every": 1, "progress_bar": False, "data.num_threads": 0, "monitor.every": 0}


def load_config(name):
    spec = importlib.util.spec_from_file_location(f"config_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    args = [f"--config.{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in OVERRIDES.items()]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(LOG_DIR=str(tmp_path / "logs"), PYTHON=sys.executable)
    proc = subprocess.run(
        [str(ROOT / "tpu_scripts" / "local_two_process.sh"), "--config", "configs/lm_tiny.py",
         "--workdir", str(tmp_path / "two"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "6" / "data").glob(
        "process_*")) == ["process_0-of-2.json", "process_1-of-2.json"]

    config = load_config("lm_tiny")
    for key, value in OVERRIDES.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    config.mesh.data = 1
    one = train(config, tmp_path / "one", devices=jax.devices()[:1]).records
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, 7))
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
    np.testing.assert_allclose(two[-1]["eval_loss"], one[-1]["eval_loss"], rtol=1e-5)
