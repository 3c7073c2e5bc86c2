"""A file means one thing or is refused: no key twice, no second archive behind the first,
nothing a reader could parse two ways; each refusal names the file and the problem, within
the hostile files' budget."""
import json
import struct
import zipfile

import numpy as np
import pytest

import nnlite
import nnlite.files.archive
import nnlite.files.safetensors
from nnlite.layers import Linear

from test_hostile import SECONDS, MIB, within_budget


def _raw_header(path, text):
    """Re-write the nnlite file at ``path`` with its header member holding ``text``."""
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    import io
    buf = io.BytesIO()
    np.save(buf, np.array(text))
    members["__nnlite__.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)


def test_a_header_naming_a_key_twice_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    nnlite.Sequential(Linear(2, 3)).save(path)
    with np.load(path) as f:
        header = json.loads(str(f["__nnlite__"]))
    other = json.dumps({"class": "Sequential", "config": {
        "layers": [{"layer": {"class": "ReLU", "config": {}}}]}})
    text = json.dumps(header)[:-1] + f', "architecture": {other}}}'
    _raw_header(path, text)
    outcome = within_budget(path)
    assert "the key 'architecture' appears twice" in outcome, outcome


def test_two_archives_joined_are_refused(tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    nnlite.Sequential(Linear(2, 3)).save(first)
    nnlite.Sequential(Linear(2, 5)).save(second)
    joined = tmp_path / "joined.npz"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    outcome = within_budget(joined)
    assert "bytes stand before its first member" in outcome, outcome
    commented = tmp_path / "commented.npz"
    with zipfile.ZipFile(commented, "w") as z, zipfile.ZipFile(first) as f:
        for info in f.infolist():
            z.writestr(info, f.read(info))
        z.comment = b"hidden"
    assert "after its directory" in within_budget(commented)


def test_sixty_thousand_members_and_one_twice_are_refused_in_linear_time(tmp_path):
    path = tmp_path / "m.npz"
    nnlite.Sequential(Linear(2, 3)).save(path)
    with zipfile.ZipFile(path, "a") as z:
        for i in range(60_000):
            z.writestr(f"m{i}.npy", b"")
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z.writestr("m7.npy", b"")
    import time
    started = time.perf_counter()  # 5.6 MB, over the 1 MB of within_budget: timed alone
    with pytest.raises(ValueError, match=r"m.npz holds the member 'm7.npy' twice"):
        nnlite.load(path)
    assert time.perf_counter() - started < SECONDS


def _safetensors(path, header: bytes, data=b"\0" * 8):
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header, message", [
    (json.dumps({"w": F32}).encode("utf-16"), r"utf-8"),
    (json.dumps({"__metadata__": {"format": 1}, "w": F32}).encode(), r"__metadata__ is not a"),
    (json.dumps({"__metadata__": ["pt"], "w": F32}).encode(), r"__metadata__ is not a"),
    (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [NaN, 8]}}', r"NaN is not a JSON"),
    (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [false, 8]}}',
     r"entry 'w' is not a tensor"),
    (b'{"w": {"dtype": "F32", "shape": [true, 2], "data_offsets": [0, 8]}}',
     r"entry 'w' is not a tensor"),
    (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "w": ' +
     json.dumps(F32).encode() + b"}", r"the key 'w' appears twice"),
])
def test_a_safetensors_file_a_reader_could_take_two_ways_is_refused(tmp_path, header, message):
    path = _safetensors(tmp_path / "w.safetensors", header)
    with pytest.raises(ValueError, match=f"w.safetensors.*{message}"):
        nnlite.files.safetensors.read_safetensors(path)
    model = nnlite.Sequential(Linear(1, 2))
    with pytest.raises(ValueError, match="w.safetensors"):
        model.load_weights(path, strict=False)


