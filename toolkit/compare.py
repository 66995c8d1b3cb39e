"""The main job: every elicitation method side by side, on the same splits and weak labels.

    python -m toolkit.compare --task sentiment --weak minilm-l6 --strong smollm2-135m --out runs/default

From a notebook:

    from toolkit import compare
    result = compare.run("sentiment", weak="minilm-l6", strong="smollm2-135m")
    result.summary                 # weak / student / ceiling and PGR with 95% CIs, per method x loss x setting
    result.write("runs/default")   # results.csv, summary.csv, diagnostics.csv, figures, report.md

Per task, the weak supervisor is trained once per seed (`toolkit.weak.supervise`); its splits and soft
labels are handed to every method, so the probe, prompt and fine-tune students differ only in how the
strong model is elicited. Every stage reuses its cache (features, prompt scores, fine-tune runs): a rerun
with nothing new loads no model and trains nothing (probe fits are stored too; 14 s for the default run).
Fine-tuning is the expensive arm, so by default it runs on the first `finetune_seeds` seeds only (its
summary rows say how many seeds they average).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit import chain as chain_mod
from toolkit import extract as extract_mod
from toolkit import records
from toolkit._util import ToolkitError, add_config_args, cli_main, config_from_args
from toolkit.losses import get_loss
from toolkit.models import DEFAULT_STRONG, DEFAULT_WEAK, n_params, resolve
from toolkit.probe import MIN_CEILING_TRAIN
from toolkit.records import CHAIN_SEP, Predictions
from toolkit.tasks import SplitSizes
from toolkit.weak import TFIDF as WEAK_TFIDF
from toolkit.weak import WeakConfig, check_sizes, solver, supervise

__all__ = ["CompareConfig", "Comparison", "run", "main", "METHODS", "SUMMARY_SETTINGS"]

METHODS = ("probe", "prompt", "finetune")
SUMMARY_SETTINGS = {"probe": ("select", "layer=0"), "prompt": ("k={k}", "k={k},cal"), "finetune": ("best", "final")}
"""Settings summarised per method: the probe's selected layer and its input-embedding sanity baseline; the
largest k raw and calibrated; fine-tuning's best-by-weak-agreement and final checkpoints."""


LADDER = ("smollm2-135m", "gemma3-270m", "qwen2.5-0.5b")
STUDY_TASKS = ("sentiment", "fever", "strategyqa", "multiemo", "tweets")
PRESETS: dict[str, dict] = {
    "quick": {"methods": ("probe", "prompt")},
    "ladder": {"tasks": STUDY_TASKS, "strong": LADDER, "methods": ("probe", "prompt"), "limit": 2000},
    "ladder-finetune": {"tasks": ("sentiment", "fever"), "strong": ("smollm2-135m",), "methods": ("finetune",),
                        "limit": 2000, "finetune_seeds": 3},
    "bootstrap": {"chain": ("minilm-l6", "smollm2-135m", "gemma3-270m"), "methods": ("probe", "prompt"),
                  "limit": 2000},
}
"""Named studies (`--preset NAME`; `preset(NAME)` from Python). `quick` is the default comparison without its
expensive arm, fine-tuning: probes and prompting on sentiment, minilm-l6 -> smollm2-135m, in 16 minutes cold on
the slower of the two 2-core CPUs measured (AVX2 only; the full default there takes 49). `ladder` is the
reproduction study's probes and prompting over the strong-model ladder and five tasks; `ladder-finetune` its
fine-tuning arm; `bootstrap` the chain through gemma3-270m. Other options given with a preset override it."""


def preset(name: str, **overrides) -> CompareConfig:
    """The `CompareConfig` of a named study, with `overrides`."""
    if name not in PRESETS:
        raise ToolkitError(f"unknown preset '{name}': choose from {', '.join(PRESETS)}")
    return CompareConfig(**{**PRESETS[name], **overrides})


def _tuple(value) -> tuple:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


