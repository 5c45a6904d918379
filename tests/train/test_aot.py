"""optaxlab.train.aot: the pure parts on CPU (no extras), the deviceless compiles marked `aot`.

`make test` runs the unmarked tests; `make aot` runs the `aot` ones (needs
`pip install -e ".[tpu-aot,gpu-aot]"`) and the table.
"""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from optaxlab.train import aot, hardware
from optaxlab.train import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _lm_tiny(**over):
    spec = importlib.util.spec_from_file_location("config_lm_tiny",
                                                  os.path.join(ROOT, "optaxlab", "configs",
                                                               "lm_tiny.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    for k, v in over.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


# ------------------------------------------------------------------ HLO text parsing


def test_shape_bytes_reads_dtypes_dims_and_layouts():
    assert aot.shape_bytes("bf16[32768,2048]{1,0:T(8,128)(2,1)}") == [32768 * 2048 * 2]
    assert aot.shape_bytes("(f32[4,8]{1,0}, s32[3]{0}, pred[])") == [128, 12, 1]


@pytest.mark.parametrize("attrs, want", [
    ("replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}", 4),
    ("replica_groups=[2,4]<=[8], dimensions={0}", 4),
    ("replica_groups=[1,8]<=[8]", 8),
    ("replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, dimensions={1}", 4),
    ("replica_groups=mesh['a'=2,'b'=4] {'a','b'}", 8),
    ("replica_groups={}, dimensions={0}", 8),
])
def test_group_size_forms(attrs, want):
    assert aot.group_size(attrs, num_devices=8) == want


HLO = """
ENTRY %main {
  %p = bf16[512,128]{1,0} parameter(0)
  %ag.1 = bf16[512,1024]{1,0:S(1)} all-gather(%p), channel_id=7, replica_groups=[1,8]<=[8], dimensions={1}
  %ag.2 = bf16[512,1024]{1,0} all-gather(%p), channel_id=7, replica_groups=[1,8]<=[8], dimensions={1}
  %ag = bf16[512,1024]{1,0} all-gather(%p), replica_groups=[1,8]<=[8], dimensions={1}
  %ags = (bf16[512,128]{0,1}, bf16[512,1024]{0,1}) all-gather-start(%p), replica_groups=mesh['x'=8] {'x'}, dimensions={1}
  %agd = bf16[512,1024]{0,1} all-gather-done(%ags)
  %rs = f32[64,16]{1,0} reduce-scatter(%g), replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}
  %rss = ((f32[64,64]{1,0}, f32[64,8]{1,0}), (f32[8,64]{1,0}, f32[8,8]{1,0})) reduce-scatter-start(%g, %h), channel_id=9, replica_groups=mesh['x'=8] {'x'}, dimensions={0}
  %rsd = (f32[8,64]{1,0}, f32[8,8]{1,0}) reduce-scatter-done(%rss)
  %ar = f32[1000]{0} all-reduce-start(%x), replica_groups={}, to_apply=%add
  %ard = f32[1000]{0} all-reduce-done(%ar)
  ROOT %a2a = (f32[8,16]{1,0}, f32[8,16]{1,0}) all-to-all(%u, %v), replica_groups={{0,1,2,3,4,5,6,7}}
  %cp = (bf16[10]{0}, bf16[10]{0}, u32[], u32[]) collective-permute-start(%w), source_target_pairs={{0,1}}
}
"""  # noqa: E501


def test_collective_bytes_by_kind():
    by_kind, largest = aot.collective_bytes(HLO, num_devices=8)
    full = 512 * 1024 * 2  # the gathered buffer, for both the sync and the async form
    assert by_kind["all-gather"] == pytest.approx(3 * full)  # channel 7 counted once
    # sync: result x group of 4; async (GPU) start: (operands, outputs), the operands count
    assert by_kind["reduce-scatter"] == pytest.approx(64 * 16 * 4 * 4 + (64 * 64 + 64 * 8) * 4)
    assert by_kind["all-reduce"] == 4000  # -done halves not counted again
    assert by_kind["all-to-all"] == 2 * 8 * 16 * 4
    assert by_kind["collective-permute"] == 20
    assert largest["all-gather"][0].startswith("bf16[512,1024]")


def test_collective_bytes_of_a_real_cpu_compile():
    """An fsdp-sharded matmul on the 8 CPU devices: XLA's own HLO parses to the gathered
    weight."""
    mesh = Mesh(np.array(jax.devices()[:8]), ("fsdp",))
    w_sharding = NamedSharding(mesh, PartitionSpec("fsdp", None))
    f = jax.jit(lambda x, w: x @ w, in_shardings=(NamedSharding(mesh, PartitionSpec()),
                                                  w_sharding))
    x = jax.ShapeDtypeStruct((4, 256), jnp.float32)
    w = jax.ShapeDtypeStruct((256, 512), jnp.float32)
    hlo = f.lower(x, w).compile().as_text()
    by_kind, _ = aot.collective_bytes(hlo, 8)
    moved = sum(by_kind.values())
    assert moved > 0
    # Either the weight is gathered (256 x 512 x 4) or the partial products are reduced.
    assert moved in (256 * 512 * 4, 4 * 512 * 4) or by_kind["all-gather"] == 256 * 512 * 4


# ------------------------------------------------------------------ floors and advice


def test_collective_floor_fsdp_and_data():
    p = 4e8  # float32 bytes of the parameters
    f = aot.collective_floor(p, (1, 8, 1), compute_bytes_per_param=2)
    assert f == {"all-gather": 2e8, "reduce-scatter": 2e8, "all-reduce": 0.0}  # bf16 both
    f = aot.collective_floor(p, (2, 4, 1), compute_bytes_per_param=4)
    assert f["all-gather"] == 4e8 and f["all-reduce"] == 1e8
    assert sum(aot.collective_floor(p, (8, 1, 1), 4).values()) == p  # plain data parallel


def test_step_floor_and_mfu_ceiling():
    # compute-bound: 8 devices x 1e12 FLOP/s, 8e12 FLOPs -> 1 s; memory 0.5 s -> ceiling 100%
    f = aot.step_floor(8e12, 8, 1e12, 1e9, 5e8)
    assert f["compute_s"] == pytest.approx(1.0) and f["memory_s"] == pytest.approx(0.5)
    assert f["mfu_ceiling"] == pytest.approx(1.0)
    # memory-bound: 4 s of HBM traffic -> ceiling 25%
    assert aot.step_floor(8e12, 8, 1e12, 1e9, 4e9)["mfu_ceiling"] == pytest.approx(0.25)
    # XLA counting more FLOPs (recomputation) lowers the ceiling
    assert aot.step_floor(8e12, 8, 1e12, 1e9, 0, xla_flops=16e12)["mfu_ceiling"] == \
        pytest.approx(0.5)


def test_oom_message_bytes():
    msg = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory "
           "space hbm. Used 19.10G of 15.75G hbm. Exceeded hbm capacity by 3.35G.")
    used, cap = aot.oom_bytes(msg)
    assert used == pytest.approx(19.10 * 2**30) and cap == pytest.approx(15.75 * 2**30)
    msg2 = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
            "temporaries (18.78G) exceeds available HBM (15.75G).")
    assert aot.oom_bytes(msg2) == pytest.approx((18.78 * 2**30, 15.75 * 2**30))
    assert aot.oom_bytes("INVALID_ARGUMENT: something else") is None
    assert "RESOURCE_EXHAUSTED" in aot.one_line(RuntimeError("x\n" + msg))
    nested = RuntimeError("INTERNAL: custom_partitioner: Traceback (most recent call last):\n"
                          '  File "x.py", line 1\nValueError: Query, key and value should '
                          "have same sharding.")
    assert aot.one_line(nested).endswith("ValueError: Query, key and value should have same "
                                         "sharding.")


