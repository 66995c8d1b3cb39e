"""Fine-tuning on the tiny random-init Llama: a step lowers the loss, gradient caching equals one big batch,
pooling equals extraction's, early stopping picks the best weak agreement, gold never reaches a student,
finished runs are reused, and the records join the shared results table."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from toolkit import compare, records, tasks
from toolkit import finetune as ft
from toolkit import trainer as tr
from toolkit._util import ToolkitError
from toolkit.config import JobConfig
from toolkit.encoding import pad_batch, tokenize
from toolkit.extract import extract_arrays
from toolkit.losses import get_loss
from toolkit.models import load_tokenizer, resolve
from toolkit.tasks import SplitSizes
from toolkit.weak import Supervision, WeakConfig, supervise

# The tiny task's batches of 8 are below logconf's reliable size on purpose (speed); it warns, as it should.
pytestmark = pytest.mark.filterwarnings("ignore:logconf on a batch")
SIZES = SplitSizes(weak_train=8, strong_train=16, val=8, test=8)
JOB_FIELDS = {f for f in JobConfig.__dataclass_fields__}


def _with(cfg: tr.FinetuneConfig, **changes) -> tr.FinetuneConfig:
    """`cfg` with `changes`: training fields on it, the job's fields (device, dtype, cache_dir) on its job."""
    job = {k: changes.pop(k) for k in list(changes) if k in JOB_FIELDS}
    return replace(cfg, **changes, **({"job": replace(cfg.job, **job)} if job else {}))


def _comparison(cfg: tr.FinetuneConfig, **more) -> compare.CompareConfig:
    """The comparison with fine-tuning alone on `cfg`'s job and training fields (what `python -m toolkit.finetune`
    runs), every seed fine-tuned."""
    opts = ft.FinetuneOptions(**cfg.training(), finetune_seeds=0)
    return replace(compare.CompareConfig.make(methods="finetune", **more), job=cfg.job,
                   options={**compare.CompareConfig.make().options, "finetune": opts})


def _run_records(cfg: tr.FinetuneConfig):
    result = compare.run_config(_comparison(cfg), progress=False)
    return result.records, next(iter(result.labels.values()))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are microseconds: with several threads on a shared CPU, OpenMP's wake-ups and
    contention cost 100x more than the work (measured), so these tests run single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cfg(tiny_causal, tiny_task, tmp_path_factory):
    from conftest import save_tiny_causal

    weak = save_tiny_causal(tmp_path_factory.mktemp("tiny_weak"), seed=1, n_layers=1)
    job = JobConfig(tasks=str(tiny_task), weak=str(weak), strong=str(tiny_causal), seeds=(0,), sizes=SIZES, limit=0,
                    dtype="float32",  # exactness checks below; bf16 autocast is tested on its own
                    cache_dir=str(tmp_path_factory.mktemp("cache")))
    return tr.FinetuneConfig(job=job, model=str(tiny_causal), batch_size=8, micro_batch=8, lr=1e-3,
                             evals_per_epoch=100)


@pytest.fixture(scope="module")
def sup(cfg):
    task = tasks.load(cfg.job.tasks[0])
    return supervise(task, [0], SIZES, WeakConfig(model=cfg.job.weak), cache_dir=cfg.job.cache_dir, progress=False)[0]


def _encoded(cfg, texts):
    info = resolve(cfg.model)
    tok = load_tokenizer(info)
    seqs, _ = tokenize(tok, [tasks.load(cfg.job.tasks[0]).template.replace("{text}", t) for t in texts], 512, "left")
    return info, tok, seqs


def _trainer(cfg, info, tok, total_steps=10):
    model = tr.build_classifier(info, "last")
    return tr.Trainer(model, cfg, total_steps, pad_id=tok.pad_token_id, side="left")


