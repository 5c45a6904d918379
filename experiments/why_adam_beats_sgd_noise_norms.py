"""Why Adam Beats SGD for Attention Models, Fig. 1 at laptop scale: is the gradient noise of the
transformer heavier-tailed than that of the CNN?

Models: the byte-level LM of optaxlab/configs/lm_tiny.py (2 layers, d_model 64, sequences of
64 bytes of
the bundled corpus) and the CNN of optaxlab/configs/cnn_digits.py (8x8 digits). For each, at
initialization and mid-training (after Adam training as in its config: LM 300 steps, batch 16,
lr 3e-3, b2 0.95, clip 1; CNN 250 steps, batch 64, lr 1e-3), per-example gradients of N examples
(LM: N random training windows, one sequence = one example; CNN: every training image, BatchNorm
in inference mode so that examples are independent) give the full gradient g_full (their mean)
and samples of the noise norm ||g_batch - g_full|| for batch 1 (every example) and batch 16
(`optaxlab.theory.noise_norms`). Tail indices of the norms: Hill (k = sqrt(N)) and the
alpha-stable estimator (`optaxlab.theory.hill_estimator`, `stable_tail_index`); for calibration,
the same estimators on the norms of Gaussian noise with the same per-coordinate variance.
The paper measures BERT vs ResNet on ImageNet; here both models are tiny.

    python experiments/why_adam_beats_sgd_noise_norms.py [--out DIR] [--n 512]

Writes tail_index.csv, norms.csv (every sampled norm), noise_norms.png (histograms, normalized by
the median), variance_vs_n.png (running variance of the batch-1 norms vs sample size).
"""

from __future__ import annotations

import time

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optaxlab import models, theory
from optaxlab.data import corpus, vision

SEQ = 64
LM_CFG = dict(name="transformer", vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_len=64)
CNN_CFG = dict(name="cnn", num_classes=10, channels=(32, 64), hidden=128, input_shape=(8, 8, 1))


def lm_data(seed: int):
    folder = corpus.ensure_stdlib_corpus()
    toks = np.asarray(corpus.load_tokens(folder / "train.bin", "uint8"))
    rng = np.random.default_rng(seed)

    def sample(n):
        start = rng.integers(0, len(toks) - SEQ - 1, size=n)
        w = np.stack([toks[s:s + SEQ + 1] for s in start]).astype(np.int32)
        return w[:, :-1], w[:, 1:]

    return sample


def loss_fn(kind: str, model, x, y):
    if kind == "lm":
        logits = model(x)
    else:
        logits = model(x, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_loss(kind: str, model, x, y):
    logits = model(x) if kind == "lm" else model(x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def per_example_grads(kind: str, model, xs, ys, chunk: int = 32) -> np.ndarray:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def one(p, x, y):
        m = nnx.merge(graphdef, p, rest)
        return loss_fn(kind, m, x[None], y[None])

    @jax.jit
    def grads(p, x, y):
        g = jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(p, x, y)
        return jnp.concatenate([a.reshape(a.shape[0], -1)
                                for a in jax.tree.leaves(g)], axis=1)

    out = []
    for i in range(0, len(xs) - len(xs) % chunk, chunk):
        out.append(np.asarray(grads(params, jnp.asarray(xs[i:i + chunk]),
                                    jnp.asarray(ys[i:i + chunk]))))
    return np.concatenate(out)


def train(kind: str, model, steps: int, seed: int) -> float:
    if kind == "lm":
        tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3, b1=0.9, b2=0.95))
        sample = lm_data(seed + 100)
        batch = lambda: sample(16)
    else:
        tx = optax.adam(1e-3)
        x_tr, y_tr = vision.load_digits()["train"]
        rng = np.random.default_rng(seed + 100)

        def batch():
            i = rng.integers(0, len(y_tr), 64)
            return x_tr[i], y_tr[i]
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(m, o, x, y):
        loss, g = nnx.value_and_grad(lambda m: train_loss(kind, m, x, y))(m)
        o.update(m, g)
        return loss

    losses = []
    for _ in range(steps):
        x, y = batch()
        losses.append(float(step(model, opt, jnp.asarray(x), jnp.asarray(y))))
    return float(np.mean(losses[-20:]))


