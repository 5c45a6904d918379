"""Shared pieces of the sweep tests: a few-step lm_tiny, the environment of sweep subprocesses
(one CPU device each, one JAX compilation cache for the whole test session of this worker), and
a helper that runs `python -m optaxlab.sweep`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A few-step lm_tiny: seconds per point, most of it JAX import and compiles.
TINY = {"steps": 60, "batch_size": 8, "seq_len": 32, "model.max_len": 32, "model.d_model": 32,
        "model.n_layers": 1, "eval_every": 60, "eval_batches": 2, "checkpoint_every": 10,
        "keep_checkpoints": 2, "log_every": 1, "data.num_threads": 0, "monitor.every": 0}


@pytest.fixture(scope="session")
def sweep_env(tmp_path_factory):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # one device: quick compiles
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("sweep_jax_cache"))
    return env


@pytest.fixture
def write_sweep(tmp_path):
    """write_sweep(body) -> path of a sweep file whose get_sweep() returns `body` (an expression
    that may use TINY, sweep, product, zipped, log_grid)."""

    def write(body: str, name: str = "tiny_sweep.py") -> Path:
        path = tmp_path / name
        path.write_text(
            "from optaxlab.sweep import log_grid, product, sweep, zipped\n\n"
            f"TINY = {TINY!r}\n"
            f"CONFIG = {str(ROOT / 'optaxlab' / 'configs' / 'lm_tiny.py')!r}\n\n\n"
            f"def get_sweep():\n    return {body}\n")
        return path

    return write


@pytest.fixture(scope="session")
def tiny():
    return dict(TINY)


@pytest.fixture
def sweep_cli(sweep_env):
    """sweep_cli(*args, module="optaxlab.sweep") runs `python -m module args` in the repo."""

    def run(*args, module="optaxlab.sweep", timeout=600, env=None):
        return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                              env=env or sweep_env, capture_output=True, text=True,
                              timeout=timeout)

    return run
