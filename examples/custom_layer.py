"""Write a layer from scratch, check its backward, and train it inside a Sequential.

The layer is a "learnable temperature" Swish: y = x · σ(βx), with one β per feature.
Following docs/custom-layers.md: forward, backward, then check_layer, then fit.
--quick trains for 5 epochs; --plot DIR draws the trained network's Jacobian at one test
digit, with its three factors: Swish's is diagonal, s + βx·s(1 − s) on the diagonal.
"""
import argparse

import numpy as np

import nnlite
from nnlite.layers import Linear


class Swish(nnlite.Layer):
    """y = x ⊙ σ(βx), β learnable per feature.

    With s = σ(βx): ∂y/∂x = s + βx·s(1 − s) and ∂y/∂β = x²·s(1 − s), both diagonal, so
    VJP: dL/dx = g ⊙ (s + βx·s(1 − s));  dL/dβ += Σₙ gₙ ⊙ xₙ²·sₙ(1 − sₙ).
    JVP (forward mode, optional): J·v = v ⊙ (s + βx·s(1 − s)).
    """

    def __init__(self, features: int):
        super().__init__()
        self.features = features
        self.beta = nnlite.Parameter(np.ones(features))

    def forward(self, x):
        self.x = x
        self.s = 1 / (1 + np.exp(-self.beta.data * x))
        return x * self.s

    def backward(self, grad):
        x, s, beta = self.x, self.s, self.beta.data
        ds = s * (1 - s)
        self.beta.grad += (grad * x * x * ds).reshape(-1, self.features).sum(axis=0)
        return grad * (s + beta * x * ds)

    def jvp(self, tangent):
        x, s, beta = self.x, self.s, self.beta.data
        return tangent * (s + beta * x * s * (1 - s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 epochs instead of 20")
    parser.add_argument("--plot", metavar="DIR", help="write the figure there as PNG")
    args = parser.parse_args()

    # 1. Check backward and jvp against finite differences and each other (in float64).
    report = nnlite.check.check_layer(Swish(4), np.random.default_rng(0).normal(size=(3, 4)))
    print(report)
    assert report.ok

    # 2. Train it like any other layer.
    (x_train, y_train), (x_test, y_test) = nnlite.datasets.load_digits()
    x_train = x_train.reshape(len(x_train), -1) / np.float32(16)
    x_test = x_test.reshape(len(x_test), -1) / np.float32(16)
    nnlite.set_seed(0)
    model = nnlite.Sequential(Linear(64, 64), Swish(64), Linear(64, 10))
    model.fit(x_train, y_train, loss=nnlite.losses.CrossEntropy(),
              optimizer=nnlite.optim.Adam(model.parameters(), lr=3e-3),
              epochs=5 if args.quick else 20, seed=0, verbose=False)
    print(f"learnt betas range from {model[1].beta.data.min():.2f} to "
          f"{model[1].beta.data.max():.2f}")

    # 3. Save and load it: the class is known to nnlite once it is defined.
    model.save("swish_model.npz")
    restored = nnlite.load("swish_model.npz")
    assert np.array_equal(restored.predict(x_test), model.predict(x_test))
    if args.plot:
        jacobian = nnlite.plot.plot_jacobian(model, x_test[:1], chain=True)
        print("figures:", *nnlite.plot.save_figures(args.plot, {"jacobian": jacobian}))
    print(f"test accuracy: {model.evaluate(x_test, y_test)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
