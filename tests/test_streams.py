"""Data that does not fit in memory: fit, evaluate and predict read a dataset object
(Keras's PyDataset protocol) or an iterator of batches, checking every batch."""
import numpy as np
import pytest

import nnlite
from nnlite import layers as L, losses, optim
from nnlite.datasets import ArrayDataset, Dataset


def mlp():
    nnlite.set_seed(0)
    return nnlite.Sequential(L.Linear(6, 8), L.ReLU(), L.Dropout(0.2), L.Linear(8, 3))


@pytest.fixture
def data(rng):
    return rng.standard_normal((100, 6)).astype(np.float32), rng.integers(0, 3, 100)


def trained(x, y=None, **kw):
    model = mlp()
    model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(model.parameters(),
              lr=1e-2), epochs=3, verbose=False, seed=5, **kw)
    return [p.data.copy() for p in model.parameters()], model


def same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))


def test_a_dataset_and_a_generator_train_to_the_weights_of_the_same_batches_as_arrays(data):
    x, y = data
    arrays, _ = trained(x, y, batch_size=16, shuffle=False)
    dataset, _ = trained(ArrayDataset(x, y, batch_size=16), shuffle=False)
    assert same(arrays, dataset)

    def generator():
        while True:
            for start in range(0, 100, 16):
                yield x[start:start + 16], y[start:start + 16]
    assert same(arrays, trained(generator(), steps_per_epoch=7)[0])


def test_a_memory_mapped_npy_file_streams_through_a_dataset(data, tmp_path):
    x, y = data
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert same(trained(x, y, batch_size=16, shuffle=False)[0],
                trained(ArrayDataset(mapped, y, batch_size=16), shuffle=False)[0])


def test_shuffled_batches_follow_the_seed_and_a_resumed_run_is_bit_identical(data, tmp_path):
    x, y = data
    first, _ = trained(ArrayDataset(x, y, 16, shuffle=True))
    assert same(first, trained(ArrayDataset(x, y, 16, shuffle=True))[0])
    assert not same(first, trained(ArrayDataset(x, y, 16))[0])
    model = mlp()
    path = tmp_path / "c.npz"
    fit = dict(loss=losses.CrossEntropy(), verbose=False, seed=5)
    model.fit(ArrayDataset(x, y, 16, shuffle=True), optimizer=optim.Adam(
        model.parameters(), lr=1e-2), epochs=1, callbacks=[
        nnlite.callbacks.ModelCheckpoint(path)], **fit)
    resumed, opt, epoch = nnlite.load_checkpoint(path)
    resumed.fit(ArrayDataset(x, y, 16, shuffle=True), optimizer=opt, epochs=3,
                initial_epoch=epoch, **fit)
    assert same(first, [p.data for p in resumed.parameters()])


class Counting(Dataset):
    def __init__(self, x, y, broken=None):
        self.x, self.y, self.broken, self.ends, self.epochs = x, y, broken, 0, []

    def __len__(self):
        return 5

    def __getitem__(self, i):
        rows = slice(20 * i, 20 * i + 20)
        if i == self.broken == 3:
            return self.x[rows]                     # no targets
        x = self.x[rows].copy()
        if i == self.broken == 2:
            x[4, 1] = np.nan
        if i == self.broken == 4:
            x = x[:, :5]
        return x, self.y[rows]

    def on_epoch_end(self):
        self.ends += 1

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def test_fit_calls_the_datasets_hooks_and_validates_and_predicts_from_datasets(data):
    x, y = data
    counting = Counting(x, y)
    _, model = trained(counting, validation_data=Counting(x, y))
    assert counting.ends == 3 and counting.epochs == [0, 1, 2]
    scores = model.evaluate(Counting(x, y))
    assert scores == pytest.approx(model.evaluate(x, y))
    np.testing.assert_array_equal(model.predict(ArrayDataset(x, batch_size=30)),
                                  model.predict(x))
    np.testing.assert_array_equal(model.predict(iter([x[:50], x[50:]]), steps=2),
                                  model.predict(x))


