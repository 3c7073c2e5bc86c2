"""What forward mode costs: one jvp pass of the MNIST MLP and CNN against one forward pass,
timed alternately in one process; and lipschitz (each test digit's ‖J‖₂, by power iteration
with one jvp and one backward per step) of 100 MNIST test digits through a trained MLP,
checked against the SVD of each digit's full Jacobian.

    python benchmarks/forward_mode.py [--rounds 15] [--data-dir DIR] [--batch 1000]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

import nnlite
from nnlite import check
from nnlite.layers import Linear, ReLU

from cnn_mnist import nnlite_cnn
from mlp_mnist import machine, table
import results


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def jvp_against_forward(model, x, rounds) -> tuple[float, float, float]:
    """Median seconds of a forward and of a jvp at the same point (eval mode), alternating;
    and the median of their per-round ratio."""
    v = np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype)
    forward, jvp = [], []
    with model.evaluating():
        for _ in range(rounds):
            forward.append(timed(lambda: model.forward(x)))
            jvp.append(timed(lambda: model.jvp(v)))
    return (statistics.median(forward), statistics.median(jvp),
            statistics.median(j / f for j, f in zip(jvp, forward)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--data-dir")
    parser.add_argument("--batch", type=int, default=1000, help="images per pass")
    parser.add_argument("--epochs", type=int, default=2, help="MLP training before lipschitz")
    args = parser.parse_args()
    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    (x, y), (xt, yt) = nnlite.datasets.load_mnist(root)
    x = (x / np.float32(255)).astype(np.float32)
    xt = (xt / np.float32(255)).astype(np.float32)
    print(machine())

    nnlite.set_seed(0)
    mlp = nnlite.Sequential(Linear(784, 256), ReLU(), Linear(256, 128), ReLU(),
                            Linear(128, 10))
    cnn = nnlite_cnn()
    rows = []
    for name, model, batch in (("MLP 784-256-128-10", mlp, xt[:args.batch].reshape(-1, 784)),
                               ("CNN of cnn_mnist.py", cnn, xt[:args.batch, None])):
        model.forward(batch)  # warm: buffers, compiled kernels
        f, j, r = jvp_against_forward(model, batch, args.rounds)
        rows.append((name, f"{f * 1e3:.2f}", f"{j * 1e3:.2f}", f"{r:.2f}x"))
    print(f"\none pass over {args.batch} test images, median of {args.rounds} alternating rounds")
    print(table(("model", "forward ms", "jvp ms", "jvp / forward"), rows))
    results.headline(f"one jvp / one forward, {rows[0][0]} and {rows[1][0]}",
                     f"{rows[0][3]}, {rows[1][3]}")

    mlp.fit(x.reshape(-1, 784), y, loss=nnlite.losses.CrossEntropy(),
            optimizer=nnlite.optim.Adam(mlp.parameters(), lr=1e-3), epochs=args.epochs,
            verbose=False, seed=0)
    digits = xt[:100].reshape(-1, 784)
    start = time.perf_counter()
    sigma = check.lipschitz(mlp, digits)
    seconds = time.perf_counter() - start
    with mlp.evaluating():
        exact = np.array([np.linalg.norm(check.jacobian(mlp, digits[i:i + 1]), 2)
                          for i in range(len(digits))])
    error = np.max(np.abs(sigma - exact) / exact)
    print(f"\nlipschitz of 100 test digits through the MLP ({args.epochs} epochs trained): "
          f"{seconds:.2f} s; ‖J‖₂ from {sigma.min():.2f} to {sigma.max():.2f}, median "
          f"{np.median(sigma):.2f}; largest relative difference from the SVD of the full "
          f"Jacobians {error:.1e}")
    print(f"lipschitz_bound of the same MLP: {check.lipschitz_bound(mlp):.1f}")


if __name__ == "__main__":
    results.main(__file__, main)
