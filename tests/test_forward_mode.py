"""Forward mode: every layer's jvp against torch.func.jvp, graphs with fan-out and merges,
the Jacobian built both ways, the adjoint test catching planted mistakes, and Lipschitz
constants against the SVD of the full Jacobian."""
import numpy as np
import pytest

import nnlite
from nnlite import Input, Model, Sequential, check
from nnlite import layers as L
from nnlite.check import check_layer, jacobian

from conftest import require

F64 = np.float64


def _torch_twin(torch, ours, theirs, suffix=""):
    """``theirs`` (a torch module) with ``ours``'s weights, in float64."""
    theirs = theirs.double()
    theirs.load_state_dict({k + ("_l0" if suffix and k.endswith(("_ih", "_hh")) else ""):
                            torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    return theirs


def _against_torch(torch, layer, f, xs, vs):
    """nnlite's (y, J·v) against torch.func.jvp of ``f`` at the same inputs, in float64."""
    multi = isinstance(xs, list)
    y, jv = check.jvp(layer, xs, vs, training=layer.training)  # the mode the case set
    txs = tuple(torch.from_numpy(x) for x in (xs if multi else [xs]))
    tvs = tuple(torch.zeros_like(t) if v is None else torch.from_numpy(v)
                for t, v in zip(txs, vs if multi else [vs]))
    ty, tjv = torch.func.jvp(f, txs, tvs)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(jv, tjv.detach().numpy(), rtol=1e-9, atol=1e-12)


def _single_cases(torch):
    """(name, nnlite layer, torch function, input shape): one per configuration."""
    nn, fn = torch.nn, torch.nn.functional
    cases = []
    for shape in ((3, 5), (2, 3, 5)):
        ours = L.Linear(5, 4, dtype=F64)
        cases.append((f"Linear{shape}", ours, _torch_twin(torch, ours, nn.Linear(5, 4)), shape))
    cases += [("Flatten", L.Flatten(), nn.Flatten(), (2, 3, 4)),
              ("Reshape", L.Reshape((4, 3)), nn.Unflatten(1, (4, 3)), (2, 12)),
              ("ReLU", L.ReLU(), nn.ReLU(), (3, 5)),
              ("LeakyReLU", L.LeakyReLU(0.2), nn.LeakyReLU(0.2), (3, 5)),
              ("Sigmoid", L.Sigmoid(), nn.Sigmoid(), (3, 5)),
              ("Tanh", L.Tanh(), nn.Tanh(), (3, 5)),
              ("GELU", L.GELU(), nn.GELU(), (3, 5)),
              ("GELU tanh", L.GELU("tanh"), nn.GELU(approximate="tanh"), (3, 5)),
              ("Softmax", L.Softmax(axis=1), nn.Softmax(dim=1), (3, 5, 2))]
    for c_in, c_out, k, s, p, bias in ((3, 4, 3, 1, 1, True), (2, 3, (3, 2), 2, (0, 1), True),
                                       (2, 2, 1, 1, 0, False), (1, 12, 3, 2, 1, True)):
        ours = L.Conv2D(c_in, c_out, k, s, p, bias=bias, dtype=F64)
        theirs = nn.Conv2d(c_in, c_out, k, s, p, bias=bias)
        cases.append((f"Conv2D k{k} s{s} p{p}", ours, _torch_twin(torch, ours, theirs),
                      (2, c_in, 7, 6)))
    for k, s in ((2, None), (3, 2), ((2, 3), (1, 2))):
        cases.append((f"MaxPool2D {k} {s}", L.MaxPool2D(k, s), nn.MaxPool2d(k, s), (2, 3, 7, 6)))
        cases.append((f"AvgPool2D {k} {s}", L.AvgPool2D(k, s), nn.AvgPool2d(k, s), (2, 3, 7, 6)))
    for shape in ((6, 3), (4, 3, 5, 2)):
        for training in (True, False):
            bn = L.BatchNorm(3, dtype=F64)
            bn.weight.data[:] = [0.5, -1.5, 2.0]
            bn.bias.data[:] = [0.1, 0.2, -0.3]
            bn.running_mean[:], bn.running_var[:] = [0.3, -0.2, 0.1], [0.5, 2.0, 1.5]
            bn.train(training)
            w, b, rm, rv = (torch.from_numpy(np.array(a)) for a in
                            (bn.weight.data, bn.bias.data, bn.running_mean, bn.running_var))
            f = (lambda x, w=w, b=b, rm=rm, rv=rv, t=training:
                 fn.batch_norm(x, None if t else rm, None if t else rv, w, b, training=t))
            cases.append((f"BatchNorm{shape} training={training}", bn, f, shape))
    for shape, affine in ((5, True), ((3, 5), False)):
        ours = L.LayerNorm(shape, elementwise_affine=affine, dtype=F64)
        if affine:
            ours.weight.data[:] = np.linspace(-1, 2, 5)
        theirs = _torch_twin(torch, ours, nn.LayerNorm(shape, elementwise_affine=affine))
        cases.append((f"LayerNorm {shape}", ours, theirs, (2, 3, 5)))
    pos = L.PositionalEmbedding(8, 4, dtype=F64)
    cases.append(("PositionalEmbedding", pos,
                  lambda x: x + torch.from_numpy(pos.weight.data[:x.shape[1]]), (2, 5, 4)))
    for causal in (False, True):
        ours = L.MultiHeadAttention(8, 2, causal=causal, dtype=F64)
        theirs = _torch_twin(torch, ours, nn.MultiheadAttention(8, 2, batch_first=True))
        mask = torch.triu(torch.full((5, 5), float("-inf"), dtype=torch.float64), 1) \
            if causal else None
        cases.append((f"MultiHeadAttention causal={causal}", ours,
                      # need_weights: torch's explicit softmax path (its fused kernel has
                      # no forward mode)
                      lambda x, t=theirs, m=mask: t(x, x, x, attn_mask=m,
                                                    need_weights=True)[0], (2, 5, 8)))
    for make, twin in ((L.LSTM, nn.LSTM), (L.GRU, nn.GRU)):
        for sequences in (True, False):
            ours = make(3, 4, return_sequences=sequences, dtype=F64)
            theirs = _torch_twin(torch, ours, twin(3, 4, batch_first=True), suffix="_l0")
            cases.append((f"{make.__name__} sequences={sequences}", ours,
                          lambda x, t=theirs, s=sequences: t(x)[0] if s else t(x)[0][:, -1],
                          (2, 5, 3)))
    return cases


def test_every_layers_jvp_equals_torchs(rng, kernel_path):
    torch = require("torch")
    for name, layer, f, shape in _single_cases(torch):
        x, v = rng.standard_normal(shape), rng.standard_normal(shape)
        try:
            _against_torch(torch, layer, f, x, v)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


def test_random_layers_jvp_uses_the_forwards_own_draw(rng):
    torch = require("torch")
    x, v = rng.standard_normal((4, 2, 5, 6)), rng.standard_normal((4, 2, 5, 6))
    drop = L.Dropout(0.5)
    drop.rng = np.random.default_rng(3)
    mask = drop.forward(x) / np.where(x == 0, 1, x)       # the forward's mask, times 1/(1 − p)
    drop.rng = np.random.default_rng(3)
    _against_torch(torch, drop, lambda t: t * torch.from_numpy(mask), x, v)
    shift = L.RandomShift(2)
    shift.rng = np.random.default_rng(4)
    shift.forward(x)
    dy, dx = shift._offsets

    def shifted(t):
        padded = torch.nn.functional.pad(t, (2, 2, 2, 2))
        return torch.stack([padded[n, :, dy[n]:dy[n] + 5, dx[n]:dx[n] + 6] for n in range(4)])
    shift.rng = np.random.default_rng(4)
    _against_torch(torch, shift, shifted, x, v)
    flip = L.RandomHorizontalFlip(0.5)
    flip.rng = np.random.default_rng(5)
    flip.forward(x)
    mirrored = set(flip._mirrored.tolist())
    assert 0 < len(mirrored) < 4

    def flipped(t):
        return torch.stack([t[n].flip(-1) if n in mirrored else t[n] for n in range(4)])
    flip.rng = np.random.default_rng(5)
    _against_torch(torch, flip, flipped, x, v)
    for layer in (L.Dropout(0.5), L.RandomShift(2), L.RandomHorizontalFlip()):
        layer.eval()
        _against_torch(torch, layer, lambda t: t * 1, x, v)


def test_attention_with_dropout_in_training_uses_the_forwards_mask(rng):
    torch = require("torch")
    att = L.MultiHeadAttention(6, 2, causal=True, dropout=0.4, dtype=F64)
    att.rng = np.random.default_rng(7)
    x, v = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 4, 6))
    att.forward(x)
    keep = torch.from_numpy(att._keep)
    w_in, b_in, w_out, b_out = (torch.from_numpy(p.data) for p in att.parameters())
    mask = torch.triu(torch.full((4, 4), float("-inf"), dtype=torch.float64), 1)

    def f(t):
        q, k, val = (t @ w_in.T + b_in).reshape(2, 4, 3, 2, 3).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(3) + mask, -1) * keep
        return (a @ val).transpose(1, 2).reshape(2, 4, 6) @ w_out.T + b_out
    att.rng = np.random.default_rng(7)
    _against_torch(torch, att, f, x, v)
    assert check_layer(att, x)


