"""Flax NNX models: transformer LM, small CNN, MLP.

``create(model_cfg, rngs=...)`` builds a model from a config block (a ``ConfigDict`` or a dict)
whose ``name`` is one of :data:`DEFAULTS`; every other key must be one of that model's keys
(missing keys take the defaults below). ``count_params`` and ``flops_per_token`` serve
throughput / MFU reporting.

Variables carry sharding annotations (mesh axes 'fsdp' and 'tensor'); derive shardings with
``nnx.get_named_sharding(nnx.state(model), mesh)``. When ``create`` runs with a global mesh set
(``jax.set_mesh``), variables are sharded as they are created; otherwise they are created
unsharded and only annotated. The models are written for pjit-style meshes whose axes are
``jax.sharding.AxisType.Auto`` (``jax.make_mesh(..., axis_types=(AxisType.Auto,) * 3)``);
under ``Explicit`` axes (jax.make_mesh's default) the embedding gather has no unambiguous
output sharding and jax raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx

from optaxlab.models.cnn import CNN, MLP
from optaxlab.models.transformer import Transformer, mlp_hidden_dim

__all__ = ["CNN", "DEFAULTS", "MLP", "Transformer", "count_params", "create", "flops_per_token"]

# Every model's keys and their defaults (besides 'name').
DEFAULTS: dict[str, dict[str, Any]] = {
    "transformer": dict(vocab_size=256, d_model=128, n_layers=2, n_heads=4, max_len=256,
                        rope_fraction=1.0, mlp_ratio=8 / 3, init_std=0.02,
                        compute_dtype="float32", attention_impl="auto", remat="none",
                        logits_chunk=0),
    "cnn": dict(num_classes=10, channels=(32, 64), hidden=128, input_shape=(8, 8, 1)),
    "mlp": dict(num_classes=10, hidden=(256, 256), input_shape=(8, 8, 1)),
}
_CLASSES = {"transformer": Transformer, "cnn": CNN, "mlp": MLP}


def _resolve(model_cfg: Mapping[str, Any] | Any) -> tuple[str, dict[str, Any]]:
    """(name, full kwargs) from a config block; ValueError on unknown name or key."""
    cfg = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
    name = cfg.pop("name", None)
    if name not in DEFAULTS:
        raise ValueError(f"unknown model name {name!r}; valid: {sorted(DEFAULTS)}")
    unknown = sorted(set(cfg) - set(DEFAULTS[name]))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for model {name!r}; valid: "
                         f"{sorted(DEFAULTS[name])}")
    return name, {**DEFAULTS[name], **cfg}


def create(model_cfg: Mapping[str, Any] | Any, *, rngs: nnx.Rngs) -> nnx.Module:
    """Builds the model named by ``model_cfg['name']`` ('transformer', 'cnn' or 'mlp')."""
    name, kwargs = _resolve(model_cfg)
    eager = jax.sharding.get_abstract_mesh().empty is False
    with nnx.use_eager_sharding(eager):
        return _CLASSES[name](**kwargs, rngs=rngs)


def count_params(model: nnx.Module) -> int:
    """Number of scalars in the model's ``nnx.Param`` variables (BatchNorm statistics excluded)."""
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def flops_per_token(model_cfg: Mapping[str, Any] | Any, seq_len: int | None = None) -> float:
    """Training FLOPs (forward + backward) per token, or per example for 'cnn' / 'mlp'.

    Transformer (PaLM appendix B convention): ``6 * N + 12 * n_layers * d_model * T`` where N
    counts the matmul parameters (all parameters except the embedding table, which is a
    lookup) and T is ``seq_len`` (default ``max_len``); the attention term counts the full
    T x T score matrix, i.e. ignores causal sparsity.

    CNN / MLP: ``3 x`` the forward multiply-adds x 2 of the convolutions and dense layers
    for one example (backward = 2 x forward).
    """
    name, c = _resolve(model_cfg)
    if name == "transformer":
        d, n_layers, vocab = c["d_model"], c["n_layers"], c["vocab_size"]
        hidden = mlp_hidden_dim(d, c["mlp_ratio"])
        per_layer = 4 * d * d + 3 * d * hidden + 2 * d
        n_matmul = n_layers * per_layer + d + d * vocab
        t = c["max_len"] if seq_len is None else seq_len
        return float(6 * n_matmul + 12 * n_layers * d * t)
    h, w, ch = c["input_shape"]
    fwd = 0
    if name == "cnn":
        for out in c["channels"]:
            fwd += 2 * h * w * 9 * ch * out
            h, w, ch = math.ceil(h / 2), math.ceil(w / 2), out
        dims = [h * w * ch, c["hidden"], c["num_classes"]]
    else:
        hidden = (c["hidden"],) if isinstance(c["hidden"], int) else tuple(c["hidden"])
        dims = [h * w * ch, *hidden, c["num_classes"]]
    fwd += sum(2 * a * b for a, b in zip(dims[:-1], dims[1:], strict=False))
    return float(3 * fwd)
