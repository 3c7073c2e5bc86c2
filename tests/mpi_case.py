"""The small models tests/test_distributed.py trains on n ranks under ``mpiexec`` and in one
process (``LocalComm``, or no comm at all), in float64.

    mpiexec -n 2 python tests/mpi_case.py CASE OUT.npz [--epochs N] [--checkpoint PATH]
        [--resume PATH] [--fail-rank R] [--interrupt-rank R] [--verbose]

trains CASE on the ranks (writing a checkpoint after each epoch, or resuming one) and has
rank 0 write the weights and the History to OUT.npz (and save the model to
OUT.npz.rank0.npz: every rank asks), and each rank its optimizer's steps and the epochs
trained to OUT.npz.endR.json; --fail-rank R raises in its third batch, --interrupt-rank R
sends itself SIGINT (Ctrl-C) after the first batch of the second epoch. A case ending in
``-dataset`` trains on ArrayDatasets that record the rows each rank reads (written to
OUT.npz.readsR.json), one ending in ``-whole`` on datasets that have no ``part``.
"""
import json
import os
import signal

import numpy as np

import nnlite
from nnlite import layers as L


def build(case: str):
    """The model of ``case``, its data (x, y) and validation data, built alike everywhere."""
    nnlite.set_default_dtype(np.float64)
    try:
        nnlite.set_seed(0)
        rng = np.random.default_rng(1)
        if case.startswith("mlp"):
            x = rng.standard_normal((90, 6))
            layers = [L.Linear(6, 16), L.ReLU(), *([L.Dropout(0.3)] if case == "mlp-dropout"
                                                   else []), L.Linear(16, 3)]
            model = nnlite.Sequential(*layers)
        elif case.startswith("cnn"):
            x = rng.standard_normal((90, 1, 6, 6))
            model = nnlite.Sequential(L.Conv2D(1, 4, 3, padding=1, bias=False), L.BatchNorm(4),
                                      L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Linear(36, 3))
        else:  # a graph of two inputs
            x = [rng.standard_normal((90, 6)), rng.standard_normal((90, 4))]
            a, b = nnlite.Input((6,)), nnlite.Input((4,))
            h = L.Concatenate()([L.ReLU()(L.Linear(6, 8)(a)), L.Tanh()(L.Linear(4, 8)(b))])
            model = nnlite.Model([a, b], L.Linear(16, 3)(h))
    finally:
        nnlite.set_default_dtype(np.float32)
    y = rng.integers(0, 3, 90)
    return model, x, y


class Recorded(nnlite.datasets.ArrayDataset):
    """An ArrayDataset that records the rows it reads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = []

    def _read(self, lo, hi):
        self.read += list(range(lo, hi)) if self.order is None else self.order[lo:hi].tolist()
        return super()._read(lo, hi)


class Whole(nnlite.datasets.Dataset):
    """A dataset without ``part``: each rank reads each batch whole."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]


def train(case: str, comm, epochs: int = 2, checkpoint: str | None = None, resume: bool = False,
          callbacks=(), verbose: bool = False):
    """``case`` trained for ``epochs`` on ``comm``: (model, optimizer, History, the rows the
    training and validation datasets read, or None)."""
    model, x, y = build(case)
    part = lambda a, s: [v[s] for v in a] if isinstance(a, list) else a[s]  # noqa: E731
    data, val, sets = (part(x, slice(0, 72)), y[:72]), (part(x, slice(72, None)), y[72:]), None
    if case.endswith(("-dataset", "-whole")):
        sets = [Recorded(*data, batch_size=24, shuffle=True, seed=5), Recorded(*val, batch_size=9)]
        wrap = Whole if case.endswith("-whole") else lambda d: d
        data, val = (wrap(sets[0]), None), wrap(sets[1])
    optimizer = nnlite.optim.Adam(model.parameters(), lr=0.01, max_grad_norm=5.0)
    initial = 0
    if resume:
        model, optimizer, initial = nnlite.load_checkpoint(checkpoint)
    elif checkpoint:
        callbacks = [*callbacks, nnlite.callbacks.ModelCheckpoint(checkpoint, monitor="loss")]
    history = model.fit(*data, loss=nnlite.losses.CrossEntropy(), optimizer=optimizer,
                        epochs=epochs, batch_size=None if sets else 24, seed=3,
                        validation_data=val, verbose=verbose, initial_epoch=initial, comm=comm,
                        callbacks=list(callbacks))
    return model, optimizer, history, sets and [d.read for d in sets]


class FailIn(nnlite.callbacks.Callback):
    """Raises in the third batch of the epoch."""

    def on_batch_end(self, batch, logs=None):
        if batch == 2:
            raise RuntimeError("this rank's data is bad")


class InterruptIn(nnlite.callbacks.Callback):
    """Ctrl-C to this process alone, after the first batch of the second epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 0:
            os.kill(os.getpid(), signal.SIGINT)


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser()
    for name in ("case", "out"):
        parser.add_argument(name)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint")
    parser.add_argument("--resume")
    parser.add_argument("--fail-rank", type=int)
    parser.add_argument("--interrupt-rank", type=int)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    comm = nnlite.distributed.MPIComm()
    faults = [*([FailIn()] if args.fail_rank == comm.rank else []),
              *([InterruptIn()] if args.interrupt_rank == comm.rank else [])]
    model, optimizer, history, read = train(args.case, comm, args.epochs,
                                            args.resume or args.checkpoint,
                                            resume=bool(args.resume), callbacks=faults,
                                            verbose=args.verbose)
    model.save(f"{args.out}.rank{comm.rank}.npz")  # written by rank 0 only
    with open(f"{args.out}.end{comm.rank}.json", "w") as f:
        json.dump({"steps": optimizer.steps, "epochs": len(history.epoch)}, f)
    if read:
        with open(f"{args.out}.reads{comm.rank}.json", "w") as f:
            json.dump(read, f)
    if comm.rank == 0:
        np.savez(args.out, *[p.data for p in model.parameters()],
                 history=np.array(json.dumps(history.history)))


if __name__ == "__main__":
    main()
