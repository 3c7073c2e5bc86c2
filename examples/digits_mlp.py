"""Train an MLP on scikit-learn's bundled 8x8 digits: offline, in seconds."""
import argparse

import numpy as np

import nnlite
from nnlite.layers import Dropout, Linear, ReLU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = nnlite.datasets.load_digits()
    x_train = x_train.reshape(len(x_train), -1) / np.float32(16)
    x_test = x_test.reshape(len(x_test), -1) / np.float32(16)

    nnlite.set_seed(args.seed)
    model = nnlite.Sequential(Linear(64, 128), ReLU(), Dropout(0.1), Linear(128, 10))
    model.summary()
    model.fit(x_train, y_train, loss=nnlite.losses.CrossEntropy(),
              optimizer=nnlite.optim.Adam(model.parameters(), lr=3e-3), epochs=args.epochs,
              batch_size=32, validation_data=(x_test, y_test), seed=args.seed)
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
