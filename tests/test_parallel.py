"""fit(threads=n): each batch split among replicas of the model on n threads trains what one
thread trains (to rounding), BatchNorm's statistics included; dropout draws from
generators of its own; layers with other buffers are refused; an error in one part stops
them all; BLAS's thread count is left as it was."""
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import nnlite
from nnlite import layers as L
from nnlite import losses, optim
from nnlite.training.parallel import Replicas


def cnn():
    return nnlite.Sequential(L.Conv2D(1, 4, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
                             L.Flatten(), L.Linear(4 * 4 * 4, 5))


def two_in_two_out():
    a, b = nnlite.Input((6,)), nnlite.Input((3,))
    h = L.Concatenate()([L.Tanh()(L.Linear(6, 5)(a)), b])
    h = L.Add()([h, L.ReLU()(L.Linear(8, 8)(h))])
    return nnlite.Model([a, b], [L.Linear(8, 4)(h), L.Linear(8, 2)(h)])


def tiny_gpt():
    """Embeddings, causal attention, LayerNorm and a head tied to the token embedding."""
    ids, tokens = nnlite.Input((6,)), L.Embedding(11, 8)
    h = L.PositionalEmbedding(6, 8)(tokens(ids))
    h = L.Add()([h, L.MultiHeadAttention(8, 2, causal=True)(L.LayerNorm(8)(h))])
    head = L.Linear(8, 11, bias=False)
    head.weight = tokens.weight
    return nnlite.Model(ids, head(L.LayerNorm(8)(h)))


def trained(build, x, y, threads, loss=None, epochs=2, batch_size=16, callbacks=()):
    nnlite.set_seed(0)
    model = build().astype(np.float64)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    history = model.fit(x, y, loss=loss or losses.CrossEntropy(), optimizer=opt,
                        batch_size=batch_size, epochs=epochs, seed=3, verbose=False,
                        threads=threads, callbacks=callbacks)
    return [p.data.copy() for p in model.parameters()], history.history.get("loss", [])


def assert_same_training(a, b):
    (wa, la), (wb, lb) = a, b
    np.testing.assert_allclose(la, lb, rtol=1e-12)
    for p, q in zip(wa, wb):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("threads", [2, 3])
def test_a_cnn_trains_on_threads_as_on_one(rng, threads):
    # 37 samples in batches of 16: the last batch (5) splits unevenly
    x, y = rng.standard_normal((37, 1, 8, 8)), rng.integers(0, 5, 37)
    one = trained(cnn, x, y, 1)
    assert_same_training(one, trained(cnn, x, y, threads))
    assert np.abs(one[0][0] - trained(cnn, x, y, threads, epochs=0)[0][0]).max() > 1e-3


def test_a_gpt_with_tied_weights_trains_on_threads_as_on_one(rng):
    x, y = rng.integers(0, 11, (30, 6)), rng.integers(0, 11, (30, 6))
    assert_same_training(trained(tiny_gpt, x, y, 1), trained(tiny_gpt, x, y, 2))


def test_a_batch_of_fewer_rows_than_threads_runs_on_fewer(rng):
    x, y = rng.standard_normal((9, 1, 8, 8)), rng.integers(0, 5, 9)  # last batch: 1 row
    assert_same_training(trained(cnn, x, y, 1, batch_size=4),
                         trained(cnn, x, y, 3, batch_size=4))


def test_a_graph_with_two_inputs_and_two_outputs_trains_on_threads(rng):
    xs = [rng.standard_normal((40, 6)), rng.standard_normal((40, 3))]
    ys = [rng.integers(0, 4, 40), rng.standard_normal((40, 2))]
    loss = [losses.CrossEntropy(), losses.MSE()]
    assert_same_training(trained(two_in_two_out, xs, ys, 1, loss),
                         trained(two_in_two_out, xs, ys, 2, loss))


def test_a_layer_unfrozen_by_a_callback_trains_in_the_replicas_too(rng):
    x, y = rng.standard_normal((32, 1, 8, 8)), rng.integers(0, 5, 32)

    class Unfreeze(nnlite.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model.layers[0].trainable = False

        def on_epoch_begin(self, epoch, logs=None):
            self.model.layers[0].trainable = epoch >= 1

    one = trained(cnn, x, y, 1, epochs=3, callbacks=[Unfreeze()])
    assert_same_training(one, trained(cnn, x, y, 2, epochs=3, callbacks=[Unfreeze()]))


def test_dropout_on_threads_depends_only_on_the_seed_and_differs_between_parts(rng):
    def net():
        return nnlite.Sequential(L.Linear(6, 32), L.Dropout(0.5), L.Linear(32, 3))

    x, y = rng.standard_normal((64, 6)), rng.integers(0, 3, 64)
    first = trained(net, x, y, 2)
    assert_same_training(first, trained(net, x, y, 2))
    nnlite.set_seed(0)
    model = net()
    model.train()
    model.rng = np.random.default_rng(1)
    for m in model.modules():
        m.rng = model.rng
    twin = np.ones((8, 6))
    out = Replicas(model, 2).forward(twin)          # the same rows in both halves
    assert not np.allclose(out[:4], out[4:])


def bn_cnn():
    return nnlite.Sequential(L.Conv2D(1, 4, 3, padding=1), L.BatchNorm(4), L.ReLU(),
                             L.MaxPool2D(2), L.Flatten(), L.Linear(64, 8), L.BatchNorm(8),
                             L.ReLU(), L.Linear(8, 5))


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("frozen", [False, True])
def test_batchnorm_adds_up_its_parts_statistics_and_keeps_the_models_running_ones(
        rng, threads, frozen):
    x, y = rng.standard_normal((37, 1, 8, 8)), rng.integers(0, 5, 37)
    runs = []
    for t in (1, threads):
        nnlite.set_seed(0)
        model = bn_cnn().astype(np.float64)
        model[1].trainable = not frozen  # frozen: normalised with its running statistics
        model[1].running_mean[...] = 0.5
        opt = optim.Adam(model.parameters(), lr=1e-2)
        reset = nnlite.callbacks.LambdaCallback(  # the model's statistics, changed mid-fit
            on_epoch_begin=lambda epoch, logs, bn=model[1]: bn.running_var.fill(epoch + 1))
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, batch_size=16, epochs=2,
                  seed=3, verbose=False, threads=t, callbacks=[reset])
        runs.append([p.data.copy() for p in model.parameters()] +
                    [b.copy() for _, b in model.named_buffers()])
        assert all(m.across is None for m in model.modules() if hasattr(m, "across"))
    for a, b in zip(*runs):  # (the convolution's bias, which BatchNorm undoes, moves by 1e-10)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-8)
    buffers = dict(model.named_buffers())  # the threaded run's
    assert int(buffers["6.num_batches_tracked"]) == 6  # 3 batches an epoch, not 6 or 9
    assert (buffers["1.running_mean"] == 0.5).all() == frozen


def test_a_layer_with_buffers_of_its_own_is_refused_before_anything_changes(rng):
    class Counter(L.ReLU):
        def __init__(self):
            super().__init__()
            self.register_buffer("seen", np.zeros(()))

    model = nnlite.Sequential(L.Linear(4, 8), Counter(), L.Linear(8, 2))
    before = [p.data.copy() for p in model.parameters()]
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"threads=2 .*Counter.*seen"):
        model.fit(rng.standard_normal((8, 4)), rng.integers(0, 2, 8),
                  loss=losses.CrossEntropy(), optimizer=opt, verbose=False, threads=2)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def test_an_error_in_one_part_reaches_fit_and_leaves_no_thread_waiting(rng):
    class FailsInAReplica(L.ReLU):
        home = None  # the thread fit runs in: there, the model's own part passes

        def forward(self, x):
            if threading.current_thread() is not self.home:
                raise RuntimeError("a replica's part failed")
            return super().forward(x)

    model = nnlite.Sequential(L.Linear(4, 8), FailsInAReplica(), L.BatchNorm(8),
                              L.Linear(8, 2))
    errors = []

    def train():
        FailsInAReplica.home = threading.current_thread()
        try:
            model.fit(rng.standard_normal((32, 4)), rng.integers(0, 2, 32), verbose=False,
                      loss=losses.CrossEntropy(), optimizer=optim.SGD(model.parameters(), lr=0.1),
                      threads=2)
        except RuntimeError as e:
            errors.append(str(e))

    runner = threading.Thread(target=train, daemon=True)
    runner.start()
    runner.join(timeout=60)  # the main part waits in BatchNorm's sum until the other fails
    assert not runner.is_alive() and errors == ["a replica's part failed"]


