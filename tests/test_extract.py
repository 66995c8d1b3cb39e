"""Extraction: batching, pooling against a per-example reference, cache keys, cache hits, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from toolkit import cache, encoding, extract
from toolkit._util import ToolkitError
from toolkit.encoding import plan_batches
from toolkit.extract import ExtractConfig, extract_arrays

TEXTS = [
    "a",
    "The movie was wonderful and I would watch it again.",
    "Terrible!",
    "Mixed feelings: good acting, weak plot, far too long for what it has to say.",
    "ok",
]


def _reference(model, tok, texts, layers, pool, label_words=None):
    """One unpadded forward pass per example: the ground truth for pooling and label log-probs."""
    hidden, logps = [], []
    with torch.inference_mode():
        for t in texts:
            ids = torch.tensor([tok(t).input_ids])
            out = model(input_ids=ids, output_hidden_states=True)
            hs = torch.stack([out.hidden_states[i][0] for i in layers])  # (L, T, D)
            hidden.append({"last": hs[:, -1], "first": hs[:, 0], "mean": hs.mean(1)}[pool])
            if label_words:
                lid = [tok(w, add_special_tokens=False).input_ids[0] for w in label_words]
                logps.append(torch.log_softmax(out.logits[0, -1], -1)[lid])
    return torch.stack(hidden, 1).numpy(), (torch.stack(logps).numpy() if label_words else None)


def test_plan_batches_covers_everything_longest_first():
    lengths = np.array([5, 50, 7, 300, 12, 12, 1, 64])
    batches = plan_batches(lengths, batch_tokens=128)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert lengths[batches[0]].max() == 300  # the longest batch comes first: OOM shows at once
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= 128
        assert lengths[b].min() >= 0.8 * lengths[b].max()  # at most 20% padding per batch


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("pool", ["last", "mean", "first"])
def test_pooling_matches_per_example_reference(tiny_causal, padding_side, pool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_causal)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal).eval()
    # A text holding the token with id 0 must pool at its real last position, not before it.
    zero_tok = tok.decode([0])
    texts = TEXTS + [f"ends with the id-0 token {zero_tok}"]
    assert 0 in tok(texts[-1]).input_ids
    words = (" negative", " positive")
    got = extract_arrays(model, tok, texts, layers=[0, 1, 2], pool=pool, causal=True, batch_tokens=64,
                         padding_side=padding_side, label_words=words)
    ref_h, ref_lp = _reference(model, tok, texts, [0, 1, 2], pool, words)
    np.testing.assert_allclose(got["hidden"], ref_h, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["label_logprobs"], ref_lp, atol=1e-4, rtol=0)


def test_truncation_is_counted_not_dropped(tiny_causal):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_causal)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal).eval()
    texts = ["short", "word " * 100]
    got = extract_arrays(model, tok, texts, layers=[2], pool="last", causal=True, max_length=16)
    assert got["hidden"].shape == (1, 2, 32)
    assert got["truncated"].tolist() == [False, True]
    assert got["n_tokens"].max() == 16


def _tiny(arch: str, tok):
    """A 3-block random-init model of `arch` (its own block list, final norm or none) with `tok`'s vocabulary."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                            pad_token_id=tok.pad_token_id)).eval()
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=3, n_head=4)).eval()
    return BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                num_attention_heads=4)).eval()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_layers_pooled_by_hooks_equal_output_hidden_states(tiny_causal, arch):
    """Every layer, including the embeddings (0) and the last (after the final norm where there is one),
    pooled as the model produces it, equals the per-example `output_hidden_states` reference."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_causal)
    model = _tiny(arch, tok)
    causal = arch != "bert"
    pool = "last" if causal else "mean"
    layers = [0, 1, 2, 3]
    got = extract_arrays(model, tok, TEXTS, layers=layers, pool=pool, causal=causal, batch_tokens=64)
    ref, _ = _reference(model, tok, TEXTS, layers, pool)
    np.testing.assert_allclose(got["hidden"], ref, atol=1e-4, rtol=0)
    pooler = extract.check_pooler(model, [[1, 2, 3]], layers=layers, pool=pool, causal=causal, pad_id=0,
                                  padding_side="left" if causal else "right", device="cpu")
    assert pooler.ok  # the hooks were used, not the fallback
    assert len(extract._block_list(model)) == 3


@pytest.mark.parametrize("fault", ["no blocks", "wrong blocks"])
def test_pooler_falls_back_when_hooks_cannot_be_trusted(tiny_causal, monkeypatch, fault):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_causal)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal).eval()
    want = extract_arrays(model, tok, TEXTS, layers=[0, 1, 2], pool="last", causal=True)["hidden"]
    model = AutoModelForCausalLM.from_pretrained(tiny_causal).eval()  # no verdict cached on it yet
    swapped = torch.nn.ModuleList(list(model.model.layers)[::-1])  # hooks would pool the wrong layers
    monkeypatch.setattr(extract, "_block_list", lambda m: None if fault == "no blocks" else swapped)
    pooler = extract.check_pooler(model, [[1, 2, 3]], layers=[0, 1, 2], pool="last", causal=True, pad_id=0,
                                  padding_side="left", device="cpu")
    assert not pooler.ok
    got = extract_arrays(model, tok, TEXTS, layers=[0, 1, 2], pool="last", causal=True)["hidden"]
    np.testing.assert_array_equal(got, want)


def _spec(**over):
    base = {"model": "m", "model_identity": {"sha256": "abc"}, "arch": "causal", "dtype": "float32",
            "template": "Q: {text}\nA:", "task": "t", "examples_sha": "123", "n": 10, "pool": "last",
            "layers": [0, 1], "max_length": 512, "truncation_side": "left", "label_words": [" No", " Yes"],
            "shard_size": 512}
    return {**base, **over}


@pytest.mark.parametrize("field,value", [
    ("model_identity", {"sha256": "abd"}), ("dtype", "bfloat16"), ("template", "{text}"), ("task", "u"),
    ("examples_sha", "124"), ("pool", "mean"), ("layers", [0, 2]), ("max_length", 256),
    ("truncation_side", "right"), ("label_words", [" no", " yes"]),
])
def test_cache_key_changes_with_every_byte_changing_input(field, value):
    assert cache.entry_key(_spec(**{field: value})) != cache.entry_key(_spec())


def test_a_file_whose_texts_change_never_hits(tiny_causal, tmp_path, capsys):
    """The entry is keyed by the texts as read, not by the file's path and ids: rewriting texts under the same
    ids extracts afresh (it served the old features before, cosine 0.03 with the new ones), and an unchanged file
    always hits. So does a changed tokenizer file of a local model."""
    path = tmp_path / "ids.csv"
    rows = pd.DataFrame({"id": [f"r{i}" for i in range(12)], "text": [f"text number {i}" for i in range(12)],
                         "label": [i % 2 for i in range(12)]})
    rows.to_csv(path, index=False)
    model = tmp_path / "model"
    shutil.copytree(tiny_causal, model)
    cfg = ExtractConfig(model=str(model), task=str(path), cache_dir=str(tmp_path / "cache"))
    first = extract.extract(cfg, progress=False)
    assert extract.extract(cfg, progress=False).path == first.path
    rows.assign(text=[f"another sentence {i}" for i in range(12)]).to_csv(path, index=False)
    with extract.counted() as work:
        second = extract.extract(cfg, progress=False)
    assert second.path != first.path and work["models_built"] == 1
    assert not np.allclose(second.hidden[-1], first.hidden[-1])
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))
    assert extract.extract(cfg, progress=False).path != second.path


def test_cache_key_ignores_device_batch_size_and_process_count(tiny_causal, tiny_task, tmp_path):
    base = ExtractConfig(model=str(tiny_causal), task=str(tiny_task), cache_dir=str(tmp_path))
    task = extract.load_task(base)
    from toolkit.models import resolve

    info = resolve(base.model)
    specs = [extract.entry_spec(replace(base, **kw), task, info, 2)
             for kw in ({}, {"device": "cpu"}, {"batch_tokens": 64})]
    assert len({cache.entry_key(s) for s in specs}) == 1


def test_rerun_builds_no_model_and_returns_same_arrays(tiny_causal, tiny_task, tmp_path):
    cfg = ExtractConfig(model=str(tiny_causal), task=str(tiny_task), cache_dir=str(tmp_path), shard_size=16,
                        batch_tokens=256)
    with extract.counted() as work:
        first = extract.extract(cfg, progress=False)
    assert work["models_built"] == 1 and work["forward_passes"] > 0
    assert first.hidden.shape == (3, 40, 32)
    with extract.counted() as work, extract.counted() as inner:  # blocks nest: each counts what ran in it
        second = extract.extract(replace(cfg, batch_tokens=64), progress=False)
    assert work == inner == {"models_built": 0, "forward_passes": 0}
    np.testing.assert_array_equal(first.hidden, second.hidden)
    assert second.ids == first.ids


def _entry_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.suffix == ".npy"}


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_byte_for_byte(tiny_causal, tiny_task, tmp_path):
    args = ["--model", str(tiny_causal), "--task", str(tiny_task), "--shard-size", "8", "--batch-tokens", "256",
            "--quiet"]
    one = tmp_path / "one"
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the one-process reference runs here, on one thread as each torchrun worker does (saves an interpreter start)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert extract.main([*args, "--cache-dir", str(one)]) == 0
    finally:
        torch.set_num_threads(threads)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "toolkit.extract", *args,
                    "--cache-dir", str(two)], check=True, env=env, timeout=300)
    (e1,) = cache.entries(one)
    (e2,) = cache.entries(two)
    assert e1.name == e2.name
    b1, b2 = _entry_bytes(e1), _entry_bytes(e2)
    assert b1.keys() == b2.keys() and len(b1) >= 4
    assert all(b1[k] == b2[k] for k in b1)


def test_float16_storage_is_its_own_entry_within_float16_rounding(tiny_causal, tiny_task, tmp_path, capsys):
    """--store-dtype float16 halves the entry and keeps every value to float16's rounding; float32 (and `auto` on
    a CPU) keeps the address and bytes entries had before the option existed."""
    base = ExtractConfig(model=str(tiny_causal), task=str(tiny_task), cache_dir=str(tmp_path))
    f32 = extract.extract(base, progress=False)
    auto_entry = extract.entry_spec(base, extract.load_task(base), extract.resolve(str(tiny_causal)), 2)
    assert "store_dtype" not in auto_entry  # float32: the key of old entries
    f16 = extract.extract(replace(base, store_dtype="float16"), progress=False)
    assert f16.path != f32.path and f16.hidden.dtype == np.float16 and f32.hidden.dtype == np.float32
    assert extract.extract(replace(base, store_dtype="float32"), progress=False).path == f32.path
    scale = np.abs(f32.hidden).max()
    np.testing.assert_allclose(f16.hidden.astype(np.float32), f32.hidden, rtol=1e-3, atol=1e-3 * scale)
    np.testing.assert_array_equal(f16.label_logprobs, f32.label_logprobs)
    size = lambda e: sum(p.stat().st_size for p in e.path.glob("layer_*.npy"))  # noqa: E731
    assert size(f16) < 0.55 * size(f32)
    from toolkit import cache

    cache.main(["--cache-dir", str(tmp_path), "ls"])  # what each entry stores, not only what it computed in
    listed = dict(line.split("  ", 1) for line in capsys.readouterr().out.splitlines() if "__" in line)
    assert "stored=float16" in listed[f16.path.name] and "stored=float32" in listed[f32.path.name]
    with pytest.raises(ToolkitError, match="store-dtype must be auto, float32 or float16"):
        extract.extract(replace(base, store_dtype="int8"), progress=False)


def test_torchrun_puts_each_rank_on_its_own_gpu(monkeypatch):
    """Under torchrun with CUDA, rank LOCAL_RANK=1 sets GPU 1 as its device and binds its NCCL group to it (the
    GPU path, checked on the CPU with the CUDA calls recorded instead of made)."""
    import torch.distributed as dist

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    assert extract._dist() == (1, 2)
    assert calls == [("set_device", 1), ("nccl", {"device_id": torch.device("cuda", 1)})]


def test_a_float16_entry_never_stores_inf(tiny_causal, tiny_task, tmp_path, monkeypatch, capsys):
    """A layer whose values leave float16's range (|h| > 65,504, as large models' residual streams do) is stored in
    float32, losslessly, and named in the manifest; the other layers stay float16. Before, it became inf and every
    probe on it was refused."""
    real = extract._shard_batches

    def huge_layer_1(*a, **k):
        hidden, logp, budget = real(*a, **k)
        hidden = hidden.copy()
        hidden[1] *= 1e8  # layer 1 only, in every shard: far beyond 65,504
        return hidden, logp, budget

    monkeypatch.setattr(extract, "_shard_batches", huge_layer_1)
    cfg = ExtractConfig(model=str(tiny_causal), task=str(tiny_task), cache_dir=str(tmp_path), store_dtype="float16",
                        shard_size=16)
    feats = extract.extract(cfg, progress=False)
    assert feats.manifest["float32_layers"] == [1] and "stored in float32" in capsys.readouterr().err
    assert feats.layer(1).dtype == np.float32 and np.abs(feats.layer(1)).max() > 65504
    assert all(feats.layer(layer).dtype == np.float16 for layer in feats.layers if layer != 1)
    assert np.isfinite(feats.hidden).all() and np.isfinite(feats.take(feats.ids[:5])).all()
    monkeypatch.setattr(extract, "_shard_batches", real)
    f32 = extract.extract(replace(cfg, store_dtype="float32"), progress=False)
    np.testing.assert_array_equal(feats.layer(1), f32.layer(1) * np.float32(1e8))  # float32 exactly, not rounded


def test_auto_batch_budget_follows_free_memory_and_model_shape():
    from types import SimpleNamespace

    llama8b = SimpleNamespace(hidden_size=4096, intermediate_size=14336, num_attention_heads=32)
    small = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_attention_heads=9)
    assert encoding.auto_batch_tokens(llama8b, None, 2, 512) == 8192  # no device memory figure: the CPU default
    assert encoding.auto_batch_tokens(llama8b, 123 * 2**30, 2, 512) == 65536  # an H200 after 8B weights: the cap
    on_24gb = encoding.auto_batch_tokens(llama8b, 6 * 2**30, 2, 512)  # a 24 GB card after the same weights
    assert 8192 < on_24gb < 65536 and on_24gb % 1024 == 0
    assert encoding.auto_batch_tokens(llama8b, 3 * 2**30, 4, 512) < on_24gb  # fp32 activations need more room
    assert encoding.auto_batch_tokens(small, 1 * 2**30, 2, 512) > encoding.auto_batch_tokens(llama8b, 1 * 2**30, 2, 512)
    assert encoding.auto_batch_tokens(llama8b, 2**20, 2, 512) == 8192  # never below the CPU budget


def test_cpu_defaults_keep_the_cpu_entry_key():
    """Auto batch budget and shard size resolve to the values CPU entries were made with (8,192; 512)."""
    cfg = ExtractConfig(device="cpu")
    assert extract.shard_size(cfg) == 512 and extract.shard_size(replace(cfg, shard_size=64)) == 64
    with pytest.raises(extract.ToolkitError, match="shard-size"):
        extract.shard_size(replace(cfg, shard_size=-1))


def test_out_of_memory_at_the_auto_budget_halves_it_and_reruns_the_shard(tiny_causal, tiny_task, tmp_path,
                                                                         monkeypatch, capsys):
    real = extract.run_batches
    budgets = []

    def run(*args, batch_tokens, **kw):
        budgets.append(batch_tokens)
        if batch_tokens > 2048:
            kw["progress"](3, 30, 40)  # part of the shard done before the failure
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, batch_tokens=batch_tokens, **kw)

    monkeypatch.setattr(extract, "run_batches", run)
    monkeypatch.setattr(extract, "batch_budget", lambda tokens, *a: tokens or 8192)
    cfg = ExtractConfig(model=str(tiny_causal), task=str(tiny_task), cache_dir=str(tmp_path / "a"), shard_size=64)
    feats = extract.extract(cfg, progress=False)
    assert budgets == [8192, 4096, 2048]
    assert "batches of 2048 tokens" in capsys.readouterr().err
    monkeypatch.setattr(extract, "run_batches", real)
    ref = extract.extract(replace(cfg, cache_dir=str(tmp_path / "b"), batch_tokens=2048), progress=False)
    np.testing.assert_array_equal(feats.hidden, ref.hidden)
    monkeypatch.setattr(extract, "run_batches", run)
    with pytest.raises(extract.ToolkitError, match="--batch-tokens"):  # a budget the user gave is never changed
        extract.extract(replace(cfg, cache_dir=str(tmp_path / "c"), batch_tokens=4096), progress=False)
