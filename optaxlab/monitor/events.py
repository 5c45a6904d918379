"""TensorBoard event files: TensorBoard's own protobuf classes in our TFRecord framing.

Messages (`Event`, `Summary`, `HistogramProto`, `Summary.Image`) are the TF-free classes the
`tensorboard` package ships (`tensorboard.compat.proto`, on protobuf's upb backend). Only the
record framing is written here:

    record = uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)

because TensorBoard's own `RecordWriter` computes the CRC-32C in pure Python: 20.8 ms for a
52 KB record (one `lm_small` step of the monitor), against 8 us with the native `crc32c`
package (measured on the 2-core CPU of experiments/benchmarks/bench_monitor.py); and its
`EventFileWriter` adds a queue and a writer thread. The writer here is synchronous and buffered;
only work handed to `EventWriter.submit` (the monitor's images: a matplotlib figure each, ~1 s)
runs on a background thread.
"""

from __future__ import annotations

import io
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from pathlib import Path

import crc32c
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2

FILE_VERSION = "brain.Event:2"
_NAME = re.compile(r"events\.out\.tfevents\.(\d+)\.")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_BACKGROUND: futures.ThreadPoolExecutor | None = None
_BACKGROUND_LOCK = threading.Lock()


def _background() -> futures.ThreadPoolExecutor:
    """One worker thread, shared by all writers, started at the first `submit`."""
    global _BACKGROUND
    with _BACKGROUND_LOCK:
        if _BACKGROUND is None:
            _BACKGROUND = futures.ThreadPoolExecutor(1, thread_name_prefix="optaxlab-events")
        return _BACKGROUND


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C."""
    x = crc32c.crc32c(data)
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    n = _U64.pack(len(data))
    return n + _U32.pack(masked_crc32c(n)) + data + _U32.pack(masked_crc32c(data))


def event(step: int, wall_time: float | None = None) -> event_pb2.Event:
    """An empty `Event` at `step`; fill `event.summary` with the `add_*` functions below."""
    return event_pb2.Event(wall_time=time.time() if wall_time is None else wall_time,
                           step=int(step))


# The add_* functions append to a Summary's repeated `value` field in place (`value.add`):
# building separate Value messages and passing them to Summary(value=[...]) copies each one,
# twice the host time (0.52 vs 0.24 ms for 333 scalars + 42 histograms, upb backend).


def add_scalars(summary: summary_pb2.Summary, values: Mapping[str, float]) -> None:
    """Appends a float32 `simple_value` per tag (tags as keys)."""
    add = summary.value.add
    for tag, x in values.items():
        add(tag=tag, simple_value=x)


def add_histogram(summary: summary_pb2.Summary, tag: str, min: float, max: float, num: float,
                  sum: float, sum_squares: float, bucket_limit: Iterable[float],
                  bucket: Iterable[float]) -> None:
    """Appends a `HistogramProto`.

    `bucket[i]` counts the values in (bucket_limit[i-1], bucket_limit[i]] (TensorBoard's
    convention: right limits); min/max are the extreme values, num the count.
    """
    h = summary.value.add(tag=tag).histo
    h.min, h.max, h.num, h.sum, h.sum_squares = min, max, num, sum, sum_squares
    h.bucket_limit.extend(bucket_limit)
    h.bucket.extend(bucket)


def png(rgb: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] (or [H, W, 4], [H, W]) image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


def add_image(summary: summary_pb2.Summary, tag: str, rgb: np.ndarray) -> None:
    """Appends a PNG-encoded image (uint8 [H, W] or [H, W, C], C in 1, 3, 4)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise ValueError(f"image {tag!r}: want uint8 [H, W] or [H, W, C], got {rgb.dtype} "
                         f"{rgb.shape}")
    h, w = rgb.shape[:2]
    c = 1 if rgb.ndim == 2 else rgb.shape[2]
    if rgb.ndim == 3 and c == 1:
        rgb = rgb[..., 0]
    img = summary.value.add(tag=tag).image
    img.height, img.width, img.colorspace, img.encoded_image_string = h, w, c, png(rgb)


