"""A checkpoint resumes exactly, or load_checkpoint refuses it naming the file and entry."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

import nnlite
from nnlite import losses, optim
from nnlite.layers import Linear, ReLU

from conftest import require, rewrite


def digits():
    x, y = load_digits(return_X_y=True)
    return (x / 16).astype(np.float32)[:300], y[:300]


def checkpoint(tmp_path, make_optimizer, epochs=2):
    """A model trained ``epochs`` epochs, saved as a checkpoint; (path, x, y)."""
    x, y = digits()
    nnlite.set_seed(0)
    model = nnlite.Sequential(Linear(64, 12), ReLU(), Linear(12, 10))
    opt = make_optimizer(model.parameters())
    path = tmp_path / "run.npz"
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=epochs, batch_size=64,
              seed=1, verbose=False, callbacks=[nnlite.callbacks.ModelCheckpoint(path)])
    return path, x, y


W = "optim/0.weight/"  # the first layer's weight: its state in a checkpoint


def _pop(*names):
    return lambda a: [a.pop(W + n) for n in names]


def _rename(old, new):
    return lambda a: a.update({W + new: a.pop(W + old)})


def _optimizer(**changes):
    return lambda h: h["optimizer"].update(changes)


def _config(**changes):
    """The same change in the optimizer's defaults or in its (only) parameter group."""
    return [lambda h: h["optimizer"]["config"].update(changes),
            lambda h: h["optimizer"]["groups"][0].update(changes)]


ADAM = lambda p: optim.Adam(p, lr=1e-2)                                     # noqa: E731
SGD = lambda p: optim.SGD(p, lr=0.1, momentum=0.9)                          # noqa: E731
RMS = lambda p: optim.RMSprop(p, lr=1e-3)                                   # noqa: E731


@pytest.mark.parametrize("make, header, arrays, message", [
    (ADAM, None, _pop("exp_avg"), r"state '0.weight/exp_avg' is missing"),
    (ADAM, None, _pop("exp_avg_sq"), r"state '0.weight/exp_avg_sq' is missing"),
    (ADAM, None, _pop("exp_avg", "exp_avg_sq"), r"state '0.weight/exp_avg' is missing"),
    (ADAM, None, _rename("exp_avg", "exp_avgX"),
     r"state '0.weight/exp_avgX' is not one Adam keeps"),
    (ADAM, None, _rename("exp_avg", "momentum_buffer"),
     r"'0.weight/momentum_buffer' is not one Adam"),
    (ADAM, None, lambda a: a.update({W + "_decayed_grad": a[W + "exp_avg"]}),
     r"state '0.weight/_decayed_grad' is not one Adam keeps"),
    (ADAM, None, lambda a: a.update({"optim/exp_avg": a[W + "exp_avg"]}),
     r"state 'exp_avg' is not one Adam keeps"),
    (SGD, None, _pop("momentum_buffer"), r"state '0.weight/momentum_buffer' is missing"),
    (RMS, None, _pop("square_avg"), r"state '0.weight/square_avg' is missing"),
    (ADAM, _optimizer(steps=0), None, r"'0.bias/exp_avg' is not one Adam keeps before its"),
    (ADAM, _optimizer(steps=10 ** 400), None, r"steps must be a whole number in \[0, "),
    (ADAM, _optimizer(steps=-1), None, r"steps must be a whole number"),
    (ADAM, None, lambda a: a.update({W + "exp_avg_sq": -a[W + "exp_avg_sq"] - 1}),
     r"state '0.weight/exp_avg_sq' must hold finite values >= 0"),
    (ADAM, None, lambda a: a.update({W + "exp_avg_sq": a[W + "exp_avg"],
                                     W + "exp_avg": a[W + "exp_avg_sq"]}),
     r"state '0.weight/exp_avg_sq' must hold finite values >= 0"),
    (ADAM, _config(weight_decay=True), None, r"weight_decay must be a number"),
    (SGD, _config(momentum=True), None, r"momentum must be a number"),
    (SGD, _config(nesterov="no"), None, r"nesterov must be True or False"),
    (ADAM, _optimizer(initial_lr=[0]), None, r"initial_lr must be positive"),
    (ADAM, lambda h: h.pop("epoch"), None, r"it has no epoch count"),
    (ADAM, None, lambda a: a.update({W + "exp_avg": a[W + "exp_avg"].reshape(1, -1)}),
     r"state '0.weight/exp_avg' is float32 of shape \(1, 768\); its parameter is float32 of "
     r"shape \(12, 64\)"),
    (ADAM, None, lambda a: a.update({W + "exp_avg": a["optim/2.weight/exp_avg"]}),
     r"state '0.weight/exp_avg' is float32 of shape \(10, 12\); its parameter is float32 of "
     r"shape \(12, 64\)"),
])
def test_a_checkpoint_with_altered_optimizer_state_is_refused(tmp_path, make, header, arrays,
                                                              message):
    path, *_ = checkpoint(tmp_path, make, epochs=1)
    saved = path.read_bytes()
    nnlite.load_checkpoint(path)  # as saved, it loads
    for change in header if isinstance(header, list) else [header]:
        path.write_bytes(saved)
        rewrite(path, change, arrays)
        with pytest.raises(ValueError, match=f"run.npz: .*{message}"):
            nnlite.load_checkpoint(path)