def _xent(p, y):
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_one_step_lowers_the_loss(cfg, dtype):
    task = tasks.load(cfg.job.tasks[0])
    info, tok, seqs = _encoded(cfg, task.texts[:16])
    y = task.labels[:16].astype(float)
    trainer = _trainer(_with(cfg, batch_size=16, micro_batch=16, warmup_frac=0.0, dtype=dtype), info, tok)
    assert trainer.precision == ("bf16" if dtype == "bfloat16" else "no")
    before = _xent(trainer.predict(seqs), y)
    step_loss = trainer.step(seqs, y, get_loss("xent"), step=0)
    assert math.isclose(before, math.log(2), abs_tol=1e-6) and math.isclose(step_loss, before, abs_tol=1e-6)
    assert _xent(trainer.predict(seqs), y) < before - 1e-4


def test_gradient_caching_equals_one_big_batch_for_logconf(cfg):
    """logconf over a batch of 32 in micro-batches of 8: the same update as one forward of 32, and no
    small-batch warning (the threshold sees all 32)."""
    task = tasks.load(cfg.job.tasks[0])
    info, tok, seqs = _encoded(cfg, task.texts[:32])
    w1 = np.random.default_rng(0).uniform(size=32)
    loss = get_loss("logconf")
    states = []
    for micro in (32, 8):
        trainer = _trainer(_with(cfg, batch_size=32, micro_batch=micro, warmup_frac=0.0), info, tok)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for step in (0, 5):  # step 5 of 10: logconf's confidence weight is on
                trainer.step(seqs, w1, loss, step=step)
        states.append(trainer.state())
    for k, v in states[0].items():
        torch.testing.assert_close(states[1][k], v, atol=2e-6, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_update(cfg):
    """Recomputing activations in the backward pass changes memory and time, not the step: the weights after two
    steps agree with and without it (so it is rightly left out of a run's store key)."""
    task = tasks.load(cfg.job.tasks[0])
    info, tok, seqs = _encoded(cfg, task.texts[:16])
    y = task.labels[:16].astype(float)
    states = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = tr.build_classifier(info, "last", checkpointing=checkpointing)
        assert model.backbone.is_activation_checkpointing == checkpointing
        trainer = tr.Trainer(model, _with(cfg, batch_size=16, micro_batch=16), 10, pad_id=tok.pad_token_id,
                             side="left")
        for step in (0, 1):
            trainer.step(seqs, y, get_loss("xent"), step=step)
        states.append(trainer.state())
    for k, v in states[0].items():
        torch.testing.assert_close(states[1][k], v, atol=1e-6, rtol=1e-5)


def test_pooled_representation_is_extractions_last_layer(cfg):
    from transformers import AutoModelForCausalLM

    texts = ["!", "good fine great", "bad " * 20]
    info, tok, seqs = _encoded(cfg, texts)
    ref = extract_arrays(AutoModelForCausalLM.from_pretrained(info.path).eval(), tok,
                         [tasks.load(cfg.job.tasks[0]).template.replace("{text}", t) for t in texts], layers=[2],
                         pool="last", causal=True)["hidden"][0]
    model = tr.build_classifier(info, "last").eval()
    ids, mask = pad_batch(seqs, tok.pad_token_id, "left")
    with torch.no_grad():
        np.testing.assert_allclose(model.pooled(ids, mask).numpy(), ref, atol=1e-5)


def test_early_stopping_picks_the_eval_with_best_weak_agreement(cfg, sup):
    """Selection labels only choose: with val labels equal to the hard predictions of an intermediate eval,
    training is unchanged and that eval (the earliest with those predictions) becomes `best`."""
    info = resolve(cfg.model)
    tok = load_tokenizer(info)
    data = {s: tokenize(tok, [sup.splits[s].template.replace("{text}", t) for t in sup.splits[s].texts], 512,
                        "left")[0] for s in ("strong_train", "val", "test")}
    run_cfg = _with(cfg, batch_size=4, micro_batch=4, lr=3e-3, train_preds=False)

    def fit(select):
        trainer = _trainer(run_cfg, info, tok, total_steps=8)
        return tr.train(trainer, data, sup.splits.strong_train.labels.astype(float), select,
                        sup.splits.test.labels, get_loss("xent"), seed=0)

    first = fit(np.zeros(8, dtype=int))
    hard = [tuple(p > 0.5) for p in first.val_history]
    assert len(hard) == 8 and len(set(hard)) > 1, "construction needs predictions that change"
    k = next(i for i in range(len(hard) - 1) if hard[i] not in hard[i + 1:])  # differs from all later evals
    expected = hard.index(hard[k])
    second = fit(np.array(hard[k], dtype=int))
    np.testing.assert_array_equal(second.p["final", "test"], first.p["final", "test"])  # training unchanged
    assert second.curve["val_agreement"].iloc[expected] == 1.0
    assert second.curve.loc[second.curve["best"], "step"].tolist() == [second.curve["step"].iloc[expected]]
    np.testing.assert_array_equal(second.p["best", "val"], first.val_history[expected])
    assert expected < len(hard) - 1 and not np.array_equal(second.p["best", "val"], second.p["final", "val"])


def test_the_default_schedule_evaluates_four_times_an_epoch(cfg, sup):
    assert tr.eval_points(16, 4) == {4, 8, 12, 16} and tr.eval_points(15, 4) == {4, 8, 12, 15}
    assert tr.eval_points(2, 4) == {1, 2} and tr.eval_points(15, 1) == {15}
    info = resolve(cfg.model)
    tok = load_tokenizer(info)
    data = {s: tokenize(tok, [sup.splits[s].template.replace("{text}", t) for t in sup.splits[s].texts], 512,
                        "left")[0] for s in ("strong_train", "val", "test")}
    default = tr.FinetuneConfig().evals_per_epoch
    run_cfg = _with(cfg, batch_size=2, micro_batch=2, epochs=2, evals_per_epoch=default, train_preds=False)
    trainer = _trainer(run_cfg, info, tok, total_steps=16)  # 16 strong_train examples: 8 batches an epoch
    res = tr.train(trainer, data, sup.soft("strong_train"), sup.soft("val") > 0.5, sup.splits.test.labels,
                   get_loss("xent"), seed=0)
    assert default == 4 and res.curve["epoch"].tolist() == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert res.curve["step"].tolist() == [2, 4, 6, 8, 10, 12, 14, 16] and res.curve["best"].sum() == 1
    with pytest.raises(ToolkitError, match="evals_per_epoch"):
        tr.FinetuneConfig(evals_per_epoch=0)
    # test is predicted only where a result needs it: at each new best and at the final eval (issue #35)
    agree = res.curve["val_agreement"].to_numpy()
    needed = [a > max(agree[:i], default=-1) or i == len(agree) - 1 for i, a in enumerate(agree)]
    assert res.curve["test_acc"].notna().tolist() == needed and not all(needed)
    full = tr.train(_trainer(_with(run_cfg, test_curve=True), info, tok, total_steps=16), data,
                    sup.soft("strong_train"), sup.soft("val") > 0.5, sup.splits.test.labels, get_loss("xent"), seed=0)
    assert full.curve["test_acc"].notna().all()  # test_curve: every eval
    for key in res.p:  # the same training: every stored prediction is the same
        np.testing.assert_array_equal(res.p[key], full.p[key])


def test_the_best_evals_other_splits_are_the_best_models_and_no_full_copy_is_kept(cfg, sup):
    """With train_preds, the best eval's strong_train predictions are taken at that eval (no host copy of the
    model to predict them later); they equal a prediction by the best weights reloaded. Kept weights are the
    trainable ones only."""
    info = resolve(cfg.model)
    tok = load_tokenizer(info)
    data = {s: tokenize(tok, [sup.splits[s].template.replace("{text}", t) for t in sup.splits[s].texts], 512,
                        "left")[0] for s in ("strong_train", "val", "test")}
    run_cfg = _with(cfg, batch_size=4, micro_batch=4, lr=3e-3, train_preds=True)
    trainer = _trainer(run_cfg, info, tok, total_steps=8)
    res = tr.train(trainer, data, sup.soft("strong_train"), np.zeros(8, dtype=int), sup.splits.test.labels,
                   get_loss("xent"), seed=0, keep_states=True)
    assert res.curve["best"].tolist().index(True) < len(res.curve) - 1  # an earlier eval was the best
    trainer.load(res.states["best"])
    np.testing.assert_allclose(trainer.predict(data["strong_train"]), res.p["best", "strong_train"], atol=1e-6)
    trainable = {k for k, p in trainer.model.named_parameters() if p.requires_grad}
    assert set(res.states["best"]) == trainable


def _flipped(task):
    return replace(task, data=task.data.assign(label=1 - task.data["label"]))


def test_gold_never_enters_student_training_or_selection(cfg, sup, tmp_path, finetune_runs):
    """Flip every gold label of strong_train and val: students are bit-identical, the ceiling is not."""
    poisoned = Supervision(sup.seed, replace(sup.splits, strong_train=_flipped(sup.splits.strong_train),
                                             val=_flipped(sup.splits.val)), sup.weak)
    accumulate = _with(cfg, micro_batch=4)  # logconf with gradient caching
    runs = {}
    for name, s, cache in (("clean", sup, tmp_path / "a"), ("poisoned", poisoned, tmp_path / "b")):
        before = finetune_runs.trainings
        c = _with(accumulate, cache_dir=str(cache))
        runs[name] = [ft.train_run(s, c, role="student", loss="logconf"),
                      ft.train_run(s, c, role="ceiling")]
        assert finetune_runs.trainings == before + 2  # both trained, none loaded
    (student, ceiling), (student_p, ceiling_p) = runs["clean"], runs["poisoned"]
    assert student.key == student_p.key and ceiling.key != ceiling_p.key
    for a, b in zip(student.records, student_p.records):
        assert a.key() == b.key() and np.array_equal(a.p, b.p)
    assert any(not np.array_equal(a.p, b.p) for a, b in zip(ceiling.records, ceiling_p.records))


def test_finished_run_is_reused_and_joins_the_results_table(cfg, sup, capsys, finetune_runs, tmp_path):
    first, labels = _run_records(cfg)
    trained, loaded = finetune_runs.trainings, finetune_runs.loaded
    again, _ = _run_records(cfg)
    assert finetune_runs.trainings == trained and finetune_runs.loaded == loaded + 3  # 2 students + ceiling
    assert [r.key() for r in again] == [r.key() for r in first]
    assert all(np.array_equal(a.p, b.p) for a, b in zip(first, again))

    tuned = [r for r in first if r.method == "finetune"]
    assert {(r.role, r.loss, r.setting, r.split) for r in tuned} >= {
        ("student", "logconf", "best", "test"), ("ceiling", "xent", "final", "strong_train")}
    table = records.table(first, labels)
    assert set(table["method"]) == {"probe", "finetune"} and table["value"].notna().any()
    summary = records.summary(first, labels, settings=("best", "final"), n_boot=50)
    assert sorted(zip(summary["loss"], summary["setting"])) == [
        ("logconf", "best"), ("logconf", "final"), ("xent", "best"), ("xent", "final")]
    assert {"pgr_acc", "pgr_auroc", "student_acc", "ceiling_acc"} <= set(summary.columns)

    run = ft.train_run(sup, cfg, role="ceiling")
    assert {p.name for p in run.path.iterdir()} == {"manifest.json", "predictions.npz", "curve.csv"}
    assert run.loaded and [r.key() for r in run.records] == [r.key() for r in first if r.role == "ceiling"]
    assert {"step", "val_agreement", "test_acc", "best"} <= set(run.curve.columns)

    # `python -m toolkit.finetune` is the comparison with fine-tuning alone: it loads the same three runs
    argv = ["--task", cfg.job.tasks[0], "--weak", cfg.job.weak, "--strong", cfg.model, "--seeds", "1", "--sizes",
            "8,16,8,8", "--limit", "0", "--batch-size", "8", "--micro-batch", "8", "--lr", "1e-3", "--evals-per-epoch",
            "100", "--cache-dir", cfg.job.cache_dir, "--dtype", "float32", "--quiet", "--no-figures", "--out",
            str(tmp_path)]
    assert compare.method_main("finetune", argv) == 0
    out, err = capsys.readouterr()
    assert "PGR" in out and "logconf" in out and "finetunes_trained 0" in err
    assert set(pd.read_csv(tmp_path / "summary.csv").method) == {"finetune"}


def test_keep_weights_retrains_a_run_stored_without_them(cfg, sup, finetune_runs):
    ft.train_run(sup, cfg, role="ceiling")
    before = finetune_runs.trainings
    run = ft.train_run(sup, _with(cfg, keep_weights=True), role="ceiling")
    assert finetune_runs.trainings == before + 1
    assert {"best.safetensors", "final.safetensors"} <= {p.name for p in run.path.iterdir()}
    ft.train_run(sup, _with(cfg, keep_weights=True), role="ceiling")
    assert finetune_runs.trainings == before + 1


def test_two_writers_of_one_run_keep_one_valid_copy(tmp_path, monkeypatch):
    """Two processes that train the same run (a sweep's overlapping jobs) both store it: the second to rename its
    folder into place finds the first's there, keeps it (same key, same content) and leaves no temporary folder."""
    from types import SimpleNamespace

    path = tmp_path / "finetune" / "key"
    result = SimpleNamespace(curve=pd.DataFrame({"step": [1]}), states={})
    real = os.replace

    def first_writer_wins(src, dst):  # the other process renames its copy in just before this one
        Path(dst).mkdir(parents=True)
        (Path(dst) / "manifest.json").write_text("{}")
        return real(src, dst)

    monkeypatch.setattr(ft.os, "replace", first_writer_wins)
    ft._store(path, {"key": "k"}, [], result, {})
    assert [p.name for p in path.parent.iterdir()] == ["key"] and (path / "manifest.json").read_text() == "{}"


def test_a_damaged_run_is_trained_again_never_used(cfg, sup, finetune_runs):
    run = ft.train_run(sup, cfg, role="ceiling")
    blob = bytearray((run.path / "predictions.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (run.path / "predictions.npz").write_bytes(bytes(blob))
    before = finetune_runs.trainings
    with pytest.warns(UserWarning, match="training again"):
        again = ft.train_run(sup, cfg, role="ceiling")
    assert finetune_runs.trainings == before + 1 and not again.loaded
    assert all(np.array_equal(a.p, b.p) for a, b in zip(run.records, again.records))  # the same numbers again


def test_seeds_draw_their_own_dropout_masks():
    """Dropout masks come from (seed, step, micro-batch): two seeds differ, one seed repeats itself."""
    from toolkit._util import derive_seed

    masks = {s: derive_seed(s, tr.DROPOUT_SALT, 3, 0) for s in (0, 1)}
    assert masks[0] != masks[1] and masks[0] == derive_seed(0, tr.DROPOUT_SALT, 3, 0)
    assert derive_seed(0, tr.DROPOUT_SALT, 3, 1) != masks[0]


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    for native, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(tr, "cpu_native_bf16", lambda native=native: native)
        assert tr.mixed_precision(JobConfig(device="cpu")) == expected
        assert tr.mixed_precision(JobConfig(device="cpu", dtype="float32")) == "no"
        assert tr.mixed_precision(JobConfig(device="cpu", dtype="bfloat16")) == "bf16"
    with pytest.raises(ToolkitError, match="dtype"):
        tr.mixed_precision(JobConfig(dtype="float16"))


def test_config_parsing_and_errors(cfg):
    c = compare.CompareConfig.make(methods="finetune", seeds="0, 2", losses="xent,logconf:alpha=0.75")
    assert c.job.seeds == (0, 2) and c.losses == ("xent", "logconf:alpha=0.75")
    assert ft.parse_loss("logconf:alpha=0.75") == ("logconf", {"alpha": 0.75})
    with pytest.raises(ToolkitError, match="unknown loss"):
        compare.CompareConfig.make(methods="finetune", losses="nope")
    with pytest.raises(ToolkitError, match="schedule"):
        tr.FinetuneConfig(schedule="step")
    if importlib.util.find_spec("peft") is None:
        with pytest.raises(ToolkitError, match="peft"):
            tr.build_classifier(resolve(cfg.model), "last", lora=4)


def test_the_paper_recipe_takes_openais_learning_rate_by_model_size(cfg):
    """openai's table: 5e-5 for gpt2 (124M), gpt2-medium (355M) and pythia-410m; 1e-5 from gpt2-large (774M) up.
    An explicit rate is kept; the toolkit recipe's is 5e-5 for every size."""
    assert [tr.default_lr("paper", n) for n in (124e6, 355e6, 410e6, 774e6, 1.8e9, 14e9)] == \
        [5e-5, 5e-5, 5e-5, 1e-5, 1e-5, 1e-5]
    assert tr.default_lr("toolkit", 14e9) == 5e-5
    info = resolve(cfg.model)  # a tiny model: the small models' rate
    assert tr.for_model(_with(cfg, recipe="paper", lr=None), info).lr == 5e-5
    assert tr.for_model(_with(cfg, recipe="paper", lr=3e-6), info).lr == 3e-6


def test_a_model_known_by_its_config_alone_gets_its_size(cfg, tmp_path):
    """A hub id has no local weights: its size for the paper recipe's learning rate and for the memory fit comes
    from its config (built on the meta device); it used to be unknown, so an 8B hub model got the small models'
    5e-5 and full fine-tuning. The size is the body's, what fine-tuning trains: an untied LM head is not in it."""
    import json

    from transformers import AutoModel

    from toolkit.models import ModelInfo, body_params

    folder = tmp_path / "llama-8b-shape"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
        "tie_word_embeddings": False}))
    hub = ModelInfo("meta-llama/Llama-3.1-8B", str(folder), {"hub": "meta-llama/Llama-3.1-8B"}, "causal")
    assert 7.4e9 < body_params(hub) < 7.6e9  # 8.03B less its 0.53B LM head
    paper = _with(cfg, model=str(folder), recipe="paper", lr=None, lora=None, device="cpu")
    assert tr.for_model(paper, hub).lr == 1e-5 and tr.fit_memory(paper, hub).lora == tr.AUTO_LORA_RANK
    tiny = resolve(cfg.model)
    assert body_params(tiny) == sum(p.numel() for p in AutoModel.from_pretrained(tiny.path).parameters())


