"""Diagnostics on constructed predictions with known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from toolkit import diagnostics as dg
from toolkit import methods, metrics, records
from toolkit._util import ToolkitError
from toolkit.records import Predictions
from toolkit.weak import noise_labels

needs_control = pytest.mark.skipif("control" not in records.ROLES, reason="role `control` not in records.ROLES yet")


def _soft(hard: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Probabilities on the side of 0.5 given by `hard`, with random confidence."""
    conf = rng.uniform(0.55, 0.98, hard.size)
    return np.where(hard, conf, 1 - conf)


def _student(y: np.ndarray, weak: np.ndarray, rng, imitate: float, err: float) -> np.ndarray:
    """Hard predictions: copy the supervisor's errors with prob `imitate`, flip the rest with prob `err`."""
    wrong = weak != y
    h = np.where(wrong & (rng.random(y.size) < imitate), weak, y).astype(bool)
    flip = ~wrong & (rng.random(y.size) < err)
    return np.where(flip, ~h, h)


def synthetic_comparison(seeds: int = 2, n: int = 60, strongs=("s-small", "s-large"), layers: int = 4,
                         control: bool = True, seed: int = 0):
    """Records of a full comparison (probe, prompt, finetune) on one task with gold labels, and curves."""
    rng = np.random.default_rng(seed)
    ids = {sp: [f"{sp}-{i}" for i in range(n)] for sp in ("strong_train", "val", "test")}
    labels = {i: int(k % 2) for sp in ids for k, i in enumerate(ids[sp])}
    out, curves = [], []
    base = {"task": "toy", "weak": "w-tiny"}
    for s in range(seeds):
        weak_h = {}
        for sp, sp_ids in ids.items():
            y = np.array([labels[i] for i in sp_ids])
            weak_h[sp] = np.where(rng.random(n) < 0.28, 1 - y, y).astype(bool)
            out.append(Predictions(**base, strong="w-tiny", method="probe", role="weak", loss="xent",
                                   setting="layer=6", seed=s, split=sp, ids=sp_ids, p=_soft(weak_h[sp], rng)))
        for si, strong in enumerate(strongs):
            def rec(method, role, loss, setting, split, imitate, err, extra=None, _s=s, _strong=strong, _wh=weak_h):
                y = np.array([labels[i] for i in ids[split]]).astype(bool)
                h = _student(y, _wh[split], rng, imitate, err) if role != "ceiling" else np.where(
                    rng.random(n) < err, ~y, y)
                params = {"layer": int(setting[6:])} if setting.startswith("layer=") else {}
                return Predictions(**base, strong=_strong, method=method, role=role, loss=loss, setting=setting,
                                   seed=_s, split=split, ids=ids[split], p=_soft(h, rng), extra=extra or {},
                                   params=params)
            bonus = 0.05 * si
            for loss, imit in (("xent", 0.6), ("logconf", 0.4)):
                for sp in ("strong_train", "val", "test"):
                    out.append(rec("probe", "student", loss, "select", sp, imit - bonus, 0.1, {"layer": 2, "C": 0.1}))
                    if control:
                        out.append(rec("probe", "control", loss, "select", sp, 0.28, 0.1))
                for k in range(layers):
                    for sp in ("val", "test"):
                        out.append(rec("probe", "student", loss, f"layer={k}", sp, imit, 0.4 - 0.08 * k))
                out.append(rec("prompt", "student", loss, "k=8,cal", "test", imit, 0.15))
                out.append(rec("finetune", "student", loss, "best", "test", imit - bonus, 0.08))
                out.append(rec("finetune", "student", loss, "final", "test", imit, 0.1))
                steps = np.arange(1, 6) * 10
                val = 0.7 + 0.04 * np.sin(steps / 10 + s)
                curves.append(pd.DataFrame({"step": steps, "epoch": steps / 50, "lr": 1e-4, "train_loss": 0.7,
                                            "val_agreement": val, "test_acc": 0.8 - 0.01 * steps / 10 + 0.02 * s,
                                            "best": val == val.max(), "task": "toy", "weak": "w-tiny",
                                            "strong": strong, "method": "finetune", "role": "student",
                                            "loss": loss, "seed": s}))
            for sp in ("strong_train", "val", "test"):
                out.append(rec("probe", "ceiling", "xent", "select", sp, 0, 0.05 - bonus / 2, {"layer": 3, "C": 1.0}))
            for k in range(layers):
                for sp in ("val", "test"):
                    out.append(rec("probe", "ceiling", "xent", f"layer={k}", sp, 0, 0.35 - 0.08 * k))
            out.append(rec("prompt", "baseline", "none", "k=0", "test", 0, 0.3))
            out.append(rec("prompt", "ceiling", "xent", "k=8,cal", "test", 0, 0.12))
            for st in ("best", "final"):
                out.append(rec("finetune", "ceiling", "xent", st, "test", 0, 0.05))
    return out, labels, pd.concat(curves, ignore_index=True)


