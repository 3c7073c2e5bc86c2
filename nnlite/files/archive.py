"""Files on disk: written atomically, and nnlite archives read without trusting them.

An nnlite file is a zip of ``.npy`` members written uncompressed by ``np.savez``. Before a
byte is inflated, the zip's directory must show no member twice, nothing but ``.npy``
members, and members that add up to no more than the file's own size (so a compressed
member cannot inflate a small file into a large one). The JSON header is capped at
``MAX_HEADER`` bytes. Every other member is inflated only when the loader asks for it,
after its ``.npy`` header has declared the shape and dtype the loader expects, and only
up to that size; reading it to its end checks the zip CRC.
"""
from __future__ import annotations

import json
import math
import os
import uuid
import zipfile
import zlib
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

HEADER = "__nnlite__"
#: The largest header read, in bytes of its UCS-4 text: 4,194,304 characters, room for
#: the architecture of a Sequential of about 100,000 layers.
MAX_HEADER = 16 << 20


class Archive:
    """An open nnlite file: ``header()``, then ``declared(name)`` and ``read(name)`` per
    member (``"param/0.weight"``), each a ValueError naming the file when it is wrong."""

    def __init__(self, path: str):
        self.path = path
        self.file = open(path, "rb")
        try:
            self._open()
        except BaseException:
            self.file.close()
            raise

    def _open(self) -> None:
        path, f = self.path, self.file
        magic = f.read(8)
        if magic.startswith(b"\x93NUMPY"):
            raise ValueError(f"{path} is a single NumPy array (.npy), not an nnlite file; "
                             f"nnlite files are .npz archives written by nnlite.save")
        if not magic.startswith(b"PK"):
            kind = "a text file" if _is_text(magic + f.read(512)) else "not a zip archive"
            raise ValueError(f"{path} is not an nnlite file: it is {kind}, and nnlite files "
                             f"are .npz archives written by nnlite.save")
        f.seek(0)
        try:
            self.zip = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise ValueError(f"{path} is truncated or corrupt: {e}") from None
        infos = self.zip.infolist()
        names = [i.filename for i in infos]
        twice = twice_named(names)
        if twice is not None:
            raise ValueError(f"{path} holds the member {twice!r} twice")
        if infos and min(i.header_offset for i in infos) != 0 or self.zip.comment:
            raise ValueError(f"{path} is not one zip archive as nnlite writes it: bytes "
                             f"stand before its first member or after its directory (two "
                             f"archives joined?)")
        for name in names:
            if not name.endswith(".npy"):
                raise ValueError(f"{path}: unexpected member {name!r}")
        inflated, size = sum(i.file_size for i in infos), os.fstat(f.fileno()).st_size
        if inflated > size:
            raise ValueError(f"{path}: its members would inflate to {inflated:,} bytes, more "
                             f"than the file's own {size:,} (nnlite writes them uncompressed)")
        self.infos = {name[:-4]: info for name, info in zip(names, infos)}
        if HEADER not in self.infos:
            raise ValueError(f"{path} is not an nnlite file (it has no {HEADER} header)")
        self._declared: dict[str, tuple[tuple[int, ...], np.dtype, bool]] = {}

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.file.close()

    @property
    def names(self) -> list[str]:
        """Every member but the header."""
        return [name for name in self.infos if name != HEADER]

    def header(self) -> dict[str, Any]:
        """The JSON header, at most ``MAX_HEADER`` bytes."""
        if self.infos[HEADER].file_size > MAX_HEADER:
            raise ValueError(f"{self.path}: its header of {self.infos[HEADER].file_size:,} "
                             f"bytes is larger than nnlite reads ({MAX_HEADER:,})")
        raw = self.read(HEADER)
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise ValueError(f"{self.path}: its header is not a JSON text")
        try:
            header = strict_json(str(raw))
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{self.path}: its header is not valid JSON ({e})") from None
        if not isinstance(header, dict) or header.get("format") != "nnlite":
            raise ValueError(f"{self.path} is not an nnlite file")
        return header

    def declared(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """The shape and dtype member ``name``'s ``.npy`` header declares (read, not the data),
        checked against the size the zip's directory gives it."""
        if name not in self._declared:
            info = self.infos[name]
            with self._errors(), self.zip.open(info) as m:
                shape, dtype, fortran, start = _npy_header(m, info.filename)
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes != info.file_size - start:
                raise ValueError(f"{self.path}: {info.filename} declares shape {shape} of "
                                 f"{dtype} ({nbytes:,} bytes) but stores "
                                 f"{info.file_size - start:,}")
            self._declared[name] = shape, dtype, fortran
        return self._declared[name][:2]

    def read(self, name: str) -> np.ndarray:
        """Member ``name``'s array, inflated to its declared size and no further."""
        shape, dtype = self.declared(name)
        fortran, info = self._declared[name][2], self.infos[name]
        with self._errors(), self.zip.open(info) as m:
            _npy_header(m, info.filename)
            nbytes = math.prod(shape) * dtype.itemsize
            data = m.read(nbytes)
            if m.read(1) or len(data) != nbytes:  # reading to the end checks the CRC
                raise ValueError(f"{self.path}: {info.filename} is cut short")
        return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """What a broken zip makes zipfile raise, as a ValueError naming the file."""
        try:
            yield
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{self.path} is truncated or corrupt: {e}") from None


def _npy_header(m: Any, filename: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, Fortran order?, bytes the header took) of the .npy stream ``m``; no
    Python objects."""
    version = np.lib.format.read_magic(m)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read(m)
    if dtype.hasobject:
        raise ValueError(f"{filename} holds Python objects, which nnlite never loads")
    return shape, dtype, fortran, m.tell()


def twice_named(names: list[str]) -> str | None:
    """The first name that ``names`` holds twice (in sorted order), or None."""
    seen, twice = set(), set()
    for name in names:
        (twice if name in seen else seen).add(name)
    return min(twice) if twice else None


def strict_json(text: str) -> Any:
    """``text`` parsed as JSON, refused where a reader could take it two ways: a key
    twice in one object (Python's json keeps the last), or NaN and Infinity (not JSON)."""
    def once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        twice = twice_named([k for k, _ in pairs])
        if twice is not None:
            raise ValueError(f"the key {twice!r} appears twice in one object")
        return dict(pairs)

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")
    return json.loads(text, object_pairs_hook=once, parse_constant=constant)


def little_endian(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` in little-endian byte order, as nnlite (like torch and safetensors) always
    writes them: a big-endian array (``.astype(">f4")``) is stored as the same values."""
    return {k: v.astype(v.dtype.newbyteorder("<"), copy=False) for k, v in arrays.items()}


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over
    ``path``: a reader sees the old file or the new one, never a torn one. Each write has
    its own temporary file, so two saves to one path at once cannot mix."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save {path}: the folder {folder} does not exist")
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