def test_merge_layers_sum_the_paths_and_take_none_as_zero(rng):
    torch = require("torch")
    xs = [rng.standard_normal((3, 4)) for _ in range(3)]
    vs = [rng.standard_normal((3, 4)), None, rng.standard_normal((3, 4))]
    _against_torch(torch, L.Add(), lambda a, b, c: a + b + c, xs, vs)
    _against_torch(torch, L.Multiply(), lambda a, b, c: a * b * c, xs, vs)
    _against_torch(torch, L.Concatenate(axis=0), lambda a, b, c: torch.cat([a, b, c], 0),
                   xs, vs)
    for merge in (L.Add(), L.Multiply(), L.Concatenate()):
        np.testing.assert_array_equal(check.jvp(merge, xs, [None] * 3)[1],
                                      np.zeros_like(merge.forward(xs)))


def test_embedding_ids_have_no_tangent():
    emb = L.Embedding(10, 4)
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    y, jv = check.jvp(emb, ids, None)
    assert jv.shape == y.shape == (2, 3, 4) and not jv.any()
    with pytest.raises(ValueError, match="integer ids, which have no tangent"):
        emb.jvp(np.ones((2, 3)))
    gpt = Sequential(L.Embedding(10, 8), L.PositionalEmbedding(3, 8), L.Linear(8, 10))
    assert not check.jvp(gpt, ids, None)[1].any()


