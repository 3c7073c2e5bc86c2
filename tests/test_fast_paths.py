"""The fast paths compute what the plain formulas do, and fit makes no copy of the data.
(Timings live in benchmarks/, never here.)"""
import tracemalloc

import numpy as np

import nnlite
from nnlite import layers, losses, optim


def test_fit_matches_a_plain_training_loop(rng):
    """fit (flat Adam storage, lazily zeroed gradients, no input gradient for the first
    layer) against textbook per-array Adam over the same batches, in float64."""
    x = rng.standard_normal((96, 12))
    y = rng.integers(0, 4, 96)
    model = nnlite.Sequential(layers.Linear(12, 16), layers.ReLU(), layers.Linear(16, 4))
    model.astype(np.float64)
    plain = [p.data.copy() for p in model.parameters()]
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(model.parameters(), 1e-2),
              epochs=2, batch_size=32, seed=5, verbose=False)

    w1, b1, w2, b2 = plain
    m = [np.zeros_like(p) for p in plain]
    v = [np.zeros_like(p) for p in plain]
    t = 0
    for epoch in range(2):
        order = np.random.default_rng([5, epoch]).permutation(96)
        for start in range(0, 96, 32):
            idx = order[start:start + 32]
            xb, yb = x[idx], y[idx]
            h = xb @ w1.T + b1          # W as (out, in), as torch
            a = np.maximum(h, 0)
            z = a @ w2.T + b2
            s = np.exp(z - z.max(1, keepdims=True))
            s /= s.sum(1, keepdims=True)
            dz = (s - np.eye(4)[yb]) / 32
            da = dz @ w2
            dh = da * (h > 0)
            grads = [dh.T @ xb, dh.sum(0), dz.T @ a, dz.sum(0)]
            t += 1
            for i, (p, g) in enumerate(zip((w1, b1, w2, b2), grads)):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                p -= 1e-2 * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
    for p, expected in zip(model.parameters(), (w1, b1, w2, b2)):
        np.testing.assert_allclose(p.data, expected, rtol=1e-9, atol=1e-12)


def test_add_matmul_writes_or_accumulates(rng):
    p = nnlite.Parameter(np.zeros((3, 2)))
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    p.grad[...] = 1.0
    p.add_matmul(a, b)
    np.testing.assert_allclose(p.grad, 1.0 + a @ b)
    p.zero_grad()
    p.add_matmul(a, b)             # straight into the gradient: no stale ones survive
    np.testing.assert_allclose(p.grad, a @ b)
    p.zero_grad()
    np.testing.assert_array_equal(p.grad, 0)  # a read after zero_grad sees zeros


def test_optimizer_step_after_zero_grad_sees_zeros_for_unused_parameters():
    used, unused = nnlite.Parameter(np.ones(2)), nnlite.Parameter(np.ones(2))
    opt = optim.SGD([used, unused], lr=0.5)
    unused.grad[...] = 3.0
    opt.zero_grad()
    used.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(used.data, 0.5)
    np.testing.assert_array_equal(unused.data, 1.0)


def test_fit_makes_no_copy_of_a_float32_training_set(rng):
    x = rng.random((20000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 20000)
    model = nnlite.Sequential(layers.Linear(784, 64), layers.ReLU(), layers.Linear(64, 10))
    opt = optim.Adam(model.parameters())
    tracemalloc.start()
    try:
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=1, batch_size=128,
                  verbose=False, validation_data=(x[:1000], y[:1000]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.10 * x.nbytes, f"fit allocated {peak / 2**20:.1f} MiB at its peak"


def test_relu_reused_zeros_follow_shape_and_dtype(rng):
    relu = layers.ReLU()
    for shape, dtype in [((4, 3), np.float32), ((2, 3), np.float32), ((4, 3), np.float64),
                         ((5,), np.float64)]:
        x = rng.standard_normal(shape).astype(dtype)
        y = relu(x)
        assert y.dtype == dtype and y.shape == shape
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        y[...] = -1  # the caller owns y; the layer's zeros must stay zeros
        np.testing.assert_array_equal(relu(x), np.maximum(x, 0))


def test_relu_zeros_follow_the_memory_layout_of_its_input(rng):
    """A conv layer hands on an NCHW view of NHWC memory: ReLU's zeros take that layout,
    so its maximum walks both arrays in one order, and the numbers stay the plain ones."""
    relu = layers.ReLU()
    nhwc = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    for x in (nhwc.transpose(0, 3, 1, 2), np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))):
        y = relu(x)
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        zeros = relu._filled(x.shape, x.dtype, 0, like=x)
        assert zeros.strides == x.strides
    assert nnlite.core.layer.memory_order(nhwc.transpose(0, 3, 1, 2)) == (0, 2, 3, 1)


def test_optimizer_steps_make_no_parameter_sized_temporaries(rng):
    """After the first step (which creates the state), a step works in place: with 1 MiB of
    parameters it allocates well under one parameter-sized array."""
    configs = [(optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
               (optim.Adam, {"weight_decay": 0.01}), (optim.AdamW, {}),
               (optim.RMSprop, {"momentum": 0.9, "weight_decay": 0.01})]
    for cls, hp in configs:
        params = [nnlite.Parameter(rng.standard_normal(1 << 18).astype(np.float32))]
        opt = cls(params, **hp)
        params[0].grad[...] = 1
        opt.step()
        tracemalloc.start()
        try:
            opt.step()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < params[0].data.nbytes // 4, f"{cls.__name__}.step allocated {peak} bytes"
