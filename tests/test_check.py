"""The checking tools: Jacobians both ways, and check_layer catching what it must."""
import numpy as np
import pytest

import nnlite
from nnlite import layers
from nnlite.check import check_layer, jacobian, numerical_jacobian

from test_layers import CASES, sample

#: These oracles run on both kernel paths: the compiled kernels (the numba extra) and NumPy.
pytestmark = pytest.mark.usefixtures("kernel_path")


def test_numerical_jacobian_of_a_known_function():
    a = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    x = np.array([0.3, -0.7])
    np.testing.assert_allclose(numerical_jacobian(lambda v: a @ v, x), a, atol=1e-8)
    np.testing.assert_allclose(numerical_jacobian(np.sin, x), np.diag(np.cos(x)), atol=1e-8)


@pytest.mark.parametrize("make, shape", [c for c in CASES if not isinstance(c.values[1], dict)])
def test_jacobian_agrees_with_finite_differences(make, shape, rng):
    """(Every layer with float inputs: Embedding's ids have no Jacobian.)"""
    layer = make().astype(np.float64)

    def forward(v):  # random layers (dropout, shifts) draw the same numbers every call
        for m in layer.modules():
            m.rng = np.random.default_rng(0)
        return layer.forward(v)

    x = sample(rng, shape)
    if isinstance(x, list):  # one Jacobian per input: vary that input, hold the others
        numeric = [numerical_jacobian(lambda v, i=i: forward(x[:i] + [v] + x[i + 1:]), xi)
                   for i, xi in enumerate(x)]
    else:
        numeric = numerical_jacobian(forward, x)
    for m in layer.modules():
        m.rng = np.random.default_rng(0)
    built = jacobian(layer, x, training=layer.training)  # in the mode forward ran it in
    for analytic, expected in zip(*(([built], [numeric]) if not isinstance(x, list)
                                    else (built, numeric))):
        np.testing.assert_allclose(analytic, expected, atol=1e-7)


def test_jacobian_of_linear_is_w_per_row(rng):
    layer = layers.Linear(3, 2, dtype=np.float64)
    J = jacobian(layer, rng.standard_normal((1, 3)))
    np.testing.assert_allclose(J, layer.weight.data)


def test_softmax_jacobian_is_diag_minus_outer(rng):
    x = rng.standard_normal((1, 4))
    s = layers.Softmax()(x)[0]
    np.testing.assert_allclose(jacobian(layers.Softmax(), x), np.diag(s) - np.outer(s, s),
                               atol=1e-15)


def test_jacobian_of_sequential_is_the_product_of_layer_jacobians(rng):
    model = nnlite.Sequential(layers.Linear(4, 5), layers.Tanh(), layers.Linear(5, 3),
                              layers.Softmax()).astype(np.float64)
    x = rng.standard_normal((1, 4))
    product = np.eye(x.size)
    h = x
    for layer in model:
        product = jacobian(layer, h) @ product   # J = J₄ J₃ J₂ J₁, along the forward pass
        h = layer.forward(h)
    np.testing.assert_allclose(jacobian(model, x), product, atol=1e-12)
    np.testing.assert_allclose(product, numerical_jacobian(model.forward, x), atol=1e-8)


def test_jacobian_leaves_parameter_gradients_alone(rng):
    layer = layers.Linear(3, 2, dtype=np.float64)
    layer.weight.grad[...] = 7.0
    jacobian(layer, rng.standard_normal((2, 3)))
    np.testing.assert_array_equal(layer.weight.grad, 7.0)


class WrongInputGrad(layers.Tanh):
    def backward(self, grad):
        return super().backward(grad) * 1.01


class WrongWeightGrad(layers.Linear):
    def backward(self, grad):
        dx = super().backward(grad)
        self.weight.grad += 1e-3
        return dx


class OverwritesGrad(layers.Linear):
    """Assigns instead of adding: right once, wrong when gradients accumulate."""
    def backward(self, grad):
        self.weight.grad[...] = grad.T @ self._x
        self.bias.grad[...] = grad.sum(axis=0)
        return grad @ self.weight.data