@dataclass(frozen=True)
class CompareConfig:
    """A side-by-side comparison: tasks x strong models x methods x losses x seeds."""

    tasks: tuple[str, ...] = ("sentiment",)
    """Tasks (names, `bigbench:<path>`, or .jsonl/.csv files); on the CLI `--task a,b`."""
    weak: str = DEFAULT_WEAK
    """Weak supervisor's model (a probe on its cached features, trained on weak_train gold)."""
    strong: tuple[str, ...] = (DEFAULT_STRONG,)
    """Strong models (catalog names, folders or hub ids); several give PGR against strong-model size."""
    methods: tuple[str, ...] = METHODS
    """Elicitation methods: any of probe, prompt, finetune."""
    losses: tuple[str, ...] = ("xent", "logconf")
    """Student losses for probes and fine-tuning (prompting has no loss)."""
    seeds: int | tuple[int, ...] = 3
    """Seeds for probes and prompting (an int n means 0..n-1; or a tuple, `--seeds 5,6,7`): each draws new
    weak_train/strong_train/val splits and weak labels; test is one fixed pool for every seed."""
    finetune_seeds: int = 1
    """Fine-tuning runs on the first this-many seeds (it is the expensive arm; 0 = all seeds)."""
    sizes: SplitSizes = SplitSizes()
    """Split sizes weak_train,strong_train,val,test (test is one fixed pool for every seed)."""
    limit: int = 2000
    """Class-balanced subsample of each task before splitting (0 = all). The default, 2000, holds the default
    splits (1700 examples) and halves the strong model's extraction on `sentiment` (cold and warm timings of
    the default run on two CPU kinds: README, "The main job"). Pass 0 for the whole task."""
    ks: tuple[int, ...] = (0, 8)
    """Prompt demonstrations per prompt (even); 0 is the zero-shot baseline."""
    epochs: int = 2
    """Fine-tuning epochs over strong_train."""
    chain: tuple[str, ...] = ()
    """Bootstrapping chain `weak, m1, …, strong` (`toolkit.chain`): intermediates m1… are cross-fitted probes,
    each trained on the previous model's labels; every method then trains the strong model on the last
    intermediate's labels, beside the direct weak -> strong run. Empty: direct only."""
    control: bool = True
    """Train the random-noise control of each probe student (gold flipped at the supervisor's error count)."""
    n_boot: int = 1000
    """Bootstrap resamples for the PGR intervals."""
    dtype: str = "auto"
    """`auto`, `float32` or `bfloat16`, for prompting and fine-tuning. `auto` prompts in bfloat16 on a GPU and
    float32 on a CPU, and fine-tunes with bf16 autocast wherever bf16 is native, CPUs with AVX512-BF16
    included (`toolkit.finetune.mixed_precision`); the report names what was used."""
    device: str = "auto"
    """`auto`, `cpu` or `cuda`: where every stage runs (probes too: `auto` fits them on a GPU when there is
    one, with the batched torch engine)."""
    probe_engine: str = "auto"
    """Probe solver engine (`toolkit.linear`): `auto` (numpy on a CPU, batched torch on a GPU), `numpy` or
    `torch`. Both give the same probabilities to ~1e-7."""
    cache_dir: str | None = None
    """Cache root (default `cache/` in the project, or $TOOLKIT_CACHE_DIR)."""

    def __post_init__(self) -> None:
        for name in ("tasks", "strong", "methods", "losses", "chain"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        if self.chain:
            if len(self.chain) < 2 or len(set(self.chain)) < len(self.chain):
                raise ToolkitError(f"a chain needs at least two different models, weak first, strong last: "
                                   f"{CHAIN_SEP.join(self.chain)}")
            if self.weak not in (DEFAULT_WEAK, self.chain[0]) or (self.strong not in ((DEFAULT_STRONG,),
                                                                                      (self.chain[-1],))):
                raise ToolkitError(f"the chain {CHAIN_SEP.join(self.chain)} starts with the weak model and ends with "
                                   f"the strong one; got weak={self.weak}, strong={','.join(self.strong)}")
            object.__setattr__(self, "weak", self.chain[0])
            object.__setattr__(self, "strong", (self.chain[-1],))
            if WEAK_TFIDF in self.chain[1:]:
                raise ToolkitError("tfidf can only start a chain (it has no features to probe)")
        object.__setattr__(self, "ks", tuple(int(k) for k in _tuple(self.ks)))
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ToolkitError(f"unknown method(s) {bad or '(none)'}: choose from {', '.join(METHODS)}")
        if not self.tasks or not self.strong:
            raise ToolkitError("compare needs at least one task and one strong model")
        for loss in self.losses:
            get_loss(loss.split(":")[0])  # a bad loss name fails before any long work
        seeds = self.seeds
        if isinstance(seeds, str):
            try:
                seeds = int(seeds) if "," not in seeds else tuple(int(x) for x in _tuple(seeds))
            except ValueError:
                raise ToolkitError(f"seeds must be a number n (seeds 0..n-1) or a list like 0,1,2; got '{seeds}'") \
                    from None
        seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(x) for x in seeds)
        if not seeds or len(set(seeds)) < len(seeds) or min(seeds) < 0 or self.finetune_seeds < 0:
            raise ToolkitError(f"seeds must be >= 1 distinct non-negative seeds and finetune_seeds >= 0, got "
                               f"{self.seeds}, {self.finetune_seeds}")
        object.__setattr__(self, "seeds", seeds)
        check_sizes(self.sizes, self.weak)  # before any model work, as every check here
        solver(self.device, self.probe_engine)
        if "probe" in self.methods and self.sizes.strong_train < MIN_CEILING_TRAIN:
            raise ToolkitError(f"strong_train={self.sizes.strong_train} is too small: the probe ceiling chooses its C "
                               f"by 3-fold cross-validation on it and needs strong_train >= {MIN_CEILING_TRAIN}")
        if "prompt" in self.methods and (not self.ks or any(k < 0 or k % 2 for k in self.ks)):
            raise ToolkitError(f"ks must be even numbers >= 0 (half the demonstrations per class), got {self.ks}")

    def summary_settings(self) -> tuple[str, ...]:
        k = max(self.ks) if self.ks else 0
        return tuple(s.format(k=k) for m in self.methods for s in SUMMARY_SETTINGS[m])


