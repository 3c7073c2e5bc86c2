"""fit(comm=...) over MPI: n ranks under ``mpiexec`` train bit for bit as ``LocalComm(n)``
does in one process (``deterministic=True``), and as one plain process does to rounding;
validation numbers are the whole data's; a failing rank stops every rank; a checkpoint of
n ranks resumes on m. The models are tests/mpi_case.py's, in float64."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mpi_case
from conftest import require, skip_or_fail

CASE = Path(__file__).resolve().parent / "mpi_case.py"


@pytest.fixture(scope="module")
def mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), or on the PATH."""
    require("mpi4py")
    found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or \
        shutil.which("mpiexec")
    if found is None:
        skip_or_fail('mpiexec is not installed (pip install -e ".[mpi]")')
    return found


def run(mpiexec, n, *args, timeout=120):
    """``mpiexec -n n python tests/mpi_case.py args`` (oversubscribed on 2 cores: MPICH
    allows it as it is): the finished process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(CASE.parent.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([mpiexec, "-n", str(n), sys.executable, str(CASE), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def run_code(mpiexec, n, tmp_path, code):
    """``mpiexec -n n python`` of a script holding ``code``: the finished process."""
    script = tmp_path / "script.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(CASE.parent.parent))
    return subprocess.run([mpiexec, "-n", str(n), sys.executable, str(script)],
                          capture_output=True, text=True, timeout=60, env=env)


def ranks(mpiexec, n, case, tmp_path, *args):
    """What n ranks trained: (weights, history)."""
    out = tmp_path / f"{case}-{n}.npz"
    done = run(mpiexec, n, case, out, *args)
    assert done.returncode == 0, done.stderr
    saved = np.load(out)
    return [saved[f"arr_{i}"] for i in range(len(saved.files) - 1)], \
        json.loads(str(saved["history"]))


def here(case, comm, **kwargs):
    """What one process trained: (weights, history)."""
    model, _, history, _ = mpi_case.train(case, comm, **kwargs)
    return [p.data for p in model.parameters()], history.history


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("case", ["mlp-dropout", "cnn", "graph", "cnn-whole"])
def test_n_ranks_train_bit_for_bit_as_local_comm(mpiexec, tmp_path, n, case):
    from nnlite.distributed import LocalComm

    got, got_history = ranks(mpiexec, n, case, tmp_path)
    want, want_history = here(case, LocalComm(n))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want))
    assert got_history == want_history  # the losses, and the validation numbers
    saved = sorted(p.name for p in tmp_path.glob("*.rank*.npz"))
    assert saved == [f"{case}-{n}.npz.rank0.npz"]  # every rank called save; rank 0 wrote


@pytest.mark.parametrize("n", [2, 3])
def test_each_rank_reads_only_its_part_of_each_batch(mpiexec, tmp_path, n):
    """A dataset with ``part`` (ArrayDataset): rank r reads rows b[r]:b[r+1] of each batch,
    training and validation, and trains bit for bit as LocalComm(n), which reads whole
    batches."""
    from nnlite.distributed import LocalComm
    from nnlite.training.parts import part_bounds

    got, got_history = ranks(mpiexec, n, "mlp-dataset", tmp_path)
    model, _, history, (whole, _) = mpi_case.train("mlp-dataset", LocalComm(n))
    assert all(a.tobytes() == p.data.tobytes() for a, p in zip(got, model.parameters()))
    assert got_history == history.history
    batches = [whole[i:i + 24] for i in range(0, len(whole), 24)]  # door's batch 0, 2 epochs
    assert len(batches) == 7
    for r in range(n):
        read, val_read = json.loads((tmp_path / f"mlp-dataset-{n}.npz.reads{r}.json").read_text())
        lo, hi = part_bounds(24, n)[r:r + 2]
        assert read == [row for b in batches for row in b[lo:hi]]
        lo, hi = part_bounds(9, n)[r:r + 2]
        assert val_read == 2 * [*range(lo, hi), *range(9 + lo, 9 + hi)]  # 2 epochs


@pytest.mark.parametrize("case", ["mlp", "cnn", "graph"])
def test_ranks_train_as_one_process_does_with_the_same_global_batch(mpiexec, tmp_path, case):
    """Fails if the gradients were not summed across ranks, summed twice, or not divided
    by the global batch: each changes the step."""
    got, got_history = ranks(mpiexec, 2, case, tmp_path)
    want, want_history = here(case, None)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    for key in want_history:  # validation, computed on the whole data, as one process does
        np.testing.assert_allclose(got_history[key], want_history[key], rtol=1e-10)
    assert set(got_history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_what_writes_writes_on_rank_zero_only(mpiexec, tmp_path):
    done = run(mpiexec, 3, "mlp", tmp_path / "out.npz", "--verbose")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("Epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]  # one line each, not three


def test_the_sum_is_taken_by_mpi_when_not_deterministic(mpiexec, tmp_path):
    code = ("import numpy as np, nnlite\n"
            "c = nnlite.distributed.MPIComm(deterministic=False)\n"
            "total = c.sum(np.full(3, c.rank + 1.0))\n"
            "assert np.array_equal(total, np.full(3, c.size * (c.size + 1) / 2)), total\n")
    done = run_code(mpiexec, 3, tmp_path, code)
    assert done.returncode == 0, done.stderr


def test_a_failing_rank_stops_every_rank_and_says_which(mpiexec, tmp_path):
    start = time.monotonic()
    done = run(mpiexec, 3, "mlp", tmp_path / "x.npz", "--fail-rank", 1, timeout=60)
    assert time.monotonic() - start < 30
    assert done.returncode != 0
    assert "nnlite: rank 1 of 3 failed" in done.stderr
    assert "this rank's data is bad" in done.stderr
    assert not (tmp_path / "x.npz").exists()


def test_a_checkpoint_of_two_ranks_resumes_on_three(mpiexec, tmp_path):
    from nnlite.distributed import LocalComm

    checkpoint = tmp_path / "ckpt.npz"
    ranks(mpiexec, 2, "cnn", tmp_path, "--epochs", 1, "--checkpoint", checkpoint)
    got, got_history = ranks(mpiexec, 3, "cnn", tmp_path, "--resume", checkpoint)
    want, want_history = here("cnn", LocalComm(3), checkpoint=str(checkpoint), resume=True)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want))
    assert got_history == want_history and len(got_history["loss"]) == 1  # epoch 2 only


def test_ctrl_c_in_mpiexec_stops_every_rank_and_the_checkpoint_loads(mpiexec, tmp_path):
    import signal

    import nnlite

    checkpoint = tmp_path / "ckpt.npz"
    env = dict(os.environ, PYTHONPATH=str(CASE.parent.parent))
    job = subprocess.Popen([mpiexec, "-n", "2", sys.executable, str(CASE), "mlp",
                            tmp_path / "out.npz", "--epochs", "100000", "--checkpoint",
                            checkpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert checkpoint.exists()
        job.send_signal(signal.SIGINT)
        job.wait(timeout=30)
    finally:
        job.kill()
    model, optimizer, epoch = nnlite.load_checkpoint(checkpoint)
    assert epoch >= 1 and optimizer.steps == 3 * epoch  # 72 rows, batches of 24


def test_ctrl_c_reaching_one_rank_stops_every_rank_after_the_same_batch(mpiexec, tmp_path):
    """Rank 1 alone gets SIGINT after batch 1 of epoch 2, between two agreements: both
    ranks stop after batch 2, the next agreed (a rank stopping alone would leave the other
    waiting for it forever)."""
    done = run(mpiexec, 2, "mlp", tmp_path / "out.npz", "--epochs", 5, "--interrupt-rank", 1,
               timeout=60)
    assert done.returncode == 0, done.stderr
    assert "interrupted by Ctrl-C after 1 complete epoch" in done.stderr
    for r in range(2):
        end = json.loads((tmp_path / f"out.npz.end{r}.json").read_text())
        assert end == {"steps": 3 + 2, "epochs": 1}  # 3 batches, then 2 of epoch 2


def test_each_rank_keeps_blas_to_its_share_of_the_cores(mpiexec, tmp_path):
    """NumPy's BLAS (loaded when fit starts: numba, loaded with the first batch, brings
    SciPy's, which nnlite's kernels do not call) runs on cores / ranks threads in fit."""
    code = ("import os, numpy as np, nnlite\n"
            "from threadpoolctl import threadpool_info\n"
            "blas = lambda: {i['filepath']: i['num_threads'] for i in threadpool_info() "
            "if i['user_api'] == 'blas'}\n"
            "class Seen(nnlite.callbacks.Callback):\n"
            "    def on_epoch_end(self, epoch, logs=None):\n"
            "        self.threads = {p: n for p, n in blas().items() if p in before}\n"
            "before, seen = blas(), Seen()\n"
            "model = nnlite.Sequential(nnlite.layers.Linear(4, 2))\n"
            "model.fit(np.ones((8, 4)), np.zeros(8, int), loss=nnlite.losses.CrossEntropy(),\n"
            "          optimizer=nnlite.optim.SGD(model.parameters(), lr=0.1), verbose=False,\n"
            "          callbacks=[seen], comm=nnlite.distributed.MPIComm())\n"
            "share = max(1, os.cpu_count() // 2)\n"
            "assert seen.threads == dict.fromkeys(before, share), (seen.threads, before)\n"
            "assert {p: blas()[p] for p in before} == before\n")
    done = run_code(mpiexec, 2, tmp_path, code)
    assert done.returncode == 0, done.stderr


def test_local_comm_and_the_door():
    from nnlite.distributed import LocalComm

    with pytest.raises(ValueError, match="LocalComm: n must be"):
        LocalComm(0)
    model, _, history, _ = mpi_case.train("mlp", LocalComm(1), epochs=1)  # one part: the model
    assert len(history.history["loss"]) == 1
    x, y = np.zeros((50, 6)), np.zeros(50, int)
    fit = dict(loss=mpi_case.nnlite.losses.CrossEntropy(), verbose=False, batch_size=24,
               optimizer=mpi_case.nnlite.optim.SGD(model.parameters(), lr=0.1))
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match="3 parts, one per rank, but the last batch of each "
                                         "epoch has 2 rows"):
        model.fit(x, y, comm=LocalComm(3), **fit)  # refused at the door: nothing trained
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    model.fit(x, y, comm=LocalComm(3), drop_last=True, **fit)
    with pytest.raises(ValueError, match="cuts the validation data into 3 parts, one per rank, "
                                         "but it has 2 rows"):
        model.fit(x, y, comm=LocalComm(3), drop_last=True, validation_data=(x[:2], y[:2]), **fit)
    val = mpi_case.nnlite.datasets.ArrayDataset(x[:11], y[:11], batch_size=5)  # 5, 5, 1 rows
    with pytest.raises(ValueError, match="batch 2: a batch of 1 rows cannot be cut into 3"):
        model.fit(x, y, comm=LocalComm(3), drop_last=True, validation_data=val, **fit)
    with pytest.raises(ValueError, match="give threads=2 or comm, not both"):
        model.fit(np.zeros((8, 6)), np.zeros(8, int), loss=mpi_case.nnlite.losses.CrossEntropy(),
                  optimizer=mpi_case.nnlite.optim.SGD(model.parameters(), lr=0.1),
                  threads=2, comm=LocalComm(2), verbose=False)


def test_without_the_extra_the_import_names_it():
    code = ("import sys\nsys.modules['mpi4py'] = None\nimport nnlite\n"
            "try:\n    nnlite.distributed\nexcept ImportError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(CASE.parent.parent)))
    assert 'pip install "nnlite[mpi]"' in done.stdout, done.stderr
