"""The label-free methods (ccs, crc, pca, random; `toolkit.directions`): equal to EleutherAI/elk-generalization's
CCS and CRC on the same inputs (tests/fixtures/elk_reference.py made the numbers with their code), the Platt fit
that gives a direction its sign, and a comparison that holds every method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from toolkit import compare, directions
from toolkit.ccs import ccs_loss, fit_direction
from toolkit.crc import crc_direction
from toolkit.pca import top_direction

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ref():
    import sys

    sys.path.insert(0, str(FIXTURES))
    try:
        from elk_reference import inputs
    finally:
        sys.path.pop(0)
    return inputs(), json.loads((FIXTURES / "elk_reference.json").read_text())


def _t(a):
    return torch.as_tensor(a, dtype=torch.float64)


def test_the_ccs_loss_equals_the_reference(ref):
    x, out = ref
    assert float(ccs_loss(_t(x["logits"][0]), _t(x["logits"][1]))) == pytest.approx(out["ccs_loss"], abs=1e-12)


def test_the_ccs_fit_from_the_same_start_equals_the_reference(ref):
    x, out = ref
    pairs = _t(x["pairs"])
    x0, x1 = (h - h.mean(0) for h in pairs.unbind(1))  # centred per completion: the reference's `meanonly`
    for start, want in zip(x["starts"], out["ccs_fits"]):
        w, b, loss = fit_direction(x0, x1, _t(start[:-1]), _t(start[-1]))
        np.testing.assert_allclose(w.numpy(), want["w"], atol=1e-6)
        assert float(b) == pytest.approx(want["b"], abs=1e-6)
        assert loss == pytest.approx(want["loss"], abs=1e-9)


def test_the_crc_direction_and_scores_equal_the_reference_up_to_sign(ref):
    x, out = ref
    pairs, evals = _t(x["pairs"]), _t(x["evals"])
    w, eraser = crc_direction(pairs[:, 0], pairs[:, 1])
    sign = float(np.sign(w.numpy() @ np.asarray(out["crc_direction"])))
    np.testing.assert_allclose(sign * w.numpy(), out["crc_direction"], atol=1e-6)
    scores = (eraser(evals[:, 1]) - eraser(evals[:, 0])) @ w
    np.testing.assert_allclose(sign * scores.numpy(), out["crc_scores"], atol=1e-6)


def test_the_directions_find_the_planted_truth(ref):
    """On the fixture's pairs the truth flips which completion carries +v: CCS and CRC must separate it (with a
    sign the weak labels give), a random direction need not."""
    x, _ = ref
    truth = x["truth"]
    pairs = x["pairs"][None].transpose(0, 2, 1, 3)  # (L=1, 2, N, D)
    train = (pairs[:, 0], pairs[:, 1])
    evals = {"strong_train": train, "val": train, "test": train}
    for method in ("ccs", "crc"):
        m = compare.methods_mod.get(method)
        raw = m.scores(train, evals, m.Options(), seed=0, device="cpu")
        p = directions.calibrated(raw, truth.astype(float))
        assert ((p["test"][0] > 0.5) == truth).mean() > 0.95, method


def test_platt_gives_the_sign_and_scale_the_weak_labels_agree_with():
    g = np.random.default_rng(0)
    s = g.standard_normal(2000)
    y = (g.random(2000) < 1 / (1 + np.exp(-(-3.0 * s + 0.5)))).astype(float)
    a, b = directions.platt(np.stack([s, -s]), y)
    # the minimum of the same objective on standardised scores, found by scipy instead of Newton's method
    from scipy.optimize import minimize

    z = (s - s.mean()) / s.std()

    def nll(ab):
        logits = ab[0] * z + ab[1]
        return (np.logaddexp(0, logits) - y * logits).mean() + directions.PLATT_RIDGE * ab[0] ** 2 / 2

    ref = minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-12}).x
    assert a[0] == pytest.approx(ref[0], abs=1e-4) and b[0] == pytest.approx(ref[1], abs=1e-4)
    assert a[1] == pytest.approx(-a[0]) and b[1] == pytest.approx(b[0])  # a flipped score: the sign flips


def test_pca_finds_the_direction_of_most_variance():
    g = np.random.default_rng(1)
    X = g.standard_normal((500, 6)) * [5, 1, 1, 1, 1, 1]
    assert abs(top_direction(X)[0]) > 0.99


def test_compare_holds_every_label_free_method(tiny_causal, tiny_task, tmp_path):
    out = tmp_path / "run"
    args = ["--task", str(tiny_task), "--weak", "tfidf", "--strong", str(tiny_causal), "--seeds", "2",
            "--sizes", "10,10,6,10", "--methods", "probe,ccs,crc,pca,random,prompt_random", "--ccs-tries", "2",
            "--random-ks", "2",
            "--n-boot", "20", "--cache-dir", str(tmp_path / "c"), "--quiet", "--out", str(out)]
    assert compare.main(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.method) == {"probe", "ccs", "crc", "pca", "random", "prompt_random"}
    report = (out / "report.md").read_text()
    assert all(f"`{m}`" in report for m in ("ccs", "crc", "pca", "random", "prompt_random"))
    results = pd.read_csv(out / "results.csv")
    layers = results[(results.method == "ccs") & results.setting.str.startswith("layer=")]
    assert layers.setting.nunique() > 1  # the layer curve is in the results


def test_random_demonstration_labels_are_balanced_seeded_and_not_the_gold():
    from toolkit.prompt_random import random_labels

    a = random_labels(101, 0)
    assert (a == random_labels(101, 0)).all() and not (a == random_labels(101, 1)).all()
    assert a.sum() == 50  # half per class, the odd one 0
    gold = np.arange(101) % 2
    assert 0.3 < (a == gold).mean() < 0.7  # about half agree with any fixed labelling


def test_the_unsupervised_preset_runs_every_label_free_method_found_by_the_registry():
    assert compare.preset("unsupervised").methods == ("probe", "ccs", "crc", "pca", "random", "prompt_random")


def test_no_other_module_names_the_label_free_methods():
    """The registry finds them (entry points): no other module imports their files or writes their names (`random`
    is a common word, so only its module is looked for)."""
    import ast

    root = Path(compare.__file__).parent
    modules = {"ccs", "crc", "pca", "random_direction", "prompt_random"}
    for path in root.glob("*.py"):
        if path.stem in modules | {"directions"}:
            continue
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[-1] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "toolkit"
                     for a in n.names}
        imported |= {n.module.split(".")[-1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not imported & modules, (path.name, imported & modules)
        assert not strings & {"ccs", "crc", "pca", "random_direction", "prompt_random"}, path.name


@pytest.mark.parametrize("name", ["ccs", "crc", "pca", "random"])
def test_a_label_free_student_sees_no_gold(name, tiny_causal, tiny_task, tmp_path):
    """Flip every gold label outside weak_train (the weak labels stay, since the supervisor learns on weak_train):
    the students' records do not move; only the gold ceiling does."""
    from test_methods import _context

    ctx = _context(tiny_causal, tiny_task, tmp_path / "cache")
    method = compare.methods_mod.get(name)
    opts = method.Options(ccs_tries=2, ccs_max_iter=50) if name == "ccs" else method.Options()
    feats = method._features(ctx)
    sup = ctx.sups[0]
    a, b = (method.fit_seed(ctx, feats, s, opts) for s in (sup, compare.methods_mod._gold_flipped(sup)))
    students = [(x, y) for x, y in zip(a, b) if x.role == "student"]
    assert students and all(np.array_equal(x.p, y.p) for x, y in students)
    ceilings = [(x, y) for x, y in zip(a, b) if x.role == "ceiling"]  # every layer's: the gold did reach them
    assert any(not np.array_equal(x.p, y.p) for x, y in ceilings)


def test_random_label_prompting_sees_no_gold(tiny_causal, tiny_task, tmp_path):
    from dataclasses import replace

    from test_methods import _context

    ctx = _context(tiny_causal, tiny_task, tmp_path / "cache")
    method = compare.methods_mod.get("prompt_random")
    sup = ctx.sups[0]
    flipped = replace(ctx, sups=(compare.methods_mod._gold_flipped(sup),))
    a, b = (method.run(c, method.Options(random_ks=(2,))).records for c in (replace(ctx, sups=(sup,)), flipped))
    students = [(x, y) for x, y in zip(a, b) if x.role == "student"]
    assert students and all(np.array_equal(x.p, y.p) and x.extra == y.extra for x, y in students)
    assert all(x.method == "prompt_random" for x in a)


def test_bad_ccs_options_fail_in_one_line(capsys, tiny_task, tmp_path):
    args = ["--task", str(tiny_task), "--methods", "ccs", "--ccs-tries", "0", "--cache-dir", str(tmp_path)]
    assert compare.main(args) == 2
    assert "ccs needs ccs_tries >= 1" in capsys.readouterr().err
