"""The one host loop (`optaxlab.train.run`): a solo run and the same point run as a group of one
write the same files; throughput fields; the profiler window."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optaxlab import configs
from optaxlab.train import ConfigError, train
from optaxlab.train import config as config_lib
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import vectorized as V

ROOT = Path(__file__).resolve().parents[2]
ONE = jax.devices()[:1]
TIMED = ("steps_per_sec", "tokens_per_sec", "tokens_per_sec_per_device", "mfu")
RTOL = 2e-6  # float32 round-off: the group's program is another compiled graph (see below)


def tiny_lm(**fields):
    c = configs.get_config("lm_tiny")
    c.steps, c.batch_size, c.seq_len, c.log_every = 6, 8, 32, 1
    c.model.d_model, c.model.n_layers, c.model.n_heads, c.model.max_len = 32, 1, 4, 32
    c.eval_every, c.eval_batches, c.checkpoint_every = 3, 2, 3
    c.monitor.every, c.progress_bar, c.data.num_threads = 0, False, 0
    c.mesh.data = 1
    for k, v in fields.items():
        node, *path = k.split(".")
        (c[node] if path else c)[path[0] if path else node] = v
    return c


def tags(workdir: Path) -> dict[str, list[int]]:
    """TensorBoard scalar tag -> the steps it was written at."""
    acc = EventAccumulator(str(workdir / "tensorboard"))
    acc.Reload()
    return {t: [e.step for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_solo_and_group_of_one_write_the_same_files(tmp_path):
    cfg = tiny_lm()
    solo = train(cfg, tmp_path / "solo", devices=ONE)
    group = V.train_group([cfg], [tmp_path / "member"], tmp_path / "group", devices=ONE)
    a, b = tmp_path / "solo", tmp_path / "member"
    assert (solo.status, solo.message) == (group.statuses[0], group.messages[0])
    assert solo.message == "finished at step 6 of 6"
    sa, sb = (json.loads((w / "status.json").read_text()) for w in (a, b))
    assert sa.pop("time") and sb.pop("time") and sa == sb
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()
    ra, rb = (metrics_lib.read_jsonl(w / "metrics.jsonl") for w in (a, b))
    assert [list(r) for r in ra] == [list(r) for r in rb]  # the same keys in the same order
    assert [r["step"] for r in ra] == list(range(1, 7))
    assert "eval_loss" in ra[2] and "tokens_per_sec_per_device" in ra[-1]
    for x, y in zip(ra, rb, strict=True):
        for key in x:
            if key in TIMED:
                continue
            if isinstance(x[key], int) or key == "lr":
                assert x[key] == y[key], (key, x, y)  # step, skipped_steps: exact; lr: float32
            else:
                assert np.isclose(x[key], y[key], rtol=RTOL, atol=0), (key, x[key], y[key])
    assert tags(a) == tags(b)
    assert tags(a)["train/loss"] == list(range(1, 7)) and tags(a)["eval/loss"] == [3, 6]
    assert "train/tokens_per_sec_per_device" in tags(a)
    # the member's checkpoints are its group's (GROUP_DIR/checkpoints), named in group.json
    files = lambda w: sorted(p.name for p in w.iterdir() if p.name not in (
        "checkpoints", V.GROUP_JSON))
    assert files(a) == files(b)


def test_throughput_fields_and_the_profiler_window(tmp_path):
    cfg = tiny_lm(**{"profile.start": 2, "profile.steps": 2, "eval_every": 0})
    res = train(cfg, tmp_path / "w", devices=ONE)
    last = res.records[-1]
    # one device: the device's rate is the run's; a CPU's peak is unknown, so no MFU
    assert last["tokens_per_sec_per_device"] == pytest.approx(last["tokens_per_sec"])
    assert last["tokens_per_sec"] == pytest.approx(last["steps_per_sec"] * 8 * 32)
    assert "mfu" not in last
    traces = list((tmp_path / "w" / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0


@pytest.mark.parametrize("window, says", [
    ({"start": 0, "steps": 2}, r"^config\.profile: start=0 steps=2 is not a window of steps 1"),
    ({"start": 5, "steps": 3}, r"^config\.profile: start=5 steps=3 .*start \+ steps - 1 <= steps"),
    ({"start": 1, "steps": -1}, r"^config\.profile\.steps: -1 must be a non-negative int"),
    ({"start": -2, "steps": 0}, r"^config\.profile\.start: -2 must be a non-negative int"),
    ({"start": 7, "steps": 1}, r"^config\.profile: start=7 steps=1 is not a window"),
])
def test_a_bad_profiler_window_is_a_config_error(window, says):
    cfg = tiny_lm(**{f"profile.{k}": v for k, v in window.items()})
    with pytest.raises(ConfigError, match=says):
        config_lib.validate(cfg, num_devices=1)


def test_throughput_of_a_group_counts_every_member_on_a_device():
    # K=4 members on 2 devices at 2 steps/s, 256 tokens a step: each member 512 tokens/s, each
    # device 1024; MFU against the chip's peak where known (H100), none on CPU.
    from types import SimpleNamespace as NS

    from optaxlab.train import hardware
    from optaxlab.train import run as run_lib

    loop = NS(unit="tokens", per_step=256, p=NS(k=4, mesh=NS(size=2)), flops=1e9,
              device_kind="NVIDIA H100 80GB HBM3")
    out = run_lib._Loop.throughput(loop, 2.0)
    peak = hardware.peak_flops("NVIDIA H100 80GB HBM3")
    assert peak and out == {"steps_per_sec": 2.0, "tokens_per_sec": 512.0,
                            "tokens_per_sec_per_device": 1024.0, "mfu": 1e9 * 1024.0 / peak}
    assert "mfu" not in run_lib._Loop.throughput(NS(**{**vars(loop), "device_kind": "cpu"}), 2.0)


def test_gradient_accumulation_in_solo_runs_and_groups(tmp_path):
    """config.grad_accum_steps reaches the trainer's step, solo and vectorized: 2 microbatches of
    4 train as the full batch of 8 (to float32 round-off), and a group member as its solo run."""
    full = train(tiny_lm(steps=3, eval_every=0), tmp_path / "full", devices=ONE)
    accum = train(tiny_lm(steps=3, eval_every=0, grad_accum_steps=2), tmp_path / "accum",
                  devices=ONE)
    V.train_group([tiny_lm(steps=3, eval_every=0, grad_accum_steps=2)], [tmp_path / "member"],
                  tmp_path / "group", devices=ONE)
    assert full.status == accum.status == "finished"
    loss = {n: [r["loss"] for r in metrics_lib.read_jsonl(tmp_path / n / "metrics.jsonl")]
            for n in ("full", "accum", "member")}
    np.testing.assert_allclose(loss["accum"], loss["full"], rtol=2e-5)
    np.testing.assert_allclose(loss["member"], loss["accum"], rtol=2e-5)
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        train(tiny_lm(grad_accum_steps=3), tmp_path / "bad", devices=ONE)
