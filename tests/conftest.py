"""Shared fixtures: tiny random-init models saved as local folders (they exercise the same loading
code as any user model) and a small local task file."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def smollm2_tokenizer():
    from transformers import AutoTokenizer

    from toolkit._util import cache_root

    folder = cache_root() / "models" / "smollm2-135m"
    if not folder.exists():
        pytest.skip("smollm2-135m is not installed (run `make setup`)")
    return AutoTokenizer.from_pretrained(folder)


def save_tiny_causal(path, seed: int = 0, n_layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory):
    """Folder of a 2-layer random-init Llama with the SmolLM2 tokenizer."""
    return save_tiny_causal(tmp_path_factory.mktemp("tiny_causal"))


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory):
    """A 40-example balanced jsonl task with varied lengths (and a '!' that is token id 0 in GPT-2)."""
    path = tmp_path_factory.mktemp("task") / "tiny.jsonl"
    words = "good bad fine awful great poor lovely dull bright grim".split()
    with open(path, "w") as f:
        for i in range(40):
            text = " ".join(words[(i + k) % len(words)] for k in range(3 + (i * 7) % 23)) + ("!" * (i % 3))
            f.write(json.dumps({"text": f"{text} #{i}", "label": i % 2}) + "\n")
    return path


@pytest.fixture(scope="session")
def real_models_cache(tmp_path_factory):
    """One fresh cache, shared by the tests that run the real default models on `sentiment` with limit=160
    (test_probe, the notebooks): they extract once and reuse it, as a user's later runs do. Models and task
    data still come from the project's cache."""
    return tmp_path_factory.mktemp("real_models_cache")



class RunSpy:
    """Every fine-tuning run of one test, as `finetune.train_run` returned it (the `finetune_runs` fixture)."""

    def __init__(self):
        self.runs = []

    @property
    def trainings(self) -> int:
        return sum(not r.loaded for r in self.runs)

    @property
    def loaded(self) -> int:
        return sum(r.loaded for r in self.runs)


@pytest.fixture
def finetune_runs(monkeypatch):
    """Counts fine-tuning runs trained and loaded in this test by watching `finetune.train_run`, through which
    every run goes (students, ceilings, a fine-tuned weak supervisor): no counter in the library."""
    from toolkit import finetune

    spy, real = RunSpy(), finetune.train_run

    def watched(*args, **kwargs):
        spy.runs.append(real(*args, **kwargs))
        return spy.runs[-1]

    monkeypatch.setattr(finetune, "train_run", watched)
    return spy
