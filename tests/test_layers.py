"""Every layer nnlite exports is checked against finite differences, on several shapes."""
import inspect

import numpy as np
import pytest

import nnlite
from nnlite import layers
from nnlite.check import check_layer

#: These oracles run on both kernel paths: the compiled kernels (the numba extra) and NumPy.
pytestmark = pytest.mark.usefixtures("kernel_path")

# One or more constructions per exported layer, and input shapes (batch first) to check
# them on. A layer exported without an entry here fails test_every_layer_has_a_check.
EXAMPLES = {
    "Linear": [(lambda: layers.Linear(5, 3), [(4, 5), (2, 3, 5)]),
               (lambda: layers.Linear(4, 2, bias=False, init="glorot"), [(3, 4)])],
    "Flatten": [(layers.Flatten, [(2, 3, 4), (3, 5)])],
    "Reshape": [(lambda: layers.Reshape((2, -1)), [(3, 6), (2, 2, 3)])],
    "TransformerBlock": [(lambda: layers.TransformerBlock(4, 2, mlp_ratio=2), [(2, 3, 4)]),
                         (lambda: layers.TransformerBlock(4, 1, bias=False, causal=False),
                          [(1, 3, 4)])],
    "ReLU": [(layers.ReLU, [(4, 5), (2, 3, 4)])],
    "LeakyReLU": [(lambda: layers.LeakyReLU(0.2), [(4, 5), (2, 3, 4)])],
    "Sigmoid": [(layers.Sigmoid, [(4, 5), (2, 3, 4)])],
    "Tanh": [(layers.Tanh, [(4, 5), (2, 3, 4)])],
    "GELU": [(layers.GELU, [(4, 5), (2, 3, 4)]),
             (lambda: layers.GELU(approximate="tanh"), [(4, 5)])],
    "Softmax": [(layers.Softmax, [(4, 5)]), (lambda: layers.Softmax(axis=1), [(2, 3, 4)])],
    "Dropout": [(lambda: layers.Dropout(0.4), [(4, 5), (2, 3, 4)])],
    "RandomShift": [(lambda: layers.RandomShift(2), [(3, 2, 5, 6)]),
                    (lambda: layers.RandomShift(1).eval(), [(2, 1, 4, 4)])],
    "RandomHorizontalFlip": [(lambda: layers.RandomHorizontalFlip(0.5), [(6, 2, 3, 4)]),
                             (lambda: layers.RandomHorizontalFlip().eval(), [(2, 1, 3, 3)])],
    "Conv2D": [(lambda: layers.Conv2D(2, 3, 3), [(2, 2, 5, 5)]),
               (lambda: layers.Conv2D(3, 2, (2, 3), stride=2, padding=1), [(2, 3, 5, 6)]),
               (lambda: layers.Conv2D(1, 2, 1, bias=False), [(3, 1, 3, 2)]),
               # rows of 10 for 12 outputs: built once, held column by column
               (lambda: layers.Conv2D(1, 12, 3, stride=2, padding=1), [(2, 1, 5, 6)])],
    "MaxPool2D": [(lambda: layers.MaxPool2D(2), [(2, 3, 4, 4), (1, 2, 5, 5)]),
                  (lambda: layers.MaxPool2D(3, stride=2), [(2, 2, 7, 5)])],
    "AvgPool2D": [(lambda: layers.AvgPool2D(2), [(2, 3, 4, 4)]),
                  (lambda: layers.AvgPool2D((3, 2), stride=1), [(2, 2, 4, 5)])],
    "BatchNorm": [(lambda: layers.BatchNorm(4), [(5, 4)]),
                  (lambda: layers.BatchNorm(3), [(2, 3, 3, 4)]),
                  (lambda: _with_running_stats(layers.BatchNorm(3)).eval(), [(2, 3, 2, 2)])],
    # Merge layers take a list: their "shape" is a list of input shapes.
    "LayerNorm": [(lambda: layers.LayerNorm(5), [(3, 5), (2, 3, 5)]),
                  (lambda: layers.LayerNorm((2, 3), bias=False), [(2, 2, 3)]),
                  (lambda: layers.LayerNorm(4, elementwise_affine=False), [(3, 4)])],
    "MultiHeadAttention": [(lambda: layers.MultiHeadAttention(6, 2), [(2, 3, 6)]),
                           (lambda: layers.MultiHeadAttention(4, 1, causal=True, bias=False),
                            [(2, 4, 4)]),
                           (lambda: layers.MultiHeadAttention(4, 2, causal=True, dropout=0.3),
                            [(2, 3, 4)])],
    "LSTM": [(lambda: layers.LSTM(3, 4), [(2, 5, 3)]),
             (lambda: layers.LSTM(2, 3, return_sequences=False), [(3, 4, 2)])],
    "GRU": [(lambda: layers.GRU(3, 4), [(2, 5, 3)]),
            (lambda: layers.GRU(2, 3, return_sequences=False), [(3, 4, 2)])],
    # Integer ids: the "shape" says which ids, {"ids": shape, "high": table size}.
    "Embedding": [(lambda: layers.Embedding(7, 3), [{"ids": (3, 4), "high": 7},
                                                   {"ids": (5,), "high": 2}])],
    "PositionalEmbedding": [(lambda: layers.PositionalEmbedding(6, 3), [(2, 4, 3), (1, 6, 3)])],
    "Add": [(layers.Add, [[(4, 5), (4, 5)], [(2, 3, 4)] * 3])],
    "Multiply": [(layers.Multiply, [[(4, 5), (4, 5)], [(2, 3)] * 4])],
    "Concatenate": [(layers.Concatenate, [[(4, 2), (4, 3)], [(2, 1, 3)] * 3]),
                    (lambda: layers.Concatenate(axis=1), [[(2, 1, 3), (2, 4, 3)]])],
}


