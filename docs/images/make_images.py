"""Remake README's pictures: the MNIST MLP example, run as README says, with --plot here.

    python docs/images/make_images.py          (about half a minute; needs nnlite[plot])

Writes history.png, mistakes.png, weights.png and sensitivity.png beside this file.
"""
import subprocess
import sys
import tempfile
from pathlib import Path

here = Path(__file__).resolve().parent
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, str(here.parent.parent / "examples" / "mnist_mlp.py"),
                    "--plot", str(here), "--save", str(Path(tmp) / "mnist_mlp.npz"),
                    *sys.argv[1:]], check=True)