def test_weak_options_override_the_strong_models_for_a_fine_tuned_supervisor():
    opts = ft.FinetuneOptions(lr=2e-5, epochs=3, weak_options="lr=1e-4, epochs=1, bucket=false")
    weak, strong = opts.weak_training(), opts.training()
    assert (weak["lr"], weak["epochs"], weak["bucket"]) == (1e-4, 1, False)
    assert (strong["lr"], strong["epochs"], strong["bucket"]) == (2e-5, 3, True)
    for bad, message in (("lr=fast", "not a float"), ("speed=3", "field=value pairs"),
                         ("recipe=paper,weight_decay=0.1", "recipe paper sets weight_decay")):
        with pytest.raises(ToolkitError, match=message):
            ft.FinetuneOptions(weak_options=bad)


def test_the_memory_estimate_picks_lora_for_8b_and_full_for_1_7b_on_80_gb(cfg):
    """On one 80 GB GPU at the default micro-batch (32 x 512 tokens): full fine-tuning of the 8B shape needs 128 GB
    of fp32 state alone, so LoRA with checkpointing is chosen (about 23 GB); 1.7B fits in full (about 55 GB). An
    explicit rank is never overridden, and a CPU fine-tunes in full."""
    shape = dict(micro_batch=32, max_length=512)
    pick = lambda n, hidden, layers, **kw: tr.choose_mode(n, 80e9, checkpointing=False, hidden=hidden,  # noqa: E731
                                                          layers=layers, **shape, **{"lora": None, **kw})
    assert pick(8.0e9, 4096, 32) == (tr.AUTO_LORA_RANK, False, 16)  # LoRA; half the micro batch, no recompute
    assert pick(1.7e9, 2048, 24) == (0, False, shape["micro_batch"])
    assert pick(8.0e9, 4096, 32, lora=0) == (0, False, shape["micro_batch"])  # asked for: kept (it will not fit)
    # a CPU that stores attention probabilities: qwen2.5-0.5b on 512-token passages at micro batch 32 needs ~27 GB
    # (the kernel killed it on a 24 GB host); half the micro batch fits, the same gradient, still full fine-tuning
    cpu = tr.choose_mode(494e6, 24e9, lora=None, checkpointing=False, micro_batch=32, max_length=512, hidden=896,
                         layers=24, heads=14)
    assert cpu == (0, False, 16)
    assert tr.memory_bytes(494e6, lora=False, checkpointing=False, micro_batch=32, max_length=512, hidden=896,
                           layers=24, heads=14) > 24e9
    gb = tr.memory_bytes(8.0e9, lora=True, checkpointing=True, hidden=4096, layers=32, **shape) / 1e9
    assert 16 < gb < 30 and tr.memory_bytes(8.0e9, lora=False, checkpointing=True, hidden=4096, layers=32,
                                            **shape) > 128e9
    assert tr.fit_memory(_with(cfg, lora=None, device="cpu"), resolve(cfg.model)).lora == 0


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="LoRA needs the optional extra lora (peft)")
def test_a_lora_base_is_held_in_bf16_and_trains(cfg):
    """With bf16 autocast, LoRA's frozen base is bf16 (half the memory), its adapters and the head fp32; a step
    trains them and only them."""
    info = resolve(cfg.model)
    tok = load_tokenizer(info)
    model = tr.build_classifier(info, "last", lora=4, bf16_base=True)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trained = [p for p in model.parameters() if p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert trained and all(p.dtype == torch.float32 for p in trained)
    trainer = tr.Trainer(model, _with(cfg, lora=4, dtype="bfloat16"), 2, pad_id=tok.pad_token_id, side="left")
    before = [p.detach().clone() for p in trained]
    _, _, seqs = _encoded(cfg, tasks.load(cfg.job.tasks[0]).texts[:8])
    trainer.step(seqs, np.linspace(0, 1, 8), get_loss("xent"), 0)
    trainer.step(seqs, np.linspace(0, 1, 8), get_loss("xent"), 1)
    assert any(not torch.equal(a, b) for a, b in zip(before, trained))
    assert set(trainer.state()) == {k for k, p in trainer.model.named_parameters() if p.requires_grad}


@pytest.mark.slow
@pytest.mark.parametrize("batch", [8, 5, 6])
def test_two_processes_match_one(cfg, tmp_path, batch, finetune_runs):
    """The same runs under `torchrun` with 2 CPU processes (gloo; what `accelerate launch` starts on GPUs):
    each global batch is split across processes, logconf's loss still sees the whole batch, and the
    predictions match the single-process ones (same keys, float-rounding differences only). At batch 5 the
    processes hold 3 and 2 rows of a batch, so one runs a padding micro-batch (FSDP needs equal counts)."""
    cfg = _with(cfg, batch_size=batch)
    one, _ = _run_records(_with(cfg, micro_batch=2))
    two_dir = tmp_path / "two"
    shutil.copytree(os.path.join(cfg.job.cache_dir, "features"), two_dir / "features")  # the weak model's features
    argv = ["--task", cfg.job.tasks[0], "--weak", cfg.job.weak, "--strong", cfg.model, "--seeds", "1", "--sizes",
            "8,16,8,8", "--batch-size", str(batch), "--micro-batch", "2", "--lr", "1e-3", "--evals-per-epoch", "100",
            "--device", "cpu", "--dtype", "float32", "--cache-dir", str(two_dir), "--limit", "0", "--quiet",
            "--no-figures", "--out", str(tmp_path / "out")]
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29541", "-m", "toolkit.finetune", *argv],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, capture_output=True)
    trained = finetune_runs.trainings
    two, _ = _run_records(_with(cfg, micro_batch=2, cache_dir=str(two_dir)))
    assert finetune_runs.trainings == trained  # loaded: the 2-process job stored them
    assert [r.key() for r in two] == [r.key() for r in one]
    bad = [(a.key(), float(np.abs(a.p - b.p).max())) for a, b in zip(one, two) if np.abs(a.p - b.p).max() > 1e-6]
    assert not bad, [(k[4:], d) for k, d in bad]


def test_fsdp_config_is_one_accelerate_reads_for_these_models(tiny_causal):
    """configs/accelerate_fsdp.yaml (README, "On a GPU"): FSDP2, our own autocast, and a block class that is
    the one Llama-shaped models (the catalog's SmolLM2) are built of. accelerate runs FSDP on GPUs only, so on
    a CPU the single-process and torchrun paths above are what is exercised."""
    from accelerate.commands.config.config_args import load_config_from_file
    from transformers import AutoModel

    conf = load_config_from_file(str(Path(__file__).parents[1] / "configs" / "accelerate_fsdp.yaml"))
    assert str(conf.distributed_type).endswith("FSDP") and conf.mixed_precision == "no"
    assert conf.fsdp_config["fsdp_version"] == 2
    blocks = AutoModel.from_pretrained(tiny_causal).layers
    assert type(blocks[0]).__name__ == conf.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]


