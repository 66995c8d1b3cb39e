"""Batched extraction of pooled hidden states, once per (model, task, settings), into the cache.

`python -m toolkit.extract --model smollm2-135m --task sentiment` is the batch job; library code
calls `extract(ExtractConfig(...))`, which returns the cached entry without building a model when
it exists. Under `torchrun --nproc_per_node N -m toolkit.extract ...` each rank extracts its own
shards of the one entry (gloo on CPU, nccl on GPU); the result is identical to one process.

Speed habits, visible here: texts are tokenised once, before any batch; examples are sorted by token
length and cut into batches by a token budget (padded length x batch size; on a GPU sized from its free
memory), the longest batch first so an out-of-memory error happens at once rather than at the end; each
requested layer is pooled by a hook as the model produces it (`LayerPooler`), so no batch holds every
layer's states; on a GPU nothing in the batch loop waits for the device (ids go up from pinned memory,
pooled vectors come down into a pinned buffer without blocking, one sync per shard); decoders compute
logits only at the answer position (`logits_to_keep=1`, left padding).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit import cache, config, tasks
from toolkit._util import ToolkitError, cli_main
from toolkit.config import Quiet
from toolkit.encoding import (
    batch_budget,
    label_token_ids,
    pad_batch,
    plan_batches,
    pool_hidden,
    pool_positions,
    tokenize,
)
from toolkit.models import (
    DEFAULT_STRONG,
    ModelInfo,
    dtype_name,
    load_model,
    load_tokenizer,
    pick_device,
    read_config,
    resolve,
)

_COUNTERS: contextvars.ContextVar[tuple[dict, ...]] = contextvars.ContextVar("extraction_counters", default=())


@contextlib.contextmanager
def counted():
    """Count the work extraction does inside the block, by whichever stage asks for it: yields
    {"models_built": n, "forward_passes": n}, which a cache hit leaves at 0 (how a comparison says what it did not
    load, and how the tests prove a hit builds no model). Blocks nest; each counts what ran inside it."""
    counts = {"models_built": 0, "forward_passes": 0}
    token = _COUNTERS.set((*_COUNTERS.get(), counts))
    try:
        yield counts
    finally:
        _COUNTERS.reset(token)


def _count(what: str) -> None:
    for counts in _COUNTERS.get():
        counts[what] += 1


@dataclass(frozen=True)
class ExtractConfig:
    """One extraction job: which model, which task, which layers and pooling."""

    model: str = DEFAULT_STRONG
    """Catalog name, local model folder or Hugging Face hub id."""
    task: str = "sentiment"
    """Task name (see `python -m toolkit.tasks list`), `bigbench:<path>`, or a .jsonl/.csv file."""
    layers: str = "all"
    """`all` (embeddings = layer 0, then every block) or a comma list such as `0,6,12`."""
    pool: str = "auto"
    """`last` (last real token; decoders), `mean` (over real tokens; encoders), `first`, or `auto`."""
    limit: int = 0
    """Use a class-balanced subsample of this many examples (0 = the whole task)."""
    dtype: str = "auto"
    """`auto` (bfloat16 on GPU, float32 on CPU), `float32` or `bfloat16`."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda` or `cuda:N`."""
    batch_tokens: int = 0
    """Token budget per batch (padded length x batch size); 0 = auto: 8,192 on a CPU; on a GPU, sized from
    the device memory left free by the model and from its shape, at most 65,536, halved on running out."""
    max_length: int = 512
    """Longer inputs are truncated (counted and reported, never dropped)."""
    truncation_side: str = "auto"
    """`left` keeps a decoder prompt's end (the answer cue); `right` for encoders; `auto` picks."""
    template: str = "auto"
    """Prompt template with `{text}`; `auto` = the task's template for decoders, raw text for encoders."""
    shard_size: int = 0
    """Examples per shard, the unit of resumption and of work split across ranks; 0 = auto: 512 on a CPU,
    2,048 on a GPU so that a shard holds several full batches. Part of the entry's key (it decides which
    examples share a batch)."""
    store_dtype: str = "auto"
    """How the pooled features are stored: `float32`, `float16` (half the disk and the read time; 10-bit
    mantissa, range to 65,504, ample for pooled hidden states that linear probes standardise), or `auto`:
    float16 on a GPU, where entries reach gigabytes (an 8B model's 33 layers x 4,096 x 10k examples is 5.4 GB in
    float32), and float32 on a CPU, so that CPU results stay byte-identical to earlier runs."""
    cache_dir: str | None = None
    """Cache root (default: `cache/` in the project, or $TOOLKIT_CACHE_DIR)."""


