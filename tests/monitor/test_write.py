"""TensorBoard writing: histograms per layer per logged step, scalars and images, read back with
TensorBoard's own EventAccumulator."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tensorboard.backend.event_processing import event_accumulator as ea

from optaxlab import monitor


def test_events_have_a_histogram_per_layer_per_logged_step(tmp_path):
    rng = np.random.default_rng(0)
    params = {
        "blocks": {"0": {"kernel": jnp.zeros((40, 30)), "bias": jnp.zeros((30,))}},
        "head": {"kernel": jnp.zeros((30, 7))},
    }
    lr = 0.01
    opt = monitor.watch(optax.adam(lr, b1=0.0, b2=0.95, eps=0.0), learning_rate=lr, b1=0.0,
                        b2=0.95, image_steps=(2,))
    r, bins = 4.0, 65

    @jax.jit
    def step(params, state, g):
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state

    logdir = tmp_path / "tensorboard"
    writer = monitor.EventWriter(str(logdir))
    state = opt.init(params)
    logged, returned = {}, {}
    for t in range(1, 5):
        g = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
        params, state = step(params, state, g)
        if t != 3:  # e.g. every = 2 plus the first step: step 3 not logged
            logged[t] = jax.device_get(monitor.latest(state))
            returned[t] = monitor.write(writer, t, logged[t])
    writer.close()

    acc = ea.EventAccumulator(
        str(logdir), size_guidance={ea.HISTOGRAMS: 0, ea.SCALARS: 0, ea.IMAGES: 0}
    )
    acc.Reload()
    tags = acc.Tags()
    layers = ["blocks/0/bias", "blocks/0/kernel", "head/kernel"]
    expected = {f"{kind}_hist/{layer}" for kind in ("update", "grad") for layer in layers}
    assert set(tags["histograms"]) == expected
    for layer in layers:
        events = acc.Histograms(f"update_hist/{layer}")
        assert [e.step for e in events] == [1, 2, 4]
        for e in events:
            h = e.histogram_value
            counts = logged[e.step].histogram(layer)
            pos = monitor.writer.bucket_position(h.bucket_limit, r, bins)
            full = np.zeros(bins + 2)
            full[pos] = h.bucket
            np.testing.assert_array_equal(full, counts)  # empty end buckets left out
            assert h.num == counts.sum() == np.prod(params_shape(params, layer))
            assert h.bucket[0] > 0 and h.bucket[-1] > 0
            assert len(h.bucket) < bins + 2
            assert h.min >= -np.sqrt(e.step) - 1e-5 and h.max <= np.sqrt(e.step) + 1e-5
        assert [e.step for e in acc.Histograms(f"grad_hist/{layer}")] == [1, 2, 4]
        for metric in ("theory_tv", "noise_tv"):
            tv = acc.Scalars(f"{metric}/{layer}")
            assert [s.step for s in tv] == [1, 2, 4]
            np.testing.assert_allclose(
                [s.value for s in tv], [returned[t][f"{metric}/{layer}"] for t in (1, 2, 4)], 1e-6
            )
    for tag in ("monitor/update_var", "theory/m_eff", "update_var_abs/head/kernel", "monitor/bins"):
        assert [s.step for s in acc.Scalars(tag)] == [1, 2, 4], tag
    images = acc.Images(monitor.IMAGE_TAG)
    assert [im.step for im in images] == [2] and images[0].width > 100
    assert images[0].encoded_image_string[:4] == b"\x89PNG"
    # every tag of the returned scalars is in the file
    assert set(tags["scalars"]) == set().union(*returned.values())
    # no writer (e.g. process != 0): nothing written, same scalars returned; no stats: nothing
    assert monitor.write(None, 4, logged[4]) == returned[4]
    assert monitor.write(writer, 5, None) == {}


def params_shape(params, layer):
    node = params
    for k in layer.split("/"):
        node = node[k]
    return node.shape


def test_other_writers_get_the_same_summaries(tmp_path):
    """A writer with tensorboardX's method names (here torch.utils.tensorboard's) gets one call
    per value; TensorBoard reads the same histograms and scalars as from our EventWriter."""
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(1)
    params = {"a": {"kernel": jnp.zeros((20, 10))}, "b": {"bias": jnp.zeros((10,))}}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
    opt = monitor.watch(optax.adam(0.1, b1=0.0, b2=0.9), learning_rate=0.1, b2=0.9,
                        image_steps=())
    _, state = opt.update(grads, opt.init(params), params)
    stats = jax.device_get(monitor.latest(state))
    torch_writer = SummaryWriter(str(tmp_path / "torch"))
    ours = monitor.EventWriter(tmp_path / "ours")
    assert monitor.write(torch_writer, 1, stats) == monitor.write(ours, 1, stats)
    torch_writer.close()
    ours.close()
    accs = {}
    for name in ("torch", "ours"):
        accs[name] = ea.EventAccumulator(str(tmp_path / name), size_guidance={ea.SCALARS: 0})
        accs[name].Reload()
    tags = accs["ours"].Tags()
    assert tags["histograms"] == accs["torch"].Tags()["histograms"]
    assert len(tags["histograms"]) == 4 and set(tags["scalars"]) == set(
        accs["torch"].Tags()["scalars"]
    )
    for tag in tags["histograms"]:
        a, b = (accs[n].Histograms(tag)[0].histogram_value for n in ("ours", "torch"))
        assert a == b, tag
    for tag in tags["scalars"]:
        assert accs["ours"].Scalars(tag)[0].value == accs["torch"].Scalars(tag)[0].value, tag
