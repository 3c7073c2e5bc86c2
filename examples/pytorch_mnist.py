"""PyTorch's own MNIST example (pytorch/examples, mnist/main.py), ported line for line.

Two 3x3 convolutions of 32 and 64 (no padding), ReLU, 2x2 max-pooling, dropout 0.25,
Linear 9216→128, ReLU, dropout 0.5, Linear 128→10; log-softmax and NLL loss (here
CrossEntropy on the logits, the same function); Adadelta at lr 1.0, StepLR with γ 0.7 after
every epoch; batch 64, test batch 1000, 14 epochs; inputs normalised by MNIST's mean 0.1307
and standard deviation 0.3081. Prints PyTorch's lines: the loss every --log-interval
batches and each epoch's test loss and accuracy. --save-model writes the weights as a
PyTorch state dict in safetensors (Net's names: it loads into PyTorch's Net).
Data comes from --data-dir, else $NNLITE_DATA, else the repository's datasets/ folder.
--quick trains one epoch on 6,400 images and tests on 1,000; --plot DIR writes the
curves there as PNG.
"""
import argparse
from collections import OrderedDict
import os
from pathlib import Path

import numpy as np

import nnlite
from nnlite.layers import Conv2D, Dropout, Flatten, Linear, MaxPool2D, ReLU


def net() -> nnlite.Sequential:
    """PyTorch's ``Net``: its layers' names, and PyTorch's initialisation (init="torch")."""
    return nnlite.Sequential(OrderedDict([
        ("conv1", Conv2D(1, 32, 3, 1, init="torch")), ("relu1", ReLU()),
        ("conv2", Conv2D(32, 64, 3, 1, init="torch")), ("relu2", ReLU()),
        ("pool", MaxPool2D(2)), ("dropout1", Dropout(0.25)),
        ("flatten", Flatten()), ("fc1", Linear(9216, 128, init="torch")), ("relu3", ReLU()),
        ("dropout2", Dropout(0.5)), ("fc2", Linear(128, 10, init="torch"))]))
    # log_softmax and nll_loss: CrossEntropy on the logits


class Log(nnlite.callbacks.Callback):
    """train()'s print every log_interval batches, as PyTorch's example words it."""

    def __init__(self, log_interval: int, batch_size: int, n: int):
        self.log_interval, self.batch_size, self.n = log_interval, batch_size, n

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_batch_end(self, batch, logs=None):
        if batch % self.log_interval == 0:
            seen = batch * self.batch_size
            print(f"Train Epoch: {self.epoch} [{seen}/{self.n} "
                  f"({100. * seen / self.n:.0f}%)]\tLoss: {logs['loss']:.6f}")


class Test(nnlite.callbacks.Callback):
    """test() after every epoch: the mean loss and the accuracy on the test set."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    def on_epoch_end(self, epoch, logs=None):
        scores = self.model.evaluate(self.x, self.y, batch_size=self.batch_size)
        correct = round(scores["accuracy"] * len(self.y))
        print(f"\nTest set: Average loss: {scores['loss']:.4f}, Accuracy: {correct}/"
              f"{len(self.y)} ({100. * correct / len(self.y):.0f}%)\n")
        logs.update({"test_loss": scores["loss"], "test_accuracy": scores["accuracy"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-batch-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--save-model", action="store_true")
    parser.add_argument("--data-dir", help="folder holding mnist/")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 6,400 images")
    parser.add_argument("--plot", metavar="DIR", help="write the curves there as PNG")
    args = parser.parse_args()
    nnlite.set_seed(args.seed)                                    # torch.manual_seed

    root = args.data_dir or os.environ.get("NNLITE_DATA") or \
        Path(__file__).resolve().parent.parent / "datasets"
    (x, y), (xt, yt) = nnlite.datasets.load_mnist(root)
    if args.quick:
        x, y, xt, yt, args.epochs = x[:6400], y[:6400], xt[:1000], yt[:1000], 1
    # transforms.ToTensor() and Normalize((0.1307,), (0.3081,))
    x = ((x[:, None] / np.float32(255) - np.float32(0.1307)) / np.float32(0.3081))
    xt = ((xt[:, None] / np.float32(255) - np.float32(0.1307)) / np.float32(0.3081))

    model = net()
    optimizer = nnlite.optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = nnlite.optim.StepLR(optimizer, step_size=1, gamma=args.gamma)
    history = model.fit(
        x.astype(np.float32), y, loss=nnlite.losses.CrossEntropy(), optimizer=optimizer,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, verbose=False,
        callbacks=[Log(args.log_interval, args.batch_size, len(x)),
                   Test(xt.astype(np.float32), yt, args.test_batch_size), scheduler])
    if args.save_model:
        model.save_weights("mnist_cnn.safetensors")             # torch.save(state_dict)
    if args.plot:
        curves = nnlite.plot.plot_history(history, ["loss", "test_loss", "test_accuracy"])
        print("figures:", *nnlite.plot.save_figures(args.plot, {"history": curves}))
    print(f"test accuracy: {history.history['test_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main()
