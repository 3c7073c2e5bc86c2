import re
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

import nnlite
from nnlite import callbacks, layers, losses, optim


def mlp(n_in=64, hidden=32, n_out=10, dropout=0.0):
    return nnlite.Sequential(layers.Linear(n_in, hidden), layers.ReLU(),
                             layers.Dropout(dropout), layers.Linear(hidden, n_out))


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x, y = (d.data[order] / 16).astype(np.float32), d.target[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def train(model, x, y, epochs=3, **kw):
    opt = optim.Adam(model.parameters(), lr=1e-2)
    return model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=epochs,
                     verbose=False, **kw), opt


def test_learns_xor():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0])
    model = nnlite.Sequential(layers.Linear(2, 8), layers.Tanh(), layers.Linear(8, 2))
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=300, batch_size=4,
              verbose=False, seed=0)
    np.testing.assert_array_equal(model.predict(x).argmax(axis=1), y)


def test_learns_digits(digits):
    x, y, xv, yv = digits
    history, _ = train(mlp(dropout=0.1), x, y, epochs=15, validation_data=(xv, yv), seed=1)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 15
    assert history.history["loss"][-1] < history.history["loss"][0] / 5
    assert history.history["val_accuracy"][-1] >= 0.93


def test_regression_with_mse(rng):
    x = rng.uniform(-1, 1, (512, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)
    model = nnlite.Sequential(layers.Linear(3, 1))
    model.fit(x, y, loss=losses.MSE(), optimizer=optim.SGD(model.parameters(), lr=0.1),
              epochs=40, verbose=False, seed=0)
    np.testing.assert_allclose(model[0].weight.data[0], [1, -2, 0.5], atol=1e-3)
    result = model.evaluate(x, y, loss=losses.MSE())  # a regression loss: no accuracy
    assert list(result) == ["loss"] and result["loss"] < 1e-6


def test_same_seed_same_numbers(digits):
    x, y, *_ = digits
    runs = []
    for _ in range(2):
        nnlite.set_seed(3)
        model = mlp(dropout=0.3)
        train(model, x, y, epochs=2, seed=7)
        runs.append(model.predict(x))
    np.testing.assert_array_equal(runs[0], runs[1])
    nnlite.set_seed(3)
    model = mlp(dropout=0.3)
    train(model, x, y, epochs=2, seed=8)
    assert not np.array_equal(runs[0], model.predict(x))


def test_resuming_with_initial_epoch_is_bit_identical(digits, tmp_path):
    x, y, *_ = digits
    nnlite.set_seed(1)
    straight = mlp(dropout=0.2)
    train(straight, x, y, epochs=4, seed=0)

    nnlite.set_seed(1)
    model = mlp(dropout=0.2)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=2, seed=0, verbose=False,
              callbacks=[callbacks.ModelCheckpoint(tmp_path / "run.npz")])
    nnlite.set_seed(99)  # what ran before in the process must not matter
    resumed, opt2, epoch = nnlite.load_checkpoint(tmp_path / "run.npz")
    assert epoch == 2 and isinstance(opt2, optim.Adam) and opt2.steps == opt.steps
    resumed.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt2, epochs=4, initial_epoch=epoch,
                seed=0, verbose=False)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_backward_outside_fit_still_returns_input_gradient(digits):
    x, y, *_ = digits
    model = mlp()
    train(model, x[:64], y[:64], epochs=1)
    out = model(x[:4])
    dx = model.backward(np.ones_like(out))
    assert dx.shape == (4, 64)


def test_save_load_round_trip(digits, tmp_path):
    x, y, *_ = digits
    model = nnlite.Sequential(layers.Linear(64, 16), layers.GELU(),
                              nnlite.Sequential(layers.Linear(16, 16), layers.LeakyReLU(0.2)),
                              layers.Dropout(0.5), layers.Linear(16, 10))
    train(model, x, y, epochs=1)
    model.save(tmp_path / "m.npz")
    loaded = nnlite.load(tmp_path / "m.npz")
    assert repr(loaded) == repr(model)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.dtype == np.float32


