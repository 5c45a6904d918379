"""Every block marked runnable in README.md and docs/*.md runs as written.

A fenced block whose info string is ``python runnable`` or ``bash runnable`` is executed in a fresh
temporary folder that holds links to the repository's `sweeps/` and `experiments/` (configs are
named, e.g. `--config lm_tiny`: they ship in the package) and a `.venv/bin/python` that is
this interpreter, so the commands run exactly as a reader would
type them at the repository root, and nothing is written into the checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(python|bash) runnable\n(.*?)^```", re.S | re.M)


def runnable_blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every runnable block, the id naming the file and line."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for m in BLOCK.finditer(text):
            line = text[:m.start()].count("\n") + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", m.group(1), m.group(2)))
    return found


BLOCKS = runnable_blocks()


def test_the_readme_has_runnable_blocks():
    assert sum(b[0].startswith("README.md") for b in BLOCKS) >= 4


def _sandbox(tmp_path: Path) -> Path:
    for name in ("sweeps", "experiments"):
        (tmp_path / name).symlink_to(ROOT / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize("where,language,code", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_runnable_block(where, language, code, tmp_path):
    cwd = _sandbox(tmp_path)
    cmd = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail",
                                                                      "-c", code]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{where} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
