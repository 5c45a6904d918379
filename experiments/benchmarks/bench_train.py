"""Train-step speed: optaxlab's jitted step vs a straightforward PyTorch (nanoGPT-style) one.

For lm_tiny and lm_small (optaxlab/configs/*.py shapes) on CPU: the same transformer
(pre-norm RMSNorm,
RoPE, SwiGLU, no biases, untied head) and the same optimizer (Adam b1 0.9 / b2 0.95 after a
global-norm clip of 1, warmup + cosine schedule), written here in PyTorch (torch.optim.AdamW with
weight_decay 0, clip_grad_norm_, F.scaled_dot_product_attention: what researchers reach for),
timed in the same process on the same token batch, interleaved (ours, torch, ours, ...), medians
over rounds. "ours" is the trainer's real compiled step (optaxlab.train.step, NaN guard and
metrics included, metrics fetched one step behind as the loop does). Before timing, the PyTorch
model is loaded with our initial parameters and both losses are compared (same model check).

With a GPU backend it also prints tokens/s and MFU (model FLOPs from
optaxlab.models.flops_per_token over the device's dense bf16 peak) for lm_small and lm_160m.

    python experiments/benchmarks/bench_train.py [--quick] [--rounds 7] [--steps 3]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

from optaxlab import configs

ROOT = Path(__file__).resolve().parents[2]


def load_config(name: str):
    return configs.get_config(name)


# --------------------------------------------------------------------------- ours (JAX)


def ours(config, tokens):
    """(step, sync, initial params as numpy, initial logits) for the trainer's compiled step."""
    import jax
    import numpy as np

    from optaxlab.train import mesh as mesh_lib
    from optaxlab.train import optim
    from optaxlab.train import state as state_lib
    from optaxlab.train import step as step_lib

    devices = jax.devices()[:1]
    mesh = mesh_lib.make_mesh((1, 1, 1), devices)
    tx = optim.make_optimizer(config.optimizer, config.steps)
    graphdef, init_fn, _, shardings = state_lib.create(config.model, tx, mesh, config.seed)
    plain, _ = step_lib.compile_steps(
        graphdef=graphdef, tx=tx, task="lm", state_shardings=shardings,
        batch_sharding=mesh_lib.batch_sharding(mesh), replicated=mesh_lib.replicated(mesh))
    state = init_fn()
    params0 = jax.tree.map(np.asarray, jax.device_get(state.params))
    batch = mesh_lib.global_batch({"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}, mesh)
    logits0 = np.asarray(jax.jit(lambda p, r, x: state_lib.merge(graphdef, p, r)(x))(
        state.params, state.rest, batch["inputs"]))
    box = {"state": state, "pending": None}

    def step():
        box["state"], metrics, _ = plain(box["state"], batch)
        if box["pending"] is not None:
            jax.device_get(box["pending"])  # one step behind, as in the loop
        box["pending"] = metrics

    def sync():
        jax.block_until_ready(box["state"])
        box["pending"] = None

    step()
    sync()
    return step, sync, params0, logits0


# --------------------------------------------------------------------------- PyTorch


def torch_model(model_cfg):
    import torch
    import torch.nn.functional as F
    from torch import nn

    from optaxlab.models.transformer import mlp_hidden_dim, rope_dim

    d, n_heads, vocab = model_cfg.d_model, model_cfg.n_heads, model_cfg.vocab_size
    head_dim = d // n_heads
    rot = rope_dim(head_dim, model_cfg.rope_fraction)
    hidden = mlp_hidden_dim(d, model_cfg.mlp_ratio)
    std, out_std = model_cfg.init_std, model_cfg.init_std / math.sqrt(2 * model_cfg.n_layers)

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.scale

    def linear(d_in, d_out, s):
        layer = nn.Linear(d_in, d_out, bias=False)
        nn.init.normal_(layer.weight, std=s)
        return layer

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm, self.mlp_norm = RMSNorm(), RMSNorm()
            self.query, self.key, self.value = (linear(d, d, std) for _ in range(3))
            self.out = linear(d, d, out_std)
            self.gate, self.up = linear(d, hidden, std), linear(d, hidden, std)
            self.down = linear(hidden, d, out_std)

        def rope(self, x, cos, sin):  # x [B, H, T, hd]; GPT-NeoX halves on the first rot dims
            if rot == 0:
                return x
            xr, rest = x[..., :rot], x[..., rot:]
            x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)

        def forward(self, x, cos, sin):
            b, t, _ = x.shape
            h = self.attn_norm(x)
            q, k, v = (p(h).view(b, t, n_heads, head_dim).transpose(1, 2)
                       for p in (self.query, self.key, self.value))
            y = F.scaled_dot_product_attention(self.rope(q, cos, sin), self.rope(k, cos, sin), v,
                                               is_causal=True)
            x = x + self.out(y.transpose(1, 2).reshape(b, t, d))
            h = self.mlp_norm(x)
            return x + self.down(F.silu(self.gate(h)) * self.up(h))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            nn.init.normal_(self.embed.weight, std=std)
            self.blocks = nn.ModuleList([Block() for _ in range(model_cfg.n_layers)])
            self.final_norm = RMSNorm()
            self.head = linear(d, vocab, std)

        def forward(self, tokens):
            t = tokens.shape[1]
            inv_freq = 1.0 / 10000.0 ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot)
            angles = torch.arange(t, dtype=torch.float32)[:, None] * inv_freq[None, :]
            cos, sin = angles.cos(), angles.sin()
            x = self.embed(tokens)
            for block in self.blocks:
                x = block(x, cos, sin)
            return self.head(self.final_norm(x))

    return LM()


