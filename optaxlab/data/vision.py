"""Image-classification batches with Grain: scikit-learn's digits and local CIFAR-10.

- 'digits': the 1797 8x8 grayscale digits bundled with scikit-learn (no download). A fixed
  permutation (seed 0) holds out 360 images for 'val'; pixels are scaled to [0, 1].
- 'cifar10': the standard python-pickle batches (``data_batch_1`` .. ``data_batch_5`` and
  ``test_batch``, as extracted from ``cifar-10-python.tar.gz``) in ``PATH/cifar-10-batches-py/``
  or directly in ``PATH``; or a ``PATH/cifar10.npz`` with ``x_train``, ``y_train``, ``x_test``,
  ``y_test`` (uint8 NHWC images, integer labels). ``PATH`` is ``data.path`` (default
  ``CACHE_DIR/cifar10``). 'val' is the test set. Pixels are scaled to [0, 1] and standardized
  per channel with the usual CIFAR-10 mean and standard deviation. The pickle batches are read with
a restricted unpickler (`read_cifar_pickle`) that builds only what the official files hold
(dicts, lists, bytes, ints and uint8 numpy arrays): a crafted file is rejected before any of its
code runs.

Elements are ``{'image': float32[B, H, W, C], 'label': int32[B]}``, shuffled per epoch, with
the same sharding / repeat / resume semantics as the LM data (see ``optaxlab.data.lm``).
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import grain
import numpy as np

from optaxlab.data import corpus, lm

DIGITS_VAL_SIZE = 360
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], np.float32)
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"


class ArrayGather:
    """Maps a batch of example ids to ``{'image', 'label'}`` from in-memory arrays (only
    ``rows`` of the batch, if set)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, rows: np.ndarray | None = None):
        self.images, self.labels, self.rows = images, labels, rows

    def __call__(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64)
        if self.rows is not None:
            ids = ids[self.rows]
        return {"image": self.images[ids], "label": self.labels[ids]}


@functools.lru_cache(maxsize=2)
def load_digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images, labels), 'val': (...)} with images float32 [N, 8, 8, 1] in [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    images = (data.images.astype(np.float32) / 16.0)[..., None]
    labels = data.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(labels))
    val, train = perm[:DIGITS_VAL_SIZE], perm[DIGITS_VAL_SIZE:]
    return {"train": (images[train], labels[train]), "val": (images[val], labels[val])}


def _cifar_missing(root: Path) -> ValueError:
    return ValueError(
        f"CIFAR-10 not found: expected the python-pickle batches {list(CIFAR_TRAIN_FILES)} and "
        f"'{CIFAR_TEST_FILE}' in {str(root / 'cifar-10-batches-py')!r} (or in {str(root)!r}), or "
        f"{str(root / 'cifar10.npz')!r}. Download cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, extract it into that folder, or set "
        "data.path to the folder that holds it.")


# The only globals a CIFAR-10 batch refers to: numpy's array reconstruction (numpy 1 and 2
# module names; none of them runs code from the file) and, in protocol-2 pickles written by
# Python 3, bytes via _codecs.encode.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch "
                                         "never does")
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> dict:
    """A CIFAR-10 python batch as {str key: value}, through a restricted unpickler: only the
    globals in _CIFAR_GLOBALS can be loaded, so no code from the file runs. DataError if the
    file is not a plain CIFAR-10 batch."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise corpus.DataError(f"CIFAR-10 file {str(path)!r} is not a plain CIFAR-10 batch and "
                               f"was not loaded: {e}") from None
    if not isinstance(batch, dict):
        raise corpus.DataError(f"CIFAR-10 file {str(path)!r} holds a {type(batch).__name__}, "
                               "not a batch dict")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3072):
        raise corpus.DataError(f"CIFAR-10 file {str(path)!r}: 'data' must be a uint8 array "
                               "[N, 3072]")
    if not (isinstance(labels, list) and len(labels) == len(data)
            and all(isinstance(y, int) and 0 <= y < 10 for y in labels)):
        raise corpus.DataError(f"CIFAR-10 file {str(path)!r}: 'labels' must be {len(data)} "
                               "ints in [0, 10)")
    return batch


def _read_pickle_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = read_cifar_pickle(path)
    data = batch["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return data, np.asarray(batch["labels"], dtype=np.int32)


@functools.lru_cache(maxsize=2)
def load_cifar10(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images, labels), 'val': (...)}, images float32 [N, 32, 32, 3] standardized."""
    root = Path(path).expanduser()
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    npz = root / "cifar10.npz"
    for folder in (root / "cifar-10-batches-py", root):
        files = [folder / f for f in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE)]
        if all(f.is_file() for f in files):
            parts = [_read_pickle_batch(f) for f in files]
            raw["train"] = (np.concatenate([p[0] for p in parts[:-1]]),
                            np.concatenate([p[1] for p in parts[:-1]]))
            raw["val"] = parts[-1]
            break
    else:
        if not npz.is_file():
            raise _cifar_missing(root)
        with np.load(npz) as z:
            raw["train"] = (z["x_train"], z["y_train"].reshape(-1).astype(np.int32))
            raw["val"] = (z["x_test"], z["y_test"].reshape(-1).astype(np.int32))
    out = {}
    for split, (x, y) in raw.items():
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise ValueError(f"CIFAR-10 {split} images in {str(root)!r} have shape {x.shape}; "
                             "expected [N, 32, 32, 3]")
        out[split] = (((x.astype(np.float32) / 255.0) - CIFAR_MEAN) / CIFAR_STD, y)
    return out


def vision_arrays(cfg: dict[str, Any], split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, H, W, C], labels int32 [N]) of a split, for a resolved data config."""
    if split not in ("train", "val"):
        raise ValueError(f"split={split!r}; valid: ['train', 'val']")
    if cfg["name"] == "digits":
        return load_digits()[split]
    if cfg["name"] == "cifar10":
        base = cfg.get("path") or str(Path(cfg.get("cache_dir") or corpus.default_cache_dir())
                                      / "cifar10")
        return load_cifar10(str(base))[split]
    raise ValueError(f"data.name={cfg['name']!r} is not an image dataset; "
                     "valid: ['cifar10', 'digits']")


def vision_dataset(data_cfg: dict[str, Any], *, split: str, batch_size: int, seed: int,
                   shard_index: int = 0, shard_count: int = 1,
                   num_epochs: int | None = None, drop_remainder: bool = True,
                   rows: np.ndarray | None = None) -> grain.IterDataset:
    """Batches ``{'image': float32[B, H, W, C], 'label': int32[B]}`` of this process's rows.

    ``num_epochs=None``: infinite for 'train', one pass for 'val'. With ``drop_remainder``
    (default) the last partial batch of a finite pass is dropped, so every batch has
    ``batch_size`` rows; pass False to evaluate on every example. ``rows``: only these rows of
    every batch (see ``optaxlab.data.lm``).
    """
    from optaxlab.data import resolve_data_cfg  # late: the package imports this module

    cfg = resolve_data_cfg(data_cfg)
    images, labels = vision_arrays(cfg, split)
    ds = lm.index_pipeline(len(labels), split=split, batch_size=batch_size, seed=seed,
                           shard_index=shard_index, shard_count=shard_count,
                           num_epochs=num_epochs, what="images",
                           drop_remainder=drop_remainder)
    return lm.to_iter(ds.map(ArrayGather(images, labels, rows)), cfg["num_threads"],
                      cfg["prefetch"])
