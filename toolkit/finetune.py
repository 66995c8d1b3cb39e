"""Fine-tuning as an elicitation method: the strong model with a 2-logit head (`toolkit.trainer`), trained on
weak labels (student) or gold (ceiling), every run stored.

`FinetuneMethod` trains on a comparison's splits and weak labels (exactly those of the probe path) and returns
`Predictions` (method `finetune`, settings `best` and `final`); `python -m toolkit.finetune --task sentiment
--seeds 0,1,2` is the comparison with fine-tuning alone (`toolkit.compare`), and `train_run` one stored run.
`accelerate launch` and `torchrun` run it on several processes (`toolkit.trainer`).

Choices, and why:
- Early stopping never sees gold: at each eval the student is scored by agreement with the weak hard
  labels on `val`; the best eval is setting `best`, the last one `final`. The ceiling is chosen on gold `val`
  (`ceiling_select`): it is the gold reference, and nothing flows from it into a student.
- A run is stored under `<cache>/runs/finetune/<key>/`, keyed by everything that changes its result
  (not device, micro-batch or process count); a finished run is loaded, never retrained.
- `--weak-method finetune` (the paper's weak supervisor) is a `weak.Supervisor` registered here: the weak model
  trained the same way on weak_train gold, its final model's labels.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from toolkit import cache, tasks
from toolkit import records as rec
from toolkit._util import ToolkitError, derive_seed, stable_hash
from toolkit.config import JobConfig
from toolkit.encoding import tokenize
from toolkit.extract import ExtractConfig, entry_spec
from toolkit.losses import get_loss
from toolkit.losses import parse as parse_loss
from toolkit.methods import Context, Method, MethodResult, register
from toolkit.models import ModelInfo, cpu_native_bf16, load_tokenizer, pick_device, resolve
from toolkit.trainer import (
    FinetuneConfig,
    Trainer,
    TrainOptions,
    TrainResult,
    build_classifier,
    default_lr,
    for_model,
    mixed_precision,
    train,
)
from toolkit.weak import LABEL_SPLITS, TFIDF, Supervision, Supervisor, check_seeds, register_supervisor

__all__ = ["FinetuneMethod", "FinetuneOptions", "FinetuneRun", "options_config", "train_run", "train_seeds",
           "weak_supervision"]

FORMAT_VERSION = 4
"""Part of every stored run's key. 2: dropout masks drawn per seed (1 drew the same masks for every seed);
3: the training split is part of the key (a weak supervisor trains on weak_train); 4: splits keyed by their
texts (`tasks.content_hash`), not their ids alone."""
PREDICTIONS = "predictions.npz"
INIT_SALT = 0x1417  # `derive_seed` salt of the LoRA initialisation


# ----------------------------------------------------------------------------- one stored run


@dataclass
class FinetuneRun:
    """One trained (or loaded) model: its records (settings best/final x splits), curve and folder."""

    records: list
    curve: pd.DataFrame
    path: Path
    key: str
    loaded: bool = False
    """Read from the store rather than trained in this call."""


def _hash_values(values) -> str:
    return stable_hash([round(float(v), 6) for v in values])


ROLES = ("student", "ceiling", "weak")
"""What a run trains: a `student` on the weak labels of strong_train, the `ceiling` on its gold, or the `weak`
supervisor itself on the gold of weak_train (`weak_supervision`)."""


def train_split(role: str) -> str:
    """The split a run of `role` trains on."""
    return "weak_train" if role == "weak" else "strong_train"


def _inputs(sup, role: str, cfg: FinetuneConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training targets on the role's training split and hard selection labels on val. The student's come from
    the weak records only; gold is read for the ceiling and the weak supervisor alone."""
    if role == "student":
        return sup.soft("strong_train"), (sup.soft("val") > 0.5).astype(int)
    if role == "weak":  # its `best` (chosen on val gold) is never used: the weak labels are its final model's
        return sup.splits.weak_train.labels.astype(float), sup.splits.val.labels
    if role != "ceiling":
        raise ToolkitError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    select = sup.splits.val.labels if cfg.ceiling_select == "gold" else (sup.soft("val") > 0.5).astype(int)
    return sup.splits.strong_train.labels.astype(float), select