def test_a_chain_with_the_relu_and_pool_swapped_equals_torch(rng, kernel_path):
    torch = require("torch")
    ours = Sequential(L.Conv2D(2, 3, 3, padding=1, dtype=F64), L.ReLU(), L.MaxPool2D(2),
                      L.Flatten(), L.Linear(3 * 3 * 3, 4, dtype=F64))
    assert ours._swapped
    nn = torch.nn
    theirs = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Flatten(), nn.Linear(27, 4)).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x, v = rng.standard_normal((2, 2, 6, 7)), rng.standard_normal((2, 2, 6, 7))
    _against_torch(torch, ours, theirs, x, v)


def _graph(torch):
    """A graph with fan-out (x feeds three paths), a shared layer, a residual Add and a
    Concatenate; and the same function in torch."""
    inp = Input(4)
    dense, shared = L.Linear(4, 4, dtype=F64), L.Linear(4, 4, dtype=F64)
    h = L.Tanh()(dense(inp))
    a = shared(h)
    b = shared(L.ReLU()(inp))
    res = L.Add()([a, inp])
    out = L.Concatenate()([res, b, L.Multiply()([a, h])])
    model = Model(inp, out)
    w1, b1, w2, b2 = (torch.from_numpy(p.data) for p in model.parameters())

    def f(x):
        hh = torch.tanh(x @ w1.T + b1)
        aa = hh @ w2.T + b2
        bb = torch.relu(x) @ w2.T + b2
        return torch.cat([aa + x, bb, aa * hh], -1)
    return model, f


def test_a_graph_with_fan_out_merges_and_a_shared_layer_equals_torch(rng):
    torch = require("torch")
    model, f = _graph(torch)
    x, v = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    _against_torch(torch, model, f, x, v)


