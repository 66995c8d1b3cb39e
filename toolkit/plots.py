"""Standard figures of a weak-to-strong comparison, one function per figure.

Each function takes a DataFrame from `toolkit.records.summary` or `toolkit.diagnostics` and returns a
`matplotlib.figure.Figure`. Figures are built with `Figure` directly, not through pyplot: nothing here
picks a backend or opens a window, so the module works headless and in notebooks (where a returned
figure is displayed once). `save_all` writes PNGs. A function draws whatever its frame holds (one seed,
no fine-tune rows, an undefined PGR) and raises `ToolkitError` when there is nothing to draw.
"""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from toolkit import methods
from toolkit._util import ToolkitError

__all__ = ["accuracy_bars", "accuracy_vs_size", "agreement_bars", "calibration_hist", "chain_accuracy",
           "cross_agreement_heatmap"]
__all__ += ["finetune_curves", "layer_curves", "misfit_scatter", "noise_control", "pgr_bars", "save_all"]

WIDTH = 8.0  # inches; panels share it
ROLE_COLORS = {"weak": "0.6", "student": "C0", "ceiling": "C2", "control": "C3", "baseline": "C4"}


def _need(df: pd.DataFrame | None, what: str, cols: tuple[str, ...] = ()) -> pd.DataFrame:
    if df is None or len(df) == 0:
        raise ToolkitError(f"{what}: nothing to plot (empty input)")
    if missing := [c for c in cols if c not in df.columns]:
        raise ToolkitError(f"{what}: the frame lacks columns {missing}")
    return df


