"""The probe path end to end on a real task subset with the real default models (from the cache)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import compare, probe, records, tasks
from toolkit._util import ToolkitError, cache_root
from toolkit.weak import solver

NAMES = {"weak": "minilm-l6", "strong": "smollm2-135m"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def probe_run(real_models_cache):
    for name in ("minilm-l6", "smollm2-135m"):
        if not (cache_root() / "models" / name).exists():
            pytest.skip(f"{name} not installed (run `make setup`)")
    cfg = compare.CompareConfig.make(tasks="sentiment", methods="probe", seeds=2, limit=160,
                                     sizes=tasks.SplitSizes(40, 48, 24, 40), Cs=(0.01, 1.0),
                                     cache_dir=str(real_models_cache))
    store = cache_root(cfg.job.cache_dir) / "runs" / "probe"
    before = set(store.glob("*.npz"))  # the shared cache may hold other tests' probe runs
    result = compare.run_config(cfg, progress=False)
    return cfg, result, result.labels["sentiment"], sorted(set(store.glob("*.npz")) - before)


def _rerun(cfg):
    return compare.run_config(cfg, progress=False).records


def test_every_role_on_the_same_fixed_test_pool(probe_run):
    cfg, result, labels, _ = probe_run
    recs = result.records
    test = [r for r in recs if r.split == "test"]
    assert {r.role for r in test} == {"weak", "student", "ceiling", "control"}
    assert {r.loss for r in test if r.role == "student"} == set(cfg.losses)
    assert len({r.ids for r in test}) == 1  # one test pool for every method, loss and seed
    n_layers = 31
    per_seed = [r for r in test if r.seed == 0 and r.role == "student" and r.loss == "xent"]
    assert len(per_seed) == n_layers + 1  # every layer plus the selected one


def test_tidy_table_and_summary(probe_run, tmp_path):
    cfg, result, labels, _ = probe_run
    recs = result.records
    table = records.table(recs, labels)
    assert list(table.columns) == records.ROW_COLUMNS
    chosen = table[(table.setting == "select") & (table.metric == "layer")]
    assert chosen.value.between(0, 30).all()
    per_layer = [r for r in recs if r.method == "probe" and r.role != "weak" and r.setting != "select"]
    assert per_layer and all(r.setting == f"layer={r.params['layer']}" for r in per_layer)
    result.write(tmp_path, figures=False)
    assert {"results.csv", "summary.csv", "baselines.csv", "predictions.csv.gz"} <= {p.name for p in tmp_path.iterdir()}
    summ = pd.read_csv(tmp_path / "summary.csv")
    sel = summ[summ.setting == "select"]
    assert len(sel) == len(cfg.losses) and sel.ceiling_acc.between(0, 1).all()
    # Layer 0 pools the embedding of the template's last token, the same for every example:
    # the sanity baseline carries no information, and its PGR is reported undefined with the reason.
    assert "layer=0" not in set(summ.setting)  # a sanity baseline has its own table, not a method's row
    emb = pd.read_csv(tmp_path / "baselines.csv")
    assert set(emb.setting) == {"layer=0"}
    assert np.allclose(emb.student_acc, 0.5) and emb.pgr_acc_note.str.contains("does not beat weak").all()


def test_students_never_see_gold(probe_run):
    """Student records are a function of the weak labels only: flipping strong_train gold changes
    the ceiling, never a student."""
    cfg, _, labels, _ = probe_run
    job = cfg.job
    task = tasks.subsample(tasks.load("sentiment"), job.limit, seed=0)
    from toolkit.extract import ExtractConfig, extract
    from toolkit.weak import WeakConfig, supervise

    (sup,) = supervise(task, [0], job.sizes, WeakConfig(), limit=job.limit, cache_dir=job.cache_dir, progress=False)
    feats = extract(ExtractConfig(model=job.strong[0], task="sentiment", limit=job.limit, cache_dir=job.cache_dir),
                    progress=False)
    flipped = sup.splits.strong_train.data.assign(label=1 - sup.splits.strong_train.data.label)
    poisoned_splits = tasks.Splits(sup.splits.weak_train, tasks.Task(**{**sup.splits.strong_train.__dict__,
                                                                      "data": flipped}),
                                   sup.splits.val, sup.splits.test, sup.seed, sup.splits.sizes)
    poisoned = type(sup)(sup.seed, poisoned_splits, sup.weak)
    args = (cfg.opts("probe"), cfg.losses, solver("cpu"), NAMES)
    a = probe.probe_students(feats, sup, *args)
    b = probe.probe_students(feats, poisoned, *args)
    for ra, rb in zip(a, b):
        assert ra.key() == rb.key()
        if ra.role == "student":
            np.testing.assert_array_equal(ra.p, rb.p)
    assert any(not np.array_equal(ra.p, rb.p) for ra, rb in zip(a, b) if ra.role == "ceiling")


def test_noise_control_has_the_supervisors_error_count(probe_run):
    """The control is trained on gold flipped at random with exactly the supervisor's number of errors."""
    cfg, result, labels, _ = probe_run
    recs, job = result.records, cfg.job
    task = tasks.subsample(tasks.load("sentiment"), job.limit, seed=0)
    from toolkit.weak import WeakConfig, supervise

    for sup in supervise(task, [0, 1], job.sizes, WeakConfig(), limit=job.limit, cache_dir=job.cache_dir,
                         progress=False):
        for split in ("strong_train", "val"):
            gold = sup.splits[split].labels
            weak_errors = int(((sup.soft(split) > 0.5) != (gold == 1)).sum())
            noisy = sup.noisy(split)
            assert int((noisy != gold).sum()) == weak_errors
            np.testing.assert_array_equal(noisy, sup.noisy(split))  # deterministic
            per_class = sup.noisy(split, per_class=True)
            for c in (0, 1):
                m = gold == c
                assert int((per_class[m] != c).sum()) == int(((sup.soft(split)[m] > 0.5) != c).sum())
    ctrl = [r for r in recs if r.role == "control" and r.setting == "select" and r.split == "test"]
    assert {(r.seed, r.loss) for r in ctrl} == {(s, loss) for s in (0, 1) for loss in cfg.losses}