INTERRUPTED = """
import os, signal, sys, threading, time
import numpy as np
import nnlite
from nnlite import layers as L, losses, optim

how, home = sys.argv[1], threading.current_thread()


class Trouble(L.ReLU):
    def forward(self, x):
        mine = threading.current_thread() is home  # the model's own part, in fit's thread
        if len(x) == 1:                             # fit's one-row probe at the door
            return super().forward(x)
        if how == "replica raises" and not mine:
            raise KeyboardInterrupt
        if how == "replica exits" and not mine:
            raise SystemExit(3)
        if how == "model raises" and mine:      # the replica then waits in BatchNorm's sum
            raise KeyboardInterrupt
        if how == "two ctrl-c" and not mine:    # the model's part waits in BatchNorm's sum
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        return super().forward(x)


rng = np.random.default_rng(0)
model = nnlite.Sequential(L.Linear(4, 8), Trouble(), L.BatchNorm(8), L.Linear(8, 2))
model.fit(rng.standard_normal((64, 4)), rng.integers(0, 2, 64), verbose=False, epochs=3,
          loss=losses.CrossEntropy(), optimizer=optim.SGD(model.parameters(), lr=0.1),
          threads=2)
print("fit returned")
"""


@pytest.mark.parametrize("how, returncode", [("replica raises", -2), ("replica exits", 3),
                                             ("model raises", -2), ("two ctrl-c", -2)])
