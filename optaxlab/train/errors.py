"""What can end a run, and the exit code each outcome has (`python -m optaxlab.train`).

    0    finished, or preempted by SIGTERM (checkpoint saved; rerun the same command to resume)
    1    unexpected internal error (a bug: the traceback is printed)
    2    bad config, bad data, or a checkpoint incompatible with the config (one line)
    3    diverged: non-finite halt (nan_policy='halt'; the last good checkpoint is intact), or
         under health.policy='halt' a loss above health.max_loss_ratio x the first logged loss
    4    runtime failure: I/O error, disk full, permission denied, vanished mount (one line)
    5    the workdir is locked by another live process
    6    stalled (health.policy='halt': the gradient exactly zero for health.zero_grad_steps
         steps, or the loss never below the first logged loss by health.stall_margin)
    130  interrupted by SIGINT (checkpoint saved; a second SIGINT aborts at once, no checkpoint)

The exceptions below carry their code; `exit_code` maps any exception to one, recognising I/O
failures that reach us wrapped by Orbax / TensorStore (which report them as ValueError or
RuntimeError with the OS or TensorStore status in the message).
"""

from __future__ import annotations

import errno
import re

from optaxlab.data.corpus import DataError

FINISHED, BUG, BAD_INPUT, DIVERGED, IO_FAILURE, LOCKED, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
STALLED = 6


class ConfigError(ValueError):
    """A bad config field (found before the workdir is touched). Exit 2."""


class IncompatibleCheckpointError(ValueError):
    """The workdir's checkpoint cannot be restored into this config. Exit 2, nothing touched."""


class NonFiniteError(FloatingPointError):
    """A non-finite loss, gradient, update or optimizer state under nan_policy='halt'. Exit 3."""


class DivergedError(NonFiniteError):
    """A finite loss above health.max_loss_ratio x the first logged loss under
    health.policy='halt'. Exit 3 (diverged, as a non-finite halt)."""


class StalledError(RuntimeError):
    """Training stalled (a health rule under policy 'halt' judged the run stuck). Exit 6."""


class IOFailure(OSError):
    """Reading or writing the workdir failed (permission, disk full, vanished mount). Exit 4."""


class WorkdirLockedError(RuntimeError):
    """Another live process holds WORKDIR/.lock. Exit 5."""


# OS error texts and TensorStore / gRPC status names that mean "the storage failed", as they
# appear in the messages of the exceptions Orbax and TensorStore raise (OS texts first: they
# say more).
_IO_MARKERS = (
    "No space left on device", "Permission denied", "Read-only file system",
    "Input/output error", "File too large", "Disk quota exceeded", "Stale file handle",
    "Too many levels of symbolic links", "Transport endpoint is not connected",
    "PERMISSION_DENIED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED",
    "UNAUTHENTICATED", "ABORTED",
)
_FILE = re.compile(r'file "([^"]+)"')
_CORRUPT_ERRNOS = (errno.EISDIR,)  # a path of the wrong kind is damage, not an I/O failure


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def io_failure(exc: BaseException) -> str | None:
    """A one-line description if `exc` (or what caused it) is a storage failure, else None.

    OSErrors count (except those that say a path has the wrong kind), and so do exceptions whose
    message carries an OS or TensorStore storage status (Orbax re-raises those as ValueError).
    """
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno not in _CORRUPT_ERRNOS:
            if isinstance(e, IOFailure) or e.strerror is None:
                return one_line(e)
            where = f": {e.filename}" if e.filename else ""
            return f"{e.strerror}{where}"
        text = str(e)
        for marker in _IO_MARKERS:
            if marker in text:
                where = _FILE.search(text)
                return f"{marker}: {where.group(1)}" if where else f"{marker}: {one_line(e)}"
    return None


_CODES = ((ConfigError, BAD_INPUT), (DataError, BAD_INPUT),
          (IncompatibleCheckpointError, BAD_INPUT), (NonFiniteError, DIVERGED),
          (StalledError, STALLED), (IOFailure, IO_FAILURE), (WorkdirLockedError, LOCKED))


def exit_code(exc: BaseException) -> int:
    """The exit code of a run that ended with `exc`."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if io_failure(exc) is not None:
        return IO_FAILURE
    return BUG


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