@dataclass
class Comparison:
    """What `run` returns: every prediction record and the tables built from them."""

    config: CompareConfig
    records: list[Predictions]
    labels: dict[str, dict[str, int]]
    """Gold labels per task: task name -> id -> 0/1."""
    curves: pd.DataFrame
    """Fine-tuning curves (step, val agreement with weak labels, test accuracy) of every run."""
    summary: pd.DataFrame
    results: pd.DataFrame
    """The tidy table: one row per task, models, method, role, loss, setting, seed, split and metric."""
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage."""
    stats: dict[str, int] = field(default_factory=dict)
    """Work done rather than loaded: models built for extraction, prompts scored, fine-tunings trained."""
    notes: list[str] = field(default_factory=list)
    sizes: dict[str, int | None] = field(default_factory=dict)
    """Strong (and weak) models' parameter counts."""
    _diag: tuple | None = None

    def _diagnostics(self):
        if self._diag is None:
            from toolkit import diagnostics

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
        """The setting that represents each method in cross-method views: the probe's selected layer, the
        largest k with calibration, fine-tuning's best checkpoint."""
        k = max(self.config.ks) if self.config.ks else 0
        return {"probe": "select", "prompt": f"k={k},cal", "finetune": "best"}

    def figures(self) -> dict:
        """The standard figures (name -> matplotlib Figure); see `toolkit.plots`."""
        return _figures(self)

    def write(self, out: str | Path, figures: bool = True) -> list[Path]:
        """Write results.csv, summary.csv, diagnostics.csv, predictions.csv.gz, curves.csv, the figures (PNG)
        and report.md to `out`; return the paths written. `figures=False` skips the PNGs (the slowest part of
        writing: about a second per figure on a 2-core CPU); `figures()` still draws them on demand."""
        return _write(self, Path(out), figures)


def _strong_runs(cfg: CompareConfig, task_name: str, strong: str, sups, weak: str, progress: bool, stats: dict,
                 notes: list[str], methods: tuple[str, ...]) -> tuple[list[Predictions], list[pd.DataFrame],
                                                                  dict[str, float]]:
    """Every method of `methods` on the seeds of `sups`; returns records, fine-tuning curves, seconds per method."""
    from toolkit import finetune, probe, prompt

    recs, curves, times = [], [], {}
    common = {"task": task_name, "weak": weak, "strong": strong, "sizes": cfg.sizes, "limit": cfg.limit,
              "cache_dir": cfg.cache_dir}
    info = resolve(strong, cfg.cache_dir)
    for method in methods:
        t0 = time.perf_counter()
        if method == "probe":
            pcfg = probe.ProbeRunConfig(**common, seeds=cfg.seeds, losses=cfg.losses, control=cfg.control,
                                        device=cfg.device, engine=cfg.probe_engine)
            out, _ = probe.run_records(pcfg, progress=progress, sups=sups)
        elif method == "prompt":
            if info.arch != "causal":
                note = f"prompting skipped for {strong}: an encoder has no language-model head to prompt"
                if note not in notes:
                    notes.append(note)
                continue
            pcfg = prompt.PromptConfig(**common, seeds=tuple(s.seed for s in sups), ks=cfg.ks, dtype=cfg.dtype,
                                       device=cfg.device)
            before = prompt.STATS["scored"]
            out, _ = prompt.run_records(pcfg, progress=progress, sups=sups)
            stats["prompts_scored"] += prompt.STATS["scored"] - before
        else:
            fcfg = finetune.FinetuneConfig(**common, seeds=tuple(s.seed for s in sups), losses=cfg.losses,
                                           epochs=cfg.epochs, dtype=cfg.dtype, device=cfg.device)
            before = finetune.STATS["trainings"]
            out, curve, _ = finetune.run_with_curves(fcfg, progress=progress, sups=sups)
            stats["finetunes_trained"] += finetune.STATS["trainings"] - before
            curves.append(curve)
        recs += [r for r in out if r.role != "weak"]
        times[f"{method} {task_name} {weak} -> {strong}"] = time.perf_counter() - t0
    return recs, curves, times


