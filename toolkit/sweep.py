"""Studies beyond one machine: a comparison split into jobs at the grain of its stages, run by a launcher, then
merged by the comparison itself.

    python -m toolkit.sweep --task sentiment,sst2 --strong smollm2-135m,qwen2.5-0.5b --launcher local --out runs/s
    python -m toolkit.sweep --preset ladder --launcher slurm --slurm-partition gpu --out runs/ladder
    python -m toolkit.sweep status runs/ladder

The options are `compare`'s (the same config, presets and `--config`) and the launcher's. The jobs:
- `extract`: one per model x task (the weak, intermediate and strong models' features);
- `weak`: one per task x seed, where the weak supervisor is trained and stored (`--weak-method finetune`);
- `methods`: one per task x strong model x cheap method (probes, prompting, label-free), all its seeds;
- `expensive`: one per task x strong model x expensive method (fine-tuning) x seed it runs on, with resources of
  their own.
Each stage starts when the one before it has finished. Every job writes only into the store (the cache root,
which every node must see: `--cache-dir` or $TOOLKIT_CACHE_DIR on a shared filesystem), whose entries are
content-addressed, locked per key, written atomically and resumable: a job run twice, or two jobs that overlap,
do the work once and leave one valid entry. The merge is `compare` in this process on the whole config: it
finds every stage in the store, so its results.csv and summary.csv are those of an in-process run, and it says
in one line if it had to compute anything. A failed job is retried (`--retries`), resuming from the shards it
finished; one that keeps failing is reported with its log, the other jobs go on, and the merge waits for a
rerun of the same command, which skips what is done.

Launchers: `none` (the comparison in this process), `local` (long-lived worker processes: one per visible GPU,
or `--workers` on a CPU), `slurm` (job arrays through submitit, per-stage resources; the extra `slurm`).
`<out>/sweep/` holds every job's spec, log and state (`state.json`), which `python -m toolkit.sweep status <out>`
prints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from toolkit import compare, config, report
from toolkit import extract as extract_mod
from toolkit import methods as methods_mod
from toolkit import weak as weak_mod
from toolkit._util import ToolkitError, atomic_write_bytes, cli_main
from toolkit.compare import CompareConfig
from toolkit.models import resolve

__all__ = ["Job", "SweepArgs", "STAGES", "plan", "run_job", "run_sweep", "status", "main"]

STAGES = ("extract", "weak", "methods", "expensive")
"""The stages in the order they run; each waits for the one before it."""
LAUNCHERS = ("none", "local", "slurm")
STATE = "state.json"
"""Every job's state, in `<out>/sweep/` (`report.SWEEP_DIR`) beside the jobs' specs and logs."""


@dataclass(frozen=True)
class SweepArgs:
    """How the jobs are launched, and the resources each stage asks for."""

    launcher: str = "local"
    """`none` (the comparison in this process), `local` (a pool of processes on this machine) or `slurm`
    (job arrays through submitit)."""
    workers: int = 0
    """Local launcher: jobs at once (0: one per visible GPU, else 1). On a CPU each gets an equal share of the
    cores (OMP_NUM_THREADS)."""
    retries: int = 2
    """Times a failed job is run again (it resumes from what it stored) before it is reported as failed."""
    poll: float = 2.0
    """Seconds between two looks at the running jobs (SLURM launcher)."""
    slurm_partition: str = ""
    """SLURM partition (empty: the cluster's default)."""
    slurm_account: str = ""
    """SLURM account to charge (empty: the user's default)."""
    slurm_parallelism: int = 0
    """At most this many jobs of one array run at once (0: no limit)."""
    extract_gpus: int = 1
    """GPUs per extraction job (SLURM)."""
    extract_mem_gb: int = 32
    """Memory per extraction job, GB (SLURM)."""
    extract_minutes: int = 120
    """Time limit of an extraction job, minutes (SLURM)."""
    method_gpus: int = 1
    """GPUs per job of the cheap methods (probes, prompting, label-free; SLURM)."""
    method_mem_gb: int = 32
    """Memory per job of the cheap methods, GB (SLURM)."""
    method_minutes: int = 60
    """Time limit of a cheap method's job, minutes (SLURM)."""
    expensive_gpus: int = 1
    """GPUs per job of an expensive method (fine-tuning) and of a trained weak supervisor (SLURM)."""
    expensive_mem_gb: int = 64
    """Memory per expensive job, GB (SLURM)."""
    expensive_minutes: int = 480
    """Time limit of an expensive job, minutes (SLURM)."""
    cpus_per_job: int = 8
    """CPU cores per job (SLURM)."""
    plugins: tuple[str, ...] = dataclasses.field(default=(), metadata={"cmd": False})
    """Modules that register methods (`--plugin`), which every job loads first (set from the command line's)."""

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ToolkitError(f"launcher must be one of {', '.join(LAUNCHERS)}, got '{self.launcher}'")
        if self.workers < 0 or self.retries < 0 or self.poll <= 0:
            raise ToolkitError("workers and retries must be >= 0 and poll > 0")

    def resources(self, stage: str) -> dict:
        """submitit's parameters for the jobs of `stage`."""
        kind = {"extract": "extract", "weak": "expensive", "methods": "method", "expensive": "expensive"}[stage]
        out = {"gpus_per_node": getattr(self, f"{kind}_gpus"), "mem_gb": getattr(self, f"{kind}_mem_gb"),
               "timeout_min": getattr(self, f"{kind}_minutes"), "cpus_per_task": self.cpus_per_job,
               "name": f"toolkit-{stage}", "nodes": 1, "tasks_per_node": 1}
        extra = {"slurm_partition": self.slurm_partition, "slurm_account": self.slurm_account,
                 "slurm_array_parallelism": self.slurm_parallelism}
        return out | {k: v for k, v in extra.items() if v}


@dataclass(frozen=True)
class Job:
    """One unit of a sweep: a stage's work on a sub-config of the comparison."""

    id: str
    stage: str
    name: str
    config: CompareConfig
    """The comparison restricted to this job's task, strong model, method and seed."""
    model: str | None = None
    """`extract` jobs: the model whose features are extracted."""
    strong: bool = True
    """`extract` jobs: whether `model` is a strong model (it extracts at the job's dtype)."""

    def spec(self, plugins: tuple[str, ...] = ()) -> dict:
        """The job as plain data, what a worker runs (`run_job`); `plugins` are the modules that register methods
        outside the toolkit's entry points (`--plugin`), loaded there first."""
        return {"id": self.id, "stage": self.stage, "name": self.name, "model": self.model, "strong": self.strong,
                "plugins": list(plugins), "config": config.as_dict(self.config)}


def _sub(cfg: CompareConfig, **job) -> CompareConfig:
    return dataclasses.replace(cfg, job=dataclasses.replace(cfg.job, **job))


def plan(cfg: CompareConfig) -> list[Job]:
    """The jobs of a comparison, stage by stage (`STAGES`), each with the part of `cfg` it runs."""
    jobs: list[Job] = []

    def add(stage: str, name: str, sub: CompareConfig, **kw) -> None:
        jobs.append(Job(f"{stage}-{sum(j.stage == stage for j in jobs):04d}", stage, name, sub, **kw))

    for task in cfg.job.tasks:
        for model in cfg.models():
            add("extract", f"extract {task} {model}", _sub(cfg, tasks=(task,)), model=model,
                strong=model in cfg.job.strong)
    if weak_mod.supervisor(cfg.job.weak_method).stored:
        for task in cfg.job.tasks:
            for seed in cfg.job.seeds:
                add("weak", f"weak {task} {cfg.job.weak} seed {seed}", _sub(cfg, tasks=(task,), seeds=(seed,)))
    for task in cfg.job.tasks:
        for strong in cfg.job.strong:
            info = resolve(strong, cfg.job.cache_dir)
            for name in cfg.methods:
                method = methods_mod.get(name)
                if method.skip(info) is not None:
                    continue
                seeds = method.seeds(cfg.opts(name), tuple(cfg.job.seeds), cfg.job)
                # an expensive method's seeds are jobs of their own (hours each); a cheap method's seeds share one
                # job, which loads the features once (they take seconds to minutes together)
                for part in ([(s,) for s in seeds] if method.expensive else [tuple(seeds)]):
                    sub = dataclasses.replace(_sub(cfg, tasks=(task,), strong=(strong,), seeds=part),
                                              methods=(name,))
                    what = f"seed {part[0]}" if len(part) == 1 else f"seeds {','.join(map(str, part))}"
                    add("expensive" if method.expensive else "methods", f"{name} {task} {strong} {what}", sub)
    return jobs


def run_job(spec: dict) -> str:
    """Do one job (`Job.spec`): in a worker process, a SLURM job, or here. Returns a line on what it did."""
    for plugin in spec.get("plugins", ()):
        methods_mod.load_plugin(plugin)
    cfg = compare.from_dict(spec["config"], f"sweep job {spec['id']}")
    t0 = time.perf_counter()
    with extract_mod.counted() as work:
        if spec["stage"] == "extract":
            ex = extract_mod.for_job(cfg.job, spec["model"], cfg.job.tasks[0], strong=spec["strong"])
            extract_mod.extract(ex, progress=False)
            what = {}
        elif spec["stage"] == "weak":
            task = compare.load_tasks(cfg)[cfg.job.tasks[0]]
            compare.supervise(cfg, cfg.job.for_task(task), task, cfg.job.tasks[0], progress=False)
            what = {}
        else:
            what = compare.run_config(cfg, progress=False, figures=False).stats
    done = ", ".join(f"{k} {v}" for k, v in {**what, "models_built": work["models_built"]}.items())
    return f"{spec['name']}: done in {time.perf_counter() - t0:.0f} s ({done})"


# ----------------------------------------------------------------------------- the state of a sweep


class State:
    """Every job's state (`waiting`, `running`, `done`, `failed`), its tries, log and last error line, kept in
    `<out>/sweep/state.json` (rewritten atomically at every change, so `status` reads it any time)."""

    def __init__(self, out: Path, jobs: list[Job]):
        self.path, self.lock = out / STATE, threading.Lock()  # `out`: the sweep's own folder
        self.jobs = {j.id: {"stage": j.stage, "name": j.name, "state": "waiting", "tries": 0, "log": "",
                            "error": ""} for j in jobs}
        self.merge = "waiting"
        self._write()

    def set(self, job_id: str, **fields) -> None:
        with self.lock:
            self.jobs[job_id].update(fields)
            self._write()

    def set_merge(self, state: str) -> None:
        with self.lock:
            self.merge = state
            self._write()

    def _write(self) -> None:
        atomic_write_bytes(self.path, json.dumps({"jobs": self.jobs, "merge": self.merge}, indent=1).encode())

    def counts(self, stage: str) -> dict[str, int]:
        return _counts(self.jobs.values(), stage)


def _counts(jobs, stage: str) -> dict[str, int]:
    """How many of `jobs` (state dicts) of `stage` are in each state."""
    states = [j["state"] for j in jobs if j["stage"] == stage]
    return {s: states.count(s) for s in ("done", "running", "failed", "waiting")}


def _error_line(e: BaseException) -> str:
    """An exception as one line: its type and its message's last line."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".replace("\n", " ")[:300]


def _last_line(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    errors = [x for x in lines if x.startswith(("error:", "Traceback")) or "Error" in x.split(":")[0]]
    return (errors or lines or [""])[-1].strip()[:300]


def status(out: str | Path) -> str:
    """Per stage, how many jobs are done, running, failed and waiting, and each failed job's log and last error
    line (`python -m toolkit.sweep status DIR`)."""
    path = Path(out) / report.SWEEP_DIR / STATE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ToolkitError(f"no sweep state in {out} ({e.__class__.__name__}): is it a sweep's --out?") from None
    jobs = data["jobs"].values()
    lines = [f"{'stage':10s} {'done':>5s} {'running':>8s} {'failed':>7s} {'waiting':>8s}"]
    for stage in STAGES:
        c = _counts(jobs, stage)
        if any(c.values()):
            lines.append(f"{stage:10s} {c['done']:5d} {c['running']:8d} {c['failed']:7d} {c['waiting']:8d}")
    lines.append(f"merge: {data.get('merge', 'waiting')}")
    for j in jobs:
        if j["state"] == "failed":
            lines.append(f"failed: {j['name']} after {j['tries']} tries; log {j['log']}; {j['error']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- launchers


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


class _Worker:
    """One long-lived `python -m toolkit.sweep worker` process of the local launcher: it imports the toolkit once
    and runs the jobs it is handed, one at a time (a process per job would pay the imports, seconds, every time).
    A worker that dies (killed, out of memory) fails its job's try and is replaced by a fresh one."""

    def __init__(self, env: dict):
        self.env, self.proc = env, None

    def start(self) -> int:
        """The worker's process id (a new process if it has none alive)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, "-m", "toolkit.sweep", "worker"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env, text=True)
        return self.proc.pid

    def run(self, spec_path: Path, log: Path) -> tuple[bool, str]:
        """Run one job; (ok, the error line)."""
        self.start()
        try:
            self.proc.stdin.write(f"{spec_path}\t{log}\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            answer = ""
        if answer.startswith("ok"):
            return True, ""
        if answer.startswith("error"):
            return False, answer.partition(" ")[2].strip()
        rc = self.proc.wait()  # it died during the job
        return False, f"the worker process ended with exit {rc}" + (" (killed)" if rc < 0 else "")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def _worker_loop() -> int:
    """`python -m toolkit.sweep worker`: run the jobs named on stdin (`SPEC\tLOG` a line), each with its output in
    its log, answering `ok` or `error <last line>` on stdout."""
    import contextlib
    import traceback

    answer = sys.stdout
    for line in sys.stdin:
        spec_path, _, log = line.rstrip("\n").partition("\t")
        with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            try:
                print(run_job(json.loads(Path(spec_path).read_text())), flush=True)
                result = "ok"
            except Exception as e:  # the job's failure, in its log; the worker goes on with the next job
                traceback.print_exc()
                result = f"error {_error_line(e)}"
        answer.write(result + "\n")
        answer.flush()
        _free_memory()
    return 0


def _free_memory() -> None:
    import gc

    gc.collect()
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.empty_cache()


class _LocalPool:
    """The local launcher: worker processes on this machine (`_Worker`), one per visible GPU (each sees its own) or
    `workers` of them sharing the cores, kept for every stage of the sweep; each failure retried `retries`
    times."""

    def __init__(self, args: SweepArgs):
        gpus = _visible_gpus()
        n = args.workers or max(1, len(gpus))
        self.workers = []
        for i in range(n):
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            else:
                env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
            self.workers.append(_Worker(env))
        self.free = list(range(n))
        self.lock = threading.Condition()

    def __call__(self, stage_jobs: list[Job], state: State, args: SweepArgs, out: Path, say) -> None:
        def one(job: Job) -> None:
            spec_path, log = out / "jobs" / f"{job.id}.json", out / "logs" / f"{job.id}.log"
            atomic_write_bytes(spec_path, json.dumps(job.spec(args.plugins)).encode())
            with self.lock:
                self.lock.wait_for(lambda: self.free)
                slot = self.free.pop()
            worker = self.workers[slot]
            try:
                for attempt in range(1, args.retries + 2):
                    with open(log, "a") as f:
                        f.write(f"--- try {attempt}\n")
                    state.set(job.id, state="running", tries=attempt, log=str(log), pid=worker.start())
                    ok, error = worker.run(spec_path, log)
                    if ok:
                        state.set(job.id, state="done", error="")
                        say(job, state)
                        return
                    state.set(job.id, error=error or _last_line(log))
                state.set(job.id, state="failed")
                say(job, state)
            finally:
                with self.lock:
                    self.free.append(slot)
                    self.lock.notify()

        with ThreadPoolExecutor(max_workers=len(self.workers)) as pool:
            list(pool.map(one, stage_jobs))

    def close(self) -> None:
        for w in self.workers:
            w.close()


def _run_slurm(jobs: list[Job], state: State, args: SweepArgs, out: Path, say) -> None:
    """Jobs as SLURM job arrays through submitit, one array per stage (each with its stage's resources), all
    polled together; a failed job (its own error, or SLURM's: preempted, out of time) resubmitted `retries`
    times."""
    try:
        import submitit
    except ImportError:
        raise ToolkitError("the SLURM launcher needs submitit: pip install -c requirements.lock -e \".[slurm]\"") \
            from None
    executors = {}
    for stage in dict.fromkeys(j.stage for j in jobs):
        executors[stage] = submitit.AutoExecutor(folder=str(out / "slurm" / "%j"), cluster="slurm")
        executors[stage].update_parameters(**args.resources(stage))

    def submit(batch: list[Job]) -> dict:
        handles = {}
        for stage, executor in executors.items():
            part = [j for j in batch if j.stage == stage]
            if part:
                with executor.batch():  # one job array
                    submitted = [executor.submit(run_job, j.spec(args.plugins)) for j in part]
                handles |= {j.id: (j, h) for j, h in zip(part, submitted)}
        for job_id, (_, h) in handles.items():
            state.set(job_id, state="running", tries=state.jobs[job_id]["tries"] + 1, log=str(h.paths.stderr),
                      slurm_id=h.job_id)
        return handles

    running, gone = submit(jobs), {}
    while running:
        time.sleep(args.poll)
        retry = []
        left = _left_the_queue(running, gone)
        for job_id, (job, handle) in list(running.items()):
            if handle.done():
                error = None
                try:
                    handle.result()
                except Exception as e:  # the job's own exception, or SLURM's (preempted, out of time, node failure)
                    error = _error_line(e)
            elif job_id in left:
                error = "it left SLURM's queue without a result (cancelled, preempted or killed)"
            else:
                continue
            del running[job_id]
            if error is None:
                state.set(job_id, state="done", error="")
                say(job, state)
                continue
            state.set(job_id, error=error)
            if state.jobs[job_id]["tries"] <= args.retries:
                retry.append(job)
            else:
                state.set(job_id, state="failed")
                say(job, state)
        if retry:
            for job in retry:
                gone.pop(job.id, None)
            running |= submit(retry)


QUEUE_GRACE = 3
"""Looks at `squeue` in a row that must miss a job, with no result written, before it counts as gone: a job that
has just ended may have its result file written a moment after it leaves the queue."""


def _left_the_queue(running: dict, gone: dict) -> set:
    """The jobs of `running` (id -> (job, submitit handle)) that SLURM's queue has not held for `QUEUE_GRACE` looks
    and that wrote no result. submitit tells a finished job by its result file or by `sacct`, so without
    accounting (a small cluster, this project's CI) a job cancelled or preempted before it wrote its result would
    be waited for forever; `squeue` shows every job still pending or running."""
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return set()
    if out.returncode != 0:
        return set()
    queued = set(out.stdout.split())
    for job_id, (_, handle) in running.items():
        base = str(handle.job_id).split("_")[0]
        held = str(handle.job_id) in queued or any(q.startswith(f"{base}_[") or q == base for q in queued)
        gone[job_id] = 0 if held or handle.paths.result_pickle.exists() else gone.get(job_id, 0) + 1
    return {job_id for job_id in running if gone.get(job_id, 0) >= QUEUE_GRACE}


def run_sweep(cfg: CompareConfig, args: SweepArgs, out: str | Path, *, progress: bool = True,
              figures: bool = True):
    """Plan the jobs of `cfg`, run them stage by stage with `args.launcher`, then merge (`compare.run_config`,
    which loads every stage from the store). Returns the `Comparison`, or None when a job failed for good (the
    state file says which; the same call again skips what is done)."""
    out = Path(out)
    if args.launcher == "none":
        return compare.run_config(cfg, out=out, progress=progress, figures=figures)
    compare.check(cfg, out)  # names, sizes and the output folder, before any job is started
    own = out / report.SWEEP_DIR
    for sub in ("jobs", "logs"):
        (own / sub).mkdir(parents=True, exist_ok=True)
    jobs = plan(cfg)
    state = State(own, jobs)
    t0 = time.perf_counter()

    def say(job: Job, state: State) -> None:
        if progress:
            c = state.counts(job.stage)
            line = f"[sweep] {job.stage}: {c['done']} done, {c['failed']} failed, {c['running']} running, " \
                   f"{c['waiting']} waiting ({time.perf_counter() - t0:.0f} s); {job.name}: " \
                   f"{state.jobs[job.id]['state']}"
            if state.jobs[job.id]["state"] == "failed":
                line += f" after {state.jobs[job.id]['tries']} tries, log {state.jobs[job.id]['log']}"
            print(line, file=sys.stderr, flush=True)

    launch = _LocalPool(args) if args.launcher == "local" else _run_slurm
    try:
        # both method stages need only the extraction and the weak labels: they run side by side
        for stages in (("extract",), ("weak",), ("methods", "expensive")):
            stage_jobs = [j for j in jobs if j.stage in stages]
            if not stage_jobs:
                continue
            if progress:
                print(f"[sweep] {' and '.join(stages)}: {len(stage_jobs)} jobs through the {args.launcher} "
                      "launcher", file=sys.stderr, flush=True)
            launch(stage_jobs, state, args, own, say)
            if any(state.jobs[j.id]["state"] == "failed" for j in stage_jobs):
                state.set_merge("not run: a job failed")
                if progress:
                    print(status(out), file=sys.stderr)
                return None
    finally:
        if isinstance(launch, _LocalPool):
            launch.close()
    state.set_merge("running")
    result = compare.run_config(cfg, out=out, progress=False, figures=figures)
    state.set_merge("done")
    computed = {k: v for k, v in result.stats.items() if v}
    if computed and progress:
        print(f"[sweep] the merge computed what no job had stored: {computed}", file=sys.stderr)
    return result


# ----------------------------------------------------------------------------- CLI


@cli_main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["status"]:
        if len(argv) != 2:
            raise ToolkitError("usage: python -m toolkit.sweep status DIR")
        print(status(argv[1]))
        return 0
    if argv[:1] == ["job"]:  # one job by hand: python -m toolkit.sweep job <out>/jobs/<id>.json
        print(run_job(json.loads(Path(argv[1]).read_text())), flush=True)
        return 0
    if argv[:1] == ["worker"]:
        return _worker_loop()
    cfg, run_args, args = compare.parse_args(argv, extra=SweepArgs, prog="python -m toolkit.sweep")
    plugins = tuple(str(Path(p).resolve()) if p.endswith(".py") else p for p in config.as_tuple(run_args.plugin or ""))
    args = dataclasses.replace(args, plugins=plugins)
    out = compare.default_out(cfg, run_args)
    result = run_sweep(cfg, args, out, progress=not run_args.quiet, figures=run_args.figures)
    if result is None:
        return 1
    compare.print_result(result)
    print(f"\nwrote {out}/ (report.md, summary.csv, results.csv, diagnostics.csv; the jobs' state and logs in "
          f"{out / report.SWEEP_DIR}/)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
