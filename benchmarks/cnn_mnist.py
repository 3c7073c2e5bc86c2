"""Seconds per MNIST epoch of the same small CNN in nnlite and PyTorch (CPU), in one process,
alternating round by round; prints the ratio.

    python benchmarks/cnn_mnist.py [--rounds 3] [--samples 60000] [--data-dir DIR]

CNN: conv 3x3 32 → ReLU → max-pool 2 → conv 3x3 64 → ReLU → max-pool 2 → 128 → 10,
Adam lr 1e-3, batch 128, float32.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

import nnlite
from nnlite import layers as L

try:
    import torch
except ImportError:
    torch = None


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

    def __init__(self, x, y):
        nnlite.set_seed(0)
        self.model, self.x, self.y, self.done = nnlite_cnn(), x, y, 0
        self.opt = nnlite.optim.Adam(self.model.parameters(), lr=1e-3)

    def epoch(self):
        self.model.fit(self.x, self.y, loss=nnlite.losses.CrossEntropy(), optimizer=self.opt,
                       batch_size=128, epochs=self.done + 1, initial_epoch=self.done, seed=0,
                       verbose=False)
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
        for start in range(0, len(order), 128):
            idx = order[start:start + 128]
            self.opt.zero_grad()
            loss(self.model(self.x[idx]), self.y[idx]).backward()
            self.opt.step()

    def accuracy(self, x, y):
        with torch.no_grad():
            out = torch.cat([self.model(torch.from_numpy(x[i:i + 500]))
                             for i in range(0, len(x), 500)])
        return float(np.mean(out.numpy().argmax(1) == y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=60000, help="training images per epoch")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    (x, y), (xt, yt) = nnlite.datasets.load_mnist(root)
    x = (x[:args.samples, None] / np.float32(255)).astype(np.float32)
    y = y[:args.samples]
    xt = (xt[:, None] / np.float32(255)).astype(np.float32)

    contenders = [NNLite(x, y)] + ([Torch(x, y)] if torch else [])
    times = {c.name: [] for c in contenders}
    for r in range(args.rounds):
        for c in contenders:
            start = time.perf_counter()
            c.epoch()
            times[c.name].append(time.perf_counter() - start)
        print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1]:.1f}s" for n, t in times.items()),
              flush=True)
    median = {n: statistics.median(t) for n, t in times.items()}
    print(f"\n{len(x):,} images per epoch, median of {args.rounds} alternating rounds")
    print("| | s/epoch | vs PyTorch | test accuracy |\n|---|---|---|---|")
    for c in contenders:
        ratio = f"{median[c.name] / median['pytorch']:.2f}x" if torch else "-"
        print(f"| {c.name} | {median[c.name]:.1f} | {ratio} | {c.accuracy(xt, yt):.4f} |")


if __name__ == "__main__":
    main()