@pytest.mark.parametrize("broken, message", [
    (2, r"fit: batch 2 of the dataset: x has NaN or infinite values, first in row 4"),
    (3, r"fit: batch 3 of the dataset is ndarray, not a pair \(x, y\)"),
    (4, r"fit: batch 4 of the dataset.*expects input of shape \(N, 6\)"),
])
def test_every_batch_is_checked_and_a_bad_one_named(data, broken, message):
    x, y = data
    with pytest.raises(ValueError, match=message):
        trained(Counting(x, y, broken), shuffle=False)


def test_the_arguments_streams_need(data):
    x, y = data
    with pytest.raises(ValueError, match="leave y out"):
        trained(ArrayDataset(x, y), y)
    for steps, message in [(None, r"ran out in epoch 2, after 0 batches;"),
                           (2, r"ran out in epoch 1, after 1 batches of the 2 an epoch")]:
        model = mlp()            # a one-shot iterator that runs out ends training, as Keras's
        with pytest.warns(UserWarning, match=message):
            history = model.fit(iter([(x, y)]), loss=losses.CrossEntropy(), epochs=3,
                                optimizer=optim.Adam(model.parameters()), verbose=False,
                                steps_per_epoch=steps)
        assert history.epoch == [0]  # the epoch it trained, and nothing made up
    with pytest.raises(ValueError, match="made of batches already .* batch_size=16"):
        trained(ArrayDataset(x, y), batch_size=16)
    with pytest.raises(ValueError, match=r"steps_per_epoch must be a whole number in \[1, 7"):
        trained(ArrayDataset(x, y, 16), steps_per_epoch=8)
    with pytest.raises(ValueError, match="not an iterator, which the first epoch would use"):
        trained(x, y, validation_data=iter([(x, y)]))


def test_each_shape_goes_through_the_model_once_and_every_batch_through_the_rest(data):
    x, y = data
    model = mlp()
    probes = []
    probe = model._check_inputs
    model._check_inputs = lambda xs, what: probes.append(what) or probe(xs, what)
    model.fit(Counting(x, y), loss=losses.CrossEntropy(), epochs=2, verbose=False,
              optimizer=optim.SGD(model.parameters(), lr=0.1))
    assert probes == ["fit: batch 0 of the dataset"]      # five batches of one shape, twice
    bad = Counting(x, y.copy())
    bad.y[45] = 7                                         # batch 2's labels: no probe needed
    with pytest.raises(ValueError, match="batch 2 of the dataset.*7"):
        model.fit(bad, loss=losses.CrossEntropy(), epochs=1, verbose=False,
                  optimizer=optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="ArrayDataset: x has 100 samples but y has 99"):
        ArrayDataset(x, y[:99])


def test_an_idx_file_is_memory_mapped_as_read_and_a_gzip_one_refused(data_root, tmp_path):
    import gzip
    packed = data_root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(ValueError, match="cannot be memory-mapped; decompress it first"):
        nnlite.datasets.read_idx(packed, mmap_mode="r")
    raw = tmp_path / "labels.idx"
    raw.write_bytes(gzip.decompress(packed.read_bytes()))
    mapped = nnlite.datasets.read_idx(raw, mmap_mode="r")
    np.testing.assert_array_equal(mapped, nnlite.datasets.read_idx(packed))
    raw.write_bytes(raw.read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says shape"):
        nnlite.datasets.read_idx(raw, mmap_mode="r")


def test_a_huge_shuffled_dataset_draws_only_the_batches_an_epoch_takes():
    """len(dataset) = 10⁹ with steps_per_epoch=4: four distinct batches drawn, not a
    permutation of 10⁹ indices (7.45 GiB)."""
    import tracemalloc

    class Huge:
        def __init__(self):
            self.read = []

        def __len__(self):
            return 10 ** 9

        def __getitem__(self, i):
            self.read.append(i)
            rng = np.random.default_rng(i)
            return rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 2, 8)

    data, model = Huge(), nnlite.Sequential(L.Linear(4, 2))
    tracemalloc.start()
    model.fit(data, steps_per_epoch=4, epochs=2, loss=losses.CrossEntropy(), seed=0,
              optimizer=optim.SGD(model.parameters(), lr=0.1), verbose=False)
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    assert peak < 64, peak
    epochs = [data.read[1:5], data.read[5:9]]  # (read[0]: the door's look at batch 0)
    assert all(len(set(e)) == 4 for e in epochs) and epochs[0] != epochs[1]


