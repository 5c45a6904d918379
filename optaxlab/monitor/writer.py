"""Host side: write one step's monitor statistics to TensorBoard (no TensorFlow needed).

All scalars and histograms of a step go into one TensorBoard event (one `Summary` with many
values), which costs far less than one event per value. Tags:

  update_hist/<layer>, grad_hist/<layer>   histograms (bins + under/overflow buckets)
  <metric>/<layer>, monitor/<metric>, theory/<metric>   scalars, see `overlay.summarize`
  update_vs_theory                          image: per-layer histograms vs f_{m_eff(t)} at
                                            `config.image_steps`
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from optaxlab.monitor import overlay, plots
from optaxlab.monitor.config import settings
from optaxlab.monitor.stats import FIELD, layer_names

IMAGE_TAG = "update_vs_theory"
GRID_TAGS = ("monitor/bins", "monitor/delta_range", "monitor/grad_range")


@functools.lru_cache(maxsize=16)
def _limits(r: float, bins: int) -> np.ndarray:
    """Right limits of the bins + 2 buckets: -R (underflow), the bin edges, R + width (overflow)."""
    e = np.linspace(-r, r, bins + 1)
    return np.concatenate([e, [e[-1] + (e[-1] - e[-2])]])


def histogram_values(stats: Mapping[str, np.ndarray], config) -> list:
    """`Summary.Value`s of the per-layer update and gradient histograms.

    Buckets: underflow (right limit -R), the bins, overflow (right limit R + width), with the
    empty buckets at both ends left out (TensorBoard drops them too and takes the outer edges of
    the first and last non-empty bucket from min/max); `bucket_position` puts them back on the
    grid. Halves the event size, and with it the (pure-Python, without the `crc32c` package)
    checksum cost of tensorboardX.
    """
    from tensorboardX.proto.summary_pb2 import HistogramProto, Summary

    s = settings(config)
    if "delta_hist" not in stats:
        return []
    v = np.asarray(stats["stats"], np.float64)
    out = []
    for prefix, key, r, p, q in (
        ("update_hist", "delta_hist", s.delta_range, "d", "dn"),
        ("grad_hist", "grad_hist", s.grad_range, "gn", "gn"),
    ):
        limits = _limits(float(r), s.bins)
        counts = np.asarray(stats[key])
        nz = counts > 0
        first = np.where(nz.any(1), nz.argmax(1), 0)
        last = np.where(nz.any(1), counts.shape[1] - 1 - nz[:, ::-1].argmax(1), 0)
        cols = v[:, [FIELD[f"{p}_min"], FIELD[f"{p}_max"], FIELD[f"{q}_sum"], FIELD[f"{q}_sum2"]]]
        for name, c, i, j, (lo, hi, total, total_sq) in zip(
            layer_names(stats), counts, first.tolist(), last.tolist(), cols.tolist(), strict=True
        ):
            h = HistogramProto(
                min=lo,
                max=hi,
                num=float(c.sum()),
                sum=total,
                sum_squares=total_sq,
                bucket_limit=limits[i : j + 1].tolist(),
                bucket=c[i : j + 1].tolist(),
            )
            out.append(Summary.Value(tag=f"{prefix}/{name}", histo=h))
    return out


def bucket_position(limits, r: float, bins: int) -> np.ndarray:
    """Index in the bins + 2 grid (0 underflow, bins + 1 overflow) of buckets given by their
    right limits, as written by `histogram_values`."""
    width = 2.0 * r / bins
    return np.rint((np.asarray(limits, np.float64) + r) / width).astype(np.int64)


def image(stats: Mapping[str, np.ndarray], config, scalars: Mapping[str, float]) -> np.ndarray:
    """uint8[H, W, 3]: the "histogram vs theory" figure of this step (first image_max_layers)."""
    s = settings(config)
    step = int(np.asarray(stats["step"]))
    names = layer_names(stats)
    hists = dict(zip(names, np.asarray(stats["delta_hist"]), strict=True))
    tvs = {n: scalars[f"theory_tv/{n}"] for n in names if f"theory_tv/{n}" in scalars}
    fig = plots.layer_grid(
        hists, s.edges("delta"), scalars.get("theory/m_eff"), step, tvs, s.image_max_layers
    )
    return plots.to_rgb(fig)


def write(tb_writer, step: int, stats: Mapping[str, np.ndarray], config) -> dict[str, float]:
    """Writes one step's monitor output to TensorBoard; returns the flat scalars.

    Args:
      tb_writer: a `tensorboardX.SummaryWriter` (or None: nothing written, e.g. process != 0).
      step: the step number the summaries are recorded at.
      stats: the host copy (numpy) of `measure`'s output for this step.
      config: the `config.monitor` block.

    Returns:
      {tag: float} of every finite scalar (see `overlay.summarize`), for metrics.jsonl.
    """
    s = settings(config)
    stats = {k: np.asarray(v) for k, v in stats.items()}
    scalars = overlay.summarize(stats, s)
    if "delta_hist" in stats:  # the histogram grid, so that readers can place the buckets
        scalars[GRID_TAGS[0]] = float(s.bins)
        scalars[GRID_TAGS[1]] = float(s.delta_range)
        scalars[GRID_TAGS[2]] = float(s.grad_range)
    if tb_writer is None:
        return scalars
    from tensorboardX.proto.summary_pb2 import Summary

    values = [Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
    values += histogram_values(stats, s)
    file_writer = getattr(tb_writer, "_get_file_writer", None)
    if file_writer is not None:
        file_writer().add_summary(Summary(value=values), int(step))
    else:  # another writer with the public API only: one call per value
        for v in values:
            if not v.HasField("histo"):
                tb_writer.add_scalar(v.tag, v.simple_value, int(step))
                continue
            h = v.histo
            args = (h.min, h.max, h.num, h.sum, h.sum_squares, list(h.bucket_limit))
            tb_writer.add_histogram_raw(v.tag, *args, list(h.bucket), int(step))
    if "delta_hist" in stats and int(step) in s.image_steps and layer_names(stats):
        tb_writer.add_image(IMAGE_TAG, image(stats, s, scalars), int(step), dataformats="HWC")
    return scalars