def run_spec(sup, cfg: FinetuneConfig, info: ModelInfo, role: str, loss: str, spec_x: dict, targets, select) -> dict:
    """Everything that changes a run's result, and nothing that does not (device, micro-batch, processes)."""
    name, params = cfg.loss(loss)
    keep = ("epochs", "batch_size", "lr", "weight_decay", "warmup_frac", "schedule", "max_grad_norm", "dropout",
            "head_bias", "max_length", "bucket", "evals_per_epoch", "train_preds", "lora", "test_curve")
    return {"version": FORMAT_VERSION, "model": info.identity, "arch": info.arch,
            "encoding": {k: spec_x[k] for k in ("template", "pool", "truncation_side", "max_length")},
            "task": sup.splits.test.name, "seed": sup.seed, "role": role, "loss": name, "loss_params": params,
            "train": train_split(role),
            "examples": {s: tasks.content_hash(sup.splits[s]) for s in _splits(role)},
            "train_targets": _hash_values(targets), "select_labels": _hash_values(select),
            "curve_labels": _hash_values(sup.splits.test.labels), "mixed_precision": mixed_precision(cfg.job),
            "hparams": {**{k: getattr(cfg, k) for k in keep}, **cfg.hp}}


def train_run(sup, cfg: FinetuneConfig, *, role: str = "student", loss: str = "xent",
              progress: bool = False) -> FinetuneRun:
    """Fine-tune `cfg.model` for one seed's `Supervision` (`toolkit.weak.supervise`), or load the stored
    run with the same key. The ceiling always uses loss xent on gold."""
    loss = "xent" if role in ("ceiling", "weak") else loss
    info = resolve(cfg.model, cfg.job.cache_dir)
    cfg = for_model(cfg, info)
    targets, select = _inputs(sup, role, cfg)
    xcfg = ExtractConfig(model=cfg.model, max_length=cfg.max_length, cache_dir=cfg.job.cache_dir)
    spec_x = entry_spec(xcfg, sup.splits.test, info, 0)  # extraction's template, pooling and truncation
    spec = run_spec(sup, cfg, info, role, loss, spec_x, targets, select)
    path = cache.run_path("finetune", spec, cfg.job.cache_dir, n=20, suffix="")
    key = path.name
    # The key is content; the model names are labels, so a stored run is relabelled with this call's names.
    names = {"weak": cfg.job.weak, "strong": cfg.model}
    if (path / "manifest.json").exists() and (not cfg.keep_weights or (path / "best.safetensors").exists()):
        try:
            recs = [r.with_(**names) for r in rec.from_bytes((path / PREDICTIONS).read_bytes())]
            return FinetuneRun(recs, pd.read_csv(path / "curve.csv"), path, key, loaded=True)
        except (OSError, ToolkitError) as e:  # a damaged run is trained again, never used
            warnings.warn(f"fine-tuning run {path}: {e}; training again", stacklevel=2)
    if len(sup.splits.val) == 0:
        raise ToolkitError("fine-tuning needs val examples (weak-labelled) for early stopping; set sizes.val > 0")
    t0 = time.perf_counter()
    result, trainer, stats = _train_fresh(sup, cfg, info, spec_x, targets, select, loss, progress, role)
    recs = [rec.Predictions(task=sup.splits.test.name, weak=cfg.job.weak, strong=cfg.model, method="finetune",
                            role=role, loss=loss, setting=setting, seed=sup.seed, split=split,
                            ids=sup.splits[split].ids, p=p) for (setting, split), p in sorted(result.p.items())]
    if trainer.acc.is_main_process:
        _store(path, spec, recs, result, {"key": key, "wall_s": time.perf_counter() - t0, **stats})
    trainer.acc.wait_for_everyone()
    return FinetuneRun([r.with_(**names) for r in recs], result.curve, path, key)


def _splits(role: str) -> tuple[str, ...]:
    """The splits a run of `role` reads: its training split, then strong_train, val and test."""
    return tuple(dict.fromkeys((train_split(role), "strong_train", "val", "test")))


