"""`python -m optaxlab.report WORKDIR`: figures and the HTML page from a monitored workdir."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import monitor, report


def _workdir(tmp_path, steps=6):
    """A workdir as the trainer leaves it: tensorboard/ events and metrics.jsonl records."""
    rng = np.random.default_rng(0)
    params = {"mlp": {"kernel": jnp.zeros((64, 48)), "bias": jnp.zeros((48,))}}
    lr = 0.01
    opt = monitor.watch(optax.adam(lr, b1=0.9, b2=0.95, eps=1e-12), learning_rate=lr, b1=0.9,
                        b2=0.95, eps=1e-12, image_steps=())

    @jax.jit
    def step(params, state, g):
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state

    workdir = tmp_path / "run"
    writer = monitor.EventWriter(str(workdir / "tensorboard"))
    state, logged = opt.init(params), {}
    with open(workdir / "metrics.jsonl", "w") as f:
        for t in range(1, steps + 1):
            g = jax.tree.map(
                lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params
            )
            params, state = step(params, state, g)
            logged[t] = jax.device_get(monitor.latest(state))
            record = {"step": t, "loss": 3.0 / t, **monitor.write(writer, t, logged[t])}
            f.write(json.dumps(record) + "\n")
    writer.close()
    (workdir / "config.json").write_text(json.dumps({"optimizer": {"name": "adam", "b2": 0.95}}))
    return workdir, logged


def test_report_renders_the_three_figure_kinds(tmp_path, capsys):
    workdir, logged = _workdir(tmp_path)
    out = tmp_path / "out"
    assert report.main([str(workdir), "--out", str(out), "--max-layers", "1"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "index.html") in printed
    pngs = {p.name for p in out.glob("*.png")}
    # the largest layer is picked for the histogram figure
    assert pngs == {
        "update_hist_mlp_kernel.png",
        "variance.png",
        "spread.png",
        "diagnostics.png",
        "loss.png",
    }
    for name in pngs:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
        assert (out / name).stat().st_size > 5000
    page = (out / "index.html").read_text()
    for name in pngs:
        assert f"src='{name}'" in page
    assert "adam" in page

    # What the figures are drawn from equals what the monitor logged.
    scalars = report.load_scalars(workdir)
    hists = report.load_histograms(report._accumulator(workdir / "tensorboard"), scalars)
    assert sorted(hists) == ["mlp/bias", "mlp/kernel"]
    counts, edges = hists["mlp/kernel"][3]
    np.testing.assert_array_equal(counts, logged[3].histogram("mlp/kernel"))
    np.testing.assert_allclose(edges, monitor.settings(monitor.default_config()).edges(), 1e-6)
    steps, m_eff = scalars["theory/m_eff"]
    assert list(steps) == list(range(1, 7))
    assert abs(m_eff[0] - 1.0) < 1e-6 and np.all(np.diff(m_eff) > 0)
    assert list(scalars["noise_tv/mlp/kernel"][0]) == list(range(1, 7))


def test_report_errors_clearly(tmp_path, capsys):
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "monitor.every" in capsys.readouterr().err


def test_read_histograms_gives_back_what_the_monitor_counted(tmp_path):
    workdir, logged = _workdir(tmp_path)
    for path in (workdir, workdir / "tensorboard"):
        hists = monitor.read_histograms(path)
        assert sorted(hists) == ["mlp/bias", "mlp/kernel"] and sorted(hists["mlp/bias"]) == [
            1, 2, 3, 4, 5, 6]
        for t in (1, 6):
            counts, edges = hists["mlp/kernel"][t]
            np.testing.assert_array_equal(counts, logged[t].histogram("mlp/kernel"))
            assert len(edges) == len(counts) - 1
    grads = monitor.read_histograms(workdir, "grad")
    assert sorted(grads) == ["mlp/bias", "mlp/kernel"]
    assert grads["mlp/kernel"][2][0].sum() == 64 * 48
    steps, loss = monitor.read_scalars(workdir)["loss"]
    np.testing.assert_allclose(loss, 3.0 / steps)
    with pytest.raises(ValueError, match="kind='delta'; valid: update, grad"):
        monitor.read_histograms(workdir, "delta")
    with pytest.raises(FileNotFoundError, match="no TensorBoard folder"):
        monitor.read_histograms(tmp_path / "nothing")