@pytest.mark.parametrize("make", [ADAM, SGD, RMS, lambda p: optim.AdamW(p, lr=1e-2),
                                  lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda p: optim.Adagrad(p, initial_accumulator_value=0.1),
                                  lambda p: optim.Adadelta(p), lambda p: optim.NAdam(p),
                                  lambda p: optim.RAdam(p, weight_decay=0.01)])
def test_resuming_a_checkpoint_matches_the_uninterrupted_run_bit_for_bit(tmp_path, make):
    path, x, y = checkpoint(tmp_path, make, epochs=2)
    full = nnlite.load(path)  # the uninterrupted run's weights after 2 epochs
    first, *_ = checkpoint(tmp_path, make, epochs=1)
    model, opt, epoch = nnlite.load_checkpoint(first)
    assert epoch == 1
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=2, initial_epoch=1,
              batch_size=64, seed=1, verbose=False)
    for a, b in zip(model.parameters(), full.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_adams_state_is_torchs_exp_avg_and_exp_avg_sq(rng):
    torch = require("torch")
    w = rng.standard_normal(20).astype(np.float32)
    p = nnlite.Parameter(w.copy())
    t = torch.nn.Parameter(torch.from_numpy(w.copy()))
    mine, theirs = optim.Adam([p], lr=1e-2), torch.optim.Adam([t], lr=1e-2)
    for _ in range(5):
        g = rng.standard_normal(20).astype(np.float32)
        mine.zero_grad()
        p.grad += g
        mine.step()
        t.grad = torch.from_numpy(g.copy())
        theirs.step()
    for name in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_allclose(mine.state[name], theirs.state[t][name].numpy(), rtol=1e-6)
    np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-6, atol=1e-7)


def _reverse_params(header):
    header["optimizer"]["groups"][0]["params"].reverse()


@pytest.mark.parametrize("make", [ADAM, SGD])
def test_a_checkpoint_listing_its_parameters_in_another_order_resumes_each_ones_state(
        tmp_path, make):
    """The state is stored per parameter, by name: the order a group lists them in does
    not decide whose state is whose."""
    path, x, y = checkpoint(tmp_path, make, epochs=2)
    full = nnlite.load(path)
    first, *_ = checkpoint(tmp_path, make, epochs=1)
    rewrite(first, _reverse_params)
    model, opt, _ = nnlite.load_checkpoint(first)
    assert [n for n, _ in model.named_parameters()][0] == "0.weight"
    assert opt.params[0] is model[2].bias  # the group's order is the file's
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=2, initial_epoch=1,
              batch_size=64, seed=1, verbose=False)
    for a, b in zip(model.parameters(), full.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def _as_version_3(header, arrays):
    """A checkpoint as version 3 wrote it: each state one flat array over the group's
    parameters in the order the group lists them."""
    header["version"] = 3
    names = header["optimizer"]["groups"][0]["params"]
    for state in {k.rsplit("/", 1)[1] for k in arrays if k.startswith("optim/")}:
        arrays[f"optim/{state}"] = np.concatenate(
            [arrays.pop(f"optim/{n}/{state}").ravel() for n in names])


def test_a_version_3_checkpoint_resumes_and_one_listing_another_order_is_refused(tmp_path):
    path, x, y = checkpoint(tmp_path, ADAM, epochs=2)
    full = nnlite.load(path)
    first, *_ = checkpoint(tmp_path, ADAM, epochs=1)
    saved = first.read_bytes()
    header = {}
    rewrite(first, lambda h: header.update(h), None)
    arrays = dict(np.load(first))
    del arrays["__nnlite__"]
    _as_version_3(header, arrays)
    np.savez(first, __nnlite__=np.array(__import__("json").dumps(header)), **arrays)
    model, opt, _ = nnlite.load_checkpoint(first)
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, epochs=2, initial_epoch=1,
              batch_size=64, seed=1, verbose=False)
    for a, b in zip(model.parameters(), full.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    first.write_bytes(saved)   # the flat arrays of a group listed in reverse: refused
    header["optimizer"]["groups"][0]["params"].reverse()
    np.savez(first, __nnlite__=np.array(__import__("json").dumps(header)), **arrays)
    with pytest.raises(ValueError, match=r"run.npz: .*group 0 lists the parameters out of "
                                         r"the model's order"):
        nnlite.load_checkpoint(first)