def test_a_rerun_loads_the_stored_probes_and_a_damaged_store_is_refitted(probe_run, monkeypatch):
    cfg, result, labels, store = probe_run
    recs = result.records
    fits = []  # every probe fit goes through probe_students; a store hit does not
    real = probe.probe_students
    monkeypatch.setattr(probe, "probe_students", lambda *a, **k: fits.append(1) or real(*a, **k))
    again = _rerun(cfg)
    assert not fits
    assert [r.key() for r in again] == [r.key() for r in recs]
    for a, b in zip(again, recs):
        np.testing.assert_array_equal(a.p, b.p)
        assert a.extra == b.extra
    assert len(store) == len(cfg.job.seeds)
    store[0].write_bytes(store[0].read_bytes()[:-100])
    with pytest.warns(UserWarning, match="probe run store"):
        third = _rerun(cfg)
    assert len(fits) == 1
    for a, b in zip(third, recs):
        np.testing.assert_allclose(a.p, b.p, atol=1e-9)


def test_bad_loss_fails_before_any_work():
    with pytest.raises(ToolkitError, match="unknown loss"):
        compare.CompareConfig.make(methods="probe", losses=("xent", "nope"))


def _synthetic_seed(n_layers: int, d: int = 24, seed: int = 0):
    """A task of 120 examples whose label shows in every layer's features, one seed's splits and weak labels,
    and a features object with `take` and `layers` (what `probe_students` reads)."""
    import pandas as pd

    from toolkit.records import Predictions
    from toolkit.tasks import SplitSizes, Task, split
    from toolkit.weak import Supervision

    g = np.random.default_rng(seed)
    n = 120
    labels = np.arange(n) % 2
    ids = [f"{i:04d}" for i in range(n)]
    task = Task("synthetic", pd.DataFrame({"id": ids, "text": [f"t{i}" for i in range(n)], "label": labels}),
                "{text}\nA:", (" No", " Yes"))
    H = g.normal(size=(n_layers, n, d)).astype(np.float32) + labels[None, :, None] * 0.5

    class Feats:
        layers = list(range(1, n_layers + 1))

        def take(self, want):
            return H[:, [ids.index(i) for i in want]]

    splits = split(task, seed, SplitSizes(20, 40, 20, 40))
    weak = [Predictions("synthetic", "w", "w", "probe", "weak", "xent", "select", seed, s, tuple(splits[s].ids),
                        np.clip(splits[s].labels * 0.6 + 0.2 + g.normal(0, 0.2, len(splits[s])), 0.01, 0.99))
            for s in ("strong_train", "val", "test")]
    return Feats(), Supervision(seed, splits, weak)


def test_probes_send_each_splits_features_to_the_device_once_per_seed(monkeypatch):
    """The torch engine (what a GPU runs; here on the CPU) moves each student split's features to the device once
    per seed, however many layers, Cs, losses and folds are fitted on them, and its host syncs do not grow with
    the number of layers solved together."""
    import torch

    from toolkit import linear

    sent, syncs = [], [0]
    real = linear._to_device
    monkeypatch.setattr(linear, "_to_device", lambda a, device: sent.append(np.shape(a)) or real(a, device))
    for name in ("__bool__", "item", "cpu", "tolist"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, **k):
            syncs[0] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    opts = probe.ProbeOptions(Cs=(0.1, 1.0))
    by_layers = {}
    for n_layers in (2, 6):
        sent.clear()
        syncs[0] = 0
        feats, sup = _synthetic_seed(n_layers)
        recs = probe.probe_students(feats, sup, opts, ("xent", "logconf"), solver("cpu", "torch"), NAMES)
        assert {r.role for r in recs} == {"student", "control", "ceiling"}
        big = sorted(s for s in sent if len(s) == 3)  # one (L, n, d) transfer per split: strong_train, val, test
        assert big == sorted([(n_layers, 40, 24), (n_layers, 20, 24), (n_layers, 40, 24)])
        by_layers[n_layers] = syncs[0]
    assert by_layers[6] <= 1.5 * by_layers[2], by_layers  # 3x the probes in each solve, about the same syncs
