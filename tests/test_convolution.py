"""Convolution, pooling and batch norm against definitions computed by hand and by loops."""
import numpy as np
import pytest

import nnlite
from nnlite import layers, losses, optim
from nnlite.layers import Conv2D

from conftest import require

#: These oracles run on both kernel paths: the compiled kernels (the numba extra) and NumPy.
pytestmark = pytest.mark.usefixtures("kernel_path")


def naive_conv(x, w, b, stride, padding):
    """torch.nn.functional.conv2d written as its definition, with loops."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, o, ho, wo))
    for p in range(ho):
        for q in range(wo):
            patch = xp[:, :, p * stride:p * stride + kh, q * stride:q * stride + kw]
            y[:, :, p, q] = np.einsum("ncij,ocij->no", patch, w) + b
    return y


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 0), (2, 2), (3, 1)])
def test_conv2d_matches_its_definition(rng, stride, padding):
    conv = layers.Conv2D(3, 4, 3, stride=stride, padding=padding, dtype=np.float64)
    conv.bias.data[...] = rng.standard_normal(4)
    x = rng.standard_normal((2, 3, 7, 8))
    expected = naive_conv(x, conv.weight.data, conv.bias.data, stride, padding)
    np.testing.assert_allclose(conv(x), expected, rtol=1e-12, atol=1e-12)


def test_conv2d_builds_its_rows_for_the_threads_blas_runs_on():
    """Where BLAS's threads share one product, the batch's rows go in one (up to
    _SHARED_BYTES); where BLAS runs on one thread (fit(threads=n)'s parts, MPI ranks), a
    core's cache at a time."""
    from threadpoolctl import threadpool_limits

    from nnlite.layers import convolution

    with threadpool_limits(limits=1, user_api="blas"):
        assert convolution._chunk_bytes() == convolution._CHUNK_BYTES
    with threadpool_limits(limits=2, user_api="blas"):
        assert convolution._chunk_bytes() == convolution._SHARED_BYTES


@pytest.mark.parametrize("stride, padding, bias", [(1, 1, True), (2, 0, False), (1, 0, True)])
def test_conv2d_in_chunks_of_images_matches_the_definition(rng, monkeypatch, stride, padding,
                                                             bias):
    """Rows are built a few images at a time, and backward reuses forward's last chunk: with
    chunks of 2 images (the last one holding 1), y, dL/dW, dL/db and dL/dx are those of the
    whole batch at once, and y is the definition's."""
    from nnlite.layers import convolution

    conv = layers.Conv2D(3, 4, 3, stride=stride, padding=padding, bias=bias, dtype=np.float64)
    if bias:
        conv.bias.data[...] = rng.standard_normal(4)
    x = rng.standard_normal((5, 3, 7, 8))

    def run():
        conv.zero_grad()
        y = conv(x)
        g = rng.standard_normal(y.shape)
        dx = conv.backward(g)
        return [y, dx] + [p.grad.copy() for p in conv.parameters()]

    state = rng.bit_generator.state
    whole = run()
    ho, wo = whole[0].shape[2:]
    image_bytes = ho * wo * (3 * 3 * 3 + 1) * 8       # one image's rows of windows, float64
    for budget in ("_CHUNK_BYTES", "_SHARED_BYTES"):  # (BLAS on one thread, or several)
        monkeypatch.setattr(convolution, budget, 2 * image_bytes)
    assert conv._images_per_chunk(ho, wo) == 2
    rng.bit_generator.state = state
    for a, b in zip(run(), whole):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    expected = naive_conv(x, conv.weight.data, conv.bias.data if bias else 0, stride, padding)
    np.testing.assert_allclose(whole[0], expected, rtol=1e-12, atol=1e-12)


def test_conv2d_with_rows_no_wider_than_its_output_builds_them_once(rng, monkeypatch):
    """A first convolution (1 channel in, 3×3, 16 out: rows of 10 for outputs of 16) builds
    its rows for the whole batch however small the chunks, and backward, reusing them, builds
    none; the results are the definition's."""
    from nnlite.layers import convolution

    monkeypatch.setattr(convolution, "_CHUNK_BYTES", 1)
    conv = layers.Conv2D(1, 16, 3, padding=1, dtype=np.float64)
    conv.bias.data[...] = rng.standard_normal(16)
    x = rng.standard_normal((5, 1, 6, 7))
    assert conv._images_per_chunk(6, 7) >= len(x)
    y = conv(x)
    np.testing.assert_allclose(y, naive_conv(x, conv.weight.data, conv.bias.data, 1, 1),
                               rtol=1e-12, atol=1e-12)
    kept, used, im2col = conv._last[1], [], conv._im2col

    def spy(*args, **kwargs):
        for start, stop, rows in im2col(*args, **kwargs):
            used.append(rows)
            yield start, stop, rows
    monkeypatch.setattr(conv, "_im2col", spy)
    conv.backward(rng.standard_normal(y.shape))
    assert len(used) == 1 and used[0] is kept and conv.weight.grad.any()


def test_conv2d_by_hand():
    conv = layers.Conv2D(1, 1, 2, dtype=np.float64)
    conv.weight.data[...] = [[[[1, 2], [3, 4]]]]
    conv.bias.data[...] = 0.5
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    # top-left window [[0, 1], [3, 4]] · [[1, 2], [3, 4]] = 0 + 2 + 9 + 16
    np.testing.assert_array_equal(conv(x), [[[[27.5, 37.5], [57.5, 67.5]]]])


def test_conv2d_input_layout_does_not_matter(rng):
    conv = layers.Conv2D(3, 2, 3, padding=1)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    nhwc_backed = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(conv(x), conv(nhwc_backed))
    assert conv(x).shape == (2, 2, 5, 5)


def test_conv2d_shape_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"Conv2D\(in_channels=3.*\(N, 3, H, W\).*\(2, 1, 5, 5\)"):
        layers.Conv2D(3, 2, 3)(np.zeros((2, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match="smaller than the kernel 5x5"):
        layers.Conv2D(1, 2, 5)(np.zeros((2, 1, 3, 3), np.float32))


def test_max_pool_by_hand_and_ties_go_to_the_first_maximum():
    x = np.array([[[[1.0, 5, 2, 2], [3, 4, 2, 2], [0, 0, 9, 1], [0, 7, 1, 1]]]])
    pool = layers.MaxPool2D(2)
    np.testing.assert_array_equal(pool(x), [[[[5, 2], [7, 9]]]])
    dx = pool.backward(np.array([[[[10.0, 20], [30, 40]]]]))
    np.testing.assert_array_equal(dx, [[[[0, 10, 20, 0], [0, 0, 0, 0],
                                         [0, 0, 40, 0], [0, 30, 0, 0]]]])


@pytest.mark.parametrize("kernel, stride", [(1, 1), (2, 2), (3, 3), (3, 2), ((2, 3), (1, 2))])
def test_max_pool_matches_its_definition_with_many_ties(rng, kernel, stride):
    """Values from {0, 1, 2} (as after a ReLU) tie in most windows: the gradient goes to the
    first maximum in row-major order, as torch.nn.MaxPool2d sends it."""
    x = rng.integers(0, 3, (2, 3, 7, 8)).astype(np.float32).transpose(0, 1, 3, 2)
    pool = layers.MaxPool2D(kernel, stride)
    y = pool(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    (kh, kw), (sh, sw) = pool.kernel_size, pool.stride
    expected, dx = np.zeros(y.shape, np.float32), np.zeros(x.shape, np.float32)
    for n, c, p, q in np.ndindex(*y.shape):
        window = x[n, c, sh * p:sh * p + kh, sw * q:sw * q + kw]
        i, j = np.unravel_index(np.argmax(window), window.shape)   # the first maximum
        expected[n, c, p, q] = window[i, j]
        dx[n, c, sh * p + i, sw * q + j] += g[n, c, p, q]
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(pool.backward(g), dx)


def test_avg_pool_by_hand():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    pool = layers.AvgPool2D(2)
    np.testing.assert_array_equal(pool(x), [[[[2.5, 4.5], [10.5, 12.5]]]])
    np.testing.assert_array_equal(pool.backward(np.ones((1, 1, 2, 2))), np.full(x.shape, 0.25))


def test_overlapping_max_pool_matches_loops(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    y = layers.MaxPool2D(3, stride=2)(x)
    expected = np.array([[[[x[n, c, 2 * p:2 * p + 3, 2 * q:2 * q + 3].max() for q in range(2)]
                           for p in range(3)] for c in range(3)] for n in range(2)])
    np.testing.assert_array_equal(y, expected)


def test_batch_norm_training_and_running_statistics(rng):
    bn = layers.BatchNorm(3, momentum=0.1, dtype=np.float64)
    bn.weight.data[...] = [1.0, 2.0, 0.5]
    bn.bias.data[...] = [0.0, -1.0, 3.0]
    xs = [rng.standard_normal((4, 3, 2, 5)) * 3 + 1 for _ in range(2)]
    mean, var = np.zeros(3), np.ones(3)
    for x in xs:
        y = bn(x)
        mu, sigma2 = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        shape = (1, 3, 1, 1)
        expected = (x - mu.reshape(shape)) / np.sqrt(sigma2.reshape(shape) + 1e-5)
        expected = expected * bn.weight.data.reshape(shape) + bn.bias.data.reshape(shape)
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
        m = x.size // 3
        mean = 0.9 * mean + 0.1 * mu
        var = 0.9 * var + 0.1 * sigma2 * m / (m - 1)  # unbiased for the running variance
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, var, rtol=1e-12)
    bn.eval()
    x = rng.standard_normal((2, 3, 2, 2))
    expected = (x - mean.reshape(1, 3, 1, 1)) / np.sqrt(var.reshape(1, 3, 1, 1) + 1e-5)
    expected = expected * bn.weight.data.reshape(1, 3, 1, 1) + bn.bias.data.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(bn(x), expected, rtol=1e-10)


def test_batch_norm_needs_two_values_per_channel():
    with pytest.raises(ValueError, match="more than one value per channel"):
        layers.BatchNorm(3)(np.ones((1, 3), np.float32))


def cnn():
    return nnlite.Sequential(
        layers.Conv2D(1, 8, 3, padding=1), layers.BatchNorm(8), layers.ReLU(),
        layers.MaxPool2D(2), layers.Conv2D(8, 8, 3, padding=1), layers.ReLU(),
        layers.AvgPool2D(2), layers.Flatten(), layers.Dropout(0.1), layers.Linear(8 * 2 * 2, 10))


def test_a_small_cnn_learns_digits_and_round_trips(tmp_path):
    (x, y), (xt, yt) = nnlite.datasets.load_digits()
    x = x[:, None].astype(np.float32) / 16
    xt = xt[:, None].astype(np.float32) / 16
    model = cnn()
    text = model.summary(input_shape=(1, 8, 8))
    assert "(None, 8, 8, 8)" in text and "(None, 8, 4, 4)" in text and "(None, 32)" in text
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(model.parameters(), 3e-3),
              epochs=15, seed=0, verbose=False)
    assert model.evaluate(xt, yt)["accuracy"] > 0.9
    model.save(tmp_path / "cnn.npz")
    loaded = nnlite.load(tmp_path / "cnn.npz")
    np.testing.assert_array_equal(loaded[1].running_var, model[1].running_var)
    assert not np.allclose(loaded[1].running_var, 1)
    np.testing.assert_array_equal(loaded.predict(xt), model.predict(xt))


def test_batch_norm_statistics_roll_back_on_divergence(rng):
    x = rng.standard_normal((64, 4)).astype(np.float32)
    model = nnlite.Sequential(layers.BatchNorm(4), layers.Linear(4, 1))
    before = model[0].running_mean.copy()

    class Sabotage(nnlite.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model[1].weight.data[0, 0] = np.nan

    with pytest.raises(FloatingPointError):
        model.fit(x, x[:, :1], loss=losses.MSE(), optimizer=optim.SGD(model.parameters(), 0.1),
                  batch_size=16, callbacks=[Sabotage()], verbose=False)
    np.testing.assert_array_equal(model[0].running_mean, before)


def _in_listed_order(model, x, g):
    """Output, input gradient and parameter gradients of running the layers as listed."""
    h = x
    for layer in model.layers:
        h = layer.forward(h)
    model.zero_grad()
    d = g
    for layer in reversed(model.layers):
        d = layer.backward(d)
    return h, d, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("ties", [False, True])
def test_a_relu_before_a_tiling_max_pool_runs_after_it_with_the_same_numbers(rng, ties):
    def build():
        nnlite.set_seed(0)
        return nnlite.Sequential(layers.Conv2D(2, 4, 3, padding=1), layers.ReLU(),
                                 layers.MaxPool2D(2), layers.Conv2D(4, 4, 3, padding=1),
                                 layers.ReLU(), layers.MaxPool2D(2), layers.Flatten(),
                                 layers.Linear(16, 3))
    model, listed = build(), build()
    assert model._order == [0, 2, 1, 3, 5, 4, 6, 7]
    x = rng.standard_normal((8, 2, 8, 8)).astype(np.float32)
    if ties:
        x = np.round(x)  # windows whose maximum is 0 or negative, and -0.0
    g = rng.standard_normal((8, 3)).astype(np.float32)
    y = model.forward(x)
    model.zero_grad()
    dx = model.backward(g)
    want = _in_listed_order(listed, x, g)
    assert y.tobytes() == want[0].tobytes() and dx.tobytes() == want[1].tobytes()
    assert all(p.grad.tobytes() == q.tobytes() for p, q in zip(model.parameters(), want[2]))


def test_where_pool_windows_leave_a_remainder_only_zero_signs_may_differ(rng):
    model = nnlite.Sequential(layers.ReLU(), layers.MaxPool2D(2))
    x = np.round(rng.standard_normal((4, 2, 9, 7))).astype(np.float32)
    g = rng.standard_normal((4, 2, 4, 3)).astype(np.float32)
    y, dx = model.forward(x), model.backward(g)
    want_y, want_dx, _ = _in_listed_order(model, x, g)
    assert y.tobytes() == want_y.tobytes()
    assert np.array_equal(dx, want_dx)  # -0.0 == 0.0: the same values
    differ = np.signbit(dx) != np.signbit(want_dx)
    assert not dx[differ].any() and not want_dx[differ].any()  # only zeros' signs


def test_the_relu_and_pool_run_in_order_where_they_do_not_commute_exactly():
    relu, pool = layers.ReLU(), layers.MaxPool2D(2)
    assert nnlite.Sequential(layers.ReLU(), layers.MaxPool2D(3, 2))._order == [0, 1]  # overlap
    assert nnlite.Sequential(layers.ReLU(), layers.AvgPool2D(2))._order == [0, 1]
    shared = nnlite.Sequential(relu, pool)
    assert shared._order == [1, 0]
    shared.append(layers.Flatten()).append(relu)  # the ReLU now runs at two positions
    assert shared._order == [0, 1, 2, 3] and not shared._swapped


@pytest.mark.parametrize("kernel, padding", [(3, "same"), (4, "same"), ((2, 5), "same"),
                                             (3, "valid"), (2, (1, 0))])
def test_padding_same_and_valid_are_pytorchs(rng, kernel, padding):
    torch = require("torch")
    mine = Conv2D(2, 3, kernel, padding=padding, dtype=np.float64, init="torch")
    theirs = torch.nn.Conv2d(2, 3, kernel, padding=padding).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(mine.weight.data))
        theirs.bias.copy_(torch.from_numpy(mine.bias.data))
    x = rng.standard_normal((2, 2, 7, 6))
    xt = torch.from_numpy(x).requires_grad_()
    out = theirs(xt)
    np.testing.assert_allclose(mine(x), out.detach().numpy(), atol=1e-10)
    g = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(g))
    np.testing.assert_allclose(mine.backward(g), xt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(mine.weight.grad, theirs.weight.grad.numpy(), atol=1e-10)
    if padding == "same":
        assert mine(x).shape[2:] == x.shape[2:]
    assert nnlite.check.check_layer(Conv2D(2, 3, kernel, padding=padding), x)


def test_padding_same_refuses_a_stride_and_unknown_words_and_round_trips(tmp_path, rng):
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        Conv2D(1, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be 'same', 'valid' or whole numbers"):
        Conv2D(1, 2, 3, padding="full")
    model = nnlite.Sequential(Conv2D(1, 2, 4, padding="same", init="torch"))
    x = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    model.predict(x)
    model.save(tmp_path / "m.npz")
    loaded = nnlite.load(tmp_path / "m.npz")
    assert loaded[0].padding == "same" and loaded[0].init == "torch"
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
