"""Frozen layers (``trainable = False``, Keras's name): fit and optimizers leave them as
they are, backward computes none of their gradients, files keep the flag."""
import numpy as np
import pytest

import nnlite
from nnlite import layers as L, losses, optim


def cnn():
    nnlite.set_seed(0)
    body = nnlite.Sequential(L.Conv2D(1, 4, 3, padding=1), L.BatchNorm(4), L.ReLU(),
                             L.MaxPool2D(2), L.Flatten())
    return nnlite.Sequential(body, L.Linear(4 * 4 * 4, 16), L.ReLU(), L.Linear(16, 3))


def data(rng, n=96):
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


def snapshot(layer):
    return [p.data.copy() for p in layer.parameters()] + [b.copy() for _, b in
                                                          layer.named_buffers()]


def test_a_frozen_body_stays_bit_identical_buffers_included_and_the_head_learns(rng):
    model = cnn()
    x, y = data(rng)
    model[0].trainable = False
    assert not model[0].trainable and not model[0][1].trainable and model[1].trainable
    before, head = snapshot(model[0]), snapshot(model[1])
    model.fit(x, y, loss=losses.CrossEntropy(), epochs=2, batch_size=32, verbose=False,
              optimizer=optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1))
    for a, b in zip(before, snapshot(model[0])):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(head, snapshot(model[1])))
    assert model.trainable_parameters() == model[1].parameters() + model[3].parameters()


def test_a_frozen_stem_is_not_visited_by_backward_and_computes_no_gradient(rng):
    model = cnn()
    x, y = data(rng)
    model[0].trainable = False
    calls = []
    for layer in model[0]:
        layer.backward = lambda g, original=layer.backward: calls.append(1) or original(g)
    model.fit(x, y, loss=losses.CrossEntropy(), epochs=1, batch_size=32, verbose=False,
              optimizer=optim.SGD(model.parameters(), lr=0.1))
    assert not calls
    model.forward(x)                               # by hand, dL/dx through the frozen body
    model.backward(np.ones((len(x), 3), np.float32))
    assert calls and not any(p.grad.any() for p in model[0].parameters())
    assert all(p.grad.any() for p in model[1].parameters())


def test_a_frozen_batchnorm_normalises_with_its_running_statistics_and_keeps_them(rng):
    bn = L.BatchNorm(3)
    bn.running_mean[:] = [0.5, -1.0, 2.0]
    bn.running_var[:] = [4.0, 0.25, 1.0]
    x = rng.standard_normal((8, 3)).astype(np.float32)
    with bn.evaluating():
        expected = bn.forward(x)
    bn.trainable = False
    assert bn.training
    np.testing.assert_array_equal(bn.forward(x), expected)
    assert bn.running_mean.tolist() == [0.5, -1.0, 2.0] and int(bn.num_batches_tracked) == 0
    assert nnlite.check.check_layer(bn, x.astype(np.float64)[:1])   # one row is fine frozen


@pytest.mark.parametrize("make", [lambda p: optim.Adam(p, lr=0.1, weight_decay=0.1),
                                  lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
                                  lambda p: optim.NAdam(p)])
def test_an_optimizer_over_frozen_parameters_leaves_them_and_keeps_the_others_state(make, rng):
    model = nnlite.Sequential(L.Linear(3, 4), L.Linear(4, 2))
    opt = make(model.parameters())
    model[0].trainable = False                     # after the optimizer was made
    frozen = [p.data.copy() for p in model[0].parameters()]
    for step in range(3):
        opt.zero_grad()
        for p in model.parameters():
            p.grad[...] = rng.standard_normal(p.shape)   # even a gradient does not move it
        opt.step()
        if step == 1:
            state = {k: v.copy() for k, v in opt.state.items()}
    for p, want in zip(model[0].parameters(), frozen):
        np.testing.assert_array_equal(p.data, want)
    model[0].trainable = True                     # unfrozen: it learns again, the rest goes on
    opt.zero_grad()
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()
    assert not np.array_equal(model[0].weight.data, frozen[0])
    assert all(opt.state[k].size == 4 * 3 + 4 + 4 * 2 + 2 for k in state)


