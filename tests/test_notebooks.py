"""Every notebook runs top to bottom on small settings (TOOLKIT_NOTEBOOK_SMALL=1) with no error."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from toolkit._util import cache_root

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_the_expected_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_diagnostics.ipynb", "03_your_own_task.ipynb"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch, real_models_cache):
    if not (cache_root() / "models" / "smollm2-135m").exists():
        pytest.skip("default models not installed (run `make setup`)")
    monkeypatch.setenv("TOOLKIT_NOTEBOOK_SMALL", "1")
    # one cache for all three, so 02 reads what 01 computed, as it would for a user
    monkeypatch.setenv("TOOLKIT_NOTEBOOK_CACHE", str(real_models_cache))
    monkeypatch.setenv("TOOLKIT_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    # The timeout guards against a hung kernel, not speed: one cell runs a whole small comparison, which takes
    # minutes on an AVX2-only 2-core CPU and over 10 when another job shares the cores.
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    if path.name == "01_quickstart.ipynb":
        assert {"report.md", "summary.csv", "pgr_accuracy.png"} <= {p.name for p in tmp_path.iterdir()}


def test_notebooks_use_only_the_public_api():
    """A notebook reaches the toolkit through the names `toolkit` exports (and its diagnostics and plots
    modules), never through another module's internals."""
    import re

    import toolkit

    allowed = set(toolkit.__all__) | {"diagnostics", "plots"}
    for nb in NOTEBOOKS:
        src = "\n".join(c.source for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code")
        used = set(re.findall(r"\btoolkit\.(\w+)", src))
        used |= {n.strip() for m in re.findall(r"from toolkit import ([\w, ]+)", src) for n in m.split(",")}
        assert used and used <= allowed, (nb.name, used - allowed)
        assert not re.search(r"from toolkit\.\w+ import|import toolkit\.\w+", src), nb.name
