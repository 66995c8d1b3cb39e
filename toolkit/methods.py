"""The `Method` protocol and its registry: how the strong model is elicited.

A method is one module that subclasses `Method` and registers itself by name with `@register`, as the
built-in ones do (`toolkit.probe`, `toolkit.prompt`, `toolkit.finetune`). It declares its own typed options
(a frozen dataclass, `Options`), which settings represent it in the summary, and `run`, which takes one shared
`Context` (a task, its seeds' splits and weak labels, the strong model, the job's settings) and returns one
`MethodResult`. `toolkit.compare` iterates the registry: adding a method touches no other module. A test file
can register a method too (tests/test_methods.py registers a k-nearest-neighbour probe).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from toolkit._util import ToolkitError
from toolkit.config import JobConfig
from toolkit.models import ModelInfo
from toolkit.records import Predictions

__all__ = ["BUILTIN", "Context", "Method", "MethodResult", "get", "register", "registered", "student_settings",
           "unregister"]

BUILTIN = ("probe", "prompt", "finetune")
"""The built-in methods, in the order a comparison runs them."""


@dataclass(frozen=True)
class Context:
    """What a method receives: one task and one weak -> strong pair, on the seeds it runs."""

    task: Any
    """The loaded `toolkit.tasks.Task` (already subsampled to the job's `limit`)."""
    task_spec: str
    """The task as the job names it (a name, `bigbench:<path>` or a file), for stages that load it by name."""
    sups: tuple
    """One `toolkit.weak.Supervision` per seed: its splits and the weak supervisor's labels on them."""
    weak: str
    """The weak supervisor's name, as the records carry it."""
    strong: str
    """The strong model's name, as given."""
    info: ModelInfo
    """The strong model, resolved (`toolkit.models.resolve`)."""
    job: JobConfig
    """Sizes, limit, device, dtype, cache root and probe engine, shared by every method."""
    losses: tuple[str, ...] = ("xent", "logconf")
    """Student losses, for the methods that train a student."""
    progress: bool = True
    """Print progress (bars and one line per seed)."""
    chain: str = ""
    """The intermediates the labels of `sups` came through (`toolkit.chain`), "" for the weak supervisor's own;
    `compare` writes it into the `chain` column of the method's records and curves."""

    def run_fields(self) -> dict:
        """The `config.RunConfig` fields of this task and strong model under the job (task, weak, strong, sizes,
        limit, device, cache root), for a method's own run config."""
        return self.job.run_fields(self.task_spec, self.strong)

    @property
    def labels(self) -> dict[str, int]:
        """Gold labels of the task, id -> 0/1 (for the diagnostics; a student never sees them)."""
        return dict(zip(self.task.ids, (int(v) for v in self.task.labels)))


@dataclass
class MethodResult:
    """What a method returns: its records (never the weak supervisor's, which the caller holds), training
    curves if it has any, and what it computed rather than loaded from a store."""

    records: list[Predictions]
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    """One row per evaluation during training, with task, weak, strong, role, loss and seed columns."""
    computed: dict[str, int] = field(default_factory=dict)
    """Work done in this call, e.g. {"prompts_scored": 1400}; counts of 0 say the work was loaded."""
    notes: list[str] = field(default_factory=list)
    """One-line remarks for the report."""


class Method:
    """One way of eliciting the strong model. Subclass it, set `name` and `Options`, implement `run`, and
    decorate the class with `@register`."""

    name: ClassVar[str]
    """The name on the CLI (`--methods`) and in the records' `method` column."""
    Options: ClassVar[type]
    """A frozen dataclass of this method's options, with field docstrings (they become `--help`). Field names
    must differ from every other method's and from `JobConfig`'s: the CLI gives them plain `--name` options."""
    expensive: ClassVar[bool] = False
    """Expensive methods run after the cheap ones, so a comparison prints a table within minutes."""
    plan_stage: ClassVar[str | None] = None
    """The stage of `toolkit.plan`'s estimate that times this method, if any."""

    def check(self, job: JobConfig, opts, losses: tuple[str, ...]) -> None:
        """Raise a one-line `ToolkitError` for settings this method cannot run, before any long work."""

    def skip(self, info: ModelInfo) -> str | None:
        """Why this method cannot run on the strong model `info` (the comparison notes it and goes on)."""
        return None

    def seeds(self, opts, sups: tuple, job: JobConfig | None = None) -> tuple:
        """The seeds (`Supervision`s) it runs on under `job`; all of them by default."""
        return sups

    def prepare(self, ctx: Context, opts) -> str | None:
        """Work shared by every seed (e.g. extracting features), run and timed before the first seed. Returns
        the name of the timing, or None when there is nothing to prepare."""
        return None

    def run(self, ctx: Context, opts) -> MethodResult:
        raise NotImplementedError

    def for_job(self, opts, job: JobConfig):
        """`opts` with the defaults that depend on the job settled (fine-tuning's headline checkpoint follows
        `job.protocol`); unchanged here."""
        return opts

    def summary_settings(self, opts) -> tuple[str, ...]:
        """The settings that get a row in the PGR summary, the headline (`student_setting`) first."""
        return ("select",)

    def baseline_settings(self, opts) -> tuple[str, ...]:
        """Sanity baselines (e.g. the probe on the input embeddings, which should recover nothing): they are
        summarised like students, but in their own table (`Comparison.baselines`), never among the methods."""
        return ()

    def student_setting(self, opts) -> str:
        """The one setting that stands for this method in cross-method views (agreement, calibration)."""
        return self.summary_settings(opts)[0]

    def caveat(self, students: list[Predictions], ceilings: list[Predictions]) -> str:
        """What a summary row's numbers do not show by themselves, from its students' and ceilings' records (one
        per seed, paired); "" if nothing. It becomes the summary's `caveat` column."""
        return ""


_REGISTRY: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register a `Method` subclass under its `name` (a later one replaces an earlier one of
    the same name)."""
    if not (isinstance(cls, type) and issubclass(cls, Method)) or not getattr(cls, "name", ""):
        raise ToolkitError(f"{cls!r} is not a Method subclass with a name")
    if not hasattr(cls, "Options"):
        raise ToolkitError(f"method {cls.name} declares no Options dataclass")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a registered method (tests use it to clean up)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    # The built-in methods register themselves when their module is imported; they import torch and
    # transformers, so they are imported on first use of the registry, not with this module.
    from toolkit import finetune, probe, prompt  # noqa: F401


def registered() -> dict[str, Method]:
    """Every registered method by name: the built-in ones first, in `BUILTIN` order, then the others."""
    _load_builtins()
    return {**{n: _REGISTRY[n] for n in BUILTIN if n in _REGISTRY},
            **{n: m for n, m in _REGISTRY.items() if n not in BUILTIN}}


def student_settings() -> dict[str, str]:
    """Method name -> the setting that stands for it under its default options, over every registered method:
    what the diagnostics and figures that show one setting per method use when not told."""
    return {n: m.student_setting(m.Options()) for n, m in registered().items()}


def get(name: str) -> Method:
    """The registered method `name`; a one-line error with a suggestion otherwise."""
    methods = registered()
    if name not in methods:
        near = difflib.get_close_matches(name, list(methods), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ToolkitError(f"unknown method '{name}'{hint}: choose from {', '.join(methods)}")
    return methods[name]


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
