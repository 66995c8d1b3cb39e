"""Bad input, one catalogue: each case must fail with a one-line message that says what to do (or, where
the input is legitimate but lossy, give a documented warning), never with a traceback at the CLI and never
with partial outputs that look complete. Plus determinism of the whole comparison and a safety audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit import compare, metrics, models, prompt, records, tasks, weak
from toolkit._util import ToolkitError
from toolkit.tasks import SplitSizes

ROOT = Path(__file__).resolve().parents[1]


def _csv(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _folder(tmp_path, files: dict[str, str]) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _record(p):
    return records.Predictions(task="t", weak="w", strong="w", method="probe", role="weak", loss="xent",
                               setting="layer=1", seed=0, split="strong_train",
                               ids=tuple(f"i{k}" for k in range(len(p))), p=np.asarray(p, dtype=float))


CASES = {
    "unknown task": (lambda d: tasks.load("sentimnet"),
                     r"unknown task 'sentimnet': use one of sentiment, multiemo, fever, strategyqa, vitaminc, tweets"),
    "unknown model": (lambda d: models.resolve("smollm3-135m"),
                      r"unknown model 'smollm3-135m': catalog names are minilm-l6, smollm2-135m"),
    "file without text": (lambda d: tasks.load(_csv(d, "a.csv", "sentence,label\nx,1\ny,0\n")),
                          r"a\.csv has no text column \(it has sentence, label\); it needs text and label"),
    "file without label": (lambda d: tasks.load(_csv(d, "b.csv", "text,y\nx,1\n")),
                           r"b\.csv has no label column \(it has text, y\)"),
    "labels outside 0/1": (lambda d: tasks.load(_csv(d, "c.csv", "text,label\nx,2\ny,0\nz,1\n")),
                           r"c\.csv: labels must be 0 or 1, found '2' in 1 rows; map the two classes to 0 and 1"),
    "one class only": (lambda d: tasks.load(_csv(d, "d.csv", "text,label\nx,1\ny,1\n")),
                       r"d\.csv' has only label 1 \(2 examples\); a task needs examples of both labels 0 and 1"),
    "empty file": (lambda d: tasks.load(_csv(d, "e.csv", "")),
                   r"e\.csv' has no examples; give it at least one example of each label"),
    "duplicate ids": (lambda d: tasks.load(_csv(d, "f.csv", "id,text,label\n7,x,1\n7,y,0\n")),
                      r"f\.csv': id '7' names two different texts \(data row 2 and an earlier row\); make ids unique"),
    "NaN weak labels": (lambda d: _record([0.2, np.nan]),
                        r"probe/weak predictions contain NaN or values outside \[0, 1\]"),
    "out-of-range weak labels": (lambda d: _record([0.2, 1.3]),
                                 r"probe/weak predictions contain NaN or values outside \[0, 1\]"),
    "split sizes larger than the task": (
        lambda d: tasks.split(tasks.load(_csv(d, "g.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n"
                                                                                   for i in range(20)))),
                              0, SplitSizes(10, 10, 10, 10)),
        r"splits of 40 examples needs 20 examples per class but task '.*g\.csv' has only 10 of label 0"),
    "odd split size": (lambda d: SplitSizes(10, 11, 10, 10), r"split size strong_train=11 must be an even number"),
    "k-shot larger than the pool": (lambda d: prompt.select_demos(np.array([1, 1, 0, 1]), 4, 0),
                                    r"k=4 needs 2 demonstrations per class but strong_train has only 1 with label 0; "
                                    r"use k <= 2"),
    "odd k": (lambda d: compare.CompareConfig.make(ks=(0, 3)), r"ks must be even numbers >= 0"),
    "unknown loss": (lambda d: compare.CompareConfig.make(losses=("xent", "hinge")), r"unknown loss 'hinge'"),
    "unknown method": (lambda d: compare.CompareConfig.make(methods=("probe", "rlhf")), r"unknown method 'rlhf'"),
    "bad seeds": (lambda d: compare.CompareConfig.make(seeds="a,b"), r"seeds must be a number n"),
    "model folder without weights": (
        lambda d: models.resolve(str(_folder(d, {"config.json": '{"model_type": "llama"}'}))),
                                     r"model folder .* has no weight files \(\*\.safetensors, \*\.bin\)"),
    "model folder without config": (lambda d: models.resolve(str(_folder(d, {"model.safetensors": ""}))),
                                    r"model folder .* has no readable config\.json"),
    "negative seeds": (lambda d: weak.check_seeds(-1), r"seeds must be a number n >= 1 .* got -1"),
    "an empty split": (lambda d: compare.CompareConfig.make(sizes=SplitSizes(0, 10, 10, 10)),
                       r"split sizes weak_train=0 are too small: every split needs at least one example of each"),
    "an empty test pool": (lambda d: compare.CompareConfig.make(sizes=SplitSizes(12, 12, 2, 0)),
                           r"test=0 are too small"),
    "weak_train too small for CV": (lambda d: compare.CompareConfig.make(sizes=SplitSizes(4, 10, 2, 2)),
                                    r"weak_train=4 is too small: .* needs weak_train >= 6"),
    "weak_train too small for tfidf": (lambda d: compare.CompareConfig.make(weak="tfidf",
                                                                            sizes=SplitSizes(8, 10, 6, 10)),
                                       r"weak supervisor \(tfidf\) .* needs weak_train >= 10"),
    "strong_train too small for the probe ceiling": (
        lambda d: compare.CompareConfig.make(sizes=SplitSizes(10, 4, 2, 2)), r"strong_train=4 is too small: the probe"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_catalogue(case, tmp_path):
    make, message = CASES[case]
    with pytest.raises(ToolkitError, match=message) as info:
        make(tmp_path)
    assert "\n" not in str(info.value)  # one line


def test_ceiling_not_better_than_weak_is_reported_undefined_with_the_reason():
    assert metrics.pgr(0.70, 0.60, 0.65).reason == "ceiling 0.650 does not beat weak 0.700 (gap -0.050 ≤ 0.000)"
    y = np.array([0, 1] * 50)
    good = np.where(y == 1, 0.9, 0.1)
    recs = [records.Predictions(task="t", weak="w", strong=s, method="probe", role=role, loss="xent",
                                setting="select", seed=0, split="test", ids=tuple(f"i{k}" for k in range(100)), p=p)
            for s, role, p in (("w", "weak", good), ("s", "student", good), ("s", "ceiling", 1 - good))]
    summ = records.summary(recs, {f"i{k}": int(v) for k, v in enumerate(y)}, n_boot=20)
    assert np.isnan(summ.pgr_acc[0]) and summ.pgr_acc_note[0].startswith("ceiling 0.000 does not beat weak 1.000")


def test_cli_user_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    for argv, message in ((["--task", "sentimnet"], "unknown task 'sentimnet'"),
                          (["--strong", "nope-model", "--methods", "probe"], "unknown model 'nope-model'"),
                          (["--methods", "probe,rlhf"], "unknown method"),
                          (["--sizes", "10,11,10,10"], "must be an even number")):
        # A fresh cache: nothing may be extracted (or printed) before the bad name is found.
        assert compare.main(argv + ["--out", str(out), "--quiet", "--cache-dir", str(tmp_path / "cache")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
        assert not out.exists()  # no partial results
        assert not (tmp_path / "cache" / "features").exists()  # no work before the error


def test_long_texts_are_truncated_counted_and_reported_never_dropped(tiny_causal, tmp_path, capsys):
    from dataclasses import replace

    from toolkit import extract as extract_mod
    from toolkit.extract import ExtractConfig, extract

    path = tmp_path / "long.csv"
    pd.DataFrame({"text": [("word " * (200 if i % 3 == 0 else 5)) + str(i) for i in range(12)],
                  "label": [i % 2 for i in range(12)]}).to_csv(path, index=False)
    feats = extract(ExtractConfig(model=str(tiny_causal), task=str(path), max_length=32, cache_dir=str(tmp_path)),
                    progress=True)
    assert len(feats.ids) == 12  # nothing dropped
    assert feats.manifest["n_truncated"] == 4
    note = "4 of 12 inputs longer than 32 tokens were truncated (left side), none dropped"
    assert note in capsys.readouterr().err
    cfg = ExtractConfig(model=str(tiny_causal), task=str(path), max_length=32, cache_dir=str(tmp_path))
    extract(cfg, progress=False)
    assert note not in capsys.readouterr().err  # said once per entry in a process, however often it is read
    extract_mod._TOLD.clear()  # a new run
    extract(cfg, progress=False)
    assert note in capsys.readouterr().err  # a cache hit says it too (issue #32)
    extract(replace(cfg, max_length=16), progress=False)  # another extraction that truncates says its own
    assert "longer than 16 tokens were truncated" in capsys.readouterr().err


def test_the_comparison_is_deterministic_and_seeds_change_the_splits(tiny_causal, tiny_task, tmp_path):
    opts = dict(weak=str(tiny_causal), strong=str(tiny_causal), sizes=SplitSizes(10, 10, 6, 10), ks=(0, 2),
                epochs=1, n_boot=50, progress=False, figures=False)  # the tables are what must match
    a = compare.run(str(tiny_task), seeds=(0,), cache_dir=str(tmp_path / "c1"), out=tmp_path / "a", **opts)
    b = compare.run(str(tiny_task), seeds=(0,), cache_dir=str(tmp_path / "c2"), out=tmp_path / "b", **opts)
    assert a.stats["finetunes_trained"] == b.stats["finetunes_trained"] == 3  # both computed from scratch
    for name in ("results.csv", "summary.csv", "diagnostics.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    c = compare.run(str(tiny_task), seeds=(1,), methods=("probe",), cache_dir=str(tmp_path / "c1"), **opts)
    train = lambda r: {x.ids for x in r.records if x.role == "student" and x.split == "strong_train"}
    assert train(a) and train(c) and train(a) != train(c)


def test_no_unsafe_deserialisation_anywhere():
    """No pickle, no torch.load, numpy loads without pickles; weight packages' code is never imported."""
    for path in sorted((ROOT / "toolkit").glob("*.py")):
        code = path.read_text()
        assert "import pickle" not in code and "torch.load(" not in code, path.name
        for line in (line for line in code.splitlines() if "np.load(" in line):
            assert "allow_pickle=False" in line, f"{path.name}: {line.strip()}"
        assert "trust_remote_code=True" not in code, path.name
    assert "importlib.import_module" not in (ROOT / "toolkit" / "models.py").read_text()