# --- agreement ---------------------------------------------------------------------------------------

def test_agreement_identical_student():
    y = np.array([0, 1, 1, 0, 1, 0])
    w = np.array([0.2, 0.9, 0.3, 0.6, 0.8, 0.1])
    a = dg.agreement(w, w, y)
    assert a["agree"] == a["agree_weak_right"] == a["agree_weak_wrong"] == 1.0
    assert a["student_acc"] == a["weak_acc"] == pytest.approx(4 / 6)
    assert (a["n_weak_right"], a["n_weak_wrong"]) == (4, 2)


def test_agreement_perfect_student_never_imitates():
    y = np.array([0, 1, 1, 0, 1, 0])
    w = np.array([0.2, 0.9, 0.3, 0.6, 0.8, 0.1])
    a = dg.agreement(y.astype(float), w, y)
    assert a["agree_weak_wrong"] == 0.0 and a["agree_weak_right"] == 1.0
    assert a["agree"] == pytest.approx(4 / 6) and a["student_acc"] == 1.0


def test_agreement_hand_computed():
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    w = np.array([1, 1, 0, 0, 0, 1, 0, 1]) * 0.8 + 0.1  # wrong on 2, 5, 6, 7
    s = np.array([1, 0, 0, 0, 1, 1, 1, 0]) * 0.8 + 0.1
    a = dg.agreement(s, w, y)
    # weak right on {0,1,3,4}: s==w on 0,3 -> 2/4; weak wrong on {2,5,6,7}: s==w on 2,5 -> 2/4
    assert a["agree_weak_right"] == 0.5 and a["agree_weak_wrong"] == 0.5 and a["agree"] == 0.5
    assert a["student_acc"] == 0.5 and a["weak_acc"] == 0.5  # s right on 0, 3, 6, 7


def test_agreement_empty_subset_is_nan():
    y = np.array([0, 1, 1])
    a = dg.agreement(np.array([0.9, 0.1, 0.2]), y.astype(float), y)
    assert np.isnan(a["agree_weak_wrong"]) and a["n_weak_wrong"] == 0 and a["agree"] == 0.0


def test_agreement_threshold_is_strict():
    y = np.array([1, 0])
    a = dg.agreement(np.array([0.5, 0.5]), np.array([0.51, 0.49]), y)  # 0.5 predicts class 0
    assert a["agree"] == 0.5 and a["student_acc"] == 0.5


def test_agreement_bad_shapes():
    with pytest.raises(ToolkitError):
        dg.agreement(np.zeros(3), np.zeros(4), np.zeros(3))
    with pytest.raises(ToolkitError):
        dg.agreement([], [], [])


# --- misfit --------------------------------------------------------------------------------------------

