"""Datasets: the real files, the IDX format, and downloads served from 127.0.0.1."""
import functools
import re
import gzip
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from nnlite import datasets

LABELS = "train-labels-idx1-ubyte.gz"


def test_load_mnist_from_the_original_files(data_root):
    (x, y), (xt, yt) = datasets.load_mnist(data_root, download=False)
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert x.dtype == np.uint8 and y.dtype == np.int64 and yt.dtype == np.int64
    assert list(y[:5]) == [5, 0, 4, 1, 9] and list(yt[:3]) == [7, 2, 1]
    assert np.bincount(y).tolist()[:2] == [5923, 6742]
    assert x.max() == 255 and x.min() == 0


def test_load_fashion_mnist_from_nnlite_data(data_root, monkeypatch):
    monkeypatch.setenv("NNLITE_DATA", str(data_root))
    (x, y), (xt, yt) = datasets.load_fashion_mnist(download=False)
    assert x.shape == (60000, 28, 28) and yt.shape == (10000,)
    assert list(y[:4]) == [9, 0, 0, 3] and set(np.unique(y)) == set(range(10))


def test_load_digits():
    (x, y), (xt, yt) = datasets.load_digits()
    assert x.shape == (1437, 8, 8) and xt.shape == (360, 8, 8)
    assert x.dtype == np.uint8 and y.dtype == np.int64 and x.max() == 16


def write_idx(path, array, compress):
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += np.array(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4, 5)])
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_any_type_and_rank(tmp_path, rng, dtype, shape, compress):
    array = (rng.standard_normal(shape) * 50).astype(dtype)
    write_idx(tmp_path / "a.idx", array, compress)
    result = datasets.read_idx(tmp_path / "a.idx")
    np.testing.assert_array_equal(result, array)
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative


def test_read_idx_rejects_bad_magic_and_size(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match=r"bad.*not an IDX file"):
        datasets.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 4), np.uint8), compress=False)
    data = (tmp_path / "short").read_bytes()
    (tmp_path / "short").write_bytes(data[:-3])
    with pytest.raises(ValueError, match=r"short: header says shape \(4, 4\) \(16 bytes"):
        datasets.read_idx(tmp_path / "short")
    write_idx(tmp_path / "cut.gz", np.zeros((40, 40), np.uint8), compress=True)
    data = (tmp_path / "cut.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.gz: cannot be read, it is truncated or corrupt"):
        datasets.read_idx(tmp_path / "cut.gz")


# -- downloading, from a server on 127.0.0.1 -----------------------------------------

