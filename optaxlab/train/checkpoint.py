"""Orbax checkpoints in WORKDIR/checkpoints/<step>/: the train state and a JSON `meta` item.

`meta` holds what a restore needs besides the arrays: the run's config, the fingerprint of the
fields a resumed run must share with it (`fingerprint`), the data iterator's position and the
checksum of the state. Saves are async (the device-to-host copy happens in `save`, the writing
in the background); Orbax keeps the last N and finalizes a checkpoint folder atomically.

A restore has three outcomes, never confused:

(a) corrupt or half-written (Orbax's `<step>.orbax-checkpoint-tmp-*` folder, data that does not
    decode, or a checksum mismatch): reported with the step and the reason, moved to
    WORKDIR/checkpoints_corrupt/ (never deleted), and the previous checkpoint is tried;
(b) incompatible with this config (model, optimizer state, or data stream differ):
    `IncompatibleCheckpointError` from `check_compatible`, before anything is moved;
(c) unreadable storage (permission, vanished mount, I/O error): `IOFailure`, nothing moved.
    When Orbax fails, the checkpoint's folder is probed with plain file-system calls (stat and
    a one-byte read of every file): if those fail too, it is (c), else (a).

Integrity: `checksums(state)` is a 32-bit hash per leaf, computed on the device inside one
jitted function: sum over elements i of fmix32(bits(x_i) xor (i * 0x9E3779B9)) mod 2^32, with i
the element's global (row-major) index and fmix32 MurmurHash3's finalizer (a bijection, so any
change of one element changes the sum; several changes cancel with probability ~2^-32). Integer
sums are exact in any order, so the value does not depend on the sharding or the number of
processes; only the scalars reach the host. Orbax's own format checksums only its shard index,
not the data (64 flipped bytes in a data file restored silently), hence this. Its cost, one
read of the state in device memory per save and per restore, is measured in
experiments/benchmarks/bench_checkpoint.py.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax import lax
from jax.experimental import multihost_utils

from optaxlab.train import mesh as mesh_lib
from optaxlab.train.errors import IncompatibleCheckpointError, IOFailure, io_failure

log = logging.getLogger("optaxlab.train")

FORMAT = 1
CHECKSUM_ALGORITHM = "sum-fmix32-v1"
_TMP = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")
_GOLDEN = np.uint32(0x9E3779B9)


class _Corrupt(Exception):
    """A checkpoint that cannot be used: case (a)."""


# ------------------------------------------------------------------------------ checksum


def _fmix32(h: jax.Array) -> jax.Array:
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(x: jax.Array) -> jax.Array:
    """The bits of `x` as uint32 (one word per element; 8-byte elements as two)."""
    size = jnp.dtype(x.dtype).itemsize
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if size == 4:
        return lax.bitcast_convert_type(x, jnp.uint32)
    if size in (1, 2):
        return lax.bitcast_convert_type(x, jnp.uint8 if size == 1 else jnp.uint16).astype(
            jnp.uint32)
    if size == 8:
        return lax.bitcast_convert_type(x, jnp.uint32)  # trailing axis of 2
    raise TypeError(f"cannot checksum dtype {x.dtype}")


def _leaf_checksum(x: jax.Array) -> jax.Array:
    w = _words(x)
    index = jnp.zeros(w.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(w.ndim)):
        index = index + lax.broadcasted_iota(jnp.uint32, w.shape, axis) * np.uint32(
            stride % 2**32)
        stride *= w.shape[axis]
    return jnp.sum(_fmix32(w ^ (index * _GOLDEN)), dtype=jnp.uint32)


_checksum_tree = jax.jit(lambda tree: jax.tree.map(_leaf_checksum, tree))


def checksums(state: Any) -> dict[str, int]:
    """{leaf name: 32-bit checksum} of a pytree of (possibly sharded) arrays."""
    sums = jax.device_get(_checksum_tree(state))
    return {mesh_lib.name(p): int(v) for p, v in jax.tree_util.tree_leaves_with_path(sums)}


def lower_checksums(abstract: Any) -> jax.stages.Lowered:
    """The checksum program of a pytree shaped like `abstract` (ShapeDtypeStructs), lowered, to
    compile it ahead (`optaxlab.train.compilation`); `checksums` then loads it from JAX's
    persistent compilation cache."""
    return _checksum_tree.lower(abstract)


# ------------------------------------------------------------------------------ save


def manager(directory, *, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           enable_async_checkpointing=async_save)
    path = epath.Path(directory)
    if not str(path).startswith(("gs://", "s3://", "az://")):
        path = epath.Path(os.path.abspath(path))
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(path, options=options, item_handlers=handlers)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Save `state` (a pytree of jax arrays) with `meta` (JSON: config, fingerprint, data
    iterator position), adding the state's checksums to `meta`."""
    meta = {**meta, "format": FORMAT, "step": int(step),
            "checksum": {"algorithm": CHECKSUM_ALGORITHM, "leaves": checksums(state)}}
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            meta=ocp.args.JsonSave(meta)), force=True)


