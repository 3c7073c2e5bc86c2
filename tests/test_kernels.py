"""The compiled kernels (the numba extra) equal their NumPy references, bit for bit, on
random inputs with odd shapes, strides, padding, ties, NaN, non-contiguous views and
float64; and the dispatch runs the NumPy path whenever the compiled one cannot run."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import nnlite
from nnlite import kernels
from nnlite.layers import activations
from nnlite.layers.activations import gelu, relu_vjp
from nnlite.layers.convolution import add_windows
from nnlite.layers.normalisation import layer_norm, layer_norm_vjp
from nnlite.layers.pooling import max_pool_2d, max_pool_2d_adjoint, max_pool_2d_tangent
from nnlite.optim import adam_update, rmsprop_update, sgd_update

from conftest import require


@pytest.fixture
def compiled():
    """The compiled kernels, on (CI installs numba; elsewhere these tests need it)."""
    require("numba")
    before = kernels._wanted
    kernels.use("numba")
    assert kernels.active() == "numba"
    yield kernels._module()
    kernels.use(before)


def same(a, b):
    """Equal bit for bit: values, signs of zeros and NaN, shape and dtype."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and \
        np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def test_every_replaceable_reference_has_a_compiled_twin_tested_here(compiled):
    tested = {"max_pool_2d", "max_pool_2d_adjoint", "max_pool_2d_tangent", "add_windows",
              "relu_vjp", "adam_update", "sgd_update", "rmsprop_update", "gelu",
              "layer_norm", "layer_norm_vjp"}
    assert set(kernels.REFERENCES) == tested
    assert all(callable(getattr(compiled, name)) for name in tested)


POOLS = [((2, 2), (2, 2)), ((3, 3), (3, 3)), ((3, 2), (3, 2)), ((2, 3), (2, 3)),
         ((3, 3), (2, 2)), ((2, 2), (3, 3)), ((2, 3), (1, 2)), ((1, 1), (1, 1))]


@pytest.mark.parametrize("kernel, stride", POOLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_equals_numpy(compiled, rng, kernel, stride, dtype):
    for shape in [(3, 8, 8, 4), (2, 9, 7, 5), (2, 10, 11, 1)]:
        for case in ("random", "ties", "nan", "view"):
            x = rng.standard_normal(shape).astype(dtype)
            if case == "ties":
                x = np.round(x)  # many equal maxima, and -0.0 beside 0.0
            if case == "nan":
                x[0, 1, 1, 0] = np.nan
            if case == "view":  # an NHWC view that is not contiguous
                x = np.pad(x, ((0, 0), (1, 1), (2, 0), (0, 0)))[:, 1:-1, 2:]
            got, want = max_pool_2d(x, kernel, stride), max_pool_2d.reference(x, kernel, stride)
            assert same(got[0], want[0]), (shape, case)
            g = rng.standard_normal(want[0].shape).astype(dtype)
            g[0, 0, 0, 0] = -g[0, 0, 0, 0] if g[0, 0, 0, 0] < 0 else -1.0  # a negative g·0
            if case == "view":
                g = np.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0)))[:, 1:-1, 1:-1]
            dx = max_pool_2d_adjoint(g, *got[1:], x.shape, kernel, stride)
            assert same(dx, max_pool_2d_adjoint.reference(g, *want[1:], x.shape, kernel,
                                                            stride)), (shape, case)
            # the state of either path feeds the other's adjoint alike
            assert same(dx, max_pool_2d_adjoint.reference(g, *got[1:], x.shape, kernel,
                                                            stride)), (shape, case)
            v = rng.standard_normal(x.shape).astype(dtype)
            if case == "view":
                v = np.pad(v, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, 1:]
            jv = max_pool_2d_tangent(v, *got[1:], kernel, stride)
            assert same(jv, max_pool_2d_tangent.reference(v, *want[1:], kernel, stride))
            assert same(jv, max_pool_2d_tangent.reference(v, *got[1:], kernel, stride))


