"""notebooks/quickstart.ipynb runs headless, every cell, without error."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from spark_recover.session import resolve_delta_jars

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path):
    resolve_delta_jars()  # the kernel inherits the resolved jars through the environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=dict(os.environ))  # raises CellExecutionError naming the failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    assert any("it failed in run" in o["data"]["text/html"] for o in html)  # a run renders as a table