def test_a_pytorch_dataloader_or_a_list_of_batches_trains_every_epoch_as_the_arrays_do(data):
    """A re-iterable of (x, y) batches is iterated afresh each epoch (len() its steps): a
    DataLoader yields lists of tensors, taken as arrays."""
    torch = require_torch()
    x, y = data
    batches = [(x[i:i + 20], y[i:i + 20]) for i in range(0, 100, 20)]
    arrays, _ = trained(x, y, batch_size=20, shuffle=False)
    listed, model = trained(batches, shuffle=False)
    assert same(arrays, listed)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        batch_size=20, shuffle=False)
    loaded, model = trained(loader, shuffle=False)
    assert same(arrays, loaded)
    np.testing.assert_array_equal(model.predict(loader), model.predict(x))
    scores = model.evaluate(loader)
    assert scores == pytest.approx(model.evaluate(x, y, loss=losses.CrossEntropy()))
    with pytest.raises(ValueError, match=r"made of batches already \(DataLoader\), so "
                                         r"batch_size=20 cannot apply"):
        trained(loader, batch_size=20)
    history = model.fit(loader, loss=losses.CrossEntropy(), epochs=2, verbose=False,
                        optimizer=optim.SGD(model.parameters(), lr=0.1),
                        validation_data=loader)     # a re-iterable validates every epoch
    assert len(history.history["val_loss"]) == 2


def require_torch():
    from conftest import require
    return require("torch")


def test_validation_split_holds_out_the_last_part_before_shuffling(data):
    x, y = data
    split, _ = trained(x, y, validation_split=0.2)
    held, _ = trained(x[:80], y[:80], validation_data=(x[80:], y[80:]))
    assert same(split, held)
    model = mlp()
    history = model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(
        model.parameters()), epochs=1, validation_split=0.2, verbose=False, seed=5)
    assert history.history["val_loss"][0] == pytest.approx(
        model.evaluate(x[80:], y[80:])["loss"], rel=1e-6)
    for kwargs, message in [({"validation_split": 1.0}, "leave samples on both sides"),
                            ({"validation_split": -0.1}, r"validation_split must be a number"),
                            ({"validation_split": 0.2, "validation_data": (x, y)},
                             "validation_data or validation_split, not both")]:
        with pytest.raises(ValueError, match=message):
            trained(x, y, **kwargs)
    with pytest.raises(ValueError, match="validation_split cuts arrays"):
        trained(ArrayDataset(x, y, 20), validation_split=0.2)


def test_a_bad_label_in_the_part_validation_split_holds_out_is_refused_before_training(data):
    x, y = data
    y = y.copy()
    y[-1] = 7                                   # out of range for 3 classes, in the last 20%
    model = mlp()
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"class labels.*\[0, 3\)|label"):
        model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(
            model.parameters()), epochs=2, validation_split=0.2, verbose=False)
    assert same(before, [p.data for p in model.parameters()])


def test_arrays_with_batches_for_validation_and_batches_with_arrays_for_validation(data):
    """Each validates in its own batches: fit's batch_size is the arrays', not a dataset's."""
    x, y = data
    for train, val, batch in [((x, y), ArrayDataset(x, y, 25), 20),
                              ((ArrayDataset(x, y, 20),), (x, y), None)]:
        model = mlp()
        history = model.fit(*train, loss=losses.CrossEntropy(), epochs=1, verbose=False,
                            optimizer=optim.Adam(model.parameters()), batch_size=batch,
                            validation_data=val)
        scores = model.evaluate(*(val if isinstance(val, tuple) else (val,)))
        assert history.history["val_loss"][0] == pytest.approx(scores["loss"], rel=1e-6)
