"""Bootstrapping: the cross-fitting split scheme, chains of any length, and records along the chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit import chain, diagnostics, records, tasks
from toolkit._util import ToolkitError
from toolkit.cache import Features
from toolkit.records import Predictions
from toolkit.weak import LABEL_SPLITS, Supervision


def _setup(n=320, d=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"ex{i:04d}" for i in range(n)]
    y = np.arange(n) % 2
    task = tasks.Task(name="synthetic", data=pd.DataFrame({"id": ids, "text": ids, "label": y}), template="{text}",
                      label_words=(" no", " yes"))

    def feats(signal):
        hidden = rng.normal(size=(2, n, d)) + signal * (2 * y[None, :, None] - 1) * np.eye(d)[0]
        return Features(Path("."), {}, tuple(ids), (0, 1), hidden.astype(np.float32), None, np.ones(n))

    splits = tasks.split(task, seed=seed, sizes=tasks.SplitSizes(60, 120, 40, 80))
    gold = dict(zip(ids, y))
    weak = [Predictions(task="synthetic", weak="w", strong="w", method="probe", role="weak", loss="xent",
                        setting="layer=1", seed=seed, split=s, ids=splits[s].ids,
                        p=np.clip(np.array([gold[i] for i in splits[s].ids]) * 0.5 + 0.25
                                  + rng.normal(0, 0.2, len(splits[s])), 0.01, 0.99))
            for s in LABEL_SPLITS]
    return Supervision(seed, splits, weak), feats(0.8), feats(1.5), gold


def test_folds_are_disjoint_balanced_and_seeded():
    f = chain.fold_of(101, seed=3)
    assert set(np.unique(f)) == {0, 1} and abs((f == 0).sum() - (f == 1).sum()) <= 1
    np.testing.assert_array_equal(f, chain.fold_of(101, seed=3))
    assert not np.array_equal(f, chain.fold_of(101, seed=4))
    assert np.bincount(chain.fold_of(30, seed=0, folds=3)).tolist() == [10, 10, 10]
    with pytest.raises(ToolkitError, match="folds >= 2"):
        chain.fold_of(10, 0, folds=1)
    with pytest.raises(ToolkitError, match="too few"):
        chain.fold_of(3, 0)


def test_no_intermediate_labels_the_inputs_it_was_trained_on():
    """Changing the incoming labels of one fold's examples leaves the labels the intermediate hands on for
    those very examples unchanged: they come from the probe trained on the other fold."""
    sup, m1, _, _ = _setup()
    n = len(sup.splits.strong_train)
    fold = chain.fold_of(n, sup.seed)
    _, before = chain.relabel(m1, sup, model="m1", weak="w", Cs=(0.1,))
    poisoned_p = sup.soft("strong_train").copy()
    poisoned_p[fold == 0] = 1 - poisoned_p[fold == 0]  # flip every incoming label of fold 0
    poisoned = Supervision(sup.seed, sup.splits, [r.with_(p=poisoned_p) if r.split == "strong_train" else r
                                                  for r in sup.weak])
    _, after = chain.relabel(m1, poisoned, model="m1", weak="w", Cs=(0.1,))
    b, a = (next(r for r in rs if r.split == "strong_train").p for rs in (before, after))
    np.testing.assert_array_equal(a[fold == 0], b[fold == 0])  # fold 0 is labelled by the fold-1 probe
    assert not np.allclose(a[fold == 1], b[fold == 1])  # fold 1's labeller did see the flipped labels


def test_bootstrap_records_and_chain_accuracy(tmp_path):
    sup, m1, m2, gold = _setup()
    sups, inter, name = chain.bootstrap([sup], [("m1", m1)], first="w", Cs=(0.01, 1.0), cache_dir=tmp_path)
    assert name == "m1" and len(inter) == 3
    assert {(r.weak, r.chain, r.strong, r.role, r.setting) for r in inter} == {("w", "", "m1", "student", "crossfit")}
    assert all(r.extra["intermediate"] and len(r.extra["layers"]) == 2 for r in inter)
    np.testing.assert_array_equal(sups[0].soft("val"), inter[1].aligned(sup.splits.val.ids))
    same, none, first = chain.bootstrap([sup], [], first="w")
    assert same[0] is sup and none == [] and first == ""
    # A final probe student on the chain's labels, one on the direct labels, and the ceiling.
    final = []
    for s, via in ((sups[0], name), (sup, "")):
        final.append(Predictions(task="synthetic", weak="w", chain=via, strong="m2", method="probe", role="student",
                                 loss="xent", setting="select", seed=0, split="test", ids=sup.splits.test.ids,
                                 p=s.soft("test")))
    ceiling = final[1].with_(role="ceiling", p=np.array([gold[i] for i in sup.splits.test.ids], dtype=float))
    recs = sup.weak + inter + final + [ceiling]
    ch = diagnostics.chain_accuracy(recs, gold)
    assert ch.model.tolist() == ["w", "m1", "m2"] and ch.step.tolist() == [0, 1, 2]
    assert ch.ceiling_accuracy.iloc[-1] == 1.0 and np.isfinite(ch.direct_accuracy.iloc[-1])
    summ = records.summary(recs, gold, n_boot=20)
    assert set(summ.weak) == {"w"} and set(summ.chain) == {"", "m1"}  # bootstrapped beside direct, both against w
    assert summ.weak_acc.nunique() == 1 and summ.ceiling_acc.nunique() == 1
    diag = diagnostics.table(recs, gold)
    boot = diag[(diag.chain == "m1") & (diag.diagnostic == "agree")]
    assert len(boot) == 1  # agreement of the bootstrapped student with its immediate supervisor, m1
    from toolkit import plots

    assert len(plots.chain_accuracy(ch).axes) == 1


def test_a_stored_step_is_reused_and_equal(tmp_path, monkeypatch):
    sup, m1, _, _ = _setup()
    first = chain.bootstrap([sup], [("m1", m1)], first="w", Cs=(0.1,), cache_dir=tmp_path)
    assert len(list((tmp_path / "runs" / "chain").glob("*.npz"))) == 1
    monkeypatch.setattr(chain, "fit_many", lambda *a, **k: (_ for _ in ()).throw(AssertionError("refitted")))
    again = chain.bootstrap([sup], [("m1", m1)], first="w", Cs=(0.1,), cache_dir=tmp_path)
    for a, b in zip(first[1], again[1]):
        assert a.key() == b.key() and a.extra == b.extra
        np.testing.assert_array_equal(a.p, b.p)
    np.testing.assert_array_equal(first[0][0].soft("val"), again[0][0].soft("val"))