def test_float64_model_round_trip(tmp_path, rng):
    model = mlp().astype(np.float64)
    model.save(tmp_path / "m.npz")
    loaded = nnlite.load(tmp_path / "m.npz")
    assert loaded.dtype == np.float64
    x = rng.standard_normal((3, 64))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_predict_casts_once_to_the_model_dtype(digits):
    x, *_ = digits
    model = mlp()
    assert model.predict(x.astype(np.float64)).dtype == np.float32
    np.testing.assert_allclose(model.predict(x, batch_size=7), model.predict(x), atol=1e-5)


def test_evaluate_returns_loss_and_accuracy(digits):
    x, y, xv, yv = digits
    model = mlp()
    train(model, x, y, epochs=5, seed=0)
    result = model.evaluate(xv, yv, loss=losses.CrossEntropy())
    assert set(result) == {"loss", "accuracy"}
    expected = np.mean(model.predict(xv).argmax(axis=1) == yv)
    assert result["accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a positive"),
    ({"batch_size": -3}, "batch_size must be a positive"),
    ({"epochs": -1}, "epochs must be a whole number >= 0"),
])
def test_fit_rejects_bad_settings(digits, kwargs, message):
    x, y, *_ = digits
    model = mlp()
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.SGD(model.parameters(), 0.1),
                  verbose=False, **kwargs)


def test_fit_rejects_bad_data(digits):
    x, y, *_ = digits
    model = mlp()
    opt = optim.SGD(model.parameters(), 0.1)

    def fit(xx, yy):
        return model.fit(xx, yy, loss=losses.CrossEntropy(), optimizer=opt, verbose=False)

    with pytest.raises(ValueError, match="x has 1400 samples but y has 1399"):
        fit(x, y[:-1])
    with pytest.raises(ValueError, match="x is empty"):
        fit(x[:0], y[:0])
    bad = x.copy()
    bad[37, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values, first in row 37"):
        fit(bad, y)
    with pytest.raises(ValueError, match=r"label 10 is outside \[0, 10\)"):
        fit(x, np.where(y == 3, 10, y))
    with pytest.raises(ValueError, match=r"layer 0 \(Linear\).*\(N, 64\).*\(1400, 63\)"):
        fit(x[:, :63], y)  # the data's shape, not the shape of the one-row probe


def test_evaluate_and_predict_refuse_nan_as_fit_does_and_take_large_finite_values(digits):
    x, y, *_ = digits
    model = nnlite.Sequential(layers.Linear(64, 10))
    bad = x.copy()
    bad[12, 3] = np.inf
    with pytest.raises(ValueError, match="predict: x has NaN or infinite values, first in row 12"):
        model.predict(bad)
    with pytest.raises(ValueError, match="evaluate: x has NaN or infinite values, first in row 12"):
        model.evaluate(bad, y, losses.CrossEntropy())
    with pytest.raises(ValueError, match="evaluate: y has NaN or infinite values, first in row 2"):
        model.evaluate(x[:5], np.array([0.0, 1, np.nan, 2, 3]), losses.MSE())
    big = np.full((4, 64), 3e37, np.float32)  # finite, though their sum overflows to inf
    assert model.predict(big).shape == (4, 10)


def test_fit_returns_no_epochs_when_initial_equals_epochs(digits):
    x, y, *_ = digits
    history, _ = train(mlp(), x, y, epochs=0)
    assert history.history == {}


def test_summary(capsys):
    text = mlp().summary()
    assert capsys.readouterr().out.strip() == text.strip()
    assert "(None, 32)" in text and "2,080" in text and "Total params: 2,410" in text


def test_verbose_false_prints_nothing(digits, capsys):
    x, y, *_ = digits
    train(mlp(), x, y, epochs=1, validation_data=(x[:50], y[:50]))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_verbose_in_a_terminal_shows_a_progress_bar(digits, capsys, monkeypatch):
    x, y, *_ = digits
    model = mlp()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(model.parameters()),
              epochs=1, validation_data=(x[:50], y[:50]), verbose=True)
    captured = capsys.readouterr()
    assert "Epoch 1/1:" in captured.err and "batch/s" in captured.err and "\r" in captured.err
    assert "val_accuracy" in captured.out


