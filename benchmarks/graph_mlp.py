"""What the graph machinery costs: the same MLPs built with nnlite.Sequential, nnlite.Model
and PyTorch, trained on MNIST in one process, alternating round by round.

    python benchmarks/graph_mlp.py [--rounds 7] [--data-dir DIR] [--samples N]

Two questions, two ratios:
- the 784-256-128-10 ReLU MLP as a Model against the same Sequential (the cost of running
  a graph's precomputed steps instead of a list);
- a residual MLP (784-256, then two residual blocks h + ReLU(Linear(h)) of 256, then 10)
  against PyTorch's same model, beside the plain MLP's ratio to PyTorch (the cost of the
  fan-out sums and merges).
PyTorch is optional (pip install -e ".[bench]"); without it, only the first ratio is shown.
"""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import numpy as np

import nnlite
from nnlite.layers import Add, Linear, ReLU

import mlp_mnist
from mlp_mnist import LR, machine, race, ratio, table, torch
import results

BATCH = 128


def plain_layers():
    return [Linear(784, 256), ReLU(), Linear(256, 128), ReLU(), Linear(128, 10)]


def residual_model():
    x = nnlite.Input((784,))
    h = ReLU()(Linear(784, 256)(x))
    for _ in range(2):
        h = Add()([h, ReLU()(Linear(256, 256)(h))])
    return nnlite.Model(x, Linear(256, 10)(h))


class NNLite:
    def __init__(self, name, build, x, y):
        nnlite.set_seed(0)
        self.name, self.model = name, build()
        self.opt = nnlite.optim.Adam(self.model.parameters(), lr=LR)
        self.loss = nnlite.losses.CrossEntropy()
        self.x, self.y, self.epochs = x, y, 0

    def epoch(self):
        self.model.fit(self.x, self.y, loss=self.loss, optimizer=self.opt, batch_size=BATCH,
                       epochs=self.epochs + 1, initial_epoch=self.epochs, verbose=False, seed=0)
        self.epochs += 1

    def accuracy(self, x, y):
        return float(np.mean(self.model.predict(x).argmax(1) == y))


class TorchResidual(torch.nn.Module if torch else object):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Linear(784, 256)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(256, 256) for _ in range(2))
        self.head = torch.nn.Linear(256, 10)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        for block in self.blocks:
            h = h + torch.relu(block(h))
        return self.head(h)


class Torch(mlp_mnist.Torch):
    """mlp_mnist's PyTorch contender (its epoch and accuracy) over a model given by name."""

    def __init__(self, name, build, x, y):
        torch.manual_seed(0)
        self.name, self.model = name, build()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.loss = torch.nn.CrossEntropyLoss()
        self.x, self.y, self.batch = torch.from_numpy(x), torch.from_numpy(y), BATCH
        self.gen = torch.Generator().manual_seed(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--data-dir")
    parser.add_argument("--samples", type=int, default=60000,
                        help="train on the first SAMPLES images only (a quick look)")
    args = parser.parse_args()
    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    (x, y), (xt, yt) = nnlite.datasets.load_mnist(root)
    x = (x[:args.samples].reshape(-1, 784) / np.float32(255)).astype(np.float32)
    y = y[:args.samples]
    xt = (xt.reshape(-1, 784) / np.float32(255)).astype(np.float32)

    contenders = [NNLite("Sequential MLP", lambda: nnlite.Sequential(*plain_layers()), x, y),
                  NNLite("Model MLP", lambda: graph(plain_layers()), x, y),
                  NNLite("Model residual MLP", residual_model, x, y)]
    if torch:
        contenders += [Torch("PyTorch MLP", lambda: torch.nn.Sequential(
                           torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                           torch.nn.ReLU(), torch.nn.Linear(128, 10)), x, y),
                       Torch("PyTorch residual MLP", TorchResidual, x, y)]
    print(machine(torch))
    print(f"MNIST ({len(x):,} images), Adam lr {LR}, batch {BATCH}, float32, median of "
          f"{args.rounds} alternating rounds (ratios: median of the per-round ratios)")
    times = race(contenders, args.rounds)
    rows = [[c.name, f"{statistics.median(times[c.name]):.3f}",
             f"{c.accuracy(xt, yt):.4f}"] for c in contenders]
    print()
    print(table(["", "s/epoch", f"test acc ({args.rounds} ep)"], rows))
    print()
    ratios = [["Model MLP / Sequential MLP", f"{ratio(times, 'Model MLP', 'Sequential MLP'):.3f}x"]]
    if torch:
        plain = ratio(times, "Sequential MLP", "PyTorch MLP")
        residual = ratio(times, "Model residual MLP", "PyTorch residual MLP")
        ratios += [["plain MLP: nnlite / PyTorch", f"{plain:.2f}x"],
                   ["residual MLP: nnlite / PyTorch", f"{residual:.2f}x"],
                   ["difference of the two", f"{residual - plain:+.2f}"]]
    ratios.append(["Model / Sequential, per batch (finer)", f"{batch_race(x, y):.3f}x"])
    results.headline("graph Model MLP batch / the same Sequential's", ratios[-1][1])
    print(table(["ratio", "value"], ratios))


def batch_race(x, y, rounds=21, batches=100):
    """Model MLP against Sequential MLP on the same batches, forward, backward and Adam step,
    alternating every ``batches`` batches (a finer race than whole epochs, whose times swing
    by several percent from one to the next); the median of the per-round ratios."""
    import time

    models = [NNLite("Sequential", lambda: nnlite.Sequential(*plain_layers()), x, y),
              NNLite("Model", lambda: graph(plain_layers()), x, y)]
    for c in models:
        c.model.input_grad = False      # as in fit
    xb, yb = x[:BATCH], y[:BATCH]
    ratios = []
    for r in range(rounds):
        seconds = []
        for c in models if r % 2 else models[::-1]:
            start = time.perf_counter()
            for _ in range(batches):
                c.loss.forward(c.model.forward(xb), yb)
                c.opt.zero_grad()
                c.model.backward(c.loss.backward())
                c.opt.step()
            seconds.append((c.name, time.perf_counter() - start))
        t = dict(seconds)
        ratios.append(t["Model"] / t["Sequential"])
    return statistics.median(ratios)


def graph(layers):
    """The layers chained with the functional API."""
    i = nnlite.Input((784,))
    h = i
    for layer in layers:
        h = layer(h)
    return nnlite.Model(i, h)


if __name__ == "__main__":
    results.main(__file__, main)
