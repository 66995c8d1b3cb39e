"""k-shot scoring speed: shared-prefix KV reuse against naive full prompts, side by side in one run.

    python benchmarks/prompt.py [--model smollm2-135m] [--task sentiment] [--n 64] [--k 8] [--repeats 3]

Both arms score the same tokens (k demonstrations from one seed's draw, then each query and both label
words) with the same length-sorted batches and token budget; the shared arm runs the demonstrations
once and expands their cache over each batch, the naive arm runs every full prompt. Arms are
interleaved and the best of `--repeats` is kept. Prints seconds, prompts/s, the speed-up and the largest
absolute difference between the two arms' log-probs (fp32).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from toolkit import tasks
from toolkit.models import load_model, load_tokenizer, resolve
from toolkit.prompt import score, select_demos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--n", type=int, default=64, help="queries scored")
    ap.add_argument("--k", type=int, default=8, help="demonstrations")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    splits = tasks.split(tasks.load(args.task), seed=0, sizes=tasks.SplitSizes(0, 200, 0, args.n))
    pool, queries = splits.strong_train, splits.test
    demos = [(pool.texts[i], int(pool.labels[i])) for i in select_demos(pool.labels, args.k, seed=0)]
    info = resolve(args.model)
    tok, model = load_tokenizer(info), load_model(info, dtype="float32", device="cpu")
    run = lambda reuse: score(model, tok, queries.template, queries.label_words, queries.texts, demos,
                              batch_tokens=args.batch_tokens, reuse_prefix=reuse)
    run(True)  # warm-up: first-call allocations and kernel selection
    best, out = {"shared prefix": np.inf, "full prompts": np.inf}, {}
    for _ in range(args.repeats):
        for name, reuse in (("full prompts", False), ("shared prefix", True)):
            t = time.perf_counter()
            out[name] = run(reuse)
            best[name] = min(best[name], time.perf_counter() - t)
    n_prefix = sum(len(tok(("\n\n" if i else "") + queries.template.replace("{text}", t) + queries.label_words[y],
                           add_special_tokens=False).input_ids) for i, (t, y) in enumerate(demos))
    n_query = np.mean([len(tok("\n\n" + queries.template.replace("{text}", t)).input_ids) for t in queries.texts])
    diff = float(np.abs(out["shared prefix"] - out["full prompts"]).max())
    print(f"{args.task} / {args.model}, k={args.k} ({n_prefix} prefix tokens), {args.n} queries "
          f"(mean {n_query:.1f} tokens), batch_tokens={args.batch_tokens}, threads={torch.get_num_threads()}, "
          f"best of {args.repeats}")
    print(f"{'arm':15} {'seconds':>8} {'prompts/s':>10} {'speed-up':>9}")
    for name in ("full prompts", "shared prefix"):
        print(f"{name:15} {best[name]:8.2f} {args.n / best[name]:10.1f} "
              f"{best['full prompts'] / best[name]:8.2f}x")
    print(f"max |log-prob difference| between arms: {diff:.2e}")


if __name__ == "__main__":
    main()