def test_ctrl_c_or_an_exit_in_any_part_ends_fit_and_never_hangs(how, returncode):
    """A BaseException in a part (KeyboardInterrupt, SystemExit), or a second Ctrl-C while
    a part waits in BatchNorm's sum, releases every part and reaches the caller."""
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-c", INTERRUPTED, how], capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{how}: fit(threads=2) hung")
    assert done.returncode == returncode, (done.returncode, done.stderr[-2000:])
    assert "fit returned" not in done.stdout


@pytest.mark.parametrize("threads", [0, 1.5, "2", None])
def test_threads_must_be_a_whole_number_of_at_least_one(rng, threads):
    model = nnlite.Sequential(L.Linear(4, 2))
    with pytest.raises(ValueError, match="threads"):
        model.fit(rng.standard_normal((8, 4)), rng.integers(0, 2, 8),
                  loss=losses.CrossEntropy(), optimizer=optim.SGD(model.parameters(), lr=0.1),
                  verbose=False, threads=threads)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflowing run
def test_blas_keeps_to_one_thread_in_the_parts_and_is_restored_even_after_an_error(rng):
    def counts():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    class Watch(L.ReLU):  # BLAS's thread counts while the parts run
        seen = []

        def forward(self, x):
            Watch.seen.append(counts())
            return super().forward(x)

    before = counts()
    model = nnlite.Sequential(L.Linear(4, 8), Watch(), L.Linear(8, 2))
    opt = optim.SGD(model.parameters(), lr=0.1)
    x, y = rng.standard_normal((32, 4)), rng.integers(0, 2, 32)
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, verbose=False, threads=2)
    probe, *parts = Watch.seen  # the door's one-row probe runs before any thread
    assert probe == before and parts and all(seen == [1] * len(before) for seen in parts)
    assert counts() == before
    opt.lr = 1e30  # the weights overflow: fit rolls back and raises
    with pytest.raises(FloatingPointError):
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=opt, verbose=False, threads=2,
                  epochs=3)
    assert counts() == before