def _leaky_rows() -> list[dict]:
    """The issue's file: 60 texts, 10 exact duplicate rows, 5 texts repeated with the opposite label."""
    rows = [{"text": f"review number {i} {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(60)]
    rows += [dict(rows[i]) for i in range(0, 20, 2)]
    rows += [{"text": rows[i]["text"], "label": 1 - rows[i]["label"]} for i in range(30, 35)]
    return rows


@pytest.mark.parametrize("with_id", [True, False])
def test_duplicate_texts_never_cross_splits_whatever_the_ids(tmp_path, capsys, with_id):
    rows = _leaky_rows()
    df = pd.DataFrame([{"id": f"row{i}", **r} if with_id else r for i, r in enumerate(rows)])
    path = tmp_path / "leaky.csv"
    df.to_csv(path, index=False)
    task = tasks.load(path)
    assert len(task) == 55 and len(set(task.texts)) == 55  # 10 collapsed, the 5 conflicted texts dropped
    conflicted = {rows[i]["text"] for i in range(30, 35)}
    assert not conflicted & set(task.texts)
    note = ("75 rows: 10 duplicate rows collapsed (0 of them near-duplicates: equal up to case, whitespace or "
            "Unicode form), 5 texts with both labels dropped, 0 empty texts dropped")
    assert note in task.source and note in capsys.readouterr().err
    for seed in range(3):
        splits = tasks.split(task, seed, SplitSizes(10, 10, 6, 10))
        test = set(splits.test.texts)
        assert not test & set(splits.weak_train.texts + splits.strong_train.texts + splits.val.texts)


def test_duplicates_refuse_keeps_the_old_refusal(tmp_path):
    path = tmp_path / "leaky.jsonl"
    pd.DataFrame(_leaky_rows()).to_json(path, orient="records", lines=True)
    tasks.prompt_file(path).write_text('{"duplicates": "refuse"}')
    with pytest.raises(ToolkitError, match=r"line 61 repeats the text of line 1 .*duplicates: refuse"):
        tasks.load(path)
    tasks.prompt_file(path).write_text('{"duplicates": "maybe"}')
    with pytest.raises(ToolkitError, match=r"duplicates must be \"collapse\" or \"refuse\""):
        tasks.load(path)


def test_csv_labels_as_pandas_writes_them_and_empty_texts(tmp_path):
    for col in ([True, False, True, False], [1.0, 0.0, 1.0, 0.0]):
        path = tmp_path / "typed.csv"
        pd.DataFrame({"text": ["a", "b", "c", "d"], "label": col}).to_csv(path, index=False)
        assert tasks.load(path).labels.tolist() == [int(v) for v in col] or \
            sorted(tasks.load(path).labels.tolist()) == [0, 0, 1, 1]
    path = _csv(tmp_path, "gaps.csv", 'text,label\n"",1\na,0\n"  ",0\nb,1\n')
    task = tasks.load(path)
    assert sorted(task.texts) == ["a", "b"] and "2 empty texts dropped" in task.source


@pytest.mark.parametrize("cli", ["probe", "prompt"])
def test_negative_seeds_fail_in_one_line_and_write_nothing(cli, tiny_causal, tiny_task, tmp_path, capsys):
    args = ["--task", str(tiny_task), "--weak", str(tiny_causal), "--strong", str(tiny_causal), "--seeds", "-1",
            "--sizes", "10,10,6,10", "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "out"
    assert compare.method_main(cli, args + ["--out", str(out)] + (["--ks", "0,2"] if cli == "prompt" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seeds must be" in err
    assert not out.exists() and not (tmp_path / "cache" / "features").exists()  # no file, no model work


def test_an_unwritable_out_fails_before_any_work(tiny_causal, tiny_task, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    args = ["--task", str(tiny_task), "--weak", str(tiny_causal), "--strong", str(tiny_causal),
            "--sizes", "10,10,6,10", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    for out in (tmp_path / "file" / "out", Path("/proc/toolkit-out")):  # a parent that is a file; a read-only fs
        assert compare.main(args + ["--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"cannot write the outputs to {out}" in err
    assert not (tmp_path / "cache" / "features").exists()  # no model ran


def test_weight_hashes_are_memoised_in_the_cache_in_use(tiny_causal, tmp_path):
    models.resolve(str(tiny_causal), cache_dir=str(tmp_path))
    memo = json.loads((tmp_path / "models" / ".hashes.json").read_text())
    assert any(key.startswith(str(Path(tiny_causal).resolve())) for key in memo)


def test_a_comparison_with_nothing_to_run_is_refused(tiny_task, tmp_path, capsys):
    if not (models.cache_root() / "models" / "minilm-l6").exists():
        pytest.skip("minilm-l6 is not installed (run `make setup`)")
    args = ["--task", str(tiny_task), "--weak", "minilm-l6", "--strong", "minilm-l6", "--methods", "prompt",
            "--sizes", "10,10,6,10", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert compare.main(args) == 2
    assert "nothing to run: prompting skipped for minilm-l6: an encoder has no language-model head" in \
        capsys.readouterr().err
    assert not (tmp_path / "out" / "summary.csv").exists()


# ---------------------------------------------------------------------- issue #32: cases and papercuts


def test_near_duplicates_are_one_example_and_never_straddle_splits(tmp_path, capsys):
    """160 texts plus 60 variants of them in case, inner whitespace or Unicode form: 160 examples, the variants
    counted as near-duplicates, and no split holds a text whose twin is in another (24 of 110 did before)."""
    rows = [{"id": f"r{i}", "text": f"Review {i}: the film was {'good' if i % 2 else 'bad'}.", "label": i % 2}
            for i in range(160)]
    variants = [lambda t: t.upper(), lambda t: t.replace(" ", "  "), lambda t: t.replace(":", "\uff1a")]
    rows += [{"id": f"v{i}", "text": variants[i % 3](rows[i]["text"]), "label": rows[i]["label"]} for i in range(60)]
    path = tmp_path / "near.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    task = tasks.load(path)
    assert len(task) == 160 and "60 duplicate rows collapsed (60 of them near-duplicates" in capsys.readouterr().err
    splits = tasks.split(task, 0, SplitSizes(40, 40, 30, 50))
    seen = {}
    for name in splits.NAMES:
        for text in splits[name].texts:
            assert seen.setdefault(tasks.dedupe_key(text), name) == name


def test_loss_parameters_work_wherever_a_loss_is_named(tiny_causal, tiny_task, tmp_path, capsys):
    """`--losses logconf:alpha=0.75` (the README's syntax) reaches the probes, not only fine-tuning; a bad
    parameter fails before any model work."""
    args = ["--task", str(tiny_task), "--weak", str(tiny_causal), "--strong", str(tiny_causal), "--seeds", "1",
            "--sizes", "10,10,6,10", "--methods", "probe", "--no-control", "--n-boot", "20", "--quiet",
            "--no-figures", "--cache-dir", str(tmp_path / "cache")]
    assert compare.main(args + ["--losses", "xent,logconf:alpha=0.75", "--out", str(tmp_path / "a")]) == 0
    summ = pd.read_csv(tmp_path / "a" / "summary.csv")
    assert set(summ.loss) == {"xent", "logconf:alpha=0.75"}
    assert compare.method_main("probe", ["--task", str(tiny_task), "--weak", str(tiny_causal), "--strong",
                                         str(tiny_causal), "--seeds", "1", "--sizes", "10,10,6,10", "--losses",
                                         "window:radius=0.1", "--no-figures", "--out", str(tmp_path / "p"),
                                         "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "window:radius=0.1" in capsys.readouterr().out
    assert compare.main(args + ["--losses", "logconf:beta=2", "--out", str(tmp_path / "b")]) == 2
    assert "loss 'logconf' takes no parameter beta" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["compare", "extract", "sweep"])
def test_every_command_has_help(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as info:
        importlib.import_module(f"toolkit.{module}").main(["--help"])
    assert info.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("module", ["probe", "prompt", "finetune"])
def test_each_method_is_a_command_of_its_own_options(module):
    """`python -m toolkit.probe` (and prompt, finetune) is the comparison with that method alone: the job's
    options and that method's, under plain names (the comparison's command keys a shared name by method)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", f"toolkit.{module}", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and f"usage: python -m toolkit.{module}" in out.stdout, out.stderr[-2000:]
    own = {"probe": "--Cs", "prompt": "--max-length", "finetune": "--max-length"}[module]
    others = {"probe": "--ks", "prompt": "--epochs", "finetune": "--ks"}[module]
    assert own in out.stdout and others not in out.stdout and "--weak-layer" in out.stdout
    assert "--prompt.max-length" not in out.stdout


@pytest.mark.parametrize("module", ["weak", "chain", "metrics", "records", "diagnostics", "losses"])
def test_a_library_module_run_as_a_command_says_so(module):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", f"toolkit.{module}"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and f"toolkit.{module} is a library module, not a command" in done.stderr


def test_out_must_be_new_empty_or_a_previous_run(tiny_causal, tiny_task, tmp_path, capsys):
    """A reused --out loses the older run's figures that the new run does not draw; a folder with other files in
    it (`--out .` in a repository) is refused before any work."""
    args = ["--task", str(tiny_task), "--weak", str(tiny_causal), "--strong", str(tiny_causal), "--seeds", "1",
            "--sizes", "10,10,6,10", "--methods", "probe", "--losses", "xent", "--n-boot", "20", "--quiet",
            "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "run"
    out.mkdir()
    (out / "finetune_curves.png").write_bytes(b"an older run's figure")
    assert compare.main(args + ["--out", str(out), "--no-figures"]) == 0
    assert not (out / "finetune_curves.png").exists() and (out / "report.md").exists()
    capsys.readouterr()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    assert compare.main(args + ["--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "holds files that are not a run's outputs (README.md)" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in mine.iterdir()) == ["README.md"]


def test_prompting_with_only_the_zero_shot_baseline_is_refused(tiny_causal, tiny_task, tmp_path, capsys):
    args = ["--task", str(tiny_task), "--weak", str(tiny_causal), "--strong", str(tiny_causal), "--methods",
            "prompt", "--ks", "0", "--sizes", "10,10,6,10", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out")]
    assert compare.main(args) == 2
    assert "--ks 0 is the zero-shot baseline alone" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_semicolon_csv_with_commas_in_its_texts_loads(tmp_path):
    path = _csv(tmp_path, "semi.csv", 'text;label\ngood, really good;1\nbad, so bad;0\n"a; quoted";1\n')
    task = tasks.load(path)
    assert sorted(task.texts) == ["a; quoted", "bad, so bad", "good, really good"]
    broken = _csv(tmp_path, "broken.csv", "text;label\nx;1\ny;0;extra;cells\n")
    with pytest.raises(ToolkitError, match=r"read as ';'-delimited, from its header line"):
        tasks.load(broken)


def test_a_negative_size_gets_its_own_message(capsys):
    assert compare.main(["--sizes", "-40,40,30,60"]) == 2
    err = capsys.readouterr().err
    assert "weak_train=-40 must be an even number >= 0" in err and "expected one argument" not in err