def test_advice_names_settings_that_fit():
    c = _lm_tiny(batch_size=64)
    opts = aot.advice(c, (1, 8, 1), total=30e9, temp=28e9, param_bytes=1e8, capacity=16e9)
    texts = [o["text"] for o in opts]
    assert any("grad_accum_steps=" in t for t in texts)
    assert any("remat" in t for t in texts)
    for o in opts:  # each estimate is below the compiled total and says whether it fits
        assert o["estimate"] < 30e9 and o["fits"] == (o["estimate"] <= 16e9)
    flags = aot.advised(opts)
    assert flags and not any("batch_size" in f for f in flags)  # keeps the experiment
    assert aot.advice(c, (1, 8, 1), total=10e9, temp=8e9, param_bytes=1e8,
                      capacity=16e9) == []


def test_advised_is_none_when_nothing_fits():
    c = _lm_tiny(batch_size=8)  # 1 sequence per device: no accumulation possible
    opts = aot.advice(c, (1, 8, 1), total=60e9, temp=10e9, param_bytes=4e10, capacity=16e9)
    assert aot.advised(opts) is None
    assert any("shard them over more devices" in o["text"] for o in opts)


def test_model_flops_per_step_is_the_formula():
    from optaxlab import models

    c = _lm_tiny(batch_size=8)
    assert aot.model_flops_per_step(c) == models.flops_per_token(c.model, c.seq_len) * 8 * \
        c.seq_len


