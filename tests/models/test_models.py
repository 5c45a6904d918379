"""optaxlab.models.create / count_params / flops_per_token."""

import ml_collections
import pytest
from flax import nnx

from optaxlab import models

CFG = dict(name="transformer", vocab_size=256, d_model=32, n_layers=2, n_heads=2, max_len=16)


def test_create_accepts_configdict_and_dict():
    a = models.create(ml_collections.ConfigDict(CFG), rngs=nnx.Rngs(0))
    b = models.create(CFG, rngs=nnx.Rngs(0))
    assert isinstance(a, models.Transformer) and isinstance(b, models.Transformer)
    assert models.count_params(a) == models.count_params(b)


def test_create_defaults_fill_missing_keys():
    model = models.create({"name": "mlp", "num_classes": 10}, rngs=nnx.Rngs(0))
    assert isinstance(model, models.MLP)
    assert [layer.kernel[...].shape for layer in model.layers] == [(64, 256), (256, 256)]


def test_unknown_name_and_key_errors_list_valid_ones():
    with pytest.raises(ValueError, match=r"model name 'resnet'.*'cnn'.*'mlp'.*'transformer'"):
        models.create({"name": "resnet"}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"unknown model name None"):
        models.create({}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\['dropout'\].*valid:.*'d_model'"):
        models.create({**CFG, "dropout": 0.1}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\['d_model'\].*'cnn'"):
        models.flops_per_token({"name": "cnn", "d_model": 3})


def test_transformer_param_count_matches_flops_formula():
    model = models.create(CFG, rngs=nnx.Rngs(0))
    n = models.count_params(model)
    d, layers, vocab, hidden = 32, 2, 256, 128  # 8/3 * 32 = 85.3 -> 128
    per_layer = 4 * d * d + 3 * d * hidden + 2 * d
    assert n == vocab * d + layers * per_layer + d + d * vocab
    n_matmul = n - vocab * d
    assert models.flops_per_token(CFG) == 6 * n_matmul + 12 * layers * d * 16
    assert models.flops_per_token(CFG, seq_len=8) == 6 * n_matmul + 12 * layers * d * 8


def test_pythia_160m_shape():
    cfg = dict(name="transformer", vocab_size=50304, d_model=768, n_layers=12, n_heads=12,
               max_len=2048)
    # 12 x 768 with SwiGLU 2048 and untied 50304-vocab embedding/head: ~162M parameters
    flops = models.flops_per_token(cfg, seq_len=2048)
    n_matmul = 12 * (4 * 768**2 + 3 * 768 * 2048 + 2 * 768) + 768 + 768 * 50304
    assert flops == 6 * n_matmul + 12 * 12 * 768 * 2048
    assert 120e6 < n_matmul < 130e6
