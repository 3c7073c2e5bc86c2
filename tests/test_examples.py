"""The examples run as a user runs them, and print what README says they print."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script, *args, cwd, env=None):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def accuracy(stdout):
    match = re.search(r"^test accuracy: (0\.\d{4})$", stdout.strip().splitlines()[-1])
    assert match, stdout[-500:]
    return float(match.group(1))


def test_digits_mlp(tmp_path):
    assert accuracy(run("digits_mlp.py", "--epochs", "10", cwd=tmp_path)) > 0.9


def test_custom_layer(tmp_path):
    out = run("custom_layer.py", cwd=tmp_path)
    assert "check_layer(Swish(features=4)): OK" in out and accuracy(out) > 0.9


@pytest.mark.parametrize("dataset, floor", [("mnist", 0.90), ("fashion-mnist", 0.78)])
def test_mnist_mlp_one_quick_epoch(tmp_path, data_root, dataset, floor):
    out = run("mnist_mlp.py", "--data-dir", str(data_root), "--dataset", dataset,
              "--epochs", "1", "--hidden", "64", "--batch-size", "256", "--save", "m.npz",
              cwd=tmp_path)
    assert accuracy(out) > floor
    assert (tmp_path / "m.npz").exists()


def test_sklearn_search(tmp_path):
    out = run("sklearn_search.py", cwd=tmp_path)
    assert "best parameters: {" in out and accuracy(out) >= 0.93


def test_mnist_cnn_architecture_learns(data_root):
    """The CNN example's network, three epochs on 3,000 MNIST images (the full run is long)."""
    import importlib.util

    import numpy as np

    import nnlite

    spec = importlib.util.spec_from_file_location("mnist_cnn", EXAMPLES / "mnist_cnn.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    (x, y), (xt, yt) = nnlite.datasets.load_mnist(data_root, download=False)
    x, xt = x[:3000, None] / np.float32(255), xt[:1000, None] / np.float32(255)
    nnlite.set_seed(0)
    model = example.build(64)
    model.fit(x, y[:3000], loss=nnlite.losses.CrossEntropy(), epochs=3, batch_size=64, seed=0,
              optimizer=nnlite.optim.Adam(model.parameters(), lr=2e-3), verbose=False)
    assert model.evaluate(xt, yt[:1000], batch_size=500)["accuracy"] > 0.9


def test_fashion_resnet_quick(tmp_path, data_root):
    """The residual example, shortened: two epochs on 4,000 images, narrower blocks."""
    out = run("fashion_resnet.py", "--data-dir", str(data_root), "--epochs", "2",
              "--samples", "4000", "--width", "16", "--save", "r.npz", cwd=tmp_path)
    assert accuracy(out) > 0.6
    model = __import__("nnlite").load(tmp_path / "r.npz")
    assert sum(type(layer).__name__ == "Add" for layer in model.layers) == 2


def test_digits_lstm(tmp_path):
    assert accuracy(run("digits_lstm.py", "--epochs", "15", cwd=tmp_path)) > 0.9


def test_shakespeare_gpt_quick(tmp_path, data_root):
    """The GPT example, shortened to 60 steps: it trains, samples and reports its loss."""
    out = run("shakespeare_gpt.py", "--data-dir", str(data_root), "--steps", "60",
              "--sample", "40", "--save", "g.npz", cwd=tmp_path)
    match = re.search(r"^val loss: (\d\.\d{4})$", out.strip().splitlines()[-1])
    assert match, out[-500:]
    assert float(match.group(1)) < 3.0          # uniform guessing over 65 characters: 4.17
    model = __import__("nnlite").load(tmp_path / "g.npz")
    assert model.layers[-1].weight is model.layers[0].weight