# ------------------------------------------------------------------ targets and errors


def test_targets_resolve_and_unknown_is_one_line():
    assert hardware.target("v4-8").devices == 4 and hardware.target("v5e-8").devices == 8
    assert {"v4-8", "v5e-8", "v5e-16", "v5p-8", "v6e-8", "h100-1", "h100-8", "h200-8",
            "a100-8"} <= set(hardware.TARGETS)
    for t in hardware.TARGETS.values():
        assert t.chip in hardware.CHIPS
        if t.platform == "gpu":
            assert (aot.TARGET_DIR / f"{t.chip}.txtpb").is_file()
    with pytest.raises(ValueError, match="valid"):
        hardware.target("v9-8")


def test_missing_extra_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    for name, extra in (("v5e-8", "tpu-aot"), ("h100-8", "gpu-aot")):
        msg = aot.missing_extra(hardware.target(name))
        assert msg is not None and "\n" not in msg
        assert f'pip install -e ".[{extra}]"' in msg and name in msg


def test_cli_without_extras_exits_with_the_one_line_error(tmp_path):
    """The CLI in a Python that cannot import the extra (hidden by a stub finder)."""
    stub = tmp_path / "sitecustomize.py"
    stub.write_text(
        "import importlib.util as u\n_f = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n.startswith(('libtpu', 'jax_plugins')) "
        "else _f(n, *a)\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    p = subprocess.run([sys.executable, "-m", "optaxlab.train.aot", "--config",
                        "lm_tiny", "--target", "v5e-8"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: target v5e-8") and '".[tpu-aot]"' in last


def test_table_cells_cover_the_issue_table():
    cells = aot.table_cells()
    assert len(cells) == 20
    assert sum(t == "h100-8" and "--config.model.attention_impl=cudnn" in o
               for _, t, o in cells) == 7
    assert {t for _, t, _ in cells} == {"h100-8", "v5e-8", "v4-8", "v5p-8"}


def test_build_is_the_trainers_step_on_given_devices():
    """`build` on the 8 CPU devices: the jitted step lowers with the batch sharded over fsdp."""
    c = _lm_tiny(batch_size=16)
    c.monitor.every = 0
    train, (state, batch), plan, param_bytes = aot.build(c, jax.devices()[:8])
    assert plan.mesh_shape == (1, 8, 1) and param_bytes > 0
    assert batch["inputs"].sharding.spec == PartitionSpec(("data", "fsdp"))
    text = train.lower(state, batch).as_text()
    assert "sharding" in text


# ------------------------------------------------------------------ deviceless compiles


def _needs(target):
    err = aot.missing_extra(hardware.target(target))
    if err:
        pytest.skip(err)


@pytest.mark.aot
@pytest.mark.parametrize("target", list(hardware.TARGETS))
def test_aot_compiles_lm_tiny(target):
    _needs(target)
    c = _lm_tiny(batch_size=16)
    r = aot.analyze(c, hardware.target(target))
    assert r["compiled"] and r["fits"] and r["error"] is None
    assert 0 < r["bytes_per_device"] < r["device_memory_bytes"]
    assert r["model_flops_per_step"] > 0 and 0 < r["mfu_ceiling"] <= 1
    if hardware.target(target).devices > 1:
        assert sum(r["collective_bytes_per_step"].values()) > 0
        assert r["collective_floor_bytes"] > 0
        moved = r["collective_bytes_per_step"]
        floor = r["collective_floor_by_kind"]
        # fsdp over all devices: the weights are gathered and the gradient reduced once (a
        # reduce-scatter: GPU's async reduce-scatter-start is counted; or, for lm_tiny's small
        # float32 leaves on TPU, an all-reduce); nothing of the batch's activations moves.
        assert moved["all-gather"] >= 0.5 * floor["all-gather"]
        grads = moved["reduce-scatter"] + moved["all-reduce"]
        assert grads >= 0.5 * floor["reduce-scatter"]
        assert sum(moved.values()) <= 3 * sum(floor.values())


@pytest.mark.aot
def test_aot_cli_json_keys():
    _needs("v5e-8")
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)
    p = subprocess.run([sys.executable, "-m", "optaxlab.train.aot", "--config",
                        "lm_tiny", "--target", "v5e-8", "--json",
                        "--config.batch_size=16", "--config.mesh.fsdp=-1",
                        "--config.mesh.data=1"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    for key in ("target", "compiled", "fits", "error", "bytes_per_device",
                "device_memory_bytes", "collective_bytes_per_step", "collective_floor_bytes",
                "model_flops_per_step", "mfu_ceiling"):
        assert key in r
    assert r["target"] == "v5e-8" and r["compiled"] is True
    assert set(r["collective_bytes_per_step"]) == set(aot.KINDS)


@pytest.mark.aot
def test_aot_tpu_refusal_is_reported_not_raised():
    """A step far too big for a v5e chip: compiled false, fits false, XLA's message."""
    _needs("v5e-8")
    c = _lm_tiny(batch_size=8)
    c.model.d_model, c.model.n_heads, c.model.n_layers = 12288, 96, 4
    c.model.vocab_size = 32768
    c.monitor.every = 0
    r = aot.analyze(c, hardware.target("v5e-8"))
    assert not r["fits"] and r["error"]
    assert r["advice"], (r["error"], r["bytes_per_device"])


def test_config_validation_error_is_a_value_error():
    c = _lm_tiny()
    c.mesh.tensor = 3
    with pytest.raises(ValueError):
        config_lib.validate(c, num_devices=8)


# ------------------------------------------------------------------ the memory tool's --target


def test_memory_target_without_extras_is_the_one_line_error(monkeypatch):
    from optaxlab.train import memory

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    c = _lm_tiny(batch_size=16)
    est = memory.estimate(c, devices=8)
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[gpu-aot\]"'):
        memory.xla_check(c, "h100-8", est)


@pytest.mark.aot
def test_memory_target_prints_xla_bytes_next_to_the_estimate():
    from optaxlab.train import memory

    _needs("v5e-8")
    c = _lm_tiny(batch_size=16)
    c.monitor.every = 0
    est = memory.estimate(c, devices=8)
    text = memory.xla_check(c, "v5e-8", est)
    assert text.startswith("XLA (v5e-8, deviceless compile): ") and "fits" in text
    assert "this estimate" in text
