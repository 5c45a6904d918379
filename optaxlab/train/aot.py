"""Compile the real train step for a GPU / TPU without one, and say whether and how it fits.

    python -m optaxlab.train.aot --config lm_160m --target v5e-8 \
        [--config.FIELD=VALUE ...] [--json]
    python -m optaxlab.train.aot --table [--json]   # the lm_160m / lm_410m table (`make aot`)

Targets (``optaxlab.train.hardware.TARGETS``): TPUs through libtpu's compile-only topologies
(``jax.experimental.topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x4")``),
NVIDIA GPUs through jax's CUDA plugin with an XLA GPU target description
(``optaxlab/train/targets/*.txtpb``, written from the vendors' published specs) and
``get_topology_desc("h100", "cuda", target_config=..., topology="1x1x8")``. Neither needs the
hardware: the step is lowered with ``NamedSharding``s over a mesh of the topology's
compile-only devices and compiled; nothing runs. Needs the extras
``pip install -e ".[tpu-aot]"`` / ``".[gpu-aot]"`` (pinned to the installed jax).

The step is the trainer's own: config validation, mesh, optimizer (through the monitor when
``monitor.every > 0``), state shardings and ``step.compile_steps`` are the modules
``optaxlab.train.loop`` uses (`build`). What is printed, per device:

* XLA's memory analysis (arguments, outputs, temporaries; total = arguments + outputs -
  aliased + temporaries) against the device's memory: fits / does not fit (TPU's compiler
  refuses a program that does not fit: its message and the bytes it names are reported);
* model FLOPs per step, ``optaxlab.models.flops_per_token x batch x seq_len`` (6 N + 12 L d T
  per token), and XLA's count (``cost_analysis``) where the backend gives one (TPU);
* collective bytes per step by kind, read from the compiled HLO (`collective_bytes`): the
  size of the full buffer each device gathers / reduces / exchanges (an all-gather's output,
  a reduce-scatter's input, an all-reduce's or all-to-all's buffer), with the largest shapes;
* the floor of the configured sharding (`collective_floor`): with fsdp > 1 every parameter is
  all-gathered once and its gradient reduce-scattered once (both in the compute dtype); with
  data > 1 the gradient shard is all-reduced over the data axis;
* a step-time floor: compute-bound (max(model, XLA) FLOPs / (devices x peak)) and memory-bound
  (XLA's bytes accessed, else the argument + output bytes, over the HBM bandwidth), and the MFU
  ceiling it implies (model FLOPs / (devices x peak x floor));
* when it does not fit, what would (`advice`): gradient accumulation (microbatches), a smaller
  microbatch, rematerialization, each with its estimated total (estimates; compile the
  suggested setting to check).

Collectives inside loop bodies (``while``) are counted once per appearance, not per trip;
instructions with one channel_id are one collective.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from optaxlab.train import hardware

TARGET_DIR = Path(__file__).resolve().parent / "targets"
EXTRAS = {"tpu": "tpu-aot", "gpu": "gpu-aot"}
USABLE = 1.0  # fraction of device memory counted as usable (XLA's TPU limit is the HBM size)


# --------------------------------------------------------------------------------------------
# Pure parts: HLO collectives, floors, step-time floor and MFU ceiling (no extras needed).

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
                "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 0.5, "u4": 0.5}
KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_OP = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>.*?)\s+"
                 r"(?P<op>all-gather-start|all-gather|reduce-scatter-start|reduce-scatter|all-reduce-start|"
                 r"all-reduce|all-to-all|ragged-all-to-all|collective-permute-start|"
                 r"collective-permute)\((?P<rest>.*)$")
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e\d+m\d+(?:fn)?)?)\[([0-9,]*)\]")


def shape_bytes(shape_text: str) -> list[float]:
    """Bytes of every array shape (``bf16[4,128]{1,0}``) in an HLO shape string."""
    out = []
    for dtype, dims in _ARRAY.findall(shape_text):
        if dtype not in _DTYPE_BYTES:
            continue
        n = math.prod(int(x) for x in dims.split(",") if x) if dims else 1
        out.append(n * _DTYPE_BYTES[dtype])
    return out


def group_size(rest: str, num_devices: int) -> int:
    """Participants per replica group of a collective from its HLO attributes: explicit
    ``{{0,1},{2,3}}``, iota ``[2,4]<=[8]`` or mesh ``mesh['a'=2,'b'=4] {'b'}`` form; all
    devices when the groups are empty or absent."""
    m = re.search(r"replica_groups=(\{\{[^}]*\})", rest)
    if m:
        return len([x for x in m.group(1).strip("{}").split(",") if x.strip()])
    m = re.search(r"replica_groups=\[([0-9,]+)\]<=", rest)
    if m:
        return int(m.group(1).split(",")[-1])
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", rest)
    if m:
        sizes = {k.strip("' "): int(v) for k, v in
                 (kv.split("=") for kv in m.group(1).split(",") if "=" in kv)}
        names = [x.strip("' ") for x in m.group(2).split(",") if x.strip("' ")]
        return math.prod(sizes[n] for n in names) if names else num_devices
    return num_devices


def parse_collectives(hlo_text: str, num_devices: int) -> list[dict[str, Any]]:
    """Every collective of an HLO module (``-done`` halves skipped): kind, bytes (the full
    buffer per device, see the module docstring), group size and the result shape text.

    Instructions sharing a channel_id are one collective (TPU's compiler clones and splits
    them into fusions): counted once, at the size of the largest piece."""
    found: list[dict[str, Any]] = []
    by_channel: dict[tuple[str, str], dict[str, Any]] = {}
    for line in hlo_text.splitlines():
        m = _OP.match(line)
        if not m:
            continue
        op, shape, rest = m.group("op"), m.group("shape"), m.group("rest")
        kind = op.removesuffix("-start").removeprefix("ragged-")
        sizes = [b for b in shape_bytes(shape) if b > 0]
        if op in ("collective-permute-start",):  # (operand, output, contexts...)
            sizes = [b for b, (dt, _) in zip(shape_bytes(shape), _ARRAY.findall(shape),
                                              strict=False) if dt not in ("u32", "s32")
                     or b > 4]
        g = group_size(rest, num_devices) if kind != "collective-permute" else 2
        total = float(sum(sizes))
        if op == "all-gather-start":  # (operands, outputs): outputs = g / (g + 1) of the sum
            total *= g / (g + 1)
        elif op == "reduce-scatter-start":  # (operands, outputs): operands = g / (g + 1)
            total *= g / (g + 1)
        elif op == "collective-permute-start":  # (operand, output)
            total /= 2
        elif kind == "reduce-scatter":  # the result is 1/g of the reduced buffer
            total *= g
        channel = re.search(r"channel_id=(\d+)", rest)
        c = {"kind": kind, "bytes": total, "group": g, "name": m.group("name"),
             "shape": shape.strip(), "channel": channel.group(1) if channel else None}
        key = (kind, c["channel"])
        if c["channel"] is not None and key in by_channel:  # one collective, several pieces
            first = by_channel[key]
            if total > first["bytes"]:
                first.update(bytes=total, shape=c["shape"])
            continue
        if c["channel"] is not None:
            by_channel[key] = c
        found.append(c)
    return found


def collective_bytes(hlo_text: str, num_devices: int, top: int = 3
                     ) -> tuple[dict[str, float], dict[str, list[str]]]:
    """(bytes per step by kind, the `top` largest shapes of each kind) of an HLO module."""
    by_kind = {k: 0.0 for k in KINDS}
    largest: dict[str, list[tuple[float, str]]] = {k: [] for k in KINDS}
    for c in parse_collectives(hlo_text, num_devices):
        by_kind[c["kind"]] += c["bytes"]
        largest[c["kind"]].append((c["bytes"], f"{c['shape']} x{c['group']}"))
    shapes = {k: [s for _, s in sorted(v, key=lambda x: -x[0])[:top]] for k, v in
              largest.items() if v}
    return by_kind, shapes


def collective_floor(param_bytes: float, mesh_shape: Sequence[int],
                     compute_bytes_per_param: float = 2.0) -> dict[str, float]:
    """Collective bytes per device and step the configured sharding cannot avoid.

    `param_bytes`: float32 bytes of all parameters; mesh (data, fsdp, tensor). The step casts
    the float32 parameters to the compute dtype (`compute_bytes_per_param` bytes per 4-byte
    parameter), so the weights travel in it and so does their gradient until it is cast back.
    With fsdp > 1: one all-gather of the parameters and one reduce-scatter of the gradient,
    both in the compute dtype; with data > 1 the gradient shard (1 / fsdp of it) is all-reduced
    over 'data'. (A float32 reduce-scatter is not the floor: XLA reduces the bf16 gradient
    before the cast, and the compiled lm_160m steps on h100-8 and v5e-8 move less than a
    float32 reduce-scatter would.) Tensor parallelism's activation traffic is not counted."""
    data, fsdp, _ = mesh_shape
    weights = param_bytes * compute_bytes_per_param / 4
    out = {"all-gather": 0.0, "reduce-scatter": 0.0, "all-reduce": 0.0}
    if fsdp > 1:
        out["all-gather"] = weights
        out["reduce-scatter"] = weights
    if data > 1:
        out["all-reduce"] = weights / fsdp
    return out


