import numpy as np
import pytest

from nnlite import losses
from nnlite.check import numerical_jacobian

from conftest import require


def numerical_grad(loss, pred, target):
    return numerical_jacobian(lambda p: np.array([loss.forward(p, target)]), pred).reshape(
        pred.shape)


@pytest.fixture
def logits(rng):
    return rng.standard_normal((5, 4)) * 3


def test_cross_entropy_value_with_labels():
    z = np.array([[0.0, 0.0], [np.log(3), 0.0]])
    y = np.array([0, 1])
    expected = (np.log(2) + np.log(4)) / 2  # -log(1/2), -log(1/4)
    assert losses.CrossEntropy().forward(z, y) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("target_kind", ["labels", "onehot", "soft"])
def test_cross_entropy_gradient(logits, rng, target_kind):
    labels = np.array([0, 3, 1, 1, 2])
    target = {"labels": labels,
              "onehot": np.eye(4)[labels],
              "soft": rng.dirichlet(np.ones(4), size=5)}[target_kind]
    loss = losses.CrossEntropy()
    loss.forward(logits, target)
    np.testing.assert_allclose(loss.backward(), numerical_grad(loss, logits, target),
                               atol=1e-8)


def test_cross_entropy_labels_and_onehot_agree(logits):
    labels = np.array([0, 3, 1, 1, 2])
    a, b = losses.CrossEntropy(), losses.CrossEntropy()
    assert a.forward(logits, labels) == pytest.approx(b.forward(logits, np.eye(4)[labels]))
    np.testing.assert_allclose(a.backward(), b.backward(), atol=1e-15)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32])
def test_cross_entropy_takes_labels_of_any_integer_dtype(rng, dtype):
    # 128 rows and labels up to 9: label · rows overflows 8 bits if computed in the labels' dtype.
    z, labels = rng.standard_normal((128, 10)), rng.integers(0, 10, 128)
    a, b = losses.CrossEntropy(), losses.CrossEntropy()
    assert a.forward(z, labels.astype(dtype)) == pytest.approx(b.forward(z, labels), rel=1e-12)
    np.testing.assert_allclose(a.backward(), b.backward(), atol=1e-15)


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n(logits):
    labels = np.array([0, 3, 1, 1, 2])
    loss = losses.CrossEntropy()
    loss.forward(logits, labels)
    s = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss.backward(), (s - np.eye(4)[labels]) / 5, atol=1e-15)


def test_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4]], np.float32)
    loss = losses.CrossEntropy()
    assert loss.forward(z, np.array([0])) == 0.0
    assert loss.forward(z, np.array([1])) == pytest.approx(1e4)
    assert np.isfinite(loss.backward()).all()


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1, 4, 0, 1]), r"label 4 is outside \[0, 4\)"),
    (np.array([0, -1, 2, 0, 1]), r"label -1 is outside"),
    (np.array([0.5, 1, 2, 0, 1]), "must be integers"),
    (np.array([0, 1, 2]), r"target of shape \(3,\) does not fit logits of shape \(5, 4\)"),
    (np.zeros((5, 3)), r"target of shape \(5, 3\)"),
])
def test_cross_entropy_rejects_bad_labels(logits, labels, message):
    with pytest.raises(ValueError, match=message):  # checked at the door: calling the loss
        losses.CrossEntropy()(logits, labels)


def test_cross_entropy_accepts_whole_float_labels(logits):
    a = losses.CrossEntropy().forward(logits, np.array([0.0, 3, 1, 1, 2]))
    assert a == pytest.approx(losses.CrossEntropy().forward(logits, np.array([0, 3, 1, 1, 2])))


def test_mse_value_and_gradient(rng):
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss = losses.MSE()
    assert loss.forward(pred, target) == pytest.approx(np.mean((pred - target) ** 2))
    np.testing.assert_allclose(loss.backward(), numerical_grad(loss, pred, target), atol=1e-8)
    with pytest.raises(ValueError, match=r"MSE: target of shape \(4, 2\)"):
        loss(pred, target[:, :2])


