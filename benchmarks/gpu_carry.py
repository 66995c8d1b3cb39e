"""Prepare `.gpu/`, the folder a lent GPU machine needs beside a bare copy of the tree (no installed toolkit, no
cache, no network; torch, transformers, accelerate, peft and scikit-learn are there):

- `tok/`: SmolLM2's config and tokenizer files (from the installed `smollm2-135m`), which the benchmark's
  random-init models are built around;
- `task.jsonl`: 2,000 class-balanced `sentiment` examples of at most 64 tokens;
- `site/`: the pure-Python packages the toolkit imports that the machine lacks (simple_parsing, docstring_parser).

    python benchmarks/gpu_carry.py [--out .gpu]      # then carry it: the device tool's carry=[".gpu"]

About 4 MB. `.gpu/` is git-ignored: it holds task data and copies of other projects' code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit import tasks  # noqa: E402
from toolkit._util import cache_root  # noqa: E402

PACKAGES = ("simple_parsing", "docstring_parser")
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json")


def carry(out: Path, n: int = 2000, max_tokens: int = 64) -> Path:
    """Write `out` (tok/, task.jsonl, site/) afresh and return it."""
    from transformers import AutoTokenizer

    shutil.rmtree(out, ignore_errors=True)
    tok_src = cache_root() / "models" / "smollm2-135m"
    if not (tok_src / "tokenizer.json").is_file():
        raise SystemExit("smollm2-135m is not installed: run `make setup` first")
    (out / "tok").mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (tok_src / name).is_file():
            shutil.copy(tok_src / name, out / "tok" / name)
    task = tasks.load("sentiment")
    tok = AutoTokenizer.from_pretrained(tok_src)
    lengths = [len(ids) for ids in tok([task.template.format(text=t) for t in task.texts]).input_ids]
    short = task.subset([i for i, n_tok in zip(task.ids, lengths) if n_tok <= max_tokens])
    sample = tasks.subsample(short, min(n, tasks.balanced_size(short)), seed=0)
    (out / "task.jsonl").write_text("".join(json.dumps({"text": t, "label": int(y)}) + "\n"
                                            for t, y in zip(sample.texts, sample.labels)))
    for name in PACKAGES:
        src = Path(importlib.import_module(name).__file__).parent
        shutil.copytree(src, out / "site" / name, ignore=shutil.ignore_patterns("__pycache__"))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    args = parser.parse_args(argv)
    out = carry(args.out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 1e6:.1f} MB (tok/, task.jsonl, site/)")


if __name__ == "__main__":
    main()
