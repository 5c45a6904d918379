"""Metric sinks: WORKDIR/metrics.jsonl (one JSON object per logged step) and TensorBoard.

TensorBoard events are written by `optaxlab.monitor.events.EventWriter` (no TensorFlow, no
background thread) to WORKDIR/tensorboard. On resume from step k, metrics.jsonl keeps only the
records with step <= k (rewritten atomically, so the file never has duplicates) and the new event
file starts with a marker that makes TensorBoard drop the earlier run's events after k.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from optaxlab.monitor import events

log = logging.getLogger("optaxlab.train")


def _clean(value: Any):
    """JSON-safe scalar: numpy -> python, non-finite floats -> None."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_jsonl(path: Path) -> list[dict]:
    """The parseable records of a metrics.jsonl file (a torn last line is ignored)."""
    records = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep only records with step <= last_step (atomic rewrite; no-op if nothing to drop)."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= last_step:
                keep.append(line)
        except (json.JSONDecodeError, AttributeError):
            continue
    if len(keep) == len(lines):
        return
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)
    log.info("metrics.jsonl: dropped %d record(s) after step %d (resuming)",
             len(lines) - len(keep), last_step)


class Writer:
    """Appends records to metrics.jsonl and scalars to TensorBoard (a no-op when disabled)."""

    def __init__(self, workdir: Path, *, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.tb = None
        self._file = None
        if not enabled:
            return
        workdir = Path(workdir)
        self.path = workdir / "metrics.jsonl"
        truncate_jsonl(self.path, resume_step)
        self.tb = events.EventWriter(workdir / "tensorboard",
                                     purge_step=resume_step + 1 if resume_step else None)
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()

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
        """One line of metrics.jsonl (flushed, so a crash loses at most this line)."""
        if self._file is None:
            return
        try:  # plain python numbers, all finite (the common case)
            line = json.dumps(record, allow_nan=False)
        except (TypeError, ValueError):  # numpy scalars, NaN/inf -> null
            line = json.dumps({k: _clean(v) for k, v in record.items()})
        self._file.write(line + "\n")
        self._file.flush()

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