def load_jax_params(model, params) -> None:
    """Copy our (JAX) initial parameters into the PyTorch model (kernels transposed)."""
    import torch

    with torch.no_grad():
        model.embed.weight.copy_(torch.from_numpy(params["embed"]["embedding"]))
        model.head.weight.copy_(torch.from_numpy(params["head"]["kernel"].T))
        model.final_norm.scale.copy_(torch.from_numpy(params["final_norm"]["scale"]))
        for block, p in zip(model.blocks, [params["blocks"][i] for i in range(len(model.blocks))],
                            strict=True):
            for name in ("query", "key", "value", "out"):
                getattr(block, name).weight.copy_(torch.from_numpy(p["attn"][name]["kernel"].T))
            for name in ("gate", "up", "down"):
                getattr(block, name).weight.copy_(torch.from_numpy(p["mlp"][name]["kernel"].T))
            block.attn_norm.scale.copy_(torch.from_numpy(p["attn_norm"]["scale"]))
            block.mlp_norm.scale.copy_(torch.from_numpy(p["mlp_norm"]["scale"]))


def theirs(config, tokens, params0):
    """(step, sync, initial logits with our parameters) for the PyTorch baseline."""
    import torch
    import torch.nn.functional as F

    from optaxlab.train import optim

    model = torch_model(config.model)
    load_jax_params(model, params0)
    x = torch.from_numpy(tokens[:, :-1].astype("int64"))
    y = torch.from_numpy(tokens[:, 1:].astype("int64"))
    with torch.no_grad():
        logits0 = model(x).numpy()
    opt = config.optimizer
    adam = torch.optim.AdamW(model.parameters(), lr=opt.learning_rate, betas=(opt.b1, opt.b2),
                             eps=opt.eps, weight_decay=0.0)
    schedule = optim.learning_rate_schedule(opt, config.steps)
    box = {"count": 0}

    def step():
        for group in adam.param_groups:
            group["lr"] = float(schedule(box["count"]))
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        adam.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.max_norm)
        adam.step()
        box["count"] += 1
        box["loss"] = loss.item()

    step()
    return step, (lambda: None), logits0


# --------------------------------------------------------------------------- timing


def timed(step, sync, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - t0) / n


