"""The monitor through the trainer (optaxlab.train, which wraps its optimizer in
`monitor.watch`): a histogram per layer per step in TensorBoard and both theory distances in
metrics.jsonl with every = 1; with every = 0 the optimizer is not wrapped and nothing of the
monitor runs."""

from pathlib import Path

import jax
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea

from optaxlab import configs, monitor
from optaxlab.train import metrics as metrics_lib
from optaxlab.train import train

ROOT = Path(__file__).resolve().parents[2]


def _tiny_lm(steps: int, every: int):
    c = configs.get_config("lm_tiny")
    c.steps, c.batch_size, c.seq_len = steps, 8, 32
    c.model.d_model, c.model.n_layers, c.model.n_heads, c.model.max_len = 32, 1, 4, 32
    c.log_every, c.eval_every, c.checkpoint_every = 1, 0, 2
    c.progress_bar = False
    c.data.num_threads = 0
    c.mesh.data = 1
    c.monitor.every = every
    c.monitor.image_steps = (2,)
    return c


@pytest.mark.slow  # compiles the trainer's monitored step (~20 s on an idle core)
def test_every_step_histograms_and_overlay_through_the_trainer(tmp_path):
    train(_tiny_lm(steps=3, every=1), tmp_path, devices=jax.devices()[:1])
    records = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    layers = sorted(k.split("/", 1)[1] for k in records[0] if k.startswith("update_var/"))
    assert "head/kernel" in layers and len(layers) >= 8
    for r in records:
        # the trainer passed adam's b1, b2: both distances for every layer
        assert {f"{k}/{n}" for n in layers for k in ("theory_tv", "noise_tv")} <= set(r)
        assert r["theory/m_eff"] >= 1.0 - 1e-6
        assert r["monitor/learning_rate"] == pytest.approx(r["lr"], rel=1e-6)
    assert records[0]["theory/m_eff"] == pytest.approx(1.0, abs=1e-5)
    acc = ea.EventAccumulator(
        str(tmp_path / "tensorboard"), size_guidance={ea.HISTOGRAMS: 0, ea.IMAGES: 0}
    )
    acc.Reload()
    for n in layers:
        assert [e.step for e in acc.Histograms(f"update_hist/{n}")] == [1, 2, 3]
        assert [e.step for e in acc.Histograms(f"grad_hist/{n}")] == [1, 2, 3]
    assert [im.step for im in acc.Images(monitor.IMAGE_TAG)] == [2]


def test_monitor_settings_may_change_on_resume_and_every_zero_runs_no_monitor(tmp_path,
                                                                             monkeypatch):
    """Checkpoints hold the optimizer's own state (the monitor is attached for one step), so a
    monitored run resumes without the monitor; with every = 0 nothing of it runs."""
    first = train(_tiny_lm(steps=3, every=1), tmp_path, devices=jax.devices()[:1], stop_after=2)
    assert "update_var/head/kernel" in first.records[-1]

    def forbidden(*args, **kwargs):
        raise AssertionError("the monitor ran with monitor.every = 0")

    monkeypatch.setattr(monitor, "watch", forbidden)
    monkeypatch.setattr(monitor, "write", forbidden)
    c = _tiny_lm(steps=3, every=0)
    c.checkpoint_every = 2
    result = train(c, tmp_path, devices=jax.devices()[:1])
    assert result.start_step == 2 and [r["step"] for r in result.records] == [3]
    assert not any("/" in k for r in result.records for k in r)  # no per-layer scalars
    assert not (tmp_path / "checkpoints_corrupt").exists()
