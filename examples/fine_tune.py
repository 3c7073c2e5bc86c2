"""Fine-tune an MNIST CNN on Fashion-MNIST: freeze its convolutions, give it a new head.

1. The CNN of mnist_cnn.py, trained on MNIST here (or loaded with --weights FILE, e.g. the
   mnist_cnn.npz that mnist_cnn.py saves).
2. Its convolutional part up to Flatten, frozen (``trainable = False``: its weights and
   BatchNorm statistics stay as they are, and backward never visits it), under a new
   Linear head for Fashion-MNIST's 10 classes: one line of the functional API.
3. The head alone trained on Fashion-MNIST; then the last convolutional block unfrozen and
   the two trained together at a lower learning rate. Prints both test accuracies.
Data comes from --data-dir, else $NNLITE_DATA, else the repository's datasets/ folder.
--quick uses 5,000 images per dataset and tests on 2,000 (well under a minute); --plot DIR
writes the fine-tuning curves there as PNG.
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np

import nnlite
from nnlite.layers import Linear

from mnist_cnn import build


def images(loader, root, limit):
    """(x_train, y_train), (x_test, y_test): float32 in [0, 1] of shape (N, 1, 28, 28)."""
    (x, y), (xt, yt) = loader(root)
    x, y, xt, yt = x[:limit[0]], y[:limit[0]], xt[:limit[1]], yt[:limit[1]]
    return (x[:, None].astype(np.float32) / 255, y), (xt[:, None].astype(np.float32) / 255, yt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/")
    parser.add_argument("--weights", help="a trained MNIST CNN (nnlite file) to start from")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs per stage (default 3, "
                        "or 2 with --quick)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5,000 images per dataset")
    parser.add_argument("--plot", metavar="DIR", help="write the figures there as PNG")
    args = parser.parse_args()
    epochs = args.epochs or (2 if args.quick else 3)
    limit = (5000, 2000) if args.quick else (60000, 10000)
    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    fit = dict(loss=nnlite.losses.CrossEntropy(), batch_size=args.batch_size, seed=args.seed)

    nnlite.set_seed(args.seed)
    if args.weights:
        cnn = nnlite.load(args.weights)
    else:
        (x, y), (xt, yt) = images(nnlite.datasets.load_mnist, root, limit)
        cnn = build(128)
        cnn.fit(x, y, optimizer=nnlite.optim.Adam(cnn.parameters(), lr=2e-3), epochs=epochs,
                **fit)
        print(f"MNIST test accuracy: {cnn.evaluate(xt, yt)['accuracy']:.4f}")

    body = nnlite.Sequential(*cnn.layers[:10])     # up to Flatten: the same, trained layers
    body.trainable = False
    inputs = nnlite.Input((1, 28, 28))
    model = nnlite.Model(inputs, Linear(64 * 7 * 7, 10)(body(inputs)))   # the new head
    model.summary()

    (x, y), (xt, yt) = images(nnlite.datasets.load_fashion_mnist, root, limit)
    start = time.perf_counter()
    head = model.fit(x, y, optimizer=nnlite.optim.Adam(model.trainable_parameters(), lr=2e-3),
                     epochs=epochs, validation_data=(xt, yt), **fit)
    print(f"head alone: {(time.perf_counter() - start) / epochs:.1f} s per epoch, "
          f"test accuracy: {model.evaluate(xt, yt)['accuracy']:.4f}")

    for layer in body.layers[5:9]:                 # the last block: conv, BatchNorm, ReLU, pool
        layer.trainable = True
    start = time.perf_counter()
    both = model.fit(x, y, optimizer=nnlite.optim.Adam(model.trainable_parameters(), lr=5e-4),
                     epochs=epochs, validation_data=(xt, yt), **fit)
    print(f"last block unfrozen: {(time.perf_counter() - start) / epochs:.1f} s per epoch, "
          f"test accuracy: {model.evaluate(xt, yt)['accuracy']:.4f}")
    if args.plot:
        curves = {k: head.history[k] + both.history[k] for k in head.history}
        figure = nnlite.plot.plot_history(curves)
        print("figures:", *nnlite.plot.save_figures(args.plot, {"history": figure}))


if __name__ == "__main__":
    main()
