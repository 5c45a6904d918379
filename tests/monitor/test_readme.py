"""The Flax NNX + optax monitoring loop of docs/monitoring.md, run exactly as written, read back
with TensorBoard's EventAccumulator."""

import os
import re
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing import event_accumulator as ea

README = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"
MARKER = "<!-- readme-monitor-loop:"


def readme_snippet() -> str:
    """The ```python block right after the marker comment in docs/monitoring.md."""
    text = README.read_text()
    assert text.count(MARKER) == 1, "docs/monitoring.md must mark exactly one monitoring loop"
    after = text[text.index(MARKER):]
    block = re.search(r"```python\n(.*?)\n```", after, re.S)
    assert block is not None and after.index("```python") < after.index("\n\n") + 2
    return block.group(1)


def test_readme_monitor_loop_writes_histograms_and_distances(tmp_path):
    code = readme_snippet()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the snippet writes to runs/readme/ relative to the current directory
    try:
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    finally:
        os.chdir(cwd)
    acc = ea.EventAccumulator(str(tmp_path / "runs" / "readme" / "tensorboard"),
                              size_guidance={ea.HISTOGRAMS: 0, ea.SCALARS: 0, ea.IMAGES: 0})
    acc.Reload()
    layers = ["layers/0/bias", "layers/0/kernel", "layers/2/bias", "layers/2/kernel"]
    tags = acc.Tags()
    assert set(tags["histograms"]) == {f"{k}_hist/{n}" for k in ("update", "grad") for n in layers}
    steps = list(range(1, 101))
    for n in layers:
        assert [e.step for e in acc.Histograms(f"update_hist/{n}")] == steps
        for metric in ("theory_tv", "noise_tv", "update_var", "spread"):
            assert [s.step for s in acc.Scalars(f"{metric}/{n}")] == steps, (metric, n)
    noise = np.array([s.value for s in acc.Scalars("noise_tv/layers/0/kernel")])
    assert np.all((noise >= 0) & (noise <= 1)) and noise[1:].max() > 0.1  # a signal to learn
    assert namespace["loss"] < 8.0  # the loop trained (from ~32: the target has variance 32)
    assert acc.Images("update_vs_theory")  # at the default image_steps
