"""Mesh shapes, partition specs -> shardings (optimizer moments follow parameters), batches."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from optaxlab.train import config as config_lib
from optaxlab.train import mesh as mesh_lib
from optaxlab.train import state as state_lib


def mesh_cfg(data, fsdp, tensor):
    return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


@pytest.mark.parametrize(("shape", "n", "expected"), [
    ((-1, 1, 1), 8, (8, 1, 1)), ((2, -1, 2), 8, (2, 2, 2)), ((1, 1, -1), 8, (1, 1, 8)),
    ((2, 2, 2), 8, (2, 2, 2)), ((-1, 1, 1), 1, (1, 1, 1)),
])
def test_mesh_shape(shape, n, expected):
    assert config_lib.mesh_shape(mesh_cfg(*shape), n) == expected


@pytest.mark.parametrize("shape", [(3, 1, 1), (-1, 3, 1), (2, 2, 1), (0, 1, 1)])
def test_impossible_mesh(shape):
    with pytest.raises(ValueError, match=r"^config\.mesh"):
        config_lib.mesh_shape(mesh_cfg(*shape), 8)


def test_fit_spec_replicates_indivisible_dims():
    mesh = mesh_lib.make_mesh((2, 2, 2))
    assert mesh_lib.fit_spec(P("fsdp", "tensor"), (4, 6), mesh) == P("fsdp", "tensor")
    assert mesh_lib.fit_spec(P("fsdp", "tensor"), (3, 6), mesh) == P(None, "tensor")
    assert mesh_lib.fit_spec(None, (3,), mesh) == P()


def test_model_shardings_follow_annotations_and_moments_follow_params():
    model_cfg = config_lib.model_config("transformer", d_model=32, n_layers=1, n_heads=4,
                                        max_len=16)
    mesh = mesh_lib.make_mesh((2, 2, 2))
    tx = optax.adam(1e-3)
    _, init_fn, abstract, shardings = state_lib.create(model_cfg, tx, mesh, seed=0)
    p = shardings.params
    assert p["embed"]["embedding"].spec == P("tensor", "fsdp")
    assert p["blocks"][0]["attn"]["query"]["kernel"].spec == P("fsdp", "tensor")
    assert p["blocks"][0]["mlp"]["down"]["kernel"].spec == P("tensor", "fsdp")
    assert all(a is None for a in p["final_norm"]["scale"].spec)  # replicated
    mu = shardings.opt_state[0].mu
    assert mu["blocks"][0]["attn"]["query"]["kernel"].spec == P("fsdp", "tensor")
    assert shardings.opt_state[0].count.spec == P()
    state = init_fn()
    kernel = state.params["blocks"][0]["attn"]["query"]["kernel"]
    assert kernel.sharding.spec == P("fsdp", "tensor")
    assert len(kernel.addressable_shards) == 8
    assert kernel.addressable_shards[0].data.shape == (16, 16)  # never whole on one device
    # the same numbers as an unsharded init (RNG is sharding-independent)
    one = mesh_lib.make_mesh((1, 1, 1), jax.devices()[:1])
    ref = state_lib.create(model_cfg, tx, one, seed=0)[1]()
    np.testing.assert_array_equal(np.asarray(kernel),
                                  np.asarray(ref.params["blocks"][0]["attn"]["query"]["kernel"]))


def test_global_batch_is_split_over_data_and_fsdp():
    mesh = mesh_lib.make_mesh((2, 2, 2))
    batch = mesh_lib.global_batch({"inputs": np.arange(32, dtype=np.int32).reshape(8, 4)}, mesh)
    x = batch["inputs"]
    assert x.shape == (8, 4) and x.sharding.spec == P(("data", "fsdp"))
    assert {s.data.shape for s in x.addressable_shards} == {(2, 4)}
    np.testing.assert_array_equal(np.asarray(x), np.arange(32).reshape(8, 4))
    assert jnp.sum(x) == 496
