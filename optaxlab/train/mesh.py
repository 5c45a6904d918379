"""Device mesh ('data', 'fsdp', 'tensor'), shardings from partition specs, batches, multi-host.

Parameters carry `PartitionSpec`s over 'fsdp' / 'tensor' (from the models' `nnx.with_partitioning`
annotations); the batch is split over ('data', 'fsdp'); every process reads the same global batch
and transfers only its own devices' rows. One code path for 1 CPU, 8 simulated
devices, a GPU, or a multi-host pod (`initialize_distributed` first).
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


def _key_str(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_tuple(path) -> tuple[str, ...]:
    """A pytree key path as a tuple of strings."""
    return tuple(_key_str(k) for k in path)


def shardings_like(tree, param_specs: dict[tuple[str, ...], tuple[PartitionSpec, tuple]],
                   mesh: Mesh):
    """NamedShardings for `tree` (abstract arrays): a leaf whose key path ends with a parameter's
    path and has its shape gets that parameter's spec (optimizer moments follow their
    parameter); every other leaf is replicated."""

    def one(path, leaf):
        p = path_tuple(path)
        for i in range(len(p)):
            hit = param_specs.get(p[i:])
            if hit is not None and tuple(hit[1]) == tuple(leaf.shape):
                return NamedSharding(mesh, fit_spec(hit[0], leaf.shape, mesh))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over ('data', 'fsdp'), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """The global batch (every process holds all of it) as arrays sharded over the batch axes;
    each process transfers only the rows of its own devices.

    Reading the whole global batch on every process (cheap for token windows and small images)
    makes a run's batches, and so its numbers, independent of the number of processes.
    """
    sharding = batch_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return {k: put(v) for k, v in batch.items()}
