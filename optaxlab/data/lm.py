"""Language-model batches: random-access windows over a token memmap, with Grain.

A token file of N tokens holds ``W = (N - 1) // seq_len`` non-overlapping windows of
``seq_len + 1`` tokens (window i starts at ``i * seq_len``; consecutive windows share one
token, so every token but the first is a target exactly once per epoch). The pipeline is::

    MapDataset.range(W)          window ids (truncated to a multiple of shard_count)
      [shard_index::shard_count] this process's windows
      .shuffle(seed)             a fresh permutation per epoch (grain folds the epoch in)
      .repeat(num_epochs)        None = forever
      .batch(batch_size, drop_remainder=True)
      .map(gather)               one fancy-indexed read of the memmap per batch
      .to_iter_dataset()

Each element is ``{'inputs': int32[B, T], 'targets': int32[B, T]}`` with ``targets`` the
inputs shifted by one. With ``rows`` (multi-host training), the window ids of each global
batch are drawn as above on every process, and each process reads only its ``rows`` of them,
so the batches do not depend on the number of processes and no process reads the others' rows.
With ``vocab_size``, a token id >= vocab_size is a ``DataError`` naming the file, the id and the
vocabulary: checked over the whole file when the dataset is made (files up to
``SCAN_BYTES``) and in every batch read. Iterators are grain ``DatasetIterator``s: ``get_state()`` /
``set_state()`` restore the exact position, so a resumed run sees the same batches.
Reading happens in this process (grain worker processes are not used; the per-batch work is
one memcpy). ``num_threads`` (a data-config key, default 1) prefetches batches on background
threads; 0 reads synchronously.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import grain
import numpy as np

from optaxlab.data import corpus

TOKEN_DTYPES = ("uint8", "uint16", "uint32")
SCAN_BYTES = 1 << 30  # token files up to this size are checked against the vocabulary up front


def _too_large(path, max_id: int, vocab_size: int, where: str) -> corpus.DataError:
    return corpus.DataError(
        f"token id {max_id} >= model.vocab_size={vocab_size} in {str(path)!r} ({where}): the "
        "data was tokenized with a larger vocabulary (set --config.model.vocab_size) or "
        "data.dtype is wrong")


def check_vocab(path, dtype: str, vocab_size: int) -> None:
    """DataError if the token file holds an id >= vocab_size (reads the whole file)."""
    tokens = corpus.load_tokens(path, dtype)
    if len(tokens):
        max_id = int(tokens.max())
        if max_id >= vocab_size:
            raise _too_large(path, max_id, vocab_size, "largest id in the file")


class WindowGather:
    """Maps a batch of window ids to ``{'inputs', 'targets'}`` (only ``rows`` of it, if set);
    opens the memmap lazily, so the object pickles cheaply (by path)."""

    def __init__(self, path: str | os.PathLike, dtype: str, seq_len: int,
                 vocab_size: int | None = None, rows: np.ndarray | None = None):
        self.path, self.dtype, self.seq_len = str(path), dtype, seq_len
        self.vocab_size, self.rows = vocab_size, rows
        self._tokens: np.ndarray | None = None

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            self._tokens = corpus.load_tokens(self.path, self.dtype)
        return self._tokens

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": None}

    def __call__(self, window_ids: np.ndarray) -> dict[str, np.ndarray]:
        window_ids = np.asarray(window_ids, dtype=np.int64)
        if self.rows is not None:
            window_ids = window_ids[self.rows]
        starts = window_ids * self.seq_len
        idx = starts[:, None] + np.arange(self.seq_len + 1, dtype=np.int64)[None, :]
        windows = self.tokens[idx]
        if self.vocab_size is not None and windows.size:
            max_id = int(windows.max())
            if max_id >= self.vocab_size:
                raise _too_large(self.path, max_id, self.vocab_size,
                                 f"in the windows starting at token {int(starts[0])}")
        windows = windows.astype(np.int32)
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}


def num_windows(n_tokens: int, seq_len: int) -> int:
    """Number of (seq_len + 1)-token windows with stride seq_len in ``n_tokens`` tokens."""
    return max(n_tokens - 1, 0) // seq_len


def token_file(data_cfg: dict[str, Any], split: str) -> tuple[Path, str]:
    """(path of the split's token file, its dtype) for a resolved LM data config."""
    name = data_cfg["name"]
    if name == "stdlib_text":
        folder = corpus.ensure_stdlib_corpus(data_cfg.get("cache_dir"))
        dtype = "uint8"
    elif name == "memmap":
        if not data_cfg.get("path"):
            raise ValueError("data.name='memmap' needs data.path: a folder holding "
                             "train.bin and val.bin (nanoGPT-style token files)")
        folder = Path(data_cfg["path"]).expanduser()
        dtype = data_cfg.get("dtype")
        if dtype is None:
            meta = folder / "meta.json"
            dtype = json.loads(meta.read_text()).get("dtype", "uint16") if meta.exists() \
                else "uint16"
    else:
        raise ValueError(f"data.name={name!r} is not a language-model dataset; "
                         "valid: ['memmap', 'stdlib_text']")
    if dtype not in TOKEN_DTYPES:
        raise ValueError(f"data.dtype={dtype!r}; valid: {list(TOKEN_DTYPES)}")
    path = folder / f"{split}.bin"
    if not path.exists():
        raise ValueError(f"token file {str(path)!r} not found (expected {split}.bin in "
                         f"{str(folder)!r}; build one with "
                         "`python -m optaxlab.data.build_corpus SRC_DIR OUT_DIR`)")
    return path, dtype


def index_pipeline(n: int, *, split: str, batch_size: int, seed: int, shard_index: int,
                   shard_count: int, num_epochs: int | None, what: str,
                   drop_remainder: bool = True) -> grain.MapDataset:
    """Shuffled, sharded, repeated, batched ids ``0..n-1`` (shared by LM and vision data)."""
    if split not in ("train", "val"):
        raise ValueError(f"split={split!r}; valid: ['train', 'val']")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed} must be in [0, 2**32)")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs={num_epochs} must be >= 1 or None")
    per_shard = n // shard_count
    if per_shard < (batch_size if drop_remainder else 1):
        raise ValueError(f"the {split} split has {n} {what}, {per_shard} per shard "
                         f"(shard_count={shard_count}): fewer than batch_size={batch_size}")
    ds = grain.MapDataset.range(per_shard * shard_count)[shard_index::shard_count]
    ds = ds.shuffle(seed=seed)
    if num_epochs is None and split == "train":
        ds = ds.repeat(None)
    elif num_epochs is not None and num_epochs > 1:
        ds = ds.repeat(num_epochs)
    return ds.batch(batch_size, drop_remainder=drop_remainder)


