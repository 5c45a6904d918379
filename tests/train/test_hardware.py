"""optaxlab.train.hardware: chip lookup by jax device_kind and MFU."""

import pytest

from optaxlab.train import hardware


@pytest.mark.parametrize("kind,name", [
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"),
    ("NVIDIA A100-SXM4-80GB", "a100"), ("TPU v4", "v4"), ("TPU v5 lite", "v5e"),
    ("TPU v5", "v5p"), ("TPU v5p", "v5p"), ("TPU v6 lite", "v6e"),
])
def test_known_device_kinds(kind, name):
    assert hardware.chip(kind).name == name


def test_cpu_has_no_peak_and_no_mfu():
    assert hardware.chip("cpu") is None
    assert hardware.mfu(1e9, 1e3, "cpu") is None


def test_mfu_is_achieved_over_peak():
    # 6 N flops per token for N = 1e8 at 4e5 tokens/s on an H100: 2.4e14 / 9.894e14.
    assert hardware.mfu(6e8, 4e5, "NVIDIA H100 80GB HBM3") == pytest.approx(2.4e14 / 989.4e12)
