"""Graph models: the functional API, fan-out sums, shared layers and tied weights, several
inputs and outputs, their files, and the errors a wrong graph gets."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnlite
from nnlite import layers, losses, optim
from nnlite.check import check_layer, jacobian
from nnlite.layers import Add, Concatenate, Linear, Multiply, ReLU, Tanh


def residual_mlp(n_in=6, width=5, n_out=3):
    x = nnlite.Input((n_in,))
    h = ReLU()(Linear(n_in, width)(x))
    h = Add()([h, ReLU()(Linear(width, width)(h))])   # h feeds two paths
    return nnlite.Model(x, Linear(width, n_out)(h))


@pytest.fixture(scope="module")
def digits():
    (x, y), (xt, yt) = nnlite.datasets.load_digits()
    return (x.reshape(len(x), -1) / np.float32(16), y,
            xt.reshape(len(xt), -1) / np.float32(16), yt)


def train(model, x, y, epochs=5, loss=None, **kw):
    opt = optim.Adam(model.parameters(), lr=1e-2)
    history = model.fit(x, y, loss=loss or losses.CrossEntropy(), optimizer=opt,
                        epochs=epochs, batch_size=64, verbose=False, seed=0, **kw)
    return history, opt


def in_new_process(path, x_path, out_path, tmp_path):
    """Load ``path`` in a fresh Python and save its predictions on the inputs in ``x_path``."""
    script = textwrap.dedent(f"""
        import numpy as np, nnlite
        model = nnlite.load({str(path)!r})
        x = np.load({str(x_path)!r})
        xs = [x[k] for k in sorted(x.files)]
        out = model.predict(xs if len(xs) > 1 else xs[0])
        outs = out if isinstance(out, list) else [out]
        np.savez({str(out_path)!r}, *outs)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    with np.load(out_path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


# -- the chain rule over two paths ---------------------------------------------------------
def test_residual_block_passes_check_layer_and_its_jacobian_is_identity_plus_jf(rng):
    report = check_layer(residual_mlp(), rng.standard_normal((4, 6)))
    assert report.ok, str(report)
    x = nnlite.Input((4,))
    f = nnlite.Sequential(Linear(4, 4), Tanh(), Linear(4, 4)).astype(np.float64)
    block = nnlite.Model(x, Add()([x, f(x)])).astype(np.float64)
    v = rng.standard_normal((1, 4))
    np.testing.assert_allclose(jacobian(block, v), np.eye(4) + jacobian(f, v), atol=1e-12)
    assert check_layer(block, rng.standard_normal((3, 4)))


def test_a_value_feeding_two_layers_gets_the_sum_of_their_gradients(rng):
    x = nnlite.Input((3,))
    a, b = Linear(3, 2, dtype=np.float64), Linear(3, 2, dtype=np.float64)
    model = nnlite.Model(x, Add()([a(x), b(x)]))
    v, g = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    model(v)
    dx = model.backward(g)
    np.testing.assert_allclose(dx, g @ a.weight.data + g @ b.weight.data)
    np.testing.assert_allclose(a.weight.grad, g.T @ v)


def test_a_model_with_two_inputs_checks_every_input_and_parameter(rng):
    a, b = nnlite.Input((3,)), nnlite.Input((2,))
    h = Concatenate()([Tanh()(Linear(3, 4)(a)), b])
    out = Multiply()([Linear(6, 2)(h), Linear(2, 2)(b)])
    model = nnlite.Model([a, b], out)
    xs = [rng.standard_normal((4, 3)), rng.standard_normal((4, 2))]
    report = check_layer(model, xs)
    assert report.ok, str(report)
    js = jacobian(model.astype(np.float64), [x[:1] for x in xs])
    assert [j.shape for j in js] == [(2, 3), (2, 2)]


@pytest.mark.parametrize("merge, expected", [
    (Add(), [[5.0, 7.0, 9.0]]), (Multiply(), [[4.0, 10.0, 18.0]]),
    (Concatenate(), [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])])
def test_merge_layers_by_hand(merge, expected):
    a, b = np.array([[1.0, 2.0, 3.0]]), np.array([[4.0, 5.0, 6.0]])
    np.testing.assert_allclose(merge([a, b]), expected)
    g = np.ones_like(np.asarray(expected))
    da, db = merge.backward(g)
    if isinstance(merge, Multiply):
        np.testing.assert_allclose(da, b)
        np.testing.assert_allclose(db, a)
    else:
        np.testing.assert_allclose(da, np.ones_like(a))
        np.testing.assert_allclose(db, np.ones_like(b))


# -- shared layers and tied weights ---------------------------------------------------------------
def siamese():
    a, b = nnlite.Input((64,)), nnlite.Input((64,))
    encode = Linear(64, 16)
    ha, hb = ReLU()(encode(a)), ReLU()(encode(b))
    return nnlite.Model([a, b], Linear(16, 10)(Add()([ha, hb]))), encode


def test_a_shared_layer_keeps_each_calls_state_and_sums_its_gradient(rng):
    model, encode = siamese()
    assert len(model.parameters()) == 4          # encode's two, the head's two
    xs = [rng.standard_normal((3, 64)), rng.standard_normal((3, 64))]
    report = check_layer(model, xs)
    assert report.ok, str(report)


def test_siamese_model_trains_saves_and_predicts_identically_in_a_new_process(digits,
                                                                               tmp_path):
    x, y, xt, yt = digits
    nnlite.set_seed(0)
    model, _ = siamese()
    shifted = np.roll(x, 1, axis=1)
    history, _ = train(model, [x, shifted], y, epochs=10)
    assert history.history["accuracy"][-1] > 0.9
    model.save(tmp_path / "siamese.npz")
    np.savez(tmp_path / "x.npz", a=xt, b=np.roll(xt, 1, axis=1))
    expected = model.predict([xt, np.roll(xt, 1, axis=1)])
    loaded = nnlite.load(tmp_path / "siamese.npz")
    assert len(loaded.parameters()) == 4 and loaded.layers[0] is loaded.layers[0]
    (got,) = in_new_process(tmp_path / "siamese.npz", tmp_path / "x.npz",
                            tmp_path / "out.npz", tmp_path)
    np.testing.assert_array_equal(got, expected)


def test_tied_parameters_train_as_one_array_and_stay_tied_in_files(rng, tmp_path):
    first, second = Linear(4, 4, dtype=np.float64), Linear(4, 4, dtype=np.float64)
    second.weight = first.weight
    model = nnlite.Sequential(first, Tanh(), second)
    assert len(model.parameters()) == 3
    report = check_layer(model, rng.standard_normal((3, 4)))
    assert report.ok, str(report)
    x = rng.standard_normal((32, 4))
    model.fit(x, x, loss=losses.MSE(), optimizer=optim.SGD(model.parameters(), lr=0.1),
              epochs=2, verbose=False, seed=0)
    assert model[2].weight is model[0].weight
    model.save(tmp_path / "tied.npz")
    loaded = nnlite.load(tmp_path / "tied.npz")
    assert loaded[2].weight is loaded[0].weight
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_a_sequential_that_repeats_a_layer_has_right_gradients_and_round_trips(rng, tmp_path):
    shared = Linear(16, 16)
    model = nnlite.Sequential(Linear(8, 16), ReLU(), shared, ReLU(), shared, Linear(16, 3))
    report = check_layer(model, rng.standard_normal((4, 8)))
    assert report.ok, str(report)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    train(model, x, y, epochs=2)
    model.save(tmp_path / "repeat.npz")
    loaded = nnlite.load(tmp_path / "repeat.npz")
    assert loaded[2] is loaded[4]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


# -- several inputs and outputs ------------------------------------------------------------------
def two_in_two_out():
    image, extra = nnlite.Input((64,)), nnlite.Input((3,))
    h = ReLU()(Linear(64, 32)(image))
    digit = Linear(35, 10)(Concatenate()([h, extra]))    # output 0: the digit
    size = Linear(32, 1)(h)                                # output 1: a regression
    return nnlite.Model([image, extra], [digit, size])


def test_two_inputs_two_outputs_train_with_weighted_losses_and_round_trip(digits, tmp_path):
    x, y, xt, yt = digits
    extra = np.random.default_rng(0).standard_normal((len(x), 3)).astype(np.float32)
    size = x.mean(axis=1, keepdims=True)
    nnlite.set_seed(0)
    model = two_in_two_out()
    history, _ = train(model, [x, extra], [y, size], epochs=8,
                       loss=[losses.CrossEntropy(), losses.MSE()], loss_weights=[1.0, 0.5],
                       validation_data=([x[:200], extra[:200]], [y[:200], size[:200]]))
    h = history.history
    assert {"loss", "output_0_loss", "output_1_loss", "output_0_accuracy", "val_loss",
            "val_output_0_loss", "val_output_1_loss", "val_output_0_accuracy"} <= set(h)
    np.testing.assert_allclose(h["loss"][-1], h["output_0_loss"][-1] +
                               0.5 * h["output_1_loss"][-1], rtol=1e-6)
    assert h["val_output_0_accuracy"][-1] > 0.9 and h["output_1_loss"][-1] < 0.01
    preds = model.predict([xt, extra[:len(xt)]])
    assert isinstance(preds, list) and [p.shape for p in preds] == [(len(xt), 10),
                                                                     (len(xt), 1)]
    model.save(tmp_path / "two.npz")
    np.savez(tmp_path / "x.npz", a=xt, b=extra[:len(xt)])
    got = in_new_process(tmp_path / "two.npz", tmp_path / "x.npz", tmp_path / "o.npz",
                         tmp_path)
    for a, b in zip(got, preds):
        np.testing.assert_array_equal(a, b)
    scores = model.evaluate([xt, extra[:len(xt)]], [yt, xt.mean(axis=1)[:, None]],
                            loss=[losses.CrossEntropy(), losses.MSE()])
    assert scores["output_0_accuracy"] > 0.9 and "output_1_loss" in scores


def test_checkpoints_of_a_graph_resume_bit_identically(digits, tmp_path):
    x, y, *_ = digits

    def model_and_opt():
        nnlite.set_seed(1)
        model = residual_mlp(64, 32, 10)
        return model, optim.Adam(model.parameters(), lr=1e-2)

    straight, opt = model_and_opt()
    straight.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=4, seed=0,
                 verbose=False)
    model, opt = model_and_opt()
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=2, seed=0, verbose=False,
              callbacks=[nnlite.callbacks.ModelCheckpoint(tmp_path / "run.npz")])
    resumed, opt2, epoch = nnlite.load_checkpoint(tmp_path / "run.npz")
    resumed.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt2, epochs=4, initial_epoch=epoch,
                seed=0, verbose=False)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_skipping_unused_input_gradients_changes_no_number(digits):
    """fit visits only nodes with a parameter at or upstream of them; a hand-written loop
    that computes every gradient must end with the same weights."""
    x, y, *_ = digits
    nnlite.set_seed(2)
    a = residual_mlp(64, 32, 10)
    nnlite.set_seed(2)
    b = residual_mlp(64, 32, 10)
    opt_a, opt_b = optim.SGD(a.parameters(), lr=0.1), optim.SGD(b.parameters(), lr=0.1)
    a.fit(x[:128], y[:128], loss=losses.CrossEntropy(), optimizer=opt_a, batch_size=128,
          shuffle=False, verbose=False)
    loss = losses.CrossEntropy()
    loss.forward(b.forward(x[:128]), y[:128])
    opt_b.zero_grad()
    assert b.backward(loss.backward()).shape == (128, 64)
    opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_models_nest_in_sequentials_and_sequentials_in_models(digits, tmp_path):
    x, y, *_ = digits
    inner = residual_mlp(32, 32, 32)
    model = nnlite.Sequential(Linear(64, 32), ReLU(), inner, ReLU(), Linear(32, 10))
    i = nnlite.Input((64,))
    outer = nnlite.Model(i, model(i))
    history, _ = train(outer, x, y, epochs=6)
    assert history.history["accuracy"][-1] > 0.9
    assert check_layer(outer, x[:3])
    outer.save(tmp_path / "nested.npz")
    np.testing.assert_array_equal(nnlite.load(tmp_path / "nested.npz").predict(x), outer.predict(x))


