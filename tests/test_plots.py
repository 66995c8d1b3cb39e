"""Figures: each returns a Figure with the expected panels and artists, copes with missing pieces, and
raises a clear error on empty input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from test_diagnostics import synthetic_comparison

from toolkit import diagnostics as dg
from toolkit import methods, plots, records
from toolkit._util import ToolkitError

SETTINGS = ("select", "k=8,cal", "best")
has_control = "control" in records.ROLES


@pytest.fixture(scope="module")
def comparison():
    recs, labels, curves = synthetic_comparison(seeds=2, n=40, strongs=("s-small", "s-large"), layers=3,
                                                control=has_control)
    summary = records.summary(recs, labels, settings=SETTINGS, n_boot=50)
    diag = dg.table(recs, labels, curves=curves)
    return {"recs": recs, "labels": labels, "curves": curves, "summary": summary, "diag": diag,
            "diag_summary": dg.summarize(diag)}


def _bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_pgr_bars(comparison):
    s = comparison["summary"]
    fig = plots.pgr_bars(s)
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # one panel per strong model
    defined = [int(g["pgr_acc"].notna().sum()) for _, g in s.groupby("strong", sort=False)]
    assert [len(_bars(ax)) for ax in fig.axes] == defined
    assert len(plots.pgr_bars(s, metric="auroc").axes) == 2


def test_pgr_bars_undefined_is_an_annotated_gap(comparison):
    s = comparison["summary"].copy()
    s.loc[s.index[0], ["pgr_acc", "pgr_acc_lo", "pgr_acc_hi"]] = np.nan
    s.loc[s.index[0], "pgr_acc_note"] = "ceiling 0.700 does not beat weak 0.720"
    fig = plots.pgr_bars(s)
    ax = fig.axes[0]
    first = s[s["strong"] == s["strong"].iloc[0]]
    assert len(_bars(ax)) == first["pgr_acc"].notna().sum()
    assert sum(t.get_text().startswith("undefined") for t in ax.texts) == first["pgr_acc"].isna().sum()
    assert any(t.get_text().startswith("undefined: ceiling 0.700") for t in ax.texts)


def test_accuracy_bars(comparison):
    s = comparison["summary"]
    fig = plots.accuracy_bars(s)
    assert len(fig.axes) == 2 and sum(len(_bars(ax)) for ax in fig.axes) == 3 * len(s)
    one = plots.accuracy_bars(s[s["method"] == "probe"].iloc[:1])  # one row, one panel
    assert len(one.axes) == 1 and len(_bars(one.axes[0])) == 3


def test_agreement_bars(comparison):
    ds = comparison["diag_summary"]
    fig = plots.agreement_bars(ds)
    assert len(fig.axes) == 2
    n_series = 2 * 3 + (2 if has_control else 0)  # 2 losses x 3 methods (+ probe controls)
    assert len(_bars(fig.axes[0])) == 3 * n_series
    no_ft = plots.agreement_bars(ds[ds["method"] != "finetune"], roles=("student",))
    assert len(_bars(no_ft.axes[0])) == 3 * 4


def test_accuracy_vs_size(comparison):
    s = records.summary(comparison["recs"], comparison["labels"], settings=SETTINGS + ("layer=0",), n_boot=20)
    fig = plots.accuracy_vs_size(s, {"s-small": 1.35e8, "s-large": 1.5e9, "unused": 7e9})
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_xscale() == "log"
    # one line per method/loss at the default settings (no layer=0 baseline), one ceiling per method, the weak line
    shown = s[[methods.student_settings()[m] == st for m, st in zip(s["method"], s["setting"])]]
    n_labels = shown[["method", "loss"]].drop_duplicates().shape[0]
    assert n_labels < s[["method", "loss", "setting"]].drop_duplicates().shape[0]
    assert len(ax.lines) == n_labels + 3 + 1
    assert not any("layer=" in t.get_text() for t in ax.get_legend().get_texts())
    probes_l0 = plots.accuracy_vs_size(s, {"s-small": 1.35e8, "s-large": 1.5e9}, settings={"probe": "layer=0"})
    assert any("layer=0" in t.get_text() for t in probes_l0.axes[0].get_legend().get_texts())
    with pytest.raises(ToolkitError, match="sizes"):
        plots.accuracy_vs_size(s, {"nothing": 1.0})


def test_layer_curves(comparison):
    lc = dg.layer_curves(comparison["recs"], comparison["labels"], split=("val", "test"))
    fig = plots.layer_curves(lc)
    assert len(fig.axes) == 2  # one per strong model
    assert len(fig.axes[0].lines) == 2 * 3  # (2 students + ceiling) x (gold, weak labels)
    one = plots.layer_curves(lc[(lc["split"] == "test") & (lc["strong"] == "s-small")])
    assert len(one.axes) == 1 and len(one.axes[0].lines) == 6


def test_finetune_curves(comparison):
    c = comparison["curves"]
    fig = plots.finetune_curves(c)
    assert len(fig.axes) == 4  # 2 strong x 2 losses
    one = plots.finetune_curves(c[(c["seed"] == 0) & (c["loss"] == "xent") & (c["strong"] == "s-small")])
    assert len(one.axes) == 1 and len(one.axes[0].lines) == 2 and len(one.axes[0].collections) == 1


@pytest.mark.skipif(not has_control, reason="role `control` not in records.ROLES yet")
def test_noise_control(comparison):
    ns = dg.noise_control(comparison["diag"])
    fig = plots.noise_control(ns)
    assert len(fig.axes) == 2 and [len(_bars(ax)) for ax in fig.axes] == [2 * len(ns)] * 2
    with pytest.raises(ToolkitError, match="empty"):
        plots.noise_control(ns.iloc[:0])


def test_misfit_scatter(comparison):
    d = comparison["diag"]
    fig = plots.misfit_scatter(d)
    ax = fig.axes[0]
    n_models = d[(d["diagnostic"] == "misfit")].shape[0]
    assert len(fig.axes) == 1 and sum(len(c.get_offsets()) for c in ax.collections) == n_models
    assert len(plots.misfit_scatter(comparison["diag_summary"]).axes) == 1  # the seed means work too
    with pytest.raises(ToolkitError, match="misfit"):
        plots.misfit_scatter(d[d["split"] == "test"])


def test_cross_agreement_heatmap(comparison):
    cross = dg.cross_agreement(comparison["recs"], comparison["labels"])
    for value in ("agree", "error_jaccard", "both_wrong"):
        fig = plots.cross_agreement_heatmap(cross, value=value)
        assert len(fig.axes) == 3  # two panels and a colour bar
        img = fig.axes[0].images[0].get_array()
        assert img.shape == (6, 6) and np.allclose(img, np.asarray(img).T, equal_nan=True)


def test_calibration_hist(comparison):
    cal = dg.calibration(comparison["recs"], comparison["labels"], bins=5)
    fig = plots.calibration_hist(cal, max_panels=4)
    assert len(fig.axes) == 4 and len(_bars(fig.axes[0])) == 5
    assert fig.axes[0].get_title().startswith("probe/weak")  # the supervisor first
    assert "of" in fig.get_suptitle()


def test_empty_inputs_raise():
    empty = pd.DataFrame()
    for fn in (plots.pgr_bars, plots.accuracy_bars, plots.agreement_bars, plots.layer_curves,
               plots.finetune_curves, plots.noise_control, plots.misfit_scatter, plots.cross_agreement_heatmap,
               plots.calibration_hist):
        with pytest.raises(ToolkitError, match="empty"):
            fn(empty)
    with pytest.raises(ToolkitError, match="empty"):
        plots.accuracy_vs_size(empty, {"a": 1})
    with pytest.raises(ToolkitError):
        plots.save_all({}, "unused")


def test_missing_columns_raise(comparison):
    with pytest.raises(ToolkitError, match="lacks columns"):
        plots.pgr_bars(comparison["summary"].drop(columns=["pgr_acc_lo"]))


def test_save_all(comparison, tmp_path):
    figs = {"pgr": plots.pgr_bars(comparison["summary"]), "acc": plots.accuracy_bars(comparison["summary"])}
    paths = plots.save_all(figs, tmp_path / "figs")
    assert [p.name for p in paths] == ["pgr.png", "acc.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_one_seed_no_finetune_all_pgr_undefined(tmp_path):
    recs, labels, _ = synthetic_comparison(seeds=1, n=30, strongs=("s",), layers=2, control=False)
    recs = [r for r in recs if r.method != "finetune"]
    s = records.summary(recs, labels, settings=SETTINGS, n_boot=20)
    s = s.assign(pgr_acc=np.nan, pgr_acc_note="ceiling does not beat weak")
    d = dg.table(recs, labels)
    figs = {"pgr": plots.pgr_bars(s), "acc": plots.accuracy_bars(s), "agree": plots.agreement_bars(dg.summarize(d)),
            "size": plots.accuracy_vs_size(s, {"s": 1e9}), "layers": plots.layer_curves(dg.layer_curves(recs, labels)),
            "misfit": plots.misfit_scatter(d), "cross": plots.cross_agreement_heatmap(dg.cross_agreement(recs, labels)),
            "calib": plots.calibration_hist(dg.calibration(recs, labels))}
    assert len(_bars(figs["pgr"].axes[0])) == 0 and len(figs["pgr"].axes[0].texts) == len(s)
    assert len(plots.save_all(figs, tmp_path)) == len(figs)


def test_a_figure_whose_layout_collapses_is_still_saved(tmp_path, capsys):
    """Thirteen tasks' misfit panels once collapsed the constrained layout and the whole run failed while writing
    its figures, after the work was done. Now the figure grows taller and, failing that, is saved without the
    layout engine, with a line that says so."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 0.6), layout="constrained")
    ax = fig.subplots()
    for k in range(40):
        ax.plot([0, 1], [k, k], label=f"a long legend entry number {k}")
    fig.legend(loc="outside lower center", ncols=1)
    (path,) = plots.save_all({"crowded": fig}, tmp_path)
    assert path.exists() and path.stat().st_size > 0
