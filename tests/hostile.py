"""Hostile nnlite files: small on disk, expensive if loaded naively (issue 24).

Each maker writes one file to ``folder`` and returns its path. The fuzz tests load each
under a time and memory budget; ``python tests/hostile.py`` prints what each costs.
"""
import io
import json
import sys
import time
import tracemalloc
import zipfile
import zlib

import numpy as np

import nnlite
from nnlite.layers import LSTM, Conv2D, Linear, MaxPool2D, MultiHeadAttention, ReLU

#: Inflated size of the compressed members below (the issue's files inflate to 2 GiB; a
#: quarter of that shows the same, faster).
BOMB = 1 << 29


def _npy_header(shape, dtype):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(
        np.dtype(dtype)), "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _deflated_zeros(head, nbytes):
    """A zip member body: ``head`` then ``nbytes`` zero bytes, deflated, streamed."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts, crc, chunk = [c.compress(head)], zlib.crc32(head), bytes(1 << 24)
    left = nbytes
    while left:
        piece = chunk[:min(left, len(chunk))]
        parts.append(c.compress(piece))
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    parts.append(c.flush())
    return b"".join(parts), crc, len(head) + nbytes


def _write_zip(path, members):
    """Write ``members`` (name -> bytes, or a pre-deflated (body, crc, size)) as a zip."""
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            if isinstance(content, bytes):
                z.writestr(name, content)
                continue
            body, crc, size = content  # zipfile takes no compressed bytes: a record by hand
            info = zipfile.ZipInfo(name)
            info.compress_type, info.header_offset = zipfile.ZIP_DEFLATED, z.fp.tell()
            info.CRC, info.compress_size, info.file_size = crc, len(body), size
            z.fp.write(info.FileHeader(zip64=False))
            z.fp.write(body)
            z.start_dir = z.fp.tell()
            z.filelist.append(info)
            z.NameToInfo[name] = info
    return path


def _saved(folder, model, name, **header_changes):
    path = folder / name
    model.save(path)
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    header = json.loads(str(np.load(io.BytesIO(members["__nnlite__.npy"]))))
    header.update(header_changes)
    return path, members, header


def _header_bytes(header):
    buf = io.BytesIO()
    np.save(buf, np.array(json.dumps(header)))
    return buf.getvalue()


def bomb_unknown_member(folder):
    """A small model plus a member nobody asked for that inflates to BOMB bytes."""
    path, members, header = _saved(folder, nnlite.Sequential(Linear(2, 2)), "bomb-zzz.npz")
    members["zzz.npy"] = _deflated_zeros(_npy_header((BOMB,), np.uint8), BOMB)
    return _write_zip(path, members)


def bomb_parameter(folder):
    """A parameter member whose content inflates to BOMB bytes."""
    path, members, header = _saved(folder, nnlite.Sequential(Linear(2, 2)), "bomb-param.npz")
    members["param/0.weight.npy"] = _deflated_zeros(_npy_header((BOMB // 4,), np.float32), BOMB)
    return _write_zip(path, members)


def bomb_without_header(folder):
    """No header at all, only a member that inflates to BOMB bytes."""
    return _write_zip(folder / "bomb-noheader.npz",
                      {"x.npy": _deflated_zeros(_npy_header((BOMB,), np.uint8), BOMB)})


def bomb_header(folder):
    """A JSON header of BOMB / 4 characters (UCS-4 in the .npy), deflated."""
    path, members, header = _saved(folder, nnlite.Sequential(Linear(2, 2)), "bomb-header.npz")
    chars = BOMB // 4
    text = json.dumps(header)[:-1] + ', "pad": "'
    body_len = chars - len(text) - 2
    head = _npy_header((), f"<U{chars}")
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    prefix = head + (text).encode("utf-32-le")
    parts, crc = [c.compress(prefix)], zlib.crc32(prefix)
    piece = "a".encode("utf-32-le") * (1 << 20)
    left = body_len
    while left:
        n = min(left, 1 << 20)
        part = piece[:4 * n]
        parts.append(c.compress(part))
        crc = zlib.crc32(part, crc)
        left -= n
    tail = '"}'.encode("utf-32-le")
    parts += [c.compress(tail), c.flush()]
    crc = zlib.crc32(tail, crc)
    members["__nnlite__.npy"] = (b"".join(parts), crc, len(head) + 4 * chars)
    return _write_zip(path, members)


def nested_shared(folder, depth=20, probed=True):
    """Sequential(S, S) with S = Sequential(S', S') ... ``depth`` levels over one ReLU:
    a few KB describing 2**depth layer calls."""
    desc = {"class": "ReLU", "config": {}}
    for level in range(depth):  # the layer described last has number 2*level
        desc = {"class": "Sequential", "config": {"layers": [
            {"layer": desc}, {"layer": {"same_as": level}}]}}
    path, members, header = _saved(folder, nnlite.Sequential(ReLU()), f"nested-{depth}.npz")
    header["architecture"] = desc
    if probed:
        header["input_shapes"] = [[4]]
    members["__nnlite__.npy"] = _header_bytes(header)
    return _write_zip(path, members)


def nested_shared_unprobed(folder):
    """40 levels, without input shapes: nothing to probe, 2**40 calls on first use."""
    return nested_shared(folder, 40, probed=False)


def many_references(folder, n=10_000):
    """One ReLU referred to ``n`` times in one Sequential."""
    layers = [{"layer": {"class": "ReLU", "config": {}}}] + [{"layer": {"same_as": 0}}] * n
    path, members, header = _saved(folder, nnlite.Sequential(ReLU()), "references.npz")
    header["architecture"] = {"class": "Sequential", "config": {"layers": layers}}
    header["input_shapes"] = [[4]]
    members["__nnlite__.npy"] = _header_bytes(header)
    return _write_zip(path, members)


def _probed(folder, name, model, shapes):
    path, members, header = _saved(folder, model, name)
    header["input_shapes"] = shapes
    members["__nnlite__.npy"] = _header_bytes(header)
    return _write_zip(path, members)


def probe_conv(folder):
    return _probed(folder, "probe-conv.npz", nnlite.Sequential(Conv2D(1, 4, 3)),
                   [[1, 4096, 4096]])


def probe_attention(folder):
    return _probed(folder, "probe-attention.npz",
                   nnlite.Sequential(MultiHeadAttention(8, 2)), [[16384, 8]])


def probe_lstm(folder, t=1 << 16):
    return _probed(folder, f"probe-lstm-{t}.npz", nnlite.Sequential(LSTM(1, 1)), [[t, 1]])


def probe_lstm_endless(folder):
    return probe_lstm(folder, 1 << 24)


def probe_pool(folder):
    """A 255×255 max-pooling window on one 255×255 image: a load-time probe that compiled
    the numba kernels would spend seconds on one sample."""
    return _probed(folder, "probe-pool.npz", nnlite.Sequential(MaxPool2D(255)),
                   [[1, 255, 255]])


def probe_many_shapes(folder):
    return _probed(folder, "probe-shapes.npz", nnlite.Sequential(ReLU()), [[4]] * 1000)


HOSTILE = [bomb_unknown_member, bomb_parameter, bomb_without_header, bomb_header,
           nested_shared, nested_shared_unprobed, many_references, probe_conv, probe_attention, probe_lstm,
           probe_lstm_endless, probe_pool, probe_many_shapes]


def cost(path, timeout=None):
    """(seconds, peak traced MiB, outcome) of ``nnlite.load(path)``."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        nnlite.load(path)
        outcome = "loaded"
    except ValueError as e:
        outcome = f"refused: {str(e)[:110]}"
    except Exception as e:  # what today's code raises instead
        outcome = f"{type(e).__name__}: {str(e)[:100]}"
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return seconds, peak, outcome


if __name__ == "__main__":  # python tests/hostile.py [name ...]: each file's cost
    import pathlib
    import tempfile

    wanted = sys.argv[1:]
    with tempfile.TemporaryDirectory() as d:
        for make in HOSTILE:
            if wanted and make.__name__ not in wanted:
                continue
            path = make(pathlib.Path(d))
            seconds, peak, outcome = cost(path)
            print(f"{make.__name__:<22} {path.stat().st_size / 1024:8.1f} KB "
                  f"{seconds:7.2f} s {peak:9.1f} MiB  {outcome}", flush=True)
