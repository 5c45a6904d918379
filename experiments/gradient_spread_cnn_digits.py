"""Gradient Spread as an Intuition for the Adam Optimizer, Figs. 1-2 at laptop scale: the small
CNN (optaxlab/configs/cnn_digits.py) on scikit-learn's 8x8 digits instead of CIFAR-10.

Adam b1 = b2 = 0.99 (Fig. 1), Adam (0.9, 0.999) (Fig. 2) and SGD with momentum (0.9), each at
batch 16 and 100, one seed, a constant learning rate. Every step the monitor
(`optaxlab.monitor.watch`, scalars only) measures, per conv/fc weight (BatchNorm and biases left
out, as in the paper): the step size mean |Delta| = mean |theta_t - theta_{t-1}| / lr, the spread
gamma = sqrt(v - m^2)/|m| (mean and geometric mean over coordinates) and the step the spread
predicts, mean 1/sqrt(1 + gamma^2) = mean |m|/sqrt(v). m, v are bias-corrected EMAs of the
gradient read from an optimizer state: Adam's own, and for SGD a pass-through tracker with
b1 = b2 = 0.99 (the paper measures the spread of SGD's gradients with EMAs too). The mean
gradient is mean |m| over the same weights. Layer values are averaged over the four weight layers
(first within each layer, then across layers, as in the paper).

For b1 = b2 and eps -> 0 the Adam step is *exactly* sign(m)/sqrt(1 + gamma^2) coordinate-wise, so
mean |Delta| must equal the predicted step (ratio 1, up to eps); for (0.9, 0.999) it need not.

    python experiments/gradient_spread_cnn_digits.py [--out DIR] [--steps 1000]

Writes per_step.csv (every run and step), summary.csv / summary.md (per run: final val loss and
accuracy, median and max |measured / predicted - 1|, correlation of step with mean gradient and
with the spread's prediction, in the second half of training) and figures (per batch size:
loss, mean gradient vs step size, spread vs step size coloured by step), and the wall-clock cost.
"""

from __future__ import annotations

import time
from pathlib import Path

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optaxlab import models, monitor
from optaxlab.data import vision
from optaxlab.monitor.stats import FIELD

WEIGHTS = r"(convs/\d+/kernel|fc/kernel|out/kernel)"
# The spread is always measured with the same equal-beta tracker (0.99, 0.99): a property of the
# gradient stream, not of the optimizer. (Measured with an optimizer's own m and v,
# 1/sqrt(1 + gamma^2) = |m|/sqrt(v) is Adam's step for *any* b1, b2, a tautology.)
TRACKER = (0.99, 0.99)
# name -> (optimizer factory, lr)
RUNS = {
    "adam_b0.99_0.99": (lambda lr: optax.adam(lr, b1=0.99, b2=0.99, eps=1e-8), 1e-3),
    "adam_b0.9_0.999": (lambda lr: optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8), 1e-3),
    "sgd_momentum0.9": (lambda lr: optax.sgd(lr, momentum=0.9), 1e-2),
}
BATCHES = (16, 100)


def moment_tracker(b1: float, b2: float) -> optax.GradientTransformation:
    """Keeps Adam's (mu, nu) EMAs of the gradient in an `optax.ScaleByAdamState` and passes the
    gradient through unchanged, so the monitor can measure the spread of any optimizer's
    gradients (it reads the first (mu, nu) state of the chain)."""
    adam = optax.scale_by_adam(b1=b1, b2=b2)

    def update(grads, state, params=None):
        del params
        _, new_state = adam.update(grads, state)
        return grads, new_state

    return optax.GradientTransformation(adam.init, update)