def step_floor(model_flops: float, devices: int, peak_flops: float, hbm_bandwidth: float,
               bytes_accessed: float, xla_flops: float | None = None) -> dict[str, float]:
    """Step-time floor in seconds: compute-bound (the larger of the model's and XLA's FLOPs
    over `devices` x peak), memory-bound (per-device bytes accessed over the HBM bandwidth),
    and the MFU ceiling they imply: model FLOPs / (devices x peak x max(both))."""
    flops = max(model_flops, xla_flops or 0.0)
    compute = flops / (devices * peak_flops)
    memory = bytes_accessed / hbm_bandwidth
    floor = max(compute, memory)
    ceiling = min(model_flops / (devices * peak_flops * floor), 1.0) if floor > 0 \
        else float("nan")  # (min: 1 + 2e-16 from rounding when compute-bound)
    return {"compute_s": compute, "memory_s": memory, "floor_s": floor, "mfu_ceiling": ceiling}


_OOM = re.compile(r"Used\s+([0-9.]+)([KMGT]?)\s*of\s+([0-9.]+)([KMGT]?)\s+hbm", re.I)
_OOM_TEMP = re.compile(r"HLO temporaries \(([0-9.]+)([KMGT]?)\) exceeds available HBM "
                       r"\(([0-9.]+)([KMGT]?)\)", re.I)