# ----------------------------------------------------------------------------- pure pieces


class LayerPooler:
    """Pools each requested layer's hidden state as the model produces it, so that no batch ever holds every
    layer's (B, T, D) states at once (an 8B model's 33 layers at 65k tokens would be 18 GB in bf16).

    Forward hooks sit on the model's block list (the ModuleList of `num_hidden_layers` blocks): layer 0 is the
    first block's input, layer i the output of block i-1, and the last layer the base model's
    `last_hidden_state` (after the final norm), which is what `output_hidden_states` returns. `check` compares
    the two on a small batch once per model; a model whose blocks cannot be found, or where they disagree,
    is pooled from `output_hidden_states` instead (`self.ok` is False)."""

    def __init__(self, model, layers: list[int], pool: str):
        self.model, self.layers, self.pool = model, list(layers), pool
        self.blocks = _block_list(model)
        self.ok = self.blocks is not None
        self.mask = None
        self.out: dict = {}

    def __enter__(self):
        from functools import partial

        self.handles = []
        if not self.ok:
            return self
        n, want = len(self.blocks), set(self.layers)
        if 0 in want:
            self.handles.append(self.blocks[0].register_forward_pre_hook(self._first, with_kwargs=True))
        for i in range(1, n):
            if i in want:
                self.handles.append(self.blocks[i - 1].register_forward_hook(partial(self._after, i)))
        if n in want:
            self.handles.append(self.model.base_model.register_forward_hook(partial(self._after, n)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()

    def _keep(self, layer: int, hidden) -> None:
        if self.mask is not None:
            self.out[layer] = pool_hidden(hidden[None], self.mask, self.pool)[0]

    def _first(self, module, args, kwargs):
        self._keep(0, args[0] if args else kwargs["hidden_states"])

    def _after(self, layer: int, module, args, output):
        h = output.last_hidden_state if hasattr(output, "last_hidden_state") else output
        self._keep(layer, h[0] if isinstance(h, tuple) else h)

    def pooled(self, out, mask):
        """(B, L, D) pooled states of the forward pass just run: from the hooks, or from `out.hidden_states`."""
        import torch

        if self.ok:
            got = [self.out.pop(i) for i in self.layers]
            return torch.stack(got, 1)
        hs = out.hidden_states
        return torch.stack([pool_hidden(hs[i][None], mask, self.pool)[0] for i in self.layers], 1)


def _block_list(model):
    """The ModuleList holding the model's `num_hidden_layers` blocks (first found, outermost first), or None."""
    import torch

    n = getattr(model.config, "num_hidden_layers", None)
    base = getattr(model, "base_model", model)
    for _, m in base.named_modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) == n:
            return m
    return None


def forward_pooled(model, seqs: list[list[int]], *, pad_id: int, pooler: LayerPooler, causal: bool,
                   padding_side: str, label_ids: list[int] | None, device: str):
    """One batch: token id lists -> ((B, L, D) float32 pooled, (B, 2) float32 label log-probs or None), as
    tensors on `device`. Nothing here waits for the device: ids go up from pinned memory without blocking
    and the results stay where they are, so the host prepares the next batch while this one runs."""
    import torch

    ids, mask = pad_batch(seqs, pad_id, padding_side)
    last_is_real = bool(mask[:, -1].all())  # read on the host: on the device it would be a sync
    if str(device).startswith("cuda"):
        ids, mask = ids.pin_memory().to(device, non_blocking=True), mask.pin_memory().to(device, non_blocking=True)
    else:
        ids, mask = ids.to(device), mask.to(device)
    kwargs = {"input_ids": ids, "attention_mask": mask, "output_hidden_states": not pooler.ok}
    if causal:
        # Positions count real tokens only, so a left-padded row sees the same positions as alone.
        kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
        # The LM head at the last position only: the label words' log-probs need no more, and without them the
        # logits are not wanted at all (a full (B, T, vocab) tensor is the largest activation of a small model).
        if (label_ids is None or last_is_real) and _accepts(model, "logits_to_keep"):
            kwargs["logits_to_keep"] = 1
    _count("forward_passes")
    pooler.mask = mask
    try:
        out = model(**kwargs)
    finally:
        pooler.mask = None
    pooled = pooler.pooled(out, mask).float()
    logp = None
    if label_ids is not None:
        logits = out.logits
        if logits.shape[1] > 1:  # right padding: pick the last real position per row
            last = pool_positions(mask, "last")
            logits = logits[torch.arange(len(seqs), device=logits.device), last][:, None]
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)[:, label_ids]
    return pooled, logp


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def check_pooler(model, seqs: list[list[int]], *, layers: list[int], pool: str, causal: bool, pad_id: int,
                 padding_side: str, device: str) -> LayerPooler:
    """A `LayerPooler` for `model`, checked once per model against `output_hidden_states` on two short inputs
    (a few milliseconds): equal to float32 rounding, or the pooler falls back to `output_hidden_states`."""
    import torch

    verdicts = model.__dict__.setdefault("_toolkit_hooks_ok", {})
    key = (tuple(layers), pool, causal, padding_side)
    pooler = LayerPooler(model, layers, pool)
    if not pooler.ok or key in verdicts:
        pooler.ok = pooler.ok and verdicts.get(key, False)
        return pooler
    probe = [s[:16] for s in sorted(seqs, key=len)[-2:]]
    with torch.inference_mode():
        with pooler:
            hooked, _ = forward_pooled(model, probe, pad_id=pad_id, pooler=pooler, causal=causal,
                                       padding_side=padding_side, label_ids=None, device=device)
        plain = LayerPooler(model, layers, pool)
        plain.ok = False
        full, _ = forward_pooled(model, probe, pad_id=pad_id, pooler=plain, causal=causal,
                                 padding_side=padding_side, label_ids=None, device=device)
    scale = float(full.abs().max()) or 1.0
    pooler.ok = bool((hooked - full).abs().max() <= 1e-5 * scale)
    if not pooler.ok:
        print(f"[extract] {type(model).__name__}: per-layer hooks disagree with output_hidden_states; "
              "pooling from output_hidden_states instead (more memory per batch)", file=sys.stderr)
    verdicts[key] = pooler.ok
    return pooler


