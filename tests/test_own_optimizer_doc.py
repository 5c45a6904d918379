"""docs/own_optimizer.md runs as written: its blocks, in order, in a temporary folder outside the
repository (```python file=NAME blocks are written to NAME, ```bash blocks are run)."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own_optimizer.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str, str]]:
    return [(lang, info.strip(), body) for lang, info, body in BLOCK.findall(DOC.read_text())]


def test_doc_blocks_are_files_or_commands():
    kinds = [(lang, info) for lang, info, _ in blocks()]
    assert ("python", "file=my_opt.py") in kinds and ("python", "file=my_sweep.py") in kinds
    assert all(lang == "bash" or info.startswith("file=") for lang, info in kinds)


@pytest.mark.slow
def test_doc_runs_as_written_outside_the_repository(tmp_path):
    assert not str(tmp_path).startswith(str(ROOT))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)  # the installed package, as for a user (no clone paths)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    env["JAX_PLATFORMS"] = "cpu"
    outputs = []
    for _lang, info, body in blocks():
        if info.startswith("file="):
            (tmp_path / info[len("file="):]).write_text(body)
            continue
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"{body}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout + proc.stderr)
    text = "\n".join(outputs)
    # training: the reference is recorded absolute; the run resumed and finished
    cfg = json.loads((tmp_path / "runs/mine/config.json").read_text())
    assert cfg["optimizer"]["name"] == f"{tmp_path / 'my_opt.py'}:my_rms"
    assert "max_norm = None (the config file has 1.0)" in text
    steps = [json.loads(x)["step"] for x in
             (tmp_path / "runs/mine/metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6 and 3 in steps
    assert "theory_tv" in (tmp_path / "runs/mine/metrics.jsonl").read_text()
    assert (tmp_path / "runs/mine/report/index.html").exists()
    # sweep: resolved hparams printed, differences listed, the untraceable factory solo
    assert "hparams: " in text and "signum points run max_norm = None; the base config has 1.0" \
        in text
    assert re.search(r"solo .*soft_sign_if.*cannot take hparam 'beta' traced", text), text[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "sweeps/mine/results.csv")))
    assert len(rows) == 8 and all(r["status"] == "finished" for r in rows), rows
    assert {r["hp.b2"] for r in rows if r["hp.name"] == "adam"} == {"0.95"}  # the file's adam
    assert {r["hp.beta"] for r in rows if r["hp.name"].endswith(":soft_sign")} == {"0.9"}
    summary = (tmp_path / "sweeps/mine/summary.md").read_text()
    assert "Its optimizer hparams: " in summary
    # --no-vectorize: one trainer process per point, the same resolved hparams as the group
    solo = [r for r in csv.DictReader(open(tmp_path / "sweeps/mine_solo/results.csv"))
            if r["status"] != "pending"]  # the table lists the sweep's other points as pending
    assert len(solo) == 2 and all(r["status"] == "finished" for r in solo), solo
    assert {r["hp.name"] for r in solo} == {f"{tmp_path / 'my_opt.py'}:soft_sign"}  # absolute
    assert {r["hp.beta"] for r in solo} == {"0.9"}
    grouped = {r["hp.learning_rate"]: float(r["final_eval_loss"]) for r in rows
               if r["hp.name"].endswith(":soft_sign")}
    for r in solo:  # a group member and its solo run agree to float32 round-off
        gap = abs(float(r["final_eval_loss"]) - grouped[r["hp.learning_rate"]])
        assert gap < 1e-3, (r, grouped)
