"""Train a 784-256-128-10 ReLU MLP on MNIST with nnlite, PyTorch (CPU), scikit-learn, a
hand-fused NumPy loop and a "GEMM floor" (the same matrix products and nothing else), in one
process, alternating the contenders round by round so machine noise hits them alike; print
ratios.

    python benchmarks/mlp_mnist.py [--rounds 7] [--data-dir DIR] [--no-scaling] [--samples N]
                                   [--threads 2]

PyTorch is optional (pip install -e ".[bench]"); without it its columns are left out.
``--threads 2`` races nnlite's ``fit(threads=2)`` too, as a contender of its own.
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

import nnlite
import results
from nnlite.layers import Linear, ReLU

try:
    import torch
except ImportError:
    torch = None

BATCH, LR = 128, 1e-3
#: Seconds to wait before timing a contender: OpenBLAS's and OpenMP's worker threads spin for
#: a moment after their last parallel call and would compete with the next contender.
PAUSE = 0.3


# -- contenders: each is built once, then .epoch() trains one epoch; .accuracy() tests ----------
class NNLite:
    name = "nnlite"

    def __init__(self, x, y, hidden=(256, 128), batch=BATCH, seed=0, threads=1):
        nnlite.set_seed(seed)
        self.threads = threads
        if threads > 1:
            self.name = f"nnlite, {threads} threads"
        sizes = [x.shape[1], *hidden]
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [Linear(a, b), ReLU()]
        self.model = nnlite.Sequential(*layers, Linear(sizes[-1], 10))
        self.opt = nnlite.optim.Adam(self.model.parameters(), lr=LR)
        self.loss = nnlite.losses.CrossEntropy()
        self.x, self.y, self.batch, self.epochs = x, y, batch, 0

    def epoch(self):
        self.model.fit(self.x, self.y, loss=self.loss, optimizer=self.opt, batch_size=self.batch,
                       epochs=self.epochs + 1, initial_epoch=self.epochs, verbose=False, seed=0,
                       threads=self.threads)
        self.epochs += 1

    def predict(self, x):
        return self.model.predict(x, batch_size=1024)

    def accuracy(self, x, y):
        return float(np.mean(self.predict(x).argmax(1) == y))


class Torch:
    name = "pytorch"

    def __init__(self, x, y, hidden=(256, 128), batch=BATCH, seed=0):
        torch.manual_seed(seed)
        sizes = [x.shape[1], *hidden]
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], 10))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.loss = torch.nn.CrossEntropyLoss()
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.batch = batch
        self.gen = torch.Generator().manual_seed(seed)

    def epoch(self):
        order = torch.randperm(len(self.x), generator=self.gen)
        for start in range(0, len(order), self.batch):
            idx = order[start:start + self.batch]
            self.opt.zero_grad()
            self.loss(self.model(self.x[idx]), self.y[idx]).backward()
            self.opt.step()

    def predict(self, x):
        with torch.no_grad():
            xt = torch.from_numpy(x)
            return torch.cat([self.model(xt[i:i + 1024]) for i in range(0, len(xt), 1024)]).numpy()

    def accuracy(self, x, y):
        return float(np.mean(self.predict(x).argmax(1) == y))


class SKLearn:
    name = "scikit-learn"

    def __init__(self, x, y, hidden=(256, 128), batch=BATCH, seed=0):
        from sklearn.neural_network import MLPClassifier
        self.model = MLPClassifier(hidden_layer_sizes=hidden, solver="adam", batch_size=batch,
                                   learning_rate_init=LR, alpha=0.0, random_state=seed)
        self.x, self.y, self.classes = x, y, np.arange(10)

    def epoch(self):
        self.model.partial_fit(self.x, self.y, classes=self.classes)

    def predict(self, x):
        return self.model.predict_proba(x)

    def accuracy(self, x, y):
        return float(np.mean(self.model.predict(x) == y))


class HandFused:
    """The same training written as one NumPy loop with no framework around it: every buffer
    allocated once, every operation in place, Adam over one flat array. The issue calls this
    the limit a NumPy framework can get close to; nnlite's ratio to it is its overhead."""
    name = "NumPy, hand-fused"

    def __init__(self, x, y, hidden=(256, 128), batch=BATCH, seed=0):
        rng = np.random.default_rng(seed)
        sizes = [x.shape[1], *hidden, 10]
        n = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        self.p, self.g, self.m, self.v, self.tmp = (np.zeros(n, np.float32) for _ in range(5))
        self.w, self.b, self.dw, self.db, at = [], [], [], [], 0
        for a, b in zip(sizes, sizes[1:]):
            self.w.append(self.p[at:at + a * b].reshape(a, b))
            self.dw.append(self.g[at:at + a * b].reshape(a, b))
            self.b.append(self.p[at + a * b:at + a * b + b])
            self.db.append(self.g[at + a * b:at + a * b + b])
            self.w[-1][...] = rng.uniform(-1, 1, (a, b)) * np.sqrt(6 / a)
            at += a * b + b
        # The layers' outputs; then, for the i-th hidden activation (i >= 1), the gradient
        # reaching it, ReLU's mask, and zeros to compare against (faster than the scalar 0).
        self.h = [np.empty((batch, s), np.float32) for s in sizes[1:]]
        self.d, self.mask, self.zeros = ([None] + [np.zeros((batch, s), t) for s in sizes[1:-1]]
                                         for t in (np.float32, bool, np.float32))
        self.ones, self.cols = np.ones(batch, np.float32), np.arange(0, batch * 10, 10)
        self.x, self.y, self.batch, self.rng, self.t = x, y, batch, rng, 0

    def epoch(self):
        w, b, dw, db, last = self.w, self.b, self.dw, self.db, len(self.w) - 1
        for xb, yb in nnlite.datasets.batches(self.x, self.y, self.batch, rng=self.rng):
            n = len(xb)
            h = [xb] + [a[:n] for a in self.h]
            for i in range(len(w)):
                np.matmul(h[i], w[i], out=h[i + 1])
                h[i + 1] += b[i]
                if i < last:
                    np.maximum(h[i + 1], self.zeros[i + 1][:n], out=h[i + 1])
            z = h[-1]  # softmax cross-entropy gradient, in place on the logits
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            z.ravel()[self.cols[:n] + yb] -= 1
            z *= np.float32(1 / n)
            g = z
            for i in reversed(range(len(w))):
                np.matmul(h[i].T, g, out=dw[i])
                np.matmul(self.ones[:n], g, out=db[i])
                if i:
                    d, mask = self.d[i][:n], self.mask[i][:n]
                    np.matmul(g, w[i].T, out=d)
                    np.greater(h[i], self.zeros[i][:n], out=mask)
                    g = np.multiply(d, mask, out=d)
            self._adam()

    def _adam(self):
        (b1, b2), self.t = (0.9, 0.999), self.t + 1
        step = LR * (1 - b1) / (1 - b1 ** self.t) * np.sqrt((1 - b2 ** self.t) / (1 - b2))
        eps = 1e-8 * np.sqrt((1 - b2 ** self.t) / (1 - b2))
        p, g, m, v, tmp = self.p, self.g, self.m, self.v, self.tmp
        m *= b1
        m += g
        np.multiply(g, g, out=tmp)
        v *= b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= step
        p -= tmp

    def predict(self, x):
        for i in range(len(self.w)):
            x = x @ self.w[i] + self.b[i]
            if i < len(self.w) - 1:
                np.maximum(x, np.zeros_like(x), out=x)
        return x

    def accuracy(self, x, y):
        return float(np.mean(self.predict(x).argmax(1) == y))