def run_batches(model, tokenizer, seqs: list[list[int]], *, layers: list[int], pool: str, causal: bool,
                batch_tokens: int = 0, padding_side: str | None = None,
                label_words: tuple[str, str] | None = None, device: str = "cpu", progress=None):
    """Pooled (L, n, D) float32 hidden states and (n, 2) label log-probs (or None) of token id lists,
    in the input order, computed in length-sorted batches within `batch_tokens` (0: `batch_budget`).

    On a GPU the host never waits inside the loop: each batch's results are copied without blocking into a
    pinned (n, L, D) buffer in processing order, and the device is synchronised once at the end."""
    import torch

    lengths = np.array([len(s) for s in seqs])
    side = padding_side or ("left" if causal else "right")
    label_ids = label_token_ids(tokenizer, label_words) if (causal and label_words) else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = plan_batches(lengths, batch_budget(batch_tokens, model, str(device), int(lengths.max(initial=1))))
    if not batches:
        return np.zeros((len(layers), 0, model.config.hidden_size), np.float32), None
    pooler = check_pooler(model, seqs, layers=layers, pool=pool, causal=causal, pad_id=pad_id, padding_side=side,
                          device=device)
    pin = str(device).startswith("cuda")
    staged = staged_lp = None
    start = 0
    with torch.inference_mode(), pooler:
        for batch in batches:
            pooled, lp = forward_pooled(model, [seqs[i] for i in batch], pad_id=pad_id, pooler=pooler,
                                        causal=causal, padding_side=side, label_ids=label_ids, device=device)
            if staged is None:
                staged = torch.empty((len(seqs), *pooled.shape[1:]), dtype=torch.float32, pin_memory=pin)
                staged_lp = torch.empty((len(seqs), 2), dtype=torch.float32, pin_memory=pin) if lp is not None else None
            end = start + len(batch)
            staged[start:end].copy_(pooled, non_blocking=True)  # contiguous rows: one plain copy each
            if lp is not None:
                staged_lp[start:end].copy_(lp, non_blocking=True)
            start = end
            if progress is not None:
                progress(len(batch), int(lengths[batch].sum()), int(len(batch) * lengths[batch].max()))
    if pin:
        torch.cuda.synchronize(device)
    order = np.concatenate(batches)
    hidden = np.empty((len(layers), len(seqs), staged.shape[-1]), dtype=np.float32)
    hidden[:, order] = staged.numpy().transpose(1, 0, 2)
    logp = None
    if staged_lp is not None:
        logp = np.empty((len(seqs), 2), dtype=np.float32)
        logp[order] = staged_lp.numpy()
    return hidden, logp


