"""What every job shares (`JobConfig`: a comparison's, and each method's command's, as each is a comparison), and
the command lines generated from the config dataclasses.

Every CLI of the toolkit is built here from frozen dataclasses by `simple_parsing` (the library EleutherAI/elk
uses): one `--field-name` option per field, its help text the field's docstring. Lists are written with commas
(`--task a,b`, `--seeds 5,6,7`, `--sizes 500,500,200,500`) through the `csv`, `ints` and `sizes` field helpers,
and booleans take `--x` / `--no-x` (`flag`).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NewType

import simple_parsing
from simple_parsing.helpers import field as sp_field
from simple_parsing.helpers import flag as sp_flag

from toolkit._util import ToolkitError
from toolkit.models import DEFAULT_STRONG, DEFAULT_WEAK
from toolkit.tasks import PROTOCOLS, SplitSizes, default_sizes, paper_sizes

__all__ = ["JobConfig", "Quiet", "Sizes", "csv", "flag", "floats", "ints", "parse", "parse_seeds",
           "parse_sizes", "seeds_field", "sizes_field"]


def _items(text: str) -> list[str]:
    return [x.strip() for x in str(text).split(",") if x.strip()]


def as_tuple(value) -> tuple:
    """A comma-separated string or any iterable, as a tuple (strings are split at commas)."""
    return tuple(_items(value)) if isinstance(value, str) else tuple(value)


def as_numbers(value, kind: type = int, what: str = "value") -> tuple:
    """A comma-separated string or an iterable of numbers, as a tuple of `kind`."""
    try:
        return tuple(kind(x) for x in as_tuple(value))
    except (TypeError, ValueError):
        raise ToolkitError(f"{what} must be comma-separated numbers, got '{value}'") from None


def parse_sizes(text) -> SplitSizes | None:
    """`500,500,200,500` (weak_train, strong_train, val, test), a sequence of four, or a `SplitSizes`; `auto` (or
    None) is None: each task's `tasks.default_sizes`."""
    if text is None or text == "auto" or isinstance(text, SplitSizes):
        return text if isinstance(text, SplitSizes) else None
    try:
        numbers = [int(x) for x in (_items(text) if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 4:
        raise ToolkitError(f"sizes must be four integers weak_train,strong_train,val,test; got '{text}'")
    return SplitSizes(*numbers)


def parse_seeds(value) -> tuple[int, ...]:
    """Seeds as a tuple: an int n (or "n") means 0..n-1; a list or "5,6,7" means those seeds. At least one,
    distinct, none negative."""
    try:
        if isinstance(value, str):
            value = int(value) if "," not in value else tuple(int(x) for x in _items(value))
        seeds = tuple(range(value)) if isinstance(value, int) else tuple(int(x) for x in value)
    except (TypeError, ValueError):
        raise ToolkitError(f"seeds must be a number n (seeds 0..n-1) or a list like 0,1,2; got '{value}'") from None
    if not seeds or len(set(seeds)) < len(seeds) or min(seeds) < 0:
        raise ToolkitError(f"seeds must be a number n >= 1 (seeds 0..n-1) or distinct seeds >= 0; got {value}")
    return seeds


def _cli(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` for argparse: its one-line `ToolkitError` becomes argparse's `argument --x: <message>`."""
    def wrapped(text: str):
        try:
            return parse(text)
        except ToolkitError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return wrapped


# Field helpers: a dataclass default plus the CLI parser of its comma form. `nargs=None` keeps one argument
# (`--task a,b`), which the parser splits, instead of simple_parsing's space-separated lists.

def csv(default: Sequence[str] = (), *, alias: str | None = None) -> Any:
    """A tuple of strings, `--name a,b` on the CLI."""
    return sp_field(default=tuple(default), type=lambda s: tuple(_items(s)), nargs=None, metavar="A,B",
                    alias=alias)


def ints(default: Sequence[int] = (), *, what: str = "value") -> Any:
    """A tuple of integers, `--name 0,8` on the CLI."""
    return sp_field(default=tuple(default), type=_cli(lambda s: as_numbers(s, int, what)), nargs=None, metavar="N,M")


def floats(default: Sequence[float] = (), *, what: str = "value") -> Any:
    """A tuple of floats, `--name 0.01,0.1` on the CLI."""
    return sp_field(default=tuple(default), type=_cli(lambda s: as_numbers(s, float, what)), nargs=None,
                    metavar="X,Y")


def sizes_field(default: SplitSizes | None = None, *, auto: bool = False) -> Any:
    """A `SplitSizes`, `--sizes 500,500,200,500` on the CLI; with `auto`, the default is None (`--sizes auto`):
    each task's own default splits (`tasks.default_sizes`)."""
    return sp_field(default=None if auto else default or SplitSizes(), type=_cli(parse_sizes), nargs=None,
                    metavar="auto|WEAK_TRAIN,STRONG_TRAIN,VAL,TEST" if auto else "WEAK_TRAIN,STRONG_TRAIN,VAL,TEST")


def seeds_field(default: int | Sequence[int] = 3) -> Any:
    """Seeds, `--seeds 3` (0..2) or `--seeds 5,6,7` on the CLI."""
    # the default as a tuple: simple_parsing post-processes a tuple field's default as a sequence
    return sp_field(default=parse_seeds(default), type=_cli(parse_seeds), nargs=None, metavar="N|A,B")


def flag(default: bool) -> Any:
    """A boolean, `--name` / `--no-name` on the CLI."""
    return sp_flag(default=default, negative_prefix="--no-")


Sizes = NewType("Sizes", SplitSizes)
"""A `SplitSizes` field that the CLI takes as one `--sizes w,s,v,t` option (simple_parsing would otherwise
spread a nested dataclass over one option per field)."""


@dataclass(frozen=True)
class JobConfig:
    """What every job has: the task(s), the weak and strong models, splits, seeds, and where it runs."""

    tasks: tuple[str, ...] = csv(("sentiment",), alias="--task")
    """Tasks (names, `bigbench:<path>`, or .jsonl/.csv files); `--task a,b`."""
    weak: str = DEFAULT_WEAK
    """Weak supervisor's model (how it supervises: `weak_method`), or `tfidf`."""
    weak_method: str = "probe"
    """How the weak supervisor is built from weak_train gold: `probe` (a logistic probe on the weak model's
    cached features), `tfidf` (bag of words, no model) or `finetune` (the weak model fine-tuned with the
    fine-tuning method's options, as in the paper; its final model labels the other splits)."""
    weak_layer: str = "last"
    """The weak probe's layer (`--weak-method probe`): `last`, a layer number, or `cv` (5-fold cross-validation
    on weak_train gold picks it)."""
    strong: tuple[str, ...] = csv((DEFAULT_STRONG,))
    """Strong models (catalog names, folders or hub ids); several give PGR against strong-model size."""
    seeds: tuple[int, ...] = seeds_field(3)
    """Seeds: a number n means 0..n-1, or a list `5,6,7`. Each draws new weak_train/strong_train/val splits and
    weak labels; test is one fixed pool for every seed."""
    protocol: str = "toolkit"
    """How each task is split. `toolkit`: exactly class-balanced splits of a `limit` subsample, one test pool for
    every seed. `paper`: as openai/weak-to-strong splits: the task's train rows (the first 20,000) halved per seed
    for weak and strong training, test from its own test rows (the first 10,000), the natural class prior,
    examples of 1,024 tokens or more (by any of the job's tokenizers) dropped and counted; `--sizes` then caps
    each split (`toolkit.tasks.paper_split`)."""
    sizes: Sizes | None = sizes_field(auto=True)
    """Split sizes weak_train,strong_train,val,test (test is one fixed pool for every seed). Unset (`auto`): each
    task's default, 500,500,200,500, scaled down to fit a task too small for it (`tasks.default_sizes`); under
    `--protocol paper`, every row its rule gives, and sizes given are caps."""
    limit: int | None = None
    """Class-balanced subsample of each task before splitting (0 = all). Unset: 2000 under `--protocol
    toolkit` (it holds the default splits, 1700 examples, and halves the strong model's extraction on
    `sentiment`); 0 under `paper`, which keeps the natural class prior and takes no subsample."""
    device: str = "auto"
    """`auto`, `cpu` or `cuda`: where every stage runs (`auto`: a GPU when there is one)."""
    dtype: str = "auto"
    """`auto`, `float32` or `bfloat16`, for the strong model's forward passes. `auto` prompts in bfloat16 on a
    GPU and float32 on a CPU, and fine-tunes with bf16 autocast wherever bf16 is native
    (`toolkit.trainer.mixed_precision`)."""
    probe_engine: str = "auto"
    """Probe solver engine (`toolkit.linear`) for the weak supervisor and the probes: `auto` (numpy on a CPU,
    batched torch on a GPU), `numpy` or `torch`. Both give the same probabilities to ~1e-7."""
    cache_dir: str | None = None
    """Cache root (default `cache/` in the project, or $TOOLKIT_CACHE_DIR)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", as_tuple(self.tasks))
        object.__setattr__(self, "strong", as_tuple(self.strong))
        object.__setattr__(self, "seeds", parse_seeds(self.seeds))
        object.__setattr__(self, "sizes", parse_sizes(self.sizes))
        if self.protocol not in PROTOCOLS:
            raise ToolkitError(f"protocol must be one of {', '.join(PROTOCOLS)}, got '{self.protocol}'")
        if self.protocol == "paper" and self.limit:
            raise ToolkitError(f"--protocol paper keeps the natural class prior and takes no class-balanced "
                               f"subsample, so --limit {self.limit} does not apply; cap the splits with --sizes")
        if not self.tasks or not self.strong:
            raise ToolkitError("a job needs at least one task and one strong model")
        if self.weak_layer not in ("last", "cv") and not str(self.weak_layer).isdigit():
            raise ToolkitError(f"weak_layer must be `last`, `cv` or a layer number, got '{self.weak_layer}'")
        if self.weak == "tfidf" and self.weak_method == "probe":  # `--weak tfidf` names the bag of words
            object.__setattr__(self, "weak_method", "tfidf")
        if self.weak_method == "tfidf":  # which has no model: the name says what supervised
            object.__setattr__(self, "weak", "tfidf")

    @property
    def subsample(self) -> int:
        """The class-balanced subsample each task is cut to (`limit`, resolved: 0 = all)."""
        return self.limit if self.limit is not None else (2000 if self.protocol == "toolkit" else 0)

    def for_task(self, task) -> JobConfig:
        """This job with the split sizes of a loaded task resolved (`sizes` unset: `tasks.default_sizes`; under
        the paper protocol `tasks.paper_sizes`, capped by `sizes`), and its `limit` (`subsample`)."""
        sizes = self.sizes if self.sizes is not None else default_sizes(task)
        if self.protocol == "paper":
            sizes = paper_sizes(task, self.sizes)
        return replace(self, sizes=sizes, limit=self.subsample)


def _plain(value):
    """A config value as YAML holds it: split sizes as their `--sizes` text, tuples as lists."""
    if isinstance(value, SplitSizes):
        return ",".join(str(n) for n in value.counts().values())
    return list(value) if isinstance(value, tuple) else value


def as_dict(cfg) -> dict:
    """A comparison's config (a dataclass with `job` and `options` fields) as plain data, what config.yaml holds:
    the job, its own fields, and each method's options, each as given (defaults that depend on the job stay
    unset, as on the command line)."""
    own = {f.name: _plain(getattr(cfg, f.name)) for f in fields(cfg) if f.name not in ("job", "options")}
    return {"job": {f.name: _plain(getattr(cfg.job, f.name)) for f in fields(cfg.job)}, **own,
            "options": {m: {f.name: _plain(getattr(o, f.name)) for f in fields(o)} for m, o in cfg.options.items()}}


def field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


@dataclass(frozen=True)
class Quiet:
    """How a job talks."""

    quiet: bool = flag(False)
    """No progress bars or per-seed lines."""


class _HelpFormatter(simple_parsing.SimpleHelpFormatter):
    """Help texts are field docstrings, written as prose: a `%` in them ("10% of the steps") is a percent sign,
    not an argparse format code (which made `--help` raise TypeError). `%(default)s` and the like still work."""

    def _expand_help(self, action):
        action = copy.copy(action)
        action.help = re.sub(r"%(?!\(\w+\)[sdrf])", "%%", action.help or "")
        return super()._expand_help(action)


class _Parser(simple_parsing.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A value such as `--sizes -40,40,30,60` is a (bad) value, not an unknown option, so that its own
        # check says what is wrong with it (argparse's default only takes plain negative numbers).
        self._negative_number_matcher = re.compile(r"^-\d[\d.,eE+-]*$")

    def error(self, message: str):
        # One line, no usage dump: `_util.cli_main` prints it as `error: ...` and exits with 2.
        raise ToolkitError(message)


def parser(prog: str, description: str) -> simple_parsing.ArgumentParser:
    """An argument parser whose options are `--field-name` (dashes), with one flat namespace: a nested
    config's fields get plain names as long as they are unique. A bad option is a one-line `ToolkitError`."""
    return _Parser(
        prog=prog, description=description, add_config_path_arg=False, formatter_class=_HelpFormatter,
        add_option_string_dash_variants=simple_parsing.DashVariant.DASH,
        conflict_resolution=simple_parsing.ConflictResolution.AUTO)


def parse(cls, argv: list[str] | None, prog: str, description: str, *, default=None, extra=None):
    """Parse `argv` into dataclass `cls` (with `default`, an instance, for its defaults); `extra`, a second
    dataclass of CLI-only options, is parsed beside it. Returns the config, or (config, extra)."""
    p = parser(prog, description)
    p.add_arguments(cls, dest="config", default=default)
    if extra is not None:
        p.add_arguments(extra, dest="extra")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    return (args.config, args.extra) if extra is not None else args.config


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
