"""How much device memory a training config needs, and what fits where.

    python -m optaxlab.train.memory --config lm_160m [--optimizer adamw]
        [--devices 8 --mesh data,fsdp,tensor] [--config.batch_size=64] [--compile]

Computed from the config, nothing is allocated: parameter and optimizer-state bytes are the
exact sizes of `jax.eval_shape` of the model's and the optimizer's init (every registry
optimizer is listed with its number of parameter-sized buffers); gradients are one more copy
of the parameters. Activations (transformer LMs) are an estimate of what the backward pass
keeps per token and layer, from the model's code (optaxlab.models.transformer):

    compute-dtype tensors  c * (7 d + 4 h)      block input, 2 norm outputs, q k v, attention
                                                 output; gate, up, silu(gate), their product
    float32 norm inputs    8 d
    attention (einsum)     (4 + c) * H * T       float32 probabilities and their cast copy
    head                   8 V (once)            float32 logits and softmax

(d = d_model, h = MLP width, H = heads, T = sequence length, V = vocabulary, c = bytes of the
compute dtype). With flash attention ('cudnn' on NVIDIA GPUs, 'splash' on TPUs; what
'auto' picks there) the T x T term is not kept; the report shows both. `model.remat` and
`model.logits_chunk` shrink the kept activations (see `activation_bytes_per_token`). Per
device: parameters, gradients and optimizer state are split over
fsdp x tensor, activations over the batch shards (data x fsdp) and, for the attention and MLP
terms, tensor. `--compile` also compiles the real train step for one device
at the per-device batch and prints XLA's own memory analysis (slow for big models);
`--target v5e-8` (or any `optaxlab.train.aot` target; needs the tpu-aot / gpu-aot extras)
compiles the real sharded step for that slice without the hardware and prints XLA's bytes per
device next to the estimate: where the extras are installed, that number is the one to trust
(the estimate is within about +-35% of it: the T x T attention term and XLA's fusion differ
by backend; see docs/accelerators.md).
"""

from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple

import jax
import numpy as np

from optaxlab import optimizers
from optaxlab.models.transformer import mlp_hidden_dim
from optaxlab.train import config as config_lib
from optaxlab.train import optim
from optaxlab.train import state as state_lib

GB = 1e9
DEVICE_SIZES_GB = (16, 32, 80)
_BYTES = {"float32": 4, "bfloat16": 2}


def tree_bytes(tree) -> int:
    """Bytes of every leaf of a tree of arrays or ShapeDtypeStructs."""
    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))


def optimizer_state_bytes(opt_cfg, params, steps: int) -> int:
    """Bytes of the optimizer state the trainer builds for `opt_cfg` (schedule included)."""
    tx = optim.make_optimizer(opt_cfg, steps)
    return tree_bytes(jax.eval_shape(tx.init, params))


FLASH = ("cudnn", "splash")  # fused attention: no T x T scores kept


def attention_kind(model_cfg, platform: str | None = None) -> str:
    """The attention implementation the model runs on `platform` ('gpu', 'tpu', 'cpu'; default:
    this process's backend): 'auto' resolved as the model resolves it (cuDNN on GPU for bf16,
    splash on TPU, einsum elsewhere)."""
    impl = model_cfg.attention_impl
    if impl != "auto":
        return impl
    platform = platform or jax.default_backend()
    if platform in ("gpu", "cuda"):
        return "cudnn" if model_cfg.compute_dtype == "bfloat16" else "xla"
    return "splash" if platform == "tpu" else "einsum"


