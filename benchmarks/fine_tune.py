"""What freezing buys: the MNIST CNN of cnn_mnist.py trained whole, against the same CNN with
its convolutional part frozen (only the two Linear layers of the head train), in nnlite and
PyTorch (``requires_grad_(False)``), alternating round by round in one process.

    python benchmarks/fine_tune.py [--rounds 5] [--data-dir DIR] [--samples 12800]

PyTorch is optional (pip install -e ".[bench]"); without it, only nnlite's rows are shown.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

import nnlite

import cnn_mnist
from mlp_mnist import PAUSE, machine, table
import results

try:
    import torch
except ImportError:
    torch = None


class NNLite(cnn_mnist.NNLite):
    def __init__(self, name, frozen, x, y):
        super().__init__(x, y)
        self.name = name
        if frozen:
            for layer in self.model.layers[:7]:   # the convolutions, up to Flatten
                layer.trainable = False
        self.opt = nnlite.optim.Adam(self.model.trainable_parameters(), lr=1e-3)


class Torch(cnn_mnist.Torch):
    def __init__(self, name, frozen, x, y):
        super().__init__(x, y)
        self.name = name
        if frozen:
            for layer in list(self.model)[:7]:
                layer.requires_grad_(False)
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad],
                                    lr=1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir")
    parser.add_argument("--samples", type=int, default=12800)
    args = parser.parse_args()
    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    (x, y), _ = nnlite.datasets.load_mnist(root)
    x = (x[:args.samples, None] / np.float32(255)).astype(np.float32)
    y = y[:args.samples].astype(np.int64)
    if torch is not None:
        torch.set_num_threads(2)
    print(machine(torch))
    contenders = [NNLite("nnlite whole", False, x, y), NNLite("nnlite head only", True, x, y)]
    if torch is not None:
        contenders += [Torch("pytorch whole", False, x, y),
                       Torch("pytorch head only", True, x, y)]
    times = {c.name: [] for c in contenders}
    for r in range(args.rounds):
        for c in contenders:
            time.sleep(PAUSE)
            start = time.perf_counter()
            c.epoch()
            times[c.name].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{args.rounds}: " +
              ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), flush=True)
    rows = []
    for framework in ("nnlite", "pytorch") if torch is not None else ("nnlite",):
        whole, head = times[f"{framework} whole"], times[f"{framework} head only"]
        rows.append((framework, f"{statistics.median(whole):.2f}",
                     f"{statistics.median(head):.2f}",
                     f"{statistics.median(w / h for w, h in zip(whole, head)):.2f}x"))
    print(f"\nseconds per epoch of {args.samples} images, median of {args.rounds} rounds")
    print(table(("framework", "whole", "head only", "speed-up"), rows))
    results.headline("CNN epoch, convolutions frozen: speed-up over training it whole",
                     rows[0][3])


if __name__ == "__main__":
    results.main(__file__, main)
