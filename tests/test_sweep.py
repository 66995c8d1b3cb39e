"""Studies beyond one machine (`toolkit.sweep`): the plan of jobs, the local launcher against the in-process
comparison, overlapping sweeps on one store, a failing job, a job killed mid-extraction, and a real SLURM
(one node on localhost, as `.ci/run` starts it) where there is one."""

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
import pandas as pd
import pytest
from conftest import save_tiny_causal

from toolkit import cache, compare, extract, sweep
from toolkit._util import ToolkitError
from toolkit.tasks import SplitSizes

SIZES = SplitSizes(10, 10, 6, 10)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_tasks(tiny_task, tmp_path_factory):
    """The tiny task and a second one of other texts."""
    other = tmp_path_factory.mktemp("other") / "other.jsonl"
    rows = [json.loads(x) for x in Path(tiny_task).read_text().splitlines()]
    other.write_text("".join(json.dumps({"text": r["text"][::-1], "label": r["label"]}) + "\n" for r in rows))
    return str(tiny_task), str(other)


@pytest.fixture(scope="module")
def second_strong(tmp_path_factory):
    return str(save_tiny_causal(tmp_path_factory.mktemp("second_strong"), seed=3, n_layers=1))


def _options(two_tasks, tiny_causal, second_strong, cache_dir) -> dict:
    """2 tasks x 2 strong models x 2 seeds, the probes (every job a process: the grid is what is tested, and the
    expensive stage's own jobs are in the tests below)."""
    return dict(tasks=two_tasks, weak=str(tiny_causal), strong=(str(tiny_causal), second_strong), seeds=2,
                sizes=SIZES, methods=("probe",), n_boot=20, limit=0, dtype="float32", cache_dir=str(cache_dir))


def test_the_plan_has_a_job_per_stage_and_grain(two_tasks, tiny_causal, second_strong, tmp_path):
    cfg = compare.CompareConfig.make(**{**_options(two_tasks, tiny_causal, second_strong, tmp_path),
                                        "methods": ("probe", "finetune"), "finetune_seeds": 1})
    jobs = sweep.plan(cfg)
    by_stage = {s: [j for j in jobs if j.stage == s] for s in sweep.STAGES}
    assert len(by_stage["extract"]) == 2 * 2  # the weak model is one of the strong ones: 2 models x 2 tasks
    assert not by_stage["weak"]  # a probe supervisor stores nothing: it is refitted where it is needed
    assert len(by_stage["methods"]) == 2 * 2  # tasks x strong: the probe's seeds share a job
    assert len(by_stage["expensive"]) == 2 * 2  # fine-tuning on its first seed alone
    one = by_stage["expensive"][0].config
    assert one.methods == ("finetune",) and len(one.job.seeds) == len(one.job.strong) == len(one.job.tasks) == 1
    assert len({j.id for j in jobs}) == len(jobs)
    ft = compare.CompareConfig.make(**{**_options(two_tasks, tiny_causal, second_strong, tmp_path),
                                       "weak_method": "finetune"})
    assert len([j for j in sweep.plan(ft) if j.stage == "weak"]) == 2 * 2  # tasks x seeds: trained once each
    with pytest.raises(ToolkitError, match="launcher must be one of"):
        sweep.SweepArgs(launcher="pbs")


@pytest.fixture(scope="module")
def in_process(two_tasks, tiny_causal, second_strong, tmp_path_factory):
    out = tmp_path_factory.mktemp("in_process")
    compare.run(**_options(two_tasks, tiny_causal, second_strong, out / "cache"), out=out / "run", progress=False,
                figures=False)
    return out / "run"


def _same_tables(a: Path, b: Path) -> None:
    """results.csv and summary.csv of two runs: the same rows, the same numbers (to float rounding: workers run
    on one thread each, the in-process run on all)."""
    for name in ("results.csv", "summary.csv"):
        x, y = pd.read_csv(a / name), pd.read_csv(b / name)
        assert list(x.columns) == list(y.columns) and len(x) == len(y)
        num = x.select_dtypes("number").columns
        pd.testing.assert_frame_equal(x.drop(columns=num), y.drop(columns=num))
        np.testing.assert_allclose(x[num].to_numpy(float), y[num].to_numpy(float), atol=1e-6, equal_nan=True)


def test_a_local_sweep_equals_the_in_process_comparison(two_tasks, tiny_causal, second_strong, in_process,
                                                         tmp_path, capsys):
    out, store = tmp_path / "sweep", tmp_path / "cache"
    argv = ["--task", ",".join(two_tasks), "--weak", str(tiny_causal), "--strong", f"{tiny_causal},{second_strong}",
            "--seeds", "2", "--sizes", "10,10,6,10", "--methods", "probe", "--n-boot", "20", "--limit", "0",
            "--dtype", "float32", "--cache-dir", str(store), "--launcher", "local", "--workers", "2", "--no-figures",
            "--out", str(out)]
    assert sweep.main(argv) == 0
    err = capsys.readouterr().err
    assert "[sweep] extract: 4 jobs" in err and "[sweep] methods and expensive: 4 jobs" in err
    assert "the merge computed" not in err  # every stage was in the store
    _same_tables(in_process, out)
    state = json.loads((out / "sweep" / "state.json").read_text())
    assert {j["state"] for j in state["jobs"].values()} == {"done"} and state["merge"] == "done"
    assert sweep.main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "methods" in printed and "merge: done" in printed and "failed:" not in printed
    logs = sorted((out / "sweep" / "logs").glob("methods-*.log"))
    assert len(logs) == 4 and "probe_seeds_fitted 2" in logs[0].read_text().splitlines()[-1]  # its seeds, once