def test_misfit_identical_and_perfect():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    w = np.array([0.2, 0.9, 0.3, 0.6, 0.8, 0.1, 0.7, 0.9])  # 3 errors
    m = dg.misfit(w, w, y)
    assert m["misfit"] == 0 and m["gain"] == 0 and np.isnan(m["ratio"])
    m = dg.misfit(y.astype(float), w, y)
    assert m["err_weak"] == m["gain"] == m["misfit"] == pytest.approx(3 / 8) and m["err_student"] == 0
    assert m["ratio"] == pytest.approx(1.0)


def test_misfit_hand_computed_hard_and_soft():
    y = np.array([1, 0, 1, 0])
    w = np.array([0.8, 0.6, 0.4, 0.2])  # wrong on 1, 2
    s = np.array([0.9, 0.7, 0.9, 0.6])  # wrong on 1, 3; disagrees with w on 2, 3
    m = dg.misfit(s, w, y)
    assert (m["err_weak"], m["err_student"], m["misfit"], m["gain"]) == (0.5, 0.5, 0.5, 0.0)
    soft = dg.misfit(s, w, y, soft=True)
    assert soft["err_weak"] == pytest.approx(np.mean([0.04, 0.36, 0.36, 0.04]))
    assert soft["err_student"] == pytest.approx(np.mean([0.01, 0.49, 0.01, 0.36]))
    assert soft["misfit"] == pytest.approx(np.mean([0.01, 0.01, 0.25, 0.16]))
    assert soft["ratio"] == pytest.approx(soft["gain"] / soft["misfit"])


