"""The main job: every elicitation method side by side, on the same splits and weak labels.

    python -m toolkit.compare --task sentiment --weak minilm-l6 --strong smollm2-135m --out runs/default

From a notebook:

    import toolkit
    result = toolkit.run_comparison("sentiment", weak="minilm-l6", strong="smollm2-135m")   # = compare.run
    result.summary                 # weak / student / ceiling and PGR with 95% CIs, per method x loss x setting
    result.write("runs/default")   # results.csv, summary.csv, diagnostics.csv, figures, report.md

Per task, the weak supervisor is trained once per seed (`toolkit.weak.supervise`); its splits and soft
labels are handed to every registered method (`toolkit.methods`), so the probe, prompt and fine-tune
students differ only in how the strong model is elicited. Every stage reuses its cache (features, prompt
scores, probe fits, fine-tune runs): a rerun with nothing new loads no model and trains nothing (14 s for the
default run).
Fine-tuning is the expensive arm, so by default it runs on the first `finetune_seeds` seeds only (its
summary rows say how many seeds they average).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
from simple_parsing.helpers import field as sp_field

from toolkit import chain as chain_mod
from toolkit import config, diagnostics, metrics, plan, records, report
from toolkit import extract as extract_mod
from toolkit import methods as methods_mod
from toolkit import tasks as tasks_mod
from toolkit import weak as weak_mod
from toolkit._util import ToolkitError, cli_main
from toolkit.config import JobConfig, csv, flag
from toolkit.losses import parse as parse_loss
from toolkit.methods import Context
from toolkit.models import DEFAULT_STRONG, DEFAULT_WEAK, body_params, load_tokenizer, n_params, resolve
from toolkit.records import CHAIN_SEP, Predictions
from toolkit.tasks import load as load_task
from toolkit.weak import TFIDF as WEAK_TFIDF
from toolkit.weak import check_sizes, solver

__all__ = ["CompareConfig", "Comparison", "PRESETS", "check", "from_dict", "load_tasks", "main", "method_main",
           "preset", "run", "run_config", "supervise"]

LADDER = ("smollm2-135m", "gemma3-270m", "qwen2.5-0.5b")
STUDY_TASKS = ("sentiment", "fever", "strategyqa", "multiemo", "tweets")
OPENAI_NLP = ("sciq", "boolq", "cosmos_qa", "amazon_polarity")
"""openai/weak-to-strong's NLP datasets whose published sweep shows weak-to-strong generalization (its fifth,
anthropic_hh, sits at chance there)."""
GPT2 = "openai-community/"
"""The Hub's owner of the GPT-2 models openai's sweep uses (`gpt2`, ... are their old short names)."""
PRESETS: dict[str, dict] = {
    "quick": {"methods": ("probe", "prompt")},
    "ladder": {"tasks": STUDY_TASKS, "strong": LADDER, "methods": ("probe", "prompt"), "limit": 2000},
    "ladder-finetune": {"tasks": ("sentiment", "fever"), "strong": ("smollm2-135m",), "methods": ("finetune",),
                        "limit": 2000, "finetune_seeds": 3},
    "bootstrap": {"chain": ("minilm-l6", "smollm2-135m", "gemma3-270m"), "methods": ("probe", "prompt"),
                  "limit": 2000},
    "openai-nlp": {"tasks": tuple(f"openai:{d}" for d in OPENAI_NLP), "weak": f"{GPT2}gpt2",
                   "strong": tuple(f"{GPT2}{m}" for m in ("gpt2-medium", "gpt2-large", "gpt2-xl")),
                   "weak_method": "finetune", "methods": ("finetune",), "losses": ("xent", "logconf"),
                   "protocol": "paper", "recipe": "paper", "finetune": {"max_length": 1024}, "finetune_seeds": 0,
                   "seeds": 3},
    # the registry says which methods are label-free (`Method.label_free`): this module names none of them
    "unsupervised": {"methods": lambda: ("probe", *label_free()), "seeds": 3},
}
"""Named studies (`--preset NAME`; `preset(NAME)` from Python). `quick` is the default comparison without its
expensive arm, fine-tuning: probes and prompting on sentiment, minilm-l6 -> smollm2-135m, in 16 minutes cold on
the slower of the two 2-core CPUs measured (AVX2 only; the full default there takes 49). `ladder` is the
reproduction study's probes and prompting over the strong-model ladder and five tasks; `ladder-finetune` its
fine-tuning arm; `bootstrap` the chain through gemma3-270m. `openai-nlp` is openai/weak-to-strong's NLP sweep
for a GPU with the network: their four datasets by name, weak gpt2 fine-tuned, strong gpt2-medium, -large and -xl
fine-tuned with xent and logconf under their protocol and recipe (`--weak` sets the next weak model; their sweep
takes every weak < strong pair; `benchmarks/vs_openai.py` sets the result beside their published numbers).
`unsupervised` is the label-free arm (every registered method with `label_free`) beside the probes, 3 seeds.
Other options given with a preset override it."""


def label_free() -> tuple[str, ...]:
    """The registered methods that find their student without labels (`Method.label_free`)."""
    return tuple(name for name, m in methods_mod.registered().items() if m.label_free)


BUILTIN = ("probe", "prompt", "finetune")
"""The built-in methods, a comparison's default."""

