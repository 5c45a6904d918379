"""Read a run's monitor output back: histograms as numpy, scalars as arrays.

    hists = monitor.read_histograms("runs/x")            # {layer: {step: (counts, edges)}}
    grads = monitor.read_histograms("runs/x", "grad")
    scalars = monitor.read_scalars("runs/x")             # {tag: (steps, values)}

`counts` has bins + 2 entries (under- and overflow first and last) on `edges` (bins + 1 values,
the monitor's symmetric grid), exactly as `watch` counted them: the TensorBoard buckets are put
back on the grid the `monitor/bins` and `monitor/*_range` scalars record, so nothing depends on
how TensorBoard lays out its buckets. Events are read with TensorBoard's own loader.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

KINDS = {"update": "update_hist/", "grad": "grad_hist/"}


def accumulator(logdir: Path):
    """TensorBoard's EventAccumulator over `logdir`, every histogram and scalar kept."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(
        str(logdir),
        size_guidance={ea.HISTOGRAMS: 0, ea.SCALARS: 0, ea.IMAGES: 1, ea.TENSORS: 1},
    )
    acc.Reload()
    return acc


def load_histograms(acc, scalars, prefix: str = "update_hist/") -> dict[str, dict[int, tuple]]:
    """{layer: {step: (counts[bins + 2], edges[bins + 1])}} of the monitor's histograms.

    The buckets are put back on the grid given by the `monitor/bins` and `monitor/delta_range`
    (or `monitor/grad_range`) scalars that `monitor.write` logs with them.
    """
    from optaxlab.monitor.writer import bucket_position

    kind = "grad_range" if prefix.startswith("grad") else "delta_range"
    grid = {}
    for tag in ("monitor/bins", f"monitor/{kind}"):
        if tag in scalars:
            grid[tag] = dict(zip(scalars[tag][0].tolist(), scalars[tag][1].tolist(), strict=True))
    out: dict[str, dict[int, tuple]] = {}
    for tag in acc.Tags().get("histograms", []):
        if not tag.startswith(prefix):
            continue
        series = {}
        for e in acc.Histograms(tag):
            step = int(e.step)
            bins = grid.get("monitor/bins", {}).get(step)
            r = grid.get(f"monitor/{kind}", {}).get(step)
            if bins is None or r is None:
                continue  # not written by optaxlab.monitor
            bins = int(round(bins))
            h = e.histogram_value
            counts = np.zeros(bins + 2)
            counts[bucket_position(h.bucket_limit, r, bins)] = np.asarray(h.bucket, np.float64)
            series[step] = (counts, np.linspace(-r, r, bins + 1))
        if series:
            out[tag[len(prefix) :]] = series
    return out


def load_scalars(workdir: Path, acc=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps, values)} from metrics.jsonl (preferred) or the TensorBoard scalars."""
    series: dict[str, dict[int, float]] = {}
    path = workdir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            step = rec.get("step")
            if not isinstance(step, int):
                continue
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    series.setdefault(k, {})[step] = float(v)
    elif acc is not None:
        for tag in acc.Tags().get("scalars", []):
            series[tag] = {int(s.step): float(s.value) for s in acc.Scalars(tag)}
    out = {}
    for k, d in series.items():
        steps = np.array(sorted(d), np.int64)
        out[k] = (steps, np.array([d[s] for s in steps], np.float64))
    return out


def read_histograms(path, kind: str = "update") -> dict[str, dict[int, tuple]]:
    """{layer: {step: (counts, edges)}} of the monitor's `kind` ('update' or 'grad') histograms
    of a workdir (or of a TensorBoard log folder)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; valid: {', '.join(KINDS)}")
    path = Path(path)
    logdir = path / "tensorboard" if (path / "tensorboard").is_dir() else path
    if not logdir.is_dir():
        raise FileNotFoundError(f"{path}: no TensorBoard folder (WORKDIR/tensorboard) here")
    acc = accumulator(logdir)
    workdir = logdir.parent if logdir.name == "tensorboard" else logdir
    return load_histograms(acc, load_scalars(workdir, acc), prefix=KINDS[kind])


def read_scalars(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps, values)} of a workdir: metrics.jsonl, or its TensorBoard scalars."""
    path = Path(path)
    logdir = path / "tensorboard"
    return load_scalars(path, accumulator(logdir) if logdir.is_dir() else None)
