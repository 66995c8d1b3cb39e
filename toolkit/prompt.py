"""Zero- and few-shot prompting of the strong model: label-word log-probs with a shared-prefix KV cache.

A prompt is k demonstrations from `strong_train` (`template(text) + label word`, joined by a blank line)
followed by the query's templated text; the score of each label word is log P(word | prompt), summed
over the word's tokens. Three conditions per seed, on the same splits and weak labels as the probes:

- **zero-shot** (k = 0, role `baseline`): read from the extraction cache when the strong model's entry
  holds `label_logprobs` and both label words are single tokens, else scored here;
- **k-shot gold** (role `ceiling`): demonstrations shown with their gold labels, the upper reference;
- **k-shot weak** (role `student`): demonstrations shown with the weak supervisor's hard labels
  (P_W > 0.5), the weak-to-strong condition. Both draw from one seeded order of `strong_train` and take
  the first k/2 of each *shown* class, so they share inputs wherever the two labelings agree.

Tokens are built in segments, like lm-evaluation-harness' context/continuation split: the special
prefix, each demonstration block (the blank line leads the next block, which is how BPE splits "\\n\\n"
before a word), the query and each label word are tokenised separately and concatenated. A label word
with a leading space keeps its own tokens, and the demonstrations are an exact token prefix of every
prompt, so their key/value cache is computed once per (seed, k, condition) and every query is scored
against it; `reuse_prefix=False` runs the same tokens as full prompts (equal within float error).

Calibration. Small models favour one label word whatever the input, so beside the raw decision
(p = softmax of the two log-probs, setting `k=K`) each record has a calibrated twin (`k=K,cal`):
p = sigmoid(logp1 - logp0 - t), with t chosen so that the share predicted 1 on `val` equals the share
of weak hard labels that are 1 on `val`. Only weak labels are used, so the student sees no gold; the
threshold is fitted per (seed, k, condition) on its own val scores and applied to val and test.

Records: `Predictions(method="prompt", loss="none", setting="k=K" | "k=K,cal")` on val and test, role
`baseline` for k = 0, `ceiling` / `student` for gold / weak demonstrations with the same setting, so
`records.summary(recs, labels, settings=("k=8", "k=8,cal"))` gives the PGR of weak against gold demos.
A prompt longer than `max_length` keeps its first demonstrations that fit (a warning says how many
were dropped); a query too long on its own is cut on the left, keeping the answer cue.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit import cache
from toolkit._util import ToolkitError, rng, stable_hash
from toolkit.config import as_numbers, flag, ints
from toolkit.encoding import pad_batch, plan_batches, pool_positions
from toolkit.extract import entry_spec, for_job
from toolkit.methods import Context, Method, MethodResult, register
from toolkit.models import (
    dtype_name,
    load_model,
    load_tokenizer,
    pick_device,
    read_config,
)
from toolkit.records import Predictions

__all__ = ["PromptOptions", "Scoring", "score", "score_tokens", "select_demos", "threshold", "fit_demos",
           "cached_zero_shot", "prompt_records"]

SEP = "\n\n"
DEMO_SALT = 0x5052  # mixes into the seed so demo draws do not mirror the split's own shuffles


@dataclass(frozen=True)
class Scoring:
    """How prompts are run through the strong model (the prompting methods' shared options; the weights' dtype is
    the job's)."""

    batch_tokens: int = 8192
    """Token budget per batch: rows x padded length, the shared prefix counted in each row."""
    max_length: int = 0
    """Longest prompt in tokens (0 = the model's max_position_embeddings); longer ones drop demos."""
    reuse_prefix: bool = flag(True)
    """Score queries against the demonstrations' cached keys/values (off: full prompts, slower)."""

    def __post_init__(self) -> None:
        if self.batch_tokens < 1 or self.max_length < 0:
            raise ToolkitError(f"batch_tokens must be >= 1 and max_length >= 0, got {self.batch_tokens}, "
                               f"{self.max_length}")


# ----------------------------------------------------------------------------- scoring tokens


def _word_rows(words: list[list[int]]) -> list[tuple[list[int], list[int]]]:
    """Continuations fed after a prompt and the label words each scores. Word w needs the input
    prompt + w[:-1]; when one word's input is a prefix of the other's, one row scores both
    (always so for single-token words)."""
    a, b = words[0][:-1], words[1][:-1]
    if b[:len(a)] == a:
        return [(b, [0, 1])]
    if a[:len(b)] == b:
        return [(a, [0, 1])]
    return [(a, [0]), (b, [1])]


def _accepts(model, name: str) -> bool:
    import inspect

    return name in inspect.signature(model.forward).parameters


def _prefix_cache(model, prefix: list[int], device: str):
    """Keys/values of the shared prefix, computed once (batch 1)."""
    import torch

    out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True)
    cache = getattr(out, "cache", None)  # transformers >= 5 renamed past_key_values to cache
    return cache if cache is not None else out.past_key_values


