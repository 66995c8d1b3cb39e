"""The compute floor of the default comparison (`make demo`) on this machine, stage by stage.

    python benchmarks/demo_floor.py [--report runs/demo/report.md]

FLOPs are counted from the tokens each stage runs through the strong model, with the real splits and
demonstrations of the default run: 2 × non-embedding parameters per token forward (the embedding lookup is not a
matmul; extraction and prompting compute logits for the last positions only), 3× that for a training token
(forward + backward), plus attention over each prompt's shared prefix. The floor is those FLOPs at the fp32 GEMM
rate measured here on a matmul of the model's own shape (a bound no stage can beat on this CPU). With
`--report`, the measured stage times of a cold run are set beside it.
"""

from __future__ import annotations

import argparse
import re
import time

import torch

from toolkit import tasks
from toolkit.models import load_tokenizer, read_config, resolve
from toolkit.prompt import SEP, select_demos
from toolkit.weak import check_seeds

SIZES, SEEDS, K, EPOCHS, FT_RUNS = tasks.SplitSizes(), 3, 8, 2, 3  # the defaults of toolkit.compare


def gemm_rate(d: int, ff: int, tokens: int = 8192, repeats: int = 10) -> float:
    """fp32 FLOP/s of (tokens × d) @ (d × ff), the shape of an MLP projection, at torch's default threads."""
    a, b = torch.randn(tokens, d), torch.randn(d, ff)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * tokens * d * ff / (time.perf_counter() - t0)


def stage_tokens(task, tok) -> dict[str, tuple[float, float]]:
    """Stage -> (forward-equivalent tokens, extra attention FLOPs per layer·d) of the default run."""
    n = lambda texts: sum(len(i) for i in tok(list(texts), add_special_tokens=True).input_ids)  # noqa: E731
    fill = lambda t: task.template.replace("{text}", t)  # noqa: E731
    out = {"extraction": (n(fill(t) for t in task.texts), 0.0)}
    prompt_tokens, prefix_attn = 0.0, 0.0
    for seed in check_seeds(SEEDS):
        sp = tasks.split(task, seed, SIZES)
        queries = [SEP + fill(t) for t in sp.val.texts + sp.test.texts]
        q = n(queries)
        # student and ceiling: two prompts per seed, each with its own prefix (the gold demonstrations stand in for
        # the weak-labelled ones, which are drawn the same way from the same texts)
        for _ in ("gold", "weak"):
            demos = select_demos(sp.strong_train.labels, K, seed)
            prefix = n(fill(sp.strong_train.texts[i]) + task.label_words[sp.strong_train.labels[i]] for i in demos)
            prompt_tokens += q + prefix
            prefix_attn += q * prefix  # every query token attends to the prefix: 4·d FLOPs per layer per pair
    out["prompting"] = (prompt_tokens, prefix_attn)
    sp = tasks.split(task, 0, SIZES)
    train, evals = n(fill(t) for t in sp.strong_train.texts), n(fill(t) for t in sp.val.texts + sp.test.texts)
    out["fine-tuning"] = (FT_RUNS * (EPOCHS * 3 * train + EPOCHS * evals + train), 0.0)
    return out


def measured(report: str) -> dict[str, float]:
    """Stage seconds from a comparison's report.md ("| stage | seconds |" rows)."""
    with open(report) as f:
        rows = dict(re.findall(r"^\| (.+?) \| ([0-9.]+) \|$", f.read(), flags=re.M))
    pick = lambda key: sum(float(v) for k, v in rows.items() if k.startswith(key))  # noqa: E731
    return {"extraction": pick("extract "), "probes": pick("probe "), "prompting": pick("prompt "),
            "fine-tuning": pick("finetune "), "weak labels": pick("weak "), "total": pick("total")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", help="report.md of a cold default run, for the measured column")
    args = parser.parse_args()
    info = resolve("smollm2-135m")
    cfg = read_config(info)
    d, L, ff = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    kv = d * cfg["num_key_value_heads"] // cfg["num_attention_heads"]
    params = L * (d * (2 * d + 2 * kv) + 3 * d * ff)  # q, o, k, v and the gated MLP
    task = tasks.subsample(tasks.load("sentiment"), 2000, seed=0)
    rate = gemm_rate(d, ff)
    print(f"non-embedding parameters {params / 1e6:.1f}M; fp32 GEMM {rate / 1e9:.0f} GFLOP/s "
          f"({torch.get_num_threads()} threads)")
    seen = measured(args.report) if args.report else {}
    total = 0.0
    print(f"{'stage':12} {'tokens':>10} {'TFLOP':>7} {'floor s':>8}" + ("  measured s  ratio" if seen else ""))
    for stage, (tokens, attn) in stage_tokens(task, load_tokenizer(info)).items():
        flops = 2 * params * tokens + 4 * L * d * attn
        floor = flops / rate
        total += floor
        extra = f"  {seen[stage]:10.0f}  {seen[stage] / floor:5.2f}x" if seen else ""
        print(f"{stage:12} {tokens:10.0f} {flops / 1e12:7.1f} {floor:8.0f}{extra}")
    extra = f"  {seen['total']:10.0f}  {seen['total'] / total:5.2f}x" if seen else ""
    print(f"{'all':12} {'':10} {'':7} {total:8.0f}{extra}")
    if seen:
        print(f"(probes {seen['probes']:.0f} s and weak labels {seen['weak labels']:.0f} s are not model-bound; "
              "they count in the measured total)")


if __name__ == "__main__":
    main()
