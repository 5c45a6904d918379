"""metrics.jsonl and TensorBoard writing: records past the resume step are moved aside, never
deleted; the object-store way (whole-object rewrites, staged event files copied up) on a local
path, read back with TensorBoard's own loader."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optaxlab.train import metrics as metrics_lib


def _steps(path):
    return [r["step"] for r in metrics_lib.read_jsonl(path)]


def test_supersede_keeps_history_aside(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)) + '{"ste')
    assert metrics_lib.supersede(path, 3) == [json.dumps({"step": s}) for s in (1, 2, 3)]
    assert _steps(path) == [1, 2, 3]
    assert (tmp_path / "metrics.superseded.jsonl").read_text().splitlines() == [
        '{"step": 4}', '{"step": 5}', '{"ste']
    metrics_lib.supersede(path, 0)  # a fresh start: nothing deleted, appended to the side file
    assert _steps(path) == [] and _steps(tmp_path / "metrics.superseded.jsonl") == [4, 5, 1, 2, 3]


def _write(workdir, steps, resume, **kw):
    w = metrics_lib.Writer(workdir, resume_step=resume, **kw)
    for s in steps:
        w.scalars(s, {"loss": float(s)}, "train")
        w.record({"step": s, "loss": float(s)})
    w.flush()
    return w


def test_object_store_way_on_a_local_path(tmp_path):
    """local=False: metrics.jsonl rewritten whole at each flush, event files written to a local
    staging folder and copied up (a new file past roll_bytes); TensorBoard shows each step once
    after a resume."""
    w = _write(tmp_path, range(1, 6), 0, local=False, roll_bytes=200)
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2, 3, 4, 5]  # visible before close
    w.close()
    w = _write(tmp_path, range(4, 9), 3, local=False, roll_bytes=200)  # resumed at step 3
    w.record({"step": 9, "loss": 9.0})
    w.close()
    assert _steps(tmp_path / "metrics.jsonl") == list(range(1, 10))
    assert _steps(tmp_path / "metrics.superseded.jsonl") == [4, 5]
    files = sorted((tmp_path / "tensorboard").iterdir())
    assert len(files) >= 3  # rolled: two runs, at least one of them in several files
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 9))


def test_local_way_appends(tmp_path):
    _write(tmp_path, range(1, 4), 0).close()
    _write(tmp_path, range(3, 5), 2).close()
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2, 3, 4]
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
