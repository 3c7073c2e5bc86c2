"""The benchmark scripts run and print their tables (short runs: their timings are not checked)."""
import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
TABLE_ROW = re.compile(r"^\|\s+([\w ,-]+?) \|(.*)\|$", re.M)


def run(script, data_root, tmp_path, *args):
    """The benchmark ``script``'s stdout after a short run, which must succeed."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--data-dir", str(data_root), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_benchmark_prints_its_table(tmp_path, data_root):
    stdout = run("mlp_mnist.py", data_root, tmp_path, "--rounds", "1", "--samples", "2560",
                 "--no-scaling")
    training = stdout.split("Prediction")[0]
    rows = {m.group(1): m.group(2).split("|") for m in TABLE_ROW.finditer(training)}
    assert {"nnlite", "NumPy, hand-fused", "GEMM floor"} <= rows.keys(), stdout
    for name in ("nnlite", "NumPy, hand-fused"):
        seconds, _, _, vs_floor, peak, accuracy = (v.strip() for v in rows[name][:6])
        assert float(seconds) > 0 and vs_floor.endswith("x") and peak.endswith("MiB")
        assert float(accuracy) > 0.8  # two epochs on 2,560 images
    assert rows["GEMM floor"][3].strip() == "1.00x"


def test_graph_benchmark_prints_its_ratios(tmp_path, data_root):
    stdout = run("graph_mlp.py", data_root, tmp_path, "--rounds", "1", "--samples", "2560")
    assert re.search(r"Model MLP / Sequential MLP \| +\d\.\d{3}x", stdout), stdout


def test_gpt_benchmark_prints_its_ratio_and_where_the_time_goes(tmp_path, data_root):
    from conftest import require

    require("torch")
    stdout = run("gpt_shakespeare.py", data_root, tmp_path, "--rounds", "1", "--steps", "3")
    assert re.search(r"nnlite / PyTorch, time per step: \d+\.\d\dx", stdout)
    assert "MultiHeadAttention backward" in stdout, stdout


def test_cnn_benchmark_prints_the_floor_and_where_the_time_goes(tmp_path, data_root):
    stdout = run("cnn_mnist.py", data_root, tmp_path, "--rounds", "1", "--samples", "384",
                 "--threads", "2")
    rows = {m.group(1): [v.strip() for v in m.group(2).split("|")]
            for m in TABLE_ROW.finditer(stdout)}
    assert rows["GEMM floor"][2] == "1.00x" and rows["nnlite"][2].endswith("x")
    assert rows["nnlite, 2 threads"][2].endswith("x")  # the same training, to rounding:
    assert abs(float(rows["nnlite, 2 threads"][3]) - float(rows["nnlite"][3])) <= 0.002
    conv = rows["3 Conv2D"]                 # forward ms, backward ms, share, its floor ms
    assert float(conv[0]) > 0 and float(conv[1]) > 0 and float(conv[3]) > 0
    assert rows["2 MaxPool2D"][3] == "-"   # no matrix products in pooling
    # the BLAS and the kernels it chose decide the floor, so the machine line names them
    assert re.search(r"^machine: .*numpy \S+ \(\w+ \S+, \S+ kernels, \d+ threads",
                     stdout, re.M), stdout
    assert rows["total"][2].endswith("ms")


def test_forward_mode_benchmark_prints_its_ratios_and_the_lipschitz_check(tmp_path, data_root):
    stdout = run("forward_mode.py", data_root, tmp_path, "--rounds", "1", "--batch", "64",
                 "--epochs", "1")
    assert re.search(r"\| +CNN of cnn_mnist.py \| +[\d.]+ \| +[\d.]+ \| +[\d.]+x \|", stdout)
    error = float(re.search(r"from the SVD of the full Jacobians (\S+)", stdout).group(1))
    assert error < 1e-3, stdout


def test_fine_tune_benchmark_prints_the_speed_up_of_a_frozen_body(tmp_path, data_root):
    stdout = run("fine_tune.py", data_root, tmp_path, "--rounds", "1", "--samples", "640")
    assert re.search(r"\| +nnlite \| +[\d.]+ \| +[\d.]+ \| +[\d.]+x \|", stdout), stdout
