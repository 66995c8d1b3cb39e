"""The NLP datasets of openai/weak-to-strong by name (`openai:boolq`, `openai:sciq`, `openai:cosmos_qa`,
`openai:anthropic_hh`, `openai:amazon_polarity`): their full rows, fetched once with `datasets`. (The plain names
`boolq` and `sciq` are the offline suite's copies of their validation splits, `toolkit._suite`.)

Each is turned into binary (text, label) pairs as the reference repo's `weak_to_strong/datasets.py` does at its
default seed 0: the same text formats, the same label mapping, and for the three datasets whose label is drawn
(sciq, cosmos_qa, anthropic_hh) the same `random.Random(0)` draws per split, in the source's row order. The rows
are the reference's too: the first 20,000 of its train split and the first 10,000 of its test split (its
`n_docs` and `n_test_docs` defaults; validation where the dataset has no labelled test). `toolkit.tasks` pools
both and draws its own class-balanced, id-keyed splits, as for every task; each row keeps its source split and
position, so that `--protocol paper` splits them as the reference does.

`fetch(name, root)` downloads them once with Hugging Face `datasets` (the optional extra `datasets`, network
needed) and writes the dataset's own rows, untouched, to `<root>/data/hf/<name>/<split>.jsonl`; `pairs` reads
only those files. Rows copied there by other means (any machine's `datasets` export, one JSON object per line)
serve as well.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from toolkit._util import ToolkitError, atomic_write_bytes

__all__ = ["PAPER", "PaperDataset", "fetch", "pairs", "rows_dir"]


@dataclass(frozen=True)
class PaperDataset:
    """One reference dataset: where `datasets` finds it, how many rows of which splits, and its format."""

    hf_name: tuple[str, ...]
    """`datasets.load_dataset` arguments (path, and config where there is one): the Hub's current repository of
    the dataset the reference loads by its old name (`boolq` is now `google/boolq`)."""
    splits: dict[str, str]
    """Our split file name -> the dataset's split it holds."""
    n_rows: dict[str, int]
    """Our split file name -> how many leading rows of it the reference uses."""
    format: Callable[[dict, random.Random], tuple[str, int]]
    """(row, rng) -> (text, label), the reference's formatter; rng is one `Random(0)` per split."""
    template: str
    """Prompt template for prompting (the reference only fine-tunes, so this one is the toolkit's)."""
    label_words: tuple[str, str]
    """Words for labels 0 and 1."""


def _amazon_polarity(row: dict, rng: random.Random) -> tuple[str, int]:
    return f"{row['title']} {row['content']}", int(row["label"])


def _sciq(row: dict, rng: random.Random) -> tuple[str, int]:
    label = int(rng.random() < 0.5)
    answer = row["correct_answer"] if label else rng.choice([row["distractor1"], row["distractor2"],
                                                              row["distractor3"]])
    return f"Q: {row['question']} A: {answer}", label


def _anthropic_hh(row: dict, rng: random.Random) -> tuple[str, int]:
    label = int(rng.random() < 0.5)
    return (row["chosen"] if label else row["rejected"]), label


def _cosmos_qa(row: dict, rng: random.Random) -> tuple[str, int]:
    true_answer = row[f"answer{row['label']}"]
    # As the reference: a true answer of "None of the above choices ." is always shown wrong (label 0, no draw).
    label = 0 if "None of the above choices ." in true_answer else int(rng.random() < 0.5)
    if label:
        answer = true_answer
    else:
        answer = rng.choice([a for a in (row[f"answer{i}"] for i in range(4)) if a != true_answer])
    return f"Context: {row['context']}\nQuestion: {row['question']}\nAnswer: {answer}", label


def _boolq(row: dict, rng: random.Random) -> tuple[str, int]:
    return f"Passage: {row['passage']}\nQuestion: {row['question']}", int(row["answer"])