def test_a_safetensors_header_above_the_cap_is_refused_before_it_is_parsed(tmp_path):
    import time
    import tracemalloc

    entries = ", ".join(f'"t{i}": {{"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}'
                        for i in range(300_000))
    path = _safetensors(tmp_path / "w.safetensors", ("{" + entries + "}").encode(), b"")
    assert path.stat().st_size > nnlite.files.safetensors._MAX_HEADER
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"w.safetensors: its header of .* bytes is larger "
                                         r"than nnlite reads"):
        nnlite.files.safetensors.read_safetensors(path)
    seconds, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    assert seconds < SECONDS and peak < MIB, (seconds, peak)


def _with_header(path, change):
    from conftest import rewrite
    rewrite(path, change)
    return path


def test_a_tie_between_parameters_of_different_shapes_is_refused_at_load(tmp_path):
    path = tmp_path / "m.npz"
    nnlite.Sequential(Linear(2, 3), Linear(3, 3)).save(path)
    _with_header(path, lambda h: h.update(tied={"0.bias": "0.weight"}))
    outcome = within_budget(path)
    assert "tied parameter '0.bias' is float32 of shape (3,) in the architecture; " \
           "'0.weight', which it is tied to, is float32 of shape (3, 2)" in outcome, outcome


@pytest.mark.parametrize("cls, axis, message", [
    ("Softmax", 10 ** 18, r"Softmax: axis must be a whole number in \[-64, 63\]"),
    ("Concatenate", -(10 ** 18), r"Concatenate: axis must be a whole number in \[-64, 63\]"),
    ("Softmax", 3, r"Softmax\(axis=3\): axis 3 is not an axis of an input of shape \(1, 4\)"),
])
def test_an_axis_out_of_bounds_is_refused_at_load(tmp_path, cls, axis, message):
    path = tmp_path / "m.npz"
    model = nnlite.Sequential(Linear(2, 4), nnlite.layers.Softmax())
    model.predict(np.zeros((1, 2), np.float32))
    model.save(path)
    if cls == "Softmax":
        change = lambda h: h["architecture"]["config"]["layers"][1]["layer"]["config"].update(
            axis=axis)
        if axis == 3:
            _with_header(path, lambda h: (change(h), h.update(input_shapes=[[2]])))
        else:
            _with_header(path, change)
    else:
        _with_header(path, lambda h: h.update(architecture={"class": "Concatenate",
                                                             "config": {"axis": axis}}))
    outcome = within_budget(path)
    assert isinstance(outcome, str) and __import__("re").search(message, outcome), outcome


def _innermost(header):
    """The config of the innermost layer of nested Sequentials."""
    a = header["architecture"]
    while a["class"] == "Sequential":
        a = a["config"]["layers"][0]["layer"]
    return a["config"]


def test_a_refusal_names_the_innermost_layer_once_and_quotes_values_within_bounds(tmp_path):
    model = nnlite.Sequential(Linear(2, 3))
    for _ in range(24):
        model = nnlite.Sequential(model)
    path = tmp_path / "m.npz"
    model.save(path)
    saved = path.read_bytes()
    _with_header(path, lambda h: h.update(input_shapes=[[5]]))
    outcome = within_budget(path)
    assert f"layer {'.'.join(['0'] * 25)} (Linear): Linear(in_features=2" in outcome, outcome
    assert "(Sequential)" not in outcome and len(outcome) < 300
    nested = 1
    for _ in range(300):
        nested = [nested]
    for value in (10 ** 400, nested, "x" * 100_000, {"a" * 5000: 1}):
        path.write_bytes(saved)
        _with_header(path, lambda h: _innermost(h).update(out_features=value))
        outcome = within_budget(path)
        assert "Linear" in outcome and len(outcome) < 1200, (len(outcome), outcome[:300])
    path.write_bytes(saved)
    _with_header(path, lambda h: h.update(tied={"x" * 100_000: "0.weight"}))
    outcome = within_budget(path)
    assert "is not in the architecture" in outcome and len(outcome) < 400, outcome[:300]
