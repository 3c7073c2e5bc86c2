"""Hostile files: any file of at most 1 MB is loaded or refused in at most 2 s and 64 MB."""
import io
import json
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import nnlite
import nnlite.files.archive
import nnlite.files.safetensors
from nnlite.layers import GRU, LSTM, Conv2D, Embedding, Linear, MultiHeadAttention, ReLU

import hostile

SECONDS, MIB = 2.0, 64


def within_budget(path):
    """Load ``path``; assert the budget; return the model or the ValueError's text."""
    assert path.stat().st_size <= 1 << 20, path.stat().st_size
    tracemalloc.start()
    started = time.perf_counter()
    try:
        outcome = nnlite.load(path)
    except ValueError as e:
        outcome = str(e)
        assert str(path) in outcome
    finally:
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
    assert seconds < SECONDS and peak < MIB, (path.name, seconds, peak, str(outcome)[:200])
    return outcome


@pytest.mark.parametrize("make, message", [
    (hostile.bomb_unknown_member, "would inflate to .* more than the file's own"),
    (hostile.bomb_parameter, "would inflate to"),
    (hostile.bomb_without_header, "would inflate to"),
    (hostile.bomb_header, "would inflate to"),
    (hostile.nested_shared, "too large to rebuild"),
    (hostile.nested_shared_unprobed, "its architecture, of 2,199,023,255,551 layer calls, is "
                                     "too large to rebuild"),
    (hostile.probe_conv, "probe of shape .*1, 4096, 4096.* too large to rebuild"),
    (hostile.probe_attention, "MultiHeadAttention.*too large to rebuild"),
    (hostile.probe_lstm, "LSTM.*too large to rebuild"),
    (hostile.probe_lstm_endless, "too large to rebuild"),
    (hostile.probe_many_shapes, "records 1000 input shapes for a model of 1 input"),
])
def test_each_hostile_kind_is_refused_within_the_budget(tmp_path, make, message):
    outcome = within_budget(make(tmp_path))
    assert isinstance(outcome, str) and __import__("re").search(message, outcome), outcome


def test_nine_thousand_references_to_one_layer_load_within_the_budget(tmp_path):
    model = within_budget(hostile.many_references(tmp_path, 9_000))  # 1 MB of header
    assert len(model) == 9_001 and all(layer is model[0] for layer in model)
    np.testing.assert_array_equal(model.predict(np.array([[-1.0, 2.0, 0.0, -3.0]])),
                                  [[0, 2, 0, 0]])


def _stored(path, members):
    """Re-write ``path`` with ``members`` (name -> bytes), uncompressed, as nnlite writes."""
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)


def _npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def test_an_unknown_stored_member_is_refused_by_name_without_being_read(tmp_path):
    path = tmp_path / "m.npz"
    nnlite.Sequential(Linear(2, 2)).save(path)
    members = _members(path)
    members["zzz.npy"] = _npy(np.zeros(3, np.float32))
    _stored(path, members)
    with pytest.raises(ValueError, match=r"m.npz.*does not use the arrays zzz"):
        nnlite.load(path)


def test_a_header_above_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    nnlite.Sequential(Linear(2, 2)).save(path)
    monkeypatch.setattr(nnlite.files.archive, "MAX_HEADER", 1000)
    with pytest.raises(ValueError, match=r"m.npz: its header of .* bytes is larger than "
                                         r"nnlite reads \(1,000\)"):
        nnlite.load(path)


def test_a_member_of_the_wrong_size_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    nnlite.Sequential(Linear(2, 2)).save(path)
    members = _members(path)
    members["param/0.weight.npy"] = _npy(np.zeros((300, 300), np.float32))
    _stored(path, members)
    read = []
    real = nnlite.files.archive.Archive.read
    monkeypatch.setattr(nnlite.files.archive.Archive, "read",
                        lambda self, name: read.append(name) or real(self, name))
    with pytest.raises(ValueError, match=r"parameter '0.weight' has shape \(300, 300\)"):
        nnlite.load(path)
    assert "param/0.weight" not in read


def _lines_run(work):
    """How many lines of Python ``work()`` runs (a count, not a time: the same on any
    machine); and what it returned."""
    count = [0]

    def tracer(frame, event, arg):
        count[0] += event == "line"
        return tracer
    sys.settrace(tracer)
    try:
        result = work()
    finally:
        sys.settrace(None)
    return count[0], result


def test_building_and_walking_is_linear_in_layers_and_calls():
    small, _ = _lines_run(lambda: nnlite.Sequential(*[ReLU() for _ in range(1_000)]))
    large, model = _lines_run(lambda: nnlite.Sequential(*[ReLU() for _ in range(4_000)]))
    assert large < 4.5 * small  # four times the layers, four times the work: not sixteen
    inner = nnlite.Sequential(Linear(2, 2))
    for _ in range(40):  # 2**40 paths to the Linear's weight, 41 distinct layers
        inner = nnlite.Sequential(inner, inner)
    lines, walks = _lines_run(lambda: (inner.parameters(), list(inner.named_buffers()),
                                       list(inner.modules())))
    assert [len(w) for w in walks] == [2, 0, 42]
    assert lines < 10_000  # about 35 lines a layer a walk: the 42 layers, not the 2**40 paths
    assert model.parameters() == []


def test_seeded_hostile_probes_and_references_stay_within_the_budget(tmp_path):
    """Random layers with random recorded input shapes, and random sharing, each loaded or
    refused within the budget; loaded ones run."""
    rng = np.random.default_rng(0)
    makers = [lambda: Linear(int(rng.integers(1, 64)), int(rng.integers(1, 4096))),
              lambda: Conv2D(int(rng.integers(1, 4)), int(rng.integers(1, 64)), 3,
                             padding=int(rng.integers(0, 200))),
              lambda: MultiHeadAttention(8, 2), lambda: LSTM(2, int(rng.integers(1, 64))),
              lambda: GRU(2, 3), lambda: ReLU(), lambda: Embedding(10, int(rng.integers(1, 512)))]
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(40):
        layer = makers[i % len(makers)]()
        path = tmp_path / f"probe-{i}.npz"
        nnlite.Sequential(layer).save(path)
        members = _members(path)
        header = json.loads(str(np.load(io.BytesIO(members["__nnlite__.npy"]))))
        dims = [int(d) for d in 2 ** rng.integers(0, 13, size=int(rng.integers(1, 4)))]
        if isinstance(layer, Conv2D):
            dims = [layer.in_channels] + dims[:2] + [1] * (2 - len(dims[:2]))
        elif isinstance(layer, (MultiHeadAttention, LSTM, GRU)):
            dims = [dims[0], 8 if isinstance(layer, MultiHeadAttention) else 2]
        header["input_shapes"] = [dims]
        members["__nnlite__.npy"] = _npy(np.array(json.dumps(header)))
        _stored(path, members)
        outcome = within_budget(path)
        outcomes["refused" if isinstance(outcome, str) else "loaded"] += 1
    assert outcomes["refused"] >= 5 and outcomes["loaded"] >= 5, outcomes


def test_the_load_probe_runs_the_numpy_references_not_the_compiled_kernels(tmp_path,
                                                                          monkeypatch):
    from conftest import require
    from nnlite import kernels

    require("numba")

    class NoKernels:
        def __getattr__(self, name):
            raise AssertionError(f"load ran the compiled kernel {name}")

    monkeypatch.setattr(kernels, "_compiled", NoKernels())
    monkeypatch.setattr(kernels, "_wanted", "numba")
    model = within_budget(hostile.probe_pool(tmp_path))
    assert isinstance(model, nnlite.Sequential), model
