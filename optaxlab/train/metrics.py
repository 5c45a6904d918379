"""Metric sinks: WORKDIR/metrics.jsonl (one JSON object per logged step) and TensorBoard.

TensorBoard events are written by `optaxlab.monitor.events.EventWriter` (no TensorFlow, no
background thread) to WORKDIR/tensorboard. A run that starts at step k (k = 0 for a fresh start)
begins its event file with a marker that makes TensorBoard drop the events earlier runs wrote
after step k, so every step shows once. metrics.jsonl keeps the records with step <= k; the
later ones (written after the checkpoint the run resumes from, or by a run that never got to a
checkpoint) are not deleted but moved to WORKDIR/metrics.superseded.jsonl.

Workdirs on object stores (gs://, s3://, ... through `etils.epath`): objects cannot be
appended to, so metrics.jsonl is rewritten whole at each flush (every `flush_secs`, at
checkpoints and at the end), and event files are written to a local staging folder and copied
up at each flush (a new file every `roll_bytes`, so a copy is never large). Local workdirs
append and flush every record (a crash loses at most the line being written).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath

from optaxlab.monitor import events
from optaxlab.train.workdir import is_local

log = logging.getLogger("optaxlab.train")

METRICS = "metrics.jsonl"
SUPERSEDED = "metrics.superseded.jsonl"


def _clean(value: Any):
    """JSON-safe scalar: numpy -> python, non-finite floats -> None."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_jsonl(path) -> list[dict]:
    """The parseable records of a metrics.jsonl file (a torn last line is ignored)."""
    path = epath.Path(path)
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _step(line: str) -> int | None:
    try:
        record = json.loads(line)
        return int(record.get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None


def supersede(path, last_step: int) -> list[str]:
    """Keep only the records of metrics.jsonl with step <= last_step; move the others (and
    torn lines) to metrics.superseded.jsonl next to it. Returns the kept lines."""
    path = epath.Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    keep, drop = [], []
    for line in lines:
        step = _step(line)
        (keep if step is not None and step <= last_step else drop).append(line)
    if drop:
        other = path.parent / SUPERSEDED
        old = other.read_text() if other.exists() else ""
        other.write_text(old + "".join(line + "\n" for line in drop))
        tmp = path.parent / f".{path.name}.tmp"
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(path)
        steps = [s for s in map(_step, drop) if s is not None]
        log.info("metrics.jsonl: moved %d record(s)%s after step %d to %s", len(drop),
                 f" (steps {min(steps)}-{max(steps)})" if steps else "", last_step, other)
    return keep


class Writer:
    """Appends records to metrics.jsonl and scalars to TensorBoard (a no-op when disabled).

    `local`: None decides from the path; False forces the object-store way (rewrite metrics,
    stage event files) on any path.
    """

    def __init__(self, workdir, *, resume_step: int = 0, enabled: bool = True,
                 local: bool | None = None, flush_secs: float = 60.0,
                 roll_bytes: int = 64 << 20):
        self.enabled = enabled
        self.tb = None
        self._file = None
        self._lines: list[str] | None = None
        self._stage: Path | None = None
        if not enabled:
            return
        workdir = epath.Path(workdir)
        self.local = is_local(workdir) if local is None else local
        self.path = workdir / METRICS
        self.flush_secs, self.roll_bytes = flush_secs, roll_bytes
        self._purge = resume_step + 1
        kept = supersede(self.path, resume_step)
        self._tb_dir = workdir / "tensorboard"
        if self.local:
            self._file = self.path.open("a")
            self.tb = events.EventWriter(Path(os.fspath(self._tb_dir)), purge_step=self._purge)
        else:
            self._lines = kept
            self._stage = Path(tempfile.mkdtemp(prefix="optaxlab_tensorboard_"))
            # Empty stand-ins for the event files already there, so that ours are named after
            # them (TensorBoard reads a folder's files in name order); never copied up.
            self._uploaded: dict[str, int] = {}
            if self._tb_dir.exists():
                for f in self._tb_dir.iterdir():
                    (self._stage / f.name).touch()
                    self._uploaded[f.name] = -1
            self.tb = events.EventWriter(self._stage, purge_step=self._purge)
        self._last_flush = time.monotonic()

    def scalars(self, step: int, values: dict[str, Any], prefix: str) -> None:
        """TensorBoard scalars `prefix/name`."""
        if self.tb is None:
            return
        out = {}
        for k, v in values.items():
            v = _clean(v)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{prefix}/{k}"] = v
        self.tb.add_scalars(out, step)  # one event

    def record(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl."""
        if not self.enabled:
            return
        try:  # plain python numbers, all finite (the common case)
            line = json.dumps(record, allow_nan=False)
        except (TypeError, ValueError):  # numpy scalars, NaN/inf -> null
            line = json.dumps({k: _clean(v) for k, v in record.items()})
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        else:
            self._lines.append(line)
            if time.monotonic() - self._last_flush > self.flush_secs:
                self.flush()

    def _upload(self, final: bool = False) -> None:
        """Copy new or grown staged event files up; roll to a new file past roll_bytes."""
        if self.tb is not None and not final and os.path.getsize(self.tb.path) > self.roll_bytes:
            self.tb.close()
            self.tb = events.EventWriter(self._stage)
        self._tb_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(self._stage.iterdir()):
            size = f.stat().st_size
            if self._uploaded.get(f.name) not in (size, -1):
                epath.Path(f).copy(self._tb_dir / f.name, overwrite=True)
                self._uploaded[f.name] = size

    def flush(self) -> None:
        if not self.enabled:
            return
        if self.tb is not None:
            self.tb.flush()
        if self._lines is not None:
            self.path.write_text("".join(line + "\n" for line in self._lines))
            self._upload()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.tb is not None:
            self.tb.close()
        if self._lines is not None:
            self.path.write_text("".join(line + "\n" for line in self._lines))
            self._upload(final=True)
            shutil.rmtree(self._stage, ignore_errors=True)
            self._lines = None
        self.tb = None
        self.enabled = False
