"""Train a small residual CNN on Fashion-MNIST (or MNIST) and report its test accuracy.

random shifts of up to 2 pixels and, for Fashion-MNIST, left-right mirroring (training
only) → conv 3x3 32 → BatchNorm → ReLU → max-pool
→ residual block of 32 → conv 3x3 64 → BatchNorm → ReLU → max-pool → residual block of 64
→ global average pooling → 10; Adam with a learning rate that warms up over the first epoch
(a tenth of the run, if shorter) and then follows a cosine to zero, per batch;
cross-entropy with label smoothing 0.1.
A residual block is y = ReLU(x + BN(conv(ReLU(BN(conv(x)))))): x feeds two paths, and
its gradient is the sum of what comes back along both.
Data comes from --data-dir, else $NNLITE_DATA, else the repository's datasets/ folder.
--quick trains on 4,000 images for 2 epochs and tests on 2,000 (seconds); --plot DIR
writes the training curves and misclassified test images there as PNG.
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np

import nnlite
from nnlite.layers import (Add, AvgPool2D, BatchNorm, Conv2D, Flatten, Linear, MaxPool2D,
                           RandomHorizontalFlip, RandomShift, ReLU)

LOADERS = {"mnist": nnlite.datasets.load_mnist,
           "fashion-mnist": nnlite.datasets.load_fashion_mnist}


def conv_bn(x, channels_in, channels_out):
    """conv 3x3 (same size) → BatchNorm, on a symbolic value."""
    return BatchNorm(channels_out)(Conv2D(channels_in, channels_out, 3, padding=1,
                                          bias=False)(x))


def residual(x, channels):
    """ReLU(x + BN(conv(ReLU(BN(conv(x)))))): the identity path and the convolutions add."""
    h = ReLU()(conv_bn(x, channels, channels))
    return ReLU()(Add()([x, conv_bn(h, channels, channels)]))


def build(width: int = 32, mirror: bool = True) -> nnlite.Model:
    x = nnlite.Input((1, 28, 28))
    h = RandomShift(2)(x)
    if mirror:  # clothes mirror well; digits do not
        h = RandomHorizontalFlip()(h)
    h = MaxPool2D(2)(ReLU()(conv_bn(h, 1, width)))                  # 14x14
    h = residual(h, width)
    h = MaxPool2D(2)(ReLU()(conv_bn(h, width, 2 * width)))          # 7x7
    h = residual(h, 2 * width)
    h = Flatten()(AvgPool2D(7)(h))                                  # global average pooling
    return nnlite.Model(x, Linear(2 * width, 10)(h))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/")
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="fashion-mnist")
    parser.add_argument("--epochs", type=int, help="default 20, or 2 with --quick")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--width", type=int, default=32, help="channels of the first block")
    parser.add_argument("--samples", type=int, default=None,
                        help="train on this many images only (a quick look)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads to split each batch among (2 trains faster on 2 cores)")
    parser.add_argument("--save", default="fashion_resnet.npz", help="where to save the model")
    parser.add_argument("--quick", action="store_true", help="4,000 images, 2 epochs")
    parser.add_argument("--plot", metavar="DIR", help="write the figures there as PNG")
    args = parser.parse_args()
    epochs = args.epochs or (2 if args.quick else 20)
    samples = args.samples or (4000 if args.quick else None)

    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    (x_train, y_train), (x_test, y_test) = LOADERS[args.dataset](root)
    # Cast once: float32 in [0, 1], shape (N, 1, 28, 28).
    x_train = x_train[:, None].astype(np.float32) / 255
    x_test = x_test[:, None].astype(np.float32) / 255
    x_val, y_val = x_train[-5000:], y_train[-5000:]
    x_train, y_train = x_train[:-5000][:samples], y_train[:-5000][:samples]
    if args.quick:  # 2,000 images to validate and test
        x_val, y_val, x_test, y_test = x_val[:2000], y_val[:2000], x_test[:2000], y_test[:2000]

    nnlite.set_seed(args.seed)
    model = build(args.width, mirror=args.dataset == "fashion-mnist")
    model.summary()
    optimizer = nnlite.optim.Adam(model.parameters(), lr=args.lr)
    steps = -(-len(x_train) // args.batch_size)  # batches per epoch
    warmup = min(steps, epochs * steps // 10)  # the first epoch, or a tenth of a short run
    schedule = nnlite.optim.WarmupCosineLR(optimizer, warmup_steps=warmup,
                                           total_steps=epochs * steps)
    start = time.perf_counter()
    history = model.fit(x_train, y_train,
                        loss=nnlite.losses.CrossEntropy(label_smoothing=args.label_smoothing),
                        optimizer=optimizer, epochs=epochs, batch_size=args.batch_size,
                        validation_data=(x_val, y_val), callbacks=[schedule], seed=args.seed,
                        threads=args.threads)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    model.save(args.save)
    print(f"saved the model to {args.save}")
    accuracy = model.evaluate(x_test, y_test, batch_size=args.batch_size)["accuracy"]
    if args.plot:
        names = nnlite.datasets.FASHION_MNIST_CLASSES if args.dataset == "fashion-mnist" else None
        paths = nnlite.plot.save_figures(args.plot, {
            "history": history.plot(),
            "mistakes": nnlite.plot.plot_mistakes(model, x_test, y_test, class_names=names)})
        print("figures:", *paths)
    print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
