"""Registry optimizers that need something of the trainer: schedule-free AdamW is evaluated at
its eval point x (not at the y its gradients are taken at), Muon partitions the transformer's
leaves by name (matrices Muon, embedding / head / norms Adam)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optaxlab import configs, optimizers
from optaxlab import data as data_lib
from optaxlab.train import IncompatibleCheckpointError, optim, train
from optaxlab.train import config as config_lib
from optaxlab.train import mesh as mesh_lib
from optaxlab.train.state import create, merge
from optaxlab.train.step import lm_loss

ROOT = Path(__file__).resolve().parents[2]
ONE = jax.devices()[:1]


def _config(name, **hparams):
    """lm_tiny shrunk (as tests/train/test_loop.py does) with optimizer `name`, constant lr."""
    c = configs.get_config("lm_tiny")
    c.steps, c.batch_size, c.seq_len, c.log_every = 6, 8, 32, 1
    c.model.d_model, c.model.n_layers, c.model.n_heads, c.model.max_len = 32, 1, 4, 32
    c.eval_every, c.eval_batches, c.checkpoint_every = 6, 2, 5
    c.monitor.every, c.progress_bar, c.data.num_threads, c.mesh.data = 0, False, 0, 1
    c.optimizer = config_lib.switch_optimizer(c.optimizer, name, {"schedule": "constant",
                                                                   **hparams})
    return c


def _eval_loss(config, result, params) -> float:
    """Mean validation loss of `params`, over the batches the trainer evaluates on."""
    ds = data_lib.lm_dataset(config.data, seq_len=config.seq_len, batch_size=config.batch_size,
                             seed=config.seed, rows=np.arange(config.batch_size),
                             vocab_size=config.model.vocab_size, split="val")
    tx = optim.make_optimizer(config.optimizer, config.steps)
    graphdef = create(config.model, tx, mesh_lib.make_mesh((1, 1, 1), ONE), config.seed)[0]
    total = count = 0.0
    for n, batch in enumerate(ds):
        if n == config.eval_batches:
            break
        _, aux = lm_loss(merge(graphdef, params, result.state.rest),
                         jax.tree.map(jnp.asarray, batch), train=False)
        total, count = total + float(aux["loss_sum"]), count + float(aux["count"])
    return total / count


def test_schedule_free_adamw_is_evaluated_at_its_eval_params(tmp_path):
    config = _config("schedule_free_adamw", b1=0.9, warmup_steps=2)
    result = train(config, tmp_path / "sf", devices=ONE)
    logged = result.records[-1]["eval_loss"]
    x = optax.contrib.schedule_free_eval_params(
        next(s for s in jax.tree.leaves(result.state.opt_state, is_leaf=lambda s: isinstance(
            s, optax.contrib.ScheduleFreeState)) if isinstance(s, optax.contrib.ScheduleFreeState)),
        result.state.params)
    at_x, at_y = _eval_loss(config, result, x), _eval_loss(config, result, result.state.params)
    assert abs(at_x - at_y) > 1e-4  # the two points differ: the test can tell them apart
    np.testing.assert_allclose(logged, at_x, rtol=1e-5)


def test_muon_trains_the_lm_with_matrices_muon_and_the_rest_adam(tmp_path):
    config = _config("muon", adam_learning_rate=3e-3)
    config.optimizer.learning_rate = 0.02
    result = train(config, tmp_path / "muon", devices=ONE)
    labels = dict(zip(
        [jax.tree_util.keystr(p, simple=True, separator="/")
         for p, _ in jax.tree_util.tree_leaves_with_path(result.state.params)],
        jax.tree.leaves(optimizers.muon_labels(result.state.params)), strict=True))
    muon = sorted(k for k, v in labels.items() if v == "muon")
    adam = sorted(k for k, v in labels.items() if v == "adam")
    assert muon and all("embed" not in k and "head" not in k for k in muon), muon
    assert any("embed" in k for k in adam) and any("head" in k for k in adam), adam
    losses = [r["loss"] for r in result.records]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", ["muon", "schedule_free_adamw"])
def test_a_changed_modern_optimizer_is_refused_on_resume(tmp_path, name):
    config = _config(name)
    config.steps, config.eval_every = 2, 0
    train(config, tmp_path / "run", devices=ONE)
    other = _config("adam" if name == "muon" else "muon")
    other.steps, other.eval_every = 4, 0
    with pytest.raises(IncompatibleCheckpointError):
        train(other, tmp_path / "run", devices=ONE)
