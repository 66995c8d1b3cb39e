"""The main job end to end on tiny random-init models and a small local task: every method on the same
splits and weak labels, every output file, a rerun that trains nothing, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import save_tiny_causal

from toolkit import compare, finetune, prompt, report, tasks, trainer
from toolkit._util import ToolkitError
from toolkit.tasks import SplitSizes

SIZES = SplitSizes(10, 10, 6, 10)


@pytest.fixture(scope="module")
def models(tiny_causal, tmp_path_factory):
    return str(tiny_causal), str(save_tiny_causal(tmp_path_factory.mktemp("tiny3"), seed=1, n_layers=3))


@pytest.fixture(scope="module")
def first(models, tiny_task, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("out")
    result = compare.run(str(tiny_task), weak=models[0], strong=models, seeds=2, finetune_seeds=1, sizes=SIZES,
                         ks=(0, 2), epochs=1, n_boot=50, cache_dir=str(cache), out=out, progress=False)
    return result, out, cache


def test_every_method_on_the_same_splits_and_weak_labels(first, models):
    result, _, _ = first
    recs = result.records
    assert {r.method for r in recs if r.role == "student"} == {"probe", "prompt", "finetune"}
    assert {r.strong for r in recs if r.role == "student"} == set(models)
    weak = [r for r in recs if r.role == "weak"]
    assert len({(r.seed, r.split) for r in weak}) == len(weak)  # one supervisor per seed, shared by every method
    tests = [r for r in recs if r.split == "test"]
    assert len({r.ids for r in tests}) == 1  # one fixed test pool
    for method in ("probe", "prompt", "finetune"):  # each seed's val split is the supervisor's val split
        for r in (r for r in recs if r.method == method and r.split == "val" and r.role == "student"):
            sup = next(w for w in weak if w.seed == r.seed and w.split == "val")
            assert set(r.ids) == set(sup.ids)
    ft_seeds = {r.seed for r in recs if r.method == "finetune"}
    assert ft_seeds == {0}  # finetune_seeds=1


def test_summary_rows_and_files(first, models):
    result, out, _ = first
    summ = result.summary
    assert set(summ.method) == {"probe", "prompt", "finetune"}
    assert set(summ.setting) == {"select", "k=2", "k=2,cal", "best", "final"}
    # the input-embedding sanity baseline is in its own table, file and section, never among the methods' rows
    assert set(result.baselines.setting) == {"layer=0"} and set(result.baselines.method) == {"probe"}
    assert (summ[summ.method == "finetune"].n_seeds == 1).all() and (summ[summ.method == "probe"].n_seeds == 2).all()
    undefined = summ.pgr_acc.isna()
    assert (summ.pgr_acc_note[undefined] != "").all()  # an undefined PGR always says why
    names = {p.name for p in out.iterdir()}
    assert {"results.csv", "summary.csv", "baselines.csv", "diagnostics.csv", "diagnostics_summary.csv",
            "predictions.csv.gz",
            "curves.csv", "report.md", "pgr_accuracy.png", "agreement.png", "accuracy_vs_size.png",
            "layers.png", "finetune_curves.png", "noise_control.png", "misfit.png"} <= names
    report = (out / "report.md").read_text()
    for figure in (n for n in names if n.endswith(".png")):
        assert f"]({figure})" in report
    assert "## Settings" in report and "## Versions" in report and "torch" in report
    assert "## Sanity baselines" in report and "| layer=0 |" not in report.split("## Sanity baselines")[0]
    diag = pd.read_csv(out / "diagnostics.csv")
    assert {"agree", "agree_weak_right", "agree_weak_wrong", "misfit", "gain", "ece"} <= set(diag.diagnostic)
    assert {"student", "control", "ceiling"} <= set(diag.role)
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == ["task", "weak", "chain", "strong", "method", "role", "loss", "setting", "seed",
                                     "split", "metric", "value"]


def test_a_rerun_trains_nothing_and_gives_the_same_tables(first, models, tiny_task, monkeypatch, tmp_path):
    result, out, cache = first

    def no_model(*a, **k):
        raise AssertionError("a rerun must not load a model")

    monkeypatch.setattr(prompt, "load_model", no_model)
    again = compare.run(str(tiny_task), weak=models[0], strong=models, seeds=2, finetune_seeds=1, sizes=SIZES,
                        ks=(0, 2), epochs=1, n_boot=50, cache_dir=str(cache), out=tmp_path, progress=False,
                        figures=False)
    assert not list(tmp_path.glob("*.png")) and "## Figures" not in (tmp_path / "report.md").read_text()
    assert again.stats == {"probe_seeds_fitted": 0, "prompts_scored": 0, "finetunes_trained": 0,
                           "models_built_for_extraction": 0}
    pd.testing.assert_frame_equal(again.summary, result.summary)
    pd.testing.assert_frame_equal(again.results, result.results)
    assert (tmp_path / "summary.csv").read_bytes() == (out / "summary.csv").read_bytes()
    assert (tmp_path / "diagnostics.csv").read_bytes() == (out / "diagnostics.csv").read_bytes()


def test_a_changed_text_under_the_same_id_recomputes_every_method(models, tmp_path):
    """Every stored artefact is keyed by the texts it was computed from (issue #32): rewrite one test text of an
    id-keyed file, keeping its id, and the features, probes, prompt scores and fine-tuning runs are all computed
    afresh (before, all but prompting served the old text's results); the unchanged file is served whole."""
    path = tmp_path / "ids.csv"
    rows = pd.DataFrame({"id": [f"r{i}" for i in range(40)],
                         "text": [f"review {i} was {'fine' if i % 2 else 'dull'} overall" for i in range(40)],
                         "label": [i % 2 for i in range(40)]})
    rows.to_csv(path, index=False)
    opts = dict(weak=models[0], strong=models[0], seeds=1, finetune_seeds=1, sizes=SIZES, ks=(0, 2), epochs=1,
                n_boot=20, losses=("xent",), control=False, cache_dir=str(tmp_path / "cache"), progress=False,
                figures=False)
    cold = compare.run(str(path), **opts)
    assert compare.run(str(path), **opts).stats == dict.fromkeys(cold.stats, 0)
    test_id = next(r for r in cold.records if r.split == "test").ids[0]
    rows.loc[rows.id == test_id, "text"] = "a wholly different sentence"
    rows.to_csv(path, index=False)
    warm = compare.run(str(path), **opts)
    assert warm.stats == cold.stats and all(v > 0 for v in warm.stats.values()), warm.stats
    assert compare.run(str(path), **opts).stats == dict.fromkeys(cold.stats, 0)


def test_a_task_too_small_for_the_default_splits_gets_them_scaled(models, tiny_task, tmp_path):
    """With no --sizes, a task too small for 500/500/200/500 (here 40 examples) runs with the same proportions
    scaled to fit (`tasks.default_sizes`); report.md says which sizes ran."""
    result = compare.run(str(tiny_task), weak=models[0], strong=models[0], methods=("probe",), seeds=1, n_boot=20,
                         losses=("xent",), control=False, cache_dir=str(tmp_path / "cache"), out=tmp_path / "out",
                         progress=False, figures=False)
    assert result.config.job.sizes is None and list(result.split_sizes.values()) == [SplitSizes(10, 10, 4, 10)]
    assert "weak_train=10, strong_train=10, val=4, test=10 (each task's default)" in \
        (tmp_path / "out" / "report.md").read_text()


def test_cli_prints_the_summary_and_rejects_bad_input(first, models, tiny_task, capsys, tmp_path):
    _, _, cache = first
    args = ["--task", str(tiny_task), "--weak", models[0], "--strong", models[0], "--seeds", "2",
            "--finetune-seeds", "1", "--sizes", "10,10,6,10", "--ks", "0,2", "--epochs", "1", "--n-boot", "50",
            "--cache-dir", str(cache), "--quiet"]
    assert compare.main(args + ["--out", str(tmp_path / "cli"), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "PGR acc" in printed and "k=2,cal" in printed and "finetune" in printed
    assert (tmp_path / "cli" / "report.md").exists() and not list((tmp_path / "cli").glob("*.png"))
    # --min-gap: no gap here reaches 0.99, so every PGR is undefined, each saying so
    assert compare.main(args + ["--out", str(tmp_path / "strict"), "--no-figures", "--min-gap", "0.99"]) == 0
    strict = pd.read_csv(tmp_path / "strict" / "summary.csv")
    assert strict.pgr_acc.isna().all() and strict.pgr_acc_note.str.contains("≤ 0.990").all()
    assert "beats weak by 0.99 or less" in (tmp_path / "strict" / "report.md").read_text()
    for bad, message in ((["--methods", "probe,magic"], "unknown method"), (["--losses", "nope"], "unknown loss"),
                         (["--ks", "0,3"], "even"), (["--sizes", "1,2"], "--sizes"), (["--min-gap", "1.5"], "min_gap")):
        assert compare.main(args + bad) == 2
        assert message in capsys.readouterr().err


def test_records_keep_the_one_pass_order(first):
    """Seed 0's cheap methods run first (`compare._phases`), but the records, and so results.csv, are in the
    order of one pass over the methods, seed by seed."""
    result, _, _ = first
    rank = {m: i for i, m in enumerate(result.config.methods)}
    for strong in result.config.job.strong:
        keys = [(rank[r.method], r.seed) for r in result.records if r.role != "weak" and r.strong == strong]
        assert keys == sorted(keys)


def test_phases_put_seed_0_of_the_cheap_methods_first():
    cfg = compare.CompareConfig.make(seeds=3, finetune_seeds=2)
    sups = ["s0", "s1", "s2"]
    assert compare._phases(cfg, sups) == [(["s0"], ("probe", "prompt")), (["s1", "s2"], ("probe", "prompt")),
                                          (["s0", "s1"], ("finetune",))]
    assert compare._phases(compare.CompareConfig.make(seeds=1, methods=("probe",)), sups[:1]) == [(["s0"], ("probe",))]
    assert compare._phases(compare.CompareConfig.make(methods=("finetune",), finetune_seeds=0), sups) == [
        (sups, ("finetune",))]


def test_a_cold_run_says_how_long_it_takes_and_shows_seed_0_first(models, tiny_task, capsys, tmp_path):
    args = ["--task", str(tiny_task), "--weak", models[0], "--strong", models[0], "--seeds", "2",
            "--sizes", "10,10,6,10", "--ks", "0,2", "--epochs", "1", "--n-boot", "20", "--no-control",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--no-figures"]
    assert compare.main(args) == 0
    captured = capsys.readouterr()
    err = captured.err
    marks = ["expected in all: about", "first results after", "on seed(s) 1; ETA at seed 0's pace: probe ~",
             "finetune on seed(s) 0; ETA (estimate): finetune ~"]
    at = [err.find(m) for m in marks]
    assert all(a >= 0 for a in at) and at == sorted(at), err
    early = err[at[1]:at[2]]
    assert "prompt" in early and "probe" in early and "finetune" not in early.split("\n", 1)[1]
    assert "PGR acc" in captured.out and "finetune" in captured.out  # the full table, at the end
    capsys.readouterr()
    assert compare.main(args) == 0  # warm: no estimate (it would load a model), the same early table
    err = capsys.readouterr().err
    assert "expected in all" not in err and "first results after" in err


def test_probes_with_the_torch_engine_match_the_numpy_engine(first, models, tiny_task, tmp_path):
    """The GPU path of the probes, on the CPU: the weak supervisor, students, controls and ceiling fitted by the
    batched torch engine give the numpy engine's probabilities to 1e-5 on the same features."""
    result, _, _ = first
    torch_run = compare.run(str(tiny_task), weak=models[0], strong=models[0], methods=("probe",), seeds=2,
                            sizes=SIZES, n_boot=20, probe_engine="torch", cache_dir=str(tmp_path), progress=False,
                            figures=False)
    ours = {r.key(): r for r in torch_run.records}
    theirs = [r for r in result.records if r.key() in ours]
    assert len(theirs) == len(ours) > 50  # every weak, student, control and ceiling record of every layer
    for r in theirs:
        np.testing.assert_allclose(ours[r.key()].aligned(r.ids), r.p, atol=1e-5)
    with pytest.raises(ToolkitError, match="probe engine must be one of auto, numpy, torch"):
        compare.CompareConfig.make(probe_engine="jax")


def test_every_fine_tuning_field_is_a_compare_option():
    """Every `FinetuneConfig` field can be set from `compare` (issue #34): its training fields are the method's
    options, and the rest is the job itself (one config per method, issue #36)."""
    import dataclasses

    train = {f.name for f in dataclasses.fields(trainer.TrainOptions)}
    assert {f.name for f in dataclasses.fields(trainer.FinetuneConfig)} == train | {"job", "model"}
    assert train <= {f.name for f in dataclasses.fields(finetune.FinetuneOptions)}
    cfg = compare.CompareConfig.make(lr=2e-5, batch_size=16, weak_options="lr=1e-4", dtype="float32")
    run = finetune.options_config(cfg.job, cfg.opts("finetune"), "s")
    weak = finetune.options_config(cfg.job, cfg.opts("finetune"), "w", weak=True)
    assert (run.lr, run.batch_size, weak.lr, weak.batch_size) == (2e-5, 16, 1e-4, 16)
    assert (run.model, weak.model, run.job.dtype) == ("s", "w", "float32")


def test_config_errors_are_clear():
    with pytest.raises(ToolkitError, match="unknown method"):
        compare.CompareConfig.make(methods=("probe", "sft"))
    with pytest.raises(ToolkitError, match="at least one task"):
        compare.CompareConfig.make(tasks=())
    cfg = compare.CompareConfig.make(tasks="a,b", strong="x, y", ks="0,4")
    assert cfg.job.tasks == ("a", "b") and cfg.job.strong == ("x", "y") and cfg.opts("prompt").ks == (0, 4)
    assert cfg.summary_settings() == {"probe": ("select",), "prompt": ("k=4", "k=4,cal"), "finetune": ("best", "final")}
    assert cfg.baseline_settings() == {"probe": ("layer=0",)}


def test_markdown_table_escapes_and_formats():
    df = pd.DataFrame({"a": ["x|y"], "b": [0.12345], "c": [np.nan]})
    assert report.markdown_table(df).splitlines() == ["| a | b | c |", "|---|---|---|", "| x\\|y | 0.123 |  |"]


def test_a_chain_of_two_is_the_direct_comparison(first, models, tiny_task):
    _, _, cache = first
    opts = dict(seeds=2, sizes=SIZES, n_boot=50, cache_dir=str(cache), progress=False, methods=("probe", "prompt"),
                ks=(0, 2))
    direct = compare.run(str(tiny_task), weak=models[0], strong=models[1], **opts)
    chained = compare.run(str(tiny_task), chain=(models[0], models[1]), **opts)
    assert [r.key() for r in chained.records] == [r.key() for r in direct.records]
    for a, b in zip(chained.records, direct.records):
        np.testing.assert_array_equal(a.p, b.p)
    pd.testing.assert_frame_equal(chained.summary, direct.summary)


def test_a_bootstrapped_run_sits_beside_the_direct_one(first, models, tiny_task, tmp_path):
    _, _, cache = first
    mid = models[0]
    weak = "tfidf"  # the bag-of-words supervisor starts the chain
    result = compare.run(str(tiny_task), chain=(weak, mid, models[1]), seeds=2, sizes=SIZES, n_boot=50,
                         cache_dir=str(cache), progress=False, methods=("probe",), out=tmp_path)
    summ = result.summary
    assert set(summ.weak) == {weak} and set(summ.chain) == {"", mid}
    for _, g in summ.groupby(["method", "loss", "setting"]):  # same weak model and same ceiling for both
        assert len(g) == 2 and g.weak_acc.nunique() == 1 and g.ceiling_acc.nunique() == 1
    inter = [r for r in result.records if r.setting == "crossfit"]
    assert {(r.weak, r.chain, r.strong) for r in inter} == {(weak, "", mid)} and {r.seed for r in inter} == {0, 1}
    assert (tmp_path / "chain.png").exists()
    assert f"| {mid} |" in (tmp_path / "report.md").read_text()  # the chain column of the summary
    with pytest.raises(ToolkitError, match="starts with the weak model"):
        compare.CompareConfig.make(weak="a", chain=("b", "c"))
    with pytest.raises(ToolkitError, match="tfidf can only start"):
        compare.CompareConfig.make(chain=("a", "tfidf", "c"))


def test_presets_resolve_and_cli_options_override_them(monkeypatch):
    cfg = compare.preset("ladder")
    assert cfg.job.strong == compare.LADDER and cfg.job.tasks == compare.STUDY_TASKS and cfg.job.limit == 2000
    assert compare.preset("bootstrap").job.strong == ("gemma3-270m",)
    nlp = compare.preset("openai-nlp")  # openai's sweep: needs a GPU and the network to run, resolves anywhere
    ft = nlp.opts("finetune")
    assert nlp.job.protocol == "paper" and ft.recipe == "paper" and ft.headline == "final" and nlp.job.limit is None
    assert nlp.job.weak == "openai-community/gpt2" and nlp.job.tasks[0] == "openai:sciq" and ft.max_length == 1024
    assert nlp.opts("prompt").max_length == 0  # the preset's max_length is fine-tuning's, keyed by method
    assert compare.preset("openai-nlp", finetune={"lr": 1e-5}).opts("finetune").max_length == 1024  # added to
    # quick is the default comparison without fine-tuning, its expensive arm
    assert compare.preset("quick") == compare.CompareConfig.make(methods=("probe", "prompt"))
    with pytest.raises(ToolkitError, match="unknown preset 'huge'"):
        compare.preset("huge")
    seen = {}

    class Stop(Exception):
        pass

    def capture(cfg, **kw):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(compare, "run_config", capture)
    with pytest.raises(Stop):
        compare.main(["--preset", "ladder", "--seeds", "2", "--quiet"])
    job = seen["cfg"].job
    assert job.seeds == (0, 1) and job.strong == compare.LADDER and job.limit == 2000


def test_one_method_alone_writes_its_tables_and_figures(first, models, tiny_task, tmp_path, finetune_runs):
    """A fine-tune-only comparison (the ladder-finetune preset) has no layer sweep or prompt: the figures
    that need them are left out, the rest are written. Every run is loaded from the first call's cache."""
    _, _, cache = first
    before = finetune_runs.trainings
    result = compare.run(str(tiny_task), weak=models[0], strong=models[0], methods=("finetune",), seeds=2,
                         finetune_seeds=1, sizes=SIZES, epochs=1, n_boot=50, cache_dir=str(cache), out=tmp_path,
                         progress=False)
    assert finetune_runs.trainings == before
    assert set(result.summary.method) == {"finetune"}
    names = {p.name for p in tmp_path.iterdir()}
    assert {"summary.csv", "report.md", "pgr_accuracy.png", "finetune_curves.png"} <= names
    assert "layers.png" not in names and "fine-tuning: fp32 weights" in (tmp_path / "report.md").read_text()


def test_a_fine_tuned_weak_supervisor_runs_end_to_end(first, models, tiny_task, tmp_path, capsys, finetune_runs):
    """--weak-method finetune: the weak model is fine-tuned on each seed's weak_train gold and its final model
    labels the other splits; the students train on those labels, and a rerun trains nothing."""
    _, _, cache = first
    args = ["--task", str(tiny_task), "--weak", models[0], "--strong", models[1], "--weak-method", "finetune",
            "--seeds", "2", "--finetune-seeds", "1", "--sizes", "10,10,6,10", "--methods", "probe,finetune",
            "--epochs", "1", "--n-boot", "20", "--cache-dir", str(cache), "--quiet", "--no-figures"]
    before = finetune_runs.trainings
    assert compare.main(args + ["--out", str(tmp_path / "a")]) == 0
    # the weak model per seed and seed 0's two students; the ceiling sees gold only: the first comparison's, loaded
    assert finetune_runs.trainings - before == 2 + 2
    preds = pd.read_csv(tmp_path / "a" / "predictions.csv.gz", dtype={"id": str})
    weak = preds[preds.role == "weak"]
    assert set(weak.method) == {"finetune"} and set(weak.setting) == {"final"} and set(weak.strong) == {models[0]}
    assert set(weak.split) == {"strong_train", "val", "test"} and set(weak.seed) == {0, 1}
    assert "fine-tuned on weak_train gold" in (tmp_path / "a" / "report.md").read_text()
    summary = pd.read_csv(tmp_path / "a" / "summary.csv")
    assert set(summary.method) == {"probe", "finetune"} and (summary.weak_acc > 0).all()
    # the probe weak supervisor gives other labels: the weak model's runs differ from the default comparison's
    probe_weak = [r for r in first[0].records if r.role == "weak" and r.seed == 0 and r.split == "test"][0]
    ours = weak[(weak.seed == 0) & (weak.split == "test")].set_index("id").p
    assert not np.allclose(ours.loc[list(probe_weak.ids)].to_numpy(), probe_weak.p)
    before = finetune_runs.trainings
    assert compare.main(args + ["--out", str(tmp_path / "b")]) == 0
    assert finetune_runs.trainings == before
    assert (tmp_path / "a" / "summary.csv").read_bytes() == (tmp_path / "b" / "summary.csv").read_bytes()
    assert compare.main(args + ["--weak", "tfidf"]) == 2 and "not a model to fine-tune" in capsys.readouterr().err
    # the paper's shape: --recipe paper for the weak model and the strong one; every run is trained anew
    before = finetune_runs.trainings
    assert compare.main(args + ["--recipe", "paper", "--out", str(tmp_path / "paper")]) == 0
    assert finetune_runs.trainings - before == 2 + 3
    report_md = (tmp_path / "paper" / "report.md").read_text()
    assert "fine-tuning recipe `paper`" in report_md and "fine-tuned on weak_train gold" in report_md
    paper = pd.read_csv(tmp_path / "paper" / "predictions.csv.gz", dtype={"id": str})
    key = ["role", "method", "loss", "setting", "seed", "split", "id"]
    both = paper.merge(preds, on=key, suffixes=("_paper", ""))
    assert len(both) == len(preds) and not np.allclose(both.p_paper, both.p)  # another recipe, other labels


def test_the_paper_protocol_end_to_end(first, models, tmp_path, capsys):
    """--protocol paper --recipe paper --weak-method finetune: openai's splits (the file's own train rows halved,
    its test rows, the natural prior), the final checkpoint as the headline with best beside it, and report.md
    naming protocol, recipe, each model's learning rate and the headline."""
    _, _, cache = first
    path = tmp_path / "origin.jsonl"
    words = "good bad fine awful great poor lovely dull".split()
    rows = [{"text": f"{words[i % 8]} {words[(i * 3) % 8]} train {i}", "label": int(i % 5 < 3), "split": "train"}
            for i in range(60)]
    rows += [{"text": f"{words[i % 8]} {words[(i * 5) % 8]} test {i}", "label": int(i % 5 < 2), "split": "test"}
             for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--task", str(path), "--weak", models[0], "--strong", models[1], "--weak-method", "finetune",
            "--protocol", "paper", "--recipe", "paper", "--seeds", "2", "--finetune-seeds", "1", "--sizes",
            "10,10,4,12", "--methods", "probe,finetune", "--epochs", "1", "--n-boot", "20", "--cache-dir", str(cache),
            "--quiet", "--no-figures", "--out", str(tmp_path / "out")]
    assert compare.main(args) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    heads = summary[summary.headline]
    assert set(zip(heads.method, heads.setting)) == {("probe", "select"), ("finetune", "final")}
    assert "pgr_acc_openai" in summary
    preds = pd.read_csv(tmp_path / "out" / "predictions.csv.gz", dtype={"id": str})
    test_ids = set(preds[preds.split == "test"].id)
    task = tasks.load(str(path))
    by_id = task.data.set_index("id")
    assert len(test_ids) == 12 and set(by_id.loc[list(test_ids)].split) == {"test"}
    assert set(by_id.loc[list(set(preds[preds.split == "strong_train"].id))].split) == {"train"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Protocol **paper**" in md and "finetune `final`" in md and "its own train rows (60" in md
    # tiny models: openai's rate below 600M parameters, for the weak supervisor and the strong model alike
    assert "Weak supervisor: fine-tuning recipe `paper`" in md and f"learning rate `{models[0]}` 5e-05." in md
    assert "Strong models: fine-tuning recipe `paper`" in md and f"learning rate `{models[1]}` 5e-05." in md
    assert compare.main(args[:-2] + ["--limit", "100"]) == 2
    assert "--protocol paper keeps the natural class prior" in capsys.readouterr().err


def test_a_run_repeats_from_its_config_yaml(first, tmp_path, capsys):
    """Every output folder holds config.yaml; `compare --config` runs that comparison again (from the caches here)
    and gives the same summary; options beside it override it; a bad file is one line."""
    import yaml

    result, out, _ = first
    data = yaml.safe_load((out / "config.yaml").read_text())
    assert data["job"]["sizes"] == "10,10,6,10" and data["options"]["prompt"]["ks"] == [0, 2]
    assert compare.load_config(out / "config.yaml") == result.config
    again = tmp_path / "again"
    assert compare.main(["--config", str(out / "config.yaml"), "--out", str(again), "--quiet", "--no-figures"]) == 0
    assert (again / "summary.csv").read_bytes() == (out / "summary.csv").read_bytes()
    assert compare.parse_args(["--config", str(out / "config.yaml"), "--seeds", "1"])[0].job.seeds == (0,)
    (tmp_path / "bad.yaml").write_text("just: [text")
    assert compare.main(["--config", str(tmp_path / "bad.yaml")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
