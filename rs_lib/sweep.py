"""Dispatch of a plan through submitit: SLURM job arrays, or one job per local GPU (or CPU worker).

A sweep takes the jobs of :func:`rs_lib.plan.plan` for some experiments, drops those already
finished in the store (:func:`rs_lib.plan.job_done`), and hands the rest to submitit, which runs
:func:`rs_lib.plan.run_job` on each.  The store is the only shared state: every job writes its
result under its key and holds that result's lock while it does (:mod:`rs_lib.lock`), so a sweep
may be re-run, killed, or run beside a notebook; a second identical sweep submits nothing.

Dependencies (a certification needs its training run) are kept in *waves*: wave k holds the jobs
whose longest chain of unfinished needs has length k.  On SLURM every wave is one job array, and
wave k + 1 starts ``afterany`` of wave k's arrays (``afterany``, not ``afterok``, so that one
failed training does not leave the other dependents pending forever); besides, every job checks
that its needs are finished before it starts, and fails with a clear message otherwise.  Locally,
submitit's ``LocalExecutor`` starts every submitted job at once and gives each the first
``gpus_per_node`` GPUs (``CUDA_VISIBLE_DEVICES=0..k-1``, or the first k of ``visible_gpus``), so it
does not share GPUs out; the sweep therefore keeps one slot per GPU (or CPU worker), submits a
job into a slot with ``visible_gpus=(g,)`` when the slot is free and the job's needs are done, and
waits in the foreground.

A preempted or timed-out SLURM job is requeued by submitit's checkpointing interface:
:class:`JobRunner` is a ``submitit.helpers.Checkpointable`` whose ``checkpoint()`` resubmits the
same job with the same arguments, and ``run_training`` resumes from the last checkpoint in the store.

Every sweep keeps a record under ``<store root>/_sweeps/<sweep id>/``: ``sweep.json`` (what was
asked), ``logs/`` (submitit's folder: pickles, stdout and stderr per job) and ``jobs/<key>.json``
(each job's last state: submitted, running, done or failed, with its submitit id and log paths),
which ``--status`` reads.  The sweep id is the hash of (experiments, profile, overrides).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from . import _validate as check
from . import costs as costs_mod
from . import store

EXECUTORS = ("local", "slurm")
STATES = ("done", "running", "submitted", "failed", "missing")
RECORDS = "_sweeps"
SLURM_ALIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING")


# --------------------------------------------------------------------------------------------
# What to run
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resources:
    """Where the jobs run.  ``local``: ``gpus`` (indices) or ``cpu_workers``, one job per slot;
    ``slurm``: one array per wave on ``partition`` with ``gpus_per_job`` GPUs and ``timeout_min``
    minutes per job (then requeued), at most ``array_parallelism`` tasks of an array at once."""

    executor: str = "local"
    gpus: tuple[int, ...] = ()
    cpu_workers: int = 0
    partition: str | None = None
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    timeout_min: int | None = None
    array_parallelism: int = 256
    max_requeue: int = 20
    threads: int | None = None

    def __post_init__(self) -> None:
        check.choice("executor", self.executor, EXECUTORS)
        object.__setattr__(self, "gpus", tuple(self.gpus))
        if self.executor == "local":
            for name, default in (("partition", None), ("cpus_per_job", None)):
                if getattr(self, name) != default:
                    raise ValueError(f"--{name.replace('_', '-')} is a SLURM option; use it with --executor slurm")
            if self.gpus and self.cpu_workers:
                raise ValueError("give either --gpus or --cpu-workers for the local executor, not both")
            if not self.gpus and not self.cpu_workers:
                raise ValueError("the local executor needs --gpus 0,1,... (one job per GPU) or "
                                 "--cpu-workers N (CPU-only machine)")
            check.integer("cpu_workers", self.cpu_workers, low=0)
            _check_gpus(self.gpus)
        else:
            if self.gpus or self.cpu_workers:
                raise ValueError("--gpus and --cpu-workers are local-executor options; on SLURM use "
                                 "--gpus-per-job and --array-parallelism")
            check.integer("gpus_per_job", self.gpus_per_job, low=0)
            check.positive_int("array_parallelism", self.array_parallelism)
            if self.cpus_per_job is not None:
                check.positive_int("cpus_per_job", self.cpus_per_job)
            missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
            if missing:
                raise ValueError(f"--executor slurm needs {' and '.join(missing)} on PATH: run the sweep on "
                                 "a SLURM login node, or use --executor local")
        if self.timeout_min is not None:
            check.positive_int("timeout_min", self.timeout_min)
        check.integer("max_requeue", self.max_requeue, low=0)
        if self.threads is not None:
            check.positive_int("threads", self.threads)

    @property
    def job_threads(self) -> int | None:
        """torch threads per job: ``threads``, else the cores shared out among local CPU workers
        (N multi-threaded torch processes on the same cores thrash each other)."""
        if self.threads is not None or not self.cpu_workers:
            return self.threads
        return max(1, (os.cpu_count() or 1) // self.cpu_workers)

    @property
    def device(self) -> str:
        """The device a job sees: its own GPU as ``cuda`` (CUDA_VISIBLE_DEVICES), else the CPU."""
        if self.executor == "local":
            return "cuda" if self.gpus else "cpu"
        return "cuda" if self.gpus_per_job > 0 else "cpu"


def _check_gpus(gpus: Sequence[int]) -> None:
    if not gpus:
        return
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus names a GPU twice: {','.join(map(str, gpus))}")
    import torch

    count = torch.cuda.device_count()
    for g in gpus:
        if not isinstance(g, int) or isinstance(g, bool) or g < 0 or g >= count:
            have = f"GPUs 0-{count - 1}" if count else "no GPU (torch.cuda.device_count() is 0)"
            raise ValueError(f"--gpus names GPU {g}, but this machine has {have}; use --cpu-workers N "
                             "on a machine without GPUs")


def parse_gpus(text: str) -> tuple[int, ...]:
    """``"0,1,3"`` -> (0, 1, 3)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--gpus expects comma-separated GPU indices such as 0,1,2,3, got {text!r}") from None