def sample(rng, shape):
    """An input of ``shape``, a list of inputs for a list of shapes, or integer ids."""
    if isinstance(shape, dict):
        return rng.integers(0, shape["high"], shape["ids"])
    if isinstance(shape, list):
        return [rng.standard_normal(s) for s in shape]
    return rng.standard_normal(shape)


def as_float32(x):
    if isinstance(x, list):
        return [v.astype(np.float32) for v in x]
    return x if x.dtype.kind in "iu" else x.astype(np.float32)


def _with_running_stats(bn):
    rng = np.random.default_rng(1)
    bn.running_mean[...] = rng.standard_normal(bn.num_features)
    bn.running_var[...] = rng.uniform(0.5, 2, bn.num_features)
    bn.weight.data[...] = rng.uniform(0.5, 2, bn.num_features)
    return bn


def exported_layers():
    return sorted(name for name in layers.__all__
                  if inspect.isclass(getattr(layers, name))
                  and issubclass(getattr(layers, name), nnlite.Layer))


def _cases():
    for name in exported_layers():
        for make, shapes in EXAMPLES.get(name, []):
            for shape in shapes:
                yield pytest.param(make, shape, id=f"{name}-{shape}")


CASES = list(_cases())


def test_every_layer_has_a_check():
    missing = [name for name in exported_layers() if name not in EXAMPLES]
    assert not missing, f"add these layers to EXAMPLES so they are gradient-checked: {missing}"


@pytest.mark.parametrize("make, shape", CASES)
def test_layer_gradients(make, shape, rng):
    x = sample(rng, shape)
    report = check_layer(make(), x)
    assert report.ok, str(report)


@pytest.mark.parametrize("make, shape", CASES)
def test_outputs_are_owned_by_the_caller(make, shape, rng):
    """y1 = f(x1); y2 = f(x2) keeps y1 intact, and forward leaves x alone."""
    layer = make()
    x1, x2 = as_float32(sample(rng, shape)), as_float32(sample(rng, shape))
    x1_before = [v.copy() for v in x1] if isinstance(x1, list) else x1.copy()
    y1 = layer(x1)
    y1_before = y1.copy()
    layer(x2)
    np.testing.assert_array_equal(y1, y1_before)
    for a, b in zip(*(([x1], [x1_before]) if not isinstance(x1, list) else (x1, x1_before))):
        np.testing.assert_array_equal(a, b)


def test_linear_computes_x_w_plus_b():
    layer = layers.Linear(2, 3, dtype=np.float64)
    layer.weight.data[...] = [[1, 4], [2, 5], [3, 6]]    # (out, in), as torch
    layer.bias.data[...] = [0.5, 0, -1]
    np.testing.assert_allclose(layer(np.array([[1.0, 1.0]])), [[5.5, 7, 8]])
    assert layer.weight.data.dtype == np.float64