@pytest.mark.parametrize("n, ho, wo, kh, kw, c, stride",
                         [(3, 5, 6, 3, 3, 4, (1, 1)), (2, 4, 3, 2, 3, 5, (2, 1)),
                          (2, 3, 3, 3, 3, 1, (2, 2)), (1, 1, 1, 1, 1, 1, (1, 1))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_col2im_equals_numpy(compiled, rng, n, ho, wo, kh, kw, c, stride, dtype):
    hp, wp = stride[0] * (ho - 1) + kh + 1, stride[1] * (wo - 1) + kw  # one row to spare
    rows = rng.standard_normal((n, ho, wo, kh, kw, c)).astype(dtype)
    start = rng.standard_normal((n, hp, wp, c)).astype(dtype)
    got, want = start.copy(), start.copy()
    add_windows(got, rows, stride)
    add_windows.reference(want, rows, stride)
    assert same(got, want)
    wide = rng.standard_normal((n, hp, wp + 2, c)).astype(dtype)  # through a view
    got, want = wide.copy(), wide.copy()
    add_windows(got[:, :, 1:-1], rows, stride)
    add_windows.reference(want[:, :, 1:-1], rows, stride)
    assert same(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_vjp_equals_numpy_in_every_layout(compiled, rng, dtype):
    nhwc = rng.standard_normal((4, 5, 6, 3)).astype(dtype)
    x = nhwc.transpose(0, 3, 1, 2)                         # NCHW view of NHWC memory
    x[0, 0, 0, 0] = np.nan
    for g in (rng.standard_normal((4, 5, 6, 3)).astype(dtype).transpose(0, 3, 1, 2),
              rng.standard_normal((4, 3, 5, 6)).astype(dtype),       # another layout
              -np.abs(rng.standard_normal((4, 5, 6, 3))).astype(dtype).transpose(0, 3, 1, 2)):
        got, want = relu_vjp(g, x), relu_vjp.reference(g, x)
        assert same(got, want) and got.strides == want.strides
    cropped = rng.standard_normal((4, 7, 8, 3)).astype(dtype)[:, 1:6, 1:7].transpose(0, 3, 1, 2)
    cases = [(cropped, x), (cropped[:, :, ::-1], x)]  # conv's dL/dx: padding cropped; reversed
    for shape in [(7,), (4, 8), (2, 5, 3), (2, 3, 2, 2)]:  # 1 to 4 dimensions, views
        v = rng.standard_normal(shape).astype(dtype)
        wide = rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)
        cases += [(v, v), (wide[..., ::2], wide[..., 1::2]), (v, v.T.copy().T), (v.T, -v.T)]
    for g, x in cases:  # all on the compiled path, none left to the reference
        got, want = compiled.relu_vjp(g, x), relu_vjp.reference(g, x)
        assert same(got, want) and got.strides == want.strides
    five = rng.standard_normal((2, 3, 2, 2, 2)).astype(dtype)
    assert compiled.relu_vjp(five, five) is NotImplemented


@pytest.mark.parametrize("tanh", [False, True])
def test_gelu_equals_numpy(compiled, rng, tanh):
    x = (rng.standard_normal((7, 64, 129)) * 4).astype(np.float32)
    x.flat[:9] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-30, 40.0, -40.0]
    with np.errstate(invalid="ignore"):  # ±inf·0
        got, want = compiled.gelu(x, tanh), gelu.reference(x, tanh)
        assert same(got[0], want[0]) and same(got[1], want[1])           # y and the slope
        assert all(map(same, gelu(x[1:], tanh), gelu.reference(x[1:], tanh)))  # dispatched
    assert compiled.gelu(x[:, ::2], tanh) is NotImplemented          # a view: the reference
    assert compiled.gelu(x.astype(np.float64), tanh) is NotImplemented
    from nnlite.kernels import rows  # the twins' own copy of the coefficients
    assert (rows.ERF_P, rows.ERF_Q) == (activations.ERF_P, activations.ERF_Q)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_equals_numpy_to_rounding(compiled, rng, dtype, rtol, bias):
    """Not bit for bit: the twin sums each row in float64, NumPy pairwise in the dtype."""
    x = (rng.standard_normal((77, 129)) * 3 + 5).astype(dtype)
    w, b = (rng.standard_normal(129).astype(dtype) for _ in range(2))
    g = rng.standard_normal(x.shape).astype(dtype)
    got = compiled.layer_norm(x, w, b if bias else None, 1e-5)
    want = layer_norm.reference(x, w, b if bias else None, 1e-5)
    for params in (True, False):
        got += compiled.layer_norm_vjp(g, want[1], want[2], w, params)
        want += layer_norm_vjp.reference(g, want[1], want[2], w, params)
    for a, c in zip(got, want):
        if c is None:
            assert a is None
        else:
            assert a.dtype == c.dtype and a.shape == c.shape
            np.testing.assert_allclose(a, c, rtol=rtol, atol=rtol * np.abs(c).max())
    assert compiled.layer_norm(x, None, None, 1e-5) is NotImplemented  # no γ: the reference
    assert compiled.layer_norm(x[:, ::2], w[::2], None, 1e-5) is NotImplemented


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 1000, (1 << 18) + 5])
def test_adam_update_equals_numpy(compiled, rng, dtype, size):
    arrays = [rng.standard_normal(size).astype(dtype) for _ in range(2)] + \
        [np.abs(rng.standard_normal(size)).astype(dtype) * s for s in (0.1, 0.01)]
    scalars = (0.9, 0.999, 0.0031622776601683794, 1e-8 * 0.0316)
    got, want = [a.copy() for a in arrays], [a.copy() for a in arrays]
    for _ in range(3):
        adam_update(got[0], got[1], got[2], got[3], np.empty_like(got[0]), *scalars)
        adam_update.reference(want[0], want[1], want[2], want[3], np.empty_like(want[0]),
                              *scalars)
    assert all(same(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_and_rmsprop_updates_equal_numpy(compiled, rng, dtype, momentum, nesterov):
    size = 1001
    def arrays():
        return [rng.standard_normal(size).astype(dtype) for _ in range(3)] + \
            [np.abs(rng.standard_normal(size)).astype(dtype)]
    start = arrays()
    for steps in range(1, 4):
        got, want = [a.copy() for a in start], [a.copy() for a in start]
        for fn, a in ((sgd_update, got), (sgd_update.reference, want)):
            for step in range(1, steps + 1):
                fn(a[0], a[1], a[2] if momentum else None, np.empty_like(a[0]), 0.03,
                   momentum, nesterov, step == 1)
        assert all(same(x, y) for x, y in zip(got, want))
        got, want = [a.copy() for a in start], [a.copy() for a in start]
        for fn, a in ((rmsprop_update, got), (rmsprop_update.reference, want)):
            for _ in range(steps):
                fn(a[0], a[1], a[3], a[2] if momentum else None, np.empty_like(a[0]), 0.01,
                   0.99, 1e-8, momentum)
        assert all(same(x, y) for x, y in zip(got, want))


def test_training_is_identical_on_both_paths(rng):
    require("numba")
    x = rng.random((96, 1, 8, 8), np.float32)
    y = rng.integers(0, 3, 96)
    results = []
    for path in ("numba", "numpy"):
        kernels.use(path)
        try:
            nnlite.set_seed(0)
            L = nnlite.layers
            model = nnlite.Sequential(L.Conv2D(1, 4, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
                                      L.Flatten(), L.Linear(64, 3))
            model.fit(x, y, loss=nnlite.losses.CrossEntropy(), epochs=2, batch_size=32,
                      optimizer=nnlite.optim.Adam(model.parameters()), verbose=False, seed=0)
            results.append([p.data.copy() for p in model.parameters()])
        finally:
            kernels.use("numba")
    assert all(same(a, b) for a, b in zip(*results))


def test_the_path_can_be_chosen_and_is_reported(compiled):
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    kernels.use("numpy")
    assert kernels.active() == "numpy" and "numpy" in kernels.describe()
    kernels.use("numba")
    assert kernels.active() == "numba" and kernels.describe().startswith("kernels: numba")
    assert same(max_pool_2d(x, (2, 2), (2, 2))[0],
                np.array([[[[5.], [7.]], [[13.], [15.]]]], np.float32))
    with pytest.raises(ValueError, match="'numba' or 'numpy'"):
        kernels.use("cuda")


def test_without_turns_kernels_off_in_its_block_only(compiled, monkeypatch, rng):
    calls = []
    monkeypatch.setattr(compiled, "relu_vjp", lambda g, x: calls.append("twin") or g)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    with kernels.without("relu_vjp", "gelu"):
        assert same(relu_vjp(g, g), relu_vjp.reference(g, g)) and calls == []
    relu_vjp(g, g)
    assert calls == ["twin"]
    with pytest.raises(ValueError, match="no kernel named \\['relu'\\]"):
        with kernels.without("relu"):
            pass


def test_the_environment_selects_numpy():
    require("numba")
    code = "import nnlite; print(nnlite.kernels.active())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "NNLITE_KERNELS": "numpy"},
                         check=True)
    assert out.stdout.strip() == "numpy"


def test_a_misspelt_environment_is_an_error_not_a_silent_choice():
    """(The kernels load with the first layer: ``import nnlite`` alone loads nothing.)"""
    out = subprocess.run([sys.executable, "-c", "import nnlite; nnlite.layers.ReLU()"],
                         capture_output=True,
                         text=True, env={**__import__("os").environ, "NNLITE_KERNELS": "nump"})
    assert out.returncode != 0
    assert "NNLITE_KERNELS='nump'; it must be 'numba' or 'numpy'" in out.stderr


def test_a_kernel_that_fails_to_compile_falls_back_once_with_a_warning(compiled, monkeypatch):
    numba = require("numba")

    def broken(*args):
        raise numba.core.errors.TypingError("no")

    monkeypatch.setattr(compiled, "relu_vjp", broken)
    monkeypatch.setattr(kernels, "_broken", set())
    g = np.ones((2, 3), np.float32)
    with pytest.warns(RuntimeWarning, match="relu_vjp did not compile"):
        assert same(relu_vjp(g, g), g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert same(relu_vjp(g, -g), g * 0)   # the reference, without a second warning


def test_a_read_only_install_compiles_in_memory(compiled, monkeypatch):
    numba = require("numba")
    real = numba.njit

    def njit(*args, **kwargs):
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)
    f = compiled._jit(lambda a: a + 1)  # nnlite.kernels.jit.jit
    assert f(1) == 2


def test_without_numba_the_numpy_code_runs_untouched():
    code = """
import sys
sys.modules["numba"] = None  # as if it were not installed
import numpy as np, nnlite
from nnlite.optim import adam_update, rmsprop_update, sgd_update
from nnlite.layers.pooling import max_pool_2d
assert adam_update is nnlite.kernels.REFERENCES["adam_update"]
assert max_pool_2d is nnlite.kernels.REFERENCES["max_pool_2d"]
print(nnlite.kernels.describe())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "numba is not installed" in out.stdout
