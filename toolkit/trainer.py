"""Training one classifier: the strong (or weak) model's body with a 2-logit head, its options and recipes, its
memory fit, and the loop (`Trainer`, `train`). `toolkit.finetune` stores runs of it and is the method.

The same code is a plain call on one CPU and runs under `accelerate launch --num_processes N` on N GPUs (DDP;
FSDP2, for models whose weights and optimiser state do not fit one GPU, with `--config_file
configs/accelerate_fsdp.yaml`), or `torchrun --nproc_per_node N` (also CPU, gloo): each global batch is split
across processes, eval is sharded and gathered, and every process runs as many forwards as the busiest (FSDP's
are collectives). On a CPU shared with other jobs, OMP_NUM_THREADS=1 was 3-4x faster than 2 threads here.

Choices, and why:
- The model is the base (`AutoModel`: the LM head's vocab projection is never computed) plus a
  zero-initialised Linear on the last hidden layer, pooled, templated and truncated exactly as
  `toolkit.extract` does it, so fine-tune and probe see the same inputs.
- The loss is computed once over the whole global batch (logconf's threshold is a batch quantile). With
  several micro-batches a step uses gradient caching (Gao et al. 2021): no-grad forwards give the batch's
  logits, the batch loss gives d loss / d logits, then each micro-batch is re-run with grad and
  back-propagates its slice. Same gradient as one big batch, memory of one micro-batch, one extra
  forward per step; dropout masks are replayed by seeding each micro-batch's forward.
- At each eval the model is scored by agreement with the hard labels it is selected on (`train`'s `select`);
  the best eval is setting `best`, the last one `final`. Test accuracy is logged per eval (the curve) and
  never used to choose.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass, field, fields, replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from toolkit._util import ToolkitError, derive_seed
from toolkit._util import rng as derive_rng
from toolkit.config import JobConfig, flag
from toolkit.encoding import pad_batch, plan_batches, pool_hidden
from toolkit.losses import parse as parse_loss
from toolkit.models import DEFAULT_STRONG, ModelInfo, body_params, cpu_native_bf16, pick_device, read_config

__all__ = ["AUTO_LORA_RANK", "Classifier", "FinetuneConfig", "RECIPES", "TrainOptions", "TrainResult", "Trainer",
           "build_classifier", "choose_mode", "default_lr", "fit_memory", "for_model", "make_batches",
           "memory_bytes", "mixed_precision", "train"]

DROPOUT_SALT = 0xD209  # `derive_seed` salt of the dropout masks
_EVAL_TOKENS = 8192  # padded tokens per inference batch; only speed depends on it


@dataclass(frozen=True)
class TrainOptions:
    """How a model is fine-tuned: every training field, shared by a run's `FinetuneConfig` and the method's
    options (`FinetuneOptions`), so each is reachable from `compare` and `python -m toolkit.finetune` alike."""

    epochs: int = 2
    """Passes over the training split."""
    batch_size: int = 32
    """Examples per optimiser step (the global batch; logconf's threshold is a quantile of it)."""
    micro_batch: int = 32
    """Examples per forward pass and process; smaller than the batch means gradient caching (same gradient)."""
    lr: float | None = None
    """Peak learning rate. Unset: the toolkit recipe's 5e-5 (it suits full fine-tuning of ~100M-parameter
    models); the paper recipe's rate by model size, as openai/weak-to-strong's model table gives it: 5e-5 below
    600M parameters (their gpt2, gpt2-medium, pythia-410m), 1e-5 from there (gpt2-large 774M up to Qwen-72B)."""
    weight_decay: float | None = None
    """AdamW decoupled weight decay, on matrices only (not biases or norm weights). Unset: the recipe's
    (toolkit 0.01, paper 0)."""
    warmup_frac: float | None = None
    """Fraction of all steps with a linear learning-rate warm-up from 0. Unset: the recipe's (toolkit 0.1,
    paper 0)."""
    schedule: str | None = None
    """Decay after warm-up: `linear` or `cosine` (to 0), or `constant`. Unset: the recipe's (toolkit linear,
    paper cosine)."""
    max_grad_norm: float | None = None
    """Gradient clipping by global norm (0 = off). Unset: the recipe's (toolkit 1.0, paper 0)."""
    max_length: int = 512
    """Longer inputs are truncated like extraction truncates them (counted, never dropped)."""
    bucket: bool = flag(True)
    """Length-sorted batches (little padding); off = random batches."""
    evals_per_epoch: int = 4
    """Evaluations on `val` per epoch, evenly spaced, the last at the epoch's end (1 = epoch ends only); the
    best of them is the `best` checkpoint, so more than one per epoch makes it a real choice."""
    ceiling_select: str = "gold"
    """Which `val` labels choose the ceiling's best eval: `gold` (it is the gold reference) or `weak`."""
    train_preds: bool = flag(True)
    """Also predict `strong_train` with the best and final models (for the agreement diagnostics)."""
    test_curve: bool = flag(False)
    """Predict `test` at every eval, for the curve's test accuracy (off: only at a new best and the final eval,
    which are all a result needs; the curve's other points are left empty)."""
    lora: int | None = None
    """LoRA rank (0 = full fine-tuning); needs the optional extra `pip install -e ".[lora]"` (peft). Unset: full
    fine-tuning where it fits the GPU's memory (always on a CPU), else LoRA rank 16 with gradient checkpointing
    (`fit_memory`, which says so in one line); a LoRA base is held in bf16 where training runs bf16 autocast."""
    checkpointing: bool = flag(False)
    """Gradient checkpointing: keep only each block's input in the forward pass and recompute the rest in the
    backward, for models or inputs whose activations do not fit (about a third more compute; the same
    result, so runs with and without it share their store key)."""
    keep_weights: bool = flag(False)
    """Save the best and final trainable weights (safetensors) with the run."""
    dropout: bool | None = flag(None)
    """Train with the model's own dropout (off: its dropout probabilities are zeroed, `build_classifier`).
    Unset: the recipe's (toolkit on, paper off)."""
    head_bias: bool | None = flag(None)
    """The classification head has a bias (it is zero-initialised either way). Unset: the recipe's (toolkit
    yes, paper no)."""
    recipe: str = "toolkit"
    """`toolkit` (the fields as given) or `paper`: openai/weak-to-strong's `train_simple` recipe, which sets
    Adam without weight decay, a cosine schedule from step 0 without warm-up, no gradient clipping, dropout off,
    a bias-free zero-initialised head, logconf's weight ramped over the first 10% of steps (their PR #33) and
    their learning rate by model size. The recipe's fields (weight_decay, warmup_frac, schedule, max_grad_norm,
    dropout, head_bias) are unset by default and take the recipe's values; with `paper`, one set to another value
    than the recipe's is an error (never silently replaced)."""

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ToolkitError(f"recipe must be one of {', '.join(RECIPES)}, got '{self.recipe}'")
        for name, value in RECIPES[self.recipe].items():
            given = getattr(self, name)
            if self.recipe != "toolkit" and given is not None and given != value:
                raise ToolkitError(f"recipe {self.recipe} sets {name}={value}, got {name}={given}: "
                                   "use recipe toolkit to choose it")
        schedule = self.hp["schedule"]
        if schedule not in ("linear", "cosine", "constant") or self.ceiling_select not in ("gold", "weak"):
            raise ToolkitError(f"schedule must be linear/cosine/constant and ceiling_select gold/weak; "
                               f"got {schedule!r}, {self.ceiling_select!r}")
        if min(self.epochs, self.batch_size, self.micro_batch, self.evals_per_epoch) < 1 or \
                (self.lr is not None and self.lr <= 0) or (self.lora or 0) < 0:
            raise ToolkitError("need epochs, batch_size, micro_batch, evals_per_epoch >= 1, lr > 0 and lora >= 0")

    @property
    def hp(self) -> dict:
        """The recipe's fields as this run uses them: each as given, or the recipe's value where unset. (The
        fields themselves stay as given, so `dataclasses.replace(cfg, recipe="paper")` means the paper's
        recipe, not the toolkit's values written out.)"""
        return {k: v if getattr(self, k) is None else getattr(self, k) for k, v in RECIPES[self.recipe].items()}

    def training(self) -> dict:
        """This object's training fields by name (to build a `FinetuneConfig` from `FinetuneOptions`)."""
        return {f.name: getattr(self, f.name) for f in fields(TrainOptions)}


PAPER_LR_SIZE = 600e6
"""openai/weak-to-strong's model table gives 5e-5 to models below this many parameters, 1e-5 to those above."""


def default_lr(recipe: str, n: int | None) -> float:
    """The learning rate a recipe gives a model of `n` parameters (None: unknown, the smaller models' rate)."""
    return 1e-5 if recipe == "paper" and n is not None and n >= PAPER_LR_SIZE else 5e-5


@dataclass(frozen=True)
class FinetuneConfig(TrainOptions):
    """The training options of one model's runs, with the job they run in (device, dtype, cache root, the weak
    model's name for the records) and the model trained: the strong one, or the weak supervisor itself. Not a
    command's config: `FinetuneMethod` builds it from the job and its options."""

    job: JobConfig = field(default_factory=JobConfig)
    """Device, dtype and cache root; its `weak` names the weak model in the records."""
    model: str = DEFAULT_STRONG
    """The model trained: catalog name, local folder or hub id."""

    def loss(self, spec: str) -> tuple[str, dict]:
        """The loss `spec` (`logconf:alpha=0.75`) as (name, parameters), with the recipe's defaults for the
        parameters the spec leaves out."""
        name, params = parse_loss(spec)
        return name, {**RECIPE_LOSS_PARAMS[self.recipe].get(name, {}), **params}


RECIPES: dict[str, dict] = {
    "toolkit": {"weight_decay": 0.01, "warmup_frac": 0.1, "schedule": "linear", "max_grad_norm": 1.0,
                "dropout": True, "head_bias": True},
    "paper": {"weight_decay": 0.0, "warmup_frac": 0.0, "schedule": "cosine", "max_grad_norm": 0.0,
              "dropout": False, "head_bias": False},
}
"""What each `FinetuneConfig.recipe` sets. `paper` is openai/weak-to-strong's `train_simple`: `torch.optim.Adam`
(AdamW with weight decay 0 is the same update), `CosineAnnealingLR` over all steps from step 0 (transformers'
`cosine` schedule without warm-up is the same curve), no clipping, no dropout (their `model.eval()` while
training; here the probabilities are zeroed, `build_classifier`), and a
`Linear(d, 2, bias=False)` head initialised to zeros. Batch 32 and 2 epochs are both recipes' defaults; the
learning rate stays `lr` (theirs is 5e-5 for GPT-2 sizes, 1e-5 from gpt2-large up)."""
RECIPE_LOSS_PARAMS: dict[str, dict] = {"toolkit": {}, "paper": {"logconf": {"warmup_frac": 0.1,
                                                                           "threshold": "quantile"}}}
"""Loss parameters a recipe sets unless the loss spec gives them: openai's logconf ramps over 10% of the steps
(`warmup_frac` 0.1 in their code, linear with their PR #33), the toolkit's over the paper's 20%; and hardens
exactly openai's examples (`threshold` quantile: `losses.harden`)."""


# ----------------------------------------------------------------------------- model and batches


class Classifier(torch.nn.Module):
    """The strong model's base (no LM head) plus a Linear(d, 2) head on its pooled last hidden layer."""

    def __init__(self, backbone, pool: str, causal: bool, head_bias: bool = True):
        super().__init__()
        self.backbone, self.pool, self.causal = backbone, pool, causal
        self.head = torch.nn.Linear(backbone.config.get_text_config().hidden_size, 2, bias=head_bias)
        # Zero init: the untrained head predicts 0.5 everywhere and the first steps leave the backbone's
        # features intact instead of back-propagating a random head's noise into them.
        torch.nn.init.zeros_(self.head.weight)
        if head_bias:
            torch.nn.init.zeros_(self.head.bias)

    def pooled(self, input_ids, attention_mask):
        """(B, T) ids and mask -> (B, d) pooled last hidden layer, as `toolkit.extract` pools it."""
        kwargs = {}
        if self.causal:  # positions count real tokens only, so left padding changes nothing (as in extract)
            kwargs["position_ids"] = (attention_mask.cumsum(1) - 1).clamp(min=0)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return pool_hidden(hidden[None], attention_mask, self.pool)[0]

    def forward(self, input_ids, attention_mask):
        """Float[Tensor, "B 2"] logits in fp32."""
        return self.head(self.pooled(input_ids, attention_mask)).float()


def _without_dropout(config):
    """`config` with every dropout probability set to 0 (its text config's too): `hidden_dropout_prob`,
    `attention_dropout`, `resid_pdrop`, ... whatever the architecture calls them."""
    for c in {id(c): c for c in (config, config.get_text_config())}.values():
        for name, value in vars(c).items():
            if ("dropout" in name or name.endswith("pdrop")) and isinstance(value, float):
                setattr(c, name, 0.0)
    return config


def build_classifier(info: ModelInfo, pool: str, lora: int = 0, checkpointing: bool = False,
                     head_bias: bool = True, dropout: bool = True, bf16_base: bool = False) -> Classifier:
    """The classifier to fine-tune. `dropout=False` zeroes the model's dropout probabilities: the same forward as
    openai's `model.eval()` while training, but the model stays in training mode, so checkpointing stays on.
    Trained weights are fp32 (master weights for bf16 autocast); with `bf16_base` a LoRA run's frozen base is
    held in bf16 (half the memory; autocast computes in bf16 anyway), its adapters and head stay fp32."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(info.path)
    if not dropout:
        config = _without_dropout(config)
    dtype = torch.bfloat16 if lora and bf16_base else torch.float32
    backbone = AutoModel.from_pretrained(info.path, config=config, dtype=dtype)
    if checkpointing:
        # non-reentrant: works with frozen (LoRA) inputs and restores the RNG state, so dropout masks match
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ToolkitError("lora > 0 needs the optional package peft (pip install -c requirements.lock "
                               "-e \".[lora]\"); "
                               "or use lora=0 for full fine-tuning") from None
        backbone = get_peft_model(backbone, LoraConfig(r=lora, lora_alpha=2 * lora, target_modules="all-linear"))
    return Classifier(backbone, pool, info.arch == "causal", head_bias)


AUTO_LORA_RANK = 16
"""The LoRA rank `fit_memory` picks when full fine-tuning does not fit."""


def memory_bytes(n_params: int, *, lora: bool, checkpointing: bool, micro_batch: int, max_length: int, hidden: int,
                 layers: int, heads: int = 0) -> float:
    """Device memory a fine-tune needs, roughly (an upper estimate: every sequence at `max_length`).

    Model state: full fine-tuning holds fp32 weights, gradients and AdamW's two moments, 16 bytes a parameter; LoRA a
    bf16 frozen base, 2 bytes a parameter (its adapters, with their gradients and moments, about 2% on top at rank
    16). Activations under bf16 autocast: about 34 bytes per token, hidden unit and layer without checkpointing
    (Korthikanti et al. 2022's sbh·34, attention's s² term left out: flash/SDPA kernels do not store it); with it,
    each layer's input (2 bytes) plus one layer's activations recomputed at a time. `heads` > 0 adds the attention
    probabilities (2 bytes per head and token pair per layer kept for the backward), for CPU kernels that store
    them."""
    state = 2.04 * n_params if lora else 16.0 * n_params
    tokens = micro_batch * max_length
    stored = 2 + 34 / max(layers, 1) if checkpointing else 34  # per token, hidden unit and layer
    attn = 2 * micro_batch * heads * max_length**2 * (1 if checkpointing else layers)
    return state + tokens * hidden * layers * stored + attn


def choose_mode(n_params: int, total_bytes: float, *, lora: int | None, checkpointing: bool, micro_batch: int,
                max_length: int, hidden: int, layers: int, heads: int = 0,
                headroom: float = 0.9) -> tuple[int, bool, int]:
    """(LoRA rank, checkpointing, micro batch) for a device of `total_bytes`. With `lora` set, as given; else the
    first whose `memory_bytes` fits in `headroom` of it: full fine-tuning at the micro batch, then at half of it,
    down to an eighth (the same gradient: only the forward passes are smaller), then with checkpointing (the same
    gradient again, a third more compute), then LoRA the same way (when nothing fits: LoRA with checkpointing). A
    `lora` that is set is kept (as asked, when nothing fits); only the micro batch and checkpointing adapt."""
    fits = lambda rank, ckpt, micro: memory_bytes(  # noqa: E731
        n_params, lora=bool(rank), checkpointing=ckpt, micro_batch=micro, max_length=max_length, hidden=hidden,
        layers=layers, heads=heads) <= headroom * total_bytes
    micros = list(dict.fromkeys(m for m in (micro_batch >> k for k in range(4)) if m >= 1))
    ranks = [lora] if lora is not None else [0, AUTO_LORA_RANK]
    tries = [t for rank in ranks for t in [(rank, checkpointing, m) for m in micros] + [(rank, True, micro_batch)]]
    fallback = (lora, checkpointing, micro_batch) if lora is not None else (AUTO_LORA_RANK, True, micro_batch)
    return next((t for t in tries if fits(*t)), fallback)


def _available_bytes(device: str) -> float:
    """What a fine-tune may use: the GPU's memory, or on a CPU the host's (its total, not what is free now, so that
    the choice, and the micro batch's summation order with it, is the same on every run on one machine)."""
    if device.startswith("cuda"):
        return float(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def fit_memory(cfg: FinetuneConfig, info: ModelInfo) -> FinetuneConfig:
    """`cfg` fitted to the memory it will run in (`choose_mode`), from the model's size and shape: a GPU's memory,
    or on a CPU the host's memory (a 0.5B model on boolq's 512-token passages at micro batch 32 needs
    about 27 GB there and was killed by the kernel on 24 GB). A smaller micro batch or checkpointing keeps the
    result (neither is in the run's key); LoRA, only when `lora` is unset, changes the method. Said in one line
    when anything changes."""
    device = pick_device(cfg.job.device)
    n = body_params(info)
    conf = read_config(info)
    heads = 0 if device.startswith("cuda") else int(conf.get("num_attention_heads") or 0)  # SDPA stores none there
    shape = dict(max_length=cfg.max_length, hidden=int(conf["hidden_size"]), layers=int(conf["num_hidden_layers"]),
                 heads=heads)
    total = _available_bytes(device)
    rank, ckpt, micro = choose_mode(n, total, lora=cfg.lora, checkpointing=cfg.checkpointing,
                                    micro_batch=cfg.micro_batch, **shape)
    if (rank, ckpt, micro) != (cfg.lora or 0, cfg.checkpointing, cfg.micro_batch):
        need = memory_bytes(n, lora=bool(cfg.lora), checkpointing=cfg.checkpointing, micro_batch=cfg.micro_batch,
                            **shape)
        where = "this GPU's" if device.startswith("cuda") else "this host's"
        what = (f"LoRA rank {rank}" if rank else "full fine-tuning") + (
            f", micro batch {micro}" if micro != cfg.micro_batch else "") + (
            " with gradient checkpointing" if ckpt and not cfg.checkpointing else "")
        print(f"[finetune] {info.name}: as asked it needs about {need / 1e9:.0f} GB of {where} "
              f"{total / 1e9:.0f} GB: {what} instead (set --lora, --micro-batch, --checkpointing to choose)",
              file=sys.stderr)
    return replace(cfg, lora=rank, checkpointing=ckpt, micro_batch=micro)


def for_model(cfg: FinetuneConfig, info: ModelInfo) -> FinetuneConfig:
    """`cfg` with what depends on the model resolved: LoRA or full (`fit_memory`) and the learning rate
    (`default_lr` by the model's size where `lr` is unset). The resolved values go into the run's key."""
    cfg = fit_memory(cfg, info)
    return cfg if cfg.lr is not None else replace(cfg, lr=default_lr(cfg.recipe, body_params(info)))


def eval_points(n_batches: int, per_epoch: int) -> set[int]:
    """The batch counts within an epoch after which to evaluate: `per_epoch` evenly spaced ones (fewer when
    the epoch has fewer batches), the last at the epoch's end. 16 batches, 4 per epoch: {4, 8, 12, 16}."""
    return {-(-k * n_batches // per_epoch) for k in range(1, per_epoch + 1)}


def make_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: bool = True):
    """One epoch's batches of example indices: n // batch_size batches, sizes differing by at most one
    (no ragged last batch, which would give logconf a tiny threshold sample). With `bucket`, examples
    are sorted by length (ties in random order), cut, and the batches shuffled."""
    order = rng.permutation(len(lengths))
    if bucket:
        order = order[np.argsort(lengths[order], kind="stable")]
    batches = np.array_split(order, max(1, len(order) // batch_size))
    return [batches[i] for i in rng.permutation(len(batches))] if bucket else batches


def mixed_precision(job: JobConfig) -> str:
    """accelerate's `mixed_precision` for `job.dtype` on `job.device`. `auto` is bf16 autocast where the hardware runs
    bf16 natively: a GPU from Ampere on, or a CPU with AVX512-BF16/AMX (`models.cpu_native_bf16`; measured 1.45x faster
    than fp32 on the 2-core CI CPU, with the same accuracies to 0.004); fp32 on other CPUs, where bf16 is
    emulated and slow. It is part of a run's key, so fp32 and bf16 runs are stored apart."""
    if job.dtype not in ("auto", "float32", "bfloat16"):
        raise ToolkitError(f"dtype must be auto, float32 or bfloat16, got {job.dtype!r}")
    if job.dtype != "auto":
        return "bf16" if job.dtype == "bfloat16" else "no"
    if pick_device(job.device) == "cpu":
        return "bf16" if cpu_native_bf16() else "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "no"  # pre-Ampere GPUs emulate bf16


@contextlib.contextmanager
def _seeded(seed: int, device):
    """Fixed RNG inside (dropout masks), restored after: a re-run forward sees the same masks."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class Trainer:
    """One model under one `accelerate.Accelerator`: optimiser steps on global batches, and inference."""

    def __init__(self, model: Classifier, cfg: FinetuneConfig, total_steps: int, *, pad_id: int, side: str,
                 seed: int = 0):
        from accelerate import Accelerator
        from transformers import get_scheduler

        # Autocast is ours, not accelerate's: its mixed_precision is process-global state that a second
        # Trainer with another precision (a notebook trying float32 after bf16) may not change.
        self.acc = Accelerator(cpu=pick_device(cfg.job.device) == "cpu")
        self.precision = mixed_precision(cfg.job)
        hp = cfg.hp
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        # fused: one kernel per step instead of ~10 passes over every weight (the step's fixed cost on CPU)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                                 {"params": rest, "weight_decay": 0.0}],
                                lr=cfg.lr if cfg.lr is not None else default_lr(cfg.recipe, None), fused=True)
        name = "constant_with_warmup" if hp["schedule"] == "constant" else hp["schedule"]
        # Not prepared: accelerate's scheduler wrapper would step once per process.
        self.scheduler = get_scheduler(name, opt, num_warmup_steps=round(hp["warmup_frac"] * total_steps),
                                       num_training_steps=total_steps)
        if cfg.batch_size < self.acc.num_processes:
            raise ToolkitError(f"batch_size {cfg.batch_size} < {self.acc.num_processes} processes: each needs rows")
        self.model, self.opt = self.acc.prepare(model, opt)
        self.cfg, self.total_steps, self.pad_id, self.side, self.seed = cfg, total_steps, pad_id, side, seed

    def _forward(self, seqs, seed: int | None = None, grad: bool = True):
        """(B, 2) logits of token id lists; a `seed` fixes the dropout masks, so a re-run sees the same ones."""
        ids, mask = pad_batch(seqs, self.pad_id, self.side)
        rng = _seeded(seed, self.acc.device) if seed is not None else contextlib.nullcontext()
        amp = torch.autocast(self.acc.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        with rng, torch.set_grad_enabled(grad), amp:
            return self.model(ids.to(self.acc.device), mask.to(self.acc.device))

    def step(self, seqs: list[list[int]], w1: np.ndarray, loss_fn, step: int) -> float:
        """One optimiser step on a global batch (token id lists, targets P(y=1)); returns the batch loss."""
        world, rank = self.acc.num_processes, self.acc.process_index
        parts = [np.arange(r, len(seqs), world) for r in range(world)]  # process r takes rows r, r+world, ...
        mine = [seqs[i] for i in parts[rank]]
        chunks = [mine[i:i + self.cfg.micro_batch] for i in range(0, len(mine), self.cfg.micro_batch)]
        # Under FSDP every forward and backward is a collective: each process runs as many micro-batches as
        # the busiest one, the extra ones on a row of its own with zero weight in the loss.
        n_chunks = max(-(-len(p) // self.cfg.micro_batch) for p in parts)
        n_real = len(chunks)
        chunks += [mine[:1]] * (n_chunks - n_real)
        # Dropout masks per (run seed, step, micro-batch): each seed draws its own, and the student and the
        # ceiling of one seed share theirs (common random numbers for their difference).
        seeds = [derive_seed(self.seed, DROPOUT_SALT, step, j) for j in range(len(chunks))]
        self.model.train()
        if len(chunks) == 1:  # one forward with grad, no re-run
            z_first = self._forward(chunks[0], seeds[0])
            z_local = z_first.detach()
        else:
            z_first = None
            z_local = torch.cat([self._forward(c, seeds[j], grad=False) for j, c in enumerate(chunks)])[:len(mine)]
        z_all = self._gather(z_local, [len(p) for p in parts]).requires_grad_(True)
        # The loss sees the batch in its own row order, whatever the process count: logconf breaks ties by
        # batch position (all logits tie while the head is still zero).
        natural = torch.as_tensor(np.argsort(np.concatenate(parts), kind="stable"), device=z_all.device)
        target = torch.as_tensor(w1, dtype=torch.float32, device=z_all.device)
        loss = loss_fn(z_all[natural], target, step=step, total_steps=self.total_steps)
        (grad,) = torch.autograd.grad(loss, z_all)
        # This process's rows; x world because DDP averages gradients over processes and the loss needs their sum.
        g = grad[sum(len(p) for p in parts[:rank]):][:len(mine)] * world
        start = 0
        for j, c in enumerate(chunks):
            with contextlib.nullcontext() if j == len(chunks) - 1 else self.acc.no_sync(self.model):
                z = z_first if z_first is not None else self._forward(c, seeds[j])
                weight = g[start:start + len(c)] if j < n_real else torch.zeros_like(z)
                self.acc.backward((z * weight).sum())
            start += len(c)
        if self.cfg.hp["max_grad_norm"]:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.hp["max_grad_norm"])
        self.opt.step()
        self.scheduler.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _gather(self, z, sizes: list[int]):
        """The global batch's logits in process order (processes hold `sizes` rows each)."""
        if len(sizes) == 1:
            return z.clone()
        full = self.acc.gather(self.acc.pad_across_processes(z, dim=0))
        m = max(sizes)
        return torch.cat([full[r * m:r * m + n] for r, n in enumerate(sizes)])

    @torch.no_grad()
    def predict(self, seqs: list[list[int]]) -> np.ndarray:
        """(n,) P(y=1) in input order; length-sorted batches, sharded over processes and gathered."""
        from accelerate.utils import gather_object

        self.model.eval()
        batches = plan_batches(np.array([len(s) for s in seqs]), _EVAL_TOKENS)
        world = self.acc.num_processes
        out = []
        # as many forwards on every process (FSDP's are collectives): the short ones repeat a batch, unused
        for j in range(self.acc.process_index, -(-len(batches) // world) * world, world):
            b = batches[j] if j < len(batches) else batches[-1][:1]
            p = torch.softmax(self._forward([seqs[i] for i in b], grad=False), -1)[:, 1]
            if j < len(batches):
                out.append((b, p.cpu().double().numpy()))
        if self.acc.num_processes > 1:
            out = gather_object(out)
        p = np.empty(len(seqs))
        for b, pb in out:
            p[b] = pb
        return p

    def state(self) -> dict:
        """A CPU copy of the trainable weights: LoRA's adapters and the head, or every weight of a full fine-tune
        (under FSDP gathered from the shards: every process calls it; the main process gets the weights). A
        frozen base is never copied: it is the model's own file."""
        trainable = {k for k, p in self.acc.unwrap_model(self.model).named_parameters() if p.requires_grad}
        full = self.acc.get_state_dict(self.model)
        return {k: v.detach().to("cpu", copy=True) for k, v in full.items() if k in trainable}

    def load(self, state: dict) -> None:
        """Put full weights from `state` back into the model (under FSDP2 sharded again from the main process)."""
        if getattr(self.acc, "is_fsdp2", False):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True,
                                                                             broadcast_from_rank0=True))
        else:
            self.acc.unwrap_model(self.model).load_state_dict(state, strict=False)


# ----------------------------------------------------------------------------- training loop


@dataclass
class TrainResult:
    """Predictions of the best and final evals, the curve, and (if asked) weights."""

    p: dict = field(default_factory=dict)
    """(setting, split) -> (n,) P(y=1) in the split's order."""
    curve: pd.DataFrame | None = None
    """One row per eval: step, epoch, lr, train_loss (mean since the last eval), val_agreement (with the
    selection labels: weak for students), test_acc (gold; never used to choose; at a new best and the final eval,
    nan elsewhere unless `test_curve`), best."""
    val_history: list = field(default_factory=list)
    """Val P(y=1) at each eval (in memory only)."""
    states: dict = field(default_factory=dict)
    """`best` / `final` CPU copies of the trainable weights (LoRA's adapters and the head; every weight for full
    fine-tuning) when kept."""


def _agreement(p: np.ndarray, hard: np.ndarray) -> float:
    return float(((p > 0.5) == hard.astype(bool)).mean())


def train(trainer: Trainer, data: dict, targets: np.ndarray, select: np.ndarray, test_labels: np.ndarray,
          loss_fn, seed: int, *, keep_states: bool = False, progress: bool = False) -> TrainResult:
    """Train on `data["train"]` (token id lists; `data["strong_train"]` when there is no "train") with `targets`
    (n,) P(y=1); choose the eval whose val predictions agree most with the hard labels `select` (ties: the
    earliest). `test_labels` only feed the curve. Returns predictions on val and test and, with
    `cfg.train_preds`, on every other split in `data` (strong_train; weak_train for a weak supervisor)."""
    cfg, rng = trainer.cfg, derive_rng(seed)
    data = {"train": data["strong_train"], **data}
    more = [s for s in data if s not in ("train", "val", "test")] if cfg.train_preds else []
    lengths = np.array([len(s) for s in data["train"]])
    res, rows, best, losses, step = TrainResult(), [], (-1.0, None), [], 0
    bar = tqdm(total=trainer.total_steps, unit="step", desc="finetune", dynamic_ncols=True,
               disable=not progress or not trainer.acc.is_main_process)
    for epoch in range(cfg.epochs):
        batches = make_batches(lengths, cfg.batch_size, rng, cfg.bucket)
        evals = eval_points(len(batches), cfg.evals_per_epoch)
        for b, idx in enumerate(batches):
            lr = trainer.scheduler.get_last_lr()[0]
            losses.append(trainer.step([data["train"][i] for i in idx], targets[idx], loss_fn, step))
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}", val_agree=f"{best[0]:.3f}" if best[1] else "-")
            if b + 1 in evals:
                # An eval predicts val (the choice); test only where a result needs it: a new best, the final
                # model, or a test curve asked for. The best's other splits are predicted now, so no copy of
                # the model is kept to predict them later (30 GB on the host at 8B).
                last = epoch == cfg.epochs - 1 and b + 1 == len(batches)
                p_val = trainer.predict(data["val"])
                agree = _agreement(p_val, select)
                new_best = agree > best[0]  # strict: ties keep the earlier eval
                p_test = trainer.predict(data["test"]) if new_best or last or cfg.test_curve else None
                rows.append({"step": step, "epoch": epoch + (b + 1) / len(batches), "lr": lr,
                             "train_loss": float(np.mean(losses)), "val_agreement": agree,
                             "test_acc": math.nan if p_test is None else _agreement(p_test, test_labels)})
                res.val_history.append(p_val)
                losses = []
                if new_best:
                    best = (agree, step)
                    res.p.update({("best", "val"): p_val, ("best", "test"): p_test})
                    res.p.update({("best", s): trainer.predict(data[s]) for s in more})
                    if keep_states:
                        res.states["best"] = trainer.state()
                if last:
                    res.p.update({("final", "val"): p_val, ("final", "test"): p_test})
    bar.close()
    res.curve = pd.DataFrame(rows).assign(best=lambda d: d["step"] == best[1])
    res.p.update({("final", s): res.p["best", s] if best[1] == step else trainer.predict(data[s]) for s in more})
    if keep_states:
        res.states["final"] = trainer.state()
    return res