def _train_fresh(sup, cfg, info, spec_x, targets, select, loss, progress, role="student"):
    tok = load_tokenizer(info)
    data = {}
    for split in _splits(role):
        texts = [spec_x["template"].replace("{text}", t) for t in sup.splits[split].texts]
        data[split], _ = tokenize(tok, texts, cfg.max_length, spec_x["truncation_side"])
    torch.manual_seed(derive_seed(sup.seed, INIT_SALT))  # LoRA init (the head is zero-initialised)
    model = build_classifier(info, spec_x["pool"], cfg.lora, cfg.checkpointing, cfg.hp["head_bias"],
                             cfg.hp["dropout"], bf16_base=bool(cfg.lora) and mixed_precision(cfg) == "bf16")
    data["train"] = data[train_split(role)]
    steps = cfg.epochs * max(1, len(data["train"]) // cfg.batch_size)
    side = "left" if info.arch == "causal" else "right"
    trainer = Trainer(model, cfg, steps, pad_id=tok.pad_token_id, side=side, seed=sup.seed)
    name, params = cfg.loss(loss)  # logconf warns only for a small batch_size: it sees the whole global batch
    result = train(trainer, data, targets, select, sup.splits.test.labels, get_loss(name, **params), sup.seed,
                   keep_states=cfg.keep_weights, progress=progress)
    n_tok = sum(len(s) for s in data["train"]) * cfg.epochs
    best_step = int(result.curve.loc[result.curve["best"], "step"].iloc[0])
    return result, trainer, {"train_tokens": n_tok, "steps": steps, "best_step": best_step}


def _store(path: Path, spec: dict, recs: list, result: TrainResult, info: dict) -> None:
    """Write the run into a temporary folder and rename it into place: readers see all of it or nothing."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        (tmp / PREDICTIONS).write_bytes(rec.to_bytes(recs))  # float64, checksummed: a loaded run equals a fresh one
        result.curve.to_csv(tmp / "curve.csv", index=False)
        for name, state in result.states.items():
            save_file({k: v.contiguous() for k, v in state.items()}, tmp / f"{name}.safetensors")
        manifest = {**spec, **info, "weights": sorted(result.states)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        if path.exists():  # a stored run without weights, retrained because weights were asked for
            shutil.rmtree(path, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:  # another process stored the same run meanwhile (a sweep's overlapping jobs): same key,
            if not (path / "manifest.json").exists():  # so the same content; keep theirs
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- the method


TRAIN_PER_TOKEN = 4.0
"""A fine-tuning token in forward tokens, for the start-of-run estimate: forward + backward is 3 in FLOPs; with
AdamW, clipping and the non-matmul ops 4.1 measured (1,476 s for the three runs of a cold default run on a 2-core
Zen 2, 97 TFLOP)."""
BF16_SPEEDUP = 1.45
"""bf16 autocast against fp32 where the CPU has native bf16 (measured on an AVX512-BF16 Zen 4, README)."""


def describe_training(train: dict, models: tuple[str, ...], sizes: dict, who: str) -> str:
    """A report.md sentence: `who` is fine-tuned with recipe `train["recipe"]` at each model's learning rate."""
    lrs = [f"`{m}` {train['lr'] if train['lr'] is not None else default_lr(train['recipe'], sizes.get(m)):g}"
           for m in models]
    recipe = train["recipe"]
    how = ("openai/weak-to-strong's `train_simple`: Adam without weight decay, cosine from step 0, no clipping, no "
           "dropout, a bias-free head" if recipe == "paper"
           else "AdamW, weight decay 0.01, linear warm-up and decay, clipping, dropout on")
    return f"{who}: fine-tuning recipe `{recipe}` ({how}), learning rate " + ", ".join(lrs) + "."


CHECKPOINTS = ("best", "final")
"""The checkpoints a fine-tuning run reports (settings of its records)."""


@dataclass(frozen=True)
class FinetuneOptions(TrainOptions):
    """Fine-tuning the strong model with a classification head, in a comparison: every training field (for the
    strong model, and for a fine-tuned weak supervisor unless `weak_options` says otherwise)."""

    finetune_seeds: int | None = None
    """Fine-tuning runs on the first this-many seeds (0 = all). Unset: every seed on a GPU, the first alone on a
    CPU (there it is the expensive arm; the summary then says its interval covers test examples only)."""
    weak_options: str = ""
    """Training fields that differ for a fine-tuned weak supervisor (`--weak-method finetune`), as
    `lr=5e-5,epochs=3`; the others are the strong model's."""
    headline: str | None = None
    """Which checkpoint of the student and of the ceiling is the headline row (the other is beside it): `best`
    (the eval that agrees best with the weak labels of val; the ceiling's best on gold val) or `final` (the
    model at the end of training, as openai/weak-to-strong reports). Unset: `final` under `--protocol paper`,
    else `best`."""

    def __post_init__(self) -> None:
        TrainOptions.__post_init__(self)
        if (self.finetune_seeds or 0) < 0:
            raise ToolkitError(f"finetune_seeds must be >= 0, got {self.finetune_seeds}")
        if self.headline not in (None, *CHECKPOINTS):
            raise ToolkitError(f"headline must be best or final, got '{self.headline}'")
        self.weak_training()  # a bad override fails here, before any work

    def weak_training(self) -> dict:
        """The training fields of a fine-tuned weak supervisor: these options with `weak_options` applied."""
        import typing

        kinds = {name: next(t for t in (*typing.get_args(h), h) if t is not type(None))
                 for name, h in typing.get_type_hints(TrainOptions).items()}
        out = self.training()
        for pair in filter(None, (p.strip() for p in self.weak_options.split(","))):
            key, _, text = pair.partition("=")
            key = key.strip().replace("-", "_")
            if key not in kinds or not text:
                raise ToolkitError(f"--weak-options takes field=value pairs of {', '.join(kinds)}; got {pair!r}")
            out[key] = _typed(text.strip(), kinds[key], key)
        TrainOptions(**out)  # checked as a whole (recipe conflicts, ranges)
        return out


def _typed(text: str, kind: type, name: str):
    """`text` as a value of the field's type `kind` (bool, int, float or str)."""
    try:
        if kind is bool:
            return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}[text.lower()]
        return kind(text)
    except (KeyError, ValueError):
        raise ToolkitError(f"--weak-options: {name}={text!r} is not a {kind.__name__}") from None