_UNIT = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def oom_bytes(message: str) -> tuple[float, float] | None:
    """(used, capacity) bytes from an XLA TPU out-of-memory message ('Used 19.1G of 15.75G
    hbm', or 'HLO temporaries (18.78G) exceeds available HBM (15.75G)': then the temporaries
    alone, a lower bound), or None."""
    m = _OOM.search(message) or _OOM_TEMP.search(message)
    if not m:
        return None
    return (float(m.group(1)) * _UNIT[m.group(2).upper()],
            float(m.group(3)) * _UNIT[m.group(4).upper()])


def one_line(e: BaseException) -> str:
    """The most telling line of an exception's message (an XLA status line if there is one)."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    raised = [x for x in lines if re.match(r"^[\w.]*(Error|Exception): ", x)]
    if raised and "Traceback" in str(e):  # a Python error inside XLA (custom partitioner)
        return f"{type(e).__name__}: {raised[-1]}"[:400]
    for line in lines:
        if any(k in line for k in ("RESOURCE_EXHAUSTED", "Ran out of memory", "Used ")):
            return f"{type(e).__name__}: {line}"[:400]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:400]


def missing_extra(target: hardware.Target) -> str | None:
    """The one-line error for a target whose extra is not installed, else None."""
    module = "libtpu" if target.platform == "tpu" else "jax_plugins.xla_cuda12"
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if found:
        return None
    what = "libtpu" if target.platform == "tpu" else "the jax CUDA plugin"
    extra = EXTRAS[target.platform]
    return f'error: target {target.name} needs {what}: pip install -e ".[{extra}]"'


# --------------------------------------------------------------------------------------------
# The compile (needs the extras).

def _jax_for_aot():
    """Import jax with its CPU backend only (the targets' devices are compile-only)."""
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: no chip to lock
    import jax

    try:
        jax.config.update("jax_platforms", "cpu")
    except RuntimeError:  # backends already up (e.g. in a test session): fine if it is CPU
        pass
    return jax


def topology_devices(target: hardware.Target) -> list:
    """The compile-only devices of `target` (raises SystemExit when the extra is missing)."""
    err = missing_extra(target)
    if err:
        raise SystemExit(err)
    _jax_for_aot()
    from jax.experimental import topologies

    if target.platform == "tpu":
        kwargs = {"chip_config_name": target.chip_config} if target.chip_config else {}
        topo = topologies.get_topology_desc(platform="tpu", topology_name=target.topology,
                                            **kwargs)
    else:
        config = (TARGET_DIR / f"{target.chip}.txtpb").read_text()
        topo = topologies.get_topology_desc(target.chip, "cuda", target_config=config,
                                            topology=target.topology)
    devices = list(topo.devices)
    if len(devices) != target.devices:
        raise RuntimeError(f"topology {target.topology} gave {len(devices)} devices, "
                           f"expected {target.devices}")
    return devices


def build(config, devices: Sequence[Any]):
    """The trainer's jitted train step on a mesh of `devices`, with abstract arguments.

    Returns (jitted step, (abstract state, abstract batch), plan, param bytes). The same
    construction as `optaxlab.train.loop` (validate -> mesh -> optimizer [-> monitor.watch] ->
    state.create -> step.compile_steps), without the data pipelines (the batch is abstract)."""
    import jax
    import numpy as np

    from optaxlab.train import config as config_lib
    from optaxlab.train import mesh as mesh_lib
    from optaxlab.train import optim
    from optaxlab.train import state as state_lib
    from optaxlab.train import step as step_lib
    from optaxlab.train.loop import monitor_watch

    plan = config_lib.validate(config, num_devices=len(devices))
    mesh = mesh_lib.make_mesh(plan.mesh_shape, devices)
    tx = optim.make_optimizer(config.optimizer, config.steps)
    watch = monitor_watch(config, tx) if config.monitor.get("every", 0) else None
    graphdef, _, abstract, shardings = state_lib.create(config.model, tx, mesh, config.seed)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    train, _ = step_lib.compile_steps(
        graphdef=graphdef, tx=tx, task=plan.task, state_shardings=shardings,
        batch_sharding=batch_sharding, replicated=mesh_lib.replicated(mesh), watch=watch,
        grad_accum_steps=config.grad_accum_steps)
    if plan.task == "lm":
        tok = jax.ShapeDtypeStruct((config.batch_size, config.seq_len), np.int32,
                                   sharding=batch_sharding)
        batch = {"inputs": tok, "targets": tok}
    else:
        shape = tuple(config.model.input_shape)
        batch = {"image": jax.ShapeDtypeStruct((config.batch_size, *shape), np.float32,
                                               sharding=batch_sharding),
                 "label": jax.ShapeDtypeStruct((config.batch_size,), np.int32,
                                               sharding=batch_sharding)}
    from optaxlab.train.memory import tree_bytes

    return train, (abstract, batch), plan, tree_bytes(abstract.params)


def _tokens_per_step(config) -> float:
    return config.batch_size * (config.seq_len if config.model.name == "transformer" else 1)


def model_flops_per_step(config) -> float:
    from optaxlab import models

    seq = config.seq_len if config.model.name == "transformer" else None
    return models.flops_per_token(config.model, seq) * _tokens_per_step(config)


def advice(config, mesh_shape, total: float, temp: float, param_bytes: float,
           capacity: float) -> list[dict[str, Any]]:
    """Settings that would fit when `total` > `capacity`: dicts with `text`, `overrides` (the
    trainer flags), `estimate` (bytes per device) and `fits`. Estimates from the compiled
    sizes: temporaries other than the gradient shard scale with the microbatch; of those, the
    float32 logits and their gradient (8 V bytes per token) shrink to one chunk with
    `logits_chunk`, the rest to the block inputs and one live block with `remat=block`."""
    if total <= capacity:
        return []
    data, fsdp, tensor = mesh_shape
    grads = param_bytes / (fsdp * tensor)
    fixed = total - temp + grads
    scaling = max(temp - grads, 1.0)
    per_device = config.batch_size // (data * fsdp)
    m = config.model
    lm = m.name == "transformer"
    logits = min(8.0 * m.vocab_size * per_device * config.seq_len / tensor, 0.9 * scaling) \
        if lm else 0.0
    chunk = 512 if lm and config.seq_len % 512 == 0 else 0
    can_remat = lm and m.get("remat", "none") != "block"
    can_chunk = bool(chunk) and not m.get("logits_chunk") and m.vocab_size >= 8192
    out: list[dict[str, Any]] = []

    def live(remat: bool, chunked: bool) -> float:  # temporaries that scale with the batch
        rest = (scaling - logits) * ((1.5 / m.n_layers + 0.1) if remat else 1.0)
        return rest + logits * (chunk / config.seq_len if chunked else 1.0)

    def option(text: str, overrides: list[str], est: float) -> None:
        fits = est <= capacity
        out.append({"text": f"{text}: ~{est / 1e9:.1f} GB"
                    + ("" if fits else " (not enough alone)"),
                    "overrides": overrides, "estimate": est, "fits": fits})

    combos = [(r, c) for r, c in ((True, False), (False, True), (True, True))
              if (can_remat or not r) and (can_chunk or not c)]
    for r, c in combos:
        flags = ["--config.model.remat=block"] * r + [f"--config.model.logits_chunk={chunk}"] * c
        option(" + ".join(["rematerialization"] * r + ["chunked logits"] * c) + ": "
               + " ".join(flags), flags, fixed + live(r, c))
    for r, c in [(False, False), *combos]:
        k = next((k for k in range(2, per_device + 1) if per_device % k == 0
                  and fixed + live(r, c) / k <= capacity), None)
        if not k:
            continue
        flags = (["--config.model.remat=block"] * r + [f"--config.model.logits_chunk={chunk}"]
                 * c + [f"--config.grad_accum_steps={k}"])
        option(f"gradient accumulation: {' '.join(flags)} (microbatch "
               f"{config.batch_size // k}, {per_device // k}/device)", flags,
               fixed + live(r, c) / k)
        if not (r or c):
            option(f"a smaller batch (a different experiment): --config.batch_size="
                   f"{config.batch_size // k}", [f"--config.batch_size={config.batch_size // k}"],
                   fixed + live(r, c) / k)
        break
    if fixed > capacity:
        out.append({"text": f"parameters, optimizer state and gradients alone take "
                    f"{fixed / 1e9:.1f} GB: shard them over more devices (--config.mesh.fsdp)",
                    "overrides": [], "estimate": fixed, "fits": False})
    return out


def advised(options: Sequence[dict[str, Any]]) -> list[str] | None:
    """The flags the tool advises: the first option estimated to fit that keeps the experiment
    (remat / chunked logits, then accumulation; never a smaller batch), or None."""
    for o in options:
        if o["fits"] and o["overrides"] and "batch_size" not in o["overrides"][0]:
            return list(o["overrides"])
    return None


def analyze(config, target: hardware.Target, devices: Sequence[Any] | None = None,
            hlo_out: str | None = None) -> dict[str, Any]:
    """Compile the train step of `config` for `target`; the report as a dict (see `main`)."""
    jax = _jax_for_aot()
    chip = hardware.CHIPS[target.chip]
    capacity = chip.memory_bytes * USABLE
    devices = topology_devices(target) if devices is None else list(devices)
    out: dict[str, Any] = {
        "target": target.name, "chip": chip.name, "devices": len(devices),
        "compiled": False, "fits": False, "error": None,
        "config": {"batch_size": config.batch_size,
                   "seq_len": config.get("seq_len"),
                   "model": {k: config.model.get(k) for k in (
                       "name", "d_model", "n_layers", "n_heads", "vocab_size",
                       "compute_dtype", "attention_impl", "remat", "logits_chunk")
                       if k in config.model},
                   "grad_accum_steps": config.get("grad_accum_steps"),
                   "monitor_every": config.monitor.get("every", 0),
                   "optimizer": config.optimizer.name},
        "device_memory_bytes": capacity,
        "bytes_per_device": None, "memory_bytes_per_device": None,
        "collective_bytes_per_step": None, "collective_largest": None,
        "collective_floor_bytes": None, "collective_floor_by_kind": None,
        "model_flops_per_step": model_flops_per_step(config),
        "xla_flops_per_step": None, "xla_bytes_accessed_per_device": None,
        "step_time_floor_s": None, "mfu_ceiling": None, "advice": [],
        "advised_overrides": None,
    }
    train, args, plan, param_bytes = build(config, devices)
    out["mesh"] = dict(zip(("data", "fsdp", "tensor"), plan.mesh_shape, strict=True))
    compute_bytes = 2.0 if config.model.get("compute_dtype") == "bfloat16" else 4.0
    floor = collective_floor(param_bytes, plan.mesh_shape, compute_bytes)
    out["collective_floor_by_kind"] = floor
    out["collective_floor_bytes"] = sum(floor.values())
    out["param_bytes"] = param_bytes
    try:
        compiled = train.lower(*args).compile()
    except Exception as e:  # XLA's refusal (TPU: out of memory) or a lowering error
        out["error"] = one_line(e)
        used = oom_bytes(str(e))
        if used:
            out["bytes_per_device"] = used[0]
            options = advice(config, plan.mesh_shape, used[0], used[0] * 0.8,
                             param_bytes, used[1])
            out["advice"] = [o["text"] for o in options]
            out["advised_overrides"] = advised(options)
        return out
    out["compiled"] = True
    mem = compiled.memory_analysis()
    sizes = {"argument": mem.argument_size_in_bytes, "output": mem.output_size_in_bytes,
             "alias": mem.alias_size_in_bytes, "temporary": mem.temp_size_in_bytes,
             "generated_code": mem.generated_code_size_in_bytes}
    total = (sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temporary"]
             + sizes["generated_code"])
    sizes["total"] = total
    out["memory_bytes_per_device"] = sizes
    out["bytes_per_device"] = total
    out["fits"] = bool(total <= capacity)
    if not out["fits"]:
        out["error"] = (f"needs {total / 1e9:.2f} GB per device > {capacity / 1e9:.2f} GB "
                        f"({chip.name})")
    options = advice(config, plan.mesh_shape, total, sizes["temporary"], param_bytes, capacity)
    out["advice"] = [o["text"] for o in options]
    out["advised_overrides"] = advised(options)
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        cost = None
    if isinstance(cost, list):
        cost = cost[0] if cost else None
    if cost:
        if cost.get("flops"):
            out["xla_flops_per_step"] = float(cost["flops"]) * len(devices)
        if cost.get("bytes accessed"):
            out["xla_bytes_accessed_per_device"] = float(cost["bytes accessed"])
    hlo = compiled.as_text()
    if hlo_out:
        Path(hlo_out).write_text(hlo)
    by_kind, largest = collective_bytes(hlo, len(devices))
    out["collective_bytes_per_step"] = by_kind
    out["collective_largest"] = largest
    accessed = out["xla_bytes_accessed_per_device"] or float(
        sizes["argument"] + sizes["output"])
    floor_t = step_floor(out["model_flops_per_step"], len(devices), chip.peak_flops,
                         chip.hbm_bandwidth, accessed, out["xla_flops_per_step"])
    out["step_time_floor_s"] = floor_t
    out["mfu_ceiling"] = floor_t["mfu_ceiling"]
    del jax
    return out


# --------------------------------------------------------------------------------------------
# Report.

def _gb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e9:.2f} GB"