def test_binary_cross_entropy_value_gradient_and_stability(rng):
    z = rng.standard_normal((6, 1)) * 4
    t = rng.integers(0, 2, 6).astype(float)
    loss = losses.BinaryCrossEntropy()
    p = 1 / (1 + np.exp(-z[:, 0]))
    expected = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert loss.forward(z, t) == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(loss.backward(), numerical_grad(loss, z, t), atol=1e-8)
    big = np.array([[800.0], [-800.0]])
    assert loss.forward(big, np.array([0.0, 1.0])) == pytest.approx(800.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        loss(z, t + 2)


def test_accuracy():
    z = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert losses.CrossEntropy().accuracy(z, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert losses.BinaryCrossEntropy().accuracy(np.array([[1.0], [-1.0]]),
                                                np.array([1, 1])) == 0.5
    with pytest.raises(ValueError, match="not a classification loss"):
        losses.MSE().accuracy(z, z)


def test_cross_entropy_gradient_for_column_major_logits(logits):
    labels = np.array([0, 3, 1, 1, 2])
    loss = losses.CrossEntropy()
    loss.forward(np.asfortranarray(logits), labels)
    np.testing.assert_allclose(loss.backward(), numerical_grad(loss, logits, labels), atol=1e-8)


def test_cross_entropy_backward_pairs_with_one_forward(logits):
    """backward writes over forward's softmax, so a second call without a forward is refused
    rather than returning a gradient twice corrected."""
    loss = losses.CrossEntropy()
    with pytest.raises(RuntimeError, match="needs a forward first"):
        loss.backward()
    loss.forward(logits, np.array([0, 3, 1, 1, 2]))
    loss.backward()
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()


@pytest.mark.parametrize("shape", [(6, 4), (3, 5, 4)])
@pytest.mark.parametrize("targets", ["labels", "probabilities"])
@pytest.mark.parametrize("smoothing, weight", [(0.0, None), (0.1, None), (0.0, [1, 2, 0.5, 3]),
                                               (0.2, [0.3, 1, 2, 0.7])])
def test_cross_entropy_weight_and_label_smoothing_are_torchs(rng, shape, targets, smoothing,
                                                              weight):
    """torch's mean reduction: weighted labels divide by Σ w_y, and the smoothing term is
    weighted per class; probability targets divide by the number of positions."""
    torch = require("torch")
    z = rng.standard_normal(shape)
    if targets == "labels":
        y = rng.integers(0, 4, shape[:-1])
    else:
        y = rng.dirichlet(np.ones(4), shape[:-1])
    mine = losses.CrossEntropy(label_smoothing=smoothing, weight=weight)
    value, grad = mine(z, y), mine.backward()
    zt = torch.from_numpy(np.moveaxis(z, -1, 1).copy()).requires_grad_()
    yt = torch.from_numpy(y if targets == "labels" else np.moveaxis(y, -1, 1).copy())
    wt = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    theirs = torch.nn.functional.cross_entropy(zt, yt, weight=wt, label_smoothing=smoothing)
    theirs.backward()
    assert abs(value - theirs.item()) <= 1e-10
    np.testing.assert_allclose(grad, np.moveaxis(zt.grad.numpy(), 1, -1), atol=1e-10)


@pytest.mark.parametrize("kwargs, message", [
    ({"weight": [1, 2]}, r"weight has 2 numbers for logits of 4 classes"),
    ({"weight": [1, -1, 1, 1]}, r"weight must hold one finite number >= 0 per class"),
    ({"weight": [1, np.nan, 1, 1]}, r"weight must hold one finite number >= 0 per class"),
    ({"weight": [[1, 1, 1, 1]]}, r"weight must hold one finite number >= 0 per class"),
    ({"label_smoothing": 1.5}, r"label_smoothing must be a number in \[0, 1\]"),
])
def test_cross_entropy_settings_are_checked_at_the_door(rng, kwargs, message):
    with pytest.raises(ValueError, match=message):
        losses.CrossEntropy(**kwargs)(rng.standard_normal((3, 4)), np.array([0, 1, 2]))