def extract_arrays(model, tokenizer, texts: list[str], *, layers: list[int], pool: str, causal: bool,
                   batch_tokens: int = 0, max_length: int = 512, truncation_side: str = "left",
                   padding_side: str | None = None, label_words: tuple[str, str] | None = None,
                   device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Pooled hidden states of `texts` for `layers`, in the input order.

    Returns `hidden` (L, n, D) float32, `n_tokens` (n,), `truncated` (n,) bool and, for decoders whose
    label words differ in their first token, `label_logprobs` (n, 2): log P(first token of each label
    word | text)."""
    seqs, truncated = tokenize(tokenizer, texts, max_length, truncation_side)
    hidden, logp = run_batches(model, tokenizer, seqs, layers=layers, pool=pool, causal=causal,
                               batch_tokens=batch_tokens, padding_side=padding_side, label_words=label_words,
                               device=device, progress=progress)
    out = {"hidden": hidden, "n_tokens": np.array([len(s) for s in seqs]), "truncated": truncated}
    if logp is not None:
        out["label_logprobs"] = logp
    return out


def shard_plan(lengths: np.ndarray, shard_size: int) -> list[np.ndarray]:
    """Shards are contiguous chunks of the examples sorted by token length (longest first, ties by
    position): deterministic, independent of batch size and process count, and each shard holds
    similar lengths so its batches carry little padding."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + shard_size] for i in range(0, len(order), shard_size)]


# ----------------------------------------------------------------------------- the job


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """`all` -> [0..n_layers] (0 = embeddings); `0,6,12` -> those, checked against the model."""
    if spec == "all":
        return list(range(n_layers + 1))
    try:
        layers = sorted({int(x) for x in str(spec).split(",") if x.strip()})
    except ValueError:
        raise ToolkitError(f"--layers must be `all` or comma-separated integers, got '{spec}'") from None
    bad = [x for x in layers if not 0 <= x <= n_layers]
    if bad or not layers:
        raise ToolkitError(f"layers {bad or spec} out of range: this model has layers 0..{n_layers} "
                           "(0 = embeddings)")
    return layers


def entry_spec(cfg: ExtractConfig, task, info: ModelInfo, n_layers: int) -> dict:
    """Everything that changes the entry's bytes (and nothing that does not)."""
    causal = info.arch == "causal"
    template = (task.template if causal else "{text}") if cfg.template == "auto" else cfg.template
    if "{text}" not in template:
        raise ToolkitError(f"template must contain {{text}}: {template!r}")
    pool = cfg.pool if cfg.pool != "auto" else ("last" if causal else "mean")
    if pool not in {"last", "mean", "first"}:
        raise ToolkitError(f"--pool must be last, mean, first or auto, got '{cfg.pool}'")
    trunc = cfg.truncation_side if cfg.truncation_side != "auto" else ("left" if causal else "right")
    dtype = dtype_name(cfg.dtype, pick_device(cfg.device))
    store = store_dtype(cfg)
    # float32, the format before store_dtype existed, adds nothing to the key
    stored = {} if store == "float32" else {"store_dtype": store}
    return {**stored,
        "model": info.name, "model_identity": info.identity, "arch": info.arch, "dtype": dtype,
        "template": template, "task": task.name, "examples_sha": tasks.content_hash(task), "n": len(task),
        "pool": pool, "layers": parse_layers(cfg.layers, n_layers), "max_length": cfg.max_length,
        "truncation_side": trunc, "label_words": list(task.label_words) if causal else None,
        "shard_size": shard_size(cfg),
    }


def store_dtype(cfg: ExtractConfig) -> str:
    """`cfg.store_dtype` resolved: `auto` is float16 on a GPU, float32 elsewhere."""
    if cfg.store_dtype == "auto":
        return "float16" if pick_device(cfg.device).startswith("cuda") else "float32"
    if cfg.store_dtype not in ("float32", "float16"):
        raise ToolkitError(f"--store-dtype must be auto, float32 or float16, got '{cfg.store_dtype}'")
    return cfg.store_dtype


CPU_SHARD, GPU_SHARD = 512, 2048


def shard_size(cfg: ExtractConfig) -> int:
    """`cfg.shard_size` resolved (0 = 512 on a CPU, 2,048 on a GPU)."""
    if cfg.shard_size < 0:
        raise ToolkitError(f"--shard-size must be positive (or 0 for auto), got {cfg.shard_size}")
    if cfg.shard_size:
        return cfg.shard_size
    return GPU_SHARD if pick_device(cfg.device).startswith("cuda") else CPU_SHARD


def for_job(job, model: str, task: str, *, strong: bool = True) -> ExtractConfig:
    """The `ExtractConfig` of `model`'s features of `task` in a `config.JobConfig`: its limit, device and cache, and
    for a strong model its dtype (weak and intermediate models extract at `auto`). Every stage of a comparison that
    reads features builds it here, so they all address the same entry."""
    return ExtractConfig(model=model, task=task, limit=job.subsample, device=job.device,
                         dtype=job.dtype if strong else "auto", cache_dir=job.cache_dir)


def load_task(cfg: ExtractConfig):
    """The task `cfg` extracts, subsampled to its `limit` (`tasks.load`)."""
    return tasks.load(cfg.task, cache_dir=cfg.cache_dir, limit=cfg.limit)


def _dist():
    """(rank, world size) under torchrun, initialising torch.distributed once; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            # each rank on its own GPU before any CUDA work, or every rank makes a context on GPU 0
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group("gloo")
    return dist.get_rank(), world


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def extract(cfg: ExtractConfig = ExtractConfig(), *, progress: bool = True, layers=None) -> cache.Features:
    """Extract (or load from the cache) pooled hidden states for every example of the task.

    Returns `Features` with `hidden` (n_layers, n_examples, d) aligned to `ids`. `layers` loads a
    subset of the entry's layers. A cache hit constructs no model and runs no forward pass."""
    task = load_task(cfg)
    info = resolve(cfg.model, cfg.cache_dir)
    n_layers = int(read_config(info)["num_hidden_layers"])
    spec = entry_spec(cfg, task, info, n_layers)
    path = cache.entry_dir(spec, cfg.cache_dir)
    rank, world = _dist()
    # A layer that fails its checksum later, mid-run, is extracted afresh in this process (one process only:
    # under torchrun the next run does it).
    refill = (lambda: extract(cfg, progress=progress, layers=layers)) if world == 1 else None
    # Rank 0 checks (and discards a corrupt entry); the others look after it has.
    hit = cache.try_load(spec, cfg.cache_dir, layers, refill) if rank == 0 else None
    _barrier(world)
    if hit is None and rank != 0 and (path / cache.MANIFEST).exists():
        hit = cache.load_entry(path, layers=layers, lazy=True)
    if hit is not None:
        _say_truncated(hit.manifest, rank)
        return hit
    if rank == 0:  # fail on an unwritable or full cache before any long work starts
        need = 2 * 4 * len(task) * len(spec["layers"]) * int(read_config(info)["hidden_size"])
        cache.check_writable(cache.features_root(cfg.cache_dir), need)
    with cache.entry_lock(path) if rank == 0 else contextlib.nullcontext():
        if world == 1 and (hit := cache.try_load(spec, cfg.cache_dir, layers, refill)) is not None:
            return hit  # another process finished it while we waited for the lock
        _run_shards(cfg, task, info, spec, path, rank, world, progress)
        _barrier(world)
        if rank == 0:
            cache.commit_entry(path, _manifest(spec, task, info, path), _n_shards(len(task), spec["shard_size"]))
        _barrier(world)
    feats = cache.load_entry(path, layers=layers, lazy=True, refill=refill)
    _say_truncated(feats.manifest, rank)
    return feats


_HELD: dict = {}
"""`held`'s entries: (task content, model) -> {ExtractConfig: Features}, one key at a time."""


def held(cfg: ExtractConfig, task, *, progress: bool = True) -> cache.Features:
    """`extract(cfg)`, loaded once for every stage of a comparison that reads it (a method's `prepare` and `run`,
    the probes and the label-free methods on the same plain entry): each load reads and checks every shard, seconds
    at 8B. Only the latest task content and model's entries are held (lazily mapped, so held cheaply); keyed by the
    task's content, not its name, so a file whose texts changed is extracted anew."""
    key = (tasks.content_hash(task), cfg.model)
    if key not in _HELD:
        _HELD.clear()
        _HELD[key] = {}
    entries = _HELD[key]
    if cfg not in entries:
        entries[cfg] = extract(cfg, progress=progress)
    return entries[cfg]


def truncated_note(manifest: dict) -> str:
    """How many of an entry's inputs were truncated, in a line ("" if none): every extraction, cache hit or not,
    says it, and a comparison's report.md lists it (`toolkit.compare`)."""
    n = int(manifest.get("n_truncated", 0))
    if not n:
        return ""
    return (f"{manifest['task']} x {manifest['model']}: {n} of {len(manifest['ids'])} inputs longer than "
            f"{manifest['max_length']} tokens were truncated ({manifest['truncation_side']} side), none dropped")


_TOLD: set[str] = set()
"""Entries whose truncation this process has reported (once each: a comparison reads an entry many times)."""


def _say_truncated(manifest: dict, rank: int) -> None:
    if rank == 0 and manifest["key"] not in _TOLD and (note := truncated_note(manifest)):
        _TOLD.add(manifest["key"])
        print(f"[extract] warning: {note}", file=sys.stderr)


def entry_manifest(cfg: ExtractConfig) -> dict | None:
    """The manifest of `cfg`'s committed entry (nothing else is read or verified), or None if there is none."""
    try:
        return cache.read_manifest(_entry_path(cfg))
    except cache.CorruptEntry:
        return None


def _entry_path(cfg: ExtractConfig) -> Path:
    task = load_task(cfg)
    info = resolve(cfg.model, cfg.cache_dir)
    return cache.entry_dir(entry_spec(cfg, task, info, int(read_config(info)["num_hidden_layers"])), cfg.cache_dir)


def is_cached(cfg: ExtractConfig) -> bool:
    """Whether `cfg`'s entry is committed in the cache (its manifest exists; nothing is read or verified)."""
    return (_entry_path(cfg) / cache.MANIFEST).exists()


def _n_shards(n: int, shard_size: int) -> int:
    return max(1, math.ceil(n / shard_size))


def _run_shards(cfg, task, info, spec, path: Path, rank: int, world: int, progress: bool) -> None:
    mine = [s for s in range(_n_shards(len(task), spec["shard_size"])) if s % world == rank]
    todo = [s for s in mine if cache.read_shard(path, s) is None]
    if len(todo) < len(mine):
        print(f"[extract] rank {rank}: resuming, {len(mine) - len(todo)} of {len(mine)} shards already done",
              file=sys.stderr)
    if not todo:
        return
    from tqdm.auto import tqdm

    device = pick_device(cfg.device)
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    tok = load_tokenizer(info)
    seqs, truncated = _tokenized(task, spec, tok)
    plan = shard_plan(np.array([len(x) for x in seqs]), spec["shard_size"])
    model = load_model(info, dtype=cfg.dtype, device=device)
    _count("models_built")
    n_todo = sum(len(plan[s]) for s in todo)
    bar = tqdm(total=n_todo, unit="ex", desc=f"extract {task.name} / {info.name}",
               disable=not progress or rank != 0, dynamic_ncols=True)
    t0, counts = time.perf_counter(), {"tokens": 0, "padded": 0}

    def tick(n_ex: int, n_tok: int, n_pad: int) -> None:
        counts["tokens"] += n_tok
        counts["padded"] += n_pad
        dt = max(time.perf_counter() - t0, 1e-9)
        bar.update(n_ex)
        pad = 1 - counts["tokens"] / max(counts["padded"], 1)
        bar.set_postfix(tok_s=f"{counts['tokens'] / dt:.0f}", pad=f"{pad:.0%}")

    budget = batch_budget(cfg.batch_tokens, model, device, cfg.max_length)
    for s in todo:
        idx = plan[s]
        hidden, logp, budget = _shard_batches(model, tok, [seqs[i] for i in idx], spec, task, info, device,
                                              budget, auto=not cfg.batch_tokens, progress=tick)
        if spec.get("store_dtype") == "float16":
            hidden = cache.as_float16(hidden)  # pooled in float32, rounded once for storage (if it fits)
        arrays = {"index": idx, "hidden": hidden, "n_tokens": np.array([len(seqs[i]) for i in idx]),
                  "truncated": truncated[idx]}
        if logp is not None:
            arrays["label_logprobs"] = logp
        cache.write_shard(path, s, arrays)
    bar.close()
    dt = time.perf_counter() - t0
    pad = 1 - counts["tokens"] / max(counts["padded"], 1)
    print(f"[extract] rank {rank}: {n_todo} examples x {len(spec['layers'])} layers, {counts['tokens']} tokens "
          f"in {dt:.1f} s ({counts['tokens'] / dt:.0f} tok/s), padding {pad:.1%}, {budget}-token batches, "
          f"device {device}, entry {path}", file=sys.stderr)


def _shard_batches(model, tok, seqs, spec, task, info, device: str, budget: int, *, auto: bool, progress):
    """One shard through `run_batches`; `(hidden, logp, budget)`. Out of device memory at an automatic budget,
    the budget is halved and the shard run again (the longest batch runs first, so this happens at once)."""
    import torch

    seen = []

    def tick(n_ex: int, n_tok: int, n_pad: int) -> None:
        seen.append((n_ex, n_tok, n_pad))
        progress(n_ex, n_tok, n_pad)

    while True:
        seen.clear()
        try:
            hidden, logp = run_batches(model, tok, seqs, layers=spec["layers"], pool=spec["pool"],
                                       causal=info.arch == "causal", batch_tokens=budget,
                                       label_words=task.label_words if spec["label_words"] else None,
                                       device=device, progress=tick)
            return hidden, logp, budget
        except torch.OutOfMemoryError:
            if not auto or budget <= 1024:
                raise ToolkitError(f"out of device memory at {budget}-token batches on {device}; pass a smaller "
                                   "--batch-tokens (or 0 for the automatic budget)") from None
            if str(device).startswith("cuda"):
                torch.cuda.empty_cache()
            progress(*([-sum(col) for col in zip(*seen)] or [0, 0, 0]))  # the shard's rerun counts them again
            budget //= 2
            print(f"[extract] out of device memory: batches of {budget} tokens from now on", file=sys.stderr)


def _tokenized(task, spec: dict, tok):
    texts = [spec["template"].replace("{text}", t) for t in task.texts]
    return tokenize(tok, texts, spec["max_length"], spec["truncation_side"])


def _manifest(spec: dict, task, info: ModelInfo, path: Path) -> dict:
    import torch
    import transformers

    d = int(read_config(info)["hidden_size"])
    return {**spec, "key": path.name, "ids": list(task.ids), "hidden_size": d,
            "versions": {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}}


@cli_main
def main(argv: list[str] | None = None) -> int:
    cfg, args = config.parse(ExtractConfig, argv, "python -m toolkit.extract", __doc__.split("\n")[0], extra=Quiet)
    t0 = time.perf_counter()
    rank = int(os.environ.get("RANK", "0"))
    with counted() as work:
        feats = extract(cfg, progress=not args.quiet)
        # The batch job reads every layer once: a hit it reports is verified, and a damaged layer is extracted
        # afresh now rather than found by a later run (a library hit checks each layer as it is first used).
        if rank == 0 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            feats.verify()
    if rank == 0:
        hit = "cache hit, verified, no model built" if work["models_built"] == 0 else "extracted"
        print(f"{feats.path}\n  {len(feats.ids)} examples x {len(feats.layers)} layers x "
              f"d={feats.manifest['hidden_size']} ({hit}, {time.perf_counter() - t0:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