def test_the_paper_recipe_is_openais_train_simple(cfg, capsys):
    from transformers import BertConfig, GPT2Config

    paper = _with(cfg, recipe="paper")
    hp = paper.hp
    assert (hp["weight_decay"], hp["warmup_frac"], hp["schedule"], hp["max_grad_norm"]) == (0.0, 0.0, "cosine", 0.0)
    assert not hp["dropout"] and not hp["head_bias"] and cfg.hp["dropout"] and cfg.hp["head_bias"]
    # logconf's weight ramps over 10% of the steps in openai's code; a spec's own value wins
    assert paper.loss("logconf") == ("logconf", {"warmup_frac": 0.1, "threshold": "quantile"})
    assert cfg.loss("logconf") == ("logconf", {})
    assert paper.loss("logconf:warmup_frac=0.3") == ("logconf", {"warmup_frac": 0.3, "threshold": "quantile"})
    with pytest.raises(ToolkitError, match="recipe paper sets weight_decay=0.0"):
        tr.FinetuneConfig(recipe="paper", weight_decay=0.05)
    # an explicit value equal to the toolkit recipe's is not silently replaced by the paper's (issue #32)
    for argv, message in ((["--weight-decay", "0.01"], "weight_decay=0.0"),
                          (["--schedule", "linear"], "schedule=cosine"),
                          (["--dropout"], "dropout=False")):
        assert compare.method_main("finetune", ["--recipe", "paper", *argv]) == 2
        assert message in capsys.readouterr().err
    assert tr.FinetuneConfig(recipe="paper", schedule="cosine").hp["schedule"] == "cosine"
    assert tr.FinetuneConfig(weight_decay=0.05).hp["weight_decay"] == 0.05  # the toolkit recipe takes any value
    with pytest.raises(ToolkitError, match="recipe must be one of"):
        tr.FinetuneConfig(recipe="openai")
    info = resolve(cfg.model)
    tok = load_tokenizer(info)
    model = tr.build_classifier(info, "last", head_bias=hp["head_bias"], dropout=hp["dropout"])
    assert model.head.bias is None and not model.head.weight.any()  # bias-free, zero-initialised
    trainer = tr.Trainer(model, paper, 10, pad_id=tok.pad_token_id, side="left")
    assert all(g["weight_decay"] == 0.0 for g in trainer.opt.param_groups)
    lrs = []
    for _ in range(10):
        lrs.append(trainer.scheduler.get_last_lr()[0])
        trainer.scheduler.step()
    expected = [paper.lr * 0.5 * (1 + np.cos(np.pi * k / 10)) for k in range(10)]  # CosineAnnealingLR from step 0
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    for config in (GPT2Config(), BertConfig()):  # dropout off: every probability zeroed, whatever its name
        zeroed = tr._without_dropout(config)
        assert all(v == 0.0 for k, v in vars(zeroed).items() if ("dropout" in k or k.endswith("pdrop"))
                   and isinstance(v, float))


def test_a_gpu_fine_tunes_every_seed_by_default_and_a_cpu_the_first(monkeypatch):
    from toolkit.config import JobConfig

    method, sups = ft.FinetuneMethod(), ("s0", "s1", "s2")
    assert method.seeds(ft.FinetuneOptions(), sups, JobConfig(device="cpu")) == ("s0",)
    monkeypatch.setattr(ft, "pick_device", lambda device="auto": "cuda")
    assert method.seeds(ft.FinetuneOptions(), sups, JobConfig()) == sups
    assert method.seeds(ft.FinetuneOptions(finetune_seeds=2), sups, JobConfig()) == ("s0", "s1")
