"""docs/tutorial.ipynb runs top to bottom, as a reader runs it, and is stored without
outputs."""
from pathlib import Path

from conftest import require

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"


def test_tutorial_is_stored_stripped():
    nbformat = require("nbformat")
    notebook = nbformat.read(TUTORIAL, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_tutorial_executes(tmp_path):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("ipykernel")
    require("matplotlib")
    notebook = nbformat.read(TUTORIAL, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback
    streams = "".join(out.get("text", "") for cell in notebook.cells
                      if cell.cell_type == "code" for out in cell.outputs)
    assert "J == J2 @ J1: True" in streams and "backward(g) == g @ J: True" in streams
    assert "check_layer(Swish(features=5)): OK" in streams
    assert "check_layer(WrongSwish(features=5)): FAILED" in streams
    assert "jvp(v) == J @ v: True" in streams and "<u, Jv> == <uJ, v>: True" in streams
    assert "local Lipschitz constants: [" in streams
    accuracy = float(streams.split("test accuracy: ")[1][:6])
    assert accuracy > 0.9
    pictures = [out for cell in notebook.cells if cell.cell_type == "code"
                for out in cell.outputs if "image/png" in out.get("data", {})]
    assert len(pictures) >= 7
    assert "Warning" not in streams
