"""Encoding text for the strong model, shared by every stage that runs it (extraction, prompting, fine-tuning,
the start-of-run estimate): tokenising with counted truncation, padding, length-sorted batches under a token
budget (sized from the device's free memory on a GPU), and pooling a hidden state by the attention mask.

torch is imported inside the functions that need it: a cache hit (`python -m toolkit.extract` on a stored entry)
imports this module and must not pay for torch.
"""

from __future__ import annotations

import sys

import numpy as np

from toolkit._util import ToolkitError

__all__ = ["CPU_BATCH_TOKENS", "MAX_AUTO_BATCH_TOKENS", "auto_batch_tokens", "batch_budget", "label_token_ids",
           "pad_batch", "plan_batches", "pool_hidden", "pool_positions", "tokenize"]

CPU_BATCH_TOKENS, MAX_AUTO_BATCH_TOKENS = 8192, 65536


def plan_batches(lengths: np.ndarray, batch_tokens: int, max_pad: float = 0.2) -> list[np.ndarray]:
    """Indices grouped into batches, sorted by length with the longest first (an out-of-memory error
    then happens at once, not at the end). A batch grows while its padded size (count x longest)
    fits `batch_tokens` and every member is at least (1 - max_pad) of the longest, so no batch
    wastes more than `max_pad` of its compute on padding; a single longer example stands alone."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        end = start + 1
        cap = start + max(1, batch_tokens // longest)
        while end < min(cap, len(order)) and lengths[order[end]] >= (1 - max_pad) * longest:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def pool_positions(mask, how: str):
    """Per-row token position to pool from a (B, T) attention mask, whatever the padding side."""
    import torch

    t = mask.shape[1]
    ar = torch.arange(t, device=mask.device).expand_as(mask)
    if how == "last":
        return torch.where(mask.bool(), ar, -1).max(dim=1).values
    if how == "first":
        return torch.where(mask.bool(), ar, t).min(dim=1).values
    raise ValueError(how)


def pool_hidden(hidden, mask, how: str):
    """(L, B, T, D) hidden states and a (B, T) mask -> (L, B, D) pooled vectors."""
    import torch

    if how == "mean":
        m = mask.to(hidden.dtype)[None, :, :, None]
        return (hidden * m).sum(2) / m.sum(2).clamp(min=1)
    pos = pool_positions(mask, how)
    idx = pos[None, :, None, None].expand(hidden.shape[0], -1, 1, hidden.shape[-1])
    return torch.gather(hidden, 2, idx).squeeze(2)


def pad_batch(seqs: list[list[int]], pad_id: int, side: str):
    import torch

    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(t - len(s), t) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def label_token_ids(tokenizer, words: tuple[str, str]) -> list[int] | None:
    """First token id of each label word (the zero-shot score compares these two next tokens), or
    None when the words share their first token (e.g. " 0" / " 1" split as " " + digit): one
    forward pass cannot score them, so extraction stores no zero-shot log-probs and prompting scores
    the whole words instead."""
    ids = [tokenizer(w, add_special_tokens=False).input_ids for w in words]
    if any(len(i) == 0 for i in ids):
        raise ToolkitError(f"label words {words!r} tokenise to nothing; give the task other label words")
    if ids[0][0] == ids[1][0]:
        print(f"[extract] label words {words!r} share their first token: no zero-shot log-probs stored",
              file=sys.stderr)
        return None
    return [i[0] for i in ids]


def tokenize(tokenizer, texts: list[str], max_length: int, truncation_side: str):
    """Token id lists, truncated to `max_length` on `truncation_side`, and which were truncated."""
    full = tokenizer(texts, add_special_tokens=True, truncation=False).input_ids
    truncated = np.array([len(s) > max_length for s in full], dtype=bool)
    cut = (lambda s: s[-max_length:]) if truncation_side == "left" else (lambda s: s[:max_length])
    return [cut(s) if len(s) > max_length else s for s in full], truncated


def auto_batch_tokens(config, free_bytes: int | None, dtype_bytes: int, max_length: int) -> int:
    """A token budget for `config`'s model: 8,192 without a device memory figure (a CPU); otherwise half the
    free memory over the activation bytes one token needs at once in a block (hidden-sized buffers, the MLP's
    three intermediate-sized ones, and eager attention's fp32 scores against up to `max_length` keys), in
    steps of 1,024, between 8,192 and 65,536 (the measured gain past 65k is 43% -> 45% MFU at 8B)."""
    if free_bytes is None:
        return CPU_BATCH_TOKENS
    d = int(config.hidden_size)
    inter = int(getattr(config, "intermediate_size", None) or 4 * d)
    heads = int(getattr(config, "num_attention_heads", None) or max(1, d // 64))
    per_token = dtype_bytes * (8 * d + 3 * inter) + 4 * heads * max_length
    budget = (free_bytes // 2) // per_token // 1024 * 1024
    return int(min(MAX_AUTO_BATCH_TOKENS, max(CPU_BATCH_TOKENS, budget)))


def batch_budget(batch_tokens: int, model, device: str, max_length: int = 512) -> int:
    """`batch_tokens`, or for 0 the auto budget for `model` on `device` (free memory read after loading it)."""
    if batch_tokens < 0:
        raise ToolkitError(f"--batch-tokens must be positive (or 0 for auto), got {batch_tokens}")
    if batch_tokens:
        return batch_tokens
    free = None
    if device.startswith("cuda"):
        import torch

        free = torch.cuda.mem_get_info(torch.device(device))[0]
    dtype_bytes = next(model.parameters()).element_size()
    return auto_batch_tokens(model.config, free, dtype_bytes, max_length)


if __name__ == "__main__":
    from toolkit._util import not_a_command

    raise SystemExit(not_a_command(__spec__.name))
