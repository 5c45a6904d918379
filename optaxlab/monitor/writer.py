"""Host side: write one step's monitor statistics to TensorBoard (no TensorFlow needed).

All scalars and histograms of a step go into one TensorBoard event (one `Summary` with many
values), which costs far less than one event per value. Tags:

  update_hist/<layer>, grad_hist/<layer>   histograms (bins + under/overflow buckets)
  <metric>/<layer>, monitor/<metric>, theory/<metric>   scalars, see `overlay.summarize`
  update_vs_theory                          image: per-layer histograms vs f_{m_eff(t)} at
                                            `config.image_steps`
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from optaxlab.monitor import overlay, plots
from optaxlab.monitor.config import settings
from optaxlab.monitor.stats import FIELD

IMAGE_TAG = "update_vs_theory"


def _histo(tag: str, counts, edges, lo, hi, num, total, total_sq):
    from tensorboardX.proto.summary_pb2 import HistogramProto, Summary

    limits = np.concatenate([edges, [edges[-1] + (edges[-1] - edges[-2])]])
    h = HistogramProto(
        min=float(lo),
        max=float(hi),
        num=float(num),
        sum=float(total),
        sum_squares=float(total_sq),
        bucket_limit=limits.tolist(),
        bucket=np.asarray(counts, np.float64).tolist(),
    )
    return Summary.Value(tag=tag, histo=h)


def histogram_values(stats: Mapping[str, np.ndarray], config) -> list:
    """`Summary.Value`s of the per-layer update and gradient histograms.

    Buckets: underflow (right limit -R), the bins, overflow; TensorBoard takes the outer edges
    of the first/last non-empty bucket from min/max.
    """
    s = settings(config)
    out = []
    for layer in overlay.layers(stats):
        if f"delta_hist/{layer}" not in stats:
            continue
        v = np.asarray(stats[f"stats/{layer}"], np.float64)
        for kind, prefix, hist_key, p in (
            ("delta", "update_hist", "delta_hist", "d"),
            ("grad", "grad_hist", "grad_hist", "gn"),
        ):
            counts = np.asarray(stats[f"{hist_key}/{layer}"])
            lo, hi = v[FIELD[f"{p}_min"]], v[FIELD[f"{p}_max"]]
            q = "dn" if p == "d" else p
            total, total_sq = v[FIELD[f"{q}_sum"]], v[FIELD[f"{q}_sum2"]]
            out.append(
                _histo(
                    f"{prefix}/{layer}",
                    counts,
                    s.edges(kind),
                    lo,
                    hi,
                    counts.sum(),
                    total,
                    total_sq,
                )
            )
    return out


def image(stats: Mapping[str, np.ndarray], config, scalars: Mapping[str, float]) -> np.ndarray:
    """uint8[H, W, 3]: the "histogram vs theory" figure of this step (first image_max_layers)."""
    s = settings(config)
    step = int(np.asarray(stats["step"]))
    names = [n for n in overlay.layers(stats) if f"delta_hist/{n}" in stats]
    hists = {n: np.asarray(stats[f"delta_hist/{n}"]) for n in names}
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
    if s.histograms and int(step) in s.image_steps and overlay.layers(stats):
        tb_writer.add_image(IMAGE_TAG, image(stats, s, scalars), int(step), dataformats="HWC")
    return scalars
