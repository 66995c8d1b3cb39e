"""A comparison's outputs: the printed summary, report.md, the figures and the files `Comparison.write` puts in
its folder. Pure formatting of what `toolkit.compare` computed; nothing here runs a model."""

from __future__ import annotations

import gzip
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit import config, diagnostics, metrics, plots, records, weak
from toolkit._util import ToolkitError, atomic_write_bytes

__all__ = ["OUTPUTS", "PRINT_COLUMNS", "check_out", "figures", "format_summary", "markdown_table", "report", "write"]

PRINT_COLUMNS = ["task", "strong", "method", "loss", "setting", "n_seeds", "weak_acc", "student_acc", "ceiling_acc",
                 "pgr_acc", "pgr_acc_lo", "pgr_acc_hi", "pgr_auroc", "pgr_auroc_lo", "pgr_auroc_hi"]


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def format_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as printed: accuracies to 3 decimals, PGR as `mean [lo, hi]`, undefined PGR with its reason."""
    if summary.empty:
        return summary
    cols = [c for c in PRINT_COLUMNS[:9] if c in summary]
    if "chain" in summary and summary["chain"].astype(bool).any():  # bootstrapped students beside direct ones
        cols.insert(1, "chain")
    out = summary[cols].copy()
    for c in ("weak_acc", "student_acc", "ceiling_acc"):
        out[c] = out[c].map(lambda v: f"{v:.3f}")
    for m in ("acc", "auroc"):
        out[f"PGR {m}"] = [
            f"{r[f'pgr_{m}']:.2f} [{r[f'pgr_{m}_lo']:.2f}, {r[f'pgr_{m}_hi']:.2f}]" if np.isfinite(r[f"pgr_{m}"])
            else "undefined" for _, r in summary.iterrows()]
    notes = summary["pgr_acc_note"].fillna("")
    if "pgr_acc_draws_undefined" in summary:
        widen = [f"{int(d)} of {int(b)} test-pool draws have no PGR (a seed's ceiling does not beat weak there)"
                 if d > 0 else "" for d, b in zip(summary["pgr_acc_draws_undefined"].fillna(0), summary["n_boot"])]
        notes = [_join(n, w) for n, w in zip(notes, widen)]
    if "interval" in summary:  # one seed: say that its interval leaves the spread between seeds out
        notes = [_join(n, i if i == metrics.ONE_SEED else "") for n, i in zip(notes, summary["interval"].fillna(""))]
    if "caveat" in summary:
        notes = [_join(n, c) for n, c in zip(notes, summary["caveat"].fillna(""))]
    out["note"] = notes
    return out


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    def cell(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def shown(df: pd.DataFrame) -> pd.DataFrame:
    """`df` for the figures: a bootstrapped model's chain folded into its weak name (`m0>m1>m2`), so that a
    panel per weak -> strong pair keeps direct and bootstrapped students apart."""
    if "chain" not in df or not df["chain"].astype(bool).any():
        return df.drop(columns="chain", errors="ignore")
    weak = [f"{w}>{c}" if c else w for w, c in zip(df["weak"], df["chain"])]
    return df.assign(weak=weak).drop(columns="chain")


def figures(result) -> dict:
    """The standard figures of a `Comparison` (name -> matplotlib Figure); see `toolkit.plots`."""
    figs = {}
    summ = shown(result.summary)
    if summ.empty:
        return figs
    cfg = result.config
    settings = result.student_settings
    figs["pgr_accuracy"] = plots.pgr_bars(summ, metric="acc")
    figs["pgr_auroc"] = plots.pgr_bars(summ, metric="auroc")
    figs["accuracy"] = plots.accuracy_bars(summ)
    ds = shown(result.diagnostics_summary)
    if not ds.empty:
        figs["agreement"] = plots.agreement_bars(ds, settings=settings)
    ns = shown(diagnostics.noise_control(result.diagnostics))
    if not ns.empty:
        figs["noise_control"] = plots.noise_control(ns, settings=settings)
    if (result.diagnostics.diagnostic == "misfit").any():
        figs["misfit"] = plots.misfit_scatter(shown(result.diagnostics))
    if len(cfg.job.strong) > 1:
        figs["accuracy_vs_size"] = plots.accuracy_vs_size(summ, {k: v for k, v in result.sizes.items() if v},
                                                           settings=settings)
    by_task = {t: [r for r in result.records if r.task == t] for t in result.labels}
    # every method whose records carry a layer (`params["layer"]`: probes, label-free directions), against gold and
    # against its supervisor (which the records hold whatever its method: a probe, tfidf or a fine-tune)
    layers = pd.concat([diagnostics.layer_curves(recs, result.labels[t],
                                                 split=("val", "test")) for t, recs in by_task.items()],
                       ignore_index=True)
    if len(layers):  # the weak supervisor alone (a fine-tune-only run) has no layer sweep
        figs["layers"] = plots.layer_curves(shown(layers))
    if cfg.chain and len(cfg.chain) > 2:
        ch = pd.concat([diagnostics.chain_accuracy(recs, result.labels[t], settings=settings)
                        for t, recs in by_task.items()], ignore_index=True)
        if len(ch):
            figs["chain"] = plots.chain_accuracy(ch)
    if not result.curves.empty:
        figs["finetune_curves"] = plots.finetune_curves(shown(result.curves))
    cross = pd.concat([diagnostics.cross_agreement(recs, result.labels[t], settings=settings)
                       for t, recs in by_task.items()], ignore_index=True)
    if len(cross):
        figs["cross_agreement"] = plots.cross_agreement_heatmap(shown(cross))
    calib = pd.concat([diagnostics.calibration(recs, result.labels[t], settings=settings)
                       for t, recs in by_task.items()], ignore_index=True)
    if len(calib):
        figs["calibration"] = plots.calibration_hist(shown(calib), settings=settings)
    return figs


def _method_lines(result) -> list[str]:
    """How each method ran here, in its own words (`Method.describe`: precision, recipe, learning rates)."""
    from toolkit import methods

    cfg = result.config
    options = cfg.all_opts()
    out = weak.supervisor(cfg.job.weak_method).describe(cfg.job, options, result.sizes)
    out += [line for m in cfg.methods for line in methods.get(m).describe(options[m], cfg.job, result.sizes)]
    return ["", " ".join(out)] if out else []


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "numpy", "scikit-learn", "pandas", "matplotlib"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if rev.returncode == 0:
            out["toolkit commit"] = rev.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


OUTPUTS = ("results.csv", "summary.csv", "baselines.csv", "diagnostics.csv", "diagnostics_summary.csv",
           "predictions.csv.gz", "curves.csv", "report.md", "config.yaml")
"""The files a run writes besides its figures (`*.png`)."""
SWEEP_DIR = "sweep"
"""The folder in a run's outputs where `toolkit.sweep` keeps its jobs, logs and state (left in place)."""


