"""Datasets (MNIST, Fashion-MNIST, tiny-shakespeare, scikit-learn's digits), the IDX format,
and ``Dataset``/``ArrayDataset`` (batches for ``fit``).

MNIST-style loaders read the four original IDX gzip files from
``root/<name>/``; ``root`` defaults to ``$NNLITE_DATA``, else ``~/.cache/nnlite``.
Missing files are downloaded from public mirrors, tried in order, written to
a temporary name and renamed only once their SHA-256 matches.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..core.door import check_batch_size, check_lengths
from ..training.trainer import rows as _rows
from ..training.parts import part_rows_of

Split = tuple[np.ndarray, np.ndarray]

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

#: (SHA-256, size in bytes) of every file, as published with the datasets.
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz":
            ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        "train-labels-idx1-ubyte.gz":
            ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        "t10k-images-idx3-ubyte.gz":
            ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        "t10k-labels-idx1-ubyte.gz":
            ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz":
            ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        "train-labels-idx1-ubyte.gz":
            ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        "t10k-images-idx3-ubyte.gz":
            ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        "t10k-labels-idx1-ubyte.gz":
            ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
    },
    "tinyshakespeare": {
        "input.txt":
            ("86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1115394),
    },
}

#: Public mirrors, tried in order (those torchvision and Keras use; char-rnn's own for
#: tiny-shakespeare, the copy nanoGPT downloads).
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/",
              "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"],
    "tinyshakespeare": [
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"],
}

# IDX type codes: unsigned byte, signed byte, short, int, float, double (big-endian).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$NNLITE_DATA``, else ``~/.cache/nnlite``."""
    if root is None:
        root = os.environ.get("NNLITE_DATA") or Path.home() / ".cache" / "nnlite"
    return Path(root).expanduser()


def load_mnist(root: str | os.PathLike | None = None, download: bool = True) -> tuple[Split, Split]:
    """MNIST as ``(x_train, y_train), (x_test, y_test)``: uint8 images (N, 28, 28),
    int64 labels 0-9; 60,000 training and 10,000 test images."""
    return _load_idx_dataset("mnist", root, download)


#: Fashion-MNIST's class names, by label (torchvision's ``FashionMNIST.classes``).
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


def load_fashion_mnist(root: str | os.PathLike | None = None,
                       download: bool = True) -> tuple[Split, Split]:
    """Fashion-MNIST, in the same form as ``load_mnist``: 10 classes of clothing, named in
    ``FASHION_MNIST_CLASSES``."""
    return _load_idx_dataset("fashion-mnist", root, download)


def load_tiny_shakespeare(root: str | os.PathLike | None = None, download: bool = True) -> str:
    """The tiny-shakespeare text (``input.txt`` of char-rnn's ``data/tinyshakespeare``, the
    one nanoGPT uses) as one str: 1,115,394 characters, 65 distinct, from
    ``root/tinyshakespeare/``, found or downloaded and verified by SHA-256 like the other
    datasets. ``CharVocab(text)`` turns it into ids."""
    folder = data_root(root) / "tinyshakespeare"
    return fetch("tinyshakespeare", "input.txt", folder, download).read_text(encoding="utf-8")


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0-16), offline, as
    ``(x_train, y_train), (x_test, y_test)``: uint8 (N, 8, 8) and int64 labels,
    split by a stratified draw from ``seed``."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    x = digits.images.astype(np.uint8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return (x_train, y_train), (x_test, y_test)


