"""Run notebooks top to bottom and keep what a reader should see: figures, tables and results.

    python notebooks/execute.py notebooks/*.ipynb        # what `make notebooks` runs

Each notebook runs in a fresh kernel from its own folder, as Jupyter runs it, its runs in a temporary directory
(``NOTEBOOK_RUNS``); the log lines a run writes to standard error (temporary paths, warnings) are not kept.
"""

from __future__ import annotations

import os
import sys
import tempfile

import nbclient
import nbformat


def execute(path: str) -> None:
    """Run the notebook at ``path`` and write it back with its outputs, standard error left out."""
    notebook = nbformat.read(path, as_version=4)
    where = {"metadata": {"path": os.path.dirname(os.path.abspath(path))}}  # as Jupyter opens it
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources=where).execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
    nbformat.write(notebook, path)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as runs:
        os.environ["NOTEBOOK_RUNS"] = runs
        for path in sys.argv[1:]:
            execute(path)
            print(path, flush=True)
