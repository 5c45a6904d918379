"""Compile a set of programs once across processes that need the same ones at the same time.

    compiled = compile_shared({"train": jitted.lower(*abstract_args), ...})

The workers of a sweep start together and compile the same programs (two vectorized groups of
one sweep share their init, train, eval and checksum programs: the members' numbers are traced
inputs). JAX's persistent compilation cache (`jax_compilation_cache_dir`) only helps a process
that asks *after* another one has finished writing the entry; two workers that start together
both miss it and both compile everything. Here each program has a lock file next to the cache
(`<cache dir>/optaxlab-compiling/<hash of the lowered module>.lock`, `fcntl.flock`): a process
compiles the programs no other process is compiling (which writes them to the cache), then
waits for the others' locks and loads those programs from the cache. With two workers and two
cores the compile phase takes about as long as the longest program instead of the sum.

Measured reason (2-core CPU, jax 0.10.2, the lm_tiny groups of 4 of bench_sweep.py): the group's
programs took 25 s to compile in each of the two workers (init 8.9 s, train step 13.3 s, eval
1.2 s, checksums 1.6 s), all of it the same work twice; shared, the whole sweep went from 82 s
to 69.5 s (and, with the faster-compiling init and step of `vectorized`, each worker now has its
programs after ~8 s instead of ~20 s).

Without a persistent cache directory, or where `fcntl` is missing (Windows), every program is
simply compiled here. A lock is released when its holder exits, killed or not, so a crashed
worker never blocks the others; the cache entry is written before the lock is released, so no
process reads a half-written entry. Entries JAX decides not to write (compiles shorter than
`jax_persistent_cache_min_compile_time_secs`, which the sweep sets to 0) are compiled again
after the wait: correct, only slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax

try:
    import fcntl
except ImportError:  # Windows: no coordination
    fcntl = None

log = logging.getLogger("optaxlab.train")

LOCK_DIR = "optaxlab-compiling"
_HIT = "/jax/compilation_cache/cache_hits"


def cache_dir() -> Path | None:
    """JAX's persistent compilation cache directory, or None when it is off."""
    path = jax.config.jax_compilation_cache_dir
    return Path(path) if path else None


def program_key(lowered: Any) -> str:
    """A hash of the lowered module text (equal programs, equal keys)."""
    return hashlib.sha256(lowered.as_text().encode()).hexdigest()[:40]


@contextlib.contextmanager
def _lock(path: Path, wait: bool) -> Iterator[bool]:
    """Hold an exclusive flock on `path`; yields False (not held) when `wait` is False and
    another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _Hits:
    """Counts JAX's persistent-cache hits while active (a compile that was a load)."""

    def __init__(self):
        self.count = 0

    def __call__(self, event: str, **_: Any) -> None:
        if event == _HIT:
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_listener(self)


def compile_shared(lowered: Mapping[str, Any]) -> dict[str, Any]:
    """{name: Compiled} of `lowered` ({name: `jax.jit(f).lower(...)`}), each program compiled
    by one of the processes that ask for it at the same time (see the module docstring); the
    others load it from the persistent cache. Programs are taken in the given order: put the
    longest first, so that it starts at once in one process while the others take the rest."""
    root = cache_dir()
    if root is None or fcntl is None:
        return {name: low.compile() for name, low in lowered.items()}
    locks = root / LOCK_DIR
    locks.mkdir(parents=True, exist_ok=True)
    paths = {name: locks / f"{program_key(low)}.lock" for name, low in lowered.items()}
    pending = dict(lowered)
    out: dict[str, Any] = {}
    while pending:
        # First every program nobody else is compiling, then wait for the first busy one.
        for name in list(pending):
            with _lock(paths[name], wait=False) as held:
                if held:
                    out[name] = _compile(name, pending.pop(name))
        if pending:
            name = next(iter(pending))
            t = time.perf_counter()
            with _lock(paths[name], wait=True):
                waited = time.perf_counter() - t
                log.info("waited %.1f s for another process to compile %s", waited, name)
                out[name] = _compile(name, pending.pop(name))
    return {name: out[name] for name in lowered}


def _compile(name: str, low: Any) -> Any:
    t = time.perf_counter()
    with _Hits() as hits:
        compiled = low.compile()
    how = "loaded from the persistent cache" if hits.count else "compiled"
    log.info("%s %s in %.1f s", how, name, time.perf_counter() - t)
    return compiled