def read_idx(path: str | os.PathLike, mmap_mode: str | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) of any element type and rank.

    Validates the magic number and that the payload matches the header's shape. With
    ``mmap_mode`` (``"r"``, as ``np.load``'s), an uncompressed file is memory-mapped instead
    of read: its rows are read from disk when used (a gzip file must be decompressed first).
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            head = raw.read(4 + 4 * 255)
            gzipped = head[:2] == b"\x1f\x8b"
        if mmap_mode is not None:
            if gzipped:
                raise ValueError(f"{path}: a gzip file cannot be memory-mapped; decompress "
                                 f"it first")
            dtype, shape, header = _idx_header(head, str(path), path.stat().st_size)
            return np.memmap(path, dtype, mmap_mode, header, shape)
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot be read, it is truncated or corrupt ({e})") from e
    return parse_idx(data, str(path))


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """The array stored in the bytes of an (uncompressed) IDX file."""
    dtype, shape, header = _idx_header(data, name, len(data))
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _idx_header(data: bytes, name: str, size: int) -> tuple[np.dtype, tuple[int, ...], int]:
    """The element type (big-endian), shape and header length that the first bytes of an
    IDX file of ``size`` bytes declare, checked against that size."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{name}: not an IDX file (bad magic number {data[:4].hex()!r})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: IDX header is cut short")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size - header != expected:
        raise ValueError(f"{name}: header says shape {shape} ({expected:,} bytes of data), "
                         f"but the file holds {size - header:,}")
    return dtype, shape, header


class Dataset:
    """A dataset of batches, as Keras's ``keras.utils.PyDataset``: ``len(dataset)`` is its
    number of batches and ``dataset[i]`` batch i, ``(x, y)`` (lists for several inputs or
    outputs; ``x`` alone for ``predict``). ``fit``, ``evaluate`` and ``predict`` take any
    object that has these two, and call its ``set_epoch(epoch)`` before an epoch and its
    ``on_epoch_end()`` after one when it has them; this class documents the protocol.

    ``fit(comm=...)`` cuts each batch into one part per rank; a dataset that defines
    ``part(i, k, parts)``, batch i's rows ``b[k]:b[k+1]`` with b =
    ``nnlite.training.parts.part_bounds(len(batch i), parts)``, lets each rank read only
    its own (without it, each rank reads batch i whole and keeps its part)."""

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__: its batches")

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__(i): batch i")


class ArrayDataset(Dataset):
    """Arrays as a dataset of ``batch_size`` rows per batch: ``x`` (and ``y``, when given)
    are arrays or lists of them, or memory maps (``np.load(path, mmap_mode="r")``), of
    which each batch reads only its rows. With ``shuffle``, each epoch's order of rows is
    drawn from ``(seed, epoch)`` (``set_epoch``), so a resumed run gets the same batches."""

    def __init__(self, x: Any, y: Any = None, batch_size: int = 32, shuffle: bool = False,
                 seed: int = 0):
        self.x, self.y = x, y
        self.n = len(x[0]) if isinstance(x, list) else len(x)
        check_lengths(x if isinstance(x, list) else [x],
                      [] if y is None else y if isinstance(y, list) else [y], "ArrayDataset")
        check_batch_size(batch_size)
        self.batch_size, self.shuffle, self.seed, self.order = int(batch_size), bool(shuffle), \
            seed, None

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle:
            self.order = np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"ArrayDataset: batch {index} of {len(self)}")
        return self._read(index * self.batch_size, (index + 1) * self.batch_size)

    def part(self, index: int, k: int, parts: int) -> Any:
        """Part ``k`` of ``parts`` of batch ``index``: only its rows are read."""
        if not 0 <= index < len(self):
            raise IndexError(f"ArrayDataset: batch {index} of {len(self)}")
        start = index * self.batch_size
        lo, hi = part_rows_of(min(self.batch_size, self.n - start), k, parts,
                              f"ArrayDataset: batch {index}")
        return self._read(start + lo, start + hi)

    def _read(self, lo: int, hi: int) -> Any:
        rows = slice(lo, hi) if self.order is None else self.order[lo:hi]
        return _rows(self.x, rows) if self.y is None else (_rows(self.x, rows),
                                                            _rows(self.y, rows))


def _load_idx_dataset(name: str, root, download: bool) -> tuple[Split, Split]:
    folder = data_root(root) / name
    paths = {file: fetch(name, file, folder, download) for file in FILES}
    x_train, y_train, x_test, y_test = (read_idx(paths[f]) for f in FILES)
    return (x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64))


def fetch(dataset: str, file: str, folder: Path, download: bool = True) -> Path:
    """The verified path of ``file`` in ``folder``, downloading it if allowed and needed."""
    path = folder / file
    sha, size = CHECKSUMS[dataset][file]
    if path.exists():
        problem = _verify(path, sha, size)
        if problem is None:
            return path
        if not download:
            raise ValueError(f"{path} {problem}. Delete it, or pass download=True to fetch "
                             f"it again.")
    elif not download:
        raise FileNotFoundError(
            f"{file} of {dataset} is not in {folder}. Pass download=True, point NNLITE_DATA "
            f"(or root=) at a folder holding {dataset}/{file}, or put the file there.")
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in MIRRORS[dataset]:
        try:
            _download(mirror + file, path, sha, size)
            return path
        except (OSError, ValueError, http.client.HTTPException) as e:
            errors.append(f"  {mirror + file}: {e}")
    raise OSError(f"could not download {file} of {dataset}; tried:\n" + "\n".join(errors) +
                  f"\nDownload it by hand into {folder}, or set NNLITE_DATA to a folder with "
                  f"{dataset}/{file}.")


def _verify(path: Path, sha: str, size: int) -> str | None:
    """None if ``path`` has the expected size and SHA-256, else what is wrong."""
    actual_size = path.stat().st_size
    if actual_size != size:
        return (f"is {actual_size:,} bytes, expected {size:,} (truncated or a different "
                f"file)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha:
        return f"is corrupt: its SHA-256 is {digest}, expected {sha}"
    return None


def _download(url: str, path: Path, sha: str, size: int) -> None:
    """Stream ``url`` into a temporary file beside ``path``; rename it once verified."""
    tmp = path.with_name(f".{path.name}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out, \
                tqdm(total=size, unit="B", unit_scale=True, desc=path.name, leave=False) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        if tmp.stat().st_size != size or digest.hexdigest() != sha:
            raise ValueError(f"downloaded {tmp.stat().st_size:,} bytes with SHA-256 "
                             f"{digest.hexdigest()}, expected {size:,} bytes with {sha}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
