"""nanoGPT's character-level Shakespeare model (4 layers, 4 heads, 128 wide, context 64,
batch 12) trained with the same recipe in nnlite and in PyTorch (CPU), in one process,
alternating rounds of steps so machine noise hits both alike; prints time per step, tokens
per second and their ratio, and where nnlite's time goes, layer by layer.

    python benchmarks/gpt_shakespeare.py [--rounds 5] [--steps 40] [--threads 2] [--data-dir DIR]
        [--without gelu --without layer_norm,layer_norm_vjp ...]

``--without`` races nnlite with those compiled kernels off as well, each ratio to nnlite
being what the kernels pay.

Needs PyTorch (pip install -e ".[bench]").
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import nnlite
from nnlite.layers import TransformerBlock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from shakespeare_gpt import build, windows  # noqa: E402

from mlp_mnist import PAUSE, machine, profile, table  # noqa: E402
import results

CONTEXT, BATCH, WIDTH, LAYERS, HEADS = 64, 12, 128, 4, 4


class TorchGPT(torch.nn.Module):
    """The same model in torch.nn: pre-norm blocks, exact GELU, no biases, tied head."""

    def __init__(self, vocab):
        super().__init__()
        nn = torch.nn
        self.tok, self.pos = nn.Embedding(vocab, WIDTH), nn.Embedding(CONTEXT, WIDTH)
        self.blocks = nn.ModuleList()
        for _ in range(LAYERS):
            self.blocks.append(nn.ModuleDict(dict(
                ln1=nn.LayerNorm(WIDTH, bias=False),
                attn=nn.MultiheadAttention(WIDTH, HEADS, bias=False, batch_first=True),
                ln2=nn.LayerNorm(WIDTH, bias=False),
                grow=nn.Linear(WIDTH, 4 * WIDTH, bias=False), gelu=nn.GELU(),
                shrink=nn.Linear(4 * WIDTH, WIDTH, bias=False))))
        self.ln = nn.LayerNorm(WIDTH, bias=False)
        self.head = nn.Linear(WIDTH, vocab, bias=False)
        self.head.weight = self.tok.weight
        self.register_buffer("mask", torch.triu(torch.full((CONTEXT, CONTEXT), float("-inf")),
                                                1))

    def forward(self, ids):
        h = self.tok(ids) + self.pos.weight[:ids.shape[1]]
        for b in self.blocks:
            a = b["ln1"](h)
            h = h + b["attn"](a, a, a, attn_mask=self.mask, need_weights=False)[0]
            h = h + b["shrink"](b["gelu"](b["grow"](b["ln2"](h))))
        return self.head(self.ln(h))


def recipe_groups(params, decay_if):
    matrices = [p for p in params if decay_if(p)]
    others = [p for p in params if not decay_if(p)]
    return [{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}]


class NNLite:
    name = "nnlite"

    def __init__(self, vocab, x, y, threads=1, without=()):
        self.model = build(vocab, CONTEXT, WIDTH, LAYERS, HEADS)
        self.threads, self.without = threads, without
        if threads > 1:
            self.name = f"nnlite, {threads} threads"
        if without:  # these compiled kernels off: what each pays, against their references
            self.name = f"nnlite without {'+'.join(without)}"
        self.opt = nnlite.optim.AdamW(recipe_groups(self.model.parameters(),
                                                    lambda p: p.data.ndim >= 2),
                                      lr=1e-3, betas=(0.9, 0.99), max_grad_norm=1.0)
        self.loss = nnlite.losses.CrossEntropy()
        self.x, self.y, self.done = x, y, 0

    def steps(self, n):
        part = slice(self.done * BATCH, (self.done + n) * BATCH)
        with nnlite.kernels.without(*self.without):
            self.model.fit(self.x[part], self.y[part], loss=self.loss, optimizer=self.opt,
                           batch_size=BATCH, shuffle=False, verbose=False, seed=0,
                           threads=self.threads)
        self.done += n


class Torch:
    name = "pytorch"

    def __init__(self, vocab, x, y):
        torch.manual_seed(0)
        self.model = TorchGPT(vocab)
        self.opt = torch.optim.AdamW(recipe_groups(list(self.model.parameters()),
                                                   lambda p: p.dim() >= 2),
                                     lr=1e-3, betas=(0.9, 0.99))
        self.x, self.y, self.done = torch.from_numpy(x), torch.from_numpy(y), 0

    def steps(self, n):
        for i in range(self.done, self.done + n):
            xb, yb = self.x[i * BATCH:(i + 1) * BATCH], self.y[i * BATCH:(i + 1) * BATCH]
            loss = torch.nn.functional.cross_entropy(self.model(xb).flatten(0, 1),
                                                     yb.flatten())
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
        self.done += n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="steps per round")
    parser.add_argument("--threads", type=int, default=1,
                        help="also race nnlite's fit(threads=THREADS)")
    parser.add_argument("--without", action="append", default=[], metavar="KERNEL[,KERNEL]",
                        help="also race nnlite with these compiled kernels off (repeatable)")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    text = nnlite.datasets.load_tiny_shakespeare(root)
    chars = sorted(set(text))
    data = np.searchsorted(np.array(chars), np.array(list(text)))
    total = (args.rounds + 2) * args.steps * BATCH
    x, y = windows(data, np.random.default_rng(0).integers(0, len(data) - CONTEXT - 1, total),
                   CONTEXT)
    contenders = [NNLite(len(chars), x, y), Torch(len(chars), x, y)]
    if args.threads > 1:
        contenders.insert(1, NNLite(len(chars), x, y, args.threads))
    offs = [NNLite(len(chars), x, y, without=tuple(w.split(","))) for w in args.without]
    contenders[1:1] = offs
    print(machine(torch))
    print(f"{args.rounds} rounds of {args.steps} steps, alternating")
    for c in contenders:              # warm-up round, not timed
        c.steps(args.steps)
    times = {c.name: [] for c in contenders}
    for r in range(args.rounds):
        for c in contenders:
            time.sleep(PAUSE)
            start = time.perf_counter()
            c.steps(args.steps)
            times[c.name].append((time.perf_counter() - start) / args.steps)
        print(f"  round {r + 1}: " + ", ".join(f"{n} {t[-1] * 1000:.1f} ms/step"
                                              for n, t in times.items()), flush=True)
    rows = [[n, f"{statistics.median(t) * 1000:.1f}",
             f"{BATCH * CONTEXT / statistics.median(t):,.0f}"] for n, t in times.items()]
    print()
    print(table(["", "ms/step", "tokens/s"], rows))
    for c in offs:
        ratio = statistics.median(a / b for a, b in zip(times[c.name], times["nnlite"]))
        print(f"\n{c.name} / nnlite, time per step: {ratio:.3f}x (median of per-round ratios)")
    for c in (c for c in contenders[:-1] if c not in offs):
        ratio = statistics.median(a / b for a, b in zip(times[c.name], times["pytorch"]))
        print(f"\n{c.name} / PyTorch, time per step: {ratio:.2f}x (median of per-round ratios)")
        results.headline(f"character GPT step (nanoGPT's CPU configuration), {c.name} / "
                         f"PyTorch", f"{ratio:.2f}x")
    parts = [p for layer in contenders[0].model.layers  # a block's own layers, each timed
             for p in ([layer.ln_1, layer.attn, layer.ln_2, *layer.mlp]
                       if isinstance(layer, TransformerBlock) else [layer])]
    step_ms, spent = profile(parts, lambda: contenders[0].steps(args.steps),
                             args.steps)
    layers_ms = sum(spent.values())
    rows = [[f"{name} {kind}", f"{ms:.2f}", f"{100 * ms / step_ms:.0f}%"]
            for (name, kind), ms in sorted(spent.items(), key=lambda kv: -kv[1])]
    rows.append(["loss, optimizer, loop", f"{step_ms - layers_ms:.2f}",
                 f"{100 * (step_ms - layers_ms) / step_ms:.0f}%"])
    print(f"\nWhere nnlite's {step_ms:.1f} ms per step go (summed over the layers of a class):")
    print(table(["", "ms/step", "share"], rows))


if __name__ == "__main__":
    results.main(__file__, main)
