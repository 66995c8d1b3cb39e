"""Few-shot prompting with randomly labelled demonstrations: the label-free prompting baseline.

The student's k demonstrations are strong_train examples shown with labels drawn at random (half of each class,
from the seed), never the weak supervisor's nor gold: what a prompt elicits from the demonstrations' format and
inputs alone (Min et al. 2022 found the labels matter little for many tasks). The ceiling is the same prompt
with gold labels, as `prompt`'s ceiling (the scores are shared through the prompt store), so beside `prompt`'s
weak-label row this row says how much of its recovery the weak labels themselves bring. The calibrated twin's
threshold comes from val's weak labels, as for `prompt`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit._util import ToolkitError, rng
from toolkit.config import as_numbers, ints
from toolkit.methods import Context, MethodResult, register
from toolkit.prompt import COST_PER_TOKEN, PromptMethod, Scoring, prompt_records

__all__ = ["PromptRandomOptions", "random_labels"]

LABEL_SALT = 47
"""Salt of the random labels' generator (`_util.rng`), apart from every other draw of the seed."""


@dataclass(frozen=True)
class PromptRandomOptions(Scoring):
    """Few-shot prompting with random demonstration labels (student) against gold ones (ceiling)."""

    random_ks: tuple[int, ...] = ints((8,), what="random_ks")
    """Demonstrations per prompt (even: half per class); the largest has the summary rows."""

    def __post_init__(self) -> None:
        Scoring.__post_init__(self)
        object.__setattr__(self, "random_ks", as_numbers(self.random_ks, int, "random_ks"))


def random_labels(n: int, seed: int) -> np.ndarray:
    """n labels, half of each class (the odd one 0), in a random order drawn from `seed`."""
    return (rng(seed, LABEL_SALT).permutation(n) % 2).astype(np.int64)


def _shown(sup) -> list[tuple[str, np.ndarray, str]]:
    st = sup.splits.strong_train
    return [("ceiling", st.labels, "strong_train (gold labels)"),
            ("student", random_labels(len(st.ids), sup.seed), "strong_train (random labels)")]


@register
class PromptRandomMethod(PromptMethod):
    """k demonstrations with random labels (student) or gold labels (ceiling), raw and calibrated; the rest (what
    it skips, its summary rows, its caveats) is `prompt`'s."""

    name = "prompt_random"
    order = 14
    label_free = True
    Options = PromptRandomOptions
    plan_stage = None

    def ks(self, opts: PromptRandomOptions) -> tuple[int, ...]:
        return opts.random_ks

    def check(self, job, opts: PromptRandomOptions, losses) -> None:
        if not opts.random_ks or any(k <= 0 or k % 2 for k in opts.random_ks):
            raise ToolkitError(f"random_ks must be even numbers > 0 (half the demonstrations per class), got "
                               f"{opts.random_ks}")

    def run(self, ctx: Context, opts: PromptRandomOptions) -> MethodResult:
        recs, scored = prompt_records(ctx, opts, opts.random_ks, shown=_shown, method=self.name)
        return MethodResult(recs, computed={"random_prompts_scored": scored})

    def estimate(self, opts: PromptRandomOptions, work) -> dict[str, float]:
        if not work.causal:
            return {}
        runs = work.seeds * len(opts.random_ks)  # the gold ceiling is prompt's when both run: counted there
        return {"random-label prompting": COST_PER_TOKEN * work.forward(runs * (work.sizes.val + work.sizes.test))}

    def describe(self, opts: PromptRandomOptions, job, sizes) -> list[str]:
        return ["`prompt_random` shows its demonstrations with random labels (half per class, from the seed): no "
                "label reaches the student but val's weak labels, which set its calibrated threshold."]
