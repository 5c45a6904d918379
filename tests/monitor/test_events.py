"""optaxlab.monitor.events: our event files, read back with TensorBoard's own loader and protos."""

import io
import struct

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2, summary_pb2

from optaxlab.monitor import events


def _load(path):
    return list(event_file_loader.EventFileLoader(str(path)).Load())


def test_records_and_values_parse_back():
    long_tag = "blocks/" * 30 + "kernel-é"
    ev = events.event(2**40 + 3, wall_time=7.5)
    events.add_scalars(ev.summary, {"loss": 2.5, long_tag: -1e-30, "b": 3.0})
    limits, counts = np.linspace(-4, 4, 300), np.arange(300.0)
    events.add_histogram(ev.summary, "h", -3.5, 0.0, 44850.0, 1.25, 9.5, limits, counts)
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    events.add_image(ev.summary, "img", rgb)
    data = events.record(ev.SerializeToString())
    n = struct.unpack("<Q", data[:8])[0]  # TFRecord framing: length, crc, data, crc
    assert n == len(data) - 16
    assert struct.unpack("<I", data[8:12])[0] == events.masked_crc32c(data[:8])
    # the masked CRC-32C equals TensorBoard's own (pure-python) implementation's
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    assert struct.unpack("<I", data[-4:])[0] == masked_crc32c(data[12:-4])
    back = event_pb2.Event.FromString(data[12:-4])
    assert (back.step, back.wall_time) == (2**40 + 3, 7.5)
    assert [v.tag for v in back.summary.value] == ["loss", long_tag, "b", "h", "img"]
    assert back.summary.value[1].simple_value == np.float32(-1e-30)
    assert back.summary.value[3].histo == summary_pb2.HistogramProto(
        min=-3.5, max=0.0, num=44850.0, sum=1.25, sum_squares=9.5,
        bucket_limit=limits.tolist(), bucket=counts.tolist())
    im = back.summary.value[4].image
    assert (im.height, im.width, im.colorspace) == (20, 30, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(im.encoded_image_string))), rgb)


def test_writer_file_reads_back_with_tensorboard(tmp_path):
    with events.EventWriter(tmp_path) as w:
        w.add_scalar("train/loss", 3.0, 1)
        w.add_scalars({"train/loss": 2.0, "train/lr": 0.1}, 2)
        w.add_histogram_raw("h", 0.0, 2.0, 3.0, 3.0, 5.0, [0.0, 1.0, 2.0], [1.0, 1.0, 1.0], 2)
        w.add_image("img", np.full((8, 9, 3), 200, np.uint8), 2)
        w.add_image("chw", np.zeros((3, 4, 5), np.float32), 2, dataformats="CHW")
        path = w.path
    evs = _load(path)
    assert evs[0].file_version == events.FILE_VERSION
    assert [e.step for e in evs[1:]] == [1, 2, 2, 2, 2]
    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.IMAGES: 0, ea.HISTOGRAMS: 0})
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("train/loss")] == [(1, 3.0), (2, 2.0)]
    assert acc.Scalars("train/lr")[0].value == pytest.approx(0.1)
    h = acc.Histograms("h")[0].histogram_value
    assert (h.num, list(h.bucket)) == (3.0, [1.0, 1.0, 1.0])
    assert (acc.Images("img")[0].width, acc.Images("chw")[0].height) == (9, 4)


def test_corrupt_record_is_detected(tmp_path):
    with events.EventWriter(tmp_path) as w:
        w.add_scalar("a", 1.0, 1)
        path = w.path
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # a byte of the last record's payload
    path.write_bytes(bytes(data))
    loaded = _load(path)  # TensorBoard's reader checks the CRC and drops the bad record
    assert [e.HasField("summary") for e in loaded] == [False]
    n = struct.unpack("<Q", data[:8])[0]  # the framing is TFRecord's: length, crc, data, crc
    first = event_pb2.Event.FromString(bytes(data[12 : 12 + n]))
    assert first.file_version == events.FILE_VERSION


def test_resume_purges_the_old_runs_later_steps(tmp_path):
    """A resumed run (purge_step = k + 1) hides the events an earlier run wrote after step k,
    even when both files are created within the same second."""
    with events.EventWriter(tmp_path) as w:
        for t in range(1, 6):
            w.add_scalar("loss", float(t), t)
    with events.EventWriter(tmp_path, purge_step=4) as w2:
        for t in range(4, 8):
            w2.add_scalar("loss", 10.0 * t, t)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[1] == w2.path.name
    acc = ea.EventAccumulator(str(tmp_path))
    acc.Reload()
    got = [(s.step, s.value) for s in acc.Scalars("loss")]
    assert got == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0), (7, 70.0)]


def test_bad_input_and_closed_writer(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        events.add_image(events.event(1).summary, "x", np.zeros((4, 4, 3), np.float32))
    w = events.EventWriter(tmp_path)
    with pytest.raises(ValueError, match="dataformats"):
        w.add_image("x", np.zeros((4, 4, 3), np.uint8), 1, dataformats="NHWC")
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.add_scalar("a", 1.0, 1)


def test_submitted_work_runs_in_order_and_flush_waits_and_raises(tmp_path):
    """`submit` runs on the background thread in order; `flush` waits for it (the events are in
    the file after it) and raises its error; `close` waits too."""
    import threading

    gate = threading.Event()
    w = events.EventWriter(tmp_path)
    w.submit(lambda: (gate.wait(5), w.add_scalar("bg", 1.0, 1)))
    w.submit(lambda: w.add_scalar("bg", 2.0, 2))
    w.add_scalar("fg", 3.0, 3)  # the caller is not blocked by the pending work
    gate.set()
    w.flush()
    steps = [(e.step, e.summary.value[0].tag) for e in
             event_file_loader.EventFileLoader(str(w.path)).Load() if e.summary.value]
    assert steps == [(3, "fg"), (1, "bg"), (2, "bg")]

    def boom():
        raise RuntimeError("drawing failed")

    w.submit(boom)
    with pytest.raises(RuntimeError, match="drawing failed"):
        w.flush()
    w.flush()  # the error is raised once
    w.submit(lambda: w.add_scalar("bg", 4.0, 4))
    w.close()
    last = list(event_file_loader.EventFileLoader(str(w.path)).Load())[-1]
    assert last.step == 4
