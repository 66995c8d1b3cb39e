"""Dependencies point one way: each module imports only modules above it in README's Layout list."""

from __future__ import annotations

import ast
from pathlib import Path

ORDER = ["_util", "_archives", "_paper_datasets", "_suite", "tasks", "models", "config", "cache", "encoding", "extract",
         "losses", "trainer", "_linear_cpu",
         "linear", "metrics", "records", "weak", "methods", "probe", "prompt", "finetune",
         "directions", "ccs", "crc", "pca", "random_direction", "prompt_random", "chain", "diagnostics",
         "plots", "plan", "report", "compare", "sweep"]
ROOT = Path(__file__).resolve().parents[1] / "toolkit"


def _is_main_block(node) -> bool:
    """`if __name__ == "__main__":`: the module run as a program, not a dependency of it."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and \
        test.left.id == "__name__" and any(isinstance(c, ast.Constant) and c.value == "__main__"
                                           for c in test.comparators)


def _imports(path: Path, *, main: bool = False) -> set[str]:
    """The toolkit modules `path` imports: in its body (`main=False`), or in its `__main__` block alone."""
    tree = ast.parse(path.read_text())
    blocks = [node for node in tree.body if _is_main_block(node)]
    roots = blocks if main else [tree]
    skip = set() if main else {id(n) for block in blocks for n in ast.walk(block)}
    out = set()
    for node in (n for root in roots for n in ast.walk(root) if id(n) not in skip):
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


def test_a_command_block_hands_over_to_the_composition_root_only():
    """A method's command (`python -m toolkit.probe`) is the comparison with that method alone: its module's
    `__main__` block, which runs only when the module is the program, may import `compare` (the composition root,
    last in the list), and nothing else above the module. Its body may not."""
    rank = {m: i for i, m in enumerate(ORDER)}
    bad = [f"{m}'s __main__ block imports {d}" for m in ORDER for d in _imports(ROOT / f"{m}.py", main=True)
           if d in rank and rank[d] >= rank[m] and d != "compare"]
    assert not bad, bad
    handed = {m for m in ORDER if "compare" in _imports(ROOT / f"{m}.py", main=True)}
    assert handed == {"probe", "prompt", "finetune"}
