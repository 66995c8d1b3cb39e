"""How long a comparison will take on this machine, said before it starts.

The model-bound stages (extraction, prompting, fine-tuning) are almost all of a cold comparison's time, and
each is a count of tokens through the strong model: forward only for extraction and prompting, forward and
backward (about 3× a forward) for fine-tuning steps, forward for its evaluations. So one timed forward pass of
the strong model on real inputs, about a second, prices the whole run on whatever CPU or GPU this is. The
figures are for a cold run: a stage already in the cache takes seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from toolkit import tasks
from toolkit.models import ModelInfo, cpu_native_bf16, load_model, load_tokenizer, pick_device

# Fine-tuning costs per token relative to one forward pass: forward + backward ≈ 3 forwards (the backward
# pass computes gradients for activations and weights, each about a forward's FLOPs); AdamW's update is
# per parameter, not per token, and is small at batch 32.
_TRAIN_PER_TOKEN = 3.0
# bf16 autocast where the CPU has native bf16: measured 1.45x faster than fp32 on an AVX512-BF16 Zen 4
# (README, "The main job").
_BF16_SPEEDUP = 1.45
_PROBE_SECONDS_PER_SEED = 30.0  # order of magnitude on 2 CPU cores (13-35 s per seed measured, Zen 4 - Zen 1)


@dataclass(frozen=True)
class Plan:
    """A cold comparison's work and expected seconds per stage on this machine."""

    tokens_per_second: float
    """Forward tokens per second of the strong model, measured here on real inputs."""
    seconds: dict[str, float]
    """Stage -> expected wall seconds if nothing is cached."""

    @property
    def total(self) -> float:
        return float(sum(self.seconds.values()))

    def describe(self) -> str:
        parts = ", ".join(f"{k} {_minutes(v)}" for k, v in self.seconds.items() if v >= 1)
        return (f"about {_minutes(self.total)} if nothing is cached ({parts}; the strong model runs "
                f"{self.tokens_per_second:.0f} tokens/s forward here)")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def forward_rate(info: ModelInfo, texts: list[str], device: str = "auto", budget_tokens: int = 512) -> float:
    """Tokens per second of one batched forward pass of `info`'s model over the first `texts` that fill
    `budget_tokens` (after one small warm-up pass), in float32: what extraction and prompting run on a CPU."""
    import torch

    tok = load_tokenizer(info)
    device = pick_device(device)
    model = load_model(info, dtype="float32", device=device)
    seqs, n = [], 0
    for ids in tok(list(texts[:256]), add_special_tokens=True).input_ids:
        if n >= budget_tokens:
            break
        seqs.append(ids[:128])
        n += len(seqs[-1])
    width = max(map(len, seqs))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    with torch.inference_mode():
        model(input_ids=ids[:2], attention_mask=mask[:2])  # warm-up: first-call allocation and dispatch
        t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=mask)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
    return n / max(elapsed, 1e-9)


def estimate(task, info: ModelInfo, *, seeds: int, sizes: tasks.SplitSizes, methods: tuple[str, ...],
             ks: tuple[int, ...], finetune_seeds: int, losses: int, epochs: int, device: str = "auto",
             rate: float | None = None) -> Plan:
    """The cold-run plan of one task × strong model. `task` is the (subsampled) task; `losses` the number of
    student losses; `rate` skips the timed forward pass (tests)."""
    texts = [task.template.replace("{text}", t) for t in task.texts]
    tok = load_tokenizer(info)
    mean_len = float(np.mean([len(i) for i in tok(texts[:500], add_special_tokens=True).input_ids]))
    if rate is None:
        rate = forward_rate(info, texts, device)
    fwd = lambda n_examples: n_examples * mean_len / rate  # noqa: E731
    seconds: dict[str, float] = {}
    if "probe" in methods:
        seconds["extraction"] = fwd(len(texts))
        seconds["probes"] = _PROBE_SECONDS_PER_SEED * seeds
    causal = info.arch == "causal"
    if "prompt" in methods and causal:
        runs = seeds * 2 * sum(k > 0 for k in ks)  # gold and weak demonstrations; zero-shot comes with extraction
        seconds["prompting"] = fwd(runs * (sizes.val + sizes.test))
    if "finetune" in methods:
        runs = (finetune_seeds or seeds) * (losses + 1)  # each student loss and the ceiling
        steps = epochs * sizes.strong_train * _TRAIN_PER_TOKEN
        evals = epochs * (sizes.val + sizes.test) + sizes.strong_train  # epoch-end evals, final train preds
        speed = _BF16_SPEEDUP if pick_device(device) == "cpu" and cpu_native_bf16() else 1.0
        seconds["fine-tuning"] = runs * fwd(steps + evals) / speed
    return Plan(rate, seconds)
