"""Train a small CNN on MNIST (or Fashion-MNIST) and report its test accuracy.

random shifts of up to 2 pixels (training only) → conv 3x3 32 → BatchNorm → ReLU →
max-pool → conv 3x3 64 → BatchNorm → ReLU → max-pool → 128 → ReLU → 10, Adam with a
cosine learning-rate schedule.
Data comes from --data-dir, else $NNLITE_DATA, else the repository's datasets/ folder.
--quick trains on 5,000 images for 3 epochs and tests on 2,000 (seconds); --plot DIR
writes the training curves and misclassified test digits there as PNG.
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np

import nnlite
from nnlite.layers import BatchNorm, Conv2D, Flatten, Linear, MaxPool2D, RandomShift, ReLU

LOADERS = {"mnist": nnlite.datasets.load_mnist,
           "fashion-mnist": nnlite.datasets.load_fashion_mnist}


def build(hidden: int) -> nnlite.Sequential:
    return nnlite.Sequential(
        RandomShift(2), Conv2D(1, 32, 3, padding=1), BatchNorm(32), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 3, padding=1), BatchNorm(64), ReLU(), MaxPool2D(2),
        Flatten(), Linear(64 * 7 * 7, hidden), ReLU(), Linear(hidden, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/")
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="mnist")
    parser.add_argument("--epochs", type=int, help="default 10, or 3 with --quick")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=128, help="width of the dense layer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads to split each batch among (2 trains faster on 2 cores)")
    parser.add_argument("--save", default="mnist_cnn.npz", help="where to save the model")
    parser.add_argument("--quick", action="store_true", help="5,000 images, 3 epochs")
    parser.add_argument("--plot", metavar="DIR", help="write the figures there as PNG")
    args = parser.parse_args()
    epochs = args.epochs or (3 if args.quick else 10)

    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    (x_train, y_train), (x_test, y_test) = LOADERS[args.dataset](root)
    # Cast once: float32 in [0, 1], shape (N, 1, 28, 28).
    x_train = x_train[:, None].astype(np.float32) / 255
    x_test = x_test[:, None].astype(np.float32) / 255
    x_val, y_val = x_train[-5000:], y_train[-5000:]
    x_train, y_train = x_train[:-5000], y_train[:-5000]
    if args.quick:  # a tenth of the training set; 2,000 images to validate and test
        x_train, y_train = x_train[:5000], y_train[:5000]
        x_val, y_val, x_test, y_test = x_val[:2000], y_val[:2000], x_test[:2000], y_test[:2000]

    nnlite.set_seed(args.seed)
    model = build(args.hidden)
    model.summary(input_shape=(1, 28, 28))
    optimizer = nnlite.optim.Adam(model.parameters(), lr=args.lr)
    schedule = nnlite.optim.CosineAnnealingLR(optimizer, T_max=epochs)
    start = time.perf_counter()
    history = model.fit(x_train, y_train, loss=nnlite.losses.CrossEntropy(),
                        optimizer=optimizer, epochs=epochs, batch_size=args.batch_size,
                        validation_data=(x_val, y_val), callbacks=[schedule], seed=args.seed,
                        threads=args.threads)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    model.save(args.save)
    print(f"saved the model to {args.save}")
    accuracy = model.evaluate(x_test, y_test, batch_size=500)["accuracy"]
    if args.plot:
        paths = nnlite.plot.save_figures(args.plot, {
            "history": history.plot(),
            "mistakes": nnlite.plot.plot_mistakes(model, x_test, y_test)})
        print("figures:", *paths)
    print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
