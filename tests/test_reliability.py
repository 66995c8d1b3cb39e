"""Real faults against the feature cache: a SIGKILL mid-extraction, corrupted files, two writers at
once, an unwritable cache. No mocks: real subprocesses, real files, a real (tiny) model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_causal

from toolkit import cache, directions, extract, tasks
from toolkit._util import ToolkitError
from toolkit.extract import ExtractConfig


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """A 6-layer tiny model: slow enough that a kill lands between shards."""
    return save_tiny_causal(tmp_path_factory.mktemp("slow_model"), seed=1, n_layers=6)


N_BIG = 240  # 30 shards of 8: the kill lands after 5 of them, and the resume and the clean run stay short


@pytest.fixture(scope="module")
def big_task(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    with open(path, "w") as f:
        for i in range(N_BIG):
            text = " ".join(words[(i * 3 + k) % 10] for k in range(8 + i % 40))
            f.write(json.dumps({"text": f"{text} {i}", "label": i % 2}) + "\n")
    return path


def _args(model, task, cache_dir, shard_size=8):
    return ["--model", str(model), "--task", str(task), "--cache-dir", str(cache_dir), "--shard-size",
            str(shard_size), "--batch-tokens", "512", "--quiet"]


def _npy_bytes(entry: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(entry.glob("*.npy"))}


@pytest.mark.slow
@pytest.mark.parametrize("completion", [None, 1], ids=["plain", "contrast-pair"])
def test_sigkill_mid_extraction_resumes_from_finished_shards(slow_model, big_task, tmp_path, completion):
    """Plain features, and one half of the label-free methods' contrast pairs (the prompt completed with the
    class-1 label word, `directions.contrast_configs`): the same entry machinery, the same resume."""
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cfg = ExtractConfig(model=str(slow_model), task=str(big_task), cache_dir=str(killed), shard_size=8,
                        batch_tokens=512)
    if completion is not None:
        cfg = directions.contrast_configs(cfg, tasks.load(str(big_task)))[completion]
    extra = [] if completion is None else ["--template", cfg.template]
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.extract", *_args(slow_model, big_task, killed), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done = []
    while time.time() < deadline and proc.poll() is None:
        done = list((killed / "features").glob("*.partial/shard-*.npz"))
        if len(done) >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(done) >= 5, "the run finished before it could be killed; make the fixture model slower"
    n_total = N_BIG // 8 + (N_BIG % 8 > 0)
    n_finished = len(list((killed / "features").glob("*.partial/shard-*.npz")))
    assert n_finished < n_total and not cache.entries(killed)

    with extract.counted() as resumed_work:
        resumed = extract.extract(cfg, progress=False)
    with extract.counted() as full_work:
        full = extract.extract(ExtractConfig(**{**cfg.__dict__, "cache_dir": str(clean)}), progress=False)
    assert resumed_work["forward_passes"] < full_work["forward_passes"]  # finished shards were not recomputed
    assert _npy_bytes(resumed.path) == _npy_bytes(full.path)  # byte-identical to an uninterrupted run
    if completion is not None:
        assert resumed.manifest["template"] == cfg.template  # the contrast entry's key names its completion


@pytest.fixture
def finished(tiny_causal, tiny_task, tmp_path):
    cfg = ExtractConfig(model=str(tiny_causal), task=str(tiny_task), cache_dir=str(tmp_path), shard_size=16)
    feats = extract.extract(cfg, progress=False)
    return cfg, feats


@pytest.mark.parametrize("fault", ["flip", "truncate", "manifest"])
def test_corruption_is_detected_reported_and_reextracted(finished, fault, capsys):
    cfg, feats = finished
    good = _npy_bytes(feats.path)
    target = feats.path / "layer_001.npy"
    if fault == "flip":
        data = bytearray(target.read_bytes())
        data[-7] ^= 0x10
        target.write_bytes(bytes(data))
    elif fault == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    else:
        (feats.path / cache.MANIFEST).unlink()
    with pytest.raises(cache.CorruptEntry, match=str(feats.path)):
        cache.load_entry(feats.path)
    assert cache.main(["--cache-dir", cfg.cache_dir, "verify"]) == 1
    assert "CORRUPT" in capsys.readouterr().out
    if fault == "flip":
        # A hit checks headers and sizes only; a layer's crc is checked on its first read, which fails mid-run:
        # the entry is reported, removed and extracted afresh, and the run goes on with verified numbers.
        with extract.counted() as work:
            hit = extract.extract(cfg, progress=False)
            assert work["models_built"] == 0
            hit.layer(0)
            np.testing.assert_array_equal(hit.take(hit.ids[:3]), feats.take(feats.ids[:3]))
        assert work["models_built"] == 1
        assert "checksum mismatch" in capsys.readouterr().err and _npy_bytes(hit.path) == good
        # the batch job verifies a hit it reports, so it never says "cache hit" over a damaged layer (issue #32)
        target.write_bytes(bytes(data))
        assert extract.main(["--model", cfg.model, "--task", cfg.task, "--cache-dir", cfg.cache_dir,
                             "--shard-size", "16", "--quiet"]) == 0
        out = capsys.readouterr()
        assert "checksum mismatch" in out.err and "extracted" in out.out and "cache hit" not in out.out
        shutil.rmtree(hit.path)
    with extract.counted() as work:
        again = extract.extract(cfg, progress=False)
    assert work["models_built"] == 1  # re-extracted, never read as valid numbers
    assert _npy_bytes(again.path) == good


def test_a_hit_reads_and_checks_only_the_layers_used(finished, monkeypatch):
    cfg, feats = finished
    want = np.array(feats.hidden)
    read = []
    real = cache.zlib.crc32
    monkeypatch.setattr(cache.zlib, "crc32", lambda b, *a: read.append(len(b)) or real(b, *a))
    hit = extract.extract(cfg, progress=False)
    assert read == [] or max(read) < 1000  # only the small files (n_tokens, label log-probs) so far
    read.clear()
    np.testing.assert_array_equal(hit.layer(2), want[2])
    hit.layer(2)
    assert len(read) == 1  # one layer file, checked once
    np.testing.assert_array_equal(hit.take(hit.ids[::-1]), want[:, ::-1])
    assert len(read) == 3


def test_two_processes_same_key_one_valid_entry(tiny_causal, tiny_task, tmp_path):
    args = _args(tiny_causal, tiny_task, tmp_path, shard_size=4)
    procs = [subprocess.Popen([sys.executable, "-m", "toolkit.extract", *args], stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    (entry,) = cache.entries(tmp_path)
    cache.load_entry(entry)  # verifies every file
    assert not list((tmp_path / "features").glob("*.partial"))


def test_two_different_keys_in_parallel_do_not_interfere(tiny_causal, tiny_task, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "toolkit.extract", *_args(tiny_causal, tiny_task, tmp_path),
                               "--pool", pool]) for pool in ("last", "mean")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    entries = cache.entries(tmp_path)
    assert len(entries) == 2
    pools = sorted(cache.load_entry(e).manifest["pool"] for e in entries)
    assert pools == ["last", "mean"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_cache_fails_before_work_nonroot(tiny_causal, tiny_task, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ToolkitError, match="not writable"):
        extract.extract(ExtractConfig(model=str(tiny_causal), task=str(tiny_task), cache_dir=str(ro)))


def test_unwritable_or_full_cache_fails_before_any_model_is_built(tiny_causal, tiny_task, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with extract.counted() as work, pytest.raises(ToolkitError, match="not writable"):
        extract.extract(ExtractConfig(model=str(tiny_causal), task=str(tiny_task), cache_dir=str(blocker)))
    with pytest.raises(ToolkitError, match="GB free but this extraction needs"):
        cache.check_writable(tmp_path, need_bytes=1 << 62)
    assert work["models_built"] == 0


def test_cli_user_error_is_one_line_no_traceback(tiny_task):
    out = subprocess.run([sys.executable, "-m", "toolkit.extract", "--model", "no-such-model", "--task",
                          str(tiny_task)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: unknown model 'no-such-model'")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_layers_out_of_range_is_a_clear_error(tiny_causal, tiny_task, tmp_path):
    with pytest.raises(ToolkitError, match=r"out of range: this model has layers 0..2"):
        extract.extract(ExtractConfig(model=str(tiny_causal), task=str(tiny_task), cache_dir=str(tmp_path),
                                      layers="0,5"))


def test_loaded_arrays_are_read_only_views_of_verified_files(finished):
    _, feats = finished
    assert np.isfinite(feats.hidden).all() and feats.hidden.dtype == np.float32


def test_rm_deletes_only_entries_of_the_store(finished, tmp_path, monkeypatch, capsys):
    """`cache rm` refuses, in one line, any folder that is not an entry of this cache's store (a path outside it,
    a relative name that happens to be a folder here, the store's own root), and the folder survives; an entry,
    by path or by name, is removed."""
    cfg, feats = finished
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "f").write_text("x")
    monkeypatch.chdir(tmp_path)
    root = Path(cfg.cache_dir) / "features"
    for target in (str(victim), "victim", "./victim", str(root), str(Path(cfg.cache_dir)), str(feats.path / "..")):
        assert cache.main(["--cache-dir", cfg.cache_dir, "rm", target]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and ("not an entry" in err or "matches 0 entries" in err), err
    assert (victim / "sub" / "f").read_text() == "x" and (feats.path / cache.MANIFEST).exists()
    # a folder inside features/ that the store did not name is not ours either
    (root / "notes").mkdir()
    assert cache.main(["--cache-dir", cfg.cache_dir, "rm", str(root / "notes")]) == 2
    assert (root / "notes").is_dir()
    # --cache-dir after the subcommand works as before it
    assert cache.main(["rm", "--cache-dir", cfg.cache_dir, str(feats.path)]) == 0
    assert not feats.path.exists() and f"removed {feats.path}" in capsys.readouterr().out


def test_rm_of_a_symlinked_entry_removes_the_link_and_no_lock_is_left(finished, tmp_path, capsys):
    """An entry linked in from elsewhere loses its link only (no traceback); `rm` leaves no `.lock` behind."""
    cfg, feats = finished
    assert feats.path.with_name(feats.path.name + ".lock").exists()  # the extraction's lock file
    other = tmp_path / "other" / "features"
    other.mkdir(parents=True)
    link = other / feats.path.name
    link.symlink_to(feats.path)
    assert cache.main(["--cache-dir", str(tmp_path / "other"), "rm", feats.path.name[:30]]) == 0
    assert f"removed the link {link}" in capsys.readouterr().out
    assert not link.exists() and not link.is_symlink() and (feats.path / cache.MANIFEST).exists()
    assert cache.main(["--cache-dir", cfg.cache_dir, "rm", feats.path.name[:30]]) == 0
    assert not feats.path.exists() and not list(feats.path.parent.glob("*.lock"))


def test_the_cli_covers_the_run_stores(tmp_path, capsys):
    """`ls`, `info`, `verify` and `rm` see the run stores too: a blob is listed, shown, checked (a flipped byte
    is CORRUPT, and `read_blob` names the file), and removed by name; a key without a format version is refused."""
    d = str(tmp_path / "c")
    blob = cache.run_path("prompt", {"version": 9, "texts": "abc"}, d)
    cache.write_blob(blob, {"logp": np.zeros((3, 2))}, {"note": "x"})
    run = cache.run_path("finetune", {"version": 9}, d, n=20, suffix="")
    run.mkdir(parents=True)
    (run / cache.MANIFEST).write_text("{}")
    (run / "predictions.npz").write_bytes(cache.pack({"p": np.ones(2)}))
    assert cache.main(["--cache-dir", d, "ls"]) == 0
    out = capsys.readouterr().out
    assert "runs/prompt  1 entries" in out and "runs/finetune  1 entries" in out
    assert cache.main(["--cache-dir", d, "info", blob.name[:10]]) == 0
    assert '"logp": [\n      3,\n      2' in capsys.readouterr().out
    assert cache.main(["--cache-dir", d, "verify"]) == 0
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert cache.main(["--cache-dir", d, "verify"]) == 1
    assert "CORRUPT" in capsys.readouterr().out
    with pytest.raises(cache.CorruptEntry, match=blob.name):
        cache.read_blob(blob)
    assert cache.main(["--cache-dir", d, "rm", blob.name[:12]]) == 0 and not blob.exists()
    assert cache.main(["--cache-dir", d, "rm", str(run)]) == 0 and not run.exists()
    with pytest.raises(ToolkitError, match="format version"):
        cache.run_path("probe", {"ids": 1}, d)


def test_verify_says_when_there_is_nothing_to_verify(tmp_path, capsys):
    assert cache.main(["--cache-dir", str(tmp_path / "missing"), "verify"]) == 2
    assert "no feature cache" in capsys.readouterr().err
    (tmp_path / "empty" / "features").mkdir(parents=True)
    assert cache.main(["--cache-dir", str(tmp_path / "empty"), "verify"]) == 0
    assert "nothing to verify" in capsys.readouterr().out


def test_ctrl_c_is_one_line_and_the_rerun_resumes(slow_model, big_task, tmp_path):
    """A real SIGINT mid-extraction: one line on stderr (no traceback), exit code 130, and the finished shards
    are kept for the rerun."""
    out = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.extract", *_args(slow_model, big_task, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and \
            len(list((out / "features").glob("*.partial/shard-*.npz"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted: finished work is cached")
    assert list((out / "features").glob("*.partial/shard-*.npz"))
