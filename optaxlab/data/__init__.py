"""Grain input pipelines: language-model token windows and small image datasets.

``data_cfg`` (a ``ConfigDict`` or dict) keys, all optional:

- ``name``: 'stdlib_text' (default; byte-level corpus built on first use, no download, from
  this Python's standard-library sources and pydoc topics, with a held-out val split),
  'memmap' (nanoGPT-style ``train.bin`` / ``val.bin`` in ``path``), 'digits' (scikit-learn's
  bundled 8x8 digits) or 'cifar10' (local python-pickle batches or npz under ``path``).
- ``path``: folder of the 'memmap' token files or of CIFAR-10.
- ``cache_dir``: where the stdlib corpus is built (default ``$OPTAXLAB_DATA`` or
  ``~/.cache/optaxlab``).
- ``dtype``: token dtype of 'memmap' files, 'uint8' | 'uint16' | 'uint32' (default: the
  ``dtype`` in ``path/meta.json`` if present, else 'uint16' as nanoGPT writes).
- ``num_threads``: background threads prefetching batches (default 1; 0 = synchronous).
- ``prefetch``: batches buffered ahead when ``num_threads > 0`` (default 4).

Entry points: :func:`lm_dataset` and :func:`vision_dataset`; both return a
``grain.IterDataset`` whose ``iter()`` is a checkpointable ``grain.DatasetIterator``
(``get_state()`` / ``set_state()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optaxlab.data.corpus import DataError, default_cache_dir, ensure_stdlib_corpus
from optaxlab.data.lm import lm_dataset
from optaxlab.data.vision import vision_dataset

__all__ = ["DEFAULTS", "NAMES", "DataError", "default_cache_dir", "ensure_stdlib_corpus",
           "lm_dataset", "resolve_data_cfg", "vision_dataset"]

NAMES = ("stdlib_text", "memmap", "digits", "cifar10")
DEFAULTS: dict[str, Any] = dict(name="stdlib_text", path=None, cache_dir=None, dtype=None,
                                num_threads=1, prefetch=4)


def resolve_data_cfg(data_cfg: Mapping[str, Any] | Any | None) -> dict[str, Any]:
    """The config block as a dict with defaults filled in; ValueError on unknown names/keys."""
    if data_cfg is None:
        cfg: dict[str, Any] = {}
    elif hasattr(data_cfg, "to_dict"):
        cfg = data_cfg.to_dict()
    else:
        cfg = dict(data_cfg)
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown data config key(s) {unknown}; valid: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None or k == "name"}}
    if cfg["name"] is None:
        cfg["name"] = DEFAULTS["name"]
    if cfg["name"] not in NAMES:
        raise ValueError(f"unknown data name {cfg['name']!r}; valid: {list(NAMES)}")
    if int(cfg["num_threads"]) < 0 or int(cfg["prefetch"]) < 0:
        raise ValueError(f"data.num_threads={cfg['num_threads']} and data.prefetch="
                         f"{cfg['prefetch']} must be >= 0")
    return cfg