def select(names: Sequence[str], *, chapter: str | None = None, all_: bool = False) -> tuple[str, ...]:
    """The experiments named, or a chapter's (``plan.experiments(chapter)``), or all of them."""
    from . import plan as plan_mod

    if sum((bool(names), chapter is not None, all_)) != 1:
        raise ValueError("select experiments one way: name them, or give --chapter NAME, or --all")
    if all_:
        return tuple(plan_mod.experiments())
    if chapter is not None:
        from .presets import CHAPTERS

        check.choice("--chapter", chapter, CHAPTERS)
        return tuple(plan_mod.experiments(chapter))
    known = plan_mod.experiments()
    for name in names:
        check.choice("experiment", name, known)
    return tuple(dict.fromkeys(names))


def chapters_of(experiments: Iterable[str]) -> dict[str, str]:
    """experiment -> its chapter (for the dry run's totals per chapter)."""
    from . import plan as plan_mod
    from .presets import CHAPTERS

    wanted = set(experiments)
    return {e: c for c in CHAPTERS for e in plan_mod.experiments(c) if e in wanted}


def collect(experiments: Sequence[str], profile: str, overrides: Mapping[str, Any] | None = None) -> list[Any]:
    """The plan's jobs of ``experiments``, each key once (experiments share runs), in an order
    where every job comes after its needs."""
    from . import plan as plan_mod

    if not experiments:
        raise ValueError("no experiment selected: name experiments, or give --chapter NAME or --all")
    jobs: dict[str, Any] = {}
    for experiment in experiments:
        for job in plan_mod.plan(experiment, profile, **dict(overrides or {})):
            jobs.setdefault(job.key, job)
    return ordered(list(jobs.values()))


def ordered(jobs: Sequence[Any]) -> list[Any]:
    """``jobs`` sorted so that needs come first (needs outside ``jobs`` are assumed finished)."""
    by_key = {j.key: j for j in jobs}
    out: list[Any] = []
    seen: set[str] = set()
    visiting: set[str] = set()

    def visit(job: Any) -> None:
        if job.key in seen:
            return
        if job.key in visiting:
            raise ValueError(f"the plan has a dependency cycle through {job.label!r}")
        visiting.add(job.key)
        for need in job.needs:
            if need in by_key:
                visit(by_key[need])
        visiting.discard(job.key)
        seen.add(job.key)
        out.append(job)

    for job in jobs:
        visit(job)
    return out


