"""What the accelerators the trainer targets can do: peak FLOP/s, memory, bandwidth.

One table, read by the trainer's MFU (``mfu = model FLOPs per token x tokens/s / peak``) and by
the deviceless compile tool (``python -m optaxlab.train.aot``). Numbers are the vendors'
published dense (no sparsity) peaks per chip; ``memory_bytes`` is what one device offers:

| chip | bf16 dense TFLOP/s | HBM | HBM bandwidth |
|---|---:|---:|---:|
| NVIDIA H100 SXM | 989.4 | 80 GB | 3.35 TB/s |
| NVIDIA H200 SXM | 989.4 | 141 GB | 4.8 TB/s |
| NVIDIA A100 SXM 80GB | 312 | 80 GB | 2.039 TB/s |
| TPU v4 | 275 | 32 GiB | 1.2 TB/s |
| TPU v5e | 197 | 16 GiB | 0.819 TB/s |
| TPU v5p | 459 | 95 GiB | 2.765 TB/s |
| TPU v6e (Trillium) | 918 | 32 GiB | 1.64 TB/s |

References: NVIDIA H100 / H200 / A100 datasheets; Google Cloud TPU system architecture pages
(v4, v5e, v5p, v6e).
"""

from __future__ import annotations

from typing import NamedTuple

GiB = 2**30


class Chip(NamedTuple):
    name: str
    platform: str  # "gpu" | "tpu"
    peak_flops: float  # bf16 dense FLOP/s per chip
    memory_bytes: float  # device memory per chip
    hbm_bandwidth: float  # bytes/s


CHIPS: dict[str, Chip] = {
    "h100": Chip("h100", "gpu", 989.4e12, 80e9, 3.35e12),
    "h200": Chip("h200", "gpu", 989.4e12, 141e9, 4.8e12),
    "a100": Chip("a100", "gpu", 312e12, 80e9, 2.039e12),
    "v4": Chip("v4", "tpu", 275e12, 32 * GiB, 1.2e12),
    "v5e": Chip("v5e", "tpu", 197e12, 16 * GiB, 0.819e12),
    "v5p": Chip("v5p", "tpu", 459e12, 95 * GiB, 2.765e12),
    "v6e": Chip("v6e", "tpu", 918e12, 32 * GiB, 1.64e12),
}

# jax's `device.device_kind` strings -> table keys (checked in order, substring match).
_KINDS = (
    ("h100", "h100"), ("h200", "h200"), ("a100", "a100"),
    ("tpu v4", "v4"), ("tpu v5 lite", "v5e"), ("tpu v5e", "v5e"), ("tpu v5p", "v5p"),
    ("tpu v5", "v5p"), ("tpu v6 lite", "v6e"), ("tpu v6e", "v6e"), ("tpu7x", None),
)


def chip(device_kind: str) -> Chip | None:
    """The table's chip for a jax ``device.device_kind`` (e.g. 'NVIDIA H100 80GB HBM3',
    'TPU v5 lite'), or None for CPUs and unknown devices."""
    kind = device_kind.lower()
    for key, name in _KINDS:
        if key in kind:
            return CHIPS[name] if name else None
    return None


def peak_flops(device_kind: str) -> float | None:
    """Peak bf16 dense FLOP/s of one device of this kind; None where unknown (CPU)."""
    c = chip(device_kind)
    return c.peak_flops if c else None


def mfu(model_flops_per_token: float, tokens_per_sec_per_device: float,
        device_kind: str) -> float | None:
    """Model FLOPs utilization of one device: achieved model FLOP/s over the chip's peak, or
    None where the peak is unknown (CPU says n/a)."""
    peak = peak_flops(device_kind)
    if peak is None:
        return None
    return model_flops_per_token * tokens_per_sec_per_device / peak


class Target(NamedTuple):
    """A slice the deviceless compile tool (`optaxlab.train.aot`) compiles for."""

    name: str  # 'v5e-8', 'h100-8', ...
    chip: str  # key of CHIPS
    platform: str  # "gpu" | "tpu"
    devices: int  # jax devices (TPU v4 / v5p: one megacore chip = one device)
    topology: str  # libtpu topology name ('v5e:2x4') or the CUDA topology ('1x1x8')
    chip_config: str | None = None  # libtpu chip config ('megacore' for v4 / v5p)


# TPU names count TensorCores (v4-8 / v5p-8 = 4 megacore chips, v5e-8 / v6e-8 = 8 chips);
# GPU names count GPUs in one node.
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("v4-8", "v4", "tpu", 4, "v4:2x2x1", "megacore"),
    Target("v5e-8", "v5e", "tpu", 8, "v5e:2x4"),
    Target("v5e-16", "v5e", "tpu", 16, "v5e:4x4"),
    Target("v5p-8", "v5p", "tpu", 4, "v5p:2x2x1", "megacore"),
    Target("v6e-8", "v6e", "tpu", 8, "v6e:2x4"),
    Target("h100-1", "h100", "gpu", 1, "1x1x1"),
    Target("h100-8", "h100", "gpu", 8, "1x1x8"),
    Target("h200-8", "h200", "gpu", 8, "1x1x8"),
    Target("a100-8", "a100", "gpu", 8, "1x1x8"),
)}


def target(name: str) -> Target:
    """The TARGETS entry `name` (ValueError naming the valid ones otherwise)."""
    if name not in TARGETS:
        raise ValueError(f"target={name!r}; valid: {list(TARGETS)}")
    return TARGETS[name]