# ------------------------------------------------------------------------------ restore


def probe(path) -> None:
    """Raise IOFailure if `path` (a checkpoint folder) cannot be walked with plain file-system
    calls: stat of every entry (following links) and a one-byte read of every file."""
    path = epath.Path(path)
    try:
        pending = [path]
        while pending:
            folder = pending.pop()
            for child in folder.iterdir():
                if child.is_dir():
                    pending.append(child)
                else:
                    child.stat()  # the real error of a dangling link or a link loop
                    with child.open("rb") as f:
                        f.read(1)
    except OSError as e:
        raise IOFailure(f"cannot read the checkpoint {path}: {io_failure(e)}") from e


def _read(mngr: ocp.CheckpointManager, step: int) -> tuple[dict, dict]:
    """(meta, {leaf name: (shape, dtype)}) of a checkpoint, without reading its arrays."""
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    tree = mngr.item_metadata(step)["state"]
    tree = getattr(tree, "tree", tree)
    leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
    return meta, {mesh_lib.name(p): (tuple(x.shape), str(np.dtype(x.dtype))) for p, x in leaves}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def differences(old: dict, new: dict) -> list[str]:
    """'key: checkpoint A, config B' for every flattened key whose value differs."""
    old, new = _flat(old), _flat(new)
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if isinstance(a, list):
            a = tuple(a)
        if isinstance(b, list):
            b = tuple(b)
        if a != b:
            diffs.append(f"{key}: checkpoint {a!r}, config {b!r}".replace("'", ""))
    return diffs


def _abstract_leaves(abstract: Any) -> dict[str, tuple[tuple, str]]:
    return {mesh_lib.name(p): (tuple(x.shape), str(np.dtype(x.dtype)))
            for p, x in jax.tree_util.tree_leaves_with_path(abstract)}


def incompatibility(meta: dict, tree: dict, abstract: Any, fingerprint: dict,
                    optimizer: dict) -> list[str]:
    """What stops a checkpoint (its meta and leaf shapes) from resuming this config: the
    fingerprint fields that differ, else (when the state's structure differs) the optimizer
    fields that differ or the first leaf that differs; [] when it fits."""
    diffs = differences(meta.get("fingerprint", {}), fingerprint)
    if diffs:
        return diffs
    ours = _abstract_leaves(abstract)
    if ours == tree:
        return []
    old_opt = dict(meta.get("config", {}).get("optimizer", {}))
    if old_opt.get("name") != optimizer.get("name"):
        return [f"optimizer.name: checkpoint {old_opt.get('name')}, config {optimizer.get('name')}"]
    skip = ("learning_rate", "schedule", "warmup_fraction", "lr_floor")
    diffs = [f"optimizer.{d}" for d in differences(
        {k: v for k, v in old_opt.items() if k not in skip},
        {k: v for k, v in optimizer.items() if k not in skip})]
    if diffs:
        return diffs
    for leaf in sorted(set(ours) | set(tree)):
        a, b = tree.get(leaf), ours.get(leaf)
        if a != b:
            fmt = lambda x: "absent" if x is None else f"{x[1]}{list(x[0])}"
            return [f"state {leaf}: checkpoint {fmt(a)}, config {fmt(b)} (the optimizer chain "
                    "or model differs)"]
    return []


def _incompatible(directory, step: int, diffs: list[str]) -> IncompatibleCheckpointError:
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    workdir = epath.Path(directory).parent
    return IncompatibleCheckpointError(
        f"the checkpoint at step {step} in {directory} does not fit this config: "
        f"{'; '.join(diffs[:3])}{more}. Use a new --workdir, or add --restart to move the old "
        f"run aside (into {workdir / 'previous_runs'}/) and start over")


def _steps(directory: epath.Path) -> tuple[list[int], list[str]]:
    """(finalized checkpoint steps, newest first; names of half-written folders)."""
    steps, partial = [], []
    if not directory.exists():
        return steps, partial
    for child in directory.iterdir():
        if child.name.isdigit():
            steps.append(int(child.name))
        elif _TMP.match(child.name):
            partial.append(child.name)
    return sorted(steps, reverse=True), sorted(partial)


