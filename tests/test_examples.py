"""The examples run as a user runs them, and print what README says they print."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import nnlite
from conftest import require

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


#: --plot needs the plot extra; without it the examples run and are checked without plots
#: (in CI, NNLITE_NO_SKIP=1, matplotlib must be there).
PLOTS = bool(importlib.util.find_spec("matplotlib") or os.environ.get("NNLITE_NO_SKIP"))
PLOT = ["--plot", "figs"] if PLOTS else []


def figures(folder, names):
    """The PNGs an example wrote with --plot: each decodes to a drawn picture."""
    if not PLOTS:
        return
    plt = require("matplotlib.pyplot")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.png" for n in names)
    for name in names:
        image = plt.imread(folder / f"{name}.png")
        assert image.ndim == 3 and image.shape[1] >= 300 and image.std() > 0.05, name


def test_digits_mlp_quick_with_plots(tmp_path):
    out = run("digits_mlp.py", "--quick", *PLOT, cwd=tmp_path)
    assert accuracy(out) > 0.9
    figures(tmp_path / "figs", ["history", "mistakes", "weights"])


def test_custom_layer_quick_with_plot(tmp_path):
    out = run("custom_layer.py", "--quick", *PLOT, cwd=tmp_path)
    assert "check_layer(Swish(features=4)): OK" in out and accuracy(out) > 0.9
    figures(tmp_path / "figs", ["jacobian"])


def test_mnist_mlp_quick_with_plots(tmp_path, data_root):
    out = run("mnist_mlp.py", "--data-dir", str(data_root), "--quick", *PLOT,
              cwd=tmp_path)
    assert accuracy(out) > 0.9 and (tmp_path / "mnist_mlp.npz").exists()
    figures(tmp_path / "figs", ["history", "mistakes", "weights", "sensitivity"])


def test_fashion_mnist_mlp_one_epoch(tmp_path, data_root):
    out = run("mnist_mlp.py", "--data-dir", str(data_root), "--dataset", "fashion-mnist",
              "--epochs", "1", "--hidden", "64", "--batch-size", "256", "--save", "m.npz",
              cwd=tmp_path)
    assert accuracy(out) > 0.78
    assert (tmp_path / "m.npz").exists()


def test_mnist_mlp_log_has_one_line_per_epoch(tmp_path, data_root):
    """Redirected to a file, progress is one line per epoch, not bar redraws."""
    result = subprocess.run([sys.executable, str(EXAMPLES / "mnist_mlp.py"), "--data-dir",
                             str(data_root), "--quick", "--hidden", "32"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    epochs = [line for line in result.stdout.splitlines() if line.startswith("Epoch ")]
    assert len(epochs) == 3 and "\r" not in result.stdout and len(result.stdout) < 3000


def test_sklearn_search_quick_with_plot(tmp_path):
    out = run("sklearn_search.py", "--quick", *PLOT, cwd=tmp_path)
    assert "best parameters: {" in out and accuracy(out) >= 0.93
    figures(tmp_path / "figs", ["confusion"])


def test_mnist_cnn_quick_with_plots(tmp_path, data_root):
    out = run("mnist_cnn.py", "--data-dir", str(data_root), "--quick", "--threads", "2", *PLOT,
              "--save", "c.npz", cwd=tmp_path)
    assert accuracy(out) > 0.85
    figures(tmp_path / "figs", ["history", "mistakes"])


def test_fashion_resnet_quick_with_plots(tmp_path, data_root):
    out = run("fashion_resnet.py", "--data-dir", str(data_root), "--quick", "--threads", "2",
              *PLOT, "--save", "r.npz", cwd=tmp_path)
    assert accuracy(out) > 0.6
    model = __import__("nnlite").load(tmp_path / "r.npz")
    assert sum(type(layer).__name__ == "Add" for layer in model.layers) == 2
    figures(tmp_path / "figs", ["history", "mistakes"])


def test_digits_lstm_quick_with_plots(tmp_path):
    out = run("digits_lstm.py", "--quick", *PLOT, cwd=tmp_path)
    assert accuracy(out) > 0.9
    figures(tmp_path / "figs", ["history", "mistakes"])


def test_shakespeare_gpt_quick_with_plot(tmp_path, data_root):
    """The GPT example, shortened, on two threads: it trains, samples and reports its loss."""
    out = run("shakespeare_gpt.py", "--data-dir", str(data_root), "--quick", "--tokens", "40",
              "--prompt", "ROMEO:", "--save", "g.npz", "--threads", "2", *PLOT, cwd=tmp_path)
    lines = out.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ROMEO:"))
    assert len("\n".join(lines[start:])) >= len("ROMEO:") + 40 - 1  # the sample, then more
    match = re.search(r"^val loss: (\d\.\d{4})$", lines[-1])
    assert match, out[-500:]
    assert float(match.group(1)) < 3.0          # uniform guessing over 65 characters: 4.17
    nnlite = __import__("nnlite")
    model = nnlite.load(tmp_path / "g.npz")
    assert model.layers[-1].weight is model.layers[0].weight
    assert len(nnlite.datasets.CharVocab.load(tmp_path / "g.vocab.json")) == 65
    figures(tmp_path / "figs", ["loss"])


def test_fine_tune_quick_with_plot(tmp_path, data_root):
    """A frozen MNIST CNN body under a new head learns Fashion-MNIST; unfreezing its last
    block goes on from there."""
    out = run("fine_tune.py", "--data-dir", str(data_root), "--quick", *PLOT, cwd=tmp_path)
    head = float(re.search(r"head alone: .* test accuracy: (\d\.\d{4})", out).group(1))
    both = float(re.search(r"last block unfrozen: .* test accuracy: (\d\.\d{4})", out).group(1))
    assert head > 0.7 and both > 0.7, out[-800:]
    assert "Trainable params: 31,370" in out and "Non-trainable params: 19,202" in out
    figures(tmp_path / "figs", ["history"])


def test_mnist_mlp_streams_its_images_from_the_idx_files(tmp_path, data_root):
    out = run("mnist_mlp.py", "--data-dir", str(data_root), "--quick", "--stream", *PLOT,
              cwd=tmp_path)
    assert accuracy(out) > 0.9 and re.search(r"^peak memory: \d+ MiB$", out, re.M)
    figures(tmp_path / "figs", ["history", "mistakes", "weights", "sensitivity"])


def test_pytorchs_mnist_example_ported_trains_and_its_weights_load_into_torchs_net(tmp_path,
                                                                                 data_root):
    out = run("pytorch_mnist.py", "--data-dir", str(data_root), "--quick", "--save-model",
              *PLOT, cwd=tmp_path)
    assert "Train Epoch: 1 [640/6400 (10%)]" in out and "Test set: Average loss:" in out
    assert accuracy(out) > 0.85
    figures(tmp_path / "figs", ["history"])
    first = float(re.search(r"Train Epoch: 1 \[0/6400 \(0%\)\]\tLoss: (\d+\.\d+)", out)[1])
    assert 2.0 < first < 2.6  # PyTorch's initialisation: about ln 10, as PyTorch's run starts
    torch = require("torch")
    from safetensors.torch import load_file
    theirs = _torchs_net(torch)()
    theirs.load_state_dict(load_file(tmp_path / "mnist_cnn.safetensors"), strict=True)
    spec = importlib.util.spec_from_file_location("pytorch_mnist", EXAMPLES / "pytorch_mnist.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    mine = example.net()
    mine.load_weights(tmp_path / "mnist_cnn.safetensors")
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = theirs.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mine.predict(x), expected, atol=1e-5)


def _torchs_net(torch):
    """pytorch/examples' mnist ``Net``, as written there (log_softmax left out: logits)."""
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
            self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
            self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
            x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
            return self.fc2(self.dropout2(x))
    return Net


def test_the_ported_net_starts_where_pytorchs_does(rng):
    """With PyTorch's initial weights loaded, the first batch's loss is PyTorch's."""
    torch = require("torch")
    spec = importlib.util.spec_from_file_location("pytorch_mnist", EXAMPLES / "pytorch_mnist.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    torch.manual_seed(1)
    theirs = _torchs_net(torch)().double().eval()
    mine = example.net().astype(np.float64)
    mine.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x, y = rng.standard_normal((16, 1, 28, 28)), rng.integers(0, 10, 16)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)),
                                                 torch.from_numpy(y)).item()
    assert abs(mine.evaluate(x, y, loss=nnlite.losses.CrossEntropy())["loss"] - loss) <= 1e-10
    weights = example.net().fc1.weight.data    # init="torch": U(±1/√fan_in)
    assert np.abs(weights).max() <= 1 / np.sqrt(9216) and weights.std() > 0.5 / np.sqrt(9216 * 3)
