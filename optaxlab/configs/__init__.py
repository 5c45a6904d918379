"""The training configs that ship with optaxlab (ml_collections `get_config()` files).

Name one on the command line (`python -m optaxlab.train --config lm_tiny ...`), in a sweep file
(`sweep(config="lm_tiny", ...)`), or load it in Python (`optaxlab.configs.get_config("lm_tiny")`);
a config of one's own can start from one: `config = optaxlab.configs.get_config("lm_tiny")`,
then change fields.

  lm_tiny      2-layer, d_model 64 byte-level LM: seconds on a laptop CPU (the default of demos)
  lm_small     a larger CPU-scale LM
  lm_160m      the papers' 160M model (seq 2048); lm_410m: their 410M model
  mlp_digits   an MLP on sklearn's 8x8 digits; cnn_digits: a small CNN on them
"""

from __future__ import annotations

import importlib

import ml_collections

NAMES = ("lm_tiny", "lm_small", "lm_160m", "lm_410m", "mlp_digits", "cnn_digits")


def get_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """The shipped config `name` (one of NAMES), built by its `get_config(arg)`."""
    if name not in NAMES:
        raise ValueError(f"config {name!r}: no such shipped config; valid: {', '.join(NAMES)}")
    module = importlib.import_module(f"optaxlab.configs.{name}")
    return module.get_config(*([arg] if arg is not None else []))
