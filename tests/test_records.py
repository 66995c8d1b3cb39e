"""The results schema: records, tidy rows, PGR summary, save/load; and the weak supervisor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit import metrics, records, tasks, weak
from toolkit._util import ToolkitError
from toolkit.cache import Features
from toolkit.records import Predictions

IDS = tuple(f"id{i:03d}" for i in range(200))
LABELS = {i: k % 2 for k, i in enumerate(IDS)}


def _rec(role, p, seed=0, setting="select", split="test", method="probe", loss="xent"):
    return Predictions(task="t", weak="w", strong="s", method=method, role=role, loss=loss, setting=setting,
                       seed=seed, split=split, ids=IDS, p=p)


def _noisy(acc: float, seed: int) -> np.ndarray:
    """Predictions that are right on a fraction `acc` of IDS (deterministic)."""
    y = np.array([LABELS[i] for i in IDS])
    wrong = np.random.default_rng(seed).permutation(len(y)) < round((1 - acc) * len(y))
    return np.where(wrong, 1 - y, y) * 0.8 + 0.1


def test_rows_have_the_schema_and_right_values():
    df = records.table([_rec("student", _noisy(0.75, 0))], LABELS)
    assert list(df.columns) == records.ROW_COLUMNS
    acc = df.loc[df.metric == "accuracy", "value"].item()
    assert acc == pytest.approx(0.75)


def test_summary_pgr_from_constructed_students():
    recs = []
    for seed in range(3):
        recs += [_rec("weak", _noisy(0.6, 10 + seed), seed), _rec("ceiling", _noisy(0.9, 20 + seed), seed),
                 _rec("student", _noisy(0.75, 30 + seed), seed)]
    summ = records.summary(recs, LABELS, n_boot=200)
    (row,) = summ.to_dict("records")
    assert row["weak_acc"] == pytest.approx(0.6) and row["ceiling_acc"] == pytest.approx(0.9)
    assert row["pgr_acc"] == pytest.approx(0.5)  # (0.75 - 0.6) / (0.9 - 0.6)
    assert row["pgr_acc_lo"] <= 0.5 <= row["pgr_acc_hi"] and row["n_seeds"] == 3
    # the seeds barely differ here: the default interval (seeds and examples) is about as wide as the examples-only
    # one, not a 3-seed t's 2.2x wider; the seeds' spread is reported
    width, ex_width = row["pgr_acc_hi"] - row["pgr_acc_lo"], row["pgr_acc_ex_hi"] - row["pgr_acc_ex_lo"]
    assert 0.8 * ex_width < width < 1.6 * ex_width and row["interval"] == metrics.SEEDS_AND_POOL
    assert row["pgr_acc_openai"] == pytest.approx(0.5)  # every seed's weak, student and ceiling alike here
    assert row["pgr_acc_std"] >= 0 and row["pgr_acc_draws_undefined"] == 0 and row["n_boot"] == 200
    # --min-gap: a gap of 0.3 is too small when 0.31 is asked for
    (strict,) = records.summary(recs, LABELS, n_boot=200, min_gap=0.31).to_dict("records")
    assert np.isnan(strict["pgr_acc"]) and "≤ 0.310" in strict["pgr_acc_note"]


def test_summary_says_why_pgr_is_undefined():
    recs = [_rec("weak", _noisy(0.8, 1)), _rec("ceiling", _noisy(0.7, 2)), _rec("student", _noisy(0.75, 3))]
    (row,) = records.summary(recs, LABELS, n_boot=100).to_dict("records")
    assert np.isnan(row["pgr_acc"]) and "does not beat weak" in row["pgr_acc_note"]


def test_records_join_by_id_not_position():
    rec = _rec("student", np.linspace(0, 1, len(IDS)))
    shuffled = list(reversed(IDS))
    np.testing.assert_array_equal(rec.aligned(shuffled), rec.p[::-1])
    with pytest.raises(ToolkitError, match="has no prediction"):
        rec.aligned(["unknown"])


def test_bad_predictions_are_refused():
    with pytest.raises(ToolkitError, match="NaN or values outside"):
        _rec("student", np.full(len(IDS), np.nan))
    with pytest.raises(ToolkitError, match="role must be"):
        _rec("teacher", np.zeros(len(IDS)))


def test_save_and_load_round_trip(tmp_path: Path):
    recs = [_rec("student", _noisy(0.7, 0)), _rec("weak", _noisy(0.6, 1), split="val"),
            _rec("student", _noisy(0.8, 2), setting="k=8,cal", method="prompt").with_(
                params={"k": 8, "calibrated": True})]
    records.save_records(recs, tmp_path / "p.csv")
    back = records.load_records(tmp_path / "p.csv")
    assert [r.key() for r in back] == [r.key() for r in recs]
    assert [r.params for r in back] == [{}, {}, {"k": 8, "calibrated": True}]  # typed, not strings
    np.testing.assert_allclose(back[0].p, recs[0].p, rtol=1e-8)


def test_params_are_json_scalars():
    with pytest.raises(ToolkitError, match="JSON scalars"):
        _rec("student", _noisy(0.7, 0)).with_(params={"layers": [1, 2]})


def _synthetic_task_and_features(n=400, d=16, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    ids = [f"x{i:04d}" for i in range(n)]
    signal = (2 * y - 1)[:, None] * np.linspace(0.0, 1.5, 3)[:, None, None].repeat(n, 1)  # layer l: signal l
    hidden = rng.normal(size=(3, n, d)) + signal * np.eye(d)[0]
    data = pd.DataFrame({"id": ids, "text": ids, "label": y})
    task = tasks.Task(name="synthetic", data=data, template="{text}", label_words=(" no", " yes"))
    feats = Features(Path("."), {}, tuple(ids), (0, 1, 2), hidden.astype(np.float32), None, np.ones(n))
    return task, feats


def test_weak_supervisor_learns_and_labels_every_split_by_id():
    task, feats = _synthetic_task_and_features()
    splits = tasks.split(task, seed=0, sizes=tasks.SplitSizes(100, 100, 50, 100))
    recs = weak.train_weak(feats, splits, weak.WeakConfig(model="w", layer="last"), seed=0)
    assert [r.split for r in recs] == list(weak.LABEL_SPLITS)
    test = next(r for r in recs if r.split == "test")
    assert test.ids == tuple(splits.test.ids) and test.setting == "layer=2"
    acc = ((test.p > 0.5) == splits.test.labels).mean()
    assert acc > 0.75  # layer 2 carries a strong signal


def test_weak_cv_picks_the_informative_layer_and_a_C():
    task, feats = _synthetic_task_and_features()
    splits = tasks.split(task, seed=0, sizes=tasks.SplitSizes(150, 100, 50, 100))
    labels = np.asarray(splits.weak_train.labels)
    layer, C = weak.choose(feats, splits.weak_train.ids, labels, weak.WeakConfig(layer="cv"), 0)
    assert layer == 2 and C in weak.WeakConfig().Cs
    assert weak.choose(feats, splits.weak_train.ids, labels, weak.WeakConfig(layer="1"), 0)[0] == 1
    with pytest.raises(ToolkitError, match="weak layer must be"):
        weak.choose(feats, splits.weak_train.ids, labels, weak.WeakConfig(layer="deepest"), 0)


def test_records_round_trip_through_bytes_with_extras():
    from toolkit._util import ToolkitError

    recs = [Predictions(task="t", weak="w", strong="s", method="probe", role="student", loss="xent",
                        setting="select", seed=1, split="test", ids=("a", "b", "c"), p=np.array([0.1, 0.5, 0.9]),
                        extra={"layer": np.int64(3), "C": 0.1, "demos": ["x", "y"]}),
            Predictions(task="t", weak="w", strong="s", method="probe", role="student", loss="xent",
                        setting="layer=2", seed=1, split="val", ids=("d",), p=np.array([1.0]), params={"layer": 2})]
    back = records.from_bytes(records.to_bytes(recs))
    assert [r.key() for r in back] == [r.key() for r in recs]
    assert back[1].params == {"layer": 2} and back[0].params == {}
    assert back[0].extra == {"layer": 3, "C": 0.1, "demos": ["x", "y"]} and back[0].ids == ("a", "b", "c")
    np.testing.assert_array_equal(back[0].p, recs[0].p)
    data = bytearray(records.to_bytes(recs))
    data[-200] ^= 0xFF
    with pytest.raises(ToolkitError, match="damaged"):
        records.from_bytes(bytes(data))


def test_one_methods_settings_never_pull_in_anothers_rows():
    """Summary settings keyed by method: a method that shows `layer=3` does not bring in the probe's `layer=3`
    row, which nobody asked for (a flat list of settings did)."""
    recs = [_rec("weak", _noisy(0.6, 1))]
    for method in ("probe", "mine"):
        recs += [_rec("ceiling", _noisy(0.9, 2), setting="layer=3", method=method),
                 _rec("student", _noisy(0.75, 3), setting="layer=3", method=method),
                 _rec("ceiling", _noisy(0.9, 2), method=method), _rec("student", _noisy(0.7, 4), method=method)]
    by_method = records.summary(recs, LABELS, n_boot=50, settings={"probe": ("select",), "mine": ("layer=3",)})
    assert set(zip(by_method.method, by_method.setting)) == {("probe", "select"), ("mine", "layer=3")}
    flat = records.summary(recs, LABELS, n_boot=50, settings=("select", "layer=3"))
    assert len(flat) == 4  # the flat form shows every listed setting of every method
