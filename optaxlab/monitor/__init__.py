"""optaxlab.monitor: on-device update/gradient statistics, histograms and the theory overlay.

Contract with the trainer (optaxlab.train):
  default_config()                -> ml_collections.ConfigDict, the `config.monitor` block.
  measure(grads, updates, params, opt_state, learning_rate, step, config) -> dict of small arrays
                                     (pure, jittable; called inside the train step).
  write(tb_writer, step, stats, config) -> dict[str, float]
                                     (host side; writes TensorBoard summaries, returns flat scalars
                                     that the trainer appends to metrics.jsonl).

The normalized update is Delta = (theta_t - theta_{t-1}) / lr_t = updates / lr_t (seed 000). Per
monitored layer (a parameter leaf named by its path, or a module with group='module'), `measure`
bins Delta and the gradient (g / rms(g) by default) on fixed symmetric bins with under/overflow
bins, and sums raw moments, the optimizer state's spread gamma = sqrt(v - m^2)/|m| (seed 002) and
the VI tracker's SNR; `write` turns them into scalars (`overlay.summarize`: variances, the total
variation distance to the theory law f_{m_eff(t)} with m_eff(t) the effective sample size of b2,
skew/kurtosis/bimodality/tail-mass diagnostics) and writes TensorBoard histograms, scalars and
"histogram vs theory" images.

`measure` returns a few stacked arrays ('stats' [L, len(LAYER_FIELDS)] of raw sums,
'delta_hist'/'grad_hist' [L, bins + 2] counts, 'step', 'learning_rate', 'layout'); the layer
names are static and are looked up on the host from 'layout' (`layer_names`, `layer_row`).

Typical use outside the trainer (the trainer does exactly this):

    tb = monitor.EventWriter(logdir)  # one event file per run (or any tensorboardX-like writer)
    for t in range(1, steps + 1):
        ...  # inside the jitted step: stats = monitor.measure(g, u, params, opt_state, lr, t, cfg)
        scalars = monitor.write(tb, t, jax.device_get(stats), cfg)
    tb.close()

With `every = 0` the trainer never calls `measure`, so the compiled step has no monitor code.
TensorBoard tags and the meaning of every scalar: `optaxlab.monitor.overlay`.
"""

from optaxlab.monitor.config import Settings, default_config, settings
from optaxlab.monitor.events import EventWriter
from optaxlab.monitor.overlay import summarize, theory_at, tv_distance
from optaxlab.monitor.stats import (
    LAYER_FIELDS,
    find_moments,
    layer_groups,
    layer_names,
    layer_row,
    measure,
)
from optaxlab.monitor.writer import IMAGE_TAG, write

__all__ = [
    "EventWriter",
    "IMAGE_TAG",
    "LAYER_FIELDS",
    "Settings",
    "default_config",
    "find_moments",
    "layer_groups",
    "layer_names",
    "layer_row",
    "measure",
    "settings",
    "summarize",
    "theory_at",
    "tv_distance",
    "write",
]