class GemmFloor:
    """Only the matrix products one training step needs: forward, weight gradients, and the
    input gradients of every layer but the first. No activations, loss, optimizer or batching."""
    name = "GEMM floor"

    def __init__(self, x, y, hidden=(256, 128), batch=BATCH, seed=0):
        rng = np.random.default_rng(seed)
        sizes = [x.shape[1], *hidden, 10]
        self.w = [rng.standard_normal((a, b)).astype(np.float32) * 0.01
                  for a, b in zip(sizes, sizes[1:])]
        self.dw = [np.empty_like(w) for w in self.w]
        self.h = [rng.standard_normal((batch, s)).astype(np.float32) for s in sizes]
        self.g = [np.empty((batch, s), np.float32) for s in sizes]
        self.steps = len(x) // batch

    def epoch(self):
        h, g, w, dw = self.h, self.g, self.w, self.dw
        for _ in range(self.steps):
            for i in range(len(w)):
                np.matmul(h[i], w[i], out=h[i + 1])
            g[-1][...] = h[-1]
            for i in reversed(range(len(w))):
                np.matmul(h[i].T, g[i + 1], out=dw[i])
                if i:
                    np.matmul(g[i + 1], w[i].T, out=g[i])


# -- measuring ----------------------------------------------------------------------------------
def machine(torch=None) -> str:
    """One line naming what the timings ran on: cores and their widest vector instructions,
    NumPy and the BLAS behind it (the kernels it chose, and any OPENBLAS_* setting in the
    environment), PyTorch, and nnlite's kernel path (numba or NumPy)."""
    from threadpoolctl import threadpool_info  # installed with scikit-learn

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    simd = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"))
                 if f" {flag} " in cpuinfo), None)
    blas = [f"{b['internal_api']} {b['version']}, {b.get('architecture') or '?'} kernels, "
            f"{b['num_threads']} threads" for b in threadpool_info() if b["user_api"] == "blas"
            and "numpy" in b["filepath"]]
    settings = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_")]
    cores = f"{os.cpu_count()} cores" + (f" with {simd}" if simd else "")
    line = (f"machine: {platform.processor() or platform.machine()}, {cores}, numpy "
            f"{np.__version__} ({'; '.join(blas + settings) or 'BLAS unknown'})")
    if torch is not None:
        line += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    return f"{line}, nnlite {nnlite.kernels.describe()}"