def activation_bytes_per_token(model_cfg, seq_len: int, tensor: int = 1,
                               flash: bool | None = None, platform: str | None = None
                               ) -> float:
    """Bytes the backward pass keeps per token of a transformer LM (see the module docstring);
    `flash`: without the T x T attention term (default: as the model runs on `platform`).
    `model.remat`: 'dots' keeps the dense layers' outputs, c (5 d + 2 h), and the float32 norm
    inputs; 'block' keeps each block's float32 input, 4 d, and one block's activations.
    `model.logits_chunk` = k: the head's float32 logits for k positions at a time."""
    d, layers, heads = model_cfg.d_model, model_cfg.n_layers, model_cfg.n_heads
    c = _BYTES[model_cfg.compute_dtype]
    h = mlp_hidden_dim(d, model_cfg.mlp_ratio)
    if flash is None:
        flash = attention_kind(model_cfg, platform) in FLASH
    attention = 0.0 if flash else (4 + c) * heads * seq_len
    block = c * 5 * d + 8 * d + (c * (2 * d + 4 * h) + attention) / tensor
    remat = model_cfg.get("remat", "none")
    if remat == "dots":
        kept = layers * (8 * d + c * (5 * d + 2 * h) / tensor) + block
    elif remat == "block":
        kept = layers * 4 * d + block
    else:
        kept = layers * block
    chunk = model_cfg.get("logits_chunk", 0) or seq_len
    return kept + 8 * model_cfg.vocab_size * min(chunk, seq_len) / seq_len / tensor + c * d


class Estimate(NamedTuple):
    name: str
    devices: int
    mesh: tuple[int, int, int]
    params: int  # count
    param_bytes: int
    optimizer: str
    optimizer_bytes: int
    per_optimizer: dict[str, int]  # every registry optimizer's state bytes
    activations: dict[str, float]  # per device, by attention ('as configured', 'flash'); LM only
    batch_per_device: float

    def static(self, optimizer: str | None = None) -> float:
        """Bytes of parameters, gradients and optimizer state on one device (fsdp x tensor)."""
        _, fsdp, tensor = self.mesh
        opt = self.per_optimizer[optimizer] if optimizer else self.optimizer_bytes
        return (2 * self.param_bytes + opt) / (fsdp * tensor)

    def per_device(self, attention: str | None = None) -> float:
        """Bytes on one device, with the activations of `attention` (if an LM)."""
        return self.static() + (self.activations[attention] if attention else 0.0)


def estimate(config, *, devices: int, optimizer: str | None = None,
             name: str = "config", platform: str | None = None) -> Estimate:
    """The memory estimate of a training config on `devices` devices (its mesh resolved for
    that many) of `platform` ('gpu', 'tpu', 'cpu'; default: this process's backend)."""
    if optimizer is not None and optimizer != config.optimizer.name:
        config.optimizer = config_lib.switch_optimizer(config.optimizer, optimizer)
    mesh = config_lib.validate(config, num_devices=devices).mesh_shape
    params = state_lib.abstract_params(config.model)
    per_optimizer = {}
    for opt_name in optimizers.names():
        block = config_lib.switch_optimizer(config.optimizer, opt_name)
        per_optimizer[opt_name] = optimizer_state_bytes(block, params, config.steps)
    data, fsdp, tensor = mesh
    batch = config.batch_size / (data * fsdp)
    acts = {}
    if config.model.name == "transformer":
        impl = attention_kind(config.model, platform)
        shown = impl if impl == config.model.attention_impl else f"auto -> {impl}"
        kinds = {f"attention={shown}": impl in FLASH}
        if impl not in FLASH:
            kinds["attention=cudnn / splash (flash: NVIDIA GPUs, TPUs)"] = True
        for kind, flash in kinds.items():
            per_token = activation_bytes_per_token(config.model, config.seq_len, tensor, flash)
            acts[kind] = batch * config.seq_len * per_token
    return Estimate(name=name, devices=devices, mesh=mesh,
                    params=sum(math.prod(x.shape) for x in jax.tree.leaves(params)),
                    param_bytes=tree_bytes(params), optimizer=config.optimizer.name,
                    optimizer_bytes=per_optimizer[config.optimizer.name],
                    per_optimizer=per_optimizer, activations=acts, batch_per_device=batch)


def _gb(x: float) -> str:
    return f"{x / GB:.2f} GB" if x >= 0.01 * GB else f"{x / 1e6:.2f} MB"


