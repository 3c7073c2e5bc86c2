"""Train an MLP on MNIST (or Fashion-MNIST) and report its test accuracy.

Data comes from --data-dir, else $NNLITE_DATA, else the repository's datasets/
folder; missing files are downloaded there and verified by SHA-256.
--quick trains on 10,000 images for 3 epochs (seconds); --plot DIR writes the training
curves, misclassified test digits, the first layer's weights and the input direction each
of eight test digits is most sensitive to (with its local Lipschitz constant) there as PNG.
--stream reads the images from their IDX files a batch at a time (decompressed once into a
temporary folder, then memory-mapped) instead of loading them, and prints the peak memory.
--mpi trains on the ranks of ``mpiexec -n 2 python examples/mnist_mlp.py --mpi`` (each a
part of every batch; the extra nnlite[mpi]); rank 0 prints, saves and reports.
"""
import argparse
import gzip
import os
import resource
import shutil
import tempfile
from pathlib import Path

import numpy as np

import nnlite
from nnlite.layers import Dropout, Linear, ReLU

LOADERS = {"mnist": nnlite.datasets.load_mnist,
           "fashion-mnist": nnlite.datasets.load_fashion_mnist}


class IdxStream(nnlite.datasets.Dataset):
    """Rows ``start:stop`` of memory-mapped IDX images and their labels, a batch at a time,
    each batch scaled to float32 rows in [0, 1] as it is read."""

    def __init__(self, images, labels, start, stop, batch_size):
        self.images, self.labels, self.start, self.stop = images, labels, start, stop
        self.batch_size = batch_size

    def __len__(self):
        return -(-(self.stop - self.start) // self.batch_size)

    def __getitem__(self, i):
        rows = slice(self.start + i * self.batch_size,
                     min(self.stop, self.start + (i + 1) * self.batch_size))
        x = self.images[rows]
        return x.reshape(len(x), -1).astype(np.float32) / 255, self.labels[rows]


def streams(root, dataset, folder, batch_size, quick):
    """Training, validation and test streams over the dataset's IDX files, decompressed
    into ``folder`` (verified by SHA-256 first, downloaded if missing)."""
    files = {}
    for name in nnlite.datasets.FILES:
        packed = nnlite.datasets.fetch(dataset, name, Path(nnlite.datasets.data_root(root)) /
                                       dataset)
        files[name] = Path(folder) / name[:-3]
        with gzip.open(packed, "rb") as src, open(files[name], "wb") as dst:
            shutil.copyfileobj(src, dst)
    images, labels, test_images, test_labels = (
        nnlite.datasets.read_idx(files[name], mmap_mode="r") if i % 2 == 0 else
        nnlite.datasets.read_idx(files[name]) for i, name in enumerate(nnlite.datasets.FILES))
    n = len(images) - 5000
    train = IdxStream(images, labels, 0, 10000 if quick else n, batch_size)
    return (train, IdxStream(images, labels, n, len(images), batch_size),
            IdxStream(test_images, test_labels, 0, len(test_images), 1000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/")
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="mnist")
    parser.add_argument("--epochs", type=int, help="default 12, or 3 with --quick")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", default="512,256", help="hidden layer sizes, e.g. 512,256")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default="mnist_mlp.npz", help="where to save the model")
    parser.add_argument("--quick", action="store_true", help="10,000 images, 3 epochs")
    parser.add_argument("--plot", metavar="DIR", help="write the figures there as PNG")
    parser.add_argument("--stream", action="store_true",
                        help="read the images a batch at a time instead of loading them")
    parser.add_argument("--mpi", action="store_true",
                        help="train on the ranks of mpiexec (nnlite.distributed.MPIComm)")
    args = parser.parse_args()
    if args.stream:
        with tempfile.TemporaryDirectory() as folder:
            train(args, streams(args.data_dir or os.environ.get("NNLITE_DATA") or
                                Path(__file__).resolve().parent.parent / "datasets",
                                args.dataset, folder, args.batch_size, args.quick))
    else:
        train(args)


def train(args, stream=None):
    """Build and train the MLP on arrays, or on the (train, validation, test) streams."""
    epochs = args.epochs or (3 if args.quick else 12)
    if stream is None:
        root = args.data_dir or os.environ.get("NNLITE_DATA") or \
            Path(__file__).resolve().parent.parent / "datasets"
        (x_train, y_train), (x_test, y_test) = LOADERS[args.dataset](root)
        # Cast once: float32 in [0, 1], one row per image.
        x_train = x_train.reshape(len(x_train), -1).astype(np.float32) / 255
        x_test = x_test.reshape(len(x_test), -1).astype(np.float32) / 255
        val = x_train[-5000:], y_train[-5000:]
        x_train, y_train = x_train[:-5000], y_train[:-5000]
        if args.quick:
            x_train, y_train = x_train[:10000], y_train[:10000]
        data, test = (x_train, y_train), (x_test, y_test)
    else:
        data, val, test = (stream[0], None), stream[1], (stream[2], None)

    comm = nnlite.distributed.MPIComm() if args.mpi else None
    lead = comm is None or comm.rank == 0  # the rank that prints
    nnlite.set_seed(args.seed)
    sizes = [784, *(int(h) for h in args.hidden.split(",") if h)]
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [Linear(n_in, n_out), ReLU(), Dropout(args.dropout)]
    model = nnlite.Sequential(*layers, Linear(sizes[-1], 10))
    if lead:
        model.summary()

    optimizer = nnlite.optim.Adam(model.parameters(), lr=args.lr)
    schedule = nnlite.optim.CosineAnnealingLR(optimizer, T_max=epochs)
    batch_size = None if args.stream else args.batch_size  # a stream's batches are made
    history = model.fit(*data, loss=nnlite.losses.CrossEntropy(), optimizer=optimizer,
                        epochs=epochs, batch_size=batch_size, validation_data=val,
                        callbacks=[schedule], seed=args.seed, comm=comm)
    model.save(args.save)  # (after fit(comm=...), on rank 0 only)
    accuracy = model.evaluate(*test)["accuracy"]
    if not lead:
        return
    print(f"saved the model to {args.save}")
    if args.plot:
        if stream is not None:  # the pictures need the test images as one array
            x_test = np.concatenate([stream[2][i][0] for i in range(len(stream[2]))])
            y_test = np.asarray(stream[2].labels)
        plot = nnlite.plot
        paths = plot.save_figures(args.plot, {
            "history": history.plot(),
            "mistakes": plot.plot_mistakes(model, x_test, y_test, image_shape=(28, 28)),
            "weights": plot.plot_weights(model[0], (28, 28), max_units=16),
            "sensitivity": plot.plot_sensitivity(model, x_test[:8], image_shape=(28, 28))})
        print("figures:", *paths)
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