def run(name: str, batch: int, steps: int, seed: int) -> tuple[list[dict], dict]:
    factory, lr = RUNS[name]
    t1, t2 = TRACKER
    data = vision.load_digits()
    x_tr, y_tr = data["train"]
    x_va, y_va = data["val"]
    cfg = dict(name="cnn", num_classes=10, channels=(32, 64), hidden=128, input_shape=(8, 8, 1))
    model = models.create(cfg, rngs=nnx.Rngs(seed))
    tx = monitor.watch(
        optax.chain(moment_tracker(t1, t2), factory(lr)),
        learning_rate=lr, b1=t1, b2=t2, bias_correction=True, histograms=False, theory=False,
        include=WEIGHTS,
    )
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    def loss_fn(m, x, y):
        logits = m(x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @nnx.jit
    def step(m, o, x, y):
        loss, grads = nnx.value_and_grad(loss_fn)(m, x, y)
        o.update(m, grads)
        # mean |m_hat| per monitored weight, from the tracker's state
        tracker = o.opt_state.inner[0]
        corr = 1.0 - t1 ** tracker.count.astype(jnp.float32)
        means = {k: jnp.mean(jnp.abs(v)) / corr for k, v in _weight_leaves(tracker.mu).items()}
        return loss, means

    @nnx.jit
    def evaluate(m, x, y):
        logits = m(x, train=False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (logits.argmax(-1) == y).mean()

    rng = np.random.default_rng(seed)
    order = np.array([], np.int64)
    rows = []
    t0 = time.perf_counter()
    for t in range(1, steps + 1):
        if len(order) < batch:
            order = np.concatenate([order, rng.permutation(len(y_tr))])
        idx, order = order[:batch], order[batch:]
        loss, means = step(model, opt, jnp.asarray(x_tr[idx]), jnp.asarray(y_tr[idx]))
        st = jax.device_get(monitor.latest(opt.opt_state))
        layers = sorted(means)
        raw = {k: st.row(k) for k in layers}
        f = lambda k, field: float(raw[k][FIELD[field]])
        # Means over *all* coordinates of a layer: coordinates whose gradient has been exactly 0
        # so far (v = 0: dead ReLU inputs) have Delta = 0 and predicted step 0. (The monitor's
        # `spread_step` divides by the count of v > 0 instead, so it is not comparable with
        # `update_mean_abs`, which divides by all coordinates.)
        meas = [f(k, "d_sumabs") / f(k, "n") for k in layers]
        pred = [f(k, "step_sum") / f(k, "n") for k in layers]
        rows.append(dict(
            run=name, batch=batch, step=t, loss=float(loss),
            mean_grad=float(np.mean([float(means[k]) for k in layers])),
            step_size=float(np.mean(meas)),
            predicted_step=float(np.mean(pred)),
            spread_mean=float(np.mean([f(k, "spread_sum") / f(k, "spread_n") for k in layers])),
            spread_geo=float(np.mean([np.exp(f(k, "spread_logsum") / f(k, "spread_n"))
                                      for k in layers])),
            max_layer_rel_err=float(max(abs(a / b - 1.0) for a, b in zip(meas, pred, strict=True))),
        ))
    train_s = time.perf_counter() - t0
    vl, va = evaluate(model, jnp.asarray(x_va), jnp.asarray(y_va))
    return rows, dict(run=name, batch=batch, lr=lr, val_loss=float(vl), val_acc=float(va),
                      train_seconds=train_s)


def _weight_leaves(tree) -> dict[str, jax.Array]:
    import re

    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = "/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p))))
                        for p in path)
        name = name.replace("/value", "")
        if re.search(WEIGHTS + "$", name):
            out[name] = leaf
    return out


def _summary(rows: list[dict], info: dict) -> dict:
    half = [r for r in rows if r["step"] > len(rows) // 2]
    step = np.array([r["step_size"] for r in half])
    pred = np.array([r["predicted_step"] for r in half])
    grad = np.array([r["mean_grad"] for r in half])
    rel = np.abs(np.array([r["step_size"] / r["predicted_step"] for r in rows]) - 1.0)
    return dict(
        **info,
        median_rel_err_step_vs_spread=float(np.median(rel)),
        max_rel_err_step_vs_spread=float(np.max(rel)),
        max_layer_rel_err=float(max(r["max_layer_rel_err"] for r in rows)),
        corr_step_vs_pred_2nd_half=float(np.corrcoef(step, pred)[0, 1]),
        corr_step_vs_mean_grad_2nd_half=float(np.corrcoef(step, grad)[0, 1]),
        step_size_cv_2nd_half=float(step.std() / step.mean()),
    )


def figures(rows: list[dict], out: Path) -> list[Path]:
    plt = _common.plt()
    files = []
    for batch in BATCHES:
        fig, axes = plt.subplots(len(RUNS), 3, figsize=(12, 3.2 * len(RUNS)))
        for i, name in enumerate(RUNS):
            rr = [r for r in rows if r["run"] == name and r["batch"] == batch]
            t = np.array([r["step"] for r in rr])
            get = lambda k, rr=rr: np.array([r[k] for r in rr])
            axes[i, 0].plot(t, get("loss"), lw=0.6)
            axes[i, 0].set(yscale="log", xlabel="step", ylabel="train loss", title=name)
            sc = axes[i, 1].scatter(get("mean_grad"), get("step_size"), c=t, s=3, cmap="viridis")
            axes[i, 1].set(xscale="log", xlabel="mean |m_t| (bias-corrected EMA)",
                           ylabel="step size mean|Delta|")
            axes[i, 2].scatter(get("spread_geo"), get("step_size"), c=t, s=3, cmap="viridis",
                               label="measured (x: geometric-mean spread)")
            axes[i, 2].scatter(get("spread_geo"), get("predicted_step"), s=1, c="r",
                               label="mean 1/sqrt(1+gamma^2) (per coordinate)")
            g = np.geomspace(max(get("spread_geo").min(), 1e-2), get("spread_geo").max(), 100)
            axes[i, 2].plot(g, 1 / np.sqrt(1 + g**2), "k:", label="1/sqrt(1+gamma^2)")
            axes[i, 2].set(xscale="log", xlabel="spread gamma", ylabel="step size")
            axes[i, 2].legend(fontsize=6)
            fig.colorbar(sc, ax=axes[i, 1], label="step")
        fig.suptitle(f"CNN on digits, batch {batch}")
        fig.tight_layout()
        files.append(_common.save_fig(fig, out / f"spread_batch{batch}.png"))
        plt.close(fig)
    return files


def main() -> None:
    p = _common.parser(__file__, __doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)
    t0 = time.perf_counter()
    rows, infos = [], []
    for batch in BATCHES:
        for name in RUNS:
            r, info = run(name, batch, args.steps, args.seed)
            rows += r
            infos.append(_summary(r, info))
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in infos[-1].items()},
                  flush=True)
    files = [_common.write_csv(out / "per_step.csv", list(rows[0]),
                               [list(r.values()) for r in rows])]
    files.append(_common.write_csv(out / "summary.csv", list(infos[0]),
                                   [list(i.values()) for i in infos]))
    files += figures(rows, out)
    wall = time.perf_counter() - t0
    lines = ["# Gradient Spread as an Intuition for the Adam Optimizer, Figs. 1-2: CNN on digits",
             "",
             f"Command: `python experiments/gradient_spread_cnn_digits.py --steps {args.steps}"
             f" --seed {args.seed}`; wall clock {wall:.0f} s on the shared 2-core CPU (nice 19).",
             "", "| run | batch | lr | val loss | val acc | median \\|step/pred - 1\\| | max "
             "\\|step/pred - 1\\| | corr(step, pred) 2nd half | corr(step, mean grad) 2nd half |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i in infos:
        lines.append(f"| {i['run']} | {i['batch']} | {i['lr']:g} | {i['val_loss']:.3f} | "
                     f"{i['val_acc']:.3f} | {i['median_rel_err_step_vs_spread']:.2e} | "
                     f"{i['max_rel_err_step_vs_spread']:.2e} | "
                     f"{i['corr_step_vs_pred_2nd_half']:.3f} | "
                     f"{i['corr_step_vs_mean_grad_2nd_half']:.3f} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    files.append(out / "summary.md")
    _common.done(out, files)
    print(f"wall clock {wall:.0f} s")


if __name__ == "__main__":
    main()
