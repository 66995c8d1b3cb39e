"""The `Method` protocol and its registry: how the strong model is elicited.

A method is one module that subclasses `Method` and registers itself by name with `@register`, as the
built-in ones do. It declares its own typed options
(a frozen dataclass, `Options`), which settings represent it in the summary, and `run`, which takes one shared
`Context` (a task, its seeds' splits and weak labels, the strong model, the job's settings) and returns one
`MethodResult`. `toolkit.compare` iterates the registry: adding a method touches no other module, and no module
names another's method: the toolkit's own come in through the same entry-point group as any plugin's (its
pyproject.toml), so the toolkit must be installed (`make setup` does `pip install -e .`). A test file
can register a method too (tests/test_methods.py registers a k-nearest-neighbour probe).

Methods outside the toolkit are found without editing it: a package that declares an entry point in the group
`toolkit.methods` (pyproject: `[project.entry-points."toolkit.methods"] mine = "mypkg.mine"`) is imported on
the registry's first use, and `python -m toolkit.compare --plugin mypkg.mine` (or `--plugin path/to/mine.py`)
imports a module by hand. `conformance(name, ctx)` runs a method through the protocol on a small context and
names every rule it breaks, as scikit-learn's `check_estimator` does for estimators; every built-in passes it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from toolkit._util import ToolkitError
from toolkit.config import JobConfig
from toolkit.models import ModelInfo
from toolkit.records import Predictions

__all__ = ["ENTRY_POINTS", "Context", "Method", "MethodResult", "conformance", "get", "load_plugin",
           "register", "registered", "student_settings", "unregister"]

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

    @property
    def labels(self) -> dict[str, int]:
        """Gold labels of the task, id -> 0/1 (for the diagnostics; a student never sees them)."""
        return self.task.gold


@dataclass
class MethodResult:
    """What a method returns: its records (never the weak supervisor's, which the caller holds), training
    curves if it has any, and what it computed rather than loaded from a store."""

    records: list[Predictions]
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    """One row per evaluation during training, with task, weak, strong, role, loss and seed columns (and
    `method`, which `compare` fills in with the method's name where it is missing)."""
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
    must differ from `JobConfig`'s and the comparison's own; a name another method also has is kept apart by
    method (`--prompt.max-length`, `--finetune.max-length` on the comparison's command line; plain in each
    method's own command)."""
    expensive: ClassVar[bool] = False
    """Expensive methods run after the cheap ones, so a comparison prints a table within minutes."""
    plan_stage: ClassVar[str | None] = None
    """The stage of `toolkit.plan`'s estimate that times this method, if any."""
    label_free: ClassVar[bool] = False
    """Finds its student without any label (the weak labels of val may give it a sign and a layer): the
    `unsupervised` preset runs every such method."""
    order: ClassVar[int] = 100
    """Where the method stands among the registered ones (help, summary, report): the built-ins take 0-2, so a
    plugin follows them unless it asks otherwise; ties keep the order of registration."""

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

    def estimate(self, opts, work) -> dict[str, float]:
        """Stage -> expected wall seconds of this method's cold run (`toolkit.plan.Work`: the strong model's
        measured speed and the job's shape), for the estimate said at the start; {} if unknown."""
        return {}

    def describe(self, opts, job: JobConfig, sizes: dict[str, int | None]) -> list[str]:
        """Sentences for report.md on how this method ran here (precision, recipe, learning rates; `sizes`:
        model -> parameters); none by default."""
        return []

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


ENTRY_POINTS = "toolkit.methods"
"""The entry-point group through which installed packages add methods."""
_PLUGINS_LOADED: list[bool] = []


def _load_entry_points() -> None:
    """Import every module the installed packages declare in `ENTRY_POINTS` (once per process): the toolkit's
    own pyproject declares its built-ins there, so they load on the registry's first use, as a plugin does (they
    import torch, so not with this module)."""
    if _PLUGINS_LOADED:
        return
    found = importlib.metadata.entry_points(group=ENTRY_POINTS)
    if not any(ep.value.startswith("toolkit.") for ep in found):
        raise ToolkitError("the toolkit's methods register through its entry points, and none were found: install "
                           "it (`make setup`, or `pip install -e .` in the repository)")
    _PLUGINS_LOADED.append(True)
    for ep in found:
        try:
            ep.load()
        except Exception as e:  # a broken plugin names itself in one line instead of a traceback
            raise ToolkitError(f"the method plugin {ep.name} ({ep.value}) failed to load: "
                               f"{type(e).__name__}: {e}") from None


def load_plugin(spec: str) -> None:
    """Import a module that registers methods: a module name (`mypkg.mine`) or a `.py` file."""
    path = Path(spec)
    try:
        if path.suffix == ".py":
            if not path.is_file():
                raise ToolkitError(f"--plugin {spec}: no such file")
            name = f"toolkit_plugin_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except ToolkitError:
        raise
    except Exception as e:
        raise ToolkitError(f"--plugin {spec} failed to load: {type(e).__name__}: {e}") from None


def registered() -> dict[str, Method]:
    """Every registered method by name, by `Method.order` (the built-ins first), then by registration."""
    _load_entry_points()
    return dict(sorted(_REGISTRY.items(), key=lambda item: item[1].order))


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


ROLES = ("student", "ceiling", "control", "baseline")
"""The roles a method's records may have (the weak supervisor's records are the caller's)."""


def conformance(name: str, ctx: Context, opts=None) -> None:
    """Run method `name` through the protocol on `ctx` (a small task: a few examples, one or two seeds) and raise
    a `ToolkitError` naming every rule it breaks: typed, frozen options whose names (and the method's) are not
    the job's; summary settings that include its headline; records of its own roles, models, seeds
    and splits, with every id of the split and P(y=1) in [0, 1]; a student and a ceiling record on test for every
    summary setting, seed and loss (what the summary pairs); the same numbers on a second run; and for a
    `label_free` method, the same students when every gold label outside weak_train is flipped (no gold reaches
    them)."""
    method = get(name)
    problems = []
    if not (is_dataclass(method.Options) and method.Options.__dataclass_params__.frozen):
        problems.append("Options is not a frozen dataclass")
    opts = method.Options() if opts is None else opts
    own = {f.name for f in fields(method.Options)} | {name}
    taken = {f.name for f in fields(JobConfig)}
    if own & taken:
        problems.append(f"option or method names {sorted(own & taken)} are the job's (`JobConfig`)")
    settings = method.summary_settings(opts)
    if not settings or method.student_setting(opts) not in settings:
        problems.append(f"summary_settings {settings!r} must be non-empty and hold the headline setting")
    sups = method.seeds(opts, ctx.sups, ctx.job)
    result = method.run(_with_sups(ctx, sups), opts)
    if not isinstance(result, MethodResult) or not result.records:
        problems.append("run returned no MethodResult with records")
        raise ToolkitError(f"method {name} breaks the protocol: " + "; ".join(problems))
    by_seed = {s.seed: s for s in sups}
    for r in result.records:
        where = f"record ({r.role}, {r.loss}, {r.setting}, seed {r.seed}, {r.split})"
        if r.method != name or r.role not in ROLES:
            problems.append(f"{where}: method {r.method!r} and role {r.role!r} (want {name!r} and one of {ROLES})")
        elif (r.task, r.weak, r.strong) != (ctx.task.name, ctx.weak, ctx.strong):
            problems.append(f"{where}: task/weak/strong {(r.task, r.weak, r.strong)} are not the context's")
        elif r.seed not in by_seed or r.split not in ("strong_train", "val", "test"):
            problems.append(f"{where}: not a seed it was given, or not one of strong_train, val, test")
        elif set(r.ids) != set(by_seed[r.seed].splits[r.split].ids):
            problems.append(f"{where}: its ids are not the split's")
        elif not (np.isfinite(r.p).all() and ((r.p >= 0) & (r.p <= 1)).all()):
            problems.append(f"{where}: P(y=1) outside [0, 1]")
    have = {(r.role, r.setting, r.seed, r.loss) for r in result.records if r.split == "test"}
    ceilings = {(s, seed) for role, s, seed, _ in have if role == "ceiling"}
    for setting in settings:
        for seed in by_seed:
            losses = {loss for role, s, sd, loss in have if role == "student" and (s, sd) == (setting, seed)}
            if not losses or (setting, seed) not in ceilings:
                problems.append(f"no test student and ceiling for setting {setting!r}, seed {seed}")
    rerun = method.run(_with_sups(ctx, sups), opts).records
    again = {(r.role, r.loss, r.setting, r.seed, r.split): r for r in rerun}
    for r in result.records:
        other = again.get((r.role, r.loss, r.setting, r.seed, r.split))
        if other is None or not np.allclose(other.aligned(r.ids), r.p, atol=1e-6):
            problems.append(f"a second run changed ({r.role}, {r.loss}, {r.setting}, seed {r.seed}, {r.split})")
            break
    if method.label_free:
        blind = method.run(_with_sups(ctx, tuple(_gold_flipped(s) for s in sups)), opts).records
        flipped = {(r.loss, r.setting, r.seed, r.split): r for r in blind if r.role == "student"}
        for r in (r for r in result.records if r.role == "student"):
            other = flipped.get((r.loss, r.setting, r.seed, r.split))
            if other is None or not np.allclose(other.aligned(r.ids), r.p, atol=1e-9):
                problems.append(f"label-free, yet its student ({r.loss}, {r.setting}, seed {r.seed}, {r.split}) "
                                "moved when the gold labels outside weak_train were flipped")
                break
    if problems:
        raise ToolkitError(f"method {name} breaks the protocol: " + "; ".join(dict.fromkeys(problems)))


def _gold_flipped(sup):
    """`sup` (a `weak.Supervision`) with every gold label outside weak_train flipped; its weak labels, which the
    supervisor learnt from weak_train, kept."""
    flip = {s: replace(sup.splits[s], data=sup.splits[s].data.assign(label=1 - sup.splits[s].data["label"]))
            for s in ("strong_train", "val", "test")}
    return replace(sup, splits=replace(sup.splits, **flip))


def _with_sups(ctx: Context, sups) -> Context:
    """`ctx` on the seeds `sups`."""
    return Context(**{**vars(ctx), "sups": tuple(sups)})


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