def _grid(n: int, ncols: int = 2, panel_h: float = 3.4, width: float = WIDTH) -> tuple[Figure, list]:
    """A figure with n panels in rows of `ncols`; unused cells are removed."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width, 0.8 + panel_h * nrows), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def _panels(df: pd.DataFrame, keys: list[str]):
    """(title, frame) per distinct value of `keys` present in df, in order of appearance."""
    keys = [k for k in keys if k in df.columns]
    if not keys:
        return [("", df)]
    out = []
    for key, g in df.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        d = {k: _short(v) for k, v in zip(keys, key)}
        pair = f"{d.get('weak', '')} → {d.get('strong', '')}" if {"weak", "strong"} <= d.keys() else ""
        rest = [str(v) for k, v in d.items() if k not in ("weak", "strong")]
        out.append((" · ".join([*rest[:1], pair, *rest[1:]] if pair else rest), g))
    return out


def _short(value):
    """A model or task given as a path is shown by its last component (full paths overflow titles)."""
    return Path(value).name if isinstance(value, str) and "/" in value else value


def _model_label(row, parts=("method", "loss", "setting")) -> str:
    return "/".join(str(_short(row[p])) for p in parts if p in row and str(row[p]) != "")


def _colors(labels) -> dict[str, str]:
    return {lab: f"C{i % 10}" for i, lab in enumerate(dict.fromkeys(labels))}


def _filter_settings(df: pd.DataFrame, settings: dict[str, str] | None) -> pd.DataFrame:
    """Keep one setting per method (`settings`, default `methods.student_settings()`) and the supervisor's rows
    (role `weak`, where there is a role); a method not in the map keeps every setting."""
    settings = methods.student_settings() if settings is None else settings
    weak = df["role"].to_numpy() == "weak" if "role" in df else np.zeros(len(df), dtype=bool)
    keep = [w or (settings[m] == s if m in settings else True) for w, m, s in zip(weak, df["method"], df["setting"])]
    return df[np.array(keep, dtype=bool)]


def pgr_bars(summary: pd.DataFrame, metric: str = "acc") -> Figure:
    """PGR per method/loss/setting with its 95% bootstrap interval, one panel per task and weak → strong
    pair. An undefined PGR is left as a gap labelled with its reason. `metric`: "acc" or "auroc"."""
    col = f"pgr_{metric}"
    df = _need(summary, "pgr_bars", ("method", "loss", "setting", col, f"{col}_lo", f"{col}_hi"))
    panels = _panels(df, ["task", "weak", "strong"])
    fig, axes = _grid(len(panels), ncols=1 if len(df) > 8 else 2)
    name = {"acc": "accuracy", "auroc": "AUROC"}.get(metric, metric)
    colors = _colors(df["method"])
    for ax, (title, g) in zip(axes, panels):
        x = np.arange(len(g))
        vals = g[col].to_numpy(dtype=float)
        lo, hi = g[f"{col}_lo"].to_numpy(dtype=float), g[f"{col}_hi"].to_numpy(dtype=float)
        ok = np.isfinite(vals)
        err = np.nan_to_num(np.stack([vals - lo, hi - vals]).clip(min=0))
        ax.bar(x[ok], vals[ok], yerr=err[:, ok], capsize=3, color=[colors[m] for m in g["method"][ok]],
               edgecolor="black", linewidth=0.5)
        for xi, v, top in zip(x[ok], vals[ok], np.fmax(hi, vals)[ok]):
            ax.annotate(f"{v:.2f}", (xi, top), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7)
        notes = g.get(f"{col}_note", pd.Series([""] * len(g), index=g.index)).fillna("")
        for xi, note in zip(x[~ok], notes[~ok]):
            text = "undefined: " + (note or "no reason given")
            ax.text(xi, 0.5, textwrap.fill(text, 40), rotation=90, ha="center", va="center", fontsize=6.5,
                    color="0.25", transform=ax.get_xaxis_transform(),
                    bbox={"boxstyle": "round", "fc": "0.95", "ec": "0.7", "lw": 0.5})
        ax.set_xlim(-0.6, len(g) - 0.4)
        ax.axhline(0, color="black", lw=0.8)
        ax.axhline(1, color="black", lw=0.8, ls="--")
        finite = np.r_[vals[ok], lo[np.isfinite(lo)], hi[np.isfinite(hi)]]
        ax.set_ylim(min(-0.1, finite.min(initial=0) - 0.05), max(1.15, finite.max(initial=1) + 0.12))
        ax.set_xticks(x, [_model_label(r) for _, r in g.iterrows()], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"PGR ({name})")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Performance gap recovered ({name}; 95% CI; 0 = weak, 1 = ceiling)")
    return fig


def accuracy_bars(summary: pd.DataFrame) -> Figure:
    """Weak, student and ceiling test accuracy (means over seeds) per method/loss/setting: the raw
    numbers behind PGR. One panel per task and weak → strong pair."""
    df = _need(summary, "accuracy_bars", ("method", "loss", "setting", "weak_acc", "student_acc", "ceiling_acc"))
    panels = _panels(df, ["task", "weak", "strong"])
    fig, axes = _grid(len(panels), ncols=1 if len(df) > 8 else 2)
    w = 0.27
    for ax, (title, g) in zip(axes, panels):
        x = np.arange(len(g))
        for k, role in enumerate(("weak", "student", "ceiling")):
            ax.bar(x + (k - 1) * w, g[f"{role}_acc"].to_numpy(dtype=float), w, label=role, color=ROLE_COLORS[role],
                   edgecolor="black", linewidth=0.4)
        ax.set_xticks(x, [_model_label(r) for _, r in g.iterrows()], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Weak, student (W→S) and ceiling accuracy")
    return fig


def agreement_bars(diag_summary: pd.DataFrame, settings: dict[str, str] | None = None,
                   roles: tuple[str, ...] = ("student", "control")) -> Figure:
    """Student-supervisor agreement overall, where the supervisor is right and where it is wrong
    (imitation of its errors), per method/loss (the form of Burns et al. 2023, Fig. 8), from
    `diagnostics.summarize`. Random-noise controls, when present, are hatched beside their students.
    One setting per method (`settings`, default `methods.student_settings()`)."""
    kinds = {"agree": "all", "agree_weak_right": "weak right", "agree_weak_wrong": "weak wrong"}
    df = _need(diag_summary, "agreement_bars", ("method", "role", "loss", "setting", "diagnostic", "mean"))
    df = df[df["diagnostic"].isin(kinds) & df["role"].isin(roles)]
    if "split" in df:
        df = df[df["split"] == "test"]
    df = _need(_filter_settings(df, settings), "agreement_bars (no agreement rows for these roles/settings)")
    panels = _panels(df, ["task", "weak", "strong"])
    fig, axes = _grid(len(panels), ncols=1)
    for ax, (title, g) in zip(axes, panels):
        series = list(dict.fromkeys(zip(g["method"], g["loss"], g["setting"], g["role"])))
        colors = _colors([s[:3] for s in series])
        width = 0.8 / len(series)
        for j, s in enumerate(series):
            rows = g[(g["method"] == s[0]) & (g["loss"] == s[1]) & (g["setting"] == s[2]) & (g["role"] == s[3])]
            vals = rows.set_index("diagnostic").reindex(list(kinds))
            std = vals["std"].to_numpy(dtype=float) if "std" in vals else np.zeros(3)
            label = "/".join(s[:2]) + (f" [{s[3]}]" if s[3] != "student" else "")
            ax.bar(np.arange(3) - 0.4 + (j + 0.5) * width, vals["mean"].to_numpy(dtype=float), width,
                   yerr=np.nan_to_num(std), capsize=2, color=colors[s[:3]], label=label, edgecolor="black",
                   linewidth=0.4, hatch="//" if s[3] == "control" else None, alpha=0.6 if s[3] == "control" else 1)
        ax.set_xticks(np.arange(3), [f"agreement\n({v})" for v in kinds.values()])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("student-supervisor agreement")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle("Agreement with the weak supervisor (test; error bars: std over seeds)")
    return fig


def accuracy_vs_size(summary: pd.DataFrame, sizes: dict[str, float], settings: dict[str, str] | None = None) -> Figure:
    """Student test accuracy against strong-model size (`sizes`: strong name -> parameter count; log x),
    one solid line per method/loss, the ceilings dashed (one per method) and the weak supervisor's accuracy
    as a dotted horizontal line. One setting per method (`settings`, default `methods.student_settings()`, which
    leaves out the probe's other rows such as the layer=0 sanity baseline). One panel per task and weak model;
    strong models missing from `sizes` are left out."""
    df = _need(summary, "accuracy_vs_size", ("strong", "method", "loss", "setting", "student_acc", "ceiling_acc"))
    df = _need(df[df["strong"].isin(sizes)], "accuracy_vs_size (no strong model of the frame is in `sizes`)")
    df = _need(_filter_settings(df, settings), "accuracy_vs_size (no row has the settings shown)")
    df = df.assign(size=df["strong"].map(sizes).astype(float)).sort_values("size", kind="stable")
    panels = _panels(df, ["task", "weak"])
    fig, axes = _grid(len(panels), ncols=1 if len(panels) == 1 else 2, panel_h=4.2)
    for ax, (title, g) in zip(axes, panels):
        labels = [_model_label(r) for _, r in g.iterrows()]
        colors = _colors(labels)
        for lab in colors:
            s = g[np.array(labels) == lab]
            ax.plot(s["size"], s["student_acc"], "o-", color=colors[lab], label=lab)
        for k, ((m, st), c) in enumerate(g.groupby(["method", "setting"], sort=False)):
            c = c.groupby("size", as_index=False)["ceiling_acc"].mean()
            ax.plot(c["size"], c["ceiling_acc"], ls="--", marker="s^Dvp<>"[k % 7], color="0.3", lw=1.1, ms=5,
                    mfc="white", label=f"ceiling ({m}/{st})")
        if "weak_acc" in g:
            ax.axhline(g["weak_acc"].mean(), color="0.4", ls=":", lw=1.5, label="weak supervisor")
        ax.set_xscale("log")
        ticks = g.drop_duplicates("strong")
        ax.set_xticks(ticks["size"], [f"{n}\n({_human(v)})" for n, v in zip(ticks["strong"], ticks["size"])],
                      fontsize=8)
        ax.minorticks_off()
        ax.set_ylim(max(0.0, min(g["student_acc"].min(), g.get("weak_acc", g["student_acc"]).min()) - 0.1), 1.0)
        ax.set_xlabel("strong model (parameters, log scale)")
        ax.set_ylabel("test accuracy")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle("Student accuracy vs strong-model size")
    return fig


def chain_accuracy(chain_df: pd.DataFrame) -> Figure:
    """Bootstrapping: test accuracy at every step of a chain (from `diagnostics.chain_accuracy`): the weak
    supervisor, each intermediate (a cross-fitted probe on the previous step's labels) and the final student,
    one line per method/loss; at the last step the same student trained directly on the weak labels (hollow
    marker) and the gold ceiling (dashed line). One panel per task and chain."""
    df = _need(chain_df, "chain_accuracy", ("task", "chain", "method", "loss", "step", "model", "accuracy"))
    panels = _panels(df, ["task", "chain"])
    fig, axes = _grid(len(panels), ncols=1, panel_h=3.8)
    for ax, (title, g) in zip(axes, panels):
        labels = [_model_label(r) for _, r in g.iterrows()]
        colors = _colors(labels)
        for lab in colors:
            s = g[np.array(labels) == lab].sort_values("step")
            ax.errorbar(s["step"], s["accuracy"], yerr=s.get("accuracy_std"), fmt="o-", color=colors[lab],
                        capsize=3, label=f"bootstrapped {lab}")
            last = s.iloc[-1]
            if np.isfinite(last.get("direct_accuracy", np.nan)):
                ax.plot(last["step"] + 0.08, last["direct_accuracy"], "o", mfc="white", color=colors[lab], ms=8,
                        label=f"direct {lab}")
        if "ceiling_accuracy" in g and g["ceiling_accuracy"].notna().any():
            ax.axhline(g["ceiling_accuracy"].mean(), color="C2", ls="--", lw=1.2, label="ceiling (gold)")
        steps = g.drop_duplicates("step").sort_values("step")
        ax.set_xticks(steps["step"], [f"{m}\n(step {k})" for k, m in zip(steps["step"], steps["model"])],
                      fontsize=8)
        ax.set_xlim(-0.3, steps["step"].max() + 0.4)
        ax.set_ylabel("test accuracy")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle("Accuracy along the bootstrapping chain")
    return fig


def _human(n: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def layer_curves(curves_df: pd.DataFrame, roles=("student", "ceiling")) -> Figure:
    """Accuracy by layer from `diagnostics.layer_curves` (probes, label-free directions): against gold (solid,
    ±1 std band) and against the weak labels (dashed; on `val` when the frame has it: what selects a student's layer),
    per role/loss (`roles`; add "control" for the noise controls). Stars mark layers chosen by `select`
    (size grows with the number of seeds). One panel per task, weak → strong pair and method."""
    df = _need(curves_df, "layer_curves", ("role", "loss", "layer", "gold_acc", "weak_label_acc"))
    df = _need(df[df["role"].isin(roles)], f"layer_curves (no rows with roles {roles})")
    panels = _panels(df, ["task", "weak", "strong", "method"])
    fig, axes = _grid(len(panels), ncols=1, panel_h=3.8)
    for ax, (title, g) in zip(axes, panels):
        splits = list(dict.fromkeys(g["split"])) if "split" in g else [None]
        gold_split = "test" if "test" in splits else splits[0]
        weak_split = "val" if "val" in splits else gold_split
        sel = (lambda s, sp: s[s["split"] == sp]) if "split" in g else (lambda s, sp: s)
        models = list(dict.fromkeys(zip(g["role"], g["loss"])))
        palette = iter(f"C{i}" for i in (0, 1, 3, 4, 5, 6, 8, 9) * 4)  # C2 (green) is kept for ceilings
        colors = {m: ROLE_COLORS["ceiling"] if m[0] == "ceiling" else next(palette) for m in models}
        lows = []
        for m in models:
            s = g[(g["role"] == m[0]) & (g["loss"] == m[1])]
            gs, ws = sel(s, gold_split).sort_values("layer"), sel(s, weak_split).sort_values("layer")
            name = f"{m[0]}/{m[1]}"
            ax.plot(gs["layer"], gs["gold_acc"], "-", color=colors[m], lw=1.8,
                    label=f"{name}: gold" + (f" ({gold_split})" if gold_split else ""))
            if "gold_acc_std" in gs:
                sd = gs["gold_acc_std"].fillna(0).to_numpy(dtype=float)
                ax.fill_between(gs["layer"], gs["gold_acc"] - sd, gs["gold_acc"] + sd, color=colors[m], alpha=0.15)
            if ws["weak_label_acc"].notna().any():
                ax.plot(ws["layer"], ws["weak_label_acc"], "--", color=colors[m], lw=1.3,
                        label=f"{name}: weak labels" + (f" ({weak_split})" if weak_split else ""))
            if "n_chosen" in gs and (gs["n_chosen"] > 0).any():
                c = gs[gs["n_chosen"] > 0]
                ax.scatter(c["layer"], c["gold_acc"], marker="*", s=40 + 30 * c["n_chosen"].astype(float),
                           color=colors[m], edgecolor="black", linewidth=0.5, zorder=3)
            lows += [gs["gold_acc"].min(), ws["weak_label_acc"].min()]
        ax.set_ylim(max(0.0, np.nanmin(lows) - 0.05), 1.0)
        ax.set_xlabel("layer (0 = input embeddings)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy")
        ax.set_title(title + ("  (★ = chosen layer)" if "n_chosen" in g and (g["n_chosen"] > 0).any() else ""),
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle("Accuracy by layer (mean over seeds)")
    return fig


def finetune_curves(curve_df: pd.DataFrame) -> Figure:
    """Fine-tuning curves: test accuracy against gold (solid; at the evals that predicted test: each new best and
    the final one, or every eval with `test_curve`) and val agreement with the selection labels (dashed; weak
    labels for students) against step, mean over seeds (thin lines: single seeds), a dot per evaluation, the eval
    chosen by val agreement starred per seed. One panel per (task, strong, role, loss) present."""
    df = _need(curve_df, "finetune_curves", ("step", "val_agreement", "test_acc"))
    panels = _panels(df, ["task", "weak", "strong", "role", "loss"])
    fig, axes = _grid(len(panels), ncols=2, panel_h=3.2)
    for ax, (title, g) in zip(axes, panels):
        seeds = list(g.groupby("seed", sort=True)) if "seed" in g else [(0, g)]
        for _, s in seeds:
            s = s.sort_values("step")
            if len(seeds) > 1:
                t = s.dropna(subset=["test_acc"])
                ax.plot(t["step"], t["test_acc"], "-", color="C0", lw=0.7, alpha=0.35)
                ax.plot(s["step"], s["val_agreement"], "--", color="C1", lw=0.7, alpha=0.35)
        mean = g.groupby("step", as_index=False)[["test_acc", "val_agreement"]].mean()
        t = mean.dropna(subset=["test_acc"])
        ax.plot(t["step"], t["test_acc"], "-o", color="C0", lw=2, ms=3, label="test accuracy (gold)")
        ax.plot(mean["step"], mean["val_agreement"], "--o", color="C1", lw=2, ms=3,
                label="val agreement (selection labels)")
        if "best" in g:
            b = g[g["best"].astype(bool)]
            ax.scatter(b["step"], b["test_acc"], marker="*", s=110, color="C3", edgecolor="black", linewidth=0.5,
                       zorder=3, label="best eval (chosen on val)")
        lo = np.nanmin(g[["test_acc", "val_agreement"]].to_numpy(dtype=float))
        ax.set_ylim(max(0.0, lo - 0.05), 1.0)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy / agreement")
        ax.set_title(textwrap.fill(title, 48), fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Fine-tuning curves")
    return fig


def noise_control(ns_df: pd.DataFrame, settings: dict[str, str] | None = None) -> Figure:
    """Students against their random-noise controls (from `diagnostics.noise_control`): test accuracy
    (left; the weak supervisor's as a black tick) and agreement where the supervisor is wrong (right:
    imitation of structured errors vs of random ones). Error bars: std over seeds of the paired gap.
    One setting per method (`settings`, default `methods.student_settings()`: the selected probe layer)."""
    need = ("method", "loss", "student_acc", "control_acc", "student_agree_weak_wrong", "control_agree_weak_wrong")
    df = _need(ns_df, "noise_control", need)
    if "setting" in df:
        df = _need(_filter_settings(df, settings), "noise_control (no row with the chosen settings)")
    multi = any(c in df and df[c].nunique() > 1 for c in ("task", "weak", "strong"))
    parts = (("task", "strong") if multi else ()) + ("method", "loss", "setting")
    labels = [_model_label(r, parts) for _, r in df.iterrows()]
    # Rotated tick labels take height in proportion to their length, bars take width: grow with both, so
    # a many-model comparison (tasks x strong models) keeps readable panels.
    height = 3.4 + 0.045 * max(map(len, labels))
    fig = Figure(figsize=(max(WIDTH, 0.3 * len(df) * 2), height), layout="constrained")
    axes = fig.subplots(1, 2)
    x, w = np.arange(len(df)), 0.38
    for ax, (s, c, gap, ylabel) in zip(axes, (
            ("student_acc", "control_acc", "acc_gap_std", "test accuracy"),
            ("student_agree_weak_wrong", "control_agree_weak_wrong", "imitation_gap_std",
             "agreement where weak is wrong"))):
        err = np.nan_to_num(df[gap].to_numpy(dtype=float)) if gap in df else None
        ax.bar(x - w / 2, df[s].to_numpy(dtype=float), w, yerr=err, capsize=3, color=ROLE_COLORS["student"],
               label="student (weak labels)", edgecolor="black", linewidth=0.4)
        ax.bar(x + w / 2, df[c].to_numpy(dtype=float), w, color=ROLE_COLORS["control"], hatch="//", alpha=0.7,
               label="control (random flips, same rate)", edgecolor="black", linewidth=0.4)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    if "weak_acc" in df:
        axes[0].scatter(x, df["weak_acc"], marker="_", s=500, color="black", linewidth=2, label="weak supervisor",
                        zorder=3)
    axes[0].set_title("accuracy", fontsize=10)
    axes[1].set_title("imitation of supervisor errors", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Structured weak labels vs random noise at the same error rate")
    return fig


def misfit_scatter(diag_df: pd.DataFrame) -> Figure:
    """Gain (err_weak - err_student) against misfit (disagreement with the supervisor) on strong_train,
    one point per student (circles) or control (crosses) and seed, from `diagnostics.table` (or its
    `summarize`, one point per model). Points on the dashed y = x line match Charikar et al. (2024)."""
    df = _need(diag_df, "misfit_scatter", ("diagnostic",))
    value = "value" if "value" in df else "mean"
    df = df[df["diagnostic"].isin(("gain", "misfit"))]
    if "split" in df:
        df = df[df["split"] == "strong_train"]
    df = _need(df, "misfit_scatter (no misfit rows: the records need a strong_train split)")
    keys = [c for c in ("task", "weak", "strong", "method", "role", "loss", "setting", "seed", "split") if c in df]
    wide = df.pivot_table(index=keys, columns="diagnostic", values=value, aggfunc="first").reset_index()
    wide = _need(wide.dropna(subset=[c for c in ("gain", "misfit") if c in wide]), "misfit_scatter")
    multi = any(c in wide and wide[c].nunique() > 1 for c in ("task", "strong"))
    parts = (("task", "strong") if multi else ()) + ("method", "loss", "setting")
    labels = [_model_label(r, parts) for _, r in wide.iterrows()]
    colors = _colors(labels)
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    roles = wide["role"] if "role" in wide else pd.Series(["student"] * len(wide))
    for lab in colors:
        for role, marker in (("student", "o"), ("control", "x")):
            m = (np.array(labels) == lab) & (roles.to_numpy() == role)
            if m.any():
                ax.scatter(wide["misfit"][m], wide["gain"][m], marker=marker, s=45, color=colors[lab],
                           label=lab + (" [control]" if role == "control" else ""))
    hi = max(float(wide["misfit"].max()), float(wide["gain"].max()), 0.05) * 1.1
    lo = min(0.0, float(wide["gain"].min()) * 1.1)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="gain = misfit")
    ax.axhline(0, color="0.5", lw=0.7)
    ax.set_xlim(0, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("misfit: disagreement with weak labels (strong_train)")
    ax.set_ylabel("gain: err(weak) − err(student) (strong_train)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", framealpha=0.9)
    ax.set_title("Misfit vs gain (Charikar et al. 2024)")
    return fig


def cross_agreement_heatmap(cross_df: pd.DataFrame, value: str = "agree") -> Figure:
    """Pairwise agreement between students of different methods (from `diagnostics.cross_agreement`):
    `value` is "agree", "error_jaccard" or "both_wrong". One panel per task and weak → strong pair; the
    diagonal is 1 for agree / error_jaccard and left blank for both_wrong."""
    df = _need(cross_df, "cross_agreement_heatmap", ("a", "b", value))
    panels = _panels(df, ["task", "weak", "strong"])
    fig, axes = _grid(len(panels), ncols=min(2, len(panels)), panel_h=4.6, width=6.5 if len(panels) == 1 else WIDTH)
    im = None
    for ax, (title, g) in zip(axes, panels):
        names = list(dict.fromkeys([*g["a"], *g["b"]]))
        pos = {n: i for i, n in enumerate(names)}
        mat = np.full((len(names), len(names)), np.nan)
        if value != "both_wrong":
            np.fill_diagonal(mat, 1.0)
        for a, b, v in zip(g["a"], g["b"], g[value]):
            mat[pos[a], pos[b]] = mat[pos[b], pos[a]] = v
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(names)):
            for j in range(len(names)):
                if np.isfinite(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if mat[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, label=value.replace("_", " "))
    fig.suptitle({"agree": "Agreement between students", "error_jaccard": "Overlap of errors (Jaccard)",
                  "both_wrong": "Both wrong (fraction of examples)"}.get(value, value))
    return fig


def calibration_hist(calib_df: pd.DataFrame, settings: dict[str, str] | None = None, max_panels: int = 9) -> Figure:
    """Confidence histogram (grey bars: fraction of examples per bin of P(y=1)) and reliability
    (points: fraction of gold positives against mean P(y=1) per bin; dashed: perfect calibration) per
    model, pooled over seeds, from `diagnostics.calibration`; the title gives the mean ECE over seeds.
    One setting per method (`settings`, default `methods.student_settings()`) beside the supervisor; at most
    `max_panels` models are drawn (the suptitle says so)."""
    df = _need(calib_df, "calibration_hist", ("bin", "lo", "hi", "count", "mean_p", "frac_pos", "ece"))
    if "setting" in df and "method" in df:
        df = _need(_filter_settings(df, settings), "calibration_hist (no row with the chosen settings)")
    keys = [c for c in ("task", "weak", "strong", "method", "role", "loss", "setting") if c in df]
    groups = list(df.groupby(keys, sort=False)) if keys else [((), df)]
    if "role" in keys:  # the supervisor and the students first
        order = {r: i for i, r in enumerate(("weak", "student", "control", "ceiling", "baseline"))}
        groups.sort(key=lambda kg: order.get(dict(zip(keys, kg[0]))["role"], len(order)))
    models = df[df["role"] != "weak"] if "role" in df else df  # the supervisor's `strong` is the weak model
    multi = any(c in models and models[c].nunique() > 1 for c in ("task", "strong"))
    shown = groups[:max_panels]
    fig, axes = _grid(len(shown), ncols=3, panel_h=2.7)
    for ax, (key, g) in zip(axes, shown):
        key = key if isinstance(key, tuple) else (key,)
        d = dict(zip(keys, key))
        g = g.assign(sum_p=g["mean_p"].fillna(0) * g["count"], sum_y=g["frac_pos"].fillna(0) * g["count"])
        b = g.groupby("bin").agg(lo=("lo", "first"), hi=("hi", "first"), count=("count", "sum"),
                                 sum_p=("sum_p", "sum"), sum_y=("sum_y", "sum"))
        ax.bar(b["lo"], b["count"] / b["count"].sum(), b["hi"] - b["lo"], align="edge", color="0.8",
               edgecolor="0.5", linewidth=0.5, label="fraction of examples")
        nz = b["count"] > 0
        ax.plot(b["sum_p"][nz] / b["count"][nz], b["sum_y"][nz] / b["count"][nz], "o-", color="C0", ms=3.5,
                label="fraction positive")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ece = g.drop_duplicates([c for c in ("seed", "split") if c in g] or ["ece"])["ece"].mean()
        parts = ("task", "strong") if multi and d.get("role") != "weak" else ()
        parts += ("method", "role", "loss", "setting")
        name = "/".join(str(d[k]) for k in parts if k in d)
        ax.set_title(f"{name}\nECE {ece:.3f}", fontsize=8.5)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("P(y=1)", fontsize=8)
    axes[0].legend(fontsize=6.5, loc="upper left")
    note = f" (first {len(shown)} of {len(groups)} models)" if len(groups) > len(shown) else ""
    fig.suptitle("Calibration: confidence histogram and reliability" + note)
    return fig


def _save(fig: Figure, path: Path, dpi: int, name: str) -> None:
    """Save one figure. Where its constrained layout collapses (many panels or a long legend in too little
    height: 13 tasks' misfit panels did), the figure grows taller and tries again, and in the end is saved
    without the layout engine, saying so in one line: a run's last step never fails on a figure's layout."""
    import warnings

    for _ in range(3):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", "constrained_layout not applied")
            try:
                fig.savefig(path, dpi=dpi)
                return
            except UserWarning:
                w, h = fig.get_size_inches()
                fig.set_size_inches(w, h * 1.6)
    fig.set_layout_engine("none")
    fig.savefig(path, dpi=dpi)
    print(f"[plots] {name}: its layout did not fit even at {fig.get_size_inches()[1]:.0f} inches tall; saved "
          "without it (panels may overlap)", file=sys.stderr)


def save_all(figs: dict[str, Figure], folder: str | Path, dpi: int = 120) -> list[Path]:
    """Write each figure as `<folder>/<name>.png` at `dpi` (the folder is created) and close it.
    Returns the paths in the order of `figs`."""
    if not figs:
        raise ToolkitError("save_all: no figures")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        path = folder / f"{name}.png"
        _save(fig, path, dpi, name)
        paths.append(path)
        if "matplotlib.pyplot" in sys.modules:  # a pyplot-managed figure must be released by pyplot
            sys.modules["matplotlib.pyplot"].close(fig)
        fig.clear()
    return paths


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