def waves(jobs: Sequence[Any], finished: Iterable[str]) -> list[list[Any]]:
    """Unfinished ``jobs`` grouped by the length of their longest chain of unfinished needs."""
    finished = set(finished)
    depth: dict[str, int] = {}
    for job in ordered(jobs):
        if job.key in finished:
            continue
        depth[job.key] = 1 + max((depth[n] for n in job.needs if n in depth), default=-1)
    groups: list[list[Any]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for job in ordered(jobs):
        if job.key in depth:
            groups[depth[job.key]].append(job)
    return groups


# --------------------------------------------------------------------------------------------
# The job function submitit runs
# --------------------------------------------------------------------------------------------

class JobRunner(submitit.helpers.Checkpointable):
    """Runs one plan job inside a submitit job and records its state in the sweep record.

    On SLURM preemption or timeout submitit calls :meth:`checkpoint` (inherited): it returns a
    ``DelayedSubmission`` of this runner with the same arguments, which submitit requeues; the
    rerun resumes from the store (``run_training`` restarts at the last checkpoint, a certify TSV
    at its first missing row).
    """

    def __init__(self, run_job: Callable[..., Any] | None = None,
                 job_done: Callable[..., bool] | None = None) -> None:
        self.run_job = run_job
        self.job_done = job_done

    def _functions(self) -> tuple[Callable[..., Any], Callable[..., bool]]:
        if self.run_job is not None and self.job_done is not None:
            return self.run_job, self.job_done
        from . import plan as plan_mod

        return self.run_job or plan_mod.run_job, self.job_done or plan_mod.job_done

    def __call__(self, job: Any, needs: Sequence[Any], *, record: str, root: str, device: str,
                 threads: int | None = None, max_iterations: int | None = None) -> str:
        run_job, job_done = self._functions()
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        marker = JobRecord(Path(record), job)
        marker.update(state="running", host=socket.gethostname(), pid=os.getpid(), started=time.time(),
                      **_submitit_ids())
        try:
            missing = [n.label for n in needs if not job_done(n, root=root)]
            if missing:
                raise RuntimeError(f"{job.label}: needs {', '.join(missing)}, which is not finished in "
                                   f"the store {root} (failed earlier in this sweep?)")
            kwargs = {"device": device, "root": root, "progress": False}
            if max_iterations is not None:
                kwargs["max_iterations"] = max_iterations
            run_job(job, **kwargs)
        except SystemExit:
            # submitit's handler of the preemption / timeout signal exits after requeueing this job
            marker.update(state="submitted", requeued=time.time(), error=None)
            raise
        except BaseException as err:
            marker.update(state="failed", error=f"{type(err).__name__}: {err}", ended=time.time())
            raise
        marker.update(state="done", ended=time.time())
        return job.key


def _submitit_ids() -> dict[str, Any]:
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:       # called outside submitit (tests, a direct call)
        return {}
    return {"job_id": env.job_id, "stdout": str(env.paths.stdout), "stderr": str(env.paths.stderr)}


# --------------------------------------------------------------------------------------------
# The sweep record
# --------------------------------------------------------------------------------------------

def sweep_id(experiments: Sequence[str], profile: str, overrides: Mapping[str, Any] | None) -> str:
    return store.config_hash({"experiments": sorted(experiments), "profile": profile,
                              "overrides": dict(overrides or {})})


def record_dir(root: str | Path | None, experiments: Sequence[str], profile: str,
               overrides: Mapping[str, Any] | None) -> Path:
    """``<root>/_sweeps/<id>/``: the record of the sweep of (experiments, profile, overrides)."""
    return store.results_root(root) / RECORDS / sweep_id(experiments, profile, overrides)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class JobRecord:
    """``<record>/jobs/<key>.json``: one job's last known state."""

    record: Path
    job: Any

    @property
    def path(self) -> Path:
        return self.record / "jobs" / (self.job.key.replace("/", "__") + ".json")

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def update(self, **values: Any) -> None:
        state = {**self.read(), "key": self.job.key, "label": self.job.label, **values, "updated": _now()}
        store.atomic_write_json(self.path, state)


def _alive(state: Mapping[str, Any], logs: Path) -> bool:
    """Is the submitit job behind a submitted/running record still queued or running?"""
    if state.get("executor") == "slurm" and state.get("job_id"):
        try:
            job = submitit.SlurmJob(folder=logs, job_id=str(state["job_id"]))   # registers it with sacct's watcher
            return job.watcher.get_state(job.job_id, mode="force") in SLURM_ALIVE
        except Exception:  # noqa: BLE001 - no sacct here: assume the scheduler still has it
            return True
    pid = state.get("controller_pid") or state.get("pid")
    if state.get("host") != socket.gethostname() or not pid:
        return state.get("state") == "running"
    try:
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def job_states(jobs: Sequence[Any], record: Path, *, root: str | Path | None,
               job_done: Callable[..., bool]) -> list[dict[str, Any]]:
    """For every job: state (done, running, submitted, failed, missing), label, key and log path."""
    logs = record / "logs"
    rows = []
    for job in jobs:
        saved = JobRecord(record, job).read()
        if job_done(job, root=str(store.results_root(root))):
            state = "done"
        elif saved.get("state") in ("running", "submitted") and _alive(saved, logs):
            state = saved["state"]
        elif saved.get("state") in ("failed", "running", "submitted"):
            state = "failed"
        else:
            state = "missing"
        rows.append({"state": state, "key": job.key, "label": job.label, "kind": job.kind,
                     "experiment": job.experiment, "log": saved.get("stderr"), "error": saved.get("error"),
                     "job_id": saved.get("job_id")})
    return rows


def format_status(rows: Sequence[Mapping[str, Any]]) -> str:
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    width = max((len(r["key"]) for r in rows), default=0)
    lines = [f"{r['state']:9s} {r['key']:{width}s}  {r['label']}" for r in rows]
    for r in rows:
        if r["state"] == "failed":
            lines.append(f"failed: {r['label']}: {r['error'] or 'no error recorded'}; log: {r['log'] or 'none'}")
    lines.append(", ".join(f"{counts[s]} {s}" for s in STATES))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Dry run: jobs, what is finished, GPU-hours
# --------------------------------------------------------------------------------------------

def estimate(jobs: Sequence[Any], *, root: str | Path | None, job_done: Callable[..., bool],
             table: costs_mod.CostTable | None = None) -> list[dict[str, Any]]:
    """For every job: experiment, key, label, finished?, estimated GPU-hours (None: unknown)."""
    table = table or costs_mod.load_table()
    rows = []
    for job in jobs:
        seconds = table.seconds(job.kind, job.cost, job.spec)
        rows.append({"experiment": job.experiment, "kind": job.kind, "key": job.key, "label": job.label,
                     "done": job_done(job, root=str(store.results_root(root))),
                     "gpu_hours": None if seconds is None else seconds / 3600})
    return rows


def format_dry_run(rows: Sequence[Mapping[str, Any]], *, chapters: Mapping[str, str] | None = None,
                   source: str = "") -> str:
    """One line per job, then GPU-hours per chapter (or experiment) and in all, still to run and all."""
    chapters = chapters or {}
    width = max((len(r["key"]) for r in rows), default=3)
    lines = [f"{'state':8s} {'GPU-h':>9s}  {'experiment':24s} {'key':{width}s}  label"]
    for r in rows:
        hours = "unknown" if r["gpu_hours"] is None else f"{r['gpu_hours']:.3f}"
        lines.append(f"{'done' if r['done'] else 'to run':8s} {hours:>9s}  {r['experiment']:24s} "
                     f"{r['key']:{width}s}  {r['label']}")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(chapters.get(r["experiment"], r["experiment"]), []).append(r)
    lines.append(f"GPU-hours (cost table: {source}):")
    for name, members in [*groups.items(), ("total", list(rows))]:
        known = [r["gpu_hours"] for r in members if r["gpu_hours"] is not None]
        todo = [r["gpu_hours"] for r in members if r["gpu_hours"] is not None and not r["done"]]
        unknown = sum(r["gpu_hours"] is None for r in members)
        lines.append(f"  {name:26s} {len(members):5d} jobs, {sum(r['done'] for r in members):5d} done, "
                     f"{sum(known):10.1f} GPU-h in all, {sum(todo):10.1f} to run"
                     + (f" ({unknown} jobs without an estimate)" if unknown else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Submission
# --------------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    record: Path
    submitted: list[str] = field(default_factory=list)     # keys submitted by this call
    skipped: list[str] = field(default_factory=list)       # done, or running in another sweep
    failed: list[str] = field(default_factory=list)        # local only: failed or blocked by a failed need


def run_sweep(jobs: Sequence[Any], resources: Resources, *, record: Path, root: str | Path | None = None,
              runner: JobRunner | None = None, max_iterations: int | None = None,
              poll_s: float = 1.0, out: Any = sys.stdout) -> SweepResult:
    """Submit every unfinished job of ``jobs``; locally also wait for them (see the module docstring)."""
    runner = runner or JobRunner()
    _, job_done = runner._functions()
    root_path = str(store.results_root(root))
    result = SweepResult(record)
    states = {r["key"]: r["state"] for r in job_states(jobs, record, root=root, job_done=job_done)}
    busy = {k for k, s in states.items() if s in ("running", "submitted")}
    finished = {k for k, s in states.items() if s == "done"}
    result.skipped = sorted(finished | busy)
    todo = [j for j in jobs if j.key not in finished | busy]
    print(f"sweep {record.name}: {len(jobs)} jobs, {len(finished)} done, {len(busy)} running elsewhere, "
          f"{len(todo)} to submit ({resources.executor}); record {record}", file=out, flush=True)
    if not todo:
        return result
    (record / "logs").mkdir(parents=True, exist_ok=True)
    by_key = {j.key: j for j in jobs}
    common = {"record": str(record), "root": root_path, "device": resources.device,
              "threads": resources.job_threads, "max_iterations": max_iterations}
    dispatch = _Dispatch(todo, by_key, finished, busy, resources, record, runner, common, result, out)
    if resources.executor == "slurm":
        _submit_slurm(dispatch)
    else:
        _run_local(dispatch, poll_s)
    return result


@dataclass
class _Dispatch:
    """What one sweep submits and where it reports: the unfinished jobs ``todo`` (all jobs by key in
    ``by_key``), the keys already ``finished`` or ``busy`` in another sweep, the runner and the
    keyword arguments ``common`` to every job, the ``result`` being filled and the stream ``out``."""

    todo: list[Any]
    by_key: Mapping[str, Any]
    finished: set[str]
    busy: set[str]
    resources: Resources
    record: Path
    runner: JobRunner
    common: Mapping[str, Any]
    result: SweepResult
    out: Any

    def submit(self, executor: Any, job: Any) -> Any:
        return executor.submit(self.runner, job, _needs(job, self.by_key), **self.common)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def _needs(job: Any, by_key: Mapping[str, Any]) -> list[Any]:
    return [by_key[n] for n in job.needs if n in by_key]


def _slurm_executor(resources: Resources, record: Path) -> submitit.SlurmExecutor:
    executor = submitit.SlurmExecutor(folder=record / "logs" / "%j", max_num_timeout=resources.max_requeue)
    params: dict[str, Any] = {"time": resources.timeout_min or 24 * 60, "nodes": 1, "ntasks_per_node": 1,
                              "array_parallelism": resources.array_parallelism, "signal_delay_s": 120,
                              "job_name": f"rs_sweep_{record.name}"}
    if resources.partition:
        params["partition"] = resources.partition
    if resources.gpus_per_job:
        params["gpus_per_node"] = resources.gpus_per_job
    if resources.cpus_per_job:
        params["cpus_per_task"] = resources.cpus_per_job
    executor.update_parameters(**params)
    return executor


def _submit_slurm(d: _Dispatch) -> None:
    """One array per wave; wave k + 1 depends (afterany) on the arrays of wave k, and a wave on the
    SLURM jobs of an earlier sweep that are still computing its needs."""
    executor = _slurm_executor(d.resources, d.record)
    previous: list[str] = []
    for number, wave in enumerate(waves(d.todo, d.finished | d.busy)):
        elsewhere = {JobRecord(d.record, d.by_key[n]).read().get("job_id")
                     for j in wave for n in j.needs if n in d.busy}
        after = previous + sorted(str(i) for i in elsewhere if i)
        executor.update_parameters(dependency=("afterany:" + ":".join(after)) if after else None)
        with executor.batch():
            submitted = [d.submit(executor, job) for job in wave]
        previous = sorted({j.job_id.split("_")[0] for j in submitted})
        for job, sj in zip(wave, submitted):
            JobRecord(d.record, job).update(state="submitted", executor="slurm", job_id=sj.job_id,
                                            stdout=str(sj.paths.stdout), stderr=str(sj.paths.stderr), error=None)
            d.result.submitted.append(job.key)
        d.say(f"wave {number}: {len(wave)} jobs as array {', '.join(previous)}")


def _run_local(d: _Dispatch, poll_s: float) -> None:
    """One slot per GPU (or CPU worker); a job enters a free slot once its needs are finished (in
    this sweep, or by the still-running jobs of an earlier one, ``busy``)."""
    resources, record, by_key, result = d.resources, d.record, d.by_key, d.result
    slots: list[tuple[int, ...]] = [(g,) for g in resources.gpus] or [()] * resources.cpu_workers
    executor = submitit.LocalExecutor(folder=record / "logs" / "%j", max_num_timeout=resources.max_requeue)
    _, job_done = d.runner._functions()
    pending, running = list(d.todo), {}
    done, bad, elsewhere = set(d.finished), set(), set(d.busy)
    while pending or running:
        for key in list(elsewhere):
            if job_done(by_key[key], root=d.common["root"]):
                elsewhere.discard(key)
                done.add(key)
            elif not _alive(JobRecord(record, by_key[key]).read(), record / "logs"):
                elsewhere.discard(key)
                bad.add(key)
        for slot, (job, sj) in list(running.items()):
            if sj.done():
                del running[slot]
                ok = JobRecord(record, job).read().get("state") == "done"
                (done if ok else bad).add(job.key)
                if not ok:
                    result.failed.append(job.key)
                d.say(f"{'finished' if ok else 'FAILED  '} {job.label}" + ("" if ok else f" (log: {sj.paths.stderr})"))
        for job in [j for j in pending if any(n in bad for n in j.needs)]:
            pending.remove(job)
            bad.add(job.key)
            result.failed.append(job.key)
            JobRecord(record, job).update(state="failed", error="a job it needs failed", executor="local")
            d.say(f"BLOCKED  {job.label} (a job it needs failed)")
        for slot in [s for s in range(len(slots)) if s not in running]:
            ready = next((j for j in pending if all(n in done or n not in by_key for n in j.needs)), None)
            if ready is None:
                break
            pending.remove(ready)
            gpus = slots[slot]
            executor.update_parameters(timeout_min=resources.timeout_min or 14 * 24 * 60,
                                       gpus_per_node=len(gpus), visible_gpus=gpus)
            sj = d.submit(executor, ready)
            JobRecord(record, ready).update(state="submitted", executor="local", job_id=sj.job_id,
                                            controller_pid=int(sj.job_id), host=socket.gethostname(),
                                            stdout=str(sj.paths.stdout), stderr=str(sj.paths.stderr), error=None)
            result.submitted.append(ready.key)
            running[slot] = (ready, sj)
            d.say(f"started  {ready.label} on {f'GPU {gpus[0]}' if gpus else f'CPU worker {slot}'}")
        if pending and not running and not elsewhere:     # nothing can start any more
            for job in pending:
                result.failed.append(job.key)
                JobRecord(record, job).update(state="failed", error="a job it needs did not finish", executor="local")
            pending.clear()
        if running or (pending and elsewhere):
            time.sleep(poll_s)


def write_request(record: Path, experiments: Sequence[str], profile: str, overrides: Mapping[str, Any] | None,
                  resources: Resources) -> None:
    store.atomic_write_json(record / "sweep.json", {"experiments": sorted(experiments), "profile": profile,
                                                    "overrides": dict(overrides or {}),
                                                    "resources": dataclasses.asdict(resources), "updated": _now()})
