"""Train state: an NNX model split into (graphdef, params, rest) plus the optimizer state.

`params` and `rest` (e.g. BatchNorm statistics) are plain nested dicts of arrays, so optax, the
monitor and Orbax see ordinary pytrees. The state is created by a jitted init with
`out_shardings`, so every device materializes only its own shard (big models never sit whole on
one device).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from optaxlab import models
from optaxlab.train import mesh as mesh_lib


class TrainState(NamedTuple):
    step: jax.Array  # int32, training steps done (skipped ones included)
    params: Any  # nested dict of float32 arrays (nnx.Param)
    rest: Any  # nested dict of the other model variables (BatchNorm statistics)
    opt_state: optax.OptState
    skipped: jax.Array  # int32, steps whose update was dropped (nan_policy='skip')


def _build(model_cfg, seed: int) -> nnx.Module:
    with nnx.use_eager_sharding(False):
        return models.create(model_cfg, rngs=nnx.Rngs(seed))


def split(model: nnx.Module):
    """(graphdef, params dict, rest dict) of a model."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def merge(graphdef, params, rest) -> nnx.Module:
    return nnx.merge(graphdef, params, rest)


def param_specs(model_cfg) -> tuple[Any, dict]:
    """(graphdef, {param name: (PartitionSpec, shape)}) of the model, computed abstractly."""
    abstract = nnx.eval_shape(lambda: _build(model_cfg, 0))
    graphdef, params, _ = nnx.split(abstract, nnx.Param, ...)
    specs = nnx.to_pure_dict(nnx.get_partition_spec(params))
    shapes = nnx.to_pure_dict(params)
    flat_specs = {mesh_lib.name(p): s for p, s in
                  jax.tree_util.tree_leaves_with_path(
                      specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))}
    table = {mesh_lib.name(p): (flat_specs.get(mesh_lib.name(p)), leaf.shape)
             for p, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
    return graphdef, table


def abstract_params(model_cfg):
    """The model's parameters as a dict of ShapeDtypeStructs (nothing allocated)."""
    return jax.eval_shape(lambda: split(_build(model_cfg, 0))[1])


def param_names(params) -> list[str]:
    """Names ("blocks/0/mlp/up/kernel") of the parameter leaves, in `jax.tree.leaves` order."""
    return [mesh_lib.name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]


def create(model_cfg, tx: optax.GradientTransformation, mesh: Mesh, seed: int):
    """(graphdef, init_fn, abstract state, state shardings); `init_fn()` returns the sharded
    initial TrainState."""
    graphdef, table = param_specs(model_cfg)

    def init() -> TrainState:
        _, params, rest = split(_build(model_cfg, seed))
        zero = jnp.zeros((), jnp.int32)
        return TrainState(zero, params, rest, tx.init(params), zero)

    abstract = jax.eval_shape(init)
    shardings = mesh_lib.shardings_like(abstract, table, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, shardings)
    init_fn = jax.jit(init, out_shardings=shardings)
    return graphdef, init_fn, abstract, shardings
