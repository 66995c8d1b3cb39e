"""How long a comparison will take on this machine, said before it starts.

The model-bound stages (extraction, prompting, fine-tuning) are almost all of a cold comparison's time, and
each is a count of tokens through the strong model: forward only for extraction and prompting, forward and
backward for fine-tuning steps (about 4 forwards a token, measured), forward for its evaluations. So one timed
forward pass of the strong model on real inputs, a few seconds, prices the whole run on whatever CPU or GPU
this is. The figures are for a cold run: a stage already in the cache takes seconds.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import numpy as np

from toolkit import tasks
from toolkit.models import ModelInfo, load_model, load_tokenizer, pick_device


@dataclass(frozen=True)
class Work:
    """What a method prices its cold run from (`Method.estimate`): the strong model's measured forward speed on
    this task's inputs, and the job's shape."""

    seconds_per_example: float
    """Wall seconds of one forward pass of one example (of the task's mean length) through the strong model."""
    n_examples: int
    """Examples of the (subsampled) task: what extraction encodes."""
    seeds: int
    sizes: tasks.SplitSizes
    losses: int
    """Student losses."""
    causal: bool
    """The strong model is a decoder."""
    job: object
    """The `config.JobConfig` (device, dtype, ...)."""

    def forward(self, n_examples: float) -> float:
        """Seconds to run `n_examples` forward."""
        return n_examples * self.seconds_per_example


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


def forward_rate(info: ModelInfo, texts: list[str], device: str = "auto", budget_tokens: int = 2048) -> float:
    """Real tokens per second of one batched float32 forward pass of `info`'s model (after a small warm-up
    pass): what extraction and prompting run on a CPU. The batch is `budget_tokens` of the first 256 texts,
    length-sorted and cut to 64 tokens so that padding stays small. A batch this size runs at the sustained
    rate of the 8,192-token batches the stages use (within ~10% on a 2-core Zen 2, where a 512-token batch
    measured half of it)."""
    import torch

    tok = load_tokenizer(info)
    device = pick_device(device)
    model = load_model(info, dtype="float32", device=device)
    ids_all = sorted((ids[:64] for ids in tok(list(texts[:256]), add_special_tokens=True).input_ids), key=len)
    seqs, n = [], 0
    for ids in reversed(ids_all):  # the longest first, as the stages' batches
        if n >= budget_tokens:
            break
        seqs.append(ids)
        n += len(ids)
    width = max(map(len, seqs))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    # as extraction and prompting: logits for the last position only (the vocabulary head over every position
    # would add ~26% to a 135M model's FLOPs)
    kw = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with torch.inference_mode():
        model(input_ids=ids[:2], attention_mask=mask[:2], **kw)  # warm-up: first-call allocation and dispatch
        t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=mask, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
    return n / max(elapsed, 1e-9)


def estimate(task, info: ModelInfo, methods: dict, *, seeds: int, sizes: tasks.SplitSizes, losses: int, job,
             rate: float | None = None) -> Plan:
    """The cold-run plan of one task × strong model: each method's stages (`methods`: name -> (Method, its
    options); each prices itself, `Method.estimate`). `task` is the (subsampled) task; `losses` the number of
    student losses; `rate` skips the timed forward pass (tests)."""
    texts = [task.template.replace("{text}", t) for t in task.texts]
    tok = load_tokenizer(info)
    mean_len = float(np.mean([len(i) for i in tok(texts[:500], add_special_tokens=True).input_ids]))
    if rate is None:
        rate = forward_rate(info, texts, job.device)
    work = Work(mean_len / rate, len(texts), seeds, sizes, losses, info.arch == "causal", job)
    seconds: dict[str, float] = {}
    for method, opts in methods.values():
        seconds |= method.estimate(opts, work)
    return Plan(rate, seconds)


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
