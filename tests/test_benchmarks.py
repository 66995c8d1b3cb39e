"""`benchmarks/gpu.py --smoke`: the GPU benchmark's every stage, on a tiny shape on the CPU, so that the script a
lent GPU runs in one prepared call has run before it gets there; and the cache-hit benchmark on a tiny entry."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit._util import cache_root

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_every_stage(tmp_path):
    if not (cache_root() / "models" / "smollm2-135m").exists():
        pytest.skip("smollm2-135m (the benchmark's tokenizer) is not installed (run `make setup`)")
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["matmul_peak_tflops"] > 0
    tiny = res["shapes"]["tiny"]
    for key in ("naive_tok_s", "extract_tok_s", "extract_mfu", "cache_cold_s", "cache_warm_s", "probe_seed_s",
                "sklearn_seed_s_est", "probe_share_of_extraction", "prompt_queries_s", "finetune_tok_s",
                "finetune_mfu"):
        assert math.isfinite(tiny[key]) and tiny[key] > 0, key
    assert tiny["finetune"] == "full" and tiny["probe_fits"] == 3 * (4 * 2 * 2 + 3 * 4 + 1)  # 3 layers of tiny
    assert tiny["extract_batch_tokens"] == 8192 and tiny["cache_store_dtype"] == "float32"  # the CPU defaults
    assert tiny["cache_entry_mb"] > 0 and tiny["finetune_checkpointing"] is False


_BLOCKER = """
import importlib.machinery, os, sys
ALLOWED = os.environ["MIMIC_ALLOWED"].split(os.pathsep)
BLOCKED = {"toolkit", "simple_parsing", "docstring_parser"}


class NotOnTheGpuMachine:
    # the GPU machine has torch, transformers, accelerate, peft and scikit-learn, but not these: they may come
    # only from the copied tree and its carried folder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in BLOCKED or path is not None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, ALLOWED)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} on the GPU machine", name=name)
        return spec


sys.meta_path.insert(0, NotOnTheGpuMachine())
"""


@pytest.mark.slow
def test_the_gpu_run_works_from_a_bare_copy_of_the_tree(tmp_path):
    """The one documented GPU command, at its smoke size on the CPU, where the GPU machine's conditions are
    mimicked: a copy of the tree with `.gpu/` (benchmarks/gpu_carry.py) and nothing else of the toolkit's, no
    installed toolkit, simple_parsing or docstring_parser (imports of them from anywhere else fail), no cache."""
    if not (cache_root() / "models" / "smollm2-135m").exists():
        pytest.skip("smollm2-135m (the carried tokenizer) is not installed (run `make setup`)")
    tree = tmp_path / "tree"
    for part in ("toolkit", "benchmarks"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_carry
    finally:
        sys.path.pop(0)
    carried = gpu_carry.carry(tree / ".gpu", n=200)
    assert sum(f.stat().st_size for f in carried.rglob("*") if f.is_file()) < 8e6
    (tmp_path / "mimic").mkdir()
    (tmp_path / "mimic" / "sitecustomize.py").write_text(_BLOCKER)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "SMOKE": "1",
           "OUT": str(tmp_path / "out"), "PYTHONPATH": str(tmp_path / "mimic"),
           "MIMIC_ALLOWED": os.pathsep.join([str(tree), str(tree / ".gpu" / "site")])}
    where = subprocess.run([sys.executable, "-c", "import simple_parsing, toolkit; print(simple_parsing.__file__, "
                            "toolkit.__file__)"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert where.stdout.split() == [str(tree / ".gpu" / "site" / "simple_parsing" / "__init__.py"),
                                    str(tree / "toolkit" / "__init__.py")], where.stderr
    blocked = subprocess.run([sys.executable, "-c", "import toolkit"], env={**env, "MIMIC_ALLOWED": str(tmp_path)},
                             capture_output=True, text=True, cwd=tmp_path)
    assert "No module named 'toolkit' on the GPU machine" in blocked.stderr  # the installed copy is out of reach
    proc = subprocess.run(["bash", str(tree / "benchmarks" / "gpu_run.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    res = json.loads((tmp_path / "out" / "tiny.json").read_text())
    tiny = res["shapes"]["tiny"]
    assert not [k for k in tiny if k.endswith("_error")], tiny
    assert tiny["extract_tok_s"] > 0 and tiny["finetune"] == "full" and tiny["probe_fits"] > 0
    assert "=== tiny" in (tmp_path / "out" / "log.txt").read_text()


def test_cache_hit_benchmark_runs(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import cache_hit
    finally:
        sys.path.pop(0)
    cache_hit.main(["--n", "40", "--layers", "3", "--d", "16", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "entry 40 x 3 layers x 16 float32" in out
    assert all(arm in out for arm in ("eager", "hit + 1 layer", "hit + all layers"))


def test_vs_openai_aggregates_as_their_notebook_does():
    """benchmarks/vs_openai.py: a model's accuracy is the seed mean of its gold-trained runs (as weak supervisor
    or as ceiling), each student run's PGR is taken against those, only where strong beats weak, median per loss."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import vs_openai
    finally:
        sys.path.pop(0)
    rows = []

    def add(weak, strong, role, loss, seed, value, setting="final"):
        rows.append({"task": "openai:sciq", "weak": weak, "chain": "", "strong": strong, "method": "finetune",
                     "role": role, "loss": loss, "setting": setting, "seed": seed, "split": "test",
                     "metric": "accuracy", "value": value})

    for seed, (w, c1, c2) in enumerate([(0.60, 0.70, 0.80), (0.62, 0.72, 0.84)]):
        add("o/gpt2", "o/gpt2-medium", "weak", "xent", seed, w)
        add("o/gpt2", "o/gpt2-medium", "ceiling", "xent", seed, c1)
        add("o/gpt2", "o/gpt2-large", "ceiling", "xent", seed, c2)
        add("o/gpt2", "o/gpt2-medium", "student", "xent", seed, 0.66 + seed / 100)
        add("o/gpt2", "o/gpt2-large", "student", "xent", seed, 0.70)
        add("o/gpt2", "o/gpt2-large", "student", "xent", seed, 0.99, setting="best")  # not the headline: ignored
    medians, acc = vs_openai.openai_aggregate(pd.DataFrame(rows))
    # gpt2 0.61, medium 0.71, large 0.82: PGRs (0.66-0.61)/0.1, (0.67-0.61)/0.1, (0.70-0.61)/0.21 twice
    expect = np.median([0.5, 0.6, 0.09 / 0.21, 0.09 / 0.21])
    assert acc.set_index("model").accuracy.to_dict() == pytest.approx({"gpt2": 0.61, "gpt2-medium": 0.71,
                                                                       "gpt2-large": 0.82})
    (row,) = medians.to_dict("records")
    assert row["median"] == pytest.approx(expect) and row["count"] == 4 and row["dataset"] == "sciq"
    pgr, _ = vs_openai.side_by_side(medians, acc)
    mine = pgr[(pgr.dataset == "sciq") & (pgr.loss == "xent")].iloc[0]
    assert mine.openai == 0.3322 and mine.toolkit == pytest.approx(expect)
