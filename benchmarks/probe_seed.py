"""One seed of the probe comparison's fitting, as `toolkit.probe` does it, with each `fit_many` engine side by
side: for each loss (xent, logconf) the student and its random-noise control over every layer × C, and the
ceiling's 3-fold cross-validation and final fit (`toolkit.probe.probe_students`, here 31 layers × 4 C).

    python benchmarks/probe_seed.py                  # sentiment / smollm2-135m features from the cache

The engine is switched by rebinding `fit_many` where `toolkit.probe` and `toolkit.weak` look it up, so both
arms run the same selection code on the same weak labels. Arms alternate, best of `--repeats`; the table gives
each arm's time, the ratio to the torch engine, and the largest difference in any probability either writes.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch

from toolkit import linear, probe, weak
from toolkit.extract import ExtractConfig, extract, load_task
from toolkit.tasks import SplitSizes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--strong", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    opts, losses = probe.ProbeOptions(), ("xent", "logconf")  # the comparison's defaults
    sup = weak.supervise(load_task(ExtractConfig(task=args.task)), 1, SplitSizes(), weak.WeakConfig())[0]
    feats = extract(ExtractConfig(task=args.task, model=args.strong))
    n = len(sup.splits.strong_train.ids)
    print(f"{args.task} / {args.strong}: {len(feats.layers)} layers x {len(opts.Cs)} C, strong_train n={n}, "
          f"d={feats.hidden.shape[2]}, losses {', '.join(losses)} + controls + ceiling; torch threads "
          f"{torch.get_num_threads()}; best of {args.repeats}")

    times, probs = {}, {}
    for _ in range(args.repeats):
        for engine in ("numpy", "torch"):
            fit = functools.partial(linear.fit_many, engine=engine)
            probe.fit_many, weak.fit_many = fit, fit
            t0 = time.perf_counter()
            recs = probe.probe_students(feats, sup, opts, losses, weak.solver("cpu"),
                                        {"weak": "weak", "strong": args.strong})
            times[engine] = min(times.get(engine, np.inf), time.perf_counter() - t0)
            probs[engine] = np.concatenate([r.p for r in recs])
    probe.fit_many = weak.fit_many = linear.fit_many
    diff = float(np.abs(probs["numpy"] - probs["torch"]).max())
    print(f"{'engine':8s} {'seconds':>8s} {'vs torch':>9s}")
    for engine, t in times.items():
        print(f"{engine:8s} {t:8.1f} {times['torch'] / t:8.2f}x")
    print(f"max |P(y=1) difference| between engines over {len(probs['numpy'])} predictions: {diff:.1e}")


if __name__ == "__main__":
    main()
