"""Byte-level corpora: nanoGPT-style ``train.bin`` / ``val.bin`` token files from text documents.

Tokens are raw bytes (uint8, vocab 256), documents are joined with ``SEPARATOR``. The split is
by document: documents are ordered by the SHA-1 of their name (deterministic, independent of
file-system order, and a uniform sample when a size cap cuts the list), the first ones go to
validation until it holds ``val_fraction`` of the bytes (at most ``max_val_bytes``), the rest
to training (at most ``max_train_bytes``; documents that would overflow the cap are skipped).
When no document fits the validation budget (e.g. a single file), the last ``val_fraction`` of
the training bytes is held out instead, so train and val never overlap.

Files are written to temporary names in the output folder and renamed into place
(``os.replace``), ``meta.json`` last, so a concurrent or interrupted build never leaves a
half-written corpus that looks complete: a corpus is complete iff its ``meta.json`` exists.

The default corpus (``ensure_stdlib_corpus``) is built on first use, with no download, from the
running Python's standard library: every ``.py`` file under ``sysconfig.get_paths()['stdlib']``
(no ``site-packages``) and the ``pydoc_data.topics`` documentation strings. On CPython 3.11 that
is ~32 MB of text; the default caps keep ~24 MB for training and ~1 MB for validation. Building
takes about a second. The cache folder name includes the Python version, since the text differs
between versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEPARATOR = b"\n\n"
STDLIB_MAX_TRAIN_BYTES = 24_000_000
STDLIB_MAX_VAL_BYTES = 1_000_000
STDLIB_VAL_FRACTION = 0.04
CORPUS_VERSION = 1


class DataError(ValueError):
    """Bad training data (a token file of the wrong size or with ids >= the vocabulary, an
    unreadable or foreign dataset file); the message names the file."""


@dataclass(frozen=True)
class Document:
    """A named text document whose bytes are read lazily (``read()``)."""

    name: str
    size: int
    read: Callable[[], bytes]


def default_cache_dir() -> Path:
    """``$OPTAXLAB_DATA`` if set, else ``~/.cache/optaxlab``."""
    env = os.environ.get("OPTAXLAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "optaxlab"


def _file_doc(path: Path, name: str) -> Document:
    return Document(name=name, size=path.stat().st_size, read=path.read_bytes)


def _is_text(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\x00" not in f.read(8192)


def folder_documents(src_dir: str | os.PathLike, suffixes: Sequence[str] | None = None
                     ) -> list[Document]:
    """Every non-hidden text file under ``src_dir`` (recursively; files with NUL bytes in their
    first 8 KiB are treated as binary and skipped), optionally only those ending in ``suffixes``."""
    root = Path(src_dir)
    if not root.is_dir():
        raise ValueError(f"source folder {str(root)!r} does not exist or is not a folder")
    docs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fname in filenames:
            path = Path(dirpath) / fname
            if fname.startswith(".") or not path.is_file():
                continue
            if suffixes and not fname.endswith(tuple(suffixes)):
                continue
            if path.stat().st_size and _is_text(path):
                docs.append(_file_doc(path, path.relative_to(root).as_posix()))
    return docs


def stdlib_documents() -> list[Document]:
    """The running Python's standard-library ``.py`` files and ``pydoc_data`` topics."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("site-packages", "__pycache__")
                       and not d.startswith(".")]
        for fname in filenames:
            path = Path(dirpath) / fname
            rel = path.relative_to(root).as_posix()
            if fname.endswith(".py") and rel != "pydoc_data/topics.py" and path.is_file():
                docs.append(_file_doc(path, rel))
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        topics = {}
    for key, text in topics.items():
        data = text.encode("utf-8")
        docs.append(Document(name=f"pydoc_topics/{key}", size=len(data),
                             read=lambda data=data: data))
    return docs


def _order(docs: Iterable[Document]) -> list[Document]:
    return sorted(docs, key=lambda d: (hashlib.sha1(d.name.encode()).hexdigest(), d.name))