def run(tasks: str | tuple[str, ...] = "sentiment", weak: str = DEFAULT_WEAK,
        strong: str | tuple[str, ...] = DEFAULT_STRONG, methods=METHODS, losses=("xent", "logconf"), seeds: int = 3,
        *, out: str | Path | None = None, progress: bool = True, figures: bool = True, **config) -> Comparison:
    """Compare every method in `methods` for each task x strong model, on the same splits and weak labels.

    `config` takes any other `CompareConfig` field (finetune_seeds, sizes, limit, ks, epochs, control, ...).
    With `out`, the outputs are written there as by `Comparison.write` (`figures=False`: no PNGs)."""
    cfg = CompareConfig(tasks=tasks, weak=weak, strong=strong, methods=methods, losses=losses, seeds=seeds, **config)
    return run_config(cfg, out=out, progress=progress, figures=figures)


def run_config(cfg: CompareConfig, *, out: str | Path | None = None, progress: bool = True,
               figures: bool = True) -> Comparison:
    """`run` for a ready `CompareConfig`; `figures` as in `Comparison.write`."""
    t_start = time.perf_counter()
    built = extract_mod.STATS["models_built"]
    stats = {"prompts_scored": 0, "finetunes_trained": 0}
    all_recs: list[Predictions] = []
    labels: dict[str, dict[str, int]] = {}
    curves: list[pd.DataFrame] = []
    timings: dict[str, float] = {}
    notes: list[str] = []
    # Every name is checked before any long work: a bad task or model fails in a second, not after extraction.
    loaded = {t: extract_mod.load_task(extract_mod.ExtractConfig(task=t, limit=cfg.limit, cache_dir=cfg.cache_dir))
              for t in cfg.tasks}
    for m in dict.fromkeys((cfg.weak, *cfg.chain, *cfg.strong)):
        if m != WEAK_TFIDF:
            resolve(m, cfg.cache_dir)
    if out is not None:
        _check_writable(Path(out))
    if set(cfg.methods) == {"prompt"} and all(resolve(s, cfg.cache_dir).arch != "causal" for s in cfg.strong):
        raise ToolkitError(f"nothing to run: prompting needs a decoder, and {', '.join(cfg.strong)} "
                           f"{'is an encoder' if len(cfg.strong) == 1 else 'are encoders'}; add --methods probe or "
                           "pass a decoder as --strong")
    plans = _print_plan(cfg, loaded) if progress else {}
    for task_name in cfg.tasks:
        t0 = time.perf_counter()
        task = loaded[task_name]
        if task.name in labels:
            raise ToolkitError(f"task '{task.name}' is listed twice")
        weak_cfg = WeakConfig(cfg.weak, device=cfg.device, engine=cfg.probe_engine)
        sups = supervise(task, cfg.seeds, cfg.sizes, weak_cfg, limit=cfg.limit, cache_dir=cfg.cache_dir,
                         progress=progress)
        timings[f"weak {task.name}"] = time.perf_counter() - t0
        labels[task.name] = dict(zip(task.ids, (int(v) for v in task.labels)))
        all_recs += [r for s in sups for r in s.weak if r.split != "weak_train"]
        runs = [(sups, cfg.weak)]
        if len(cfg.chain) > 2:
            t0 = time.perf_counter()
            inter = [(m, extract_mod.extract(extract_mod.ExtractConfig(model=m, task=task_name, limit=cfg.limit,
                                                                       cache_dir=cfg.cache_dir), progress=progress))
                     for m in cfg.chain[1:-1]]
            chain_sups, inter_recs, chain_name = chain_mod.bootstrap(sups, inter, first=cfg.weak,
                                                                     fit=solver(cfg.device, cfg.probe_engine),
                                                                     cache_dir=cfg.cache_dir)
            all_recs += inter_recs
            runs.append((chain_sups, chain_name))
            timings[f"chain {task.name} {chain_name}"] = time.perf_counter() - t0
        for strong in cfg.strong:
            if "probe" in cfg.methods:  # timed on its own, so that seed 0's probe time (and the ETA) is fitting only
                t0 = time.perf_counter()
                extract_mod.extract(extract_mod.ExtractConfig(model=strong, task=task_name, limit=cfg.limit,
                                                              cache_dir=cfg.cache_dir), progress=progress)
                timings[f"extract {task.name} {strong}"] = time.perf_counter() - t0
            for run_sups, weak_name in runs:
                block: list[Predictions] = []
                for i, (phase_sups, methods) in enumerate(_phases(cfg, run_sups)):
                    if progress:
                        _print_eta(cfg, methods, phase_sups, timings, plans.get((task.name, strong)), task.name,
                                   weak_name, strong)
                    recs, c, t = _strong_runs(cfg, task.name, strong, phase_sups, weak_name, progress, stats, notes,
                                              methods)
                    block += recs
                    curves += c
                    for k, v in t.items():
                        timings[k] = timings.get(k, 0.0) + v
                    if progress and i == 0 and recs:
                        weak_recs = [r for s in phase_sups for r in s.weak if r.split != "weak_train"]
                        _print_early(cfg, weak_recs + recs, labels[task.name], phase_sups,
                                     time.perf_counter() - t_start)
                # back in the one-pass order (method, then seed), so that results.csv does not depend on the phases
                rank = {m: i for i, m in enumerate(cfg.methods)}
                pos = {s.seed: i for i, s in enumerate(run_sups)}
                all_recs += sorted(block, key=lambda r: (rank[r.method], pos[r.seed]))
    stats["models_built_for_extraction"] = extract_mod.STATS["models_built"] - built
    t0 = time.perf_counter()
    settings = cfg.summary_settings()
    summaries, results = [], []
    for task_name, lab in labels.items():
        recs = [r for r in all_recs if r.task == task_name]
        results.append(records.table(recs, lab))
        summaries.append(records.summary(recs, lab, settings=settings, n_boot=cfg.n_boot))
    summary = _order(pd.concat(summaries, ignore_index=True), cfg)
    timings["summary"] = time.perf_counter() - t0
    sizes = {m: n_params(resolve(m, cfg.cache_dir)) for m in dict.fromkeys((cfg.weak, *cfg.chain, *cfg.strong))
             if m != WEAK_TFIDF}
    result = Comparison(cfg, all_recs, labels, pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
                        summary, pd.concat(results, ignore_index=True), timings, stats, notes, sizes)
    timings["total"] = time.perf_counter() - t_start  # the methods; writing the outputs is timed apart
    if out is not None:
        t0 = time.perf_counter()
        result.write(out, figures)
        timings["diagnostics, figures, files"] = time.perf_counter() - t0
    return result


