"""Default `config.monitor` block shared by every training config."""

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Monitoring defaults: what is measured inside the train step and how often.

    Fields:
      every: log the monitor every N steps; 0 turns it off (the step then has no monitor code).
    """
    return ml_collections.ConfigDict(dict(every=1))