def test_misfit_projection_onto_convex_set_satisfies_theorem():
    """Projecting the weak labels onto a convex set holding the target: gain >= misfit (soft)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50).astype(float)
    w = np.clip(y + rng.normal(0, 0.4, 50), 0, 1)
    # convex set: {a*y + (1-a)*0.5 : a in [0, 1]}; project w onto it (least squares in a, clipped)
    d = y - 0.5
    a = np.clip(np.dot(w - 0.5, d) / np.dot(d, d), 0, 1)
    s = 0.5 + a * d
    m = dg.misfit(s, w, y, soft=True)
    assert m["gain"] >= m["misfit"] - 1e-12


# --- noise labels ---------------------------------------------------------------------------------------

def test_noise_labels_flip_count_and_determinism():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    w = np.where(rng.random(200) < 0.3, 1 - y, y) * 0.8 + 0.1
    k = int(((w > 0.5) != y).sum())
    a, b, c = noise_labels(y, w, seed=3), noise_labels(y, w, seed=3), noise_labels(y, w, seed=4)
    assert int((a != y).sum()) == k and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.int64 and set(np.unique(a)) <= {0, 1}


def test_noise_labels_per_class():
    y = np.array([0] * 50 + [1] * 50)
    wh = y.copy()
    wh[:10] = 1  # 10 errors on class 0
    wh[50:53] = 0  # 3 errors on class 1
    out = noise_labels(y, wh.astype(float), seed=0, per_class=True)
    assert int((out != y)[y == 0].sum()) == 10 and int((out != y)[y == 1].sum()) == 3
    assert (out == wh).mean() < 1  # random, not a copy of the supervisor
    assert np.array_equal(out, noise_labels(y, wh.astype(float), seed=0, per_class=True))


def test_noise_labels_no_errors():
    y = np.array([0, 1, 0, 1])
    assert np.array_equal(noise_labels(y, y.astype(float), seed=0), y)


# --- table, joins by id ---------------------------------------------------------------------------------

def _pair(ids_s, ids_w, p_s, p_w, split="test", role="student", setting="select"):
    base = {"task": "t", "weak": "w", "seed": 0, "split": split}
    return [Predictions(**base, strong="w", method="probe", role="weak", loss="xent", setting="layer=1",
                        ids=ids_w, p=p_w),
            Predictions(**base, strong="s", method="probe", role=role, loss="xent", setting=setting, ids=ids_s,
                        p=p_s)]


def test_table_joins_by_id_not_position():
    labels = {"a": 1, "b": 0, "c": 1, "d": 0}
    p = {"a": 0.9, "b": 0.8, "c": 0.3, "d": 0.1}  # weak: right on a, d
    student = {"a": 0.7, "b": 0.2, "c": 0.6, "d": 0.4}  # perfect
    ws, ss = ["a", "b", "c", "d"], ["d", "c", "b", "a"]
    recs = _pair(ss, ws, [student[i] for i in ss], [p[i] for i in ws])
    d = dg.table(recs, labels).set_index(["role", "diagnostic"])["value"]
    assert d["student", "student_acc"] == 1.0 and d["student", "weak_acc"] == 0.5
    assert d["student", "agree_weak_wrong"] == 0.0 and d["student", "agree_weak_right"] == 1.0
    assert d["weak", "ece"] == pytest.approx(metrics.ece([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]))
    assert list(dg.table(recs, labels).columns) == dg.DIAG_COLUMNS


def test_table_misfit_on_strong_train_and_orphans():
    labels = {"a": 1, "b": 0, "c": 1, "d": 0}
    ids = ["a", "b", "c", "d"]
    recs = _pair(ids, ids[::-1], [0.9, 0.1, 0.9, 0.1], [0.1, 0.3, 0.8, 0.9], split="strong_train")
    d = dg.table(recs, labels)
    m = d[d["split"] == "strong_train"].set_index("diagnostic")["value"]
    assert m["err_weak"] == 0.5 and m["err_student"] == 0 and m["gain"] == m["misfit"] == 0.5
    orphan = Predictions(task="t", weak="other", strong="s", method="probe", role="student", loss="xent",
                         setting="select", seed=0, split="test", ids=ids, p=[0.5] * 4)
    with pytest.warns(UserWarning, match="no weak supervisor"):
        d = dg.table([orphan], labels)
    assert set(d["diagnostic"]) == {"ece"}


def test_table_duplicate_supervisor_is_an_error():
    ids = ["a", "b"]
    recs = _pair(ids, ids, [0.9, 0.1], [0.9, 0.1])
    with pytest.raises(ToolkitError, match="two weak supervisors"):
        dg.table(recs + [recs[0].with_(setting="layer=2")], {"a": 1, "b": 0})


def test_table_and_summary_on_a_comparison():
    recs, labels, curves = synthetic_comparison(seeds=2, control=False)
    d = dg.table(recs, labels, curves=curves)
    assert not d.empty and list(d.columns) == dg.DIAG_COLUMNS
    assert set(d[d["split"] == "strong_train"]["diagnostic"]) == set(dg.MISFIT)
    assert {"best_step", "best_minus_final_test_acc"} <= set(d["diagnostic"])
    # agreement rows: every non-weak test record x 7
    n_test = sum(r.split == "test" and r.role != "weak" for r in recs)
    assert (d["diagnostic"].isin(dg.AGREEMENT)).sum() == 7 * n_test
    s = dg.summarize(d)
    row = s[(s["method"] == "probe") & (s["role"] == "student") & (s["setting"] == "select")
            & (s["diagnostic"] == "agree") & (s["split"] == "test")]
    assert len(row) == 4 and (row["n_seeds"] == 2).all()  # 2 strong x 2 losses
    sub = d[(d["method"] == "probe") & (d["role"] == "student") & (d["setting"] == "select")
            & (d["diagnostic"] == "agree") & (d["split"] == "test") & (d["strong"] == "s-small")
            & (d["loss"] == "xent")]
    got = row[(row["strong"] == "s-small") & (row["loss"] == "xent")]
    assert got["mean"].iloc[0] == pytest.approx(sub["value"].mean())
    with pytest.raises(ToolkitError):
        dg.summarize(d.iloc[:0])


def test_table_curves_best_vs_final():
    curve = pd.DataFrame({"step": [10, 20, 30], "val_agreement": [0.6, 0.8, 0.7], "test_acc": [0.7, 0.9, 0.75],
                          "best": [False, True, False], "task": "t", "weak": "w", "strong": "s", "method": "finetune",
                          "role": "student", "loss": "xent", "seed": 0})
    d = dg.table([], {}, curves=curve).set_index("diagnostic")["value"]
    assert d["best_step"] == 20 and d["final_step"] == 30
    assert d["best_minus_final_test_acc"] == pytest.approx(0.15)


# --- noise control --------------------------------------------------------------------------------------

@needs_control
def test_noise_control_pairs_students_and_controls():
    recs, labels, _ = synthetic_comparison(seeds=3, strongs=("s",), control=True)
    d = dg.table(recs, labels)
    nc = dg.noise_control(d)
    assert len(nc) == 2 and set(nc["loss"]) == {"xent", "logconf"} and (nc["n_seeds"] == 3).all()
    assert np.allclose(nc["acc_gap"], nc["student_acc"] - nc["control_acc"])
    assert np.allclose(nc["imitation_gap"], nc["student_agree_weak_wrong"] - nc["control_agree_weak_wrong"])
    s = dg.summarize(d)
    extra = s[s["diagnostic"] == "imitation_minus_control"]
    assert len(extra) == 2 and np.allclose(np.sort(extra["mean"]), np.sort(nc["imitation_gap"]))
    # misfit rows exist for controls too (their strong_train records)
    assert ((d["role"] == "control") & (d["diagnostic"] == "misfit")).any()


def test_noise_control_without_controls_is_empty():
    recs, labels, _ = synthetic_comparison(seeds=1, strongs=("s",), control=False)
    nc = dg.noise_control(dg.table(recs, labels))
    assert nc.empty and "imitation_gap" in nc.columns


# --- cross agreement ------------------------------------------------------------------------------------

def _students(p_by_method: dict, ids, seed=0):
    return [Predictions(task="t", weak="w", strong="s", method=m, role="student", loss="xent",
                        setting=methods.student_settings()[m], seed=seed, split="test", ids=ids_m, p=p)
            for m, (ids_m, p) in p_by_method.items()]


def test_cross_agreement_identical_students():
    labels = {"a": 1, "b": 0, "c": 1, "d": 0}
    ids = ["a", "b", "c", "d"]
    p = {"a": 0.9, "b": 0.8, "c": 0.2, "d": 0.1}
    rev = ids[::-1]
    recs = _students({"probe": (ids, [p[i] for i in ids]), "prompt": (rev, [p[i] for i in rev]),
                      "finetune": (ids, [p[i] for i in ids])}, ids)
    c = dg.cross_agreement(recs, labels)
    assert len(c) == 3 and (c["agree"] == 1).all() and (c["error_jaccard"] == 1).all()
    assert (c["both_wrong"] == 0.5).all() and (c["n_seeds"] == 1).all()
    assert list(c[["a", "b"]].itertuples(index=False, name=None))[0] == ("probe/xent", "prompt/xent")


def test_cross_agreement_hand_computed_and_seed_mean():
    labels = {"a": 1, "b": 0, "c": 1, "d": 0}
    ids = ["a", "b", "c", "d"]
    pa = [0.9, 0.9, 0.1, 0.1]  # wrong on b, c
    pb = [0.1, 0.9, 0.9, 0.1]  # wrong on a, b; agrees with pa on b, d
    recs = _students({"probe": (ids, pa), "prompt": (ids, pb)}, ids, seed=0)
    recs += _students({"probe": (ids, pa), "prompt": (ids, pa)}, ids, seed=1)
    c = dg.cross_agreement(recs, labels).iloc[0]
    assert c["agree"] == pytest.approx((0.5 + 1) / 2)
    assert c["error_jaccard"] == pytest.approx((1 / 3 + 1) / 2)
    assert c["both_wrong"] == pytest.approx((0.25 + 0.5) / 2) and c["n_seeds"] == 2
    only = dg.cross_agreement(recs[:1], labels)
    assert only.empty and "error_jaccard" in only.columns


def test_cross_agreement_no_errors_gives_nan_jaccard():
    labels = {"a": 1, "b": 0}
    recs = _students({"probe": (["a", "b"], [0.9, 0.1]), "prompt": (["b", "a"], [0.2, 0.8])}, ["a", "b"])
    c = dg.cross_agreement(recs, labels).iloc[0]
    assert c["agree"] == 1 and np.isnan(c["error_jaccard"]) and c["both_wrong"] == 0


# --- calibration, layer curves ---------------------------------------------------------------------------

def test_calibration_matches_metrics_ece():
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(40)]
    labels = {i: int(rng.integers(0, 2)) for i in ids}
    p = rng.random(40)
    p[0], p[1] = 1.0, 0.0
    rec = Predictions(task="t", weak="w", strong="s", method="probe", role="student", loss="xent",
                      setting="select", seed=0, split="test", ids=ids, p=p)
    cal = dg.calibration([rec], labels, bins=5)
    assert len(cal) == 5 and cal["count"].sum() == 40
    y = np.array([labels[i] for i in ids])
    ece = metrics.ece(y, p, n_bins=5)
    assert cal["ece"].iloc[0] == pytest.approx(ece)
    nz = cal[cal["count"] > 0]
    assert (nz["count"] / 40 * (nz["frac_pos"] - nz["mean_p"]).abs()).sum() == pytest.approx(ece)
    assert dg.calibration([rec], labels, split="val").empty


def test_layer_curves_gold_and_weak_label_accuracy():
    labels = {"a": 1, "b": 0, "c": 1, "d": 0}
    ids = ["a", "b", "c", "d"]
    base = {"task": "t", "weak": "w", "split": "val"}
    recs = []
    for seed in (0, 1):
        recs.append(Predictions(**base, strong="w", method="probe", role="weak", loss="xent", setting="layer=1",
                                seed=seed, ids=ids, p=[0.9, 0.9, 0.9, 0.9]))
        for k, p in ((0, [0.9, 0.9, 0.9, 0.9]), (1, [0.9, 0.1, 0.9, 0.1 + 0.8 * seed])):
            recs.append(Predictions(**base, strong="s", method="probe", role="student", loss="xent",
                                    setting=f"layer={k}", seed=seed, ids=ids[::-1], p=p[::-1], params={"layer": k}))
        recs.append(Predictions(**base, strong="s", method="probe", role="student", loss="xent", setting="select",
                                seed=seed, ids=ids, p=[0.5] * 4, extra={"layer": 1, "C": 1.0}))
    lc = dg.layer_curves(recs, labels, split="val").set_index("layer")
    assert lc.loc[0, "gold_acc"] == 0.5 and lc.loc[0, "weak_label_acc"] == 1.0 and lc.loc[0, "gold_acc_std"] == 0
    assert lc.loc[1, "gold_acc"] == pytest.approx(0.875) and lc.loc[1, "weak_label_acc"] == pytest.approx(0.625)
    assert (lc.loc[1, "n_chosen"], lc.loc[0, "n_chosen"], lc.loc[1, "n_seeds"]) == (2, 0, 2)
    assert dg.layer_curves(recs, labels, split="test").empty


def test_layer_curves_on_comparison_has_both_splits():
    recs, labels, _ = synthetic_comparison(seeds=1, strongs=("s",), layers=3)
    lc = dg.layer_curves(recs, labels, split=("val", "test"))
    assert set(lc["split"]) == {"val", "test"} and set(lc["layer"]) == {0, 1, 2}
    assert set(lc["role"]) == {"student", "ceiling"}
    assert lc["gold_acc_std"].isna().all()  # one seed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dg.table(recs, labels)  # every record has its supervisor


def test_calibration_takes_a_method_to_setting_map():
    recs, labels, _ = synthetic_comparison()
    by_map = dg.calibration(recs, labels, settings={"probe": "select"})
    assert len(by_map) and set(by_map.loc[by_map.role != "weak", "setting"]) == {"select"}
    assert "weak" in set(by_map.role)
    assert set(dg.calibration(recs, labels, settings=["select"]).role) <= {"student", "ceiling", "control", "baseline"}