class ModifiesGrad(layers.ReLU):
    def backward(self, grad):
        grad *= self._x > 0
        return grad


def test_check_layer_catches_a_wrong_input_gradient(rng):
    report = check_layer(WrongInputGrad(), rng.standard_normal((3, 4)))
    assert not report.ok and "dL/dx differs" in str(report)


def test_check_layer_catches_a_wrong_parameter_gradient(rng):
    report = check_layer(WrongWeightGrad(4, 3), rng.standard_normal((3, 4)))
    assert not report.ok and "dL/dweight differs" in str(report)
    assert "dL/dx" not in "".join(report.problems)


def test_check_layer_catches_overwriting_instead_of_accumulating(rng):
    report = check_layer(OverwritesGrad(4, 3), rng.standard_normal((3, 4)))
    assert not report.ok and "must accumulate" in str(report)


def test_check_layer_catches_a_backward_that_modifies_its_input(rng):
    report = check_layer(ModifiesGrad(), rng.standard_normal((3, 4)))
    assert not report.ok and "modified its input" in str(report)


def test_check_layer_is_not_fooled_by_stale_gradients_and_restores_state(rng):
    layer = layers.Linear(4, 3)
    layer.weight.grad[...] = 123.0   # left over from some earlier backward
    weight = layer.weight.data.copy()
    report = check_layer(layer, rng.standard_normal((2, 4)))
    assert report.ok, str(report)
    np.testing.assert_array_equal(layer.weight.grad, 123.0)
    np.testing.assert_array_equal(layer.weight.data, weight)
    assert layer.weight.data.dtype == np.float32


def test_report_reads_well(rng):
    report = check_layer(layers.Linear(4, 3), rng.standard_normal((2, 4)))
    text = str(report)
    assert text.startswith("check_layer(Linear(in_features=4") and "OK" in text
    assert report.max_abs_error < 1e-6 and bool(report)


def test_the_jacobian_tools_see_the_model_in_eval_mode_unless_asked_and_restore_its_modes(rng):
    """After fit a model is in training mode: with Dropout, the Jacobian would be a random
    matrix. The tools evaluate in eval mode by default; with training=True one call's
    passes share one forward's masks, which follow nnlite's seed."""
    from nnlite import check, losses, optim
    from nnlite.layers import Dropout, Linear, ReLU

    x, y = rng.standard_normal((64, 6)).astype(np.float32), rng.integers(0, 3, 64)
    model = nnlite.Sequential(Linear(6, 16), ReLU(), Dropout(0.5), Linear(16, 3))
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(model.parameters()),
              verbose=False)
    assert model.training and model[2].training
    one = x[:1]
    forward = check.jacobian(model, one, mode="forward")
    np.testing.assert_array_equal(forward, check.jacobian(model, one, mode="forward"))
    np.testing.assert_allclose(forward, check.jacobian(model, one, mode="reverse"), atol=1e-6)
    np.testing.assert_allclose(check.lipschitz(model, one), np.linalg.norm(forward, 2),
                               rtol=1e-5)
    v, u = rng.standard_normal((1, 6)), rng.standard_normal((1, 3))
    np.testing.assert_allclose(check.jvp(model, one, v)[1], v @ forward.T, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(check.vjp(model, one, u)[1], u @ forward, rtol=1e-5, atol=1e-6)
    assert model.training and model[2].training  # the modes fit left, restored
    nnlite.set_seed(3)
    drawn = check.jacobian(model, one, mode="forward", training=True)
    nnlite.set_seed(3)
    np.testing.assert_allclose(drawn, check.jacobian(model, one, mode="reverse", training=True),
                               atol=1e-6)
    assert np.abs(drawn - forward).max() > 1e-3  # a mask was drawn
    with pytest.raises(ValueError, match="jacobian: training must be True or False"):
        check.jacobian(model, one, training="yes")
