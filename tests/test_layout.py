"""The layout holds: the floors as import-linter contracts, loading on first use, and a new
layer in one file (its load-time cost, Lipschitz bound and ONNX export are its own)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nnlite
from nnlite import layers as L
from nnlite.check import lipschitz_bound

from conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("scipy", "tqdm", "threadpoolctl", "safetensors", "matplotlib", "onnx", "sklearn",
         "numba")


def test_the_floors_hold_as_import_linter_contracts():
    require("importlinter")
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    done = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


LOADS = """
import json, sys
import numpy as np
import nnlite
imported = sorted(m for m in sys.modules if m.split(".")[0] == "nnlite")
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
from nnlite import layers as L, losses, optim
rng = np.random.default_rng(0)
x, y = rng.standard_normal((64, 8)).astype(np.float32), rng.integers(0, 3, 64)
model = nnlite.Sequential(L.Linear(8, 16), L.ReLU(), L.Linear(16, 3))
model.fit(x, y, loss=losses.CrossEntropy(), optimizer=optim.Adam(model.parameters()),
          epochs=1, batch_size=32, verbose=False)
fitted = sorted(m for m in sys.modules if m.split(".")[0] == "nnlite")
print(json.dumps([imported, heavy, fitted]))
""" % (HEAVY,)


def test_import_nnlite_loads_little_and_one_mlp_fit_at_most_twenty_modules():
    env = dict(os.environ, NNLITE_KERNELS="numpy", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", LOADS], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported, heavy, fitted = json.loads(done.stdout.splitlines()[-1])
    assert len(imported) <= 12 and heavy == [], (imported, heavy)
    assert len(fitted) <= 20, fitted
    assert "nnlite.files.io" not in fitted and "nnlite.check" not in fitted


class Doubling(nnlite.Layer):
    """y = 2x, a layer of this file only.  VJP: 2g;  JVP: 2v."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad):
        return 2 * grad

    def jvp(self, tangent):
        return 2 * tangent

    def cost(self, shapes):  # what the load-time probe charges beyond a call
        return 10 ** 9 if shapes[0][-1] > 100 else 4 * int(np.prod(shapes[0]))

    def lipschitz_bound(self):
        return 2.0

    def to_onnx(self, g, x):
        return g.op("Mul", x, g.constant(2.0))


def test_a_layer_of_one_file_gives_the_tools_its_cost_bound_and_export_rule(tmp_path, rng):
    model = nnlite.Sequential(L.Linear(4, 3), Doubling())
    norm = np.linalg.norm(model[0].weight.data.astype(np.float64), 2)
    assert lipschitz_bound(model) == pytest.approx(2 * norm, rel=1e-6)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    model.predict(x)
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(nnlite.load(tmp_path / "m.npz").predict(x), model.predict(x))
    wide = nnlite.Sequential(L.Linear(4, 200), Doubling())
    wide.predict(x)
    wide.save(tmp_path / "wide.npz")  # its probe would cost 10⁹ values: refused at load
    with pytest.raises(ValueError, match=r"wide.npz: layer 1 \(Doubling\): probing Doubling "
                                         r"on inputs of shape \(1, 200\) is too large"):
        nnlite.load(tmp_path / "wide.npz")
    require("onnx")
    ort = require("onnxruntime")
    nnlite.export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model.predict(x),
                               rtol=1e-6, atol=1e-6)