def cpu_table(names, rounds: int, steps: int) -> list[str]:
    import jax
    import numpy as np
    import torch

    rows = ["| model | params | batch x seq | ours ms/step | torch ms/step | ours tokens/s | "
            "torch tokens/s | speed ratio (torch / ours time) | max abs logit diff at init |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        config = load_config(name)
        config.monitor.every = 0
        b, t = config.batch_size, config.seq_len
        tokens = np.random.default_rng(0).integers(0, config.model.vocab_size, (b, t + 1),
                                                   dtype=np.int32)
        step_o, sync_o, params0, logits_o = ours(config, tokens)
        n_params = sum(x.size for x in jax.tree.leaves(params0))
        step_t, sync_t, logits_t = theirs(config, tokens, params0)
        same = float(np.max(np.abs(logits_o - logits_t)))
        ours_t, torch_t = [], []
        for r in range(rounds):
            pair = [("o", step_o, sync_o), ("t", step_t, sync_t)]
            for tag, step, sync in (pair if r % 2 == 0 else pair[::-1]):
                (ours_t if tag == "o" else torch_t).append(timed(step, sync, steps))
        mo, mt = statistics.median(ours_t), statistics.median(torch_t)
        rows.append(f"| {name} | {n_params / 1e6:.2f}M | {b} x {t} | {mo * 1e3:.1f} | "
                    f"{mt * 1e3:.1f} | {b * t / mo:,.0f} | {b * t / mt:,.0f} | {mt / mo:.2f} | "
                    f"{same:.1e} |")
        print(rows[-1], flush=True)
    rows.append(f"\nCPU: {os.cpu_count()} cores, torch {torch.__version__} "
                f"({torch.get_num_threads()} threads), jax {jax.__version__}; medians of "
                f"{rounds} interleaved rounds x {steps} steps.")
    return rows


# Dense bf16 peak FLOP/s per device, by a substring of jax's device_kind.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
             "A10": 125e12, "V100": 125e12}


def gpu_table(names, rounds: int, steps: int, batch: int) -> list[str]:
    import jax
    import numpy as np

    from optaxlab.models import flops_per_token

    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_BF16.items() if k in kind), None)
    rows = [f"GPU: {kind} (bf16 dense peak {peak / 1e12 if peak else float('nan'):.0f} "
            "TFLOP/s)", "| model | batch x seq | ms/step | tokens/s | MFU |",
            "|---|---|---|---|---|"]
    for name in names:
        config = load_config(name)
        config.monitor.every = 0
        config.model.compute_dtype = "bfloat16"
        config.batch_size = batch
        b, t = config.batch_size, config.seq_len
        tokens = np.random.default_rng(0).integers(0, config.model.vocab_size, (b, t + 1),
                                                   dtype=np.int32)
        step, sync, _, _ = ours(config, tokens)
        times = [timed(step, sync, steps) for _ in range(rounds)]
        ms = statistics.median(times)
        tps = b * t / ms
        mfu = flops_per_token(config.model, t) * tps / peak if peak else float("nan")
        rows.append(f"| {name} | {b} x {t} | {ms * 1e3:.1f} | {tps:,.0f} | {mfu:.1%} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: lm_tiny, 2 rounds")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round")
    parser.add_argument("--gpu-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0,
                        help="1: both frameworks single-threaded (stable on a busy machine); "
                        "0 (default): both use every core")
    args = parser.parse_args()
    rounds, steps = (2, 2) if args.quick else (args.rounds, args.steps)
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                   "=false intra_op_parallelism_threads=1").strip()
        import torch

        torch.set_num_threads(1)
    elif args.threads:
        parser.error("--threads must be 0 (all cores) or 1")

    import jax

    if jax.default_backend() == "cpu":
        names = ["lm_tiny"] if args.quick else ["lm_tiny", "lm_small"]
        print("\n".join(cpu_table(names, rounds, steps)))
    else:
        names = ["lm_small"] if args.quick else ["lm_small", "lm_160m"]
        print("\n".join(gpu_table(names, rounds, steps, args.gpu_batch)))


if __name__ == "__main__":
    main()