def _file_name(logdir: Path, suffix: str) -> Path:
    """events.out.tfevents.<seconds>.<host><suffix>, sorting after every event file already in
    `logdir` (TensorBoard reads a directory's files in name order; a resumed run's file must come
    after the one it resumes)."""
    stamp = int(time.time())
    for p in logdir.iterdir():
        m = _NAME.match(p.name)
        if m:
            stamp = max(stamp, int(m.group(1)) + 1)
    return logdir / f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}{suffix}"


class EventWriter:
    """Appends events to a new TensorBoard event file in `logdir` (synchronously, no threads).

    `purge_step`: when resuming from a checkpoint at step k, pass k + 1: TensorBoard then hides
    the events an earlier run wrote at steps > k. Writes are buffered and reach the disk on
    `flush()`, `close()`, or at the first write `flush_secs` after the last flush. The method
    names of tensorboardX's SummaryWriter used here (add_scalar, add_histogram_raw, add_image)
    take the same arguments, so code can take either writer. `write` is thread-safe; `submit`
    runs slow work (rendering an image) on a background thread, and `flush` / `close` wait
    for it.
    """

    def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None,
                 filename_suffix: str = "", flush_secs: float = 10.0):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path = _file_name(self.logdir, filename_suffix)
        self.flush_secs = flush_secs
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._pending: list[futures.Future] = []
        self.write(event_pb2.Event(wall_time=time.time(), file_version=FILE_VERSION))
        if purge_step is not None:  # a SessionLog START hides earlier events at steps >= it
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self.write(event_pb2.Event(wall_time=time.time(), step=purge_step, session_log=start))
        self.flush()

    def write(self, event: event_pb2.Event) -> None:
        """Appends one `Event` (e.g. `event(step)` with its summary filled)."""
        data = record(event.SerializeToString())
        with self._lock:
            if self._file is None:
                raise ValueError(f"EventWriter for {self.path} is closed")
            self._file.write(data)
            if time.monotonic() - self._last_flush > self.flush_secs:
                self._file.flush()
                self._last_flush = time.monotonic()

    def submit(self, fn: Callable[[], None]) -> None:
        """Runs `fn()` (which writes through this writer) on a background thread, in order with
        the other submitted calls; `flush` and `close` wait for them and raise the first error.
        The monitor renders its images this way: a figure costs ~1 s (the first one also
        imports matplotlib), a pause the training loop would otherwise take at each image step.
        """
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        self._pending.append(_background().submit(fn))

    def wait(self) -> None:
        """Blocks until the submitted calls are done; raises the first one's error, if any."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        """Many scalars in one event (tags as keys)."""
        if values:
            e = event(step)
            add_scalars(e.summary, values)
            self.write(e)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.add_scalars({tag: float(value)}, step)

    def add_histogram_raw(self, tag, min, max, num, sum, sum_squares,
                          bucket_limits, bucket_counts, global_step) -> None:
        e = event(global_step)
        add_histogram(e.summary, tag, min, max, num, sum, sum_squares, bucket_limits,
                      bucket_counts)
        self.write(e)

    def add_image(self, tag: str, img: np.ndarray, step: int, dataformats: str = "HWC") -> None:
        img = np.asarray(img)
        if dataformats == "CHW":
            img = np.moveaxis(img, 0, -1)
        elif dataformats not in ("HWC", "HW"):
            raise ValueError(f"dataformats={dataformats!r}: use 'HWC', 'CHW' or 'HW'")
        if img.dtype != np.uint8:  # floats in [0, 1], as tensorboardX takes them
            img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        e = event(step)
        add_image(e.summary, tag, img)
        self.write(e)

    def flush(self) -> None:
        """Waits for the submitted calls, then writes the buffered events to the file."""
        self.wait()
        with self._lock:
            if self._file is not None:
                self._file.flush()
                self._last_flush = time.monotonic()

    def close(self) -> None:
        """Waits for the submitted calls (raising the first error after closing), closes."""
        try:
            self.wait()
        finally:
            with self._lock:
                if self._file is not None:
                    self._file.close()
                    self._file = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