def test_summary_shows_shapes_params_and_what_feeds_each_layer(capsys):
    text = residual_mlp(6, 5, 3).summary()
    assert "Connected to" in text and "input_0 (Input)" in text
    add = next(line for line in text.splitlines() if " Add " in line)
    assert "(None, 5)" in add and add.rstrip().endswith("1, 3")
    assert "Total params: 83" in text


# -- custom layers the way a newcomer writes them -----------------------------------------------
class Scale(nnlite.Layer):
    """y = x ⊙ s.  VJP: g ⊙ s;  dL/ds += Σₙ gₙ ⊙ xₙ."""

    def __init__(self, n):
        super().__init__()
        self.n = n
        self.s = nnlite.Parameter(np.ones(n))     # float64, the NumPy way

    def forward(self, x):
        self.x = x
        return x * self.s.data

    def backward(self, grad):
        self.s.grad += (grad * self.x).sum(axis=0)
        return grad * self.s.data


class Residual(nnlite.Layer):
    """y = x + inner(x).  VJP: g + inner's VJP of g."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner.forward(x)

    def backward(self, grad):
        return grad + self.inner.backward(grad)


class Stack(nnlite.Layer):
    """Blocks kept in a plain list, the natural way."""

    def __init__(self, n, depth):
        super().__init__()
        self.n, self.depth = n, depth
        self.blocks = [Linear(n, n) for _ in range(depth)]

    def forward(self, x):
        for block in self.blocks:
            x = block.forward(x)
        return x

    def backward(self, grad):
        for block in reversed(self.blocks):
            grad = block.backward(grad)
        return grad


def test_a_float64_parameter_made_the_numpy_way_trains_in_a_float32_model(digits):
    x, y, *_ = digits
    model = nnlite.Sequential(Linear(64, 32), Scale(32), ReLU(), Linear(32, 10))
    assert model[1].s.dtype == np.float32
    history, _ = train(model, x, y)
    assert history.history["accuracy"][-1] > 0.9
    assert check_layer(model.astype(np.float64), x[:3])


def test_set_default_dtype_changes_what_new_layers_get():
    nnlite.set_default_dtype(np.float64)
    try:
        assert Linear(2, 2).weight.dtype == np.float64 and Scale(2).s.dtype == np.float64
        assert nnlite.get_default_dtype() == np.float64
    finally:
        nnlite.set_default_dtype(np.float32)
    assert Linear(2, 2).weight.dtype == np.float32
    with pytest.raises(ValueError, match="floating"):
        nnlite.set_default_dtype(np.int32)


def test_layers_kept_in_a_list_register_and_train(digits):
    x, y, *_ = digits
    stack = Stack(64, 2)
    assert [n for n, _ in stack.named_parameters()] == [
        "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias"]
    stack.blocks.append(Linear(64, 64))              # a later append registers too
    assert len(stack.parameters()) == 6
    model = nnlite.Sequential(stack, ReLU(), Linear(64, 10))
    history, _ = train(model, x, y)
    assert history.history["accuracy"][-1] > 0.85
    with pytest.raises(TypeError, match="holds layers and other values"):
        stack.mixed = [Linear(2, 2), 3]


def test_a_composite_layer_holding_a_sequential_trains_first_and_saves(digits, tmp_path):
    x, y, *_ = digits
    model = nnlite.Sequential(Residual(nnlite.Sequential(Linear(64, 64), Tanh())),
                              Stack(64, 1), ReLU(), Linear(64, 10))
    history, _ = train(model, x, y)
    assert history.history["accuracy"][-1] > 0.9
    model.save(tmp_path / "composite.npz")
    loaded = nnlite.load(tmp_path / "composite.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert check_layer(model, x[:2])


def test_a_sequential_first_layer_shared_elsewhere_still_gets_its_input_gradient(digits):
    """The unused first input gradient is skipped for that call only."""
    x, y, *_ = digits
    first = Linear(64, 64)
    model = nnlite.Sequential(first, Tanh(), first, ReLU(), Linear(64, 10))
    assert check_layer(model, x[:2])
    history, _ = train(model, x, y)
    assert history.history["accuracy"][-1] > 0.85 and first.input_grad


def test_old_version_1_files_still_load(tmp_path, rng):
    """A version-1 header as the previous release wrote it: a Sequential's layers beside its
    config, and BatchNorm without num_batches_tracked."""
    import json
    model = nnlite.Sequential(Linear(4, 3), layers.BatchNorm(3), ReLU(),
                              nnlite.Sequential(Linear(3, 2)))
    model[1].running_mean[...] = [0.5, -1, 2]
    header = {"format": "nnlite", "version": 1, "architecture": {
        "class": "Sequential", "config": {}, "layers": [
            {"class": "Linear", "config": model[0].get_config()},
            {"class": "BatchNorm", "config": model[1].get_config()},
            {"class": "ReLU", "config": {}},
            {"class": "Sequential", "config": {}, "layers": [
                {"class": "Linear", "config": model[3][0].get_config()}]}]}}
    arrays = {f"param/{k}": p.data.T if k.endswith("weight") and p.data.ndim == 2 else p.data
              for k, p in model.named_parameters()}     # version 1 kept Linear's W as (in, out)
    arrays.update({f"buffer/1.{k}": getattr(model[1], k) for k in ("running_mean",
                                                                   "running_var")})
    np.savez(tmp_path / "v1.npz", __nnlite__=np.array(json.dumps(header)), **arrays)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(nnlite.load(tmp_path / "v1.npz").predict(x), model.predict(x))


# -- bad input gets a clear error --------------------------------------------------------------
def test_history_records_training_accuracy(digits):
    x, y, xv, yv = digits
    h, _ = train(nnlite.Sequential(Linear(64, 10)), x, y, epochs=2, validation_data=(xv, yv))
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert 0.5 < h.history["accuracy"][-1] <= 1


def test_validation_data_gets_the_same_checks_as_x(digits):
    x, y, xv, yv = digits
    bad = xv.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="validation_data: x has NaN.*row 3"):
        train(nnlite.Sequential(Linear(64, 10)), x, y, validation_data=(bad, yv))
    with pytest.raises(ValueError, match=rf"validation_data: .*\(N, 64\).*\({len(xv)}, 63\)"):
        train(nnlite.Sequential(Linear(64, 10)), x, y, validation_data=(xv[:, :63], yv))
    with pytest.raises(ValueError, match=f"validation_data: x has {len(xv)} samples but y has 3"):
        train(nnlite.Sequential(Linear(64, 10)), x, y, validation_data=(xv, yv[:3]))


def test_merge_inputs_that_do_not_fit_name_the_layer_and_every_shape():
    a, b = nnlite.Input((4,)), nnlite.Input((5,))
    with pytest.raises(ValueError, match=r"Add\(\).*\(None, 4\), \(None, 5\)"):
        Add()([a, b])
    with pytest.raises(ValueError, match=r"Concatenate\(axis=1\).*\(None, 4\), \(None, 2, 2\)"):
        Concatenate(axis=1)([a, nnlite.Input((2, 2))])
    with pytest.raises(ValueError, match=r"merges two or more inputs.*Multiply\(\)\(\[a, b\]\)"):
        Multiply()(a)
    with pytest.raises(ValueError, match=r"Linear\(in_features=3.*\(None, 4\)"):
        Linear(3, 2)(a)


def test_wrong_graphs_are_refused_when_the_model_is_built():
    a, b = nnlite.Input((3,)), nnlite.Input((3,))
    out = Linear(3, 2)(Add()([a, b]))
    with pytest.raises(ValueError, match="depends on an Input of shape .None, 3. that is not "
                                         "among the model's inputs"):
        nnlite.Model(a, out)
    with pytest.raises(ValueError, match=r"no output depends on inputs\[1\]"):
        nnlite.Model([a, b, nnlite.Input((2,))][::2] + [b], Linear(3, 1)(a))
    with pytest.raises(ValueError, match="must be symbolic values.*got ndarray"):
        nnlite.Model(np.zeros((2, 3)), out)
    with pytest.raises(ValueError, match=r"inputs\[0\] is the output of Linear"):
        h = Linear(3, 3)(a)
        nnlite.Model(h, Linear(3, 1)(h))
    with pytest.raises(ValueError, match="mix of symbolic values and arrays"):
        Add()([a, np.zeros((1, 3))])


def test_a_cycle_is_refused():
    a = nnlite.Input((3,))
    first = Linear(3, 3)
    h = first(a)
    out = Linear(3, 3)(h)
    h.node.inputs = [out]           # only by editing a graph by hand
    with pytest.raises(ValueError, match="cycle"):
        nnlite.Model(a, out)


def test_wrong_numbers_of_inputs_and_targets_are_clear_errors(digits):
    x, y, *_ = digits
    model = two_in_two_out()
    opt = optim.SGD(model.parameters(), lr=0.1)
    fit = dict(loss=[losses.CrossEntropy(), losses.MSE()], optimizer=opt, verbose=False)
    size = x[:, :1]
    with pytest.raises(ValueError, match="fit: the model has 2 inputs, so x must be a list of 2"):
        model.fit(x, [y, size], **fit)
    with pytest.raises(ValueError, match="the model has 2 outputs, so y must be a list of 2"):
        model.fit([x, x[:, :3]], y, **fit)
    with pytest.raises(ValueError, match="predict: the model has 2 inputs"):
        model.predict([x])
    with pytest.raises(ValueError, match=rf"x\[0\] has {len(x)} samples but x\[1\] has 10"):
        model.fit([x, x[:10, :3]], [y, size], **fit)
    with pytest.raises(ValueError, match=rf"input 1 has shape \({len(x)}, 4\), but the model's "
                                         r"Input takes \(None, 3\)"):
        model.fit([x, x[:, :4]], [y, size], **fit)
    with pytest.raises(ValueError, match="2 output.*but 1 losses"):
        model.fit([x, x[:, :3]], [y, size], loss=[losses.MSE()], optimizer=opt)
    with pytest.raises(ValueError, match="output 1: MSE: target of shape"):
        model.fit([x, x[:, :3]], [y, x[:, :2]], **fit)
    with pytest.raises(ValueError, match="Model.forward: the model has 2 inputs"):
        model(x)  # checked at the door: calling the model (forward itself does not check)


def test_merge_layers_check_arrays_at_the_door_not_in_forward():
    a, b = np.ones((2, 4), np.float32), np.ones((2, 5), np.float32)
    with pytest.raises(ValueError, match=r"Add\(\).*\(2, 4\), \(2, 5\)"):
        Add()([a, b])
    with pytest.raises(ValueError, match=r"Concatenate\(axis=0\).*\(2, 4\), \(2, 5\)"):
        Concatenate(axis=0)([a, b])
    assert Concatenate(axis=1)([a, b]).shape == (2, 9)
    # forward holds the formula only: the check is check_input's, run by __call__ and probes
    assert Concatenate(axis=1).forward([a, b]).shape == (2, 9)
    with pytest.raises(ValueError, match="merges two or more inputs"):
        Multiply().check_input([a])


def test_one_loss_for_a_model_of_two_outputs_is_copied_to_each(rng):
    """fit(loss=CrossEntropy()) on two outputs: one copy of the loss per output (each loss
    caches its own forward)."""
    i = nnlite.Input((4,))
    h = layers.ReLU()(layers.Linear(4, 6)(i))
    model = nnlite.Model(i, [layers.Linear(6, 3)(h), layers.Linear(6, 3)(h)])
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.integers(0, 3, 16)
    history = model.fit(x, [y, y], loss=losses.CrossEntropy(), verbose=False,
                        optimizer=optim.Adam(model.parameters()))
    assert {"output_0_loss", "output_1_loss"} <= set(history.history)
    assert model._trained_with[0] is not model._trained_with[1]