def test_verbose_into_a_log_writes_one_line_per_epoch(digits, capsys):
    """Redirected output (a file, a pipe, CI) gets no bar redraws, as in Keras."""
    x, y, *_ = digits
    model = mlp()
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(model.parameters()),
              epochs=3, validation_data=(x[:50], y[:50]), verbose=True)
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert len(lines) == 3 and "\r" not in captured.out
    for epoch, line in enumerate(lines, 1):
        assert re.fullmatch(rf"Epoch {epoch}/3  \d+\.\d\d s  loss: \d\.\d{{4}}  "
                            rf"accuracy: .*  val_loss: .*  val_accuracy: \d\.\d{{4}}", line)


def test_early_stopping_restores_best_weights(digits):
    x, y, xv, yv = digits

    class Record(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.weights = getattr(self, "weights", [])
            self.weights.append([p.data.copy() for p in self.model.parameters()])

    record = Record()
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    model = mlp(hidden=64)
    opt = optim.SGD(model.parameters(), lr=2.0)  # too high: validation loss soon rises
    history = model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=50,
                        validation_data=(xv, yv), callbacks=[stop, record], verbose=False, seed=0)
    losses_ = history.history["val_loss"]
    assert len(losses_) < 50 and stop.stopped_epoch == len(losses_) - 1
    best = int(np.argmin(losses_))
    for p, w in zip(model.parameters(), record.weights[best]):
        np.testing.assert_array_equal(p.data, w)


def test_model_checkpoint_best_only(digits, tmp_path):
    x, y, xv, yv = digits
    path = tmp_path / "best-{epoch}.npz"
    ckpt = callbacks.ModelCheckpoint(str(path), monitor="val_accuracy", save_best_only=True)
    history, _ = train(mlp(), x, y, epochs=4, validation_data=(xv, yv), callbacks=[ckpt],
                       seed=0)
    acc = history.history["val_accuracy"]
    improved = [i + 1 for i in range(4) if acc[i] > max(acc[:i], default=-1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"best-{e}.npz" for e in improved)


def test_schedule_as_callback(digits):
    x, y, *_ = digits
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=0.1)
    seen = []

    class LR(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(self.optimizer.lr)

    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=3, verbose=False,
              callbacks=[optim.StepLR(opt, step_size=1, gamma=0.5), LR()])
    np.testing.assert_allclose(seen, [0.1, 0.05, 0.025])


def test_csv_logger_keeps_every_finished_epoch_of_a_killed_run(digits, tmp_path):
    import csv
    x, y, xv, yv = digits
    path = tmp_path / "log.csv"

    class Killed(Exception):
        pass

    class Kill(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                raise Killed   # the process dies during the fourth epoch

    with pytest.raises(Killed):
        train(mlp(), x, y, epochs=6, validation_data=(xv, yv),
              callbacks=[callbacks.CSVLogger(path), Kill()])
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert all(0 < float(r["loss"]) < 3 for r in rows)
    history, _ = train(mlp(), x, y, epochs=2, callbacks=[callbacks.CSVLogger(
        path, separator=";", append=True)])
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 3 + 2 and lines[-1].startswith("1;")
    assert float(lines[-1].split(";")[2]) == pytest.approx(history.history["loss"][-1])


def test_lambda_callback_calls_what_it_is_given_as_keras_does(digits):
    x, y, *_ = digits
    seen = []
    cb = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append((epoch, logs)),
                                  on_train_begin=lambda logs: seen.append(("begin", logs)))
    train(mlp(), x[:128], y[:128], epochs=2, callbacks=[cb])
    assert seen[0] == ("begin", {}) and [s[0] for s in seen[1:]] == [0, 1]
    assert "loss" in seen[1][1]
    hooks = callbacks.CallbackList([cb], None, None).hooks
    assert not hooks["on_batch_end"] and len(hooks["on_epoch_end"]) == 1  # no empty calls
    with pytest.raises(ValueError, match="no hook 'on_batch_begin'"):
        callbacks.LambdaCallback(on_batch_begin=print)


