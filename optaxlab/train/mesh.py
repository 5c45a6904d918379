"""Device mesh ('data', 'fsdp', 'tensor'), shardings from partition specs, batches, multi-host.

Parameters carry `PartitionSpec`s over 'fsdp' / 'tensor' (from the models' `nnx.with_partitioning`
annotations); the batch is split over ('data', 'fsdp'); each process reads only the rows of the
global batch that its own devices hold (`process_rows`) and `global_batch` assembles the global
array from them. One code path for 1 CPU, 8 simulated devices, a GPU, or a multi-host pod
(`initialize_distributed` first).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """`jax.distributed.initialize`, with explicit values from arguments or the environment.

    Environment fallbacks: OPTAXLAB_COORDINATOR (host:port), OPTAXLAB_NUM_PROCESSES,
    OPTAXLAB_PROCESS_ID. With none of them set, JAX auto-detects (TPU pods, SLURM, ...).
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("OPTAXLAB_COORDINATOR") or None
    if num_processes is None and env.get("OPTAXLAB_NUM_PROCESSES"):
        num_processes = int(env["OPTAXLAB_NUM_PROCESSES"])
    if process_id is None and env.get("OPTAXLAB_PROCESS_ID"):
        process_id = int(env["OPTAXLAB_PROCESS_ID"])
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh of `shape` over AXES (auto sharding mode) on `devices` (default: all)."""
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) == jax.device_count() and len(devices) > 1:
        return jax.make_mesh(tuple(shape), AXES, axis_types=(AxisType.Auto,) * 3,
                             devices=devices)
    return Mesh(np.asarray(devices).reshape(tuple(shape)), AXES,
                axis_types=(AxisType.Auto,) * 3)


def fit_spec(spec: PartitionSpec | None, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """`spec` with every axis that does not divide its dimension dropped (that dim replicated)."""
    if spec is None:
        return PartitionSpec()
    parts = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=False):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        if names and dim % size:
            logging.info("dimension %d not divisible by mesh axes %s (%d): replicated",
                         dim, names, size)
            parts.append(None)
        else:
            parts.append(axes)
    return PartitionSpec(*parts)


def name(path) -> str:
    """The one spelling of a pytree leaf's name: "blocks/0/mlp/up/kernel"."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def shardings_like(tree, param_specs: dict[str, tuple[PartitionSpec, tuple]], mesh: Mesh):
    """NamedShardings for `tree` (abstract arrays): a leaf whose key path ends with a parameter's
    path and has its shape gets that parameter's spec (optimizer moments follow their
    parameter); every other leaf is replicated."""

    def one(path, leaf):
        for i in range(len(path)):
            hit = param_specs.get(name(path[i:]))
            if hit is not None and tuple(hit[1]) == tuple(leaf.shape):
                return NamedSharding(mesh, fit_spec(hit[0], leaf.shape, mesh))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over ('data', 'fsdp'), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def process_rows(mesh: Mesh, batch_size: int) -> np.ndarray:
    """The rows (sorted global indices) of a global batch that this process's devices hold:
    the only rows it needs to read (all of them on one process)."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    rows = set()
    for index in index_map.values():
        rows.update(range(*index[0].indices(batch_size)))
    return np.array(sorted(rows), np.int64)


def global_batch(batch: dict[str, np.ndarray], mesh: Mesh,
                 batch_size: int | None = None) -> dict[str, jax.Array]:
    """Arrays of the global batch, sharded over the batch axes, from this process's rows.

    `batch` holds the rows `process_rows(mesh, batch_size)` in that order (or, with
    `batch_size=None`, the whole global batch). Reading the same global order of examples on
    every process keeps a run's batches, and so its numbers, independent of the number of
    processes.
    """
    sharding = batch_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        shape = x.shape if batch_size is None else (batch_size, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return {k: put(v) for k, v in batch.items()}


def activation_spec(spec: Sequence, shape: Sequence[int]) -> PartitionSpec | None:
    """`spec` over the trace's context mesh ('batch' = BATCH_AXES), fitted to `shape`
    (`fit_spec`), or None when there is no such mesh: no context mesh (plain eager calls, a jit
    without one), a mesh without the trainer's AXES, or inside shard_map over any of them."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(AXES) <= set(mesh.axis_names):
        return None
    if set(AXES) & set(getattr(mesh, "manual_axes", ())):
        return None
    parts = [BATCH_AXES if a == "batch" else a for a in spec]
    return fit_spec(PartitionSpec(*parts), shape, mesh)


def constrain(x: jax.Array, spec: Sequence) -> jax.Array:
    """`jax.lax.with_sharding_constraint(x, spec)` under the trainer's mesh (see
    `activation_spec`; 'batch' names the data axes), else `x` unchanged.

    The models call it on activations so that XLA keeps them sharded over the batch axes
    instead of gathering the global batch inside the (backward) matmuls;
    `optaxlab.train.step.compile_steps` traces the steps under the mesh so these apply.
    """
    fitted = activation_spec(spec, x.shape)
    return x if fitted is None else jax.lax.with_sharding_constraint(x, fitted)