def to_iter(ds: grain.MapDataset, num_threads: int, prefetch: int) -> grain.IterDataset:
    options = grain.ReadOptions(num_threads=num_threads,
                                prefetch_buffer_size=prefetch if num_threads else 0)
    return ds.to_iter_dataset(options)


def lm_dataset(data_cfg: dict[str, Any], *, split: str, seq_len: int, batch_size: int,
               seed: int, shard_index: int = 0, shard_count: int = 1,
               num_epochs: int | None = None, drop_remainder: bool = True,
               vocab_size: int | None = None, rows: np.ndarray | None = None
               ) -> grain.IterDataset:
    """Batches ``{'inputs': int32[B, T], 'targets': int32[B, T]}``.

    ``num_epochs=None``: infinite for 'train', one pass for 'val'. With ``drop_remainder``
    (default) every batch has ``batch_size`` rows and the last partial batch of a finite pass
    is dropped. ``rows``: read only these rows (sorted indices into the batch) of every batch
    (``shard_index``/``shard_count`` instead split the windows themselves between readers).
    ``vocab_size``: reject token ids >= it (``DataError``). ``iter(ds)`` gives a grain
    ``DatasetIterator`` with ``get_state()`` / ``set_state()``.
    """
    from optaxlab.data import resolve_data_cfg  # late: the package imports this module

    cfg = resolve_data_cfg(data_cfg)
    if split not in ("train", "val"):
        raise ValueError(f"split={split!r}; valid: ['train', 'val']")
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len} must be >= 1")
    path, dtype = token_file(cfg, split)
    n_tokens = len(corpus.load_tokens(path, dtype))
    if vocab_size is not None and os.path.getsize(path) <= SCAN_BYTES:
        check_vocab(path, dtype, vocab_size)
    if rows is not None:
        rows = np.asarray(rows, np.int64)
        if rows.ndim != 1 or not len(rows) or rows.min() < 0 or rows.max() >= batch_size:
            raise ValueError(f"rows={rows!r} must be indices in [0, batch_size={batch_size})")
    ds = index_pipeline(num_windows(n_tokens, seq_len), split=split, batch_size=batch_size,
                        seed=seed, shard_index=shard_index, shard_count=shard_count,
                        num_epochs=num_epochs,
                        what=f"windows of {seq_len}+1 tokens ({n_tokens} tokens in {path})",
                        drop_remainder=drop_remainder)
    return to_iter(ds.map(WindowGather(path, dtype, seq_len, vocab_size, rows)),
                   cfg["num_threads"], cfg["prefetch"])
