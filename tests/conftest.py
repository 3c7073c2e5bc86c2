import numpy as np
import pytest

import nnlite


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same nnlite generator state."""
    nnlite.set_seed(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def data_root():
    """The folder of original MNIST files, from NNLITE_DATA (CI sets it and requires it)."""
    import os
    from pathlib import Path

    root = os.environ.get("NNLITE_DATA")
    if root and (Path(root) / "mnist").is_dir():
        return Path(root)
    skip_or_fail("NNLITE_DATA does not point at a folder with mnist/ (see datasets/README.md)")


def skip_or_fail(message):
    """Skip a test whose optional requirement is missing; in CI (NNLITE_NO_SKIP=1), fail it."""
    import os

    if os.environ.get("NNLITE_NO_SKIP"):
        pytest.fail(message)
    pytest.skip(message)


#: The extra that installs each optional package the tests use.
EXTRAS = {"torch": "bench", "onnx": "onnx", "onnxruntime": "onnx", "matplotlib": "plot",
          "numba": "numba", "dask": "distributed", "importlinter": "test", "mkdocs": "docs",
          "mkdocstrings": "docs", "mkdocs_jupyter": "docs"}


def require(module):
    """Import an optional package or skip the test, saying which extra installs it; in CI
    (NNLITE_NO_SKIP=1), where the extras are installed, a missing one fails the test."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(module.split(".")[0], "test")
        skip_or_fail(f"{module} is not installed (pip install -e \".[{extra}]\")")


def rewrite(path, change_header=None, change_arrays=None):
    """Re-write the nnlite archive at ``path`` with its header or arrays changed (a valid
    zip)."""
    import json

    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays.pop("__nnlite__")))
    if change_header:
        change_header(header)
    if change_arrays:
        change_arrays(arrays)
    np.savez(path, __nnlite__=np.array(json.dumps(header)), **arrays)


@pytest.fixture(params=["numba", "numpy"])
def kernel_path(request):
    """Run a test on both kernel paths (``nnlite.kernels``): the compiled kernels, which
    need the numba extra, and the NumPy references."""
    from nnlite import kernels

    if request.param == "numba":
        require("numba")
    before = kernels._wanted
    kernels.use(request.param)
    yield request.param
    kernels.use(before)