def _is_output(path: Path) -> bool:
    return path.is_file() and (path.name in OUTPUTS or path.suffix == ".png")


def check_out(out: Path) -> None:
    """`out` must be a new or empty folder, or a previous run's (only files a run writes), whose outputs the new
    run replaces: a run never mixes its files with other files, and never leaves an older run's figures beside
    its report. A `ToolkitError` naming a file that is in the way otherwise."""
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"--out {out} is a file; give a folder")
    other = sorted(p.name for p in out.iterdir() if not _is_output(p) and p.name != SWEEP_DIR) if out.is_dir() else []
    if other:
        raise ToolkitError(f"--out {out} holds files that are not a run's outputs ({', '.join(other[:3])}"
                           f"{', ...' if len(other) > 3 else ''}); give a new or empty folder, or a previous "
                           "run's folder (its outputs are replaced)")


def write(result, out: Path, figures: bool = True) -> list[Path]:
    """Write a `Comparison`'s tables, figures and report.md to `out` (see `Comparison.write`): a new or empty
    folder, or a previous run's, whose outputs this run's replace (`check_out`)."""
    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    stale = {p for p in out.iterdir() if _is_output(p)}
    written = []

    def put(name: str, data: bytes) -> None:
        atomic_write_bytes(out / name, data)
        written.append(out / name)

    put("config.yaml", _config_yaml(result.config).encode())
    put("results.csv", result.results.to_csv(index=False).encode())
    put("summary.csv", result.summary.to_csv(index=False).encode())
    if not result.baselines.empty:
        put("baselines.csv", result.baselines.to_csv(index=False).encode())
    put("diagnostics.csv", result.diagnostics.to_csv(index=False).encode())
    put("diagnostics_summary.csv", result.diagnostics_summary.to_csv(index=False).encode())
    put("predictions.csv.gz", _gz(records.predictions_frame(result.records).to_csv(index=False, float_format="%.9g")))
    if not result.curves.empty:
        put("curves.csv", result.curves.to_csv(index=False).encode())
    figs = result.figures() if figures else {}
    if figs:
        written += plots.save_all(figs, out)
    put("report.md", report(result, sorted(figs)).encode())
    for path in stale - set(written):  # an older run's figure or table that this run does not have
        path.unlink(missing_ok=True)
    return written


