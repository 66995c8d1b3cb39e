"""What float16 feature storage changes in probe results: the default probe comparison's seeds on one task's
float32 and float16 entries, side by side.

    python benchmarks/store_dtype.py [--task sentiment] [--strong smollm2-135m] [--seeds 3] [--limit 2000]

Extracts the strong model's features in both storage dtypes (float32 is the CPU default; a cached entry is
reused), fits every probe of `toolkit.probe` per seed on each (the weak labels and splits are the same), and
prints test accuracy per role, loss and setting with the largest difference over every layer.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from toolkit import probe, records
from toolkit.extract import ExtractConfig, extract, load_task
from toolkit.tasks import SplitSizes
from toolkit.weak import WeakConfig, solver, supervise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--weak", default="minilm-l6")
    parser.add_argument("--strong", default="smollm2-135m")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=2000)
    args = parser.parse_args()
    ex = ExtractConfig(model=args.strong, task=args.task, limit=args.limit)
    feats = {dt: extract(replace(ex, store_dtype=dt)) for dt in ("float32", "float16")}
    task = load_task(ex)
    opts, losses, names = probe.ProbeOptions(), ("xent", "logconf"), {"weak": args.weak, "strong": args.strong}
    sups = supervise(task, args.seeds, SplitSizes(), WeakConfig(args.weak), limit=args.limit)
    labels = dict(zip(task.ids, (int(v) for v in task.labels)))
    acc = {}
    for dt, f in feats.items():
        recs = [r for s in sups for r in probe.probe_students(f, s, opts, losses, solver("cpu"), names)
                if r.split == "test"]
        tab = records.table(recs, labels)
        tab = tab[tab.metric == "accuracy"]
        acc[dt] = tab.set_index(["role", "loss", "setting", "seed"])["value"]
    diff = (acc["float16"] - acc["float32"]).abs()
    sel = diff.xs("select", level="setting")
    print(f"{len(diff)} test accuracies (roles x losses x settings x {args.seeds} seeds); "
          f"largest |float16 - float32|: {diff.max():.4f} over every layer, {sel.max():.4f} for the selected "
          f"layers; {int((diff > 0).sum())} differ at all")
    mean = {dt: a.xs("select", level="setting").groupby(["role", "loss"]).mean() for dt, a in acc.items()}
    print("mean test accuracy of the selected layer (float32 -> float16):")
    for key in mean["float32"].index:
        print(f"  {key[0]:8} {key[1]:8} {mean['float32'][key]:.4f} -> {mean['float16'][key]:.4f}")
    disk = {dt: sum(p.stat().st_size for p in f.path.glob("layer_*.npy")) / 1e6 for dt, f in feats.items()}
    print(f"layer files: {disk['float32']:.0f} MB float32, {disk['float16']:.0f} MB float16")
    assert np.isfinite(diff).all()


if __name__ == "__main__":
    main()
