"""Read scikit-learn's 8x8 digits row by row, as sequences of 8 steps of 8 pixels, with an
LSTM, and report the test accuracy. Offline, in seconds.

LSTM(8 → 64), its last hidden state → Linear(64 → 10); Adam with a cosine schedule.
--quick trains for 10 epochs; --plot DIR writes the training curves and misclassified test
digits there as PNG.
"""
import argparse

import numpy as np

import nnlite
from nnlite.layers import LSTM, Linear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, help="default 40, or 10 with --quick")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 epochs")
    parser.add_argument("--plot", metavar="DIR", help="write the figures there as PNG")
    args = parser.parse_args()
    epochs = args.epochs or (10 if args.quick else 40)

    (x_train, y_train), (x_test, y_test) = nnlite.datasets.load_digits(seed=args.seed)
    # Cast once: float32 in [0, 1], shape (N, 8 steps, 8 features).
    x_train, x_test = x_train / np.float32(16), x_test / np.float32(16)

    nnlite.set_seed(args.seed)
    model = nnlite.Sequential(LSTM(8, args.hidden, return_sequences=False),
                              Linear(args.hidden, 10))
    optimizer = nnlite.optim.Adam(model.parameters(), lr=args.lr)
    schedule = nnlite.optim.CosineAnnealingLR(optimizer, T_max=epochs)
    history = model.fit(x_train, y_train, loss=nnlite.losses.CrossEntropy(),
                        optimizer=optimizer, epochs=epochs, batch_size=64,
                        callbacks=[schedule], seed=args.seed, verbose=False)
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    if args.plot:
        paths = nnlite.plot.save_figures(args.plot, {
            "history": history.plot(),
            "mistakes": nnlite.plot.plot_mistakes(model, x_test, y_test)})
        print("figures:", *paths)
    print(f"test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