def _old_format(directory: epath.Path, step: int) -> bool:
    folder = directory / str(step)
    return not (folder / "meta").exists() and (folder / "data").exists()


def check_compatible(mngr: ocp.CheckpointManager, abstract: Any, fingerprint: dict,
                     optimizer: dict) -> None:
    """Read-only check of the newest checkpoint whose metadata reads: IncompatibleCheckpointError
    if it cannot resume this config, IOFailure if its folder cannot be read. Corrupt ones are
    left for `restore_latest` (which moves them aside)."""
    directory = epath.Path(mngr.directory)
    try:
        steps, _ = _steps(directory)
    except OSError as e:
        raise IOFailure(f"cannot list {directory}: {io_failure(e)}") from e
    for step in steps:
        if _old_format(directory, step):
            raise _incompatible(directory, step, ["written by an older optaxlab (no meta item)"])
        try:
            meta, tree = _read(mngr, step)
        except Exception as e:  # noqa: BLE001 - classified below
            probe(directory / str(step))  # (c) raises; otherwise (a), for restore_latest
            log.debug("checkpoint %d metadata unreadable: %s", step, e)
            continue
        diffs = incompatibility(meta, tree, abstract, fingerprint, optimizer)
        if diffs:
            raise _incompatible(directory, step, diffs)
        return


def _quarantine(directory: epath.Path, name: str, reason: str) -> None:
    """Move checkpoints/<name> to checkpoints_corrupt/<name>[.n] (process 0), then sync."""
    if jax.process_index() == 0:
        dest_root = directory.parent / f"{directory.name}_corrupt"
        dest_root.mkdir(parents=True, exist_ok=True)
        dest = dest_root / name
        n = 0
        while dest.exists():
            n += 1
            dest = dest_root / f"{name}.{n}"
        (directory / name).rename(dest)
        (dest_root / f"{dest.name}.reason.txt").write_text(f"{time.ctime()}: {reason}\n")
        log.warning("moved %s to %s", directory / name, dest)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"optaxlab_quarantine_{name}")


def restore_latest(mngr: ocp.CheckpointManager, abstract: Any, fingerprint: dict,
                   optimizer: dict) -> tuple[int, Any, dict] | None:
    """(step, state, meta) from the newest usable checkpoint, or None if there is none.

    `abstract` holds `jax.ShapeDtypeStruct`s with shardings (the restore target). Half-written
    and corrupt checkpoints are moved aside (a); an incompatible one raises (b); unreadable
    storage raises IOFailure (c). Call `check_compatible` first to refuse (b) before anything
    is moved.
    """
    directory = epath.Path(mngr.directory)
    steps, partial = _steps(directory)
    for name in partial:
        log.warning("checkpoint at step %s is half-written (unfinished Orbax temporary folder "
                    "%s); moving it aside", _TMP.match(name).group(1), name)
        _quarantine(directory, name, "half-written (Orbax temporary folder)")
    mngr.reload()
    for step in steps:
        if _old_format(directory, step):
            raise _incompatible(directory, step, ["written by an older optaxlab (no meta item)"])
        try:
            try:
                meta, tree = _read(mngr, step)
            except Exception as e:  # noqa: BLE001 - classified by probing
                probe(directory / str(step))
                raise _Corrupt(f"metadata unreadable: {_reason(e)}") from e
            diffs = incompatibility(meta, tree, abstract, fingerprint, optimizer)
            if diffs:
                raise _incompatible(directory, step, diffs)
            try:
                state = mngr.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract)))["state"]
            except Exception as e:  # noqa: BLE001 - classified by probing
                probe(directory / str(step))
                raise _Corrupt(f"data unreadable: {_reason(e)}") from e
            want = meta.get("checksum", {}).get("leaves", {})
            got = checksums(state)
            bad = [k for k in got if want.get(k) != got[k]]
            if bad or set(want) != set(got):
                raise _Corrupt(f"checksum mismatch in {len(bad)} of {len(got)} leaves "
                               f"(first: {(bad or sorted(set(want) ^ set(got)))[0]})")
        except _Corrupt as e:
            older = [s for s in steps if s < step]
            log.error("checkpoint at step %d is corrupt (%s); falling back to %s", step, e,
                      f"step {older[0]}" if older else "a fresh start")
            _quarantine(directory, str(step), str(e))
            mngr.reload()
            continue
        return step, state, meta
    return None


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"