def test_linear_defaults_to_float32_with_he_scale():
    layer = layers.Linear(1000, 200)
    assert layer.weight.data.dtype == np.float32 and layer.bias.data.dtype == np.float32
    limit = np.sqrt(6 / 1000)
    assert np.abs(layer.weight.data).max() <= limit
    assert abs(layer.weight.data.std() - limit / np.sqrt(3)) < 0.01 * limit
    np.testing.assert_array_equal(layer.bias.data, 0)


def test_linear_shape_error_names_layer_and_shapes():
    with pytest.raises(ValueError, match=r"Linear\(in_features=784.*784.*\(32, 780\)"):
        layers.Linear(784, 10)(np.zeros((32, 780), np.float32))


def test_sequential_shape_error_names_position():
    model = nnlite.Sequential(layers.Linear(4, 3), layers.ReLU(), layers.Linear(2, 1))
    with pytest.raises(ValueError, match=r"layer 2 \(Linear\).*\(N, 2\).*\(5, 3\)"):
        model(np.zeros((5, 4), np.float32))


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layers.ReLU().backward(np.ones((2, 2)))


@pytest.mark.parametrize("name, f", [
    ("ReLU", lambda x: np.maximum(x, 0)),
    ("Sigmoid", lambda x: 1 / (1 + np.exp(-x))),
    ("Tanh", np.tanh),
])
def test_activation_values(name, f, rng):
    x = rng.standard_normal((3, 4)) * 3
    np.testing.assert_allclose(getattr(layers, name)()(x), f(x), rtol=1e-12, atol=1e-15)


def test_gelu_is_exact_by_default_and_the_tanh_form_on_request(rng):
    from scipy.special import erf

    x = np.linspace(-6, 6, 2001)
    np.testing.assert_allclose(layers.GELU()(x), x * 0.5 * (1 + erf(x / np.sqrt(2))), rtol=1e-12)
    y32 = layers.GELU()(x.astype(np.float32))
    assert y32.dtype == np.float32
    x32 = x.astype(np.float32).astype(np.float64)
    exact = x32 * 0.5 * (1 + erf(x32 / np.sqrt(2)))
    np.testing.assert_allclose(y32, exact, rtol=2 ** -23, atol=3e-8)  # below ½ ulp of 1
    tanh_form = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(layers.GELU(approximate="tanh")(x), tanh_form, rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(layers.GELU(approximate="tanh")(x.astype(np.float32)),
                               tanh_form, rtol=2 ** -23, atol=1e-6)
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        layers.GELU("fast")


def test_float32_erf_is_within_one_ulp_over_the_whole_float32_line():
    """GELU's float32 erf against scipy's (float64, rounded): every 1009th float32 from 0
    to +inf (tiny and subnormal values, the tails, where erf rounds to 1, included) and
    every float32 below 1e-3 that is a multiple of 2⁻²⁰ of its binade."""
    from scipy.special import erf

    from nnlite.layers.activations import erf_rational

    bits = np.arange(0, 0x7F800001, 1009, dtype=np.uint32)
    x = np.concatenate([bits.view(np.float32), np.float32(1e-3) * np.float32(0.5) ** np.arange(
        0, 150, dtype=np.float32)[:, None].repeat(8, 1).ravel()])
    x = np.concatenate([x, -x])
    want = erf(x.astype(np.float64))
    got = erf_rational(x.astype(np.float64)).astype(np.float32)
    ulps = np.abs(got - want) / np.spacing(np.abs(want).astype(np.float32))
    assert ulps.max() <= 1.0, (ulps.max(), x[np.argmax(ulps)])
    assert np.all(got[np.abs(x) >= 4] == np.sign(x[np.abs(x) >= 4]))
    assert np.array_equal(got[x == 0], x[x == 0])  # erf(±0) = ±0


def test_leaky_relu_and_softmax_values():
    x = np.array([[-2.0, 0.5, 3.0]])
    np.testing.assert_allclose(layers.LeakyReLU(0.1)(x), [[-0.2, 0.5, 3.0]])
    s = layers.Softmax()(np.array([[1000.0, 1000.0, 1000.0 + np.log(2)]]))
    np.testing.assert_allclose(s, [[0.25, 0.25, 0.5]])


def test_sigmoid_does_not_overflow():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = layers.Sigmoid()(np.array([-1000.0, 0.0, 1000.0], np.float32))
    np.testing.assert_array_equal(y, [0, 0.5, 1])


def test_dropout_is_inverted_and_identity_in_eval():
    drop = layers.Dropout(0.25)
    x = np.ones((2000, 50), np.float32)
    y = drop(x)
    assert set(np.unique(y)) == {0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)


def test_random_shift_rejects_negative_shifts_and_non_images():
    with pytest.raises(ValueError, match=r"RandomShift: max_shift must be a whole number in "
                                         r"\[0, inf\), got -1"):
        layers.RandomShift(-1)
    with pytest.raises(ValueError, match=r"RandomShift\(max_shift=2\) expects images.*\(4, 5\)"):
        layers.RandomShift(2)(np.zeros((4, 5), np.float32))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match=r"Dropout.*\[0, 1\)"):
        layers.Dropout(p)


