"""Prompting: label-word scores against a per-prompt reference, shared-prefix reuse against full prompts,
demonstration dropping, calibration, demonstration draws, the zero-shot cache, and the records it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from toolkit import compare, prompt, records
from toolkit._util import ToolkitError
from toolkit.prompt import fit_demos, score, select_demos, threshold
from toolkit.records import summary, table
from toolkit.tasks import FILE_LABEL_WORDS, FILE_TEMPLATE, SplitSizes

TEMPLATE = "Review: {text}\nSentiment:"
TEXTS = ["a", "The movie was wonderful and I would watch it again.", "Terrible!", "ok ok",
         "Mixed feelings: good acting, weak plot, far too long for what it has to say.", "fine", "!!", "meh."]
DEMOS = [("Loved it.", 1), ("Dull and slow, I left early.", 0), ("A joy", 1), ("Not good at all!", 0)]
WORDS = [(" negative", " positive"),  # one token each: one row per prompt
         (" No", " Absolutely not"),  # 1 vs 2 tokens: one row scores both
         ("Yes!", " Nope"),  # no leading space, 2 tokens each, different first tokens: two rows
         (" very bad", " very good")]  # shared first token


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small to gain from threads, and on a busy machine OpenMP's waiting
    between threads costs ~10x; restored afterwards for the other test modules."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tiny_causal):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_causal, dtype=torch.float32).eval(), \
        AutoTokenizer.from_pretrained(tiny_causal)


def reference(model, tok, texts, words, demos=()):
    """One unpadded forward per prompt + word, summing the word's token log-probs; the prompt is built
    from the same segments as `score`: demonstration blocks, the query, the word."""
    enc = lambda s: tok(s, add_special_tokens=False).input_ids
    fill = lambda t: TEMPLATE.replace("{text}", t)
    prefix = tok("", add_special_tokens=True).input_ids
    for i, (t, y) in enumerate(demos):
        prefix = prefix + enc(("\n\n" if i else "") + fill(t) + words[y])
    out = np.zeros((len(texts), 2))
    with torch.inference_mode():
        for i, t in enumerate(texts):
            ctx = prefix + enc(("\n\n" if demos else "") + fill(t))
            for c, w in enumerate(words):
                wid = enc(w)
                logits = model(input_ids=torch.tensor([ctx + wid])).logits[0].float()
                logp = torch.log_softmax(logits, -1)
                out[i, c] = sum(logp[len(ctx) - 1 + j, tok_id].item() for j, tok_id in enumerate(wid))
    return out


@pytest.mark.parametrize(("words", "padding_side"), [(w, "left") for w in WORDS] + [(WORDS[2], "right")])
def test_score_matches_per_prompt_reference(tiny, words, padding_side):
    model, tok = tiny
    got = score(model, tok, TEMPLATE, words, TEXTS, batch_tokens=40, padding_side=padding_side)
    np.testing.assert_allclose(got, reference(model, tok, TEXTS, words), atol=1e-4)


@pytest.mark.parametrize("words", WORDS[1:3])
def test_score_with_demos_matches_reference(tiny, words):
    model, tok = tiny
    got = score(model, tok, TEMPLATE, words, TEXTS[:4], DEMOS, batch_tokens=200)
    np.testing.assert_allclose(got, reference(model, tok, TEXTS[:4], words, DEMOS), atol=1e-4)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("words", [WORDS[0], WORDS[2]])
def test_prefix_reuse_equals_full_prompts(tiny, words, padding_side):
    model, tok = tiny
    kw = dict(batch_tokens=150, padding_side=padding_side)  # ~3 rows per batch: several batches share the cache
    shared = score(model, tok, TEMPLATE, words, TEXTS, DEMOS, reuse_prefix=True, **kw)
    full = score(model, tok, TEMPLATE, words, TEXTS, DEMOS, reuse_prefix=False, **kw)
    assert np.abs(shared - full).max() < 1e-4
    again = score(model, tok, TEMPLATE, words, TEXTS, DEMOS, reuse_prefix=True, batch_tokens=10_000)
    np.testing.assert_allclose(again, shared, atol=1e-4)  # one big batch: same numbers


def test_long_prompts_drop_demonstrations_with_a_warning(tiny):
    model, tok = tiny
    enc = lambda s: tok(s, add_special_tokens=False).input_ids
    blocks = [len(enc(("\n\n" if i else "") + TEMPLATE.replace("{text}", t) + FILE_LABEL_WORDS[y]))
              for i, (t, y) in enumerate(DEMOS)]
    short, long = "ok", TEXTS[4]
    limit = sum(blocks) + len(enc("\n\n" + TEMPLATE.replace("{text}", short)))  # `short` just fits all 4
    with pytest.warns(UserWarning, match=r"1 of 2 prompts exceed max_length.*dropped \d+ demonstrations"):
        got = score(model, tok, TEMPLATE, FILE_LABEL_WORDS, [short, long], DEMOS, max_length=limit)
    kept, _ = fit_demos(0, blocks, [0, len(enc(TEMPLATE.replace("{text}", long)))],
                        [0, len(enc("\n\n" + TEMPLATE.replace("{text}", long)))], 0, limit)
    assert 0 < kept[1] < 4
    alone = score(model, tok, TEMPLATE, FILE_LABEL_WORDS, [long], DEMOS[:kept[1]])
    np.testing.assert_allclose(got[1], alone[0], atol=1e-4)  # the long query kept its first demos only
    np.testing.assert_allclose(got[0], score(model, tok, TEMPLATE, FILE_LABEL_WORDS, [short], DEMOS)[0],
                               atol=1e-4)


def test_fit_demos_counts_and_cuts():
    kept, cut = fit_demos(1, [10, 10, 10], alone=[5, 5, 40], after=[6, 6, 41], extra=1, limit=30)
    assert kept.tolist() == [2, 2, 0] and cut.tolist() == [0, 0, 12]  # 1 + 40 + 1 = 42 > 30
    kept, _ = fit_demos(0, [10, 10], alone=[3], after=[4], extra=0, limit=100)
    assert kept.tolist() == [2]


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.81, 1.0])
def test_threshold_hits_the_target_balance(rate):
    diff = np.random.default_rng(0).normal(2.0, 1.5, size=200)  # raw decisions: almost all class 1
    t = threshold(diff, rate)
    assert np.mean(diff > t) == pytest.approx(rate, abs=0.5 / len(diff))
    p = 1 / (1 + np.exp(-(diff - t)))
    assert np.mean(p > 0.5) == pytest.approx(rate, abs=0.5 / len(diff))


def test_demos_are_balanced_deterministic_and_nested():
    shown = np.random.default_rng(1).integers(0, 2, size=50)
    d8 = select_demos(shown, 8, seed=3)
    assert np.bincount(shown[d8], minlength=2).tolist() == [4, 4] and len(set(d8)) == 8
    np.testing.assert_array_equal(d8, select_demos(shown, 8, seed=3))
    assert not np.array_equal(d8, select_demos(shown, 8, seed=4))
    assert set(select_demos(shown, 4, seed=3)) <= set(d8)
    assert len(select_demos(shown, 0, seed=3)) == 0


def test_k_larger_than_the_pool_is_a_clear_error():
    shown = np.array([0] * 10 + [1] * 3)
    with pytest.raises(ToolkitError, match=r"k=8 needs 4 demonstrations per class but strong_train has only 3 "
                                           r"with label 1"):
        select_demos(shown, 8, seed=0)
    with pytest.raises(ToolkitError, match="even"):
        select_demos(shown, 3, seed=0)


def test_zero_shot_from_the_cache_equals_direct_scoring(tiny, tiny_causal, tiny_task, tmp_path):
    from toolkit import tasks
    from toolkit.extract import ExtractConfig, extract
    from toolkit.models import load_tokenizer, resolve

    model, tok = tiny
    feats = extract(ExtractConfig(model=str(tiny_causal), task=str(tiny_task), layers="0", cache_dir=str(tmp_path)),
                    progress=False)
    task = tasks.load(str(tiny_task))
    direct = score(model, tok, FILE_TEMPLATE, FILE_LABEL_WORDS, task.texts)
    np.testing.assert_allclose(feats.label_logprobs[feats.index(task.ids)], direct, atol=1e-4)
    from toolkit.config import JobConfig
    from toolkit.methods import Context

    info = resolve(str(tiny_causal), str(tmp_path))
    ctx = Context(task=task, task_spec=str(tiny_task), sups=(), weak="w", strong=str(tiny_causal), info=info,
                  job=JobConfig(tasks=str(tiny_task), strong=str(tiny_causal), limit=0, cache_dir=str(tmp_path)))
    assert prompt.cached_zero_shot(ctx, load_tokenizer(info)) is None  # layers="0" is another entry
    extract(ExtractConfig(model=str(tiny_causal), task=str(tiny_task), cache_dir=str(tmp_path)), progress=False)
    cached = prompt.cached_zero_shot(ctx, load_tokenizer(info))
    np.testing.assert_allclose(np.stack([cached[i] for i in task.ids]), direct, atol=1e-4)


def _config(tiny_causal, tiny_task, cache_dir, **options):
    """The comparison with prompting alone on the tiny task (`python -m toolkit.prompt` runs the same)."""
    return compare.CompareConfig.make(tasks=str(tiny_task), weak=str(tiny_causal), strong=str(tiny_causal),
                                      methods="prompt", sizes=SplitSizes(16, 12, 4, 8), limit=0,
                                      cache_dir=str(cache_dir), **options)


def _records(cfg):
    result = compare.run_config(cfg, progress=False)
    return result.records, next(iter(result.labels.values()))


@pytest.fixture(scope="module")
def tiny_run(tiny_causal, tiny_task, tmp_path_factory):
    cfg = _config(tiny_causal, tiny_task, tmp_path_factory.mktemp("cache"), seeds=2, ks=(0, 2),
                  prompt={"batch_tokens": 512})
    return cfg, *_records(cfg)


def test_records_join_a_probe_like_table(tiny_run):
    cfg, recs, labels = tiny_run
    ours = [r for r in recs if r.method == "prompt"]
    keys = {(r.role, r.setting, r.seed, r.split) for r in ours}
    for seed in (0, 1):
        for split in ("val", "test"):
            assert {("baseline", "k=0", seed, split), ("baseline", "k=0,cal", seed, split),
                    ("ceiling", "k=2", seed, split), ("student", "k=2,cal", seed, split)} <= keys
    assert len(ours) == 2 * 2 * 2 * 3  # seeds x splits x (raw, cal) x roles
    assert {(r.setting, r.params["k"], r.params["calibrated"]) for r in ours} == {
        ("k=0", 0, False), ("k=0,cal", 0, True), ("k=2", 2, False), ("k=2,cal", 2, True)}  # typed, not parsed
    assert all(r.loss == "none" and (r.strong,) == cfg.job.strong and r.weak == cfg.job.weak for r in ours)
    tests = [r for r in ours if r.split == "test"]
    assert len({r.ids for r in tests}) == 1  # a fixed test pool
    base = [r for r in tests if r.setting == "k=0"]
    np.testing.assert_array_equal(base[0].p, base[1].p)  # zero-shot raw does not depend on the seed
    assert base[0].extra["source"] == "extraction cache"  # the weak extraction made the strong entry here
    tab = records.table(recs, labels)
    assert set(tab.method) == {"probe", "prompt"} and tab.value.notna().all()
    summ = records.summary(recs, labels, settings=("k=2", "k=2,cal"), n_boot=50)
    assert sorted(summ.setting) == ["k=2", "k=2,cal"] and (summ.n_seeds == 2).all()
    val_cal = [r for r in ours if r.split == "val" and r.setting == "k=2,cal"]
    for r in val_cal:  # calibrated balance on val = weak hard-label balance on val
        weak = next(w for w in recs if w.role == "weak" and w.seed == r.seed and w.split == "val")
        assert np.mean(r.p > 0.5) == pytest.approx(np.mean(weak.aligned(r.ids) > 0.5), abs=1 / len(r.ids))


def test_a_rerun_is_served_by_the_score_cache_and_a_damaged_file_is_rescored(tiny_run, monkeypatch):
    cfg, recs, _ = tiny_run
    store = Path(cfg.job.cache_dir) / "runs" / "prompt"
    files = sorted(store.glob("*.npz"))
    assert len(files) == 2 * 2  # seeds x (gold, weak) demonstrations; zero-shot came from the extraction cache

    def no_model(*a, **k):
        raise AssertionError("a cached prompt run must not load the model")

    with monkeypatch.context() as m:
        m.setattr(prompt, "load_model", no_model)
        again, _ = _records(cfg)
    assert [r.key() for r in again] == [r.key() for r in recs]
    for a, b in zip(again, recs):
        np.testing.assert_array_equal(a.p, b.p)
    files[0].write_bytes(files[0].read_bytes()[:-20])  # a damaged file is scored again, never used
    with pytest.warns(UserWarning, match="prompt score cache"):
        third, _ = _records(cfg)
    for a, b in zip(third, recs):
        np.testing.assert_allclose(a.p, b.p, atol=1e-6)


def test_cli_prints_the_summary(tiny_run, capsys, tmp_path):
    cfg = tiny_run[0]
    job = cfg.job
    rc = compare.method_main("prompt", ["--task", job.tasks[0], "--weak", job.weak, "--strong", job.strong[0],
                                        "--seeds", "0,1", "--ks", "0,2", "--sizes", "16,12,4,8", "--limit", "0",
                                        "--batch-tokens", "512", "--cache-dir", job.cache_dir, "--quiet",
                                        "--no-figures", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "k=2,cal" in out and "PGR" in out and "prompt" in out
    summ = pd.read_csv(tmp_path / "summary.csv")  # the comparison's outputs, from the same stores
    assert set(summ.method) == {"prompt"} and set(summ.setting) == {"k=2", "k=2,cal"}
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "report.md").exists()


def test_errors_for_an_encoder_and_bad_k(tiny_causal, tiny_task, tmp_path, monkeypatch, capsys):
    from toolkit.models import ModelInfo

    with pytest.raises(ToolkitError, match="even"):
        _config(tiny_causal, tiny_task, tmp_path, ks=(0, 3))
    monkeypatch.setattr(compare, "resolve", lambda name, cache_dir=None: ModelInfo(name, name, {}, "encoder"))
    argv = ["--task", str(tiny_task), "--weak", "tfidf", "--strong", "my-bert", "--quiet", "--out", str(tmp_path)]
    assert compare.method_main("prompt", argv) == 2
    assert "an encoder has no language-model head to prompt" in capsys.readouterr().err


def test_a_cut_k_is_in_the_results_and_the_summary(tiny_causal, tiny_task, tmp_path):
    """Prompts longer than max_length keep fewer demonstrations: the records say how many (numeric extras, so
    results.csv has them as metric rows) and the summary row's caveat says so, not only a warning on stderr."""
    cfg = _config(tiny_causal, tiny_task, tmp_path, seeds=1, ks=(0, 2), prompt={"max_length": 40})
    with pytest.warns(UserWarning, match=r"exceed max_length=40"):
        recs, labels = _records(cfg)
    shots = [r for r in recs if r.method == "prompt" and r.role in ("student", "ceiling")]
    assert all(r.extra["prompts_cut"] > 0 and r.extra["k_kept_min"] < 2 for r in shots)
    tab = table(recs, labels)
    assert {"prompts_cut", "k_kept_min"} <= set(tab.metric)
    summ = summary(recs, labels, settings=("k=2",), caveats={"prompt": prompt.caveat})
    assert summ.caveat.str.contains(r"k cut to [01] in up to \d+ prompts longer than the context").all()