def _expanded(model, cache, batch: int):
    """A fresh DynamicCache holding the prefix for `batch` rows. Each forward concatenates new keys
    onto its cache's tensors (a new tensor), so the prefix tensors themselves are never modified."""
    from transformers import DynamicCache

    kv = [(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1)) for layer in cache.layers]
    return DynamicCache(kv, config=model.config)


def _forward_tail(model, seqs, prefix, n_prefix: int, side: str, tail: int, device: str):
    """Log-probs (B, tail', V) at the last `tail` real positions of each row, and each row's last real
    position in those columns. Positions come from the mask: cumsum - 1, shifted by the prefix."""
    import torch

    ids, mask = (t.to(device) for t in pad_batch(seqs, 0, side))  # pad id is masked out: any id works
    kw = {"input_ids": ids, "position_ids": (mask.cumsum(1) - 1).clamp(min=0) + n_prefix,
          "attention_mask": mask, "use_cache": prefix is not None}
    if prefix is not None:
        kw["attention_mask"] = torch.cat([mask.new_ones(len(seqs), n_prefix), mask], 1)
        kw["cache" if _accepts(model, "cache") else "past_key_values"] = _expanded(model, prefix, len(seqs))
    if side == "left" and _accepts(model, "logits_to_keep"):  # all rows end in the last column: LM head on the tail
        kw["logits_to_keep"] = tail
    logits = model(**kw).logits
    last = pool_positions(mask, "last") - (mask.shape[1] - logits.shape[1])
    return torch.log_softmax(logits.float(), -1), last


