"""Reliability: clear errors for bad input, divergence, Ctrl-C, torn or foreign files."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits

import nnlite
import nnlite.files.archive
import nnlite.files.safetensors
from nnlite import callbacks, layers, losses, optim


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.data / 16).astype(np.float32), d.target


def mlp():
    return nnlite.Sequential(layers.Linear(64, 32), layers.ReLU(), layers.Linear(32, 10))


# -- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("loss, y, message", [
    (losses.CrossEntropy(), "floats", "must be integers"),
    (losses.CrossEntropy(), "2d", r"target of shape \(1797, 3\) does not fit logits"),
    (losses.MSE(), "labels", r"MSE: target of shape \(1797,\) does not match predictions "
                             r"of shape \(1797, 10\)"),
    (losses.BinaryCrossEntropy(), "labels", "BinaryCrossEntropy: target of shape"),
])
def test_fit_rejects_targets_that_do_not_fit_the_loss(digits, loss, y, message):
    x, labels = digits
    y = {"floats": labels + 0.5, "2d": np.zeros((len(x), 3)), "labels": labels}[y]
    model = mlp()
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, loss=loss, optimizer=optim.SGD(model.parameters(), lr=0.1),
                  verbose=False)


def test_fit_refuses_infinite_inputs_naming_the_row(digits):
    x, y = digits
    bad = x.copy()
    bad[1234, 0] = np.inf
    model = mlp()
    with pytest.raises(ValueError, match="first in row 1234"):
        model.fit(bad, y, loss=losses.CrossEntropy(),
                  optimizer=optim.SGD(model.parameters(), lr=0.1), verbose=False)


def test_validation_data_of_mismatched_length(digits):
    x, y = digits
    model = mlp()
    with pytest.raises(ValueError, match="validation_data: x has 10 samples but y has 9"):
        model.fit(x, y, loss=losses.CrossEntropy(), validation_data=(x[:10], y[:9]),
                  optimizer=optim.SGD(model.parameters(), lr=0.1), verbose=False)


# -- divergence -----------------------------------------------------------------------

def test_divergence_stops_and_restores_the_last_finite_epoch_start(digits, tmp_path):
    x, y = digits

    class Record(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = ([p.data.copy() for p in self.model.parameters()],
                          {k: v.copy() for k, v in self.optimizer.state.items()},
                          self.optimizer.steps)

    class Blowup(callbacks.Callback):
        """Sabotages the weights in the middle of the third epoch."""
        def on_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 5:
                self.model[0].weight.data[0, 0] = np.nan

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    record = Record()
    ckpt = callbacks.ModelCheckpoint(tmp_path / "ckpt.npz")
    model = mlp()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(FloatingPointError, match=r"epoch 3, batch 7"):
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=5, verbose=False,
                  callbacks=[record, Blowup(), ckpt])
    params, state, steps = record.start
    for p, saved in zip(model.parameters(), params):
        np.testing.assert_array_equal(p.data, saved)
    for k, v in state.items():
        np.testing.assert_array_equal(opt.state[k], v)
    assert opt.steps == steps
    saved, _, epoch = nnlite.load_checkpoint(tmp_path / "ckpt.npz")
    assert epoch == 2 and all(np.isfinite(p.data).all() for p in saved.parameters())


def test_a_too_high_learning_rate_ends_with_finite_weights(digits):
    x, _ = digits
    y = x.sum(axis=1, keepdims=True)
    model = nnlite.Sequential(layers.Linear(64, 1))
    opt = optim.SGD(model.parameters(), lr=1.0)  # far beyond stable for this regression
    with pytest.raises(FloatingPointError, match=r"loss is (inf|nan) in epoch 1, batch \d+: "
                                                 r"training diverged"):
        model.fit(x, y, loss=losses.MSE(), optimizer=opt, epochs=3, verbose=False)
    assert all(np.isfinite(p.data).all() for p in model.parameters())


def test_checkpoint_never_saves_non_finite_weights(digits, tmp_path):
    x, y = digits
    model = mlp()
    model.save(tmp_path / "keep.npz")
    before = (tmp_path / "keep.npz").read_bytes()
    ckpt = callbacks.ModelCheckpoint(tmp_path / "keep.npz")
    ckpt.set_context(model, None)
    model[0].weight.data[0, 0] = np.inf
    with pytest.warns(UserWarning, match="not finite"):
        ckpt.on_epoch_end(0, {"loss": 1.0})
    assert (tmp_path / "keep.npz").read_bytes() == before


# -- interruption ---------------------------------------------------------------------

class InterruptingAdam(optim.Adam):
    """Delivers Ctrl-C inside a step, before it has returned."""

    def __init__(self, params, at_step, **kw):
        super().__init__(params, **kw)
        self.at_step = at_step

    def _update(self, group, p, g):
        super()._update(group, p, g)
        if self.steps == self.at_step:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)


def test_ctrl_c_finishes_the_batch_warns_once_and_returns_history(digits, recwarn):
    x, y = digits
    handler = signal.getsignal(signal.SIGINT)  # Python's own, or SIG_IGN under nohup
    model = mlp()
    opt = InterruptingAdam(model.parameters(), at_step=70, lr=1e-3)
    reference = mlp()
    for a, b in zip(reference.parameters(), model.parameters()):
        a.data[...] = b.data
    history = model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=5, batch_size=32,
                        seed=0, verbose=False)
    # 57 batches per epoch: one epoch completed, 13 batches into the second.
    assert opt.steps == 70 and history.epoch == [0]
    warnings = [w for w in recwarn if issubclass(w.category, UserWarning)]
    assert len(warnings) == 1 and "interrupted" in str(warnings[0].message)
    # exactly 70 whole updates: the same as training 70 batches uninterrupted
    ref_opt = optim.Adam(reference.parameters(), lr=1e-3)
    batches = []
    for epoch in range(2):
        rng = np.random.default_rng([0, epoch])
        batches += list(nnlite.datasets.batches(x, y, 32, rng=rng))
    loss = losses.CrossEntropy()
    for xb, yb in batches[:70]:
        loss.forward(reference(xb), yb)
        ref_opt.zero_grad()
        reference.backward(loss.backward())
        ref_opt.step()
    for a, b in zip(reference.parameters(), model.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6)
    assert signal.getsignal(signal.SIGINT) is handler          # put back as it was


# -- files ----------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.npz"
    mlp().save(path)
    return path


def test_save_leaves_no_temporary_files(saved):
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.npz"]


def test_truncated_file_is_a_clear_error(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{saved}.*truncated or corrupt"):
        nnlite.load(saved)


def test_corrupt_file_is_a_clear_error(saved):
    data = bytearray(saved.read_bytes())
    data[len(data) // 3] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=str(saved)):
        nnlite.load(saved)


def test_foreign_files_are_clear_errors(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz is not an nnlite file"):
        nnlite.load(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="text.npz"):
        nnlite.load(tmp_path / "text.npz")


def rewrite_header(path, change):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays["__nnlite__"]))
    change(header)
    arrays["__nnlite__"] = np.array(json.dumps(header))
    np.savez(path, **arrays)


def test_newer_format_version_is_refused(saved):
    rewrite_header(saved, lambda h: h.update(version=99))
    with pytest.raises(ValueError, match=r"model.npz: it has format version 99, newer"):
        nnlite.load(saved)


def test_unknown_layer_and_wrong_shapes_are_clear_errors(saved):
    rewrite_header(saved, lambda h: h["architecture"]["config"]["layers"][0]["layer"].update(
        {"class": "Evil"}))
    with pytest.raises(ValueError, match="unknown layer class 'Evil'"):
        nnlite.load(saved)


def test_shape_mismatch_in_file_is_a_clear_error(saved):
    rewrite_header(saved, lambda h: h["architecture"]["config"]["layers"][0]["layer"]["config"]
        .update(out_features=31))
    with pytest.raises(ValueError, match=r"parameter '0.weight' has shape \(32, 64\), the "
                                         r"architecture needs \(31, 64\)"):
        nnlite.load(saved)


def test_loading_never_unpickles(saved, tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with np.load(saved) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["param/0.weight"] = np.array([Boom()], dtype=object)
    np.savez(saved, **arrays)
    with pytest.raises(ValueError, match=str(saved)):
        nnlite.load(saved)
    assert not (tmp_path / "pwned").exists()


def test_killing_a_process_mid_save_never_leaves_a_torn_file(tmp_path):
    path = tmp_path / "big.npz"
    script = textwrap.dedent(f"""
        import numpy as np, nnlite
        from nnlite.layers import Linear
        model = nnlite.Sequential(Linear(1000, 1000), Linear(1000, 1000))
        model.save({str(path)!r})
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            model[0].bias.data[...] = i
            model.save({str(path)!r})
    """)
    for delay in (0.05, 0.2, 0.4):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.kill()
        proc.wait()
        model = nnlite.load(path)  # the old file or the new one, never a torn one
        bias = model[0].bias.data
        assert np.all(bias == bias[0])
        leftovers = {p.name for p in tmp_path.iterdir()} - {"big.npz"}
        assert len(leftovers) <= 1  # at most the one temporary file the kill interrupted
        for p in leftovers:
            (tmp_path / p).unlink()
        model.save(path)
        assert [p.name for p in tmp_path.iterdir()] == ["big.npz"]


def test_two_saves_to_one_path_at_once_do_not_mix(tmp_path):
    path = tmp_path / "model.npz"

    def first(f):  # a second writer saves to the same path while the first is mid-write
        f.write(b"first, ")
        nnlite.files.archive.atomic_write(path, lambda g: g.write(b"second"))
        f.write(b"complete")

    nnlite.files.archive.atomic_write(path, first)
    assert path.read_bytes() == b"first, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_resuming_in_a_new_process_is_bit_identical(tmp_path):
    common = textwrap.dedent("""
        import sys, numpy as np, nnlite
        from nnlite import layers, losses, optim
        from sklearn.datasets import load_digits
        d = load_digits(); x = (d.data / 16).astype(np.float32); y = d.target
    """)
    first = common + textwrap.dedent(f"""
        nnlite.set_seed(0)
        model = nnlite.Sequential(layers.Linear(64, 32), layers.ReLU(), layers.Dropout(0.3),
                                  layers.Linear(32, 10))
        opt = optim.Adam(model.parameters(), lr=1e-2)
        ckpt = nnlite.callbacks.ModelCheckpoint({str(tmp_path / 'run.npz')!r})
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=int(sys.argv[1]),
                  seed=0, callbacks=[ckpt], verbose=False)
        model.save({str(tmp_path / 'straight.npz')!r})
    """)
    second = common + textwrap.dedent(f"""
        model, opt, epoch = nnlite.load_checkpoint({str(tmp_path / 'run.npz')!r})
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=4,
                  initial_epoch=epoch, seed=0, verbose=False)
        model.save({str(tmp_path / 'resumed.npz')!r})
    """)

    def run(code, *args):
        subprocess.run([sys.executable, "-c", code, *args], check=True)

    run(first, "4")
    straight = nnlite.load(tmp_path / "straight.npz")
    run(first, "2")
    run(second)
    resumed = nnlite.load(tmp_path / "resumed.npz")
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


# -- training that cannot quietly do nothing ----------------------------------------------------
def test_fit_with_an_optimizer_over_another_models_parameters_is_refused(digits):
    x, y = digits
    old = mlp()
    opt = optim.Adam(old.parameters())
    model = mlp()                                 # rebuilt, the old optimizer kept
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"fit: the optimizer holds none of this model's "
                                         r"parameters.*model rebuilt"):
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, verbose=False)
    mixed = optim.Adam(model.parameters()[:2] + old.parameters()[:1])
    with pytest.raises(ValueError, match=r"holds 1 parameter\(s\) this model does not have"):
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=mixed, verbose=False)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def test_evaluate_reports_accuracy_for_classification_outputs_only(digits, rng):
    x, y = digits
    reg = nnlite.Sequential(layers.Linear(64, 1))
    target = x[:, :1] * 2
    reg.fit(x, target, loss=losses.MSE(), optimizer=optim.Adam(reg.parameters()),
            verbose=False)
    scores = reg.evaluate(x, target)
    assert set(scores) == {"loss"}               # the MSE fit trained with, no accuracy
    with pytest.raises(ValueError, match=r"evaluate: accuracy is for classification; the "
                                         r"output is a regression \(MSE loss"):
        reg.evaluate(x, target, metrics=("accuracy",))
    with pytest.raises(ValueError, match=r"nothing to report for the output: give loss="):
        nnlite.Sequential(layers.Linear(64, 1)).evaluate(x, target)
    i = nnlite.Input((64,))
    h = layers.ReLU()(layers.Linear(64, 16)(i))
    two = nnlite.Model(i, [layers.Linear(16, 10)(h), layers.Linear(16, 1)(h)])
    two.fit(x, [y, target], loss=[losses.CrossEntropy(), losses.MSE()],
            optimizer=optim.Adam(two.parameters()), verbose=False,
            validation_data=(x[:50], [y[:50], target[:50]]))
    scores = two.evaluate(x, [y, target])
    assert set(scores) == {"loss", "output_0_loss", "output_1_loss", "output_0_accuracy"}
    clf = mlp()
    assert set(clf.evaluate(x, y)) == {"accuracy"}  # integer labels, no loss known


@pytest.mark.parametrize("width, targets", [(1, "zeros"), (1, "labels"), (3, "labels")])
def test_evaluate_reports_no_accuracy_for_a_regression_with_integer_targets(
        digits, tmp_path, width, targets):
    """No loss known: integer targets make an accuracy only for a classifier's output
    (more than one unit, the targets its class labels); a one-unit output scored by argmax
    would be right for every target 0."""
    x, y = digits
    t = np.zeros(len(x), np.int64) if targets == "zeros" else y
    model = nnlite.Sequential(layers.Linear(64, width))
    model.save(tmp_path / "m.npz")
    for m in (model, nnlite.load(tmp_path / "m.npz")):
        with pytest.raises(ValueError, match=r"nothing to report for the output: give loss="):
            m.evaluate(x, t)
        if width == 1:
            assert set(m.evaluate(x, t, loss=losses.MSE())) == {"loss"}


def test_batchnorm_and_a_last_batch_of_one_is_caught_before_the_first_step(digits):
    x, y = digits
    model = nnlite.Sequential(layers.Linear(64, 8), layers.BatchNorm(8), layers.Linear(8, 10))
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"fit: the last batch of each epoch would hold 1 "
                                         r"sample \(33 samples, batch_size=32\).*drop_last"):
        model.fit(x[:33], y[:33], loss=losses.CrossEntropy(), batch_size=32,
                  optimizer=optim.Adam(model.parameters()), verbose=False)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    history = model.fit(x[:33], y[:33], loss=losses.CrossEntropy(), batch_size=32,
                        drop_last=True, optimizer=optim.Adam(model.parameters()),
                        verbose=False)
    assert len(history.history["loss"]) == 1
    conv = nnlite.Sequential(layers.Conv2D(1, 2, 3), layers.BatchNorm(2), layers.Flatten(),
                             layers.Linear(72, 10))   # (N, C, H, W): one image is enough
    conv.fit(x[:33].reshape(-1, 1, 8, 8), y[:33], loss=losses.CrossEntropy(), batch_size=32,
             optimizer=optim.Adam(conv.parameters()), verbose=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"initial_epoch": 1.5}, r"initial_epoch must be a whole number"),
    ({"batch_size": True}, r"batch_size must be a positive whole number, got True"),
    ({"epochs": True}, r"epochs must be a whole number .* got True"),
    ({"x": (row for row in range(3))}, r"fit: x is a dataset or an iterator of \(x, y\) "
                                       r"batches, which hold the targets; leave y out"),
    ({"x": (row for row in range(3)), "y": None}, r"fit: batch 0 of the dataset is int, not "
                                                  r"a pair \(x, y\)"),
    ({"y": np.full((1797, 10), -0.1)}, r"probability targets must be >= 0"),
    ({"drop_last": "yes"}, r"drop_last must be True or False"),
])
def test_fit_arguments_of_the_wrong_kind_are_value_errors(digits, kwargs, message):
    x, y = digits
    model = mlp()
    args = {"x": x, "y": y, "loss": losses.CrossEntropy(), "epochs": 2,
            "optimizer": optim.Adam(model.parameters()), "verbose": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        model.fit(args.pop("x"), args.pop("y"), **args)
