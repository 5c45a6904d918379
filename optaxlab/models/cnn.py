"""Small vision models in Flax NNX: a plain MLP and the CNN of "Gradient Spread as an
Intuition for the Adam Optimizer".

CNN: ``[conv3x3 -> BatchNorm -> relu -> maxpool2x2] x len(channels) -> flatten -> fc(hidden)
-> relu -> fc(num_classes)``. Convolutions have no bias (BatchNorm supplies it); BatchNorm
running statistics are ``nnx.BatchStat`` variables, updated when ``train=True``.

MLP: ``flatten -> [fc -> relu] x len(hidden) -> fc(num_classes)``.

Both are called as ``model(images float32[B, H, W, C], train: bool) -> float32 logits
[B, num_classes]``. Dense kernels are annotated ('fsdp', None); everything else is replicated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def _dense(d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("fsdp", None))
    return nnx.Linear(d_in, d_out, kernel_init=init, rngs=rngs)


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape={tuple(input_shape)} must be (height, width, channels)")
    return shape  # type: ignore[return-value]


def _check_images(images: jax.Array, shape: tuple[int, int, int]) -> None:
    if tuple(images.shape[1:]) != shape:
        want = ", ".join(map(str, shape))
        raise ValueError(f"images of shape {tuple(images.shape)}; expected [B, {want}]")


class CNN(nnx.Module):
    """conv -> bn -> relu -> pool (per entry of ``channels``), then fc -> relu -> fc."""

    def __init__(self, *, num_classes: int = 10, channels: Sequence[int] = (32, 64),
                 hidden: int = 128, input_shape: Sequence[int] = (8, 8, 1), rngs: nnx.Rngs):
        h, w, c = _check_shape(input_shape)
        self.input_shape = (h, w, c)
        convs, norms = [], []
        for out in channels:
            convs.append(nnx.Conv(c, int(out), kernel_size=(3, 3), padding="SAME",
                                  use_bias=False, rngs=rngs))
            norms.append(nnx.BatchNorm(int(out), momentum=0.9, rngs=rngs))
            c = int(out)
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.fc = _dense(h * w * c, int(hidden), rngs)
        self.out = _dense(int(hidden), int(num_classes), rngs)

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        _check_images(images, self.input_shape)
        x = images.astype(jnp.float32)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = jax.nn.relu(norm(conv(x), use_running_average=not train))
            x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="SAME")
        x = x.reshape(x.shape[0], -1)
        return self.out(jax.nn.relu(self.fc(x)))


class MLP(nnx.Module):
    """flatten -> [fc -> relu] per entry of ``hidden`` -> fc(num_classes)."""

    def __init__(self, *, num_classes: int = 10, hidden: Sequence[int] = (256, 256),
                 input_shape: Sequence[int] = (8, 8, 1), rngs: nnx.Rngs):
        self.input_shape = _check_shape(input_shape)
        if isinstance(hidden, int):
            hidden = (hidden,)
        d = math.prod(self.input_shape)
        layers = []
        for width in hidden:
            layers.append(_dense(d, int(width), rngs))
            d = int(width)
        self.layers = nnx.List(layers)
        self.out = _dense(d, int(num_classes), rngs)

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        del train  # no train-time behaviour; kept for a uniform call signature
        _check_images(images, self.input_shape)
        x = images.astype(jnp.float32).reshape(images.shape[0], -1)
        for layer in self.layers:
            x = jax.nn.relu(layer(x))
        return self.out(x)
