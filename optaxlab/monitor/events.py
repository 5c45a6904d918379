"""TensorBoard event files written directly: TFRecord framing around hand-encoded protobufs.

The monitor writes ~300 scalars and ~40 histograms every step. Building them as protobuf objects
and handing them to tensorboardX cost ~4 ms of host CPU per step (object construction, then a
pickling queue and a background thread that serializes them again), more than a whole `lm_tiny`
step's monitor cost on the device. Encoding the few message types we need straight to bytes costs
~0.4 ms for the same step; see experiments/benchmarks/bench_monitor.py. The files are ordinary
TensorBoard event files: the tests read them back with TensorBoard's `EventAccumulator` and parse
the records with TensorBoard's own protobuf classes.

Wire format (TFRecord + tensorflow/core/util/event.proto and framework/summary.proto):

    record         uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
    Event          1: double wall_time, 2: int64 step, 3: string file_version,
                   5: Summary summary, 7: SessionLog session_log
    Summary        1: repeated Value value
    Value          1: string tag, 2: float simple_value, 4: Image image, 5: HistogramProto histo
    HistogramProto 1..5: double min, max, num, sum, sum_squares,
                   6: packed double bucket_limit, 7: packed double bucket
    Image          1: int32 height, 2: int32 width, 3: int32 colorspace, 4: bytes png
    SessionLog     1: enum status (START = 1)

A Summary is the concatenation of its encoded values, so the encoders below return one
length-delimited `Summary.value` entry each and a summary is `b"".join(values)`.
"""

from __future__ import annotations

import functools
import io
import os
import re
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import crc32c
import numpy as np

FILE_VERSION = "brain.Event:2"
_NAME = re.compile(r"events\.out\.tfevents\.(\d+)\.")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_HIST_HEAD = struct.Struct("<BdBdBdBdBd")  # fields 1-5 of HistogramProto, each key + double
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def _crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C."""
    x = crc32c.crc32c(data)
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


_BYTE = [bytes((i,)) for i in range(256)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _BYTE[n]
    if n < 0x4000:
        return _BYTE[n & 0x7F | 0x80] + _BYTE[n >> 7]
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _value(tag_field: bytes, body: bytes) -> bytes:
    """One `Summary.value` entry from the encoded tag field and the value's fields."""
    return _field(1, tag_field + body)


@functools.lru_cache(maxsize=1 << 16)
def _tag_field(tag: str) -> bytes:
    return _field(1, tag.encode())


@functools.lru_cache(maxsize=1 << 16)
def _scalar_prefix(tag: str) -> bytes:
    tag_field = _tag_field(tag)
    return _varint(1 << 3 | 2) + _varint(len(tag_field) + 5) + tag_field + b"\x15"


def scalar(tag: str, value: float) -> bytes:
    """A `Summary.value` entry holding a float32 `simple_value`."""
    return _scalar_prefix(tag) + _F32.pack(value)


def scalars(values: Mapping[str, float]) -> bytes:
    """The entries of many scalars (a Summary on its own)."""
    prefix, pack = _scalar_prefix, _F32.pack
    return b"".join([prefix(k) + pack(v) for k, v in values.items()])


def histogram(
    tag: str,
    min: float,
    max: float,
    num: float,
    sum: float,
    sum_squares: float,
    bucket_limit: np.ndarray | Iterable[float],
    bucket: np.ndarray | Iterable[float],
) -> bytes:
    """A `Summary.value` entry holding a `HistogramProto`.

    `bucket[i]` counts the values in (bucket_limit[i-1], bucket_limit[i]] (TensorBoard's
    convention: right limits); min/max are the extreme values, num the count.
    """
    limits = np.asarray(bucket_limit, "<f8").tobytes()
    counts = np.asarray(bucket, "<f8").tobytes()
    body = _HIST_HEAD.pack(0x09, min, 0x11, max, 0x19, num, 0x21, sum, 0x29, sum_squares)
    body += _field(6, limits) + _field(7, counts)
    return _value(_tag_field(tag), _field(5, body))


def png(rgb: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] (or [H, W, 4], [H, W]) image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


def image(tag: str, rgb: np.ndarray) -> bytes:
    """A `Summary.value` entry holding a PNG-encoded image (uint8 [H, W, C], C in 1, 3, 4)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise ValueError(f"image {tag!r}: want uint8 [H, W] or [H, W, C], got {rgb.dtype} "
                         f"{rgb.shape}")
    h, w = rgb.shape[:2]
    c = 1 if rgb.ndim == 2 else rgb.shape[2]
    if rgb.ndim == 3 and c == 1:
        rgb = rgb[..., 0]
    body = (
        b"\x08" + _varint(h) + b"\x10" + _varint(w) + b"\x18" + _varint(c) + _field(4, png(rgb))
    )
    return _value(_tag_field(tag), _field(4, body))


def event(step: int, summary: bytes = b"", *, wall_time: float | None = None,
          file_version: str | None = None, session_start: bool = False) -> bytes:
    """An encoded `Event` with a summary (the concatenated value entries), a file version or a
    SessionLog START (which makes TensorBoard drop earlier events at steps >= step)."""
    out = b"\x09" + _F64.pack(time.time() if wall_time is None else wall_time)
    if step:
        out += b"\x10" + _varint(int(step) & 0xFFFFFFFFFFFFFFFF)
    if file_version is not None:
        out += _field(3, file_version.encode())
    if summary:
        out += _field(5, summary)
    if session_start:
        out += _field(7, b"\x08\x01")
    return out


def record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    n = _U64.pack(len(data))
    return n + _U32.pack(_crc32c(n)) + data + _U32.pack(_crc32c(data))


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
    have the same arguments, so code can take either writer.
    """

    def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None,
                 filename_suffix: str = "", flush_secs: float = 10.0):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path = _file_name(self.logdir, filename_suffix)
        self.flush_secs = flush_secs
        self._file = open(self.path, "ab")
        self._last_flush = time.monotonic()
        self._file.write(record(event(0, file_version=FILE_VERSION)))
        if purge_step is not None:
            self._file.write(record(event(purge_step, session_start=True)))
        self.flush()

    def write(self, step: int, summary: bytes, wall_time: float | None = None) -> None:
        """One event holding `summary` (concatenated entries from scalar/histogram/image)."""
        if self._file is None:
            raise ValueError(f"EventWriter for {self.path} is closed")
        self._file.write(record(event(step, summary, wall_time=wall_time)))
        if time.monotonic() - self._last_flush > self.flush_secs:
            self.flush()

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        """Many scalars in one event (tags as keys)."""
        if values:
            self.write(step, scalars(values))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.write(step, scalar(tag, float(value)))

    def add_histogram_raw(self, tag, min, max, num, sum, sum_squares,
                          bucket_limits, bucket_counts, global_step) -> None:
        self.write(global_step, histogram(tag, min, max, num, sum, sum_squares, bucket_limits,
                                          bucket_counts))

    def add_image(self, tag: str, img: np.ndarray, step: int, dataformats: str = "HWC") -> None:
        img = np.asarray(img)
        if dataformats == "CHW":
            img = np.moveaxis(img, 0, -1)
        elif dataformats not in ("HWC", "HW"):
            raise ValueError(f"dataformats={dataformats!r}: use 'HWC', 'CHW' or 'HW'")
        if img.dtype != np.uint8:  # floats in [0, 1], as tensorboardX takes them
            img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        self.write(step, image(tag, img))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