def report(r: dict[str, Any]) -> str:
    """The printed report of one `analyze` result."""
    c = r["config"]
    m = c["model"]
    lines = [f"# {r['target']}: {r['devices']} x {r['chip']}, mesh {r.get('mesh')}",
             f"model {m}; batch {c['batch_size']} x seq {c['seq_len']}; optimizer "
             f"{c['optimizer']}; monitor every {c['monitor_every']}"]
    if not r["compiled"]:
        lines.append(f"compiled: NO: {r['error']}")
        if r["bytes_per_device"]:
            lines.append(f"memory per device: {_gb(r['bytes_per_device'])} of "
                         f"{_gb(r['device_memory_bytes'])}: does not fit")
    else:
        s = r["memory_bytes_per_device"]
        lines.append(
            f"memory per device: arguments {_gb(s['argument'])}, temporaries "
            f"{_gb(s['temporary'])}, outputs {_gb(s['output'])} (aliased {_gb(s['alias'])}), "
            f"total {_gb(s['total'])} of {_gb(r['device_memory_bytes'])}: "
            + ("fits" if r["fits"] else f"does not fit ({r['error']})"))
    xla = r["xla_flops_per_step"]
    lines.append(f"model FLOPs per step: {r['model_flops_per_step']:.3e} "
                 f"(6 N + 12 L d T per token x tokens); XLA: "
                 + (f"{xla:.3e}" if xla else "n/a on this backend"))
    if r["collective_bytes_per_step"] is not None:
        coll = r["collective_bytes_per_step"]
        lines.append(f"collectives per step and device: total "
                     f"{_gb(sum(coll.values()))}; floor {_gb(r['collective_floor_bytes'])} "
                     f"({', '.join(f'{k} {_gb(v)}' for k, v in r['collective_floor_by_kind'].items() if v)})")  # noqa: E501
        for kind, b in coll.items():
            if b:
                shapes = "; ".join(r["collective_largest"].get(kind, []))
                lines.append(f"  {kind}: {_gb(b)}  largest: {shapes}")
    if r["step_time_floor_s"]:
        f = r["step_time_floor_s"]
        acc = r["xla_bytes_accessed_per_device"]
        lines.append(f"step-time floor: compute {f['compute_s'] * 1e3:.1f} ms, memory "
                     f"{f['memory_s'] * 1e3:.1f} ms ("
                     + (f"XLA bytes accessed {acc:.3e}" if acc else "arguments + outputs")
                     + f"); MFU ceiling {f['mfu_ceiling']:.1%}")
    for a in r["advice"]:
        lines.append(f"would fit: {a}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The table of issue 19 (one subprocess per cell: one compile at a time, memory returned).

def table_cells() -> list[tuple[str, str, list[str]]]:
    """(config file, target, overrides) of every cell: lm_160m at seq 2048, vocab 256 and
    50304, global batch 16 / 64 / 256 on h100-8 (cuDNN), v5e-8 and v4-8; lm_410m at batch 256
    on h100-8 and v5p-8; fsdp over all devices, monitor as configured."""
    cells = []
    mesh = ["--config.mesh.data=1", "--config.mesh.fsdp=-1"]
    for batch in (256, 16, 64):  # the paper's batch first: a long table leaves it first
        for vocab in (256, 50304):
            for target, attention in (("h100-8", "cudnn"), ("v5e-8", None), ("v4-8", None)):
                over = [*mesh, f"--config.model.vocab_size={vocab}",
                        f"--config.batch_size={batch}"]
                if attention:
                    over.append(f"--config.model.attention_impl={attention}")
                cells.append(("lm_160m", target, over))
    for target, attention in (("h100-8", "cudnn"), ("v5p-8", None)):
        over = [*mesh, "--config.batch_size=256"]
        if attention:
            over.append(f"--config.model.attention_impl={attention}")
        cells.append(("lm_410m", target, over))
    return cells[:6] + cells[-2:] + cells[6:-2]


def run_cell(config_file: str, target: str, overrides: Iterable[str],
             timeout: float = 1800) -> dict[str, Any]:
    """One cell in its own process (`python -m optaxlab.train.aot ... --json`)."""
    cmd = [sys.executable, "-m", "optaxlab.train.aot", f"--config={config_file}",
           f"--target={target}", "--json", *overrides]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"target": target, "compiled": False, "fits": False,
                "error": f"timeout after {timeout:.0f} s", "overrides": list(overrides)}
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        r = {"target": target, "compiled": False, "fits": False, "error": tail[:400]}
    r["overrides"] = list(overrides)
    r["config_file"] = config_file
    return r


