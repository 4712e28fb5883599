"""Every notebook in notebooks/ runs top to bottom, offline, with small settings."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there():
    assert {"quickstart", "planted-bias", "blending", "data-scale"} <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTEBOOK_RUNS", str(tmp_path))  # a fresh run directory, not the repository's runs/
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": path.parent}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the contact sheet is shown


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_keeps_its_outputs_so_that_it_reads_on_its_own(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))  # run top to bottom: make notebooks
    outputs = [o for cell in code for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs) and not [o for o in outputs if "ename" in o]
    assert path.stat().st_size < 400_000  # small images: the repository stays light