def test_a_graph_with_two_inputs_takes_none_for_one(rng):
    a, b = Input(3), Input(3)
    model = Model([a, b], [L.Tanh()(L.Linear(3, 2, dtype=F64)(a)), L.Add()([a, b])])
    xs = [rng.standard_normal((2, 3)) for _ in range(2)]
    v = rng.standard_normal((2, 3))
    _, (j1, j2) = check.jvp(model, xs, [v, None])
    jacobians = jacobian(model, xs, mode="reverse")
    y_size = 2 * 2 + 2 * 3
    np.testing.assert_allclose(np.concatenate([j1.ravel(), j2.ravel()]),
                               jacobians[0] @ v.ravel(), rtol=1e-12, atol=1e-14)
    assert jacobians[0].shape == (y_size, 6)
    _, (k1, k2) = check.jvp(model, xs, [None, None])
    assert k1.shape == (2, 2) and k2.shape == (2, 3) and not k1.any() and not k2.any()


def test_jacobian_modes_build_the_same_matrix(rng):
    model = Sequential(L.Linear(3, 5, dtype=F64), L.GELU(), L.Linear(5, 7, dtype=F64))
    x = rng.standard_normal((2, 3))
    reverse = jacobian(model, x, mode="reverse")
    assert reverse.shape == (14, 6)
    np.testing.assert_allclose(jacobian(model, x, mode="forward"), reverse, rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(jacobian(model, x), reverse, rtol=1e-12, atol=1e-14)
    xs = [rng.standard_normal((2, 3)), rng.standard_normal((2, 4))]
    for r, f in zip(jacobian(L.Concatenate(), xs, mode="reverse"),
                    jacobian(L.Concatenate(), xs, mode="forward")):
        np.testing.assert_array_equal(r, f)
    with pytest.raises(ValueError, match="mode must be"):
        jacobian(model, x, mode="sideways")


class Scale(nnlite.Layer):
    """A user's layer with a backward and no jvp: y = 3x."""

    def forward(self, x):
        return 3 * x

    def backward(self, grad):
        return 3 * grad


def test_a_layer_without_jvp_says_where_to_learn_and_the_tools_use_reverse_mode(rng):
    layer = Scale()
    x = rng.standard_normal((2, 3))
    layer.forward(x)
    with pytest.raises(NotImplementedError, match="Scale.*docs/custom-layers.md"):
        layer.jvp(x)
    np.testing.assert_array_equal(jacobian(layer, x, mode="forward"), 3 * np.eye(6))
    assert check_layer(layer, x)
    model = Sequential(L.Linear(3, 3, dtype=F64), Scale())
    with pytest.raises(NotImplementedError, match="Scale"):
        check.jvp(model, x, x)
    s = check.lipschitz(model, x)                   # per-sample Jacobians by reverse mode
    np.testing.assert_allclose(s, 3 * np.linalg.norm(model[0].weight.data, 2), rtol=1e-12)


def test_jvp_touches_no_parameter_gradient_or_cached_state(rng):
    for model in (Sequential(L.Conv2D(2, 3, 3, dtype=F64), L.BatchNorm(3, dtype=F64),
                             L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Linear(12, 3, dtype=F64)),
                  Sequential(L.LSTM(4, 5, dtype=F64), L.LayerNorm(5, dtype=F64),
                             L.MultiHeadAttention(5, 1, causal=True, dtype=F64))):
        shape = (3, 2, 6, 6) if isinstance(model[0], L.Conv2D) else (3, 4, 4)
        x, g = rng.standard_normal(shape), None
        y = model.forward(x)
        g = rng.standard_normal(y.shape)
        plain = model.backward(g)
        grads = [p.grad.copy() for p in model.parameters()]
        model.zero_grad()
        model.forward(x)
        model.jvp(rng.standard_normal(shape))
        assert not any(p.grad.any() for p in model.parameters())
        np.testing.assert_array_equal(model.backward(g), plain)
        for p, want in zip(model.parameters(), grads):
            np.testing.assert_array_equal(p.grad, want)


def test_check_jvp_and_vjp_return_y_first_and_keep_gradients(rng):
    layer = L.Linear(3, 2, dtype=F64)
    x, v = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    u = rng.standard_normal((4, 2))
    y, jv = check.jvp(layer, x, v)
    np.testing.assert_allclose(jv, v @ layer.weight.data.T)
    y2, uj = check.vjp(layer, x, u)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_allclose(uj, u @ layer.weight.data)
    assert not layer.weight.grad.any()
    ys, dxs = check.vjp(L.Add(), [x, v], y)
    assert len(dxs) == 2


# -- the adjoint test catches planted mistakes ------------------------------------------
class TransposedJVP(L.Linear):
    def jvp(self, tangent):
        return tangent @ self.weight.data                   # W where Wᵀ belongs


class NegatedJVP(L.Tanh):
    def jvp(self, tangent):
        return -super().jvp(tangent)


class BatchNormWithoutStatistics(L.BatchNorm):
    def jvp(self, tangent):                              # the eval-mode formula in training
        return tangent * (self.weight.data * self._inv_std).reshape(1, -1)


class TransposedBackward(L.Linear):
    def backward(self, grad):
        super().backward(grad)
        return grad @ self.weight.data.T                    # Wᵀ where W belongs


@pytest.mark.parametrize("layer, x", [
    (TransposedJVP(4, 4, dtype=F64), (3, 4)), (NegatedJVP(), (3, 4)),
    (BatchNormWithoutStatistics(4, dtype=F64), (5, 4)),
    (TransposedBackward(4, 4, dtype=F64), (3, 4))])
def test_the_adjoint_test_catches_a_transpose_a_sign_and_a_dropped_term(layer, x, rng):
    report = check_layer(layer, rng.standard_normal(x))
    assert not report
    assert "adjoint test failed for input" in str(report), str(report)


def test_check_layer_reports_the_jvps_finite_difference_check(rng):
    report = check_layer(NegatedJVP(), rng.standard_normal((2, 3)))
    assert "J·v differs" in str(report)
    assert check_layer(L.Tanh(), rng.standard_normal((2, 3)))


# -- Lipschitz constants ------------------------------------------------------------------
def _local_by_svd(model, x):
    with model.evaluating():
        return np.array([np.linalg.norm(jacobian(model, x[i:i + 1]), 2) for i in range(len(x))])


def _cnn():
    return Sequential(L.Conv2D(1, 3, 3, padding=1, dtype=F64), L.BatchNorm(3, dtype=F64),
                      L.ReLU(), L.MaxPool2D(2), L.Conv2D(3, 2, 3, stride=2, dtype=F64),
                      L.GELU(), L.Flatten(), L.Linear(2, 4, dtype=F64))


def test_lipschitz_equals_the_largest_singular_value_of_the_jacobian(rng):
    mlp = Sequential(L.Linear(12, 16, dtype=F64), L.Tanh(), L.Linear(16, 5, dtype=F64))
    x = rng.standard_normal((6, 12))
    sigma, vectors = check.lipschitz(mlp, x, iters=500, tol=1e-13, return_vectors=True)
    np.testing.assert_allclose(sigma, _local_by_svd(mlp, x), rtol=1e-8)
    assert sigma.shape == (6,) and vectors.shape == x.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-10)
    for i in range(6):
        with mlp.evaluating():
            _, right = np.linalg.svd(jacobian(mlp, x[i:i + 1]))[1:]
        assert abs(abs(right[0] @ vectors[i]) - 1) < 1e-6
    cnn = _cnn()
    cnn.train()
    cnn.forward(rng.standard_normal((8, 1, 6, 6)))     # running statistics move
    images = rng.standard_normal((3, 1, 6, 6))
    np.testing.assert_allclose(check.lipschitz(cnn, images, iters=500, tol=1e-13),
                               _local_by_svd(cnn, images), rtol=1e-8)
    assert cnn.training                                 # its own mode, afterwards
    loose = check.lipschitz(mlp, x, iters=2)
    assert np.all(loose <= sigma * (1 + 1e-12))         # power iteration rises to σ₁