def test_overlapping_sweeps_on_one_store_leave_one_valid_entry_each(two_tasks, tiny_causal, tmp_path):
    """Two sweeps at once on one store, over overlapping grids (the same first task and seed 0): both finish,
    every entry verifies, no key is stored twice. (Two writers of one fine-tuning run: tests/test_finetune.py.)"""
    store = tmp_path / "cache"
    common = ["--weak", str(tiny_causal), "--strong", str(tiny_causal), "--sizes", "10,10,6,10", "--methods",
              "probe", "--n-boot", "20", "--limit", "0", "--dtype", "float32", "--cache-dir", str(store),
              "--launcher", "local", "--workers", "1", "--no-figures", "--quiet"]
    grids = [["--task", two_tasks[0], "--seeds", "2"], ["--task", ",".join(two_tasks), "--seeds", "1"]]
    procs = [subprocess.Popen([sys.executable, "-m", "toolkit.sweep", *common, *grid, "--out", str(tmp_path / f"s{i}")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i, grid in enumerate(grids)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    assert cache.main(["--cache-dir", str(store), "verify"]) == 0
    assert len(cache.entries(store)) == 2  # one feature entry per task (the weak model is the strong one)
    stored = list((store / "runs" / "probe").iterdir())
    assert not [r for r in stored if r.name.startswith(".")]  # no half-written file left behind
    assert len([r for r in stored if r.suffix == ".npz"]) == 3  # task 1: seeds 0, 1; task 2: seed 0


def _plugin(folder: Path, name: str, body: str) -> Path:
    """A module file registering method `name` with no options, whose `run` runs `body` (8-space indented) and
    returns no records: what `--plugin` loads in the sweep and in every job."""
    path = folder / f"{name}.py"
    path.write_text(f"""
from dataclasses import dataclass
import toolkit


@dataclass(frozen=True)
class Options:
    \"\"\"No options.\"\"\"


@toolkit.register_method
class Method(toolkit.Method):
    name, Options = {name!r}, Options

    def run(self, ctx, opts):{body}
        return toolkit.MethodResult([])
""")
    return path


def test_a_failing_job_is_reported_with_its_log_and_the_rest_go_on(tiny_causal, tiny_task, tmp_path, capsys):
    plugin = _plugin(tmp_path, "flaky", """
        if any(s.seed == 1 for s in ctx.sups):
            raise RuntimeError("flaky fails on seed 1")""")
    out = tmp_path / "out"
    argv = ["--plugin", str(plugin), "--task", str(tiny_task), "--weak", str(tiny_causal), "--strong",
            str(tiny_causal), "--seeds", "2", "--sizes", "10,10,6,10", "--methods", "probe,flaky", "--limit", "0",
            "--cache-dir", str(tmp_path / "cache"), "--launcher", "local", "--workers", "2", "--retries", "1",
            "--no-figures", "--out", str(out)]
    try:
        assert sweep.main(argv) == 1
    finally:
        from toolkit import methods

        methods.unregister("flaky")
    err = capsys.readouterr().err
    assert "flaky" in err and "after 2 tries" in err
    state = json.loads((out / "sweep" / "state.json").read_text())
    failed = [j for j in state["jobs"].values() if j["state"] == "failed"]
    assert [j["name"].split()[0] for j in failed] == ["flaky"]
    assert "flaky fails on seed 1" in failed[0]["error"] and Path(failed[0]["log"]).exists()
    done = [j["name"] for j in state["jobs"].values() if j["state"] == "done"]
    assert len(done) == 1 + 1  # the extraction, and the probe went on
    assert state["merge"].startswith("not run") and not (out / "summary.csv").exists()
    assert sweep.main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "failed: flaky" in printed and "flaky fails on seed 1" in printed and str(out / "sweep" / "logs") in printed


def test_a_job_killed_mid_extraction_is_retried_and_its_entry_is_byte_identical(tiny_causal, tmp_path):
    """SIGKILL to the extraction job's process after its first shard: the launcher runs it again, which resumes
    from the finished shard; the entry equals an uninterrupted extraction's byte for byte. (A comparison extracts
    in shards of 512 on a CPU, so the task has three.)"""
    from test_reliability import _npy_bytes

    n = 2 * 512 + 10
    model = tiny_causal
    task = tmp_path / "big.jsonl"
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    task.write_text("".join(json.dumps({"text": " ".join(words[(i * 3 + k) % 10] for k in range(8 + i % 40)) +
                                                f" {i}", "label": i % 2}) + "\n" for i in range(n)))
    store, out = tmp_path / "cache", tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.sweep", "--task", str(task), "--weak", str(model),
                             "--strong", str(model), "--seeds", "1", "--sizes", "10,10,6,10", "--methods", "probe",
                             "--limit", "0", "--cache-dir", str(store), "--launcher", "local", "--workers", "1",
                             "--retries", "1", "--no-figures", "--quiet", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    killed, deadline = False, time.time() + 240
    while time.time() < deadline and proc.poll() is None and not killed:
        time.sleep(0.05)
        shards = list((store / "features").glob("*.partial/shard-*.npz"))
        try:
            job = next(j for j in json.loads((out / "sweep" / "state.json").read_text())["jobs"].values()
                       if j["stage"] == "extract" and "pid" in j)
        except (OSError, ValueError, StopIteration):
            continue
        if shards:
            os.kill(job["pid"], signal.SIGKILL)
            killed = True
    _, err = proc.communicate(timeout=600)
    assert killed, "the extraction finished before it could be killed"
    assert proc.returncode == 0, err.decode()[-3000:]
    jobs = json.loads((out / "sweep" / "state.json").read_text())["jobs"].values()
    job = next(j for j in jobs if j["stage"] == "extract")
    assert job["tries"] == 2 and job["state"] == "done"
    clean = tmp_path / "clean"  # uninterrupted, on one thread as the killed worker was (OMP_NUM_THREADS=1)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        extract.extract(extract.ExtractConfig(model=str(model), task=str(task), cache_dir=str(clean)), progress=False)
    finally:
        torch.set_num_threads(threads)
    (a,), (b,) = cache.entries(store), cache.entries(clean)
    assert _npy_bytes(a) == _npy_bytes(b)


def _slurm_running() -> str | None:
    """Why SLURM cannot be used here, or None when a cluster answers."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not found); .ci/run starts a one-node cluster"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed"
    probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0 or not any(s in probe.stdout for s in ("idle", "mixed", "allocated")):
        return f"SLURM does not answer ({(probe.stderr or probe.stdout).strip()[:200]})"
    return None


@pytest.mark.skipif(_slurm_running() is not None, reason=str(_slurm_running()))
def test_a_sweep_through_slurm_equals_the_in_process_comparison(two_tasks, tiny_causal, second_strong, in_process,
                                                                 tmp_path):
    out = tmp_path / "slurm"
    cfg = compare.CompareConfig.make(**_options(two_tasks, tiny_causal, second_strong, tmp_path / "cache"))
    args = sweep.SweepArgs(launcher="slurm", poll=1.0, extract_gpus=0, method_gpus=0, expensive_gpus=0,
                           extract_mem_gb=1, method_mem_gb=1, expensive_mem_gb=1, cpus_per_job=1)
    result = sweep.run_sweep(cfg, args, out, progress=False, figures=False)
    assert result is not None, sweep.status(out)
    _same_tables(in_process, out)
    state = json.loads((out / "sweep" / "state.json").read_text())
    assert all(j["state"] == "done" and j.get("slurm_id") for j in state["jobs"].values())


@pytest.mark.skipif(_slurm_running() is not None, reason=str(_slurm_running()))
def test_a_job_cancelled_on_slurm_is_resubmitted(tiny_causal, tiny_task, tmp_path):
    """A job cancelled while it runs (as preemption does) leaves the queue without a result: the launcher sees it
    gone from `squeue` (this cluster has no accounting for submitit's sacct), resubmits it, and the sweep ends."""
    mark = tmp_path / "tried"
    plugin = _plugin(tmp_path, "stall", f"""
        import time
        from pathlib import Path

        mark = Path({str(mark)!r})  # stalls on its first try, to be cancelled
        if not mark.exists():
            mark.write_text("tried")
            time.sleep(300)""")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "toolkit.sweep", "--plugin", str(plugin), "--task", str(tiny_task),
                             "--weak", str(tiny_causal), "--strong", str(tiny_causal), "--seeds", "1", "--sizes",
                             "10,10,6,10", "--methods", "stall", "--limit", "0", "--cache-dir", str(tmp_path / "c"),
                             "--launcher", "slurm", "--poll", "0.5", "--extract-gpus", "0", "--method-gpus", "0",
                             "--extract-mem-gb", "1", "--method-mem-gb", "1", "--cpus-per-job", "1", "--retries", "1",
                             "--no-figures", "--quiet", "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not mark.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert mark.exists(), "the job never started"
    slurm_id = json.loads((out / "sweep" / "state.json").read_text())["jobs"]["methods-0000"]["slurm_id"]
    subprocess.run(["scancel", str(slurm_id)], check=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    job = json.loads((out / "sweep" / "state.json").read_text())["jobs"]["methods-0000"]
    assert job["state"] == "done" and job["tries"] == 2 and job["slurm_id"] != slurm_id
