"""MNIST MLP and CNN epochs on one process and on 2 MPI ranks of one machine (BLAS on one
thread per rank), beside ``fit(threads=2)``, alternating round by round, with the share of
a 2-rank step spent communicating. Then a model of time per step against ranks on 1, 10
and 100 Gb/s networks, for the MLP, the CNN and the GPT, from the measured compute time and
message size; its 2-rank prediction is checked against the measurement.

    python benchmarks/mpi_scaling.py [--rounds 3] [--samples 12800] [--data-dir DIR]

Needs the mpi extra (pip install -e ".[mpi]"); it runs ``mpiexec -n 2`` itself.

The model (``predict``): with p ranks a step takes compute/p (the batch split evenly, each
part as fast per row as the whole: optimistic for small parts) plus the gradient's
all-reduce. ``deterministic=False`` is MPI's Allreduce, modelled as a ring:
2(p − 1)/p · bytes / bandwidth + 2(p − 1) · latency. ``deterministic=True`` (the default)
gathers every rank's gradient to sum it in rank order, a ring Allgather:
(p − 1) · bytes / bandwidth + (p − 1) · latency. The parts' row counts, and the targets
and outputs gathered for the loss, are a few kilobytes and left out. Latencies: 50 µs at 1 Gb/s (TCP), 10 µs at 10 Gb/s, 2 µs at
100 Gb/s (RDMA).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import nnlite
from mlp_mnist import machine, table
import results
from nnlite import layers as L

HERE = Path(__file__).resolve()
BATCH = 128
NETWORKS = [("1 Gb/s", 1e9 / 8, 50e-6), ("10 Gb/s", 10e9 / 8, 10e-6),
            ("100 Gb/s", 100e9 / 8, 2e-6)]
RANKS = [1, 2, 4, 8, 16, 32, 64]


def build(kind):
    nnlite.set_seed(0)
    if kind == "mlp":
        return nnlite.Sequential(L.Linear(784, 256), L.ReLU(), L.Linear(256, 128), L.ReLU(),
                                 L.Linear(128, 10))
    return nnlite.Sequential(L.Conv2D(1, 32, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
                             L.Conv2D(32, 64, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
                             L.Flatten(), L.Linear(64 * 7 * 7, 128), L.ReLU(), L.Linear(128, 10))


def data(kind, root, samples):
    (x, y), _ = nnlite.datasets.load_mnist(root)
    x = x[:samples].astype(np.float32) / 255
    return (x.reshape(len(x), -1) if kind == "mlp" else x[:, None]), y[:samples]


class Trainer:
    """One model trained epoch by epoch: on this process, on its threads, or as a rank."""

    def __init__(self, kind, x, y, threads=1, comm=None):
        self.model, self.x, self.y = build(kind), x, y
        self.opt = nnlite.optim.Adam(self.model.parameters(), lr=1e-3)
        self.threads, self.comm, self.done = threads, comm, 0

    def epoch(self):
        start = time.perf_counter()
        self.model.fit(self.x, self.y, loss=nnlite.losses.CrossEntropy(), optimizer=self.opt,
                       epochs=self.done + 1, initial_epoch=self.done, batch_size=BATCH,
                       verbose=False, seed=0, threads=self.threads, comm=self.comm)
        self.done += 1
        return time.perf_counter() - start


def timed_comm():
    """An MPIComm that adds up the seconds its collectives take (a collective calling
    another, as ``gather`` does for a list, counted once)."""
    from nnlite.distributed import MPIComm

    class Timed(MPIComm):
        seconds, busy = 0.0, False

    def timed(method):
        def run(self, *args):
            if self.busy:
                return method(self, *args)
            self.busy, start = True, time.perf_counter()
            try:
                return method(self, *args)
            finally:
                self.seconds += time.perf_counter() - start
                self.busy = False
        return run

    for name in ("sum", "gather", "counts", "any"):
        setattr(Timed, name, timed(getattr(MPIComm, name)))
    return Timed()


def worker(args):
    """One rank of ``mpiexec -n 2``: a warm-up epoch, a timed one, then the Allgather of a
    gradient alone (the network's latency and bandwidth here); rank 0 prints the figures."""
    comm = timed_comm()
    with threadpool_limits(limits=1, user_api="blas"):
        x, y = data(args.worker, args.data_dir, args.samples)
        trainer = Trainer(args.worker, x, y, comm=comm)
        trainer.epoch()
        comm.seconds = 0.0
        seconds = trainer.epoch()
        size = sum(p.data.size for p in trainer.model.parameters())
        grad = np.zeros(size, np.float32)
        small, big = [], []
        for _ in range(20):
            for array, into in ((grad[:1], small), (grad, big)):
                start = time.perf_counter()
                comm.sum(array)
                into.append(time.perf_counter() - start)
    if comm.rank == 0:
        print(json.dumps({"epoch": seconds, "comm": comm.seconds, "bytes": grad.nbytes,
                          "latency": statistics.median(small),
                          "allgather": statistics.median(big)}))


def ranks_epoch(kind, args):
    """Figures of one 2-rank epoch, run by mpiexec."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", "2", sys.executable,
               str(HERE), "--worker", kind, "--samples", str(args.samples)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def step_ms(kind, x, y):
    """Milliseconds of one training step on one process, BLAS on one thread."""
    trainer = Trainer(kind, x[:BATCH * 10], y[:BATCH * 10])
    with threadpool_limits(limits=1, user_api="blas"):
        trainer.epoch()
        return min(trainer.epoch() for _ in range(3)) / 10 * 1000


def gpt_step():
    """(ms per step on one process, BLAS on one thread; gradient bytes) of the character
    GPT of benchmarks/gpt_shakespeare.py, on random tokens."""
    sys.path.insert(0, str(HERE.parent.parent / "examples"))
    from shakespeare_gpt import build as build_gpt
    model = build_gpt(65, 64, 128, 4, 4)
    opt = nnlite.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (12 * 10, 64)), rng.integers(0, 65, (12 * 10, 64))
    with threadpool_limits(limits=1, user_api="blas"):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model.fit(x, y, loss=nnlite.losses.CrossEntropy(), optimizer=opt, batch_size=12,
                      verbose=False, seed=0)
            times.append((time.perf_counter() - start) / 10)
    return min(times) * 1000, 4 * sum(p.data.size for p in model.parameters())


def predict(compute_ms, nbytes, p, bandwidth, latency, deterministic=True):
    """Milliseconds per step on p ranks (see the module's docstring)."""
    if deterministic:
        comm = (p - 1) * nbytes / bandwidth + (p - 1) * latency
    else:
        comm = 2 * (p - 1) / p * nbytes / bandwidth + 2 * (p - 1) * latency
    return compute_ms / p + 1000 * comm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=12800)
    parser.add_argument("--data-dir", default=os.environ.get("NNLITE_DATA"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    print(machine())
    print(f"MNIST ({args.samples:,} images), batch {BATCH}, float32, median of {args.rounds} "
          f"alternating rounds; a rank's BLAS on one thread")
    rows, model_inputs = [], {}
    for kind in ("mlp", "cnn"):
        x, y = data(kind, args.data_dir, args.samples)
        one, two = Trainer(kind, x, y), Trainer(kind, x, y, threads=2)
        one.epoch(), two.epoch()  # warm-up
        times = {"one": [], "threads": [], "ranks": [], "comm": []}
        for r in range(args.rounds):
            with threadpool_limits(limits=1, user_api="blas"):
                times["one"].append(one.epoch())
            times["threads"].append(two.epoch())
            figures = ranks_epoch(kind, args)
            times["ranks"].append(figures["epoch"])
            times["comm"].append(figures["comm"] / figures["epoch"])
            print(f"  {kind} round {r + 1}: one process {times['one'][-1]:.2f}s, threads=2 "
                  f"{times['threads'][-1]:.2f}s, 2 ranks {times['ranks'][-1]:.2f}s", flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        steps = -(-args.samples // BATCH)
        rows.append([kind.upper(), f"{med['one']:.2f}", f"{med['threads']:.2f}",
                     f"{med['ranks']:.2f}", f"{med['one'] / med['ranks']:.2f}x",
                     f"{100 * med['comm']:.0f}%"])
        model_inputs[kind] = (1000 * med["one"] / steps, figures["bytes"], figures,
                              1000 * med["ranks"] / steps)
        results.headline(f"MNIST {kind.upper()} epoch, 2 MPI ranks: speed-up over one process",
                         f"{med['one'] / med['ranks']:.2f}x")
    print()
    print(table(["model", "one process s", "threads=2 s", "2 ranks s", "speed-up",
                 "2 ranks: in collectives"], rows))
    gpt_ms, gpt_bytes = gpt_step()
    report_model(model_inputs, gpt_ms, gpt_bytes)


def report_model(inputs, gpt_ms, gpt_bytes) -> None:
    """The model's inputs, its 2-rank check on this machine, and its predictions."""
    print("\nThe model's inputs (compute: one process, BLAS on one thread):")
    rows = [[k.upper(), f"{v[0]:.2f}", f"{v[1] / 1e6:.2f}"] for k, v in inputs.items()]
    rows.append(["GPT", f"{gpt_ms:.2f}", f"{gpt_bytes / 1e6:.2f}"])
    print(table(["model", "compute ms/step", "gradient MB"], rows))
    print("\nIts check on this machine's 2 ranks (latency and bandwidth of an Allgather here):")
    rows = []
    for k, (compute, nbytes, fig, measured) in inputs.items():
        bandwidth = nbytes / max(fig["allgather"] - fig["latency"], 1e-9)
        want = predict(compute, nbytes, 2, bandwidth, fig["latency"])
        rows.append([k.upper(), f"{1e6 * fig['latency']:.0f}", f"{bandwidth / 1e9:.2f}",
                     f"{want:.2f}", f"{measured:.2f}", f"{measured / want:.2f}"])
    print(table(["model", "latency µs", "GB/s", "predicted ms/step", "measured ms/step",
                 "measured / predicted"], rows))
    models = {k.upper(): v[:2] for k, v in inputs.items()} | {"GPT": (gpt_ms, gpt_bytes)}
    for name, (compute, nbytes) in models.items():
        print(f"\n{name}: predicted ms per step (deterministic=True / False) on p ranks")
        rows = [[net] + [f"{predict(compute, nbytes, p, bw, lat):.1f} / "
                         f"{predict(compute, nbytes, p, bw, lat, False):.1f}" for p in RANKS]
                for net, bw, lat in NETWORKS]
        print(table(["network"] + [f"p={p}" for p in RANKS], rows))


if __name__ == "__main__":
    results.main(__file__, main)