def test_parameters_register_in_assignment_order():
    class Block(nnlite.Layer):
        def __init__(self):
            super().__init__()
            self.scale = nnlite.Parameter(np.ones(3))
            self.inner = layers.Linear(3, 2)
            self.shift = nnlite.Parameter(np.zeros(2))

        def forward(self, x):
            return self.inner(x * self.scale.data) + self.shift.data

    block = Block()
    names = [name for name, _ in block.named_parameters()]
    assert names == ["scale", "shift", "inner.weight", "inner.bias"]
    assert len(block.parameters()) == 4
    model = nnlite.Sequential(block, layers.ReLU())
    assert [n for n, _ in model.named_parameters()][0] == "0.scale"


def test_parameter_takes_the_default_dtype_unless_told_and_grad_starts_at_zero():
    p = nnlite.Parameter(np.ones((2, 3)))        # float64, the NumPy way
    assert p.data.dtype == np.float32 and p.grad.dtype == np.float32
    np.testing.assert_array_equal(p.grad, 0)
    p = nnlite.Parameter(np.ones((2, 3)), dtype=np.float64)
    assert p.data.dtype == np.float64 and p.grad.dtype == np.float64


def test_backward_accumulates_and_zero_grad_resets(rng):
    layer = layers.Linear(3, 2, dtype=np.float64)
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.zero_grad()
    np.testing.assert_array_equal(layer.weight.grad, 0)


def test_train_and_eval_modes_propagate():
    model = nnlite.Sequential(layers.Linear(2, 2), nnlite.Sequential(layers.Dropout(0.5)))
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_astype_converts_the_model(rng):
    model = nnlite.Sequential(layers.Linear(3, 2), layers.Tanh())
    assert model.dtype == np.float32
    model.astype(np.float64)
    assert model.dtype == np.float64
    assert all(p.grad.dtype == np.float64 for p in model.parameters())
    assert model[0].get_config()["dtype"] == "float64"


def test_random_shift_moves_each_image_by_its_own_offset():
    x = np.zeros((40, 1, 7, 7), np.float32)
    x[:, 0, 3, 3] = 1.0                      # one bright pixel in the centre
    shift = layers.RandomShift(2)
    y = shift(x)
    where = np.nonzero(y[:, 0].reshape(40, -1))[1]
    rows, cols = where // 7, where % 7
    assert y.sum() == 40 and set(rows) <= set(range(1, 6)) and set(cols) <= set(range(1, 6))
    assert len(set(zip(rows, cols))) > 5       # offsets differ between samples
    back = shift.backward(y)                   # the adjoint undoes the shift here
    np.testing.assert_array_equal(back, x)
    shift.eval()
    np.testing.assert_array_equal(shift(x), x)


def test_random_horizontal_flip_mirrors_about_half_the_images():
    x = np.arange(200 * 3, dtype=np.float32).reshape(200, 1, 1, 3)
    flip = layers.RandomHorizontalFlip()
    y = flip(x)
    mirrored = (y[:, 0, 0, 0] == x[:, 0, 0, 2])
    assert 70 < mirrored.sum() < 130
    np.testing.assert_array_equal(y[mirrored], x[mirrored][..., ::-1])
    np.testing.assert_array_equal(y[~mirrored], x[~mirrored])
    np.testing.assert_array_equal(flip.backward(y), x)     # a permutation, undone
    np.testing.assert_array_equal(flip.eval()(x), x)