def test_files_and_checkpoints_keep_trainable_and_resume_exactly(rng, tmp_path):
    x, y = data(rng)
    model = cnn()
    model[0][0].trainable = False                 # the first convolution only
    model.save(tmp_path / "m.npz")
    loaded = nnlite.load(tmp_path / "m.npz")
    assert [m.trainable for m in loaded.modules()] == [m.trainable for m in model.modules()]
    assert not loaded[0][0].weight.requires_grad and loaded[0][1].weight.requires_grad

    def run(epochs, initial=0, start=None):
        m, opt = start or (cnn(), None)
        if start is None:
            m[0][0].trainable = False
            opt = optim.Adam(m.trainable_parameters(), lr=1e-2)
        m.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=epochs,
              initial_epoch=initial, batch_size=32, verbose=False, seed=3,
              callbacks=[nnlite.callbacks.ModelCheckpoint(tmp_path / f"c{epochs}.npz")])
        return m
    full = run(2)
    run(1)
    model, opt, epoch = nnlite.load_checkpoint(tmp_path / "c1.npz")
    assert epoch == 1 and not model[0][0].trainable and len(opt.params) == 8 - 2
    resumed = run(2, 1, (model, opt))
    for a, b in zip(snapshot(full), snapshot(resumed)):
        np.testing.assert_array_equal(a, b)


def test_summary_counts_trainable_and_non_trainable_parameters_as_keras(capsys):
    model = cnn()
    model[0].trainable = False
    text = model.summary()
    conv, bn = 4 * 9 + 4, 4 + 4
    buffers = 4 + 4 + 1                            # running mean and variance, the batch count
    head = 64 * 16 + 16 + 16 * 3 + 3
    assert f"Trainable params: {head:,}" in text
    assert f"Non-trainable params: {conv + bn + buffers:,}" in text
    assert f"Total params: {head + conv + bn + buffers:,}" in text


def test_trainable_takes_true_or_false():
    with pytest.raises(ValueError, match="trainable must be True or False"):
        L.Linear(2, 2).trainable = "no"


def test_a_frozen_first_node_of_a_graph_is_not_visited_by_backward(rng):
    x, y = data(rng)
    stem = cnn()[0]
    inputs = nnlite.Input((1, 8, 8))
    model = nnlite.Model(inputs, L.Linear(64, 3)(stem(inputs)))
    stem.trainable = False                             # after the graph was planned
    calls = []
    stem.backward = lambda g, original=stem.backward: calls.append(1) or original(g)
    before = snapshot(stem)
    model.fit(x, y, loss=losses.CrossEntropy(), epochs=1, batch_size=32, verbose=False,
              optimizer=optim.Adam(model.parameters(), lr=1e-2))
    assert not calls and all(np.array_equal(a, b) for a, b in zip(before, snapshot(stem)))


def test_a_checkpoint_whose_optimizer_leaves_out_a_trainable_parameter_is_refused(rng, tmp_path):
    model = cnn()
    opt = optim.Adam(model[1].parameters())          # nothing is frozen
    with pytest.raises(ValueError, match="does not hold the model's trainable parameter"):
        model.save(tmp_path / "c.npz", optimizer=opt, epoch=1)
    model[1].trainable = False                        # the first Linear of the head
    model.save(tmp_path / "c.npz", optimizer=optim.Adam(model.trainable_parameters()), epoch=1)
    from conftest import rewrite
    rewrite(tmp_path / "c.npz", change_header=lambda h: h["architecture"]["config"][
        "layers"][1]["layer"].pop("trainable"))       # the file's Linear is trainable again
    with pytest.raises(ValueError, match="does not hold the model's trainable parameter"):
        nnlite.load_checkpoint(tmp_path / "c.npz")



class Unfreeze(nnlite.callbacks.Callback):
    """Keeps ``layer`` frozen in epoch 0, unfreezes it from epoch 1 on, and notes whether its
    weights moved in each epoch."""

    def __init__(self, layer):
        self.layer, self.moved = layer, []

    def on_epoch_begin(self, epoch, logs=None):
        self.layer.trainable = epoch >= 1
        self.before = [p.data.copy() for p in self.layer.parameters()]

    def on_epoch_end(self, epoch, logs=None):
        self.moved.append(any(not np.array_equal(a, p.data)
                              for a, p in zip(self.before, self.layer.parameters())))