def split_documents(docs: Sequence[Document], val_fraction: float,
                    max_train_bytes: int | None = None, max_val_bytes: int | None = None
                    ) -> tuple[list[Document], list[Document]]:
    """Deterministic document-level (train, val) split; see the module docstring."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    docs = _order(d for d in docs if d.size > 0)
    total = sum(d.size for d in docs)
    val_target = val_fraction * total
    if max_val_bytes is not None:
        val_target = min(val_target, max_val_bytes)
    train, val = [], []
    n_train = n_val = 0
    for doc in docs:
        if n_val < val_target and n_val + doc.size <= 1.25 * val_target:
            val.append(doc)
            n_val += doc.size
        elif max_train_bytes is None or n_train + doc.size <= max_train_bytes:
            train.append(doc)
            n_train += doc.size
    return train, val


def _join(docs: Sequence[Document]) -> bytes:
    return SEPARATOR.join(d.read() for d in docs)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a shared cache should be readable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build(docs: Sequence[Document], out_dir: str | os.PathLike, *, val_fraction: float = 0.05,
          max_train_bytes: int | None = None, max_val_bytes: int | None = None,
          source: str = "") -> dict:
    """Writes ``train.bin``, ``val.bin`` (uint8 bytes) and ``meta.json`` into ``out_dir``.

    Returns the metadata dict (also written to ``meta.json``): byte counts, document counts,
    dtype 'uint8', vocab_size 256.
    """
    if not docs:
        raise ValueError(f"no text documents to build a corpus from (source: {source!r})")
    train_docs, val_docs = split_documents(docs, val_fraction, max_train_bytes, max_val_bytes)
    train, val = _join(train_docs), _join(val_docs)
    if val_fraction > 0 and not val_docs:  # nothing fits: hold out the tail of the stream
        n_val = int(len(train) * val_fraction)
        if max_val_bytes is not None:
            n_val = min(n_val, max_val_bytes)
        train, val = train[: len(train) - n_val], train[len(train) - n_val:]
    if not train:
        raise ValueError(f"corpus from {source!r} has no training bytes after the split")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(version=CORPUS_VERSION, source=source, dtype="uint8", vocab_size=256,
                train_bytes=len(train), val_bytes=len(val), train_docs=len(train_docs),
                val_docs=len(val_docs), val_fraction=val_fraction,
                split="documents" if val_docs or not val else "tail")
    _atomic_write(out / "train.bin", train)
    _atomic_write(out / "val.bin", val)
    _atomic_write(out / "meta.json", json.dumps(meta, indent=1).encode())
    return meta


def stdlib_corpus_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the stdlib corpus of this Python version lives inside ``cache_dir``."""
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    tag = f"py{platform.python_version()}-v{CORPUS_VERSION}"
    return base / "stdlib_text" / tag


def ensure_stdlib_corpus(cache_dir: str | os.PathLike | None = None, *,
                         max_train_bytes: int | None = None, max_val_bytes: int | None = None,
                         verbose: bool = True) -> Path:
    """Builds the stdlib corpus into the cache on first use; returns its folder.

    The caps default to ``STDLIB_MAX_TRAIN_BYTES`` / ``STDLIB_MAX_VAL_BYTES``; they only
    matter for the first build (an existing corpus in the cache is reused as is).
    """
    max_train_bytes = STDLIB_MAX_TRAIN_BYTES if max_train_bytes is None else max_train_bytes
    max_val_bytes = STDLIB_MAX_VAL_BYTES if max_val_bytes is None else max_val_bytes
    out = stdlib_corpus_dir(cache_dir)
    if (out / "meta.json").exists():
        return out
    if verbose:
        print(f"optaxlab: building the stdlib text corpus (once) in {out}", file=sys.stderr,
              flush=True)
    build(stdlib_documents(), out, val_fraction=STDLIB_VAL_FRACTION,
          max_train_bytes=max_train_bytes, max_val_bytes=max_val_bytes,
          source=f"python {platform.python_version()} stdlib + pydoc topics")
    return out


def load_tokens(path: str | os.PathLike, dtype: str | np.dtype = "uint8") -> np.memmap:
    """Read-only memmap of a token file (an empty file gives an empty array)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"token file {str(path)!r} does not exist")
    size = path.stat().st_size
    itemsize = np.dtype(dtype).itemsize
    if size % itemsize:
        raise DataError(f"token file {str(path)!r} has {size} bytes, not a multiple of "
                        f"{itemsize} ({np.dtype(dtype).name}): is data.dtype right? (nanoGPT "
                        "writes uint16; the bundled byte corpus is uint8)")
    if size == 0:
        return np.zeros((0,), dtype=dtype)  # np.memmap refuses empty files
    return np.memmap(path, dtype=dtype, mode="r")