def _print_plan(cfg: CompareConfig, loaded: dict) -> dict:
    """Say at the start roughly how long the run takes here (`toolkit.plan`), for every task × strong model
    whose features are not cached yet; a warm rerun skips it (it would cost a model load). Returns the plans by
    (task, strong)."""
    from toolkit import plan

    total, lines, plans = 0.0, [], {}
    for task_name, task in loaded.items():
        for strong in cfg.strong:
            ex = extract_mod.ExtractConfig(model=strong, task=task_name, limit=cfg.limit, cache_dir=cfg.cache_dir)
            if extract_mod.is_cached(ex):
                continue
            p = plan.estimate(task, resolve(strong, cfg.cache_dir), seeds=len(cfg.seeds), sizes=cfg.sizes,
                              methods=cfg.methods, ks=cfg.ks, finetune_seeds=cfg.finetune_seeds,
                              losses=len(cfg.losses), epochs=cfg.epochs, device=cfg.device)
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


def _phases(cfg: CompareConfig, sups) -> list[tuple[list, tuple[str, ...]]]:
    """(seeds, methods) in the order they run. The cheap methods (probes, prompting) go first on seed 0 alone, so
    that a table exists within minutes; then on the other seeds; fine-tuning, the expensive arm, comes last on
    its first `finetune_seeds` seeds. Each stage is stored per seed, so the order changes no result."""
    early = tuple(m for m in cfg.methods if m != "finetune")
    phases = [(sups[:1], early), (sups[1:], early)] if early else []
    if "finetune" in cfg.methods:
        phases.append((sups[: cfg.finetune_seeds or len(sups)], ("finetune",)))
    return [(s, m) for s, m in phases if s and m]


