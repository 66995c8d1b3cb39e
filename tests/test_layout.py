"""Dependencies point one way: each module imports only modules above it in README's Layout list."""

from __future__ import annotations

import ast
from pathlib import Path

ORDER = ["_util", "_archives", "_paper_datasets", "_suite", "tasks", "models", "config", "cache", "encoding", "extract",
         "losses", "_linear_cpu",
         "linear", "metrics", "records", "weak", "methods", "probe", "prompt", "finetune",
         "directions", "ccs", "crc", "pca", "random_direction", "prompt_random", "chain", "diagnostics",
         "plots", "plan", "report", "compare"]
ROOT = Path(__file__).resolve().parents[1] / "toolkit"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "toolkit":
                out |= {a.name for a in node.names}
            elif node.module.startswith("toolkit."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("toolkit.")}
    return out


def test_every_module_is_in_the_layout():
    assert {p.stem for p in ROOT.glob("*.py")} - {"__init__"} == set(ORDER)


def test_imports_point_up_the_list_only():
    rank = {m: i for i, m in enumerate(ORDER)}
    bad = [f"{m} imports {d}" for m in ORDER for d in _imports(ROOT / f"{m}.py")
           if d in rank and rank[d] >= rank[m]]
    assert not bad, bad
