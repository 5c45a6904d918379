"""optaxlab.monitor: per-layer update statistics inside any optax chain, written to TensorBoard
next to the theory.

    tx = monitor.watch(optax.adam(lr), learning_rate=lr, b1=0.9, b2=0.999)   # any optax tx
    ...                                                   # train as usual with tx
    monitor.write(writer, step, monitor.latest(opt_state))   # host: TensorBoard + scalars

- `watch(tx, config=None, *, learning_rate=None, **settings)`: the transformation; on every
  `every`-th update it bins the normalized update Delta = (theta_t - theta_{t-1}) / lr_t and the
  gradient of every layer and sums their moments, inside the update (`optaxlab.monitor.stats`).
- `latest(opt_state)`: the `Stats` of the last monitored update, found anywhere in a state.
- `attach(watched, inner_state, params, count)`: a `WatchState` for one update around a state
  of the watched transformation (the trainer checkpoints that state only, so monitor settings
  may change on resume); `vmap_axes(state)`: vmap axes that keep `every` a scalar branch.
- `write(tb_writer, step, stats)`: host side; TensorBoard histograms, scalars (`summarize`:
  variances, spread, SNR, shape diagnostics, the distances to the closed-form law f_{m_eff(t)}
  and to the pure-noise reference of `optaxlab.monitor.noise`) and "histogram vs theory" images;
  returns the scalars (the trainer appends them to metrics.jsonl).
- `EventWriter`: TensorBoard event files without TensorFlow; `read_histograms(workdir)`,
  `read_scalars(workdir)`: what was written, back as numpy (counts and edges per step).
- `default_config()` / `settings(...)`: the `config.monitor` block and its validation.

TensorBoard tags and the meaning of every scalar: `optaxlab.monitor.overlay`.
"""

from optaxlab.monitor.config import Settings, default_config, settings, theory_settings
from optaxlab.monitor.events import EventWriter
from optaxlab.monitor.noise import noise_reference
from optaxlab.monitor.overlay import references, summarize, theory_at, tv_distance
from optaxlab.monitor.read import read_histograms, read_scalars
from optaxlab.monitor.stats import LAYER_FIELDS, find_hyperparams, find_moments, layer_groups
from optaxlab.monitor.watch import Stats, WatchState, attach, latest, vmap_axes, watch
from optaxlab.monitor.writer import IMAGE_TAG, write

__all__ = [
    "IMAGE_TAG",
    "LAYER_FIELDS",
    "EventWriter",
    "Settings",
    "Stats",
    "WatchState",
    "attach",
    "default_config",
    "find_hyperparams",
    "find_moments",
    "latest",
    "layer_groups",
    "noise_reference",
    "read_histograms",
    "read_scalars",
    "references",
    "settings",
    "summarize",
    "theory_at",
    "theory_settings",
    "tv_distance",
    "vmap_axes",
    "watch",
    "write",
]
