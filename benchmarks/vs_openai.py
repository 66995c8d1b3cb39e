"""A run of openai/weak-to-strong's NLP sweep (`--preset openai-nlp`) set beside their published numbers.

Their numbers are read off the figures their plotting notebook saved (`notebooks/<dataset>.png` in
openai/weak-to-strong at 6b450f2): each model's ground-truth accuracy (the x-axis labels) and, per loss, the median
PGR over every weak < strong run of the sweep (the table in the corner), for their full sweep of gpt2, gpt2-medium,
gpt2-large, gpt2-xl, Qwen-1.8B, Qwen-7B and Qwen-14B. Where two labels overlap in the figure the value is given to
the digits that can be read.

The toolkit side is computed from the runs' results.csv exactly as their notebook computes it: a model's
accuracy is the mean over seeds of its gold-trained test accuracy (the fine-tuned weak supervisor's, or the
ceiling's, final checkpoint); each student run's PGR is (student − weak model's accuracy) / (strong model's −
weak model's), kept only where the strong model beats the weak one; the median over runs per dataset and loss.
Theirs pools more pairs (Qwen too), so the medians compare like with like only over the same model list.

Where a network and a GPU are (not yet run here):

    for w in gpt2 gpt2-medium gpt2-large; do  # every weak < strong pair of the gpt2 family, as their sweep.py
        python -m toolkit.compare --preset openai-nlp --weak openai-community/$w \\
            --strong <the larger ones> --out runs/openai-nlp-$w
    done
    python benchmarks/vs_openai.py runs/openai-nlp-*

Without runs it prints their numbers and these commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

PUBLISHED = {
    "sciq": {"pgr": {"xent": 0.3322, "logconf": 0.3102},
             "accuracy": {"gpt2": 0.6363, "gpt2-medium": 0.6856, "gpt2-large": 0.7257, "gpt2-xl": 0.7303,
                          "Qwen-1_8B": 0.8215, "Qwen-7B": 0.8933, "Qwen-14B": 0.9223}},
    "boolq": {"pgr": {"xent": 0.0484, "logconf": -0.3545},
              "accuracy": {"gpt2": 0.6606, "gpt2-medium": 0.703, "gpt2-large": 0.706, "gpt2-xl": 0.7503,
                           "Qwen-1_8B": 0.7808, "Qwen-7B": 0.8613, "Qwen-14B": 0.8959}},
    "cosmos_qa": {"pgr": {"xent": 0.3518, "logconf": 0.3693},
                  "accuracy": {"gpt2": 0.6845, "gpt2-medium": 0.7076, "gpt2-large": 0.7356, "gpt2-xl": 0.7551,
                               "Qwen-1_8B": 0.7865, "Qwen-7B": 0.8713, "Qwen-14B": 0.8848}},
    "amazon_polarity": {"pgr": {"xent": 0.5757, "logconf": 0.5207},
                        "accuracy": {"gpt2": 0.9416, "gpt2-medium": 0.9530, "gpt2-large": 0.9576, "gpt2-xl": 0.9595,
                                     "Qwen-1_8B": 0.9604, "Qwen-7B": 0.972, "Qwen-14B": 0.972}},
}
"""openai/weak-to-strong's published sweep, read off notebooks/<dataset>.png (see the module docstring)."""


def _dataset(task: str) -> str:
    return task.split(":", 1)[1] if task.startswith("openai:") else task


def _model(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def openai_aggregate(results: pd.DataFrame, setting: str = "final") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(median PGR per dataset and loss, accuracy per dataset and model) from fine-tuning runs' results.csv rows,
    computed as openai's plotting notebook does (module docstring)."""
    chain = results["chain"] if "chain" in results else pd.Series(np.nan, index=results.index)
    direct = chain.isna() | (chain.astype(str) == "")  # bootstrapped rows are not theirs
    test = results[(results.split == "test") & (results.metric == "accuracy") & (results.method == "finetune")
                   & direct]
    test = test.assign(dataset=test.task.map(_dataset))
    gold = pd.concat([test[test.role == "weak"].assign(model=test.weak.map(_model)),
                      test[(test.role == "ceiling") & (test.setting == setting)].assign(model=test.strong.map(_model))])
    acc = gold.groupby(["dataset", "model"]).value.mean()
    runs = test[(test.role == "student") & (test.setting == setting) & (test.weak != test.strong)]
    rows = []
    for r in runs.itertuples():
        w, s = acc.get((r.dataset, _model(r.weak))), acc.get((r.dataset, _model(r.strong)))
        if w is not None and s is not None and s > w:  # their rule: any positive gap
            rows.append({"dataset": r.dataset, "loss": r.loss, "pgr": (r.value - w) / (s - w)})
    pgr = pd.DataFrame(rows, columns=["dataset", "loss", "pgr"])
    medians = pgr.groupby(["dataset", "loss"]).pgr.agg(["median", "count"]).reset_index()
    return medians, acc.rename("accuracy").reset_index()


def side_by_side(medians: pd.DataFrame, acc: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's medians and accuracies beside the published ones."""
    pgr = [{"dataset": d, "loss": loss, "openai": v, "toolkit": np.nan, "runs": 0}
           for d, p in PUBLISHED.items() for loss, v in p["pgr"].items()]
    pgr = pd.DataFrame(pgr).set_index(["dataset", "loss"])
    for r in medians.to_dict("records"):
        pgr.loc[(r["dataset"], r["loss"]), ["toolkit", "runs"]] = [r["median"], r["count"]]
    accs = pd.DataFrame([{"dataset": d, "model": m, "openai": v} for d, p in PUBLISHED.items()
                         for m, v in p["accuracy"].items()]).merge(acc.rename(columns={"accuracy": "toolkit"}),
                                                                   on=["dataset", "model"], how="outer")
    return pgr.reset_index(), accs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="compare output folders (each with results.csv)")
    parser.add_argument("--setting", default="final", help="checkpoint to compare: final (theirs) or best")
    args = parser.parse_args(argv)
    frames = []
    for run in args.runs:
        if not (run / "results.csv").is_file():
            print(f"error: {run} has no results.csv; give the --out folders of `compare --preset openai-nlp`",
                  file=sys.stderr)
            return 2
        frames.append(pd.read_csv(run / "results.csv", keep_default_na=False, na_values=[""]))
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["task", "weak", "chain", "strong", "method", "role", "loss", "setting", "seed", "split", "metric",
                 "value"])
    pgr, acc = side_by_side(*openai_aggregate(results, args.setting))
    with pd.option_context("display.width", 160, "display.precision", 4):
        print("Median PGR over weak < strong runs (theirs: the full gpt2 .. Qwen-14B sweep)\n")
        print(pgr.to_string(index=False))
        print("\nGround-truth test accuracy per model (theirs: mean over their seeds)\n")
        print(acc.to_string(index=False))
    if not frames:
        print("\nNo runs given. " + __doc__[__doc__.index("Where a network"):__doc__.index("Without runs")].strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