def options_config(job: JobConfig, opts: FinetuneOptions, model: str, *, weak: bool = False) -> FinetuneConfig:
    """The `FinetuneConfig` of the method's options for `model` under `job`: the strong model's training fields,
    or (`weak`) a fine-tuned weak supervisor's, whose `weak_options` apply."""
    return FinetuneConfig(**(opts.weak_training() if weak else opts.training()), job=job, model=model)


@register
class FinetuneMethod(Method):
    """Full or LoRA fine-tuning; early stopping by agreement with the weak labels of val."""

    name = "finetune"
    order = 2
    Options = FinetuneOptions
    expensive = True
    plan_stage = "fine-tuning"

    def check(self, job, opts: FinetuneOptions, losses) -> None:
        for spec in losses:  # the options checked themselves when they were made
            parse_loss(spec)

    def seeds(self, opts: FinetuneOptions, sups: tuple, job=None) -> tuple:
        n = opts.finetune_seeds
        if n is None:  # every seed on a GPU; the first alone on a CPU, where it is the slow arm
            n = 0 if pick_device(job.device if job is not None else "auto").startswith("cuda") else 1
        return sups[: n or len(sups)]

    def run(self, ctx: Context, opts: FinetuneOptions) -> MethodResult:
        cfg = options_config(ctx.job, opts, ctx.strong)
        recs, curves, trained = train_seeds(cfg, ctx.sups, ctx.losses, ctx.progress)
        return MethodResult(recs, curves=curves, computed={"finetunes_trained": trained})

    def estimate(self, opts: FinetuneOptions, work) -> dict[str, float]:
        runs = len(self.seeds(opts, tuple(range(work.seeds)), work.job)) * (work.losses + 1)  # losses, ceiling
        sizes = work.sizes
        steps = opts.epochs * sizes.strong_train * TRAIN_PER_TOKEN
        evals = opts.epochs * (sizes.val + sizes.test) + sizes.strong_train  # epoch-end evals, final train preds
        speed = BF16_SPEEDUP if pick_device(work.job.device) == "cpu" and cpu_native_bf16() else 1.0
        return {"fine-tuning": runs * work.forward(steps + evals) / speed}

    def describe(self, opts: FinetuneOptions, job, sizes) -> list[str]:
        mp = mixed_precision(job)
        return ["Precision on this machine: fine-tuning: fp32 weights, "
                + ("bf16 autocast." if mp == "bf16" else "fp32 compute."),
                describe_training(opts.training(), job.strong, sizes, "Strong models")]

    def for_job(self, opts: FinetuneOptions, job) -> FinetuneOptions:
        if opts.headline is not None:
            return opts
        return replace(opts, headline="final" if job.protocol == "paper" else "best")

    def summary_settings(self, opts) -> tuple[str, ...]:
        head = opts.headline or "best"
        return (head, *(c for c in CHECKPOINTS if c != head))


