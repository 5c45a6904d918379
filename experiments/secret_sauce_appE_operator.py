"""In Search of Adam's Secret Sauce, App. E: optimizers as operators on a gradient sequence (pure
filtering, no loss).

The damped periodic signal g_t = exp(-t / decay) sin(2 pi t / period) is fed as the gradient of a
scalar parameter to Adam with b1 = b2 = beta without bias correction (`adam_equal_betas`, the
paper's m_t / sqrt(v_t), its eq. 2) for several betas, to Signum (sign of the EMA) and to
EMA-of-sign (`ema_sign`), all from `optaxlab.optimizers`; each output is the direction
-u_t / lr. Printed: the operator properties (|A(g)| <= 1, positive-scale invariance, oddness,
causality) and how periodic each output is once the input has decayed (max |out_t -
out_{t+period}| over the last two periods, against the input's own decay over one period).
Writing g_t = a^t c_t (a = exp(-1/decay), c periodic),
m_t / sqrt(v_t) = sum_k (b/a)^k c_{t-k} / sqrt(sum_k (b/a^2)^k c_{t-k}^2) up to constants, so
the output becomes exactly periodic ("blind to the decay") when beta < a^2.

    python experiments/secret_sauce_appE_operator.py [--out DIR] [--steps 400]
"""

from __future__ import annotations

import _common
import numpy as np

from optaxlab import theory

BETAS = (0.5, 0.8, 0.9, 0.95, 0.99)


def filt(name, g, **hparams):
    return np.asarray(theory.filter_sequence(name, g, hparams=hparams), np.float64)


def periodicity(x, period, n_periods=2):
    """max |x_t - x_{t+period}| over the last n_periods periods."""
    tail = x[-(n_periods + 1) * period:]
    return float(np.max(np.abs(tail[period:] - tail[:-period])))


def main() -> None:
    p = _common.parser(__file__, __doc__)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--period", type=int, default=50)
    p.add_argument("--decay", type=float, default=100.0)
    args = p.parse_args()
    out = _common.out_dir(args.out)
    plt = _common.plt()

    g = theory.damped_periodic(args.steps, args.period, args.decay)
    t = np.arange(1, args.steps + 1)
    outs = {}
    for b in BETAS:
        outs[f"Adam b1=b2={b:g}"] = filt("adam_equal_betas", g, beta=b, bias_correction=False)
    for b in (0.9, 0.99):
        outs[f"Signum beta={b:g}"] = filt("signum", g, beta=b)
        outs[f"EMA-of-sign beta={b:g}"] = filt("ema_sign", g, beta=b)

    rows = []
    decay_per_period = float(np.exp(-args.period / args.decay))
    input_change = periodicity(g.astype(np.float64), args.period)
    for name, y in outs.items():
        rows.append([name, float(np.max(np.abs(y))), periodicity(y, args.period)])
    # Operator properties of Adam(b1 = b2 = 0.9) on this signal.
    a = outs["Adam b1=b2=0.9"]
    scaled = filt("adam_equal_betas", 1000.0 * g, beta=0.9, bias_correction=False)
    neg = filt("adam_equal_betas", -g, beta=0.9, bias_correction=False)
    g_future = g.copy()
    g_future[args.steps // 2:] *= -3.0
    fut = filt("adam_equal_betas", g_future, beta=0.9, bias_correction=False)
    closed = np.asarray(theory.adam_equal_betas_operator(g, 0.9), np.float64)
    props = {
        "max |A(g)|": float(np.max(np.abs(a))),
        "max |A(1000 g) - A(g)|": float(np.max(np.abs(scaled - a))),
        "max |A(-g) + A(g)|": float(np.max(np.abs(neg + a))),
        "causality: max |A(g')_t - A(g)_t|, t < T/2": float(
            np.max(np.abs(fut[: args.steps // 2] - a[: args.steps // 2]))),
        "registry vs closed form m/sqrt(v)": float(np.max(np.abs(closed - a))),
    }

    fig, axes = plt.subplots(3, 1, figsize=(13, 11), sharex=True)
    axes[0].plot(t, g / np.max(np.abs(g)), "r", lw=2, label="g_t (scaled to max 1)")
    for b in BETAS:
        axes[0].plot(t, outs[f"Adam b1=b2={b:g}"], lw=1, label=f"Adam b1=b2={b:g}")
    axes[0].set_title("Adam with equal betas, no bias correction: m_t / sqrt(v_t)")
    axes[1].plot(t, g / np.max(np.abs(g)), "r", lw=2, label="g_t (scaled)")
    for b in (0.9, 0.99):
        axes[1].plot(t, outs[f"Signum beta={b:g}"], lw=1, label=f"Signum beta={b:g}")
    axes[1].set_title("Signum: sign(ema_beta(g))")
    axes[2].plot(t, g / np.max(np.abs(g)), "r", lw=2, label="g_t (scaled)")
    for b in (0.9, 0.99):
        axes[2].plot(t, outs[f"EMA-of-sign beta={b:g}"], lw=1, label=f"EMA-of-sign beta={b:g}")
    axes[2].set_title("EMA of the sign: ema_beta(sign(g))")
    axes[2].set_xlabel("step t")
    for ax in axes:
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylim(-1.1, 1.1)
        ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.suptitle(f"Secret Sauce App. E: g_t = exp(-t/{args.decay:g}) sin(2 pi t/{args.period})")
    fig.tight_layout()
    files = [_common.save_fig(fig, out / "appE_operator.png")]
    files.append(_common.write_csv(
        out / "outputs.csv", ["t", "g"] + list(outs),
        [[int(t[i]), float(g[i])] + [float(y[i]) for y in outs.values()]
         for i in range(args.steps)]))
    files.append(_common.write_csv(out / "periodicity.csv",
                                   ["operator", "max_abs_output", "max_period_change"], rows))
    print(f"input: decays by x{decay_per_period:.3f} per period; "
          f"max |g_t - g_(t+P)| (last 2 periods) = {input_change:.2e}")
    # With g_t = a^t c_t, m_t / sqrt(v_t) = sum (b/a)^k c_{t-k} / sqrt(sum (b/a^2)^k c_{t-k}^2)
    # (up to (1-b) factors): asymptotically periodic iff b < a^2, a = exp(-1/decay).
    print(f"Adam(b1=b2=beta) is asymptotically blind to the decay iff beta < exp(-2/decay) = "
          f"{np.exp(-2 / args.decay):.4f}")
    for name, mx, per in rows:
        print(f"{name:22s} max|out| = {mx:.4f}   max |out_t - out_(t+P)| = {per:.2e}")
    for k, v in props.items():
        print(f"{k:45s} {v:.2e}")
    _common.done(out, files)


if __name__ == "__main__":
    main()
