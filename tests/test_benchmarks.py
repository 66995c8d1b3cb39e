"""`benchmarks/gpu.py --smoke`: the GPU benchmark's every stage, on a tiny shape on the CPU, so that the script a
lent GPU runs in one prepared call has run before it gets there; and the cache-hit benchmark on a tiny entry."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

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