_ROWS = {"train": 20_000, "test": 10_000}
_QA = ("{text}\nIs the answer correct?\nAnswer:", (" No", " Yes"))
PAPER: dict[str, PaperDataset] = {
    "amazon_polarity": PaperDataset(("fancyzhx/amazon_polarity",), {"train": "train", "test": "test"}, _ROWS,
                                    _amazon_polarity, "Review: {text}\nSentiment:", (" negative", " positive")),
    "sciq": PaperDataset(("allenai/sciq",), {"train": "train", "test": "test"}, _ROWS, _sciq, *_QA),
    "anthropic_hh": PaperDataset(("Anthropic/hh-rlhf",), {"train": "train", "test": "test"}, _ROWS, _anthropic_hh,
                                 "{text}\n\nIs the assistant's last reply the better one?\nAnswer:", (" No", " Yes")),
    "cosmos_qa": PaperDataset(("allenai/cosmos_qa",), {"train": "train", "test": "validation"}, _ROWS, _cosmos_qa,
                              *_QA),
    "boolq": PaperDataset(("google/boolq",), {"train": "train", "test": "validation"}, _ROWS, _boolq,
                          "{text}?\nAnswer:", (" No", " Yes")),
}
"""The reference repo's five datasets by the names it registers them under."""


def rows_dir(name: str, root: Path) -> Path:
    """Where the rows of dataset `name` live under the cache root."""
    return root / "data" / "hf" / name


def _missing(name: str, root: Path) -> ToolkitError:
    return ToolkitError(
        f"task 'openai:{name}' needs its rows in {rows_dir(name, root)}/ (train.jsonl, test.jsonl): where there is "
        f"network, run `pip install -c requirements.lock -e \".[datasets]\"` and `python -m toolkit.tasks fetch "
        f"openai:{name}`, then copy that folder here if this machine has none")


def read_rows(path: Path) -> Iterator[dict]:
    """The JSON objects of a JSONL file, one per non-empty line; a bad line is a ToolkitError naming it."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ToolkitError(f"{path} line {number} is not valid JSON ({e.msg}); fetch it again") from None


def pairs(name: str, root: Path) -> Iterator[tuple[str, int, str, int]]:
    """(text, label, split, row) of every row of dataset `name`, split by split (train, then test), as the
    reference formats them: one `random.Random(0)` per split, drawn in row order; `row` is the row's position in
    its split (what `--protocol paper` halves and cuts by)."""
    spec = PAPER[name]
    files = [rows_dir(name, root) / f"{split}.jsonl" for split in spec.splits]
    if not all(f.is_file() for f in files):
        raise _missing(name, root)
    for path, split in zip(files, spec.splits):
        rng = random.Random(0)
        for k, row in enumerate(read_rows(path)):
            if k == spec.n_rows[split]:
                break
            try:
                yield (*spec.format(row, rng), split, k)
            except (KeyError, TypeError, ValueError) as e:
                raise ToolkitError(f"{path} row {k + 1} is not a {name} row ({type(e).__name__}: {e})") from None


def fetch(name: str, root: Path) -> list[Path]:
    """Download dataset `name` with Hugging Face `datasets` and write the rows the reference uses to
    `rows_dir`, one JSON object per line, atomically; files already there are kept."""
    spec = PAPER[name]
    out = []
    for split, hf_split in spec.splits.items():
        path = rows_dir(name, root) / f"{split}.jsonl"
        out.append(path)
        if path.is_file():
            continue
        try:
            import datasets
        except ImportError:
            raise ToolkitError(f"fetching {name} needs Hugging Face datasets: pip install -c requirements.lock "
                               "-e \".[datasets]\"") from None
        try:
            ds = datasets.load_dataset(*spec.hf_name, split=f"{hf_split}[:{spec.n_rows[split]}]")
        except Exception as e:  # no network, a renamed dataset: one line, with what to do
            raise ToolkitError(f"could not download {name} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                               f"{_missing(name, root)}") from None
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ds)
        atomic_write_bytes(path, lines.encode("utf-8"))
    return out
