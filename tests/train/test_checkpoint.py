"""The checkpoint checksum: any changed element changes its leaf's sum, the value does not depend
on the sharding, every dtype of a train state is covered; the restore-outcome helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from optaxlab.train import checkpoint as ckpt_lib
from optaxlab.train import mesh as mesh_lib
from optaxlab.train.errors import IOFailure


def _state(rng):
    return {"w": jnp.asarray(rng.normal(size=(16, 12)), jnp.float32),
            "b16": jnp.asarray(rng.normal(size=(8,)), jnp.bfloat16),
            "step": jnp.int32(7), "flag": jnp.bool_(True), "empty": jnp.zeros((0, 3))}


def test_checksum_changes_with_any_single_element_and_not_otherwise():
    rng = np.random.default_rng(0)
    state = _state(rng)
    base = ckpt_lib.checksums(state)
    assert set(base) == {"w", "b16", "step", "flag", "empty"}
    assert base == ckpt_lib.checksums(jax.tree.map(jnp.copy, state))  # deterministic
    w = np.asarray(state["w"])
    for i, j in [(0, 0), (7, 3), (15, 11)]:
        flipped = w.view(np.uint32).copy()
        flipped[i, j] ^= 1 << int(rng.integers(32))  # one bit of one element
        sums = ckpt_lib.checksums({**state, "w": jnp.asarray(flipped.view(np.float32))})
        assert sums["w"] != base["w"] and sums["b16"] == base["b16"]
    swapped = w.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # same values, other places
    assert ckpt_lib.checksums({**state, "w": jnp.asarray(swapped)})["w"] != base["w"]
    bumped = jnp.asarray(state["b16"]).at[3].set(jnp.bfloat16(5.0))
    assert ckpt_lib.checksums({**state, "b16": bumped})["b16"] != base["b16"]
    assert ckpt_lib.checksums({**state, "step": jnp.int32(8)})["step"] != base["step"]


def test_checksum_is_the_same_for_any_sharding():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(16, 12)), jnp.float32)
    mesh = mesh_lib.make_mesh((2, 2, 2))
    one = ckpt_lib.checksums({"x": x})
    for spec in (P("data", "fsdp"), P(("data", "fsdp", "tensor")), P(None, "tensor"), P()):
        sharded = jax.device_put(x, NamedSharding(mesh, spec))
        assert ckpt_lib.checksums({"x": sharded}) == one, spec


def test_incompatibility_names_fields_then_leaves():
    abstract = {"params": {"w": jax.ShapeDtypeStruct((4, 2), jnp.float32)}}
    tree = {"params/w": ((4, 2), "float32")}
    meta = {"fingerprint": {"model": {"d": 4}}, "config": {"optimizer": {"name": "adam"}}}
    fp = {"model": {"d": 4}}
    assert ckpt_lib.incompatibility(meta, tree, abstract, fp, {"name": "adam"}) == []
    assert ckpt_lib.incompatibility(meta, tree, abstract, {"model": {"d": 8}}, {}) == [
        "model.d: checkpoint 4, config 8"]
    other = {"params": {"w": jax.ShapeDtypeStruct((4, 3), jnp.float32)}}
    assert ckpt_lib.incompatibility(meta, tree, other, fp, {"name": "sgd"}) == [
        "optimizer.name: checkpoint adam, config sgd"]
    (msg,) = ckpt_lib.incompatibility(meta, tree, other, fp, {"name": "adam"})
    assert msg.startswith("state params/w: checkpoint float32[4, 2], config float32[4, 3]")


def test_probe_tells_unreadable_storage(tmp_path):
    (tmp_path / "ok" / "d").mkdir(parents=True)
    (tmp_path / "ok" / "d" / "f").write_bytes(b"x")
    ckpt_lib.probe(tmp_path / "ok")  # readable: no error
    (tmp_path / "ok" / "d" / "gone").symlink_to("/nonexistent/mount/file")
    with pytest.raises(IOFailure, match=r"cannot read the checkpoint .*ok: .*No such file"):
        ckpt_lib.probe(tmp_path / "ok")
