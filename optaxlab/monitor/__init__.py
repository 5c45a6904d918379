"""optaxlab.monitor: on-device update/gradient statistics, histograms and the theory overlay.

Contract with the trainer (optaxlab.train):
  default_config()                -> ml_collections.ConfigDict, the `config.monitor` block.
  measure(grads, updates, params, opt_state, learning_rate, step, config) -> dict of small arrays
                                     (pure, jittable; called inside the train step).
  write(tb_writer, step, stats, config) -> dict[str, float]
                                     (host side; writes TensorBoard summaries, returns flat scalars
                                     that the trainer appends to metrics.jsonl).
"""

from optaxlab.monitor.config import default_config

__all__ = ["default_config"]