def stems():
    """(model, its first layer with parameters): a Sequential, one inside another, a graph."""
    nnlite.set_seed(0)
    conv = L.Conv2D(1, 4, 3, padding=1)
    yield nnlite.Sequential(conv, L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Linear(64, 3)), conv
    conv = L.Conv2D(1, 4, 3, padding=1)
    body = nnlite.Sequential(conv, L.ReLU(), L.MaxPool2D(2), L.Flatten())
    yield nnlite.Sequential(body, L.Linear(64, 16), L.ReLU(), L.Linear(16, 3)), conv
    conv, x = L.Conv2D(1, 4, 3, padding=1), nnlite.Input((1, 8, 8))
    h = L.Flatten()(L.MaxPool2D(2)(L.ReLU()(conv(x))))
    yield nnlite.Model(x, L.Linear(16, 3)(L.ReLU()(L.Linear(64, 16)(h)))), conv


@pytest.mark.parametrize("which", range(3))
@pytest.mark.parametrize("threads", [1, 2])
def test_a_stem_a_callback_unfreezes_learns_from_then_on(which, threads, rng):
    # backward's reach is set for the frozen stem at the start of fit, and again when
    # the callback unfreezes it (before, the stem stayed as it was, silently)
    model, stem = list(stems())[which]
    x, y = data(rng)
    unfreeze = Unfreeze(stem)
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(model.parameters()),
              epochs=3, batch_size=32, verbose=False, callbacks=[unfreeze], threads=threads)
    assert unfreeze.moved == [False, True, True]


def test_metrics_by_name_in_fit_and_evaluate_equal_scikit_learns(rng):
    from sklearn.metrics import (mean_absolute_error, mean_squared_error,
                                 top_k_accuracy_score)

    from nnlite.metrics import TopKAccuracy

    x, y = rng.standard_normal((200, 6)).astype(np.float32), rng.integers(0, 10, 200)
    model = nnlite.Sequential(L.Linear(6, 10))
    history = model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(
        model.parameters()), epochs=2, verbose=False, validation_split=0.25,
        metrics=["accuracy", "top_k_accuracy", TopKAccuracy(3)])
    assert {"accuracy", "top_k_accuracy", "top_3_accuracy", "val_top_k_accuracy",
            "val_top_3_accuracy"} <= set(history.history)
    scores = model.evaluate(x, y, metrics=["accuracy", "top_k_accuracy", TopKAccuracy(3)])
    logits = model.predict(x)
    assert scores["top_k_accuracy"] == pytest.approx(
        top_k_accuracy_score(y, logits, k=5, labels=range(10)))
    assert scores["top_3_accuracy"] == pytest.approx(
        top_k_accuracy_score(y, logits, k=3, labels=range(10)))
    tied = np.array([[1.0, 1.0, 1.0, 0.0]])     # the label tied with the k-th: counted in
    assert TopKAccuracy(1)(tied, np.array([2])) == 1.0
    assert TopKAccuracy(1)(tied, np.array([3])) == 0.0
    reg = nnlite.Sequential(L.Linear(6, 2))
    t = rng.standard_normal((200, 2)).astype(np.float32)
    h = reg.fit(x, t, loss=losses.MSE(), optimizer=optim.Adam(reg.parameters()),
                verbose=False, metrics=["mae", "mse"])
    assert set(h.history) == {"loss", "mae", "mse"}
    got = reg.evaluate(x, t, metrics=["mae", "mse"])
    assert got["mae"] == pytest.approx(mean_absolute_error(t, reg.predict(x)), rel=1e-6)
    assert got["mse"] == pytest.approx(mean_squared_error(t, reg.predict(x)), rel=1e-6)
    with pytest.raises(ValueError, match=r"unknown metric 'f1'; nnlite knows accuracy, "
                                         r"top_k_accuracy, mae, mse"):
        reg.evaluate(x, t, metrics=["f1"])
    with pytest.raises(ValueError, match="accuracy is for classification"):
        reg.fit(x, t, loss=losses.MSE(), optimizer=optim.Adam(reg.parameters()),
                verbose=False, metrics=["accuracy"])
    with pytest.raises(ValueError, match="does not match predictions of shape"):
        reg.fit(x, t[:, :1], loss=losses.MSE(), optimizer=optim.Adam(reg.parameters()),
                verbose=False, metrics=["mae"])


def test_a_refused_fit_with_metrics_leaves_the_model_as_it_was(rng):
    x, t = rng.standard_normal((40, 6)).astype(np.float32), np.zeros((40, 2), np.float32)
    model = nnlite.Sequential(L.Linear(6, 2))
    before = dict(vars(model))
    with pytest.raises(ValueError, match="epochs"):
        model.fit(x, t, loss=losses.MSE(), optimizer=optim.SGD(model.parameters(), lr=0.1),
                  epochs=-1, metrics=["mae"], verbose=False)
    assert vars(model) == before