# ----------------------------------------------------------------------------- the job


def train_seeds(cfg: FinetuneConfig, sups, losses: tuple[str, ...], progress: bool) -> tuple[list, pd.DataFrame, int]:
    """Every seed's students (one per loss of `losses`) and ceiling (`train_run`): their records, their training
    curves and how many runs were trained rather than loaded."""
    records, curves, trained = [], [], 0
    for sup in sups:
        jobs = [("student", loss) for loss in losses] + [("ceiling", "xent")]
        for role, loss in jobs:
            t0 = time.perf_counter()
            out = train_run(sup, cfg, role=role, loss=loss, progress=progress)
            trained += not out.loaded
            if progress:
                print(f"[finetune] seed {sup.seed} {role} {loss}: {'loaded' if out.loaded else 'trained'} in "
                      f"{time.perf_counter() - t0:.0f} s ({out.path})", flush=True)
            records += out.records
            curves.append(out.curve.assign(task=sup.splits.test.name, weak=cfg.job.weak, strong=cfg.model,
                                           method=FinetuneMethod.name, role=role,
                                           loss="xent" if role == "ceiling" else loss, seed=sup.seed))
    return records, pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(), trained


@register_supervisor
class FinetuneSupervisor(Supervisor):
    """`--weak-method finetune`: the paper's weak supervisor (`weak_supervision`), trained with the comparison's
    fine-tuning options (`weak_options` apply)."""

    name, how = "finetune", "fine-tuned on weak_train gold, its final model"
    stored = True

    def check(self, job) -> None:
        if job.weak == TFIDF:
            raise ToolkitError("tfidf is not a model to fine-tune: pass a model as --weak")

    def supervise(self, task, task_spec, job, options, progress=True):
        wcfg = options_config(job, options["finetune"], job.weak, weak=True)
        return weak_supervision(task, job.seeds, job.sizes, wcfg, progress=progress)

    def describe(self, job, options, sizes) -> list[str]:
        return [describe_training(options["finetune"].weak_training(), (job.weak,), sizes, "Weak supervisor")]


def weak_supervision(task, seeds, sizes, cfg: FinetuneConfig, *, progress: bool = True) -> list[Supervision]:
    """The paper's weak supervisor: `cfg.model` fine-tuned (loss xent, `cfg`'s recipe) on the gold labels of each
    seed's weak_train; its final model's P(y=1) on weak_train, strong_train, val and test are the weak labels
    (records of method `finetune`, role `weak`, setting `final`). The final model, not the eval that agrees best
    with val gold: a supervisor chosen on val gold would hand students labels on val that gold already shaped.
    Each run is stored and reused like every fine-tuning run. `task` is loaded (and subsampled) already."""
    seeds = check_seeds(seeds)
    all_splits = [tasks.split(task, seed, sizes) for seed in seeds]  # every split drawn before any training
    # Its labels are its final model's, so evaluations choose nothing here: one per epoch keeps a curve without
    # predicting val and test four times an epoch for no use (evaluations never change the trained model).
    wcfg = replace(cfg, train_preds=True, evals_per_epoch=1)
    out = []
    for seed, splits in zip(seeds, all_splits):
        t0 = time.perf_counter()
        run = train_run(Supervision(seed, splits, []), wcfg, role="weak", progress=progress)
        if progress:
            print(f"[weak] seed {seed}: {cfg.model} fine-tuned on weak_train gold, "
                  f"{'loaded' if run.loaded else 'trained'} in {time.perf_counter() - t0:.0f} s", flush=True)
        final = {r.split: r for r in run.records if r.setting == "final"}
        out.append(Supervision(seed, splits, [final[split] for split in LABEL_SPLITS]))
    return out


if __name__ == "__main__":
    # the comparison with this method alone: `toolkit.compare` is the composition root, imported by the command
    from toolkit.compare import method_main

    raise SystemExit(method_main(FinetuneMethod.name))
