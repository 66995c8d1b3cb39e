"""Offline catalog: pinned hashes (a tampered file is refused), bad names, offline loads."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from toolkit import models
from toolkit._util import ToolkitError, cache_root


@pytest.fixture
def fake_entry(tmp_path, monkeypatch):
    """A catalog entry backed by a tiny 'weights package' folder on sys.path."""
    from transformers import BertConfig, BertModel

    pkg = tmp_path / "site" / "fake_weights_pkg"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('weight packages must never be imported')\n")
    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(pkg / "model")
    weights = pkg / "model" / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = models.CatalogEntry("fake-enc", ("fake-weights-pkg==1.0",), "folder",
                                ("fake_weights_pkg/model/model.safetensors",), digest, "encoder", "1K", 1, "test")
    monkeypatch.setitem(models.CATALOG, "fake-enc", entry)
    return entry, weights


def test_install_checks_hash_and_never_imports_the_package(fake_entry, tmp_path):
    entry, _ = fake_entry
    folder = models.install("fake-enc", cache_dir=tmp_path / "cache")
    assert (folder / "model.safetensors").exists()
    assert "fake_weights_pkg" not in sys.modules
    info = models.resolve("fake-enc", cache_dir=tmp_path / "cache")
    assert info.identity == {"catalog": "fake-enc", "sha256": entry.sha256} and info.arch == "encoder"


def test_tampered_package_file_is_refused(fake_entry, tmp_path):
    _, weights = fake_entry
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ToolkitError, match=r"refusing 'fake-enc'.*fake-weights-pkg==1\.0"):
        models.install("fake-enc", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "models" / "fake-enc").exists()


def test_tampered_materialised_weights_are_refused(fake_entry, tmp_path):
    folder = models.install("fake-enc", cache_dir=tmp_path / "cache")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ToolkitError, match="does not match the hash recorded at install"):
        models.resolve("fake-enc", cache_dir=tmp_path / "cache")


def test_unknown_and_uninstalled_models_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path))  # an empty cache: nothing installed
    with pytest.raises(ToolkitError, match=r"unknown model 'gpt-9'.*minilm-l6.*smollm2-135m"):
        models.resolve("gpt-9")
    with pytest.raises(ToolkitError, match=r"not installed: run `python -m toolkit.models install gemma3-270m`"):
        models.resolve("gemma3-270m", cache_dir=tmp_path)


def test_catalog_hashes_match_design_pins():
    design = {"minilm-l6": "53aa5117", "smollm2-135m": "b179c952", "gemma3-270m": "a5fd3b62",
              "qwen2.5-0.5b": "1d961463", "qwen2.5-1.5b": "cc324af0", "mpnet-base": "78c0197b"}
    assert {k: v.sha256[:8] for k, v in models.CATALOG.items()} == design


def test_cli_list_and_bad_name(capsys):
    assert models.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in models.CATALOG)
    assert models.main(["install", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["minilm-l6", "smollm2-135m"])
def test_defaults_load_offline_from_the_cache(name):
    if not (cache_root() / "models" / name / models.MANIFEST).exists():
        pytest.skip(f"{name} not installed (run `make setup`)")
    info = models.resolve(name)
    model = models.load_model(info, device="cpu")
    tok = models.load_tokenizer(info)
    assert tok.pad_token is not None and next(model.parameters()).dtype.is_floating_point
    manifest = json.loads((cache_root() / "models" / name / models.MANIFEST).read_text())
    assert manifest["source_sha256"] == models.CATALOG[name].sha256
