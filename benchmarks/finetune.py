"""Fine-tuning speed with and without length bucketing: training tokens/s and padding fraction.

    python benchmarks/finetune.py                       # smollm2-135m on sentiment, 3 steps per arm
    python benchmarks/finetune.py --model PATH --steps 5 --threads 1

Both arms train the same model (one `Trainer`, so the same weights, optimiser and code path) on the same
examples with the same batch size; only the batching differs: `bucket` sorts by token length before cutting
batches (`make_batches(bucket=True)`), `random` cuts a random permutation. Steps alternate between the arms
(bucket, random, bucket, ...) so drifts in machine load hit both. tokens/s counts real (non-pad) tokens
through a full optimiser step (forward, backward, AdamW); padding is measured on the timed batches and on a
whole epoch's plan.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from toolkit import tasks
from toolkit import trainer as tr
from toolkit.config import JobConfig
from toolkit.encoding import tokenize
from toolkit.losses import get_loss
from toolkit.models import load_tokenizer, resolve


def padding(lengths: np.ndarray, batches, micro: int) -> float:
    """Fraction of padded positions when each micro-batch is padded to its longest example."""
    real = padded = 0
    for b in batches:
        for i in range(0, len(b), micro):
            m = lengths[b[i:i + micro]]
            real, padded = real + m.sum(), padded + len(m) * m.max()
    return 1 - real / padded


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--n", type=int, default=1000, help="examples in the pool batches are drawn from")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per arm (after one warm-up step each)")
    ap.add_argument("--dtype", default="auto", help="FinetuneConfig.dtype: auto, float32 or bfloat16")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    info = resolve(args.model)
    tok = load_tokenizer(info)
    task = tasks.subsample(tasks.load(args.task), min(args.n, len(tasks.load(args.task))), seed=0)
    template = task.template if info.arch == "causal" else "{text}"
    side = "left" if info.arch == "causal" else "right"
    seqs, _ = tokenize(tok, [template.replace("{text}", t) for t in task.texts], 512, side)
    lengths = np.array([len(s) for s in seqs])
    cfg = tr.FinetuneConfig(job=JobConfig(dtype=args.dtype), model=args.model, batch_size=args.batch_size,
                            micro_batch=args.micro_batch, lr=1e-6)
    trainer = tr.Trainer(tr.build_classifier(info, "last" if info.arch == "causal" else "mean"), cfg,
                         total_steps=10_000, pad_id=tok.pad_token_id, side=side)
    plans = {arm: tr.make_batches(lengths, args.batch_size, np.random.default_rng(0), bucket=arm == "bucket")
             for arm in ("bucket", "random")}
    w1 = np.random.default_rng(1).uniform(size=len(seqs))
    loss = get_loss("xent")
    stats = {arm: {"tokens": 0, "seconds": 0.0, "timed": []} for arm in plans}
    for i in range(args.steps + 1):  # step 0 warms up both arms (allocator, oneDNN kernels)
        for arm, plan in plans.items():
            b = plan[i % len(plan)]
            t0 = time.perf_counter()
            trainer.step([seqs[j] for j in b], w1[b], loss, step=i)
            dt = time.perf_counter() - t0
            if i:
                s = stats[arm]
                s["tokens"] += int(lengths[b].sum())
                s["seconds"] += dt
                s["timed"].append(b)
                print(f"  {arm:6} step {i}: {len(b)} examples, {lengths[b].sum()} tokens, {dt:.2f} s", flush=True)

    print(f"\n{info.name}, {args.task}: {len(seqs)} examples (mean {lengths.mean():.1f} tokens), batch "
          f"{args.batch_size}, micro-batch {args.micro_batch}, {args.steps} timed steps per arm, "
          f"{torch.get_num_threads()} threads, dtype {args.dtype}")
    print(f"{'arm':8} {'tokens/s':>9} {'pad (timed)':>12} {'pad (epoch)':>12}")
    tps = {}
    for arm, s in stats.items():
        tps[arm] = s["tokens"] / s["seconds"]
        print(f"{arm:8} {tps[arm]:9.1f} {padding(lengths, s['timed'], args.micro_batch):12.1%} "
              f"{padding(lengths, plans[arm], args.micro_batch):12.1%}")
    print(f"bucket / random tokens/s: {tps['bucket'] / tps['random']:.2f}x")


if __name__ == "__main__":
    main()
