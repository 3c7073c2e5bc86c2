"""Compiled kernels, an optional extra: ``pip install "nnlite[numba]"``.

A few passes between the matrix products (pooling, col2im, the optimizers' updates, ...)
are written twice: as NumPy, in the module where the math lives (the reference, and the
path without the extra), and as a plain loop compiled by numba in ``nnlite.kernels.compiled``
under the same name. A reference marked ``@replaceable`` runs its compiled twin when the
numba path is active; the twin must equal it (bit for bit where the arithmetic is the
same; ``tests/test_kernels.py`` checks every pair).

The numba path is active when numba imports, unless ``NNLITE_KERNELS=numpy`` is set in
the environment or ``use("numpy")`` is called. If numba is missing, or importing or
compiling a kernel fails, nnlite runs the NumPy path (warning once if numba was there but
failed), never an error. ``numpy_path()`` runs the references in one thread for a while
(``load`` probes a file's model so, rather than compile a kernel for one sample).
May import: nothing of nnlite.
"""
from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.util
import os
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

_PATHS = ("numba", "numpy")
_wanted = os.environ.get("NNLITE_KERNELS", "").strip().lower() or "numba"
if _wanted not in _PATHS:
    raise ValueError(f"the environment sets NNLITE_KERNELS={os.environ['NNLITE_KERNELS']!r}; "
                     f"it must be 'numba' or 'numpy' (or unset)")
_compiled: Any = None      # the nnlite.kernels.compiled module once imported, False if it failed
_broken: set[str] = set()  # kernels whose compilation failed: their references run
_NUMBA = importlib.util.find_spec("numba") is not None  # installed (not yet imported)

#: Every replaceable reference, by name (the equality tests walk it).
REFERENCES: dict[str, Callable] = {}
#: True inside ``numpy_path()``, in this thread or task only.
_numpy = contextvars.ContextVar("on_numpy", default=False)
#: The kernels ``without(...)`` turns off, in this thread or task only.
_off: contextvars.ContextVar[frozenset] = contextvars.ContextVar("off", default=frozenset())


def use(path: str) -> None:
    """Run the compiled kernels (``"numba"``, the default when numba is installed) or the
    NumPy references (``"numpy"``) from the next call on."""
    global _wanted
    if path not in _PATHS:
        raise ValueError(f"nnlite.kernels.use: path must be 'numba' or 'numpy', got {path!r}")
    _wanted = path


@contextmanager
def numpy_path() -> Iterator[None]:
    """Run the NumPy references inside the block, in this thread only: ``load`` probes a
    file's model on one sample, where compiling a kernel would cost more than it runs."""
    token = _numpy.set(True)
    try:
        yield
    finally:
        _numpy.reset(token)


@contextmanager
def without(*names: str) -> Iterator[None]:
    """Run these kernels' NumPy references inside the block, in this thread only: what a
    twin pays is measured against its reference (``benchmarks/gpt_shakespeare.py
    --without``)."""
    unknown = set(names) - set(REFERENCES)
    if unknown:
        raise ValueError(f"nnlite.kernels.without: no kernel named {sorted(unknown)}; the "
                         f"kernels are {sorted(REFERENCES)}")
    token = _off.set(_off.get() | frozenset(names))
    try:
        yield
    finally:
        _off.reset(token)


def active() -> str:
    """The path the next call takes: ``"numba"`` or ``"numpy"``."""
    return "numba" if _wanted == "numba" and _module() else "numpy"


def describe() -> str:
    """The kernel path for a machine line: ``numba 0.68.1``, or ``numpy`` and why."""
    if active() == "numba":
        return f"kernels: numba {_module().numba.__version__}"
    if not _NUMBA:
        return "kernels: numpy (numba is not installed: pip install \"nnlite[numba]\")"
    if _wanted != "numba":
        return "kernels: numpy (NNLITE_KERNELS=numpy or kernels.use('numpy'))"
    return "kernels: numpy (numba failed to import)"


def _module() -> Any:
    """nnlite.kernels.compiled, imported on first use; False if numba is missing or broken."""
    global _compiled
    if _compiled is None:
        try:
            _compiled = importlib.import_module(".compiled", __name__)
        except ImportError as e:
            if getattr(e, "name", None) != "numba":  # numba there, but it failed to import
                warnings.warn(f"nnlite: numba failed to import ({e}); using the NumPy "
                              f"kernels", RuntimeWarning, stacklevel=3)
            _compiled = False
    return _compiled


def replaceable(reference: Callable) -> Callable:
    """Mark ``reference`` (NumPy) as having a compiled twin of the same name in
    ``nnlite.kernels.compiled``; calls go to the twin while the numba path is active (a
    twin returns NotImplemented for arguments it does not take, such as a layout it was
    not written for, and the reference runs).
    Without numba installed, ``reference`` itself: nothing stands between the caller and
    the NumPy code."""
    name = reference.__name__
    REFERENCES[name] = reference
    if not _NUMBA:
        return reference

    @functools.wraps(reference)
    def run(*args: Any) -> Any:
        if _wanted != "numba" or name in _broken or _numpy.get() or name in _off.get() \
                or not (_compiled or _module()):
            return reference(*args)
        try:
            result = getattr(_compiled, name)(*args)
        except _compiled.numba.core.errors.NumbaError as e:  # compiling failed: say so once
            _broken.add(name)
            warnings.warn(f"nnlite: the numba kernel {name} did not compile ({type(e).__name__}"
                          f"); using its NumPy reference", RuntimeWarning, stacklevel=2)
            return reference(*args)
        return reference(*args) if result is NotImplemented else result

    run.reference = reference  # type: ignore[attr-defined]
    return run