def race(contenders, rounds):
    """Seconds per epoch of each contender in every round, alternating them every round."""
    times = {c.name: [] for c in contenders}
    for r in range(rounds):
        for c in contenders:
            times[c.name].append(_timed(c.epoch))
        print(f"  round {r + 1}/{rounds}: " +
              ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), flush=True)
    return times


def ratio(times, a, b):
    """Median over rounds of a's time / b's time: a round runs every contender back to back,
    so each round's ratio compares them under the same machine conditions."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def traced_peak(run):
    """Peak bytes allocated through Python's tracer while ``run()`` executes (NumPy reports its
    arrays to it; PyTorch's allocations are invisible to it)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    run()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def profile(layers, run, steps, name=lambda i, layer: type(layer).__name__):
    """Milliseconds per step of ``run()`` (which trains ``steps`` steps) and the share spent in
    each layer's forward and backward, keyed by (``name(i, layer)``, "forward"/"backward");
    layers with the same name are summed."""
    spent = collections.defaultdict(float)
    for i, layer in enumerate(layers):
        for kind in ("forward", "backward"):
            def timed(arg, original=getattr(layer, kind), key=(name(i, layer), kind)):
                start = time.perf_counter()
                try:
                    return original(arg)
                finally:
                    spent[key] += time.perf_counter() - start
            setattr(layer, kind, timed)
    start = time.perf_counter()
    try:
        run()
    finally:
        for layer in layers:
            for kind in ("forward", "backward"):
                del layer.__dict__[kind]
    total = time.perf_counter() - start
    return total / steps * 1000, {k: v / steps * 1000 for k, v in spent.items()}