def test_lipschitz_bound_of_one_linear_is_its_largest_singular_value():
    layer = L.Linear(7, 5, dtype=F64)
    np.testing.assert_allclose(check.lipschitz_bound(layer),
                               np.linalg.norm(layer.weight.data, 2), rtol=1e-8)
    model = Sequential(layer)
    np.testing.assert_allclose(check.lipschitz_bound(model),
                               np.linalg.norm(layer.weight.data, 2), rtol=1e-8)


def test_lipschitz_bound_of_a_convolution_is_its_operator_norm(rng):
    conv = L.Conv2D(2, 3, 3, stride=1, padding=1, dtype=F64)
    x = np.zeros((1, 2, 5, 4))
    whole = np.linalg.norm(jacobian(conv, x), 2)
    np.testing.assert_allclose(check.lipschitz_bound(conv, (2, 5, 4)), whole, rtol=1e-7)
    assert check.lipschitz_bound(conv, (2, 5, 4)) < np.linalg.norm(
        conv.weight.data.reshape(3, -1), 2) * 3     # not the kernel matrix's norm times 9 taps
    pool = L.AvgPool2D(3, 2)
    np.testing.assert_allclose(check.lipschitz_bound(pool, (1, 7, 7)),
                               np.linalg.norm(jacobian(pool, np.zeros((1, 1, 7, 7))), 2),
                               rtol=1e-7)
    with pytest.raises(ValueError, match="input_shape"):
        check.lipschitz_bound(Sequential(conv))