_PLAN_STAGE = {"probe": "probes", "prompt": "prompting", "finetune": "fine-tuning"}


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
        elif plan is not None and _PLAN_STAGE[m] in plan.seconds:
            n = (cfg.finetune_seeds or len(cfg.seeds)) if m == "finetune" else len(cfg.seeds)
            planned.append(f"{m} ~{_duration(plan.seconds[_PLAN_STAGE[m]] * len(phase_sups) / n)}")
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
    settings = tuple(s for s in cfg.summary_settings() if not s.startswith(("best", "final")))
    summ = records.summary(recs, labels, settings=settings, n_boot=cfg.n_boot)
    if summ.empty:
        return
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        table = format_summary(_order(summ, cfg)).to_string(index=False)
    print(f"\n[compare] first results after {_duration(elapsed)}: seed {sups[0].seed} only (the full table over every "
          f"seed follows at the end)\n{table}\n", file=sys.stderr, flush=True)


def _order(summary: pd.DataFrame, cfg: CompareConfig) -> pd.DataFrame:
    """Rows in the config's order: task, strong model, method, loss, setting."""
    if summary.empty:
        return summary
    rank = {m: i for i, m in enumerate(cfg.methods)}
    key = summary.assign(_t=summary.task.map({t: i for i, t in enumerate(summary.task.unique())}),
                         _s=summary.strong.map({s: i for i, s in enumerate(cfg.strong)}),
                         _m=summary.method.map(rank))
    return key.sort_values(["_t", "_s", "_m", "loss", "setting"], kind="stable").drop(columns=["_t", "_s", "_m"]) \
        .reset_index(drop=True)


# ----------------------------------------------------------------------------- outputs

PRINT_COLUMNS = ["task", "strong", "method", "loss", "setting", "n_seeds", "weak_acc", "student_acc", "ceiling_acc",
                 "pgr_acc", "pgr_acc_lo", "pgr_acc_hi", "pgr_auroc", "pgr_auroc_lo", "pgr_auroc_hi"]