def test_identical_demonstrations_are_flagged_not_a_silent_pgr_of_one():
    from toolkit.records import Predictions

    ids = tuple(f"i{k}" for k in range(8))
    labels = {i: k % 2 for k, i in enumerate(ids)}
    rng = np.random.default_rng(0)

    def rec(role, seed, demos, shown=(0, 1)):
        return Predictions(task="t", weak="w", strong="s", method="prompt", role=role, loss="none", setting="k=2",
                           seed=seed, split="test", ids=ids, p=rng.uniform(size=8),
                           extra={"demos": demos, "demo_labels": list(shown), "k_kept_min": 2, "prompts_cut": 0}
                           if demos else {})

    recs = [rec("weak", s, None) for s in (0, 1)]
    recs += [rec("ceiling", 0, ["a", "b"]), rec("student", 0, ["a", "b"]),  # every weak label right: the same demos
             rec("ceiling", 1, ["a", "c"]), rec("student", 1, ["a", "d"])]
    caveats = {"prompt": prompt.caveat}  # the prompt method's own caveat (`Method.caveat`)
    (row,) = summary(recs, labels, settings=("k=2",), caveats=caveats).to_dict("records")
    assert row["caveat"] == "student = ceiling on seed(s) 0 (identical demonstrations)"
    both = [r for r in recs if r.seed == 0] + [rec("weak", 1, None), rec("ceiling", 1, ["x"]), rec("student", 1, ["x"])]
    assert summary(both, labels, settings=("k=2",), caveats=caveats).caveat[0] == \
        "student = ceiling (identical demonstrations)"
    # the same texts with both labels flipped is the worst student, not a meaningless one (issue #32)
    flipped = recs[:2] + [rec("ceiling", 0, ["a", "b"], (0, 1)), rec("student", 0, ["a", "b"], (1, 0)),
                          rec("ceiling", 1, ["a", "c"]), rec("student", 1, ["a", "d"])]
    (row,) = summary(flipped, labels, settings=("k=2",), caveats=caveats).to_dict("records")
    assert "student = ceiling" not in row["caveat"]
    assert row["caveat"] == "on seed(s) 0 the student saw the ceiling's demonstration texts with some labels flipped"