def table(header, rows):
    widths = [max(len(str(v)) for v in col) for col in zip(header, *rows)]

    def line(vals):
        return "| " + " | ".join(str(v).rjust(w) for v, w in zip(vals, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--data-dir")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling tables")
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--samples", type=int, default=60000,
                        help="train on the first SAMPLES images only (a quick look)")
    parser.add_argument("--threads", type=int, default=1,
                        help="also race nnlite's fit(threads=THREADS)")
    args = parser.parse_args()

    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    (x, y), (xt, yt) = nnlite.datasets.load_mnist(root)
    x, y = x[:args.samples], y[:args.samples]
    x = (x.reshape(len(x), -1) / np.float32(255)).astype(np.float32)
    xt = (xt.reshape(len(xt), -1) / np.float32(255)).astype(np.float32)

    print(machine(torch))
    kinds = [NNLite, *([Torch] if torch else []), *([] if args.no_sklearn else [SKLearn]),
             HandFused, GemmFloor]
    contenders = [k(x, y) for k in kinds]
    if args.threads > 1:
        contenders.insert(1, NNLite(x, y, threads=args.threads))
    print(f"MNIST ({len(x):,} images), 784-256-128-10 ReLU MLP, Adam lr {LR}, batch {BATCH}, "
          f"float32, median of {args.rounds} alternating rounds (ratios: median of the "
          f"per-round ratios)")
    times = race(contenders, args.rounds)
    median = {name: statistics.median(t) for name, t in times.items()}

    peaks = {}
    for c in contenders:
        if c.name != "pytorch":
            peaks[c.name] = traced_peak(c.epoch)
    rows = []
    for c in contenders:
        m = median[c.name]
        acc = f"{c.accuracy(xt, yt):.4f}" if hasattr(c, "accuracy") else "-"
        rows.append([c.name, f"{m:.3f}", f"{len(x) / m:,.0f}",
                     f"{ratio(times, c.name, 'pytorch'):.2f}x" if torch else "-",
                     f"{ratio(times, c.name, 'GEMM floor'):.2f}x",
                     f"{peaks[c.name] / 2**20:.1f} MiB" if c.name in peaks else "-", acc])
    print()
    print(table(["", "s/epoch", "samples/s", "vs PyTorch", "vs GEMM floor",
                 "peak alloc/epoch", f"test acc ({args.rounds + 1} ep)"], rows))
    if torch:
        results.headline(f"MNIST MLP epoch ({len(x):,} images), nnlite / PyTorch",
                         f"{ratio(times, 'nnlite', 'pytorch'):.2f}x")

    if torch:
        print("\nPrediction on the 10,000 test images (samples/s, best of 5, alternating):")
        pair = [c for c in contenders if c.name in ("nnlite", "pytorch")]
        best = {c.name: float("inf") for c in pair}
        for _ in range(5):
            for c in pair:
                best[c.name] = min(best[c.name], _timed(c.predict, xt))
        print(table(["", "samples/s"], [[n, f"{len(xt) / t:,.0f}"] for n, t in best.items()]))

    if not args.no_scaling:
        scaling(x, y, [NNLite, *([Torch] if torch else []), GemmFloor])


def _timed(run, *args):
    """Seconds ``run(*args)`` takes, started after a pause (see PAUSE)."""
    time.sleep(PAUSE)
    start = time.perf_counter()
    run(*args)
    return time.perf_counter() - start


def scaling(x, y, kinds, n=20000, rounds=3):
    """Epoch time on ``n`` samples across batch sizes and hidden widths."""
    x, y = x[:n], y[:n]
    for label, settings in [("batch size", [dict(batch=b) for b in (32, 128, 512, 1024)]),
                            ("hidden width", [dict(hidden=(h, h // 2)) for h in
                                              (128, 512, 1024, 2048)])]:
        rows = []
        for s in settings:
            print(f"scaling {label} {s}", flush=True)
            times = race([k(x, y, **s) for k in kinds], rounds)
            value = s.get("batch") or s["hidden"][0]
            nn = statistics.median(times["nnlite"])
            pt = statistics.median(times["pytorch"]) if torch else None
            rows.append([value, f"{nn:.3f}", f"{pt:.3f}" if pt else "-",
                         f"{ratio(times, 'nnlite', 'pytorch'):.2f}x" if pt else "-",
                         f"{ratio(times, 'nnlite', 'GEMM floor'):.2f}x"])
        print(f"\nScaling with {label} ({n:,} samples per epoch, median of {rounds}):")
        print(table([label, "nnlite s", "pytorch s", "nnlite/pytorch", "nnlite/floor"], rows))


if __name__ == "__main__":
    results.main(__file__, main)
