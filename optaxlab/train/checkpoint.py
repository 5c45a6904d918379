"""Orbax checkpoints in WORKDIR/checkpoints/<step>/ (train state + data iterator state).

Saves are async (the device-to-host copy happens in `save`, the writing in the background) and
Orbax keeps the last N. On restore the newest readable checkpoint wins: a half-written one
(Orbax's `<step>.orbax-checkpoint-tmp-*` folder) or one that fails to restore is reported with a
log line naming the step and the reason, moved to WORKDIR/checkpoints_corrupt/ (nothing is
deleted), and the previous one is tried.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger("optaxlab.train")

_TMP = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")


class _FrozenIteratorState:
    """The data iterator's state captured at save time (grain's handler serializes it later)."""

    def __init__(self, state: dict):
        self._bytes = json.dumps(state).encode()

    def get_state(self) -> bytes:
        return self._bytes


def manager(directory: Path, *, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options,
                                 item_names=("state", "data"))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_iterator) -> None:
    """Save `state` (a pytree of jax arrays) and the data iterator's current position."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(_FrozenIteratorState(data_iterator.get_state())),
    )
    mngr.save(step, args=args, force=True)


def _quarantine(directory: Path, name: str, reason: str) -> None:
    """Move checkpoints/<name> to checkpoints_corrupt/<name>[.n] (process 0), then sync."""
    if jax.process_index() == 0:
        dest_root = directory.parent / f"{directory.name}_corrupt"
        dest_root.mkdir(parents=True, exist_ok=True)
        dest = dest_root / name
        n = 0
        while dest.exists():
            n += 1
            dest = dest_root / f"{name}.{n}"
        shutil.move(str(directory / name), str(dest))
        (dest.parent / f"{dest.name}.reason.txt").write_text(reason + "\n")
        log.warning("moved %s to %s", directory / name, dest)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"optaxlab_quarantine_{name}")


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any,
                   make_iterator: Callable[[], Any]) -> tuple[int, Any, Any] | None:
    """(step, state, data iterator) from the newest readable checkpoint, or None if none.

    `abstract_state` holds `jax.ShapeDtypeStruct`s with shardings (the restore target);
    `make_iterator()` returns a fresh data iterator whose state is then restored.
    """
    directory = Path(mngr.directory)
    for child in sorted(directory.iterdir()) if directory.exists() else []:
        m = _TMP.match(child.name)
        if m:
            log.warning("checkpoint at step %s is half-written (unfinished Orbax temporary "
                        "folder %s); ignoring it", m.group(1), child.name)
            _quarantine(directory, child.name, "half-written (Orbax temporary folder)")
    mngr.reload()
    for step in sorted(mngr.all_steps(), reverse=True):
        iterator = make_iterator()
        try:
            restored = mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(iterator),
            ))
        except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            older = [s for s in mngr.all_steps() if s < step]
            log.error("checkpoint at step %d is unreadable (%s); falling back to %s", step,
                      reason, f"step {max(older)}" if older else "a fresh start")
            _quarantine(directory, str(step), f"{time.ctime()}: {reason}")
            mngr.reload()
            continue
        return step, restored["state"], iterator
    return None