def _config_yaml(cfg) -> str:
    """The run's full config, which `python -m toolkit.compare --config <out>/config.yaml` runs again."""
    import yaml

    return ("# python -m toolkit.compare --config <this file> runs this comparison again\n"
            + yaml.safe_dump(config.as_dict(cfg), sort_keys=False))


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)




def report(result, figures: list[str]) -> str:
    """report.md of a `Comparison`: summary, imitation, figures, notes, settings, versions, work and time."""
    cfg = result.config
    how = weak.supervisor(cfg.job.weak_method).how
    lines = ["# Weak-to-strong comparison", "",
             f"Tasks {', '.join(cfg.job.tasks)}; weak supervisor `{cfg.job.weak}` ({how}); strong "
             f"{', '.join(f'`{s}`' for s in cfg.job.strong)}; methods {', '.join(cfg.methods)}.", "",
             "PGR = (student − weak) / (ceiling − weak) on the fixed test pool, mean over seeds. With two or more "
             "seeds its 95% interval covers the spread between seeds' runs and the test pool's sampling: a t "
             "interval on the seed mean whose variance adds the seeds' spread (less what test noise alone gives it) "
             "to the shared pool's bootstrap variance, with Welch-Satterthwaite degrees of freedom (it covers the "
             "truth in at least 95% of simulated studies with 3 or 5 seeds: benchmarks/interval_coverage.py). With "
             "one seed it covers the test examples only, and the summary says so: the spread between seeds is "
             "unknown. summary.csv also has the examples-only interval, `pgr_*_ex_lo`/`_hi`, and the seeds' "
             "standard deviation, `pgr_*_std`. PGR is "
             f"undefined where the ceiling beats weak by {cfg.min_gap:g} or less, or not significantly. Students "
             "are trained on the weak supervisor's soft labels of `strong_train`; ceilings on the gold labels of "
             "the same inputs; model selection uses weak labels of `val` only.", "",
             *_protocol_lines(result), "",
             "## Summary", "", markdown_table(format_summary(result.summary)), ""]
    if "pgr_acc_openai" in result.summary:
        cols = [c for c in ("task", "strong", "method", "loss", "setting", "n_seeds", "pgr_acc", "pgr_acc_openai")
                if c in result.summary]
        lines += ["## PGR as openai/weak-to-strong aggregates it", "",
                  "`pgr_acc` is the mean over seeds of each seed's PGR against its own weak model and ceiling. "
                  "openai's plotting notebook instead takes each run's PGR against the seed-mean weak and ceiling "
                  "accuracies and reports the median over runs (`pgr_acc_openai`; undefined where `pgr_acc` is, "
                  "though their rule, any positive gap, would print a number there; their table pools every "
                  "weak-strong pair of a dataset, this is one pair's). Set beside the paper's numbers, use this "
                  "column.", "",
                  markdown_table(result.summary[cols]), ""]
    if not result.baselines.empty:
        lines += ["## Sanity baselines", "",
                  "The probe on the input embeddings (`layer=0`), trained and summarised like the students: it sees "
                  "no context, so on a task that needs understanding it should recover nothing (ceiling near chance, "
                  "PGR undefined). It is a check on the pipeline, not a method.", "",
                  markdown_table(format_summary(result.baselines)), ""]
    ds = result.diagnostics_summary
    if not ds.empty:
        lines += ["## Imitation and agreement (test, mean over seeds)", "",
                  "Agreement of each student with its supervisor, overall and split by whether the supervisor is "
                  "right; a `control` student was trained on gold flipped at random at the supervisor's error "
                  "count.", "", markdown_table(_diag_wide(ds, cfg.summary_settings())), ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({name}.png)" for name in figures] + [""]
    if result.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    settings = {k: (", ".join(map(str, v)) if isinstance(v, tuple) else v) for k, v in cfg.flat().items()}
    per_task = [f"{t}: " * (len(result.split_sizes) > 1) + ", ".join(f"{k}={v}" for k, v in s.counts().items())
                for t, s in result.split_sizes.items()]
    settings["sizes"] = "; ".join(per_task) + (" (each task's default)" if cfg.job.sizes is None else "")
    lines += ["## Settings", "", markdown_table(pd.DataFrame({"setting": list(settings),
                                                              "value": [str(v) for v in settings.values()]})), "",
              "Model sizes (parameters): " + ", ".join(f"`{k}` {v / 1e6:.0f}M" for k, v in result.sizes.items() if v),
              *_method_lines(result),
              "", "## Versions", "", markdown_table(pd.DataFrame({"package": list(_versions()),
                                                                  "version": list(_versions().values())})), "",
              "## Work done and time", "",
              "Work that was not served by a cache in this run: " + ", ".join(f"{k} {v}" for k, v in
                                                                             result.stats.items()) + ".", "",
              markdown_table(pd.DataFrame({"stage": list(result.timings),
                                           "seconds": [f"{v:.1f}" for v in result.timings.values()]})), ""]
    return "\n".join(lines)


def _protocol_lines(result) -> list[str]:
    """What the summary's numbers rest on: the protocol and the headline setting of each method."""
    cfg = result.config
    if cfg.job.protocol == "paper":
        out = ["Protocol **paper**: each task split as openai/weak-to-strong splits it (its train rows halved per "
               "seed for weak and strong training, test from its own test rows, the natural class prior, examples "
               "of 1,024 tokens or more dropped; the notes say how for each task)."]
    else:
        out = ["Protocol **toolkit**: exactly class-balanced splits of a class-balanced subsample, one fixed test "
               "pool for every seed."]
    heads = cfg.student_settings()
    out.append("Headline rows (summary.csv's `headline` column): " + ", ".join(f"{m} `{s}`" for m, s in heads.items())
               + "; the other summary rows of a method are beside its headline.")
    return [" ".join(out)]


def _diag_wide(ds: pd.DataFrame, settings: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """The test agreement diagnostics of the summary's rows (`settings`: method -> its summary settings)."""
    keep = ["agree", "agree_weak_right", "agree_weak_wrong", "student_acc"]
    shown = pd.Series([s in settings.get(m, ()) for m, s in zip(ds.method, ds.setting)], index=ds.index, dtype=bool)
    sub = ds[ds.diagnostic.isin(keep) & ds.role.isin(["student", "control"]) & shown & (ds.split == "test")]
    if sub.empty:
        return sub
    idx = [c for c in ("task", "weak", "chain", "strong", "method", "role", "loss", "setting") if c in sub]
    wide = sub.pivot_table(index=idx, columns="diagnostic", values="mean", aggfunc="mean").reset_index()
    return wide[idx + [k for k in keep if k in wide]]


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
