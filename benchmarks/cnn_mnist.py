"""Seconds per MNIST epoch of the same small CNN in nnlite and PyTorch (CPU), and of its
"GEMM floor" (the same matrix products and nothing else), in one process, alternating round
by round; prints the ratios, then where nnlite's time goes, layer by layer, beside each
layer's share of the floor.

    python benchmarks/cnn_mnist.py [--rounds 3] [--samples 60000] [--threads 2] [--data-dir DIR]

CNN: conv 3x3 32 → ReLU → max-pool 2 → conv 3x3 64 → ReLU → max-pool 2 → 128 → 10,
Adam lr 1e-3, batch 128, float32. PyTorch is optional (pip install -e ".[bench]").
``--threads 2`` races nnlite's ``fit(threads=2)`` too, as a contender of its own.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np

import nnlite
from mlp_mnist import machine, profile, race, ratio, table
import results
from nnlite import layers as L

try:
    import torch
except ImportError:
    torch = None

BATCH = 128


def nnlite_cnn():
    return nnlite.Sequential(
        L.Conv2D(1, 32, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(32, 64, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
        L.Flatten(), L.Linear(64 * 7 * 7, 128), L.ReLU(), L.Linear(128, 10))


def torch_cnn():
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


class NNLite:
    name = "nnlite"

    def __init__(self, x, y, threads=1):
        nnlite.set_seed(0)
        self.model, self.x, self.y, self.done, self.threads = nnlite_cnn(), x, y, 0, threads
        if threads > 1:
            self.name = f"nnlite, {threads} threads"
        self.opt = nnlite.optim.Adam(self.model.parameters(), lr=1e-3)

    def epoch(self, x=None, y=None):
        self.model.fit(self.x if x is None else x, self.y if y is None else y,
                       loss=nnlite.losses.CrossEntropy(), optimizer=self.opt, batch_size=BATCH,
                       epochs=self.done + 1, initial_epoch=self.done, seed=0, verbose=False,
                       threads=self.threads)
        self.done += 1

    def accuracy(self, x, y):
        return float(np.mean(self.model.predict(x, batch_size=500).argmax(1) == y))


class Torch:
    name = "pytorch"

    def __init__(self, x, y):
        torch.manual_seed(0)
        self.model = torch_cnn()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def epoch(self):
        loss = torch.nn.CrossEntropyLoss()
        order = torch.randperm(len(self.x))
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            self.opt.zero_grad()
            loss(self.model(self.x[idx]), self.y[idx]).backward()
            self.opt.step()

    def accuracy(self, x, y):
        with torch.no_grad():
            out = torch.cat([self.model(torch.from_numpy(x[i:i + 500]))
                             for i in range(0, len(x), 500)])
        return float(np.mean(out.numpy().argmax(1) == y))


#: The matrix products of one batch, per layer, as (m, k, n) for an (m, k) @ (k, n) product:
#: a convolution's forward is its im2col rows times W, its weight gradient Gᵀ times those
#: rows, its input gradient G times W; a Linear's the same with the batch as rows. The first
#: convolution's input gradient is needed by neither framework.
def products(batch):
    rows1, rows2 = batch * 28 * 28, batch * 14 * 14
    return {"0 Conv2D(1→32)": [(rows1, 9, 32), (32, rows1, 9)],
            "3 Conv2D(32→64)": [(rows2, 288, 64), (64, rows2, 288), (rows2, 64, 288)],
            "7 Linear(3136→128)": [(batch, 3136, 128), (128, batch, 3136), (batch, 128, 3136)],
            "9 Linear(128→10)": [(batch, 128, 10), (10, batch, 128), (batch, 10, 128)]}


class GemmFloor:
    """Only those matrix products, on preallocated float32 arrays, for every batch of an
    epoch: no im2col, pooling, activations, loss, optimizer or batching."""
    name = "GEMM floor"

    def __init__(self, x, y):
        rng = np.random.default_rng(0)
        self.batches = [products(BATCH)] * (len(x) // BATCH) + \
            ([products(len(x) % BATCH)] if len(x) % BATCH else [])
        self.arrays = {}
        for shapes in self.batches:
            for m, k, n in (s for layer in shapes.values() for s in layer):
                if (m, k, n) not in self.arrays:
                    self.arrays[m, k, n] = (rng.standard_normal((m, k), np.float32),
                                            rng.standard_normal((k, n), np.float32),
                                            np.empty((m, n), np.float32))

    def epoch(self):
        for shapes in self.batches:
            for layer in shapes.values():
                for key in layer:
                    a, b, out = self.arrays[key]
                    np.matmul(a, b, out=out)

    def layer_ms(self, rounds=5):
        """Milliseconds per batch of each layer's products (best of ``rounds``)."""
        times = {}
        for name, layer in products(BATCH).items():
            best = math.inf
            for _ in range(rounds):
                start = time.perf_counter()
                for key in layer:
                    a, b, out = self.arrays[key]
                    np.matmul(a, b, out=out)
                best = min(best, time.perf_counter() - start)
            times[name] = best * 1000
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=60000, help="training images per epoch")
    parser.add_argument("--threads", type=int, default=1,
                        help="also race nnlite's fit(threads=THREADS)")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "datasets")
    (x, y), (xt, yt) = nnlite.datasets.load_mnist(root)
    x = (x[:args.samples, None] / np.float32(255)).astype(np.float32)
    y = y[:args.samples]
    xt = (xt[:, None] / np.float32(255)).astype(np.float32)

    print(machine(torch))
    contenders = [NNLite(x, y), *([NNLite(x, y, args.threads)] if args.threads > 1 else []),
                  *([Torch(x, y)] if torch else []), GemmFloor(x, y)]
    print(f"MNIST ({len(x):,} images), batch {BATCH}, median of {args.rounds} alternating "
          f"rounds (ratios: median of the per-round ratios)")
    times = race(contenders, args.rounds)
    rows = []
    for c in contenders:
        rows.append([c.name, f"{statistics.median(times[c.name]):.1f}",
                     f"{ratio(times, c.name, 'pytorch'):.2f}x" if torch else "-",
                     f"{ratio(times, c.name, 'GEMM floor'):.2f}x",
                     f"{c.accuracy(xt, yt):.4f}" if hasattr(c, "accuracy") else "-"])
    print()
    print(table(["", "s/epoch", "vs PyTorch", "vs GEMM floor",
                 f"test accuracy ({args.rounds} epochs)"], rows))
    for c in contenders[:-1] if torch else ():
        if c.name != "pytorch":
            results.headline(f"MNIST CNN epoch ({len(x):,} images), {c.name} / PyTorch",
                             f"{ratio(times, c.name, 'pytorch'):.2f}x")

    nn, floor = contenders[0], contenders[-1]
    steps = min(40, len(x) // BATCH)
    batch_ms, spent = profile(nn.model.layers, lambda: nn.epoch(x[:steps * BATCH],
                                                                y[:steps * BATCH]),
                              steps, name=lambda i, layer: f"{i} {layer!r}")
    floor_ms = floor.layer_ms()
    rows = []
    for i, layer in enumerate(nn.model.layers):
        fwd, bwd = (spent.get((f"{i} {layer!r}", k), 0.0) for k in ("forward", "backward"))
        gemm = next((ms for name, ms in floor_ms.items() if name.startswith(f"{i} ")), None)
        rows.append([f"{i} {type(layer).__name__}", f"{fwd:.2f}", f"{bwd:.2f}",
                     f"{100 * (fwd + bwd) / batch_ms:.0f}%",
                     "-" if gemm is None else f"{gemm:.2f}"])
    rest = batch_ms - sum(spent.values())
    rows.append(["loss, Adam, loop", "", "", f"{100 * rest / batch_ms:.0f}%", "-"])
    rows.append(["total", "", "", f"{batch_ms:.1f} ms", f"{sum(floor_ms.values()):.2f}"])
    print(f"\nWhere nnlite's {batch_ms:.1f} ms per batch of {BATCH} go ({steps} batches), "
          f"beside the same layer's matrix products alone:")
    print(table(["layer", "forward ms", "backward ms", "share", "GEMM floor ms"], rows))


if __name__ == "__main__":
    results.main(__file__, main)