def format_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as printed: accuracies to 3 decimals, PGR as `mean [lo, hi]`, undefined PGR with its reason."""
    if summary.empty:
        return summary
    cols = [c for c in PRINT_COLUMNS[:9] if c in summary]
    if summary["weak"].nunique() > 1:  # e.g. direct and bootstrapped students
        cols.insert(1, "weak")
    out = summary[cols].copy()
    for c in ("weak_acc", "student_acc", "ceiling_acc"):
        out[c] = out[c].map(lambda v: f"{v:.3f}")
    for m in ("acc", "auroc"):
        out[f"PGR {m}"] = [
            f"{r[f'pgr_{m}']:.2f} [{r[f'pgr_{m}_lo']:.2f}, {r[f'pgr_{m}_hi']:.2f}]" if np.isfinite(r[f"pgr_{m}"])
            else "undefined" for _, r in summary.iterrows()]
    notes = summary["pgr_acc_note"].fillna("")
    if "caveat" in summary:
        notes = [("; ".join(x for x in (n, c) if x)) for n, c in zip(notes, summary["caveat"].fillna(""))]
    out["note"] = notes
    return out


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    def cell(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _figures(result: Comparison) -> dict:
    from toolkit import diagnostics, plots

    figs = {}
    summ = result.summary
    if summ.empty:
        return figs
    cfg = result.config
    settings = result.student_settings
    figs["pgr_accuracy"] = plots.pgr_bars(summ, metric="acc")
    figs["pgr_auroc"] = plots.pgr_bars(summ, metric="auroc")
    figs["accuracy"] = plots.accuracy_bars(summ)
    ds = result.diagnostics_summary
    if not ds.empty:
        figs["agreement"] = plots.agreement_bars(ds, settings=settings)
    ns = diagnostics.noise_control(result.diagnostics)
    if not ns.empty:
        figs["noise_control"] = plots.noise_control(ns, settings=settings)
    if (result.diagnostics.diagnostic == "misfit").any():
        figs["misfit"] = plots.misfit_scatter(result.diagnostics)
    if len(cfg.strong) > 1:
        figs["accuracy_vs_size"] = plots.accuracy_vs_size(summ, {k: v for k, v in result.sizes.items() if v})
    by_task = {t: [r for r in result.records if r.task == t] for t in result.labels}
    layers = pd.concat([diagnostics.layer_curves([r for r in recs if r.method == "probe"], result.labels[t],
                                                 split=("val", "test")) for t, recs in by_task.items()],
                       ignore_index=True)
    if len(layers):  # the weak supervisor alone (a fine-tune-only run) has no layer sweep
        figs["layers"] = plots.layer_curves(layers)
    if cfg.chain and len(cfg.chain) > 2:
        ch = pd.concat([diagnostics.chain_accuracy(recs, result.labels[t], settings=settings)
                        for t, recs in by_task.items()], ignore_index=True)
        if len(ch):
            figs["chain"] = plots.chain_accuracy(ch)
    if not result.curves.empty:
        figs["finetune_curves"] = plots.finetune_curves(result.curves)
    cross = pd.concat([diagnostics.cross_agreement(recs, result.labels[t], settings=settings)
                       for t, recs in by_task.items()], ignore_index=True)
    if len(cross):
        figs["cross_agreement"] = plots.cross_agreement_heatmap(cross)
    calib = pd.concat([diagnostics.calibration(recs, result.labels[t], settings=settings)
                       for t, recs in by_task.items()], ignore_index=True)
    if len(calib):
        figs["calibration"] = plots.calibration_hist(calib)
    return figs


def _precision_lines(cfg: CompareConfig) -> list[str]:
    """What `dtype` resolved to on this machine, for the methods that run the strong model."""
    from toolkit.models import dtype_name, pick_device

    out = []
    if "prompt" in cfg.methods:
        out.append(f"prompting weights: {dtype_name(cfg.dtype, pick_device(cfg.device))}")
    if "finetune" in cfg.methods:
        from toolkit.finetune import FinetuneConfig, mixed_precision

        mp = mixed_precision(FinetuneConfig(dtype=cfg.dtype, device=cfg.device))
        out.append("fine-tuning: fp32 weights, " + ("bf16 autocast" if mp == "bf16" else "fp32 compute"))
    return ["", "Precision on this machine: " + "; ".join(out) + "."] if out else []


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "numpy", "scikit-learn", "pandas", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if rev.returncode == 0:
            out["toolkit commit"] = rev.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _write(result: Comparison, out: Path, figures: bool = True) -> list[Path]:
    from toolkit import plots
    from toolkit._util import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name: str, data: bytes) -> None:
        atomic_write_bytes(out / name, data)
        written.append(out / name)

    put("results.csv", result.results.to_csv(index=False).encode())
    put("summary.csv", result.summary.to_csv(index=False).encode())
    put("diagnostics.csv", result.diagnostics.to_csv(index=False).encode())
    put("diagnostics_summary.csv", result.diagnostics_summary.to_csv(index=False).encode())
    put("predictions.csv.gz", _gz(records.predictions_frame(result.records).to_csv(index=False, float_format="%.9g")))
    if not result.curves.empty:
        put("curves.csv", result.curves.to_csv(index=False).encode())
    figs = result.figures() if figures else {}
    if figs:
        written += plots.save_all(figs, out)
    put("report.md", _report(result, sorted(figs)).encode())
    return written


def _gz(text: str) -> bytes:
    import gzip

    return gzip.compress(text.encode(), mtime=0)


def _report(result: Comparison, figures: list[str]) -> str:
    cfg = result.config
    lines = ["# Weak-to-strong comparison", "",
             f"Tasks {', '.join(cfg.tasks)}; weak supervisor `{cfg.weak}`; strong "
             f"{', '.join(f'`{s}`' for s in cfg.strong)}; methods {', '.join(cfg.methods)}.", "",
             "PGR = (student − weak) / (ceiling − weak) on the fixed test pool, mean over seeds with a paired "
             "bootstrap 95% interval (test examples × seeds). Students are trained on the weak supervisor's soft "
             "labels of `strong_train`; ceilings on the gold labels of the same inputs; model selection uses weak "
             "labels of `val` only.", "", "## Summary", "", markdown_table(format_summary(result.summary)), ""]
    ds = result.diagnostics_summary
    if not ds.empty:
        lines += ["## Imitation and agreement (test, mean over seeds)", "",
                  "Agreement of each student with its supervisor, overall and split by whether the supervisor is "
                  "right; a `control` student was trained on gold flipped at random at the supervisor's error "
                  "count.", "", markdown_table(_diag_wide(ds, cfg.summary_settings())), ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({name}.png)" for name in figures] + [""]
    if result.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    settings = {k: (", ".join(map(str, v)) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    settings["sizes"] = ", ".join(f"{k}={v}" for k, v in asdict(cfg.sizes).items())
    lines += ["## Settings", "", markdown_table(pd.DataFrame({"setting": list(settings),
                                                              "value": [str(v) for v in settings.values()]})), "",
              "Model sizes (parameters): " + ", ".join(f"`{k}` {v / 1e6:.0f}M" for k, v in result.sizes.items() if v),
              *_precision_lines(cfg),
              "", "## Versions", "", markdown_table(pd.DataFrame({"package": list(_versions()),
                                                                  "version": list(_versions().values())})), "",
              "## Work done and time", "",
              "Work that was not served by a cache in this run: " + ", ".join(f"{k} {v}" for k, v in
                                                                             result.stats.items()) + ".", "",
              markdown_table(pd.DataFrame({"stage": list(result.timings),
                                           "seconds": [f"{v:.1f}" for v in result.timings.values()]})), ""]
    return "\n".join(lines)


def _diag_wide(ds: pd.DataFrame, settings: tuple[str, ...]) -> pd.DataFrame:
    keep = ["agree", "agree_weak_right", "agree_weak_wrong", "student_acc"]
    sub = ds[ds.diagnostic.isin(keep) & ds.role.isin(["student", "control"]) & ds.setting.isin(settings)
             & (ds.split == "test")]
    if sub.empty:
        return sub
    idx = [c for c in ("task", "weak", "strong", "method", "role", "loss", "setting") if c in sub]
    wide = sub.pivot_table(index=idx, columns="diagnostic", values="mean", aggfunc="mean").reset_index()
    return wide[idx + [k for k in keep if k in wide]]


# ----------------------------------------------------------------------------- CLI

@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.compare", description=__doc__.split("\n")[0])
    add_config_args(parser, CompareConfig,
                    skip=("tasks", "strong", "methods", "losses", "sizes", "ks", "chain", "seeds"))
    parser.add_argument("--seeds", default="3", help="number of seeds n (0..n-1), or a list like 5,6,7")
    parser.add_argument("--chain", default="", help="bootstrapping chain weak,m1,...,strong (overrides --weak and "
                                                    "--strong), e.g. minilm-l6,smollm2-135m,gemma3-270m")
    parser.add_argument("--task", default="sentiment", help="task(s), comma-separated")
    parser.add_argument("--strong", default=DEFAULT_STRONG, help="strong model(s), comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: probe,prompt,finetune")
    parser.add_argument("--losses", default="xent,logconf", help="comma-separated student losses")
    parser.add_argument("--sizes", default="500,500,200,500", help="weak_train,strong_train,val,test")
    parser.add_argument("--ks", default="0,8", help="prompt demonstrations, comma-separated even numbers")
    parser.add_argument("--out", default=None, help="folder for the outputs (default runs/<task>__<weak>__<strong>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--no-figures", action="store_true", help="write the tables and report only, no PNGs")
    parser.add_argument("--preset", default=None, help=f"a named study: {', '.join(PRESETS)} (options given "
                                                       "beside it override it)")
    known, _ = parser.parse_known_args(argv)
    if known.preset is not None:
        if known.preset not in PRESETS:
            raise ToolkitError(f"unknown preset '{known.preset}': choose from {', '.join(PRESETS)}")
        dest = {"tasks": "task"}
        parser.set_defaults(**{dest.get(k, k): ",".join(map(str, v)) if isinstance(v, tuple) else v
                               for k, v in PRESETS[known.preset].items()})
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    try:
        numbers = [int(x) for x in args.sizes.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        raise ToolkitError(f"--sizes must be four integers weak_train,strong_train,val,test; got '{args.sizes}'")
    sizes = SplitSizes(*numbers)
    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise ToolkitError(f"--ks must be comma-separated integers, got '{args.ks}'") from None
    cfg = config_from_args(CompareConfig, args, tasks=_tuple(args.task), strong=_tuple(args.strong),
                           methods=_tuple(args.methods), losses=_tuple(args.losses), sizes=sizes, ks=ks,
                           chain=_tuple(args.chain), seeds=args.seeds)
    out = Path(args.out) if args.out else Path("runs") / args.preset if args.preset else Path("runs") / "__".join(
        ["+".join(Path(t).stem for t in cfg.tasks), Path(cfg.weak).name, "+".join(Path(s).name for s in cfg.strong)])
    result = run_config(cfg, out=out, progress=not args.quiet, figures=not args.no_figures)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        print(format_summary(result.summary).to_string(index=False))
    for n in result.notes:
        print(f"note: {n}")
    work = ", ".join(f"{k} {v}" for k, v in result.stats.items())
    what = "report.md, summary.csv, results.csv, diagnostics.csv" + ("" if args.no_figures else ", figures")
    print(f"\nwrote {out}/ ({what}) in "
          f"{time.perf_counter() - t_start:.0f} s; not from a cache: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