def refloor(r: dict[str, Any]) -> dict[str, Any]:
    """`r` with its collective floor recomputed by today's `collective_floor` (for rows of an
    older JSON table: the floor's definition changed, the compiled bytes did not)."""
    m = (r.get("config") or {}).get("model") or {}
    if not r.get("param_bytes") or not r.get("mesh"):
        return r
    mesh = (r["mesh"]["data"], r["mesh"]["fsdp"], r["mesh"]["tensor"])
    floor = collective_floor(r["param_bytes"], mesh,
                             2.0 if m.get("compute_dtype") == "bfloat16" else 4.0)
    return {**r, "collective_floor_by_kind": floor, "collective_floor_bytes": sum(floor.values())}


def table_row(r: dict[str, Any]) -> str:
    """One markdown row of the table."""
    c = r.get("config") or {}
    m = c.get("model") or {}
    coll = r.get("collective_bytes_per_step")
    floor = r.get("collective_floor_bytes")
    moved = sum(coll.values()) if coll else None
    ratio = f" ({moved / floor:.1f}x)" if moved is not None and floor else ""
    flops = r.get("model_flops_per_step")
    mfu = r.get("mfu_ceiling")
    settings = []
    if m.get("remat") not in (None, "none"):
        settings.append(f"remat={m['remat']}")
    if m.get("logits_chunk"):
        settings.append(f"logits_chunk={m['logits_chunk']}")
    if (c.get("grad_accum_steps") or 1) > 1:
        settings.append(f"accum={c['grad_accum_steps']}")
    cells = [Path(r.get("config_file", "?")).stem, r.get("target", "?"),
             str(m.get("attention_impl", "?")) + "".join(f", {x}" for x in settings),
             str(m.get("vocab_size", "?")),
             str(c.get("batch_size", "?")), "yes" if r.get("compiled") else "no",
             "yes" if r.get("fits") else "no", _gb(r.get("bytes_per_device")),
             f"{_gb(moved)} / {_gb(floor)}{ratio}" if moved is not None else "-",
             f"{flops:.2e}" if flops else "-", f"{mfu:.0%}" if mfu else "-",
             (r.get("error") or "").replace("|", "/")[:200]]
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = ("| config | target | attention, settings | vocab | batch | compiles | fits | "
                "bytes/device | collectives / floor | model FLOPs/step | MFU ceiling | "
                "note |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv: Sequence[str]) -> None:
    from absl import flags

    f = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"error: unexpected arguments {argv[1:]}")
    if f.table_from:  # re-render a table's JSON (floors by today's definition)
        print(TABLE_HEADER)
        for r in json.loads(Path(f.table_from).read_text()):
            print(table_row(refloor(r)))
        return
    if f.table:
        rows = []
        print(TABLE_HEADER, flush=True)
        for config_file, target, over in table_cells():
            for attempt in range(3):  # as configured, then with the advised settings
                start = time.time()
                r = run_cell(config_file, target, over)
                r["compile_s"] = round(time.time() - start, 1)
                r["advised"] = attempt > 0
                rows.append(r)
                print(table_row(r), flush=True)
                if f.json:  # after every cell: a long table leaves what it has
                    Path(f.json_out or "aot_table.json").write_text(json.dumps(rows, indent=1))
                extra = r.get("advised_overrides")
                if r.get("fits") or not extra:
                    break
                over = [*over, *extra]
        return
    if f.config is None or f.target is None:
        raise SystemExit("error: give --config=FILE and --target=NAME (or --table)")
    try:
        target = hardware.target(f.target)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    err = missing_extra(target)
    if err:
        raise SystemExit(err)
    from optaxlab.train.errors import ConfigError

    try:
        result = analyze(f.config, target, hlo_out=f.hlo_out)
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"error: {str(e).splitlines()[0]}") from None
    if f.json:
        text = json.dumps(result)
        if f.json_out:
            Path(f.json_out).write_text(text)
        print(text)
    else:
        print(report(result))


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Training config file (optaxlab/configs/*.py).",
                                    lock_config=False, accept_new_attributes=True)
    flags.DEFINE_string("target", None, f"One of {list(hardware.TARGETS)}.")
    flags.DEFINE_bool("json", False, "Print one JSON object instead of the report.")
    flags.DEFINE_string("json_out", None, "Also write the JSON to this file.")
    flags.DEFINE_string("hlo_out", None, "Write the compiled HLO text to this file.")
    flags.DEFINE_bool("table", False, "Compile issue 19's table (one process per cell).")
    flags.DEFINE_string("table_from", None, "Print the markdown table of a --table JSON file.")


if __name__ == "__main__":
    import logging

    from absl import app
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("optaxlab.train").setLevel(logging.WARNING)
    from optaxlab.train.config import config_args

    _define_flags()
    app.run(main, argv=config_args(sys.argv))  # --config lm_160m works too
