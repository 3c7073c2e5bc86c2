"""Train an MLP on scikit-learn's bundled 8x8 digits: offline, in seconds.

--quick trains for 5 epochs; --plot DIR writes the training curves, misclassified test
digits and the first layer's weights there as PNG.
"""
import argparse

import numpy as np

import nnlite
from nnlite.layers import Dropout, Linear, ReLU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, help="default 30, or 5 with --quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5 epochs")
    parser.add_argument("--plot", metavar="DIR", help="write the figures there as PNG")
    args = parser.parse_args()
    epochs = args.epochs or (5 if args.quick else 30)

    (x_train, y_train), (x_test, y_test) = nnlite.datasets.load_digits()
    x_train = x_train.reshape(len(x_train), -1) / np.float32(16)
    x_test = x_test.reshape(len(x_test), -1) / np.float32(16)

    nnlite.set_seed(args.seed)
    model = nnlite.Sequential(Linear(64, 128), ReLU(), Dropout(0.1), Linear(128, 10))
    model.summary()
    history = model.fit(x_train, y_train, loss=nnlite.losses.CrossEntropy(),
                        optimizer=nnlite.optim.Adam(model.parameters(), lr=3e-3),
                        epochs=epochs, batch_size=32, validation_data=(x_test, y_test),
                        seed=args.seed)
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    if args.plot:
        plot = nnlite.plot
        paths = plot.save_figures(args.plot, {
            "history": history.plot(),
            "mistakes": plot.plot_mistakes(model, x_test, y_test, image_shape=(8, 8)),
            "weights": plot.plot_weights(model[0], (8, 8), max_units=24)})
        print("figures:", *paths)
    print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
