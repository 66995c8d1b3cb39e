"""The start-of-run estimate: its token arithmetic per stage, and the timed forward pass it rests on."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from toolkit import finetune, methods, plan, probe, prompt, tasks
from toolkit.config import JobConfig
from toolkit.models import load_tokenizer, resolve

SIZES = tasks.SplitSizes(10, 10, 6, 10)


def _chosen(names, **opts):
    """name -> (registered method, its options with `opts` for those that have them)."""
    out = {}
    for n in names:
        m = methods.get(n)
        mine = {k: v for k, v in opts.items() if k in {f.name for f in fields(m.Options)}}
        out[n] = (m, m.Options(**mine))
    return out


def test_stage_seconds_follow_the_token_counts(tiny_causal, tiny_task, monkeypatch):
    """Each method prices its own stages (`Method.estimate`) from the measured forward speed."""
    monkeypatch.setattr(finetune, "cpu_native_bf16", lambda: False)
    task, info = tasks.load(str(tiny_task)), resolve(str(tiny_causal))
    texts = [task.template.replace("{text}", t) for t in task.texts]
    mean_len = np.mean([len(i) for i in load_tokenizer(info)(texts, add_special_tokens=True).input_ids])
    rate, job = 100.0, JobConfig(device="cpu")
    chosen = _chosen(("probe", "prompt", "finetune"), ks=(0, 2, 4), finetune_seeds=1, epochs=2)
    p = plan.estimate(task, info, chosen, seeds=3, sizes=SIZES, losses=2, job=job, rate=rate)
    sec = lambda n: n * mean_len / rate  # noqa: E731
    assert p.seconds["extraction"] == pytest.approx(sec(len(task)))
    assert p.seconds["probes"] == pytest.approx(3 * probe.SECONDS_PER_SEED)
    # seeds x {gold, weak} x k>0, each over val and test
    assert p.seconds["prompting"] == pytest.approx(prompt.COST_PER_TOKEN * sec(3 * 2 * 2 * (6 + 10)))
    # 3 runs (two student losses and the ceiling): 2 epochs of training on strong_train, two epoch-end
    # evaluations of val and test, and the final predictions on strong_train
    assert p.seconds["fine-tuning"] == pytest.approx(3 * sec(2 * 10 * finetune.TRAIN_PER_TOKEN + 2 * (6 + 10) + 10))
    assert p.total == pytest.approx(sum(p.seconds.values()))
    assert "tokens/s" in p.describe() and p.tokens_per_second == rate
    only = plan.estimate(task, info, _chosen(("finetune",), finetune_seeds=0, epochs=1), seeds=3, sizes=SIZES,
                         losses=1, job=job, rate=rate)
    assert set(only.seconds) == {"fine-tuning"}
    assert only.seconds["fine-tuning"] == pytest.approx(3 * 2 * sec(10 * finetune.TRAIN_PER_TOKEN + (6 + 10) + 10))


def test_bf16_autocast_is_priced_faster_where_the_cpu_has_it(tiny_causal, tiny_task, monkeypatch):
    task, info = tasks.load(str(tiny_task)), resolve(str(tiny_causal))
    kw = dict(seeds=1, sizes=SIZES, losses=1, job=JobConfig(device="cpu"), rate=50.0)
    chosen = _chosen(("finetune",), finetune_seeds=1, epochs=1)
    monkeypatch.setattr(finetune, "cpu_native_bf16", lambda: False)
    fp32 = plan.estimate(task, info, chosen, **kw).seconds["fine-tuning"]
    monkeypatch.setattr(finetune, "cpu_native_bf16", lambda: True)
    assert plan.estimate(task, info, chosen, **kw).seconds["fine-tuning"] == pytest.approx(fp32 / finetune.BF16_SPEEDUP)


def test_forward_rate_times_a_real_forward_pass(tiny_causal, tiny_task):
    task = tasks.load(str(tiny_task))
    rate = plan.forward_rate(resolve(str(tiny_causal)), list(task.texts), device="cpu", budget_tokens=64)
    assert np.isfinite(rate) and rate > 0
