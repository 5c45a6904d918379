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


@functools.lru_cache(maxsize=16)
def _limits(edges_key: tuple[float, int]) -> list[float]:
    r, bins = edges_key
    e = np.linspace(-r, r, bins + 1)
    return np.concatenate([e, [e[-1] + (e[-1] - e[-2])]]).tolist()


def histogram_values(stats: Mapping[str, np.ndarray], config) -> list:
    """`Summary.Value`s of the per-layer update and gradient histograms.

    Buckets: underflow (right limit -R), the bins, overflow (right limit R + width); TensorBoard
    takes the outer edges of the first/last non-empty bucket from min/max.
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
        limits = _limits((float(r), s.bins))
        counts = np.asarray(stats[key])
        cols = v[:, [FIELD[f"{p}_min"], FIELD[f"{p}_max"], FIELD[f"{q}_sum"], FIELD[f"{q}_sum2"]]]
        template = HistogramProto(bucket_limit=limits)
        for name, c, (lo, hi, total, total_sq) in zip(
            layer_names(stats), counts.tolist(), cols.tolist(), strict=True
        ):
            h = HistogramProto()
            h.CopyFrom(template)  # the limits are the same every step: copy, don't rebuild
            h.bucket.extend(c)
            h.min, h.max, h.num, h.sum, h.sum_squares = lo, hi, float(sum(c)), total, total_sq
            out.append(Summary.Value(tag=f"{prefix}/{name}", histo=h))
    return out


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
    if tb_writer is None:
        return scalars
    from tensorboardX.proto.summary_pb2 import Summary

    values = [Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
    values += histogram_values(stats, s)
    file_writer = getattr(tb_writer, "_get_file_writer", None)
    if file_writer is not None:
        file_writer().add_summary(Summary(value=values), int(step))
    else:  # another writer with the public API only: one call per value
        for k, v in scalars.items():
            tb_writer.add_scalar(k, v, int(step))
        for hv in values[len(scalars) :]:
            h = hv.histo
            args = (h.min, h.max, h.num, h.sum, h.sum_squares, list(h.bucket_limit))
            tb_writer.add_histogram_raw(hv.tag, *args, list(h.bucket), int(step))
    if "delta_hist" in stats and int(step) in s.image_steps and layer_names(stats):
        tb_writer.add_image(IMAGE_TAG, image(stats, s, scalars), int(step), dataformats="HWC")
    return scalars