def analyse(g: np.ndarray, seed: int) -> dict:
    full = g.mean(0)
    n = len(g)
    b1 = np.linalg.norm(g - full, axis=1)
    b16 = theory.noise_norms(g, 16, 2000, seed=seed, full_grad=full)
    # Gaussian reference: same per-coordinate variance, independent coordinates
    sd = g.std(0)
    rng = np.random.default_rng(seed)
    gauss = np.array([np.linalg.norm(sd * rng.standard_normal(sd.shape)) for _ in range(n)])
    k = int(np.sqrt(n))
    return dict(
        norms1=b1, norms16=b16, gauss=gauss,
        n=n, d=g.shape[1], full_norm=float(np.linalg.norm(full)),
        median1=float(np.median(b1)), max_over_median1=float(b1.max() / np.median(b1)),
        p99_over_median1=float(np.quantile(b1, 0.99) / np.median(b1)),
        hill1=theory.hill_estimator(b1, k), stable1=theory.stable_tail_index(b1 - b1.mean()),
        hill16=theory.hill_estimator(b16), stable16=theory.stable_tail_index(b16 - b16.mean()),
        hill_gauss=theory.hill_estimator(gauss, k),
        max_over_median16=float(b16.max() / np.median(b16)),
    )


def main() -> None:
    p = _common.parser(__file__, __doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512, help="examples for the LM (CNN: all images)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = _common.out_dir(args.out)
    t0 = time.perf_counter()
    results, costs = {}, {}
    for kind, cfg, steps in (("lm", LM_CFG, 300), ("cnn", CNN_CFG, 250)):
        tk = time.perf_counter()
        model = models.create(cfg, rngs=nnx.Rngs(args.seed))
        if kind == "lm":
            xs, ys = lm_data(args.seed)(args.n)
        else:
            xs, ys = vision.load_digits()["train"]
            xs, ys = xs[: len(xs) - len(xs) % 32], ys[: len(ys) - len(ys) % 32]
        results[(kind, "init")] = analyse(per_example_grads(kind, model, xs, ys), args.seed)
        final = train(kind, model, steps, args.seed)
        results[(kind, f"step{steps}")] = analyse(per_example_grads(kind, model, xs, ys),
                                                  args.seed)
        results[(kind, f"step{steps}")]["train_loss"] = final
        costs[kind] = time.perf_counter() - tk
        print(f"{kind}: {costs[kind]:.0f} s", flush=True)
    cols = ["n", "d", "full_norm", "median1", "p99_over_median1", "max_over_median1", "hill1",
            "stable1", "hill_gauss", "max_over_median16", "hill16", "stable16"]
    rows = [[k, ph] + [r[c] for c in cols] for (k, ph), r in results.items()]
    files = [_common.write_csv(out / "tail_index.csv", ["model", "phase"] + cols, rows)]
    norm_rows = []
    for (k, ph), r in results.items():
        norm_rows += [[k, ph, 1, float(v)] for v in r["norms1"]]
        norm_rows += [[k, ph, 16, float(v)] for v in r["norms16"]]
    files.append(_common.write_csv(out / "norms.csv", ["model", "phase", "batch", "norm"],
                                   norm_rows))
    plt = _common.plt()
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5))
    for j, ((k, ph), r) in enumerate(results.items()):
        for i, (key, label) in enumerate((("norms1", "batch 1"), ("norms16", "batch 16"))):
            x = r[key] / np.median(r[key])
            axes[i, j].hist(x, bins=60, density=True, alpha=0.7, label=label)
            if key == "norms1":
                gx = r["gauss"] / np.median(r["gauss"])
                axes[i, j].hist(gx, bins=60, density=True, histtype="step", color="k",
                                label="Gaussian, same variances")
            hill = r["hill1"] if key == "norms1" else r["hill16"]
            axes[i, j].set_title(f"{k} {ph}, {label}: Hill {hill:.1f}", fontsize=9)
            axes[i, j].set_xlabel("||g_batch - g_full|| / median")
            axes[i, j].legend(fontsize=6)
    fig.tight_layout()
    files.append(_common.save_fig(fig, out / "noise_norms.png"))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for (k, ph), r in results.items():
        n, v = theory.variance_vs_sample_size(r["norms1"])
        ax.plot(n, v / v[-1], label=f"{k} {ph}")
    ax.set(xscale="log", xlabel="samples", ylabel="running Var / final Var",
           title="variance of batch-1 noise norms vs sample size")
    ax.legend(fontsize=7)
    files.append(_common.save_fig(fig, out / "variance_vs_n.png"))
    plt.close(fig)
    wall = time.perf_counter() - t0
    (out / "cost.txt").write_text(
        f"python experiments/why_adam_beats_sgd_noise_norms.py --n {args.n} --seed {args.seed}: "
        f"wall clock {wall:.0f} s (lm {costs['lm']:.0f} s, cnn {costs['cnn']:.0f} s) on the "
        "shared 2-core CPU under nice 19\n")
    files.append(out / "cost.txt")
    for row in rows:
        print(row[:2], " ".join(f"{c}={v:.3g}" for c, v in zip(cols, row[2:], strict=True)))
    _common.done(out, files)


if __name__ == "__main__":
    main()
