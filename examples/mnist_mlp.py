"""Train an MLP on MNIST (or Fashion-MNIST) and report its test accuracy.

Data comes from --data-dir, else $NNLITE_DATA, else the repository's datasets/
folder; missing files are downloaded there and verified by SHA-256.
--quick trains on 10,000 images for 3 epochs (seconds); --plot DIR writes the training
curves, misclassified test digits, the first layer's weights and the input direction each
of eight test digits is most sensitive to (with its local Lipschitz constant) there as PNG.
"""
import argparse
import os
from pathlib import Path

import numpy as np

import nnlite
from nnlite.layers import Dropout, Linear, ReLU

LOADERS = {"mnist": nnlite.datasets.load_mnist,
           "fashion-mnist": nnlite.datasets.load_fashion_mnist}


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
    args = parser.parse_args()
    epochs = args.epochs or (3 if args.quick else 12)

    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    (x_train, y_train), (x_test, y_test) = LOADERS[args.dataset](root)
    # Cast once: float32 in [0, 1], one row per image.
    x_train = x_train.reshape(len(x_train), -1).astype(np.float32) / 255
    x_test = x_test.reshape(len(x_test), -1).astype(np.float32) / 255
    x_val, y_val = x_train[-5000:], y_train[-5000:]
    x_train, y_train = x_train[:-5000], y_train[:-5000]
    if args.quick:
        x_train, y_train = x_train[:10000], y_train[:10000]

    nnlite.set_seed(args.seed)
    sizes = [784, *(int(h) for h in args.hidden.split(",") if h)]
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [Linear(n_in, n_out), ReLU(), Dropout(args.dropout)]
    model = nnlite.Sequential(*layers, Linear(sizes[-1], 10))
    model.summary()

    optimizer = nnlite.optim.Adam(model.parameters(), lr=args.lr)
    schedule = nnlite.optim.CosineAnnealingLR(optimizer, T_max=epochs)
    history = model.fit(x_train, y_train, loss=nnlite.losses.CrossEntropy(),
                        optimizer=optimizer, epochs=epochs, batch_size=args.batch_size,
                        validation_data=(x_val, y_val), callbacks=[schedule], seed=args.seed)
    model.save(args.save)
    print(f"saved the model to {args.save}")
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    if args.plot:
        plot = nnlite.plot
        paths = plot.save_figures(args.plot, {
            "history": history.plot(),
            "mistakes": plot.plot_mistakes(model, x_test, y_test, image_shape=(28, 28)),
            "weights": plot.plot_weights(model[0], (28, 28), max_units=16),
            "sensitivity": plot.plot_sensitivity(model, x_test[:8], image_shape=(28, 28))})
        print("figures:", *paths)
    print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