def score_tokens(model, queries: list[list[int]], words: list[list[int]], *, prefix: list[int] = (),
                 reuse_prefix: bool = True, batch_tokens: int = 8192, padding_side: str = "left",
                 device: str = "cpu", progress: str | None = None) -> np.ndarray:
    """(n, 2) float64: log P(words[c] | prefix + queries[i]) summed over the word's tokens.

    Rows are length-sorted batches within `batch_tokens` (prefix counted per row). With
    `reuse_prefix`, the prefix is run once and its cache expanded over each batch. `progress`: a
    progress-bar title (None: no bar)."""
    import torch
    from tqdm.auto import tqdm

    rows = _word_rows(words)
    shared = reuse_prefix and len(prefix) > 0
    seqs = [(list(q) if shared else list(prefix) + list(q)) + ext for q in queries for ext, _ in rows]
    lengths = np.array([len(s) for s in seqs]) + (len(prefix) if shared else 0)
    tail = max(len(ext) for ext, _ in rows) + 1
    out = np.zeros((len(queries), 2))
    with torch.inference_mode():
        cache = _prefix_cache(model, list(prefix), device) if shared else None
        bar = tqdm(total=len(seqs), desc=progress, unit="prompt", disable=progress is None, leave=False)
        for batch in plan_batches(lengths, batch_tokens):
            logp, last = _forward_tail(model, [seqs[r] for r in batch], cache, len(prefix) if shared else 0,
                                       padding_side, tail, device)
            last = last.tolist() if hasattr(last, "tolist") else list(last)  # one host sync a batch, not one a row
            b_idx, cols, toks, q_idx, w_idx = [], [], [], [], []
            for b, r in enumerate(batch):
                ext, ws = rows[r % len(rows)]
                for w in ws:
                    for j, tok in enumerate(words[w]):  # word token j is predicted len(ext) - j before the end
                        b_idx.append(b), cols.append(int(last[b]) - len(ext) + j), toks.append(tok)
                        q_idx.append(r // len(rows)), w_idx.append(w)
            vals = logp[b_idx, cols, toks].double().cpu().numpy()
            np.add.at(out, (q_idx, w_idx), vals)
            bar.update(len(batch))
        bar.close()
    return out


# ----------------------------------------------------------------------------- prompts from text


def label_word_ids(tokenizer, label_words) -> list[list[int]]:
    ids = [tokenizer(w, add_special_tokens=False).input_ids for w in label_words]
    if any(len(i) == 0 for i in ids):
        raise ToolkitError(f"label words {tuple(label_words)!r} tokenise to nothing; give the task other words")
    return ids


def fit_demos(n_special: int, block_lens: list[int], alone: list[int], after: list[int], extra: int,
              limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query: how many demonstrations fit (the first j blocks) and how many query tokens must be
    cut on the left when even j = 0 is too long. `alone`/`after`: query lengths without / with the
    leading separator; `extra`: tokens of the longest label word after the first."""
    ends = n_special + np.cumsum([0, *block_lens])  # prefix length with j demos, j = 0..k
    kept, cut = np.zeros(len(alone), dtype=int), np.zeros(len(alone), dtype=int)
    for i, (a, b) in enumerate(zip(alone, after)):
        fits = np.flatnonzero(ends[1:] + b + extra <= limit)
        kept[i] = fits[-1] + 1 if len(fits) else 0
        cut[i] = max(0, n_special + a + extra - limit) if kept[i] == 0 else 0
    return kept, cut


def _warn_short(kept: np.ndarray, cut: np.ndarray, k: int, limit: int) -> None:
    short = kept < k
    if short.any():
        warnings.warn(f"{int(short.sum())} of {len(kept)} prompts exceed max_length={limit} tokens: dropped "
                      f"{int((k - kept[short]).sum())} demonstrations in total (those prompts keep "
                      f"{int(kept[short].min())}-{int(kept[short].max())} of {k})", stacklevel=3)
    if cut.any():
        warnings.warn(f"{int((cut > 0).sum())} queries are longer than max_length={limit} on their own: "
                      f"truncated on the left by up to {int(cut.max())} tokens", stacklevel=3)


def context_length(model) -> int:
    return int(model.config.get_text_config().max_position_embeddings)


def _layout(tokenizer, template: str, label_words, texts: list[str], demos, limit: int):
    """Token ids of each prompt's parts, and per query how many demonstrations fit in `limit` tokens (`kept`)
    and how many query tokens are cut on the left (`cut`): what `score` runs, computed without a model."""
    words = label_word_ids(tokenizer, label_words)
    fill = lambda t: template.replace("{text}", t)  # noqa: E731
    enc = lambda s: tokenizer(s, add_special_tokens=False).input_ids  # noqa: E731
    special = tokenizer("", add_special_tokens=True).input_ids  # BOS where the tokenizer adds one
    blocks = [enc((SEP if i else "") + fill(t) + label_words[int(y)]) for i, (t, y) in enumerate(demos)]
    alone = [enc(fill(t)) for t in texts]
    after = [enc(SEP + fill(t)) for t in texts] if blocks else alone
    kept, cut = fit_demos(len(special), [len(b) for b in blocks], [len(q) for q in alone],
                          [len(q) for q in after], max(map(len, words)) - 1, limit)
    return words, special, blocks, alone, after, kept, cut


def demos_kept(tokenizer, template: str, label_words, texts: list[str], demos, limit: int) -> np.ndarray:
    """(n,) how many of the k demonstrations each query's prompt keeps within `limit` tokens: fewer than k
    where a prompt would be too long (the first demonstrations that fit are kept)."""
    return _layout(tokenizer, template, label_words, texts, demos, limit)[5]


def score(model, tokenizer, template: str, label_words, texts: list[str], demos=(), *,
          batch_tokens: int = 8192, max_length: int = 0, reuse_prefix: bool = True, padding_side: str = "left",
          device: str = "cpu", progress: str | None = None) -> np.ndarray:
    """(n, 2) log P(label word | demos + templated text) for each text. `demos`: (text, label) pairs.

    A prompt longer than `max_length` (0 = the model's context) keeps only its first demonstrations
    that fit, with a warning; queries grouped by the number kept share that prefix's cache."""
    words, special, blocks, alone, after, kept, cut = _layout(tokenizer, template, label_words, texts, demos,
                                                              max_length or context_length(model))
    _warn_short(kept, cut, len(blocks), max_length or context_length(model))
    out = np.empty((len(texts), 2))
    for j in np.unique(kept):
        idx = np.flatnonzero(kept == j)
        queries = [after[i] if j else alone[i][cut[i]:] for i in idx]
        prefix = special + [t for block in blocks[:j] for t in block]
        out[idx] = score_tokens(model, queries, words, prefix=prefix, reuse_prefix=reuse_prefix,
                                batch_tokens=batch_tokens, padding_side=padding_side, device=device,
                                progress=progress)
    return out


# ----------------------------------------------------------------------------- demos and calibration


def select_demos(shown: np.ndarray, k: int, seed: int, what: str = "strong_train") -> np.ndarray:
    """Positions of k demonstrations, k/2 of each shown label, in a seeded random order (so classes
    interleave). The order depends on the seed only, so gold and weak draws coincide where the
    labels agree, and the k=2 demos are among the k=4 ones."""
    shown = np.asarray(shown, dtype=int)
    if k < 0 or k % 2:
        raise ToolkitError(f"k={k} must be an even number >= 0: demonstrations are half per class")
    counts = np.bincount(shown, minlength=2)
    if k // 2 > counts.min():
        raise ToolkitError(f"k={k} needs {k // 2} demonstrations per class but {what} has only "
                           f"{counts.min()} with label {int(counts.argmin())}; use k <= {2 * counts.min()} "
                           "or a larger strong_train")
    order = rng(seed, DEMO_SALT).permutation(len(shown))
    picked = np.concatenate([order[shown[order] == c][: k // 2] for c in (0, 1)])
    return order[np.isin(order, picked)]


def threshold(diff: np.ndarray, rate: float) -> float:
    """t such that the share of `diff` > t is `rate` (to the nearest example): midway between the
    two neighbouring scores, so t is the same whatever the sort's tie order."""
    d = np.sort(np.asarray(diff, dtype=float))[::-1]
    n1 = int(round(rate * len(d)))
    if n1 == 0:
        return float(d[0] + 1.0)
    if n1 == len(d):
        return float(d[-1] - 1.0)
    return float((d[n1 - 1] + d[n1]) / 2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x)


# ----------------------------------------------------------------------------- the run


def cached_zero_shot(ctx: Context, tokenizer) -> dict[str, np.ndarray] | None:
    """id -> (2,) zero-shot log-probs from the strong model's extraction entry (default settings),
    or None when there is no such entry or a label word has several tokens (the cache holds only
    first-token log-probs)."""
    from transformers import AutoConfig

    task, info = ctx.task, ctx.info
    if any(len(w) != 1 for w in label_word_ids(tokenizer, task.label_words)):
        return None
    ecfg = for_job(ctx.job, ctx.strong, ctx.task_spec)  # the strong model's own entry, at the job's dtype
    n_layers = int(AutoConfig.from_pretrained(info.path).get_text_config().num_hidden_layers)
    feats = cache.try_load(entry_spec(ecfg, task, info, n_layers), ecfg.cache_dir, layers=[])
    if feats is None or feats.label_logprobs is None:
        return None
    return dict(zip(feats.ids, feats.label_logprobs.astype(float)))


PROMPT_CACHE_VERSION = 2  # 2: one `cache.pack` blob (1: an npz with its own crc32)


class _Strong:
    """The strong model, loaded on first use, and a store of scored prompts: in memory (identical gold and
    weak demonstrations are scored once) and on disk under `<cache>/runs/prompt/`, keyed by everything that
    changes the scores (model identity, dtype, template, label words, demonstrations, query texts, scoring
    options), so a rerun loads nothing and scores nothing. Files are written atomically and checked on read;
    a damaged one is scored again."""

    def __init__(self, ctx: Context, scoring: Scoring):
        self.scoring, self.info, self.task, self.model, self.memo = scoring, ctx.info, ctx.task, None, {}
        self.dtype, self.cache_dir = ctx.job.dtype, ctx.job.cache_dir
        self.tok = load_tokenizer(ctx.info)
        self.device = pick_device(ctx.job.device)
        self.scored = 0  # prompts actually run through the model (not served by a cache)

    def limit(self) -> int:
        """The prompt length limit in tokens: `max_length`, else the model's context (read from its config,
        so a run served from the store loads no model)."""
        return self.scoring.max_length or int(read_config(self.info)["max_position_embeddings"])

    def _path(self, texts: list[str], demos: list[tuple[str, int]]) -> Path:
        return cache.run_path("prompt", {
            "version": PROMPT_CACHE_VERSION, "model": self.info.identity,
            "dtype": dtype_name(self.dtype, self.device), "template": self.task.template,
            "words": list(self.task.label_words), "demos": [list(d) for d in demos],
            "texts": stable_hash(list(texts), 32), "max_length": self.scoring.max_length}, self.cache_dir)

    @staticmethod
    def _read(path: Path, n: int) -> np.ndarray | None:
        try:
            blob = cache.read_blob(path)
        except cache.CorruptEntry as e:  # a damaged file is never used
            warnings.warn(f"prompt score cache {e}; scoring again", stacklevel=3)
            return None
        if blob is None:
            return None
        logp = blob[0].get("logp")
        if logp is None or logp.shape != (n, 2):
            warnings.warn(f"prompt score cache {path} holds other shapes; scoring again", stacklevel=3)
            return None
        return logp

    def score(self, texts: list[str], demos: list[tuple[str, int]], progress: str | None = None) -> np.ndarray:
        key = (tuple(texts), tuple(demos))
        if key in self.memo:
            return self.memo[key]
        path = self._path(texts, demos)
        logp = self._read(path, len(texts))
        if logp is None:
            if self.model is None:
                self.model = load_model(self.info, dtype=self.dtype, device=self.device)
            logp = np.asarray(score(self.model, self.tok, self.task.template, self.task.label_words, texts, demos,
                                    batch_tokens=self.scoring.batch_tokens, max_length=self.scoring.max_length,
                                    reuse_prefix=self.scoring.reuse_prefix, device=self.device, progress=progress),
                              dtype=np.float64)
            self.scored += len(texts)
            cache.write_blob(path, {"logp": logp})
        self.memo[key] = logp
        return logp


def setting_label(k: int, calibrated: bool) -> str:
    """The `setting` label of a prompting record: `k=8`, or `k=8,cal` calibrated."""
    return f"k={k},cal" if calibrated else f"k={k}"


def _records(ctx: Context, sup, role: str, k: int, logp: dict, extra: dict,
             method: str = "prompt") -> list[Predictions]:
    """Raw and calibrated records on val and test from id -> (2,) log-probs."""
    rate = float(np.mean(sup.soft("val") > 0.5))
    diff = {s: np.array([logp[i][1] - logp[i][0] for i in sup.splits[s].ids]) for s in ("val", "test")}
    t = threshold(diff["val"], rate)
    out = []
    for cal, shift in ((False, 0.0), (True, t)):
        for s in ("val", "test"):
            out.append(Predictions(task=sup.splits[s].name, weak=ctx.weak, strong=ctx.strong, method=method,
                                   role=role, loss="none", setting=setting_label(k, cal), seed=sup.seed, split=s,
                                   ids=sup.splits[s].ids, p=_sigmoid(diff[s] - shift),
                                   extra={**extra, "threshold": shift}, params={"k": k, "calibrated": cal}))
    return out


def _zero_shot(ctx: Context, strong: _Strong) -> dict:
    ids = sorted({i for sup in ctx.sups for s in ("val", "test") for i in sup.splits[s].ids})
    logp = cached_zero_shot(ctx, strong.tok)
    if logp is not None and all(i in logp for i in ids):
        return {"logp": logp, "source": "extraction cache"}
    texts = ctx.task.subset(ids).texts
    return {"logp": dict(zip(ids, strong.score(texts, []))), "source": "scored"}


def conditions(sup) -> list[tuple[str, np.ndarray, str]]:
    """(role, the labels strong_train's demonstrations are shown with, what they are) of each k-shot condition:
    gold for the ceiling, the weak supervisor's hard labels for the student."""
    st = sup.splits.strong_train
    return [("ceiling", st.labels, "strong_train (gold labels)"),
            ("student", sup.soft("strong_train") > 0.5, "strong_train (weak labels)")]


def prompt_records(ctx: Context, scoring: Scoring, ks: tuple[int, ...], *, shown=conditions,
                   method: str = "prompt") -> tuple[list[Predictions], int]:
    """The prompt records of every seed of `ctx` and k of `ks` (zero-shot baseline, and each condition of
    `shown(sup)`: by default the gold-demonstration ceiling and the weak-demonstration student; raw and
    calibrated) under `method`'s name, and how many prompts were run through the model rather than read from
    the store."""
    task, progress = ctx.task, ctx.progress
    strong = _Strong(ctx, scoring)
    recs = []
    zero = _zero_shot(ctx, strong) if 0 in ks else None
    for sup in ctx.sups:
        queries = sup.splits.val.texts + sup.splits.test.texts
        qids = sup.splits.val.ids + sup.splits.test.ids
        if zero is not None:
            recs += _records(ctx, sup, "baseline", 0, zero["logp"], {"source": zero["source"]}, method)
        st = sup.splits.strong_train
        for k in (k for k in ks if k > 0):
            for role, labels, what in shown(sup):
                t0 = time.perf_counter()
                pos = select_demos(labels, k, sup.seed, f"{what}, seed {sup.seed},")
                demos = [(st.texts[i], int(labels[i])) for i in pos]
                logp = dict(zip(qids, strong.score(queries, demos,
                                                   f"{method} seed {sup.seed} k={k} {role}" if progress else None)))
                # what was run, in the results: prompts longer than the context keep fewer demonstrations
                kept = demos_kept(strong.tok, task.template, task.label_words, queries, demos, strong.limit())
                recs += _records(ctx, sup, role, k, logp, {"demos": [st.ids[i] for i in pos],
                                                           "demo_labels": [int(labels[i]) for i in pos],
                                                           "k_kept_min": int(kept.min()),
                                                           "prompts_cut": int((kept < k).sum())}, method)
                if progress:
                    print(f"[{method}] seed {sup.seed} k={k} {role}: {len(queries)} queries in "
                          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return recs, strong.scored


# ----------------------------------------------------------------------------- the method


def caveat(students: list[Predictions], ceilings: list[Predictions]) -> str:
    """What a prompt summary row's numbers do not show by themselves ("" if nothing): prompts that kept fewer
    demonstrations than the row's k (too long for the context); seeds whose student was shown exactly the
    ceiling's demonstrations, texts and labels (every weak label right), where student = ceiling by
    construction; and seeds whose student saw the ceiling's texts with some labels flipped (a direct test of
    the demonstrations' labels, not a different sample)."""
    out = []
    cut = [r for r in students + ceilings if r.extra.get("prompts_cut")]
    if cut:
        out.append(f"k cut to {min(r.extra['k_kept_min'] for r in cut)} in up to "
                   f"{max(r.extra['prompts_cut'] for r in cut)} prompts longer than the context")
    same, flipped = [], []
    for s, c in zip(students, ceilings):
        if "demos" not in s.extra or s.extra["demos"] != c.extra.get("demos"):
            continue
        labels = s.extra.get("demo_labels"), c.extra.get("demo_labels")
        if labels[0] is None or labels[1] is None:
            continue  # without the labels shown, equal ids say nothing about what the student saw
        (same if labels[0] == labels[1] else flipped).append(s.seed)
    if same:
        out.append("student = ceiling (identical demonstrations)" if len(same) == len(students) else
                   f"student = ceiling on seed(s) {', '.join(map(str, same))} (identical demonstrations)")
    if flipped:
        out.append(f"on seed(s) {', '.join(map(str, flipped))} the student saw the ceiling's demonstration texts "
                   "with some labels flipped")
    return "; ".join(out)


@dataclass(frozen=True)
class PromptOptions(Scoring):
    """Few-shot prompting of the strong model's language-model head."""

    ks: tuple[int, ...] = ints((0, 8), what="ks")
    """Prompt demonstrations per prompt (even: half per class); 0 is the zero-shot baseline. The largest k has
    the summary rows."""

    def __post_init__(self) -> None:
        Scoring.__post_init__(self)
        object.__setattr__(self, "ks", as_numbers(self.ks, int, "ks"))


COST_PER_TOKEN = 1.3
"""A prompt token in forward tokens, for the start-of-run estimate: attention over the k demonstrations' shared
prefix, the separator and the label word after each query (445 s measured against 342 s for the query tokens
alone, in one cold default run on a 2-core Zen 2)."""


@register
class PromptMethod(Method):
    """k demonstrations with gold labels (ceiling) or weak labels (student), and zero-shot, raw and calibrated."""

    name = "prompt"
    order = 1
    Options = PromptOptions
    plan_stage = "prompting"

    def check(self, job, opts: PromptOptions, losses) -> None:
        if not opts.ks or any(k < 0 or k % 2 for k in opts.ks):
            raise ToolkitError(f"ks must be even numbers >= 0 (half the demonstrations per class), got {opts.ks}")
        if max(opts.ks) == 0:  # the summary's rows are the largest k's student and ceiling
            raise ToolkitError("--ks 0 is the zero-shot baseline alone, with no student or ceiling to compare; add an "
                               "even k > 0 (e.g. --ks 0,8): the zero-shot rows come with it")

    def skip(self, info) -> str | None:
        if info.arch != "causal":
            return f"prompting skipped for {info.name}: an encoder has no language-model head to prompt"
        return None

    def run(self, ctx: Context, opts: PromptOptions) -> MethodResult:
        recs, scored = prompt_records(ctx, opts, opts.ks)
        return MethodResult(recs, computed={"prompts_scored": scored})

    def estimate(self, opts: PromptOptions, work) -> dict[str, float]:
        if not work.causal:
            return {}
        runs = work.seeds * 2 * sum(k > 0 for k in opts.ks)  # gold and weak demonstrations; k=0 is extraction's
        return {"prompting": COST_PER_TOKEN * work.forward(runs * (work.sizes.val + work.sizes.test))}

    def describe(self, opts: PromptOptions, job, sizes) -> list[str]:
        return [f"Prompting weights on this machine: {dtype_name(job.dtype, pick_device(job.device))}."]

    def ks(self, opts) -> tuple[int, ...]:
        """The demonstration counts of `opts` (a subclass's options may name them otherwise)."""
        return opts.ks

    def summary_settings(self, opts) -> tuple[str, ...]:
        k = max(self.ks(opts))
        return (setting_label(k, False), setting_label(k, True))

    def student_setting(self, opts) -> str:
        return setting_label(max(self.ks(opts)), True)

    def caveat(self, students: list[Predictions], ceilings: list[Predictions]) -> str:
        return caveat(students, ceilings)


if __name__ == "__main__":
    # the comparison with this method alone: `toolkit.compare` is the composition root, imported by the command
    from toolkit.compare import method_main

    raise SystemExit(method_main(PromptMethod.name))