def max_batch(est: Estimate, size_gb: float, attention: str) -> int:
    """The largest per-device batch (sequences) that fits in `size_gb` (90% usable)."""
    per_example = est.activations[attention] / est.batch_per_device
    return max(int((0.9 * size_gb * GB - est.static()) // per_example), 0)


def report(est: Estimate, config) -> str:
    data, fsdp, tensor = est.mesh
    m = config.model
    lines = [f"# {est.name}: memory per device",
             "",
             f"model {m.name}" + (f" d_model={m.d_model} n_layers={m.n_layers} "
                                  f"n_heads={m.n_heads} vocab={m.vocab_size} "
                                  f"compute={m.compute_dtype} attention={m.attention_impl}"
                                  if m.name == "transformer" else "")
             + f"; batch {config.batch_size}"
             + (f" x seq {config.seq_len}" if m.name == "transformer" else "")
             + f"; {est.devices} device(s), mesh data={data} fsdp={fsdp} tensor={tensor}",
             "",
             "| what | total | per device |", "|---|---|---|",
             f"| parameters ({est.params / 1e6:.1f}M, float32) | {_gb(est.param_bytes)} | "
             f"{_gb(est.param_bytes / (fsdp * tensor))} |",
             f"| gradients | {_gb(est.param_bytes)} | {_gb(est.param_bytes / (fsdp * tensor))} |",
             f"| optimizer state ({est.optimizer}) | {_gb(est.optimizer_bytes)} | "
             f"{_gb(est.optimizer_bytes / (fsdp * tensor))} |"]
    for kind, act in est.activations.items():
        lines.append(f"| activations ({kind}, {est.batch_per_device:g} sequences/device) | "
                     f"{_gb(act * data * fsdp)} | {_gb(act)} |")
    lines += ["", "| needs per device | " + " | ".join(f"{s} GB" for s in DEVICE_SIZES_GB)
              + " |", "|---|" + "---|" * len(DEVICE_SIZES_GB)]
    for kind in est.activations or [None]:
        need = est.per_device(kind)
        cells = [("fits" if need <= 0.9 * size * GB else "no")
                 + (f" (batch/device <= {max_batch(est, size, kind)})" if kind else "")
                 for size in DEVICE_SIZES_GB]
        lines.append(f"| {kind or 'total'}: {_gb(need)} | " + " | ".join(cells) + " |")
    lines += ["", "optimizer state by optimizer (buffers = parameter-sized copies):", "",
              "| optimizer | buffers | state | per device |", "|---|---|---|---|"]
    for name, size in sorted(est.per_optimizer.items(), key=lambda kv: (kv[1], kv[0])):
        lines.append(f"| {name} | {size / est.param_bytes:.0f} | {_gb(size)} | "
                     f"{_gb(size / (fsdp * tensor))} |")
    lines += ["", "(90% of a device counted as usable; XLA's own temporaries and fragmentation "
              "come on top: check with --compile on the target machine.)"]
    return "\n".join(lines)


def compiled_memory(config, batch_per_device: int) -> Any:
    """XLA's memory analysis of the real train step on one device at this per-device batch."""
    from optaxlab.train import mesh as mesh_lib
    from optaxlab.train import step as step_lib

    config.batch_size = max(int(batch_per_device), 1)
    config.monitor.every = 0  # the plain step
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
    mesh = mesh_lib.make_mesh((1, 1, 1), jax.devices()[:1])
    tx = optim.make_optimizer(config.optimizer, config.steps)
    graphdef, _, abstract, shardings = state_lib.create(config.model, tx, mesh, config.seed)
    task = "lm" if config.model.name == "transformer" else "classification"
    plain, _ = step_lib.compile_steps(
        graphdef=graphdef, tx=tx, task=task, state_shardings=shardings,
        batch_sharding=mesh_lib.batch_sharding(mesh), replicated=mesh_lib.replicated(mesh))
    if task == "lm":
        tok = jax.ShapeDtypeStruct((config.batch_size, config.seq_len), np.int32)
        batch = {"inputs": tok, "targets": tok}
    else:
        shape = tuple(config.model.input_shape)
        batch = {"image": jax.ShapeDtypeStruct((config.batch_size, *shape), np.float32),
                 "label": jax.ShapeDtypeStruct((config.batch_size,), np.int32)}
    return plain.lower(abstract, batch).compile().memory_analysis()


def xla_check(config, target_name: str, est: Estimate) -> str:
    """XLA's compiled per-device bytes of the real train step on `target_name` (deviceless,
    `optaxlab.train.aot`; needs its extras) next to this estimate: on a target the compiled
    numbers replace the estimate."""
    from optaxlab.train import aot, hardware

    try:
        target = hardware.target(target_name)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    err = aot.missing_extra(target)
    if err:
        raise SystemExit(err)
    if est.devices != target.devices:
        raise SystemExit(f"error: --devices={est.devices} but target {target_name} has "
                         f"{target.devices} devices")
    r = aot.analyze(config, target)
    need = est.per_device(next(iter(est.activations), None))
    xla = r["bytes_per_device"]
    verdict = ("fits" if r["fits"] else "does not fit") + f" in {_gb(r['device_memory_bytes'])}"
    if xla is None:
        return f"XLA ({target_name}): {r['error']}"
    return (f"XLA ({target_name}, deviceless compile): {_gb(xla)} per device, {verdict}; "
            f"this estimate: {_gb(need)} ({need / xla - 1:+.0%})"
            + (f"\n  {r['error']}" if r["error"] else "")
            + "".join(f"\n  would fit: {a}" for a in r["advice"]))


def main(argv):
    import logging

    from absl import flags
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)  # no optax/orbax INFO lines
    logging.getLogger("optaxlab.train").setLevel(logging.WARNING)  # no optimizer-switch notes
    f = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"error: unexpected arguments {argv[1:]}")
    config = f.config
    devices = f.devices or jax.device_count()
    if f.mesh:
        try:
            mesh = tuple(int(x) for x in f.mesh.split(","))
            assert len(mesh) == 3
        except (ValueError, AssertionError):
            raise SystemExit(f"error: --mesh={f.mesh!r}: give data,fsdp,tensor, e.g. 1,8,1") \
                from None
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh
    from ml_collections import config_flags

    name = config_flags.get_config_filename(f["config"]).rsplit("/", 1)[-1].removesuffix(".py")
    try:
        platform = None
        if f.target:
            from optaxlab.train import hardware

            platform = hardware.target(f.target).platform
        est = estimate(config, devices=devices, optimizer=f.optimizer, name=name,
                       platform=platform)
    except ValueError as e:
        raise SystemExit(f"error: {str(e).splitlines()[0]}") from None
    print(report(est, config))
    if f.target:
        print("\n" + xla_check(config, f.target, est))
    if f.compile:
        a = compiled_memory(config, int(est.batch_per_device))
        print(f"\nXLA's analysis of the compiled step ({jax.devices()[0].platform}, one device, "
              f"batch {int(est.batch_per_device)}): arguments {_gb(a.argument_size_in_bytes)}, "
              f"outputs {_gb(a.output_size_in_bytes)} (aliased {_gb(a.alias_size_in_bytes)}), "
              f"temporaries {_gb(a.temp_size_in_bytes)} (vs. the estimate's activations + "
              f"gradients: {_gb(list(est.activations.values())[0] + est.param_bytes)})"
              if est.activations else f"\nXLA: {a}")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Training config file (optaxlab/configs/*.py).",
                                    lock_config=False, accept_new_attributes=True)
    flags.DEFINE_string("optimizer", None, "Optimizer to size (default: the config's).")
    flags.DEFINE_integer("devices", None, "Number of devices (default: those JAX sees).")
    flags.DEFINE_string("mesh", None, "data,fsdp,tensor (-1 = the remaining devices); "
                        "default: the config's mesh.")
    flags.DEFINE_string("target", None, "Also compile the real step for this TPU/GPU target "
                        "without the hardware (python -m optaxlab.train.aot; needs its extras) "
                        "and print XLA's per-device bytes next to the estimate.")
    flags.DEFINE_bool("compile", False, "Also compile the train step for one device and print "
                      "XLA's memory analysis.")
    flags.mark_flag_as_required("config")


if __name__ == "__main__":
    from absl import app

    from optaxlab.train.config import config_args

    _define_flags()
    app.run(main, argv=config_args(sys.argv))  # --config lm_160m works too
