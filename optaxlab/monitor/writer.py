"""Host side: write one step's monitor statistics to TensorBoard (no TensorFlow needed).

All scalars and histograms of a step go into one TensorBoard event with an
`optaxlab.monitor.EventWriter`; any other writer with tensorboardX's method names (`add_scalar`,
`add_histogram_raw`, `add_image`; e.g. tensorboardX or torch.utils.tensorboard) gets one call per
value instead. Tags:

  update_hist/<layer>, grad_hist/<layer>   histograms (bins + under/overflow buckets)
  <metric>/<layer>, monitor/<metric>, theory/<metric>   scalars, see `overlay.summarize`
  update_vs_theory                          image: per-layer histograms vs f_{m_eff(t)} and the
                                            pure-noise reference at the `image_steps`
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import numpy as np

from optaxlab.monitor import events, overlay, plots
from optaxlab.monitor.stats import FIELD
from optaxlab.monitor.watch import Stats

IMAGE_TAG = "update_vs_theory"
GRID_TAGS = ("monitor/bins", "monitor/delta_range", "monitor/grad_range")


class Histogram(NamedTuple):
    """One TensorBoard histogram (the fields of `HistogramProto`)."""

    tag: str
    min: float
    max: float
    num: float
    sum: float
    sum_squares: float
    bucket_limit: np.ndarray  # right limits of the buckets
    bucket: np.ndarray  # counts


@functools.lru_cache(maxsize=16)
def _limits(r: float, bins: int) -> np.ndarray:
    """Right limits of the bins + 2 buckets: -R (underflow), the bin edges, R + width (overflow)."""
    e = np.linspace(-r, r, bins + 1)
    return np.concatenate([e, [e[-1] + (e[-1] - e[-2])]])


@functools.lru_cache(maxsize=64)
def _tags(prefix: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}/{n}" for n in names)


def histograms(stats: Stats) -> list[Histogram]:
    """The per-layer update and gradient histograms of one step.

    Buckets: underflow (right limit -R), the bins, overflow (right limit R + width), with the
    empty buckets at both ends left out (TensorBoard drops them too and takes the outer edges of
    the first and last non-empty bucket from min/max); `bucket_position` puts them back on the
    grid. Halves the event size.
    """
    s = stats.settings
    if not s.histograms or not stats.names:
        return []
    v = np.asarray(stats.layers, np.float64)
    hist = np.asarray(stats.hist, np.float64)
    out = []
    for i, (prefix, r, p, q) in enumerate((("update_hist", s.delta_range, "d", "dn"),
                                           ("grad_hist", s.grad_range, "gn", "gn"))):
        limits = _limits(float(r), s.bins)
        counts = hist[:, i]
        nz = counts > 0
        first = np.where(nz.any(1), nz.argmax(1), 0)
        last = np.where(nz.any(1), counts.shape[1] - 1 - nz[:, ::-1].argmax(1), 0)
        num = counts.sum(1)
        cols = v[:, [FIELD[f"{p}_min"], FIELD[f"{p}_max"], FIELD[f"{q}_sum"], FIELD[f"{q}_sum2"]]]
        for tag, c, a, b, n, (lo, hi, total, total_sq) in zip(
            _tags(prefix, stats.names), counts, first.tolist(), last.tolist(), num.tolist(),
            cols.tolist(), strict=True,
        ):
            out.append(Histogram(tag, lo, hi, n, total, total_sq, limits[a : b + 1].tolist(),
                                 c[a : b + 1].tolist()))
    return out


def bucket_position(limits, r: float, bins: int) -> np.ndarray:
    """Index in the bins + 2 grid (0 underflow, bins + 1 overflow) of buckets given by their
    right limits, as written by `histograms`."""
    width = 2.0 * r / bins
    return np.rint((np.asarray(limits, np.float64) + r) / width).astype(np.int64)


def image(stats: Stats, scalars) -> np.ndarray:
    """uint8[H, W, 3]: the "histogram vs theory" figure of this step (first image_max_layers)."""
    s = stats.settings
    ref = overlay.references(stats)
    hists = dict(zip(stats.names, np.asarray(stats.hist)[:, 0], strict=True))
    tvs = {n: (scalars.get(f"theory_tv/{n}"), scalars.get(f"noise_tv/{n}")) for n in stats.names}
    fig = plots.layer_grid(hists, s.edges("delta"), scalars.get("theory/m_eff"),
                           int(np.asarray(stats.step)), tvs, s.image_max_layers, ref["noise"])
    return plots.to_rgb(fig)


def write(tb_writer, step: int, stats: Stats | None) -> dict[str, float]:
    """Writes one step's monitor statistics to TensorBoard; returns the flat scalars.

    Args:
      tb_writer: an `optaxlab.monitor.EventWriter` (one event per step; the image of an
        `image_steps` step is drawn on its background thread, written by its next `flush` or
        `close` at the latest), any writer with tensorboardX's
        `add_scalar`/`add_histogram_raw`/`add_image` (images drawn in the call), or None
        (nothing written, e.g. on processes other than 0).
      step: the step number the summaries are recorded at.
      stats: `latest(opt_state)` (device or host arrays), or None (nothing to write).

    Returns:
      {tag: float} of every finite scalar (see `overlay.summarize`), for metrics.jsonl; {} for
      None.

    References:
      The tags and what the theory distances mean: `optaxlab.monitor.overlay`.
    """
    if stats is None:
        return {}
    stats = jax.device_get(stats)
    s = stats.settings
    scalars = overlay.summarize(stats)
    if s.histograms:  # the histogram grid, so that readers can place the buckets
        scalars[GRID_TAGS[0]] = float(s.bins)
        scalars[GRID_TAGS[1]] = float(s.delta_range)
        scalars[GRID_TAGS[2]] = float(s.grad_range)
    if tb_writer is None:
        return scalars
    step = int(step)
    if isinstance(tb_writer, events.EventWriter):
        event = events.event(step)
        events.add_scalars(event.summary, scalars)
        for h in histograms(stats):
            events.add_histogram(event.summary, *h)
        tb_writer.write(event)
    else:
        for k, x in scalars.items():
            tb_writer.add_scalar(k, x, step)
        for h in histograms(stats):
            tb_writer.add_histogram_raw(h.tag, h.min, h.max, h.num, h.sum, h.sum_squares,
                                        list(h.bucket_limit), list(h.bucket), step)
    if s.histograms and step in s.image_steps and stats.names:
        draw = functools.partial(_add_image, tb_writer, stats, dict(scalars), step)
        if isinstance(tb_writer, events.EventWriter):
            tb_writer.submit(draw)  # in the background: ~1 s of matplotlib per figure
        else:
            draw()
    return scalars


def _add_image(tb_writer, stats: Stats, scalars, step: int) -> None:
    tb_writer.add_image(IMAGE_TAG, image(stats, scalars), step, dataformats="HWC")