def _residual():
    inp = Input((1, 6, 6))
    h = L.Conv2D(1, 2, 3, padding=1, dtype=F64)(inp)
    h = L.BatchNorm(2, dtype=F64)(h)
    a = L.LeakyReLU(-1.5)(h)
    b = L.Sigmoid()(L.Conv2D(2, 2, 3, padding=1, dtype=F64)(a))
    res = L.Add()([a, b])
    pooled = L.MaxPool2D(3, 2)(res)                   # overlapping windows
    joined = L.Concatenate(axis=1)([pooled, L.AvgPool2D(3, 2)(res)])
    out = L.Linear(4 * 2 * 2, 3, dtype=F64)(L.Flatten()(L.Dropout(0.3)(joined)))
    return Model(inp, out)


@pytest.mark.parametrize("make, shape", [
    (lambda: Sequential(L.Linear(8, 8, dtype=F64), L.GELU("tanh"), L.Linear(8, 8, dtype=F64),
                        L.LayerNorm(8, dtype=F64), L.Linear(8, 3, dtype=F64)), (8,)),
    (_cnn, (1, 6, 6)), (_residual, (1, 6, 6))])
def test_lipschitz_bound_is_above_the_local_constant_everywhere(make, shape, rng):
    for trial in range(4):
        model = make()
        for bn in (m for m in model.modules() if isinstance(m, L.BatchNorm)):
            bn.running_var[:] = rng.uniform(0.05, 2, bn.running_var.shape)
        bound = check.lipschitz_bound(model, shape)
        x = rng.standard_normal((16, *shape)) * (trial + 1)
        local = check.lipschitz(model, x, iters=200)
        assert np.all(local <= bound), (local.max(), bound)


def test_lipschitz_bound_refuses_layers_with_no_known_bound_and_asks_users_for_one():
    for layer in (L.MultiHeadAttention(4, 1), L.LSTM(4, 4), L.Softmax(), Scale()):
        with pytest.raises(ValueError, match="no known Lipschitz bound"):
            check.lipschitz_bound(Sequential(L.Linear(4, 4), layer), (4,))

    class Halve(Scale):
        def lipschitz_bound(self):
            return 0.5
    layer = L.Linear(4, 4, dtype=F64)
    np.testing.assert_allclose(check.lipschitz_bound(Sequential(layer, Halve()), (4,)),
                               0.5 * np.linalg.norm(layer.weight.data, 2), rtol=1e-8)


def test_lipschitz_checks_its_arguments_at_the_door(rng):
    model = Sequential(L.Linear(3, 2))
    with pytest.raises(ValueError, match="iters"):
        check.lipschitz(model, rng.standard_normal((2, 3)), iters=0)
    with pytest.raises(ValueError, match="expects input of shape"):
        check.lipschitz(model, rng.standard_normal((2, 4)))
    with pytest.raises(ValueError, match="floating inputs"):
        check.lipschitz(Sequential(L.Embedding(5, 3)), np.array([[1, 2]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        check.lipschitz(model, np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="input_shape"):
        check.lipschitz_bound(model, 3)
    with pytest.raises(ValueError, match="input_shape"):
        check.lipschitz_bound(model, (0,))


def test_the_forward_mode_section_of_backprop_md_runs_as_written():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "backprop.md").read_text()
    section = text[text.index("## Forward mode"):]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    exec("\n".join(blocks), {})