def test_custom_layer_trains_inside_sequential(digits):
    class Scale(nnlite.Layer):
        """y = x ⊙ s; VJP: g ⊙ s, dL/ds += Σₙ gₙ ⊙ xₙ."""
        def __init__(self, n):
            super().__init__()
            self.n = n
            self.s = nnlite.Parameter(np.ones(n, np.float32))

        def forward(self, x):
            self.x = x
            return x * self.s.data

        def backward(self, grad):
            self.s.grad += (grad * self.x).sum(axis=0)
            return grad * self.s.data

    x, y, *_ = digits
    model = nnlite.Sequential(Scale(64), layers.Linear(64, 10))
    train(model, x, y, epochs=2)
    assert not np.allclose(model[0].s.data, 1)
    assert nnlite.check.check_layer(Scale(5), np.ones((2, 5))).ok


def test_predict_checks_each_new_kind_of_input_once():
    """Sampling a sequence calls predict per token: the door's probe runs once per input
    shape, and a new shape is checked again."""
    calls = []

    class Counting(layers.ReLU):
        def check_input(self, x):
            calls.append(x.shape)

    model = nnlite.Sequential(layers.Linear(4, 3), Counting())
    model.predict(np.ones((5, 4)))
    model.predict(np.ones((7, 4)))
    assert len(calls) == 1
    with pytest.raises(ValueError, match=r"predict: .*\(N, 4\), got \(2, 5\)"):
        model.predict(np.ones((2, 5)))


def test_named_layers_as_torch_sequential_takes_them(tmp_path, rng):
    from collections import OrderedDict
    from nnlite.layers import Linear, ReLU

    model = nnlite.Sequential(OrderedDict([("fc1", Linear(4, 3)), ("act", ReLU()),
                                           ("fc2", Linear(3, 2))]))
    assert model.fc1 is model[0] and model.fc2 is model[2] and model.names[1] == "act"
    assert list(model.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    x = rng.standard_normal((5, 4)).astype(np.float32)
    model.predict(x)
    model.save(tmp_path / "m.npz")
    loaded = nnlite.load(tmp_path / "m.npz")
    assert loaded.names == ["fc1", "act", "fc2"]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert "fc1 Linear" in model.summary() and "(fc2): Linear" in repr(model)
    for bad in ({"fit": ReLU()}, {"a.b": ReLU()}, {"": ReLU()}):
        with pytest.raises(ValueError, match="a layer's name must be a new string"):
            nnlite.Sequential(bad)


def test_summary_shows_every_output_shape_for_an_input_shape_or_after_a_run(rng):
    from nnlite.layers import Conv2D, Flatten, Linear, MaxPool2D, ReLU

    model = nnlite.Sequential(Conv2D(1, 4, 3, padding="same"), ReLU(), MaxPool2D(2),
                              Flatten(), Linear(4 * 14 * 14, 10))
    assert "(None, 4, 28, 28)" not in model.summary() and "?" in model.summary()
    shown = model.summary(input_shape=(1, 28, 28))
    assert "(None, 4, 28, 28)" in shown and "(None, 784)" in shown and "(None, 10)" in shown
    model.predict(rng.standard_normal((2, 1, 28, 28)).astype(np.float32))
    assert model.summary() == shown       # the shape it ran on