@dataclass(frozen=True)
class CompareConfig:
    """A side-by-side comparison: tasks x strong models x methods x losses x seeds.

    Built from options by name with `CompareConfig.make(tasks=..., ks=..., epochs=...)`: each name goes to the
    shared `JobConfig`, to this class, or to the options of the registered method that declares it (`job` holds
    the shared settings, `opts(method)` a method's, keyed by method: two methods may each have a `max_length`)."""

    job: JobConfig = field(default_factory=JobConfig)
    """Task(s), models, splits, seeds, device: what every method shares."""
    methods: tuple[str, ...] = csv(BUILTIN)
    """Elicitation methods, by registered name (`toolkit.methods`; every registered method's options are listed
    below, the default ones first)."""
    losses: tuple[str, ...] = csv(("xent", "logconf"))
    """Student losses for the methods that train a student (prompting has no loss)."""
    chain: tuple[str, ...] = csv(())
    """Bootstrapping chain `weak, m1, …, strong` (`toolkit.chain`): intermediates m1… are cross-fitted probes,
    each trained on the previous model's labels; every method then trains the strong model on the last
    intermediate's labels, beside the direct weak -> strong run. Empty: direct only."""
    n_boot: int = 1000
    """Bootstrap resamples for the PGR intervals."""
    min_gap: float = metrics.MIN_GAP
    """PGR is undefined where the ceiling beats the weak model by this much or less (absolute, in accuracy or
    AUROC; also per seed): a smaller gap makes PGR mostly noise even when it is significant."""
    options: dict[str, Any] = sp_field(default_factory=dict, cmd=False)
    """Each method's options (method name -> its `Options`); a method left out takes its defaults."""

    def __post_init__(self) -> None:
        for name in ("methods", "losses", "chain"):
            object.__setattr__(self, name, config.as_tuple(getattr(self, name)))
        if not 0 <= self.min_gap < 1:
            raise ToolkitError(f"min_gap must be in [0, 1), got {self.min_gap}")
        if not self.methods:
            raise ToolkitError(f"no method given: choose from {', '.join(methods_mod.registered())}")
        known = methods_mod.registered()
        for m in self.methods:
            methods_mod.get(m)  # an unknown name fails here, with a suggestion
        if self.chain:
            object.__setattr__(self, "job", _chain_job(self.chain, self.job))
        object.__setattr__(self, "options", {m: self.options.get(m) or known[m].Options() for m in known})
        for loss in self.losses:
            parse_loss(loss)  # a bad loss name or parameter fails before any long work
        if self.job.sizes is not None:  # auto sizes are checked per task, before any model work too
            check_sizes(self.job.sizes, self.job.weak)  # before any model work, as every check here
        solver(self.job.device, self.job.probe_engine)
        weak_mod.supervisor(self.job.weak_method).check(self.job)  # an unknown name fails here too
        for m in self.methods:
            known[m].check(self.job, self.options[m], self.losses)

    @classmethod
    def make(cls, **options) -> CompareConfig:
        """A config from options by name: `JobConfig` fields, this class's fields, and the registered methods'
        options. A method's option is given by its plain name where no other method has one of that name
        (`ks=(0, 8)`), or under the method's name, which always works (`prompt={"max_length": 2048}`, or the
        method's `Options` instance)."""
        known = methods_mod.registered()
        by_method = {m: options.pop(m) for m in list(options) if m in known}
        job_names, own_names = config.field_names(JobConfig), config.field_names(cls) - {"job", "options"}
        job = {k: v for k, v in options.items() if k in job_names}
        own = {k: v for k, v in options.items() if k in own_names}
        plain: dict[str, dict] = {m: {} for m in known}
        for key in options.keys() - job.keys() - own.keys():
            owners = [m for m, method in known.items() if key in config.field_names(method.Options)]
            if not owners:
                names = sorted(job_names | own_names | set().union(*(config.field_names(m.Options)
                                                                      for m in known.values())))
                raise ToolkitError(f"unknown option '{key}': choose from {', '.join(names)}")
            if len(owners) > 1:
                raise ToolkitError(f"'{key}' is an option of {' and '.join(owners)}: give it under the method's "
                                   f"name, e.g. {owners[0]}={{'{key}': ...}}")
            plain[owners[0]][key] = options[key]
        opts = {m: _method_options(m, known[m].Options, by_method.get(m), plain[m]) for m in known}
        return cls(job=JobConfig(**job), **own, options=opts)

    def all_opts(self) -> dict[str, Any]:
        """Every registered method's options, settled for the job (`opts`), by method name."""
        return {m: self.opts(m) for m in self.options}

    def opts(self, method: str):
        """The options of `method`, with the defaults that depend on the job settled (`Method.for_job`; the
        `options` field keeps them as given, so that a config is also the CLI's defaults)."""
        return methods_mod.get(method).for_job(self.options[method], self.job)

    def flat(self) -> dict[str, Any]:
        """Every option by name, for the report: the job's, this config's and the chosen methods' (a name that
        two chosen methods have is written `method.name`, as on the command line)."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("job", "options")}
        out = {f.name: getattr(self.job, f.name) for f in fields(JobConfig)} | own | {"limit": self.job.subsample}
        names = [f.name for m in self.methods for f in fields(self.options[m])]
        for m in self.methods:
            out |= {(f.name if names.count(f.name) == 1 else f"{m}.{f.name}"): getattr(self.opts(m), f.name)
                    for f in fields(self.options[m])}
        return out

    def summary_settings(self) -> dict[str, tuple[str, ...]]:
        """Method -> the settings with a row in the summary (keyed by method: one method's settings never pull
        another's rows in)."""
        return {m: methods_mod.get(m).summary_settings(self.opts(m)) for m in self.methods}

    def models(self) -> tuple[str, ...]:
        """The job's neural models, each once, in order: the weak one, the chain's, the strong ones (tfidf is
        not a model)."""
        return tuple(m for m in dict.fromkeys((self.job.weak, *self.chain, *self.job.strong)) if m != WEAK_TFIDF)

    def baseline_settings(self) -> dict[str, tuple[str, ...]]:
        """Method -> its sanity baselines' settings (`Method.baseline_settings`), for the methods that have any."""
        out = {m: methods_mod.get(m).baseline_settings(self.opts(m)) for m in self.methods}
        return {m: s for m, s in out.items() if s}

    def caveats(self) -> dict:
        """Method -> its `Method.caveat`, for the summary's caveat column."""
        return {m: methods_mod.get(m).caveat for m in self.methods}

    def student_settings(self) -> dict[str, str]:
        """Method -> the setting that represents it in cross-method views."""
        return {m: methods_mod.get(m).student_setting(self.opts(m)) for m in self.methods}


def _method_options(name: str, cls: type, given, plain: dict):
    """Method `name`'s options (dataclass `cls`): `given` (an instance, a dict of fields or None) with the plain
    options `plain` on top; a field it does not have is a one-line error."""
    if given is None or isinstance(given, dict):
        fields_given = {**(given or {}), **plain}
        unknown = sorted(fields_given.keys() - config.field_names(cls))
        if unknown:
            raise ToolkitError(f"method {name} has no option {', '.join(map(repr, unknown))}: choose from "
                               f"{', '.join(sorted(config.field_names(cls)))}")
        return cls(**fields_given)
    if not isinstance(given, cls):
        raise ToolkitError(f"{name}= takes a dict of its options or a {cls.__name__}, got {type(given).__name__}")
    return dataclasses.replace(given, **plain) if plain else given


def _chain_job(chain: tuple[str, ...], job: JobConfig) -> JobConfig:
    """The job with the chain's first model as the weak one and its last as the strong one."""
    if len(chain) < 2 or len(set(chain)) < len(chain):
        raise ToolkitError(f"a chain needs at least two different models, weak first, strong last: "
                           f"{CHAIN_SEP.join(chain)}")
    if job.weak not in (DEFAULT_WEAK, chain[0]) or job.strong not in ((DEFAULT_STRONG,), (chain[-1],)):
        raise ToolkitError(f"the chain {CHAIN_SEP.join(chain)} starts with the weak model and ends with "
                           f"the strong one; got weak={job.weak}, strong={','.join(job.strong)}")
    if WEAK_TFIDF in chain[1:]:
        raise ToolkitError("tfidf can only start a chain (it has no features to probe)")
    return dataclasses.replace(job, weak=chain[0], strong=(chain[-1],))


def load_config(path: str | Path) -> CompareConfig:
    """The `CompareConfig` a run's config.yaml holds (`config.as_dict`); one-line errors for a missing or bad
    file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ToolkitError(f"cannot read --config {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ToolkitError(f"--config {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    return from_dict(data, f"--config {path}")


def from_dict(data, where: str = "the config") -> CompareConfig:
    """The `CompareConfig` of plain data as `config.as_dict` writes it (a run's config.yaml, a sweep's job);
    `where` names the source in its one-line errors."""
    if not isinstance(data, dict) or not isinstance(data.get("job"), dict):
        raise ToolkitError(f"{where} is not a run's config.yaml (it has no `job` section)")
    known = methods_mod.registered()
    unknown = [m for m in data.get("options") or {} if m not in known]
    if unknown:
        raise ToolkitError(f"{where} has options of methods not registered here: {', '.join(unknown)}; "
                           "pass --plugin <module> or install the package that provides them")
    plain = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in (d or {}).items()}
    given = {**data["job"], **{k: v for k, v in data.items() if k not in ("job", "options")}}
    return CompareConfig.make(**plain(given), **{m: plain(o) for m, o in (data.get("options") or {}).items()})


def preset(name: str, **overrides) -> CompareConfig:
    """The `CompareConfig` of a named study, with `overrides`."""
    if name not in PRESETS:
        raise ToolkitError(f"unknown preset '{name}': choose from {', '.join(PRESETS)}")
    settings = {k: v() if callable(v) else v for k, v in PRESETS[name].items()}
    for key, value in overrides.items():  # a method's options given by its name add to the preset's
        settings[key] = {**settings[key], **value} if isinstance(settings.get(key), dict) and \
            isinstance(value, dict) else value
    return CompareConfig.make(**settings)


@dataclass
class Comparison:
    """What `run` returns: every prediction record and the tables built from them."""

    config: CompareConfig
    records: list[Predictions]
    labels: dict[str, dict[str, int]]
    """Gold labels per task: task name -> id -> 0/1."""
    curves: pd.DataFrame
    """Training curves (step, val agreement with weak labels, test accuracy) of every fine-tuning run."""
    summary: pd.DataFrame
    """PGR per task, models, method, loss and setting: the methods' rows."""
    results: pd.DataFrame
    """The tidy table: one row per task, models, method, role, loss, setting, seed, split and metric."""
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage."""
    stats: dict[str, int] = field(default_factory=dict)
    """Work done rather than loaded: models built for extraction, prompts scored, fine-tunings trained."""
    notes: list[str] = field(default_factory=list)
    sizes: dict[str, int | None] = field(default_factory=dict)
    """Strong (and weak) models' parameter counts."""
    baselines: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The sanity baselines (the probe on the input embeddings), summarised as `summary` is, apart from it."""
    split_sizes: dict = field(default_factory=dict)
    """Task -> the `SplitSizes` it ran with (`--sizes`, or the task's default)."""
    _diag: tuple | None = None

    def _diagnostics(self):
        if self._diag is None:
            curves = self.curves
            frames = [diagnostics.table([r for r in self.records if r.task == t], lab,
                                        curves=curves[curves.task == t] if len(curves) else None)
                      for t, lab in self.labels.items()]
            diag = pd.concat(frames, ignore_index=True)
            self._diag = (diag, diagnostics.summarize(diag))
        return self._diag

    @property
    def diagnostics(self) -> pd.DataFrame:
        """Tidy diagnostics (`toolkit.diagnostics.table`): agreement, imitation, misfit, ECE per record."""
        return self._diagnostics()[0]

    @property
    def diagnostics_summary(self) -> pd.DataFrame:
        """Diagnostics averaged over seeds, with the noise-control comparison (`diagnostics.summarize`)."""
        return self._diagnostics()[1]

    @property
    def student_settings(self) -> dict[str, str]:
        """The setting that represents each method in cross-method views (each method's `student_setting`: the
        probe's selected layer, the largest k with calibration, fine-tuning's best checkpoint)."""
        return self.config.student_settings()

    def figures(self) -> dict:
        """The standard figures (name -> matplotlib Figure); see `toolkit.plots`."""
        return report.figures(self)

    def write(self, out: str | Path, figures: bool = True) -> list[Path]:
        """Write results.csv, summary.csv, diagnostics.csv, predictions.csv.gz, curves.csv, the figures (PNG)
        and report.md to `out`; return the paths written. `figures=False` skips the PNGs (the slowest part of
        writing: about a second per figure on a 2-core CPU); `figures()` still draws them on demand."""
        return report.write(self, Path(out), figures)


def _strong_runs(cfg: CompareConfig, ctx: Context, methods: tuple[str, ...], stats: dict, notes: list[str]
                 ) -> tuple[list[Predictions], list[pd.DataFrame], dict[str, float]]:
    """Every method of `methods` on the seeds of `ctx`; returns records, training curves, seconds per method."""
    recs, curves, times = [], [], {}
    for name in methods:
        method = methods_mod.get(name)
        if (why := method.skip(ctx.info)) is not None:
            if why not in notes:
                notes.append(why)
            continue
        t0 = time.perf_counter()
        out = method.run(ctx, cfg.opts(name))
        for k, v in out.computed.items():
            stats[k] = stats.get(k, 0) + v
        notes += [n for n in out.notes if n not in notes]
        recs += [r.with_(chain=ctx.chain) for r in out.records] if ctx.chain else out.records
        if len(out.curves):  # the method's name, where its curves do not carry it
            curves.append(out.curves.assign(method=out.curves.get("method", name), chain=ctx.chain))
        via = f"{CHAIN_SEP}{ctx.chain}" if ctx.chain else ""
        times[f"{name} {ctx.task.name} {ctx.weak}{via} -> {ctx.strong}"] = time.perf_counter() - t0
    return recs, curves, times


def run(tasks: str | tuple[str, ...] = "sentiment", *, out: str | Path | None = None, progress: bool = True,
        figures: bool = True, **options) -> Comparison:
    """Compare every method in `methods` for each task x strong model, on the same splits and weak labels.

    `options` takes any option by name (`CompareConfig.make`): weak, strong, methods, losses, seeds, sizes,
    limit, ks, epochs, finetune_seeds, control, ... With `out`, the outputs are written there as by
    `Comparison.write` (`figures=False`: no PNGs)."""
    return run_config(CompareConfig.make(tasks=tasks, **options), out=out, progress=progress, figures=figures)


def _token_counters(cfg: CompareConfig) -> list:
    """texts -> token counts, one per neural model of the job (its tokenizer, loaded once)."""
    toks = [load_tokenizer(resolve(m, cfg.job.cache_dir)) for m in cfg.models()]
    return [lambda texts, tok=tok: [len(ids) for ids in tok(texts)["input_ids"]] for tok in toks]


def _paper_task(task, counters: list) -> tuple[Any, list[str]]:
    """Under `--protocol paper`: `task` without the examples of 1,024 tokens or more under any of the job's
    tokenizers (`counters`; openai/weak-to-strong drops them), and the lines that say so and how the task is
    split."""
    kept, dropped = tasks_mod.drop_long(task, counters)
    lines = [tasks_mod.paper_note(kept)]
    if dropped:
        lines.append(f"{task.name}: paper protocol: {dropped} of {len(task)} examples of "
                     f"{tasks_mod.PAPER_MAX_TOKENS:,} tokens or more dropped (openai/weak-to-strong's max_ctx)")
    return kept, lines


def load_tasks(cfg: CompareConfig, notes: list[str] | None = None) -> dict:
    """The job's tasks as the comparison runs them: subsampled to its `limit`, and under `--protocol paper`
    without their over-long examples (what that did is added to `notes`)."""
    loaded = {t: load_task(t, cfg.job.cache_dir, limit=cfg.job.subsample) for t in cfg.job.tasks}
    if cfg.job.protocol == "paper":
        counters = _token_counters(cfg)
        for name, task in loaded.items():
            loaded[name], lines = _paper_task(task, counters)
            if notes is not None:
                notes += lines
    return loaded


def check(cfg: CompareConfig, out=None) -> None:
    """Every name, size and the output folder of `cfg`, checked in seconds (what `run_config` checks first)."""
    _check_names(cfg, out)


def _check_names(cfg: CompareConfig, out, notes: list[str] | None = None) -> dict:
    """Every task and model name, the output folder and the method/model pairs, checked before any long work
    (a bad name fails in a second, not after extraction). Returns the loaded tasks (`load_tasks`)."""
    loaded = load_tasks(cfg, notes)
    for task in loaded.values():  # each task's own sizes (`--sizes auto` scales them) meet every method's needs
        job = cfg.job.for_task(task)
        check_sizes(job.sizes, cfg.job.weak)
        for m in cfg.methods:
            methods_mod.get(m).check(job, cfg.opts(m), cfg.losses)
    for m in cfg.models():
        resolve(m, cfg.job.cache_dir)
    if out is not None:
        _check_writable(Path(out))
        report.check_out(Path(out))
    infos = [resolve(s, cfg.job.cache_dir) for s in cfg.job.strong]
    if all(methods_mod.get(m).skip(i) for m in cfg.methods for i in infos):
        why = "; ".join(dict.fromkeys(methods_mod.get(m).skip(i) for m in cfg.methods for i in infos))
        raise ToolkitError(f"nothing to run: {why}; add --methods probe or pass a decoder as --strong")
    return loaded


def supervise(cfg: CompareConfig, job: JobConfig, task, task_name: str, progress: bool) -> list:
    """Each seed's splits (of `job`'s sizes, resolved for this task) and weak labels, from the weak supervisor
    `cfg.job.weak_method` builds (`weak.Supervisor`)."""
    return weak_mod.supervisor(cfg.job.weak_method).supervise(task, task_name, job, cfg.all_opts(), progress)


def run_config(cfg: CompareConfig, *, out: str | Path | None = None, progress: bool = True,
               figures: bool = True) -> Comparison:
    """`run` for a ready `CompareConfig`; `figures` as in `Comparison.write`."""
    t_start = time.perf_counter()
    stats: dict[str, int] = {}
    all_recs: list[Predictions] = []
    labels: dict[str, dict[str, int]] = {}
    curves: list[pd.DataFrame] = []
    timings: dict[str, float] = {}
    notes: list[str] = []
    split_sizes: dict[str, tasks_mod.SplitSizes] = {}
    loaded = _check_names(cfg, out, notes)
    plans = _print_plan(cfg, loaded) if progress else {}
    with extract_mod.counted() as extraction:  # models built by any stage of this run, for its stats
        for task_name in cfg.job.tasks:
            t0 = time.perf_counter()
            task = loaded[task_name]
            if task.name in labels:
                raise ToolkitError(f"task '{task.name}' is listed twice")
            job = cfg.job.for_task(task)
            split_sizes[task.name] = job.sizes
            sups = supervise(cfg, job, task, task_name, progress)
            timings[f"weak {task.name}"] = time.perf_counter() - t0
            labels[task.name] = task.gold
            all_recs += [r for s in sups for r in s.weak if r.split != "weak_train"]
            runs = [(sups, "")]
            if len(cfg.chain) > 2:
                t0 = time.perf_counter()
                inter = [(m, extract_mod.extract(extract_mod.for_job(cfg.job, m, task_name, strong=False),
                                                 progress=progress)) for m in cfg.chain[1:-1]]
                chain_sups, inter_recs, via = chain_mod.bootstrap(
                    sups, inter, first=cfg.job.weak, fit=solver(cfg.job.device, cfg.job.probe_engine),
                    cache_dir=cfg.job.cache_dir)
                all_recs += inter_recs
                runs.append((chain_sups, via))
                timings[f"chain {task.name} {cfg.job.weak}>{via}"] = time.perf_counter() - t0
            for strong in cfg.job.strong:
                base = Context(task=task, task_spec=task_name, sups=tuple(sups), weak=cfg.job.weak, strong=strong,
                               info=resolve(strong, cfg.job.cache_dir), job=job, losses=cfg.losses, progress=progress)
                for name in cfg.methods:
                    method = methods_mod.get(name)
                    t0 = time.perf_counter()
                    if method.skip(base.info) is None and (label := method.prepare(base, cfg.opts(name))):
                        timings[label] = time.perf_counter() - t0
                for run_sups, via in runs:
                    block: list[Predictions] = []
                    for i, (phase_sups, methods) in enumerate(_phases(cfg, tuple(run_sups))):
                        if progress:
                            _print_eta(cfg, methods, phase_sups, timings, plans.get((task.name, strong)), task.name,
                                       f"{cfg.job.weak}{CHAIN_SEP}{via}" if via else cfg.job.weak, strong)
                        ctx = Context(**{**vars(base), "sups": phase_sups, "chain": via})
                        recs, c, t = _strong_runs(cfg, ctx, methods, stats, notes)
                        block += recs
                        curves += c
                        for k, v in t.items():
                            timings[k] = timings.get(k, 0.0) + v
                        if progress and i == 0 and recs:
                            seeds = {s.seed for s in phase_sups}  # PGR against the root supervisor, chain or not
                            weak_recs = [r for s in sups if s.seed in seeds for r in s.weak if r.split != "weak_train"]
                            _print_early(cfg, weak_recs + recs, labels[task.name], phase_sups,
                                         time.perf_counter() - t_start)
                    # back in the one-pass order (method, then seed), so that results.csv does not depend on the phases
                    rank = {m: i for i, m in enumerate(cfg.methods)}
                    pos = {s.seed: i for i, s in enumerate(run_sups)}
                    all_recs += sorted(block, key=lambda r: (rank[r.method], pos[r.seed]))
    stats["models_built_for_extraction"] = extraction["models_built"]
    notes += _truncation_notes(cfg)
    t0 = time.perf_counter()
    settings = cfg.summary_settings()
    summaries, baselines, results = [], [], []
    for task_name, lab in labels.items():
        recs = [r for r in all_recs if r.task == task_name]
        results.append(records.table(recs, lab))
        summaries.append(records.summary(recs, lab, settings=settings, n_boot=cfg.n_boot, caveats=cfg.caveats(),
                                         min_gap=cfg.min_gap))
        if cfg.baseline_settings():
            baselines.append(records.summary(recs, lab, settings=cfg.baseline_settings(), n_boot=cfg.n_boot,
                                             min_gap=cfg.min_gap))
    summary = _headline(_order(pd.concat(summaries, ignore_index=True), cfg), cfg)
    baseline = _order(pd.concat(baselines, ignore_index=True), cfg) if baselines else pd.DataFrame()
    timings["summary"] = time.perf_counter() - t0
    sizes = {m: _size(resolve(m, cfg.job.cache_dir)) for m in cfg.models()}
    result = Comparison(cfg, all_recs, labels, pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
                        summary, pd.concat(results, ignore_index=True), timings, stats, notes, sizes, baseline,
                        split_sizes)
    timings["total"] = time.perf_counter() - t_start  # the methods; writing the outputs is timed apart
    if out is not None:
        t0 = time.perf_counter()
        result.write(out, figures)
        timings["diagnostics, figures, files"] = time.perf_counter() - t0
    return result


def _size(info) -> int | None:
    """Parameters stored in a local model's weights; for a hub id, which has none here, its body's from its config
    (`models.body_params`), so that report.md and the size figure have every model."""
    n = n_params(info)
    if n is None and info.identity.get("hub"):
        n = body_params(info)
    return n


def _headline(summary: pd.DataFrame, cfg: CompareConfig) -> pd.DataFrame:
    """`summary` with a `headline` column: True on each method's headline setting (`student_settings`: the
    probe's selected layer, the largest k calibrated, fine-tuning's `best`, or `final` under `--protocol paper`)."""
    heads = cfg.student_settings()
    if summary.empty:
        return summary.assign(headline=pd.Series(dtype=bool))
    return summary.assign(headline=[heads.get(m) == s for m, s in zip(summary["method"], summary["setting"])])


def _truncation_notes(cfg: CompareConfig) -> list[str]:
    """A line for each feature entry of the run (weak, intermediate and strong models, every task) whose inputs
    were truncated, for report.md (fine-tuning truncates the same texts at the same length)."""
    out = []
    for task_name in cfg.job.tasks:
        for m in cfg.models():
            ex = extract_mod.for_job(cfg.job, m, task_name, strong=m in cfg.job.strong)
            if (manifest := extract_mod.entry_manifest(ex)) and (note := extract_mod.truncated_note(manifest)):
                out.append(note)
    return out


def _print_plan(cfg: CompareConfig, loaded: dict) -> dict:
    """Say at the start roughly how long the run takes here (`toolkit.plan`), for every task × strong model
    whose features are not cached yet; a warm rerun skips it (it would cost a model load). Returns the plans by
    (task, strong)."""
    total, lines, plans = 0.0, [], {}
    for task_name, task in loaded.items():
        for strong in cfg.job.strong:
            ex = extract_mod.for_job(cfg.job, strong, task_name)
            if extract_mod.is_cached(ex):
                continue
            chosen = {m: (methods_mod.get(m), cfg.opts(m)) for m in cfg.methods}
            p = plan.estimate(task, resolve(strong, cfg.job.cache_dir), chosen, seeds=len(cfg.job.seeds),
                              sizes=cfg.job.for_task(task).sizes, losses=len(cfg.losses), job=cfg.job)
            total += p.total
            plans[task.name, strong] = p
            lines.append(f"[compare] {task.name} -> {strong}: {p.describe()}")
    if lines:
        print("\n".join(lines + [f"[compare] expected in all: about {_duration(total)} on this machine; "
                                  "seed 0's probe and prompt table is printed as soon as it exists"]),
              file=sys.stderr, flush=True)
    return plans


def _check_writable(out: Path) -> None:
    """Fail in one line, before any model work, when the outputs could not be written to `out` (a read-only
    file system, a parent that is a file, no permission): the run would otherwise be lost at its end. Creates
    nothing: the test file goes into the nearest existing folder of `out` and deletes itself."""
    near = out
    while not near.exists() and near != near.parent:
        near = near.parent
    try:
        if not near.is_dir():
            raise NotADirectoryError(f"{near} is a file")
        with tempfile.TemporaryFile(dir=near):
            pass
    except OSError as e:
        raise ToolkitError(f"cannot write the outputs to {out}: {e.strerror or e}; pass another --out") from None


def _phases(cfg: CompareConfig, sups: tuple) -> list[tuple[tuple, tuple[str, ...]]]:
    """(seeds, methods) in the order they run. The cheap methods (probes, prompting) go first on seed 0 alone, so
    that a table exists within minutes; then on the other seeds; each expensive method (fine-tuning) comes last,
    on its own seeds (`Method.seeds`). Each stage is stored per seed, so the order changes no result."""
    early = tuple(m for m in cfg.methods if not methods_mod.get(m).expensive)
    phases = [(sups[:1], early), (sups[1:], early)] if early else []
    phases += [(methods_mod.get(m).seeds(cfg.opts(m), sups, cfg.job), (m,)) for m in cfg.methods
               if methods_mod.get(m).expensive]
    return [(s, m) for s, m in phases if s and m]


def _print_eta(cfg: CompareConfig, methods, phase_sups, timings: dict, plan, task: str, weak: str,
               strong: str) -> None:
    """One line before each phase: what runs now and when it should end. A method already timed on seed 0
    is projected at that pace; one not yet run takes its share of the start-of-run estimate (a cold run only).
    A stage that turns out to be cached takes less."""
    timed, planned = [], []
    for m in methods:
        done = timings.get(f"{m} {task} {weak} -> {strong}")
        if done is not None:
            timed.append(f"{m} ~{_duration(done * len(phase_sups))}")
        elif plan is not None and (stage := methods_mod.get(m).plan_stage) in plan.seconds:
            n = len(methods_mod.get(m).seeds(cfg.opts(m), tuple(cfg.job.seeds), cfg.job))
            planned.append(f"{m} ~{_duration(plan.seconds[stage] * len(phase_sups) / n)}")
    eta = (f"; ETA at seed 0's pace: {', '.join(timed)}" if timed else "") + \
        (f"; ETA (estimate): {', '.join(planned)}" if planned else "")
    seeds = ",".join(str(s.seed) for s in phase_sups)
    print(f"[compare] {task} {weak} -> {strong}: {', '.join(methods)} on seed(s) {seeds}{eta}",
          file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _print_early(cfg: CompareConfig, recs: list[Predictions], labels: dict[str, int], sups, elapsed: float) -> None:
    """The summary of the first seed's cheap methods, printed as soon as it exists (the full table follows at
    the end): a user sees results minutes into a run whose fine-tuning takes much longer."""
    settings = {m: s for m, s in cfg.summary_settings().items() if not methods_mod.get(m).expensive}
    summ = records.summary(recs, labels, settings=settings, n_boot=cfg.n_boot, caveats=cfg.caveats(),
                           min_gap=cfg.min_gap)
    if summ.empty:
        return
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        table = report.format_summary(_order(summ, cfg)).to_string(index=False)
    print(f"\n[compare] first results after {_duration(elapsed)}: seed {sups[0].seed} only (the full table over every "
          f"seed follows at the end)\n{table}\n", file=sys.stderr, flush=True)


def _order(summary: pd.DataFrame, cfg: CompareConfig) -> pd.DataFrame:
    """Rows in the config's order: task, strong model, method, loss, setting."""
    if summary.empty:
        return summary
    rank = {m: i for i, m in enumerate(cfg.methods)}
    key = summary.assign(_t=summary.task.map({t: i for i, t in enumerate(summary.task.unique())}),
                         _s=summary.strong.map({s: i for i, s in enumerate(cfg.job.strong)}),
                         _m=summary.method.map(rank))
    return key.sort_values(["_t", "_s", "_m", "loss", "setting"], kind="stable").drop(columns=["_t", "_s", "_m"]) \
        .reset_index(drop=True)


# ----------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class RunArgs:
    """Where the outputs go, and how the run talks."""

    out: str | None = None
    """Folder for the outputs (default runs/<task>__<weak>__<strong>, or runs/<preset>)."""
    quiet: bool = flag(False)
    """No progress bars."""
    figures: bool = flag(True)
    """Draw the figures (PNG); `--no-figures` writes the tables and report only."""
    preset: str | None = None
    """A named study (see `PRESETS`): quick, ladder, ladder-finetune, bootstrap, openai-nlp, unsupervised. Options given
    beside it override it."""
    config: str | None = None
    """A run's config.yaml (every output folder has one): run that comparison again; options given beside it
    override it."""
    plugin: str | None = None
    """Modules that register methods, comma-separated: module names (`mypkg.mine`) or .py files. Installed
    packages' methods (entry-point group `toolkit.methods`) need no flag."""


def parse_args(argv: list[str] | None, method: str | None = None, *, extra: type | None = None,
               prog: str | None = None):
    """The command line as a `CompareConfig` (every registered method's options included) and `RunArgs`. With
    `method`, the command of that method alone (`method_main`): its options only, `methods` fixed to it. With
    `extra`, a dataclass of another command's own options (`toolkit.sweep`), parsed beside them and returned
    third."""
    argv = sys.argv[1:] if argv is None else argv
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", default=None)
    first.add_argument("--config", default=None)
    first.add_argument("--plugin", default=None)
    known, _ = first.parse_known_args(argv)
    for spec in config.as_tuple(known.plugin or ""):  # before the parser: their options become flags
        methods_mod.load_plugin(spec)
    if known.preset is not None and known.config is not None:
        raise ToolkitError("give --preset or --config, not both")
    default = CompareConfig() if method is None else CompareConfig(methods=(method,))
    if known.preset is not None:
        default = preset(known.preset, **({} if method is None else {"methods": (method,)}))
    elif known.config is not None:
        default = load_config(known.config)
        default = default if method is None else dataclasses.replace(default, methods=(method,))
    chosen = methods_mod.registered() if method is None else {method: methods_mod.get(method)}
    prog = prog or "python -m toolkit." + ("compare" if method is None else
                                           type(chosen[method]).__module__.split(".")[-1])
    about = __doc__.split("\n")[0] if method is None else (
        f"{(type(chosen[method]).__doc__ or method).strip().splitlines()[0]} Run alone, as in a comparison "
        f"(`python -m toolkit.compare --methods {method}`): the same supervision, stores and outputs.")
    shared = config.field_names(JobConfig) | config.field_names(CompareConfig) | config.field_names(RunArgs) | (
        config.field_names(extra) if extra is not None else set())
    for name, m in chosen.items():  # a shared name would turn the shared option into a prefixed one
        if clash := sorted(config.field_names(m.Options) & shared):
            raise ToolkitError(f"method {name} has options named as the comparison's own ({', '.join(clash)}): "
                               "rename them in its Options")
    parser = config.parser(prog, about)
    parser.add_arguments(CompareConfig, dest="config", default=default)
    for name, m in chosen.items():
        parser.add_arguments(m.Options, dest=f"options.{name}", default=default.options[name])
    parser.add_arguments(RunArgs, dest="run")
    if extra is not None:
        parser.add_arguments(extra, dest="extra")
    args = parser.parse_args(argv)
    cfg = args.config
    if method is not None and cfg.methods != (method,):
        raise ToolkitError(f"{prog} runs {method} alone; for several methods use python -m toolkit.compare "
                           f"--methods {','.join(cfg.methods)}")
    options = {**default.options, **{name: getattr(args, f"options.{name}") for name in chosen}}
    cfg = dataclasses.replace(cfg, options=options)  # every field of the parsed config, the options attached
    return (cfg, args.run) if extra is None else (cfg, args.run, args.extra)


def default_out(cfg: CompareConfig, args: RunArgs, method: str | None = None) -> Path:
    """Where a run's outputs go: `--out`, else runs/<preset>, else runs/<tasks>__<weak>__<strong>[__<method>]."""
    stem = "__".join(["+".join(Path(t).stem for t in cfg.job.tasks), Path(cfg.job.weak).name,
                      "+".join(Path(s).name for s in cfg.job.strong)] + ([method] if method else []))
    return Path(args.out) if args.out else Path("runs") / args.preset if args.preset else Path("runs") / stem


def _rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 alone): only rank 0 writes and prints."""
    return int(os.environ.get("RANK", "0"))


@cli_main
def main(argv: list[str] | None = None, method: str | None = None) -> int:
    """`python -m toolkit.compare`; with `method`, that method's own command (`method_main`)."""
    cfg, args = parse_args(argv, method)
    t_start = time.perf_counter()
    out = default_out(cfg, args, method)
    result = run_config(cfg, out=out if _rank() == 0 else None, progress=not args.quiet, figures=args.figures)
    if _rank() != 0:
        return 0
    print_result(result)
    work = ", ".join(f"{k} {v}" for k, v in result.stats.items())
    what = "report.md, summary.csv, results.csv, diagnostics.csv" + (", figures" if args.figures else "")
    print(f"\nwrote {out}/ ({what}) in "
          f"{time.perf_counter() - t_start:.0f} s; not from a cache: {work}", file=sys.stderr)
    return 0


def print_result(result: Comparison) -> None:
    """The summary table and the notes, as the command prints them."""
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        print(report.format_summary(result.summary).to_string(index=False))
    for n in result.notes:
        print(f"note: {n}")


def method_main(name: str, argv: list[str] | None = None) -> int:
    """The command of one registered method (`python -m toolkit.probe`, `toolkit.prompt`, `toolkit.finetune`):
    a comparison with that method alone, its `JobConfig` and its own options (no others), so it supervises,
    stores and writes exactly as `python -m toolkit.compare --methods NAME` does."""
    return main(argv, method=name)


if __name__ == "__main__":
    raise SystemExit(main())