class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _DiesMidway(_Quiet):
    """Announces the whole file, sends half of it, then hangs up."""

    def do_GET(self):
        data = (self.server.root / self.path.strip("/").split("/", 1)[1]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def mirror(tmp_path, data_root):
    """A local server with good/, corrupt/, truncated/ copies of MNIST; missing/ is a 404."""
    served = tmp_path / "served"
    for kind in ("good", "corrupt", "truncated"):
        (served / kind).mkdir(parents=True)
        for name in datasets.FILES:
            data = bytearray((data_root / "mnist" / name).read_bytes())
            if kind == "corrupt":
                data[len(data) // 2] ^= 0xFF
            elif kind == "truncated":
                data = data[: len(data) - 100]
            (served / kind / name).write_bytes(bytes(data))
    servers = []

    def start(handler):
        server = ThreadingHTTPServer(("127.0.0.1", 0),
                                     functools.partial(handler, directory=str(served)))
        server.root = served / "good"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    base, dying = start(_Quiet), start(_DiesMidway)
    yield {kind: base + kind + "/" for kind in ("good", "corrupt", "truncated", "missing")} | {
        "dies": dying + "good/"}
    for server in servers:
        server.shutdown()
        server.server_close()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_falls_back_to_the_next_mirror(mirror, monkeypatch, tmp_path, data_root):
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [mirror["missing"], mirror["good"]])
    root = tmp_path / "cache"
    (x, y), (xt, yt) = datasets.load_mnist(root)
    (x0, y0), _ = datasets.load_mnist(data_root, download=False)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    assert leftovers(root / "mnist") == sorted(datasets.FILES)


@pytest.mark.parametrize("kind, message", [
    ("corrupt", "SHA-256"), ("truncated", "expected 28,881 bytes"),
    ("dies", "IncompleteRead|expected 28,881"), ("missing", "404")])
def test_bad_downloads_leave_nothing_behind(mirror, monkeypatch, tmp_path, kind, message):
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [mirror[kind]])
    folder = tmp_path / "cache" / "mnist"
    with pytest.raises(OSError, match=f"could not download {LABELS} of mnist") as error:
        datasets.fetch("mnist", LABELS, folder)
    assert mirror[kind] + LABELS in str(error.value)
    assert re.search(message, str(error.value))
    assert leftovers(folder) == []


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_file_is_an_error_that_says_how_to_fix_it(tmp_path, data_root, damage):
    folder = tmp_path / "mnist"
    folder.mkdir()
    data = bytearray((data_root / "mnist" / LABELS).read_bytes())
    if damage == "corrupt":
        data[100] ^= 1
    else:
        data = data[:1000]
    (folder / LABELS).write_bytes(bytes(data))
    with pytest.raises(ValueError) as error:
        datasets.fetch("mnist", LABELS, folder, download=False)
    text = str(error.value)
    assert str(folder / LABELS) in text and "expected" in text
    assert "Delete it, or pass download=True" in text


def test_download_true_replaces_a_damaged_file(mirror, monkeypatch, tmp_path, data_root):
    monkeypatch.setitem(datasets.MIRRORS, "mnist", [mirror["good"]])
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / LABELS).write_bytes(b"\x1f\x8b junk")
    path = datasets.fetch("mnist", LABELS, folder, download=True)
    assert path.read_bytes() == (data_root / "mnist" / LABELS).read_bytes()


def test_missing_file_without_download_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"is not in {tmp_path / 'mnist'}"):
        datasets.load_mnist(tmp_path, download=False)


def test_root_defaults_to_nnlite_data_then_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NNLITE_DATA", str(tmp_path))
    assert datasets.data_root() == tmp_path
    monkeypatch.delenv("NNLITE_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.data_root() == tmp_path / "home" / ".cache" / "nnlite"


def test_batches_cover_every_sample_once_per_epoch():
    x, y = np.arange(10) * 10, np.arange(10)
    seen = [yb for _, yb in datasets.batches(x, y, 3, rng=0)]
    assert [len(b) for b in seen] == [3, 3, 3, 1]
    assert sorted(np.concatenate(seen)) == list(range(10))
    for xb, yb in datasets.batches(x, y, 3, rng=0):
        np.testing.assert_array_equal(xb, yb * 10)
    again = np.concatenate([yb for _, yb in datasets.batches(x, y, 3, rng=0)])
    other = np.concatenate([yb for _, yb in datasets.batches(x, y, 3, rng=1)])
    np.testing.assert_array_equal(again, np.concatenate(seen))
    assert not np.array_equal(again, other)


def test_batches_drop_last_and_in_order():
    x = np.arange(10)
    got = [xb.tolist() for xb, _ in datasets.batches(x, None, 4, shuffle=False, drop_last=True)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_batches_slice_lists_of_inputs_and_targets_alike():
    x = [np.arange(10) * 10, np.arange(10) * 100]
    y = [np.arange(10), np.arange(10) - 1]
    for shuffle in (True, False):
        for (a, b), (c, d) in datasets.batches(x, y, 4, rng=0, shuffle=shuffle):
            np.testing.assert_array_equal(a, c * 10)
            np.testing.assert_array_equal(b, c * 100)
            np.testing.assert_array_equal(d, c - 1)
