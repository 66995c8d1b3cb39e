"""Every notebook runs top to bottom on small settings (TOOLKIT_NOTEBOOK_SMALL=1) with no error."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from toolkit._util import cache_root

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    if not (cache_root() / "models" / "smollm2-135m").exists():
        pytest.skip("default models not installed (run `make setup`)")
    monkeypatch.setenv("TOOLKIT_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("TOOLKIT_NOTEBOOK_CACHE", str(tmp_path))  # features go to a fresh cache
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
