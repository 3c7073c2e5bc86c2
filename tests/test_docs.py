"""The front door stays true: the site builds strictly, every nnlite name the docs mention
exists, README is short and its links lead somewhere, and no page narrates its history."""
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nnlite

from conftest import require

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_documentation_site_builds_strictly(tmp_path):
    require("mkdocs")
    require("mkdocstrings")
    require("mkdocs_jupyter")
    if not (ROOT / "benchmarks" / "RESULTS.md").exists():
        pytest.fail("benchmarks/RESULTS.md is missing: run a benchmark with --write")
    mkdocs = os.path.join(os.path.dirname(sys.executable), "mkdocs")
    done = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    layers = (tmp_path / "site" / "api" / "layers" / "index.html").read_text()
    assert "Conv2D" in layers and "VJP" in layers  # the reference is the docstrings


def _classes() -> dict[str, type]:
    """Every class nnlite defines, by name."""
    found = {}
    for info in pkgutil.walk_packages(nnlite.__path__, "nnlite."):
        if info.name.endswith(("kernels.compiled", "sklearn", "plot")):
            continue  # (extras: their classes are reached through nnlite.* names below)
        module = importlib.import_module(info.name)
        found.update({name: c for name, c in vars(module).items()
                      if inspect.isclass(c) and c.__module__.startswith("nnlite")})
    return found


def _resolve(dotted: str) -> bool:
    """Whether ``dotted`` ("nnlite.check.jacobian") names a module or an attribute."""
    parts = dotted.split(".")
    obj = nnlite
    for i, part in enumerate(parts[1:], 1):
        try:  # a module first (nnlite.check.lipschitz is a module and a function)
            obj = importlib.import_module(".".join(parts[:i + 1]))
        except ImportError:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
    return True


#: Files named like nnlite's modules ("nnlite.md", "nnlite.npz") are not names.
FILES = ("md", "py", "npz", "json", "onnx", "safetensors", "ipynb", "txt", "png")


def test_every_nnlite_name_the_docs_mention_exists():
    classes = _classes()
    missing = []
    for page in PAGES:
        text = page.read_text()
        for dotted in set(re.findall(r"\bnnlite(?:\.[A-Za-z_]\w*)+", text)):
            if dotted.rpartition(".")[2] not in FILES and not _resolve(dotted):
                missing.append(f"{page.relative_to(ROOT)}: {dotted}")
        for cls, attr in set(re.findall(r"`([A-Z]\w+)\.([a-z_]\w*)", text)):
            if cls in classes and not hasattr(classes[cls], attr):
                missing.append(f"{page.relative_to(ROOT)}: {cls}.{attr}")
    assert not missing, missing


def test_readme_is_a_front_door_and_its_links_lead_somewhere():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    assert "pip install -e . && python examples/mnist_mlp.py" in text
    assert 'pip install -e ".[test]" && pytest' in text


def test_no_page_narrates_the_history_of_the_work():
    told = []
    for folder in ("README.md", "docs", "nnlite", "examples", "benchmarks"):
        path = ROOT / folder
        for file in [path] if path.is_file() else path.rglob("*"):
            if file.suffix not in (".md", ".py", ".ipynb") or "__pycache__" in file.parts:
                continue
            for n, line in enumerate(file.read_text().splitlines(), 1):
                if re.search(r"session|tried and left out|before the change", line, re.I) \
                        and "InferenceSession" not in line:
                    told.append(f"{file.relative_to(ROOT)}:{n}: {line.strip()[:80]}")
    assert not told, told
