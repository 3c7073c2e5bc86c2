"""The decorator every numba twin is compiled with (``nnlite.kernels.compiled`` and the
modules it gathers). Imports numba: loaded only on the numba path."""
from __future__ import annotations

import numba


def jit(fn=None, **options):
    """Compile on first call, cached on disk; where the install is read-only (no cache
    locator, numba issue #4908), compiled in memory each process instead. NumPy's error
    model: x/0 is inf or NaN as in NumPy, not a ZeroDivisionError (whose check would also
    keep loops from running as vector instructions). Without the GIL, as NumPy's loops, so
    that ``fit(threads=n)``'s replicas run them at once. ``options`` go to numba
    (``@jit(fastmath={"reassoc"})`` lets a sum run as vector instructions)."""
    if fn is None:
        return lambda f: jit(f, **options)
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy", **options)(fn)
    except RuntimeError:
        return numba.njit(error_model="numpy", **options)(fn)
