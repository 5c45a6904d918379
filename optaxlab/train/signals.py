"""SIGTERM / SIGINT: stop at a step boundary that every process agrees on.

While a run is in `Stopper`, SIGTERM (a preemption notice from a scheduler or a spot VM) and
SIGINT (Ctrl-C) only set a flag; the loop then finishes the current step, saves a complete
checkpoint, flushes the metrics and returns. A second SIGINT raises KeyboardInterrupt at once
(no checkpoint); a third one has the default effect (the process dies even inside a long C
call).

Agreement between processes: every step, `poll()` hands this process's flag to a tiny jitted
max over a global array with one element per device (each process fills its own devices'), so
the result is the same on every process. The loop reads it with the step's metrics (one step
behind, no extra host sync) and all processes stop after the same step. It is an equivalent of
JAX's preemption sync point (`multihost_utils.reached_preemption_sync_point`) that covers SIGINT
too and needs no distributed runtime on one process. Our handler replaces the SIGTERM handler
the distributed runtime may install (it is set after `jax.distributed.initialize`).
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger("optaxlab.train")

NONE, PREEMPTED, INTERRUPTED = 0, 1, 2
STATUS = {PREEMPTED: "preempted", INTERRUPTED: "interrupted"}
_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


class Stopper:
    """Context manager: installs the SIGTERM / SIGINT handlers (main thread only) and restores
    the previous ones on exit. `poll()` -> a device scalar: the agreed flag (NONE, PREEMPTED,
    INTERRUPTED) at this step."""

    def __init__(self, mesh: Mesh):
        self.flag = NONE
        self._sigints = 0
        self._previous: dict[int, object] = {}
        self._sharding = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))
        self._size = mesh.size
        self._agree = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, PartitionSpec()))

    def _handle(self, signum, frame) -> None:
        del frame
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints == 2:
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # a third one kills at once
                raise KeyboardInterrupt("a second SIGINT: aborting without a checkpoint")
        if self.flag == NONE:
            log.warning("%s received: finishing the current step, then saving a checkpoint "
                        "(%s)", _NAMES.get(signum, signum),
                        "Ctrl-C again to abort without one" if signum == signal.SIGINT else
                        "the job ends after that")
        self.flag = max(self.flag, INTERRUPTED if signum == signal.SIGINT else PREEMPTED)

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def poll(self) -> jax.Array:
        """The max of every process's flag (dispatched asynchronously; read it with
        `jax.device_get` together with the step's metrics)."""
        flag = np.full((1,), self.flag, np.int32)
        flags = jax.make_array_from_callback((self._size,), self._sharding, lambda _: flag)
        return self._agree(flags)
