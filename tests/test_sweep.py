"""The sweep: a plan dispatched through submitit's local executor (real processes) and, without a
cluster, its SLURM path (the sbatch scripts submitit writes, requeue through ``checkpoint()``).

The jobs here are a small plan built in the test (``rs_lib.plan.Job``s of real TrainConfigs on
synthetic data, run by real ``run_training`` and a cached evaluation); the tests at the end run
the real plan of two smoke experiments and render their notebooks read-only.
"""

import json
import os
import shutil
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit
import torch

from rs_lib import costs, lock, plan, store, sweep, train
from rs_lib.__main__ import main
from rs_lib.plan import Job
from rs_lib.train import Control, TrainConfig, run_training

# submitit pickles the runner with cloudpickle: ship this module's plan by value (the job
# processes do not have tests/ on their path).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TINY = dict(dataset="synthetic", model="small_cnn", epochs=2, batch_size=64, n_train=128, n_val=64,
            lr=0.05, schedule="constant", augment=False)
STORE = "sweep_test"


def make_job(kind: str, experiment: str, store_: str, key: str, needs: tuple[str, ...], label: str,
             spec: dict[str, Any], cost: dict[str, Any] | None = None) -> Job:
    return Job(kind, experiment, store_, key, tuple(needs), label, spec, cost or {})


def train_job(seed: int, experiment: str = "exp_a", **changes: Any) -> Job:
    cfg = TrainConfig(**{**TINY, "seed": seed, **changes})
    key = train.run_dir_for(cfg, experiment=STORE).path.name
    return make_job("train", experiment, STORE, key, (), f"train seed {seed}", {"config": cfg.to_dict()},
               {"model": cfg.model, "method": cfg.method, "dataset": cfg.dataset, "iterations": 2 * 2,
                "batch_size": cfg.batch_size})


def eval_job(trained: Job, *, fail: bool = False) -> Job:
    params = {"n": 32, "fail": fail}
    key = f"{trained.key}/mean_weight-{store.config_hash(params)}.json"
    return make_job("evaluate", trained.experiment, STORE, key, (trained.key,), f"evaluate {trained.label}",
               {"config": trained.spec["config"], "params": params})


def _run(job: Job, root: str):
    return run_training(TrainConfig(**job.spec["config"]), experiment=job.store, root=root, progress=False)


def fake_run_job(job: Job, *, device: str = "auto", root: str | None = None, progress: bool = True,
                 max_iterations: int | None = None) -> None:
    """The plan's job function: train, or a cached evaluation of the stored run."""
    if job.spec.get("params", {}).get("fail"):
        raise RuntimeError("this evaluation fails on purpose")
    run = _run(job, root)
    if job.kind == "evaluate":
        model = run.load_model("last")
        run.cached("mean_weight", job.spec["params"],
                   lambda: float(sum(p.sum() for p in model.parameters())))


def fake_job_done(job: Job, *, root: str | None = None) -> bool:
    path = store.results_root(root) / job.store / job.key
    return (path / store.SUMMARY).exists() if job.kind == "train" else path.exists()


RUNNER = sweep.JobRunner(fake_run_job, fake_job_done)


def small_plan() -> list[Job]:
    a0, a1, b0 = train_job(0), train_job(1), train_job(2, experiment="exp_b")
    return sweep.ordered([a0, a1, eval_job(a0), b0, eval_job(b0)])


@pytest.fixture
def root(tmp_path, monkeypatch):
    path = tmp_path / "results"
    monkeypatch.setenv("RS_RESULTS", str(path))
    return path


def record_of(root: Path) -> Path:
    return sweep.record_dir(root, ["exp_a", "exp_b"], "smoke", {})


# -- local executor --------------------------------------------------------------------------------

def test_a_failed_job_blocks_its_dependents_and_status_shows_its_log(root):
    a0 = train_job(0)
    broken = make_job("evaluate", "exp_a", STORE, f"{a0.key}/broken.json", (a0.key,), "broken evaluation",
                 {"config": a0.spec["config"], "params": {"fail": True}})
    after = make_job("evaluate", "exp_a", STORE, f"{a0.key}/after.json", (broken.key,), "after the broken one",
                {"config": a0.spec["config"], "params": {"n": 1}})
    jobs = [a0, broken, after]
    _run(a0, str(root))            # trained already: only the broken evaluation runs as a job
    result = sweep.run_sweep(jobs, sweep.Resources(cpu_workers=1, threads=1), record=record_of(root), root=root,
                             runner=RUNNER, poll_s=0.2)
    assert sorted(result.failed) == sorted([broken.key, after.key])
    rows = {r["key"]: r for r in sweep.job_states(jobs, record_of(root), root=root, job_done=fake_job_done)}
    assert rows[a0.key]["state"] == "done"
    assert rows[broken.key]["state"] == "failed" and "fails on purpose" in rows[broken.key]["error"]
    log = Path(rows[broken.key]["log"])
    assert log.is_file() and "fails on purpose" in log.read_text()
    assert rows[after.key]["state"] == "failed" and "needs failed" in rows[after.key]["error"]
    text = sweep.format_status(list(rows.values()))
    assert f"log: {log}" in text and "1 done, 0 running, 0 submitted, 2 failed, 0 missing" in text


def test_a_job_still_running_in_an_earlier_sweep_is_not_resubmitted_and_its_dependents_wait(root):
    a0 = train_job(0)
    evaluation = eval_job(a0)
    # an earlier sweep's job is computing a0: this process, on this host (so it is alive)
    sweep.JobRecord(record_of(root), a0).update(state="running", executor="local", host=socket.gethostname(),
                                                pid=os.getpid())
    def train_once_the_sweep_waits():
        while not (record_of(root) / "logs").exists():     # run_sweep makes it just before its loop
            time.sleep(0.05)
        _run(a0, str(root))

    trainer = threading.Thread(target=train_once_the_sweep_waits)
    trainer.start()
    try:
        result = sweep.run_sweep([a0, evaluation], sweep.Resources(cpu_workers=1, threads=1), record=record_of(root),
                                 root=root, runner=RUNNER, poll_s=0.2)
    finally:
        trainer.join()
    assert result.submitted == [evaluation.key] and result.skipped == [a0.key] and result.failed == []
    assert fake_job_done(evaluation, root=root)


def test_local_executor_resources_are_checked_before_anything_is_submitted():
    with pytest.raises(ValueError, match="--gpus names GPU 7, but this machine has"):
        sweep.Resources(gpus=(0, 7) if torch.cuda.device_count() else (7,))
    with pytest.raises(ValueError, match="--partition is a SLURM option"):
        sweep.Resources(cpu_workers=1, partition="gpu")
    with pytest.raises(ValueError, match="needs --gpus 0,1,... .* or --cpu-workers N"):
        sweep.Resources()
    with pytest.raises(ValueError, match="local-executor options"):
        sweep.Resources(executor="slurm", gpus=(0,))
    with pytest.raises(ValueError, match="executor must be one of"):
        sweep.Resources(executor="pbs")
    if shutil.which("sbatch") is None:
        with pytest.raises(ValueError, match="--executor slurm needs sbatch and srun on PATH"):
            sweep.Resources(executor="slurm")
    with pytest.raises(ValueError, match="comma-separated GPU indices"):
        sweep.parse_gpus("0,one")
    assert sweep.Resources(cpu_workers=os.cpu_count() or 1).job_threads == 1    # cores shared out
    assert sweep.Resources(cpu_workers=1, threads=3).job_threads == 3


@pytest.mark.parametrize("argv, message", [
    (["sweep", "x", "--executor", "pbs"], "--executor must be one of"),
    (["sweep", "x", "--partition", "gpu", "--cpu-workers", "1"], "--partition is a SLURM option"),
    (["sweep", "x", "--gpus", "99"], "--gpus names GPU 99"),
    (["sweep", "x", "--cpu-workers", "1", "--gpus-per-job", "2"], "SLURM options"),
    (["sweep", "x", "--profile", "huge"], "--profile must be one of"),
    (["sweep", "no_such_experiment", "--cpu-workers", "1"], "experiment must be one of"),
    (["sweep", "--chapter", "optics", "--cpu-workers", "1"], "--chapter must be one of"),
    (["sweep", "--all", "noise_training", "--cpu-workers", "1"], "select experiments one way"),
    (["sweep", "noise_training", "--profile", "smoke", "-p", "epoch=3", "--cpu-workers", "1"], "epochs"),
    (["sweep", "noise_training", "--dry-run", "--status"], "not both"),
])
def test_sweep_cli_rejects_bad_flags_with_exit_2(argv, message, capsys, root):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (root / sweep.RECORDS).exists()                 # nothing recorded, nothing submitted


# -- SLURM, without a cluster: fake sbatch / sacct on PATH ----------------------------------------

FAKE_SBATCH = """#!/bin/bash
n=$(( $(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 1000) + 1 ))
echo $n > "$FAKE_SLURM/counter"
cp "$1" "$FAKE_SLURM/sbatch_$n.sh"
echo "Submitted batch job $n"
"""
# sacct ... -j ID -j ID: every asked-for job (and array task) in state $FAKE_SACCT_STATE
FAKE_SACCT = """#!/bin/bash
echo "JobID|State|NodeList"
while [ $# -gt 0 ]; do
  if [ "$1" = "-j" ]; then
    echo "$2|${FAKE_SACCT_STATE:-RUNNING}|node1"; echo "$2_[0-99]|${FAKE_SACCT_STATE:-RUNNING}|node1"; shift
  fi
  shift
done
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/bash\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(tmp_path))
    return tmp_path


def test_slurm_sweep_submits_one_array_per_wave_with_its_parameters(root, fake_slurm, monkeypatch):
    jobs = small_plan()
    resources = sweep.Resources(executor="slurm", partition="gpu", gpus_per_job=1, cpus_per_job=4,
                                timeout_min=90, array_parallelism=2)
    result = sweep.run_sweep(jobs, resources, record=record_of(root), root=root, runner=RUNNER)
    assert sorted(result.submitted) == sorted(j.key for j in jobs)
    wave0, wave1 = (fake_slurm / "sbatch_1001.sh").read_text(), (fake_slurm / "sbatch_1002.sh").read_text()
    assert not (fake_slurm / "sbatch_1003.sh").exists()
    for script in (wave0, wave1):
        for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=4",
                     "#SBATCH --time=90", "#SBATCH --signal=USR2@120", "#SBATCH --open-mode=append"):
            assert line in script
    assert "#SBATCH --array=0-2%2" in wave0 and "--dependency" not in wave0      # three trainings
    assert "#SBATCH --array=0-1%2" in wave1 and "#SBATCH --dependency=afterany:1001" in wave1
    records = {r["key"]: r for r in sweep.job_states(jobs, record_of(root), root=root, job_done=fake_job_done)}
    assert {r["state"] for r in records.values()} == {"submitted"}
    assert sorted(r["job_id"] for r in records.values()) == ["1001_0", "1001_1", "1001_2", "1002_0", "1002_1"]
    # jobs still queued or running: an identical sweep submits nothing
    assert sweep.run_sweep(jobs, resources, record=record_of(root), root=root, runner=RUNNER).submitted == []
    # the scheduler says they failed (e.g. cancelled before they ran): they are failed and resubmitted
    monkeypatch.setenv("FAKE_SACCT_STATE", "CANCELLED")
    states = sweep.job_states(jobs, record_of(root), root=root, job_done=fake_job_done)
    assert {s["state"] for s in states} == {"failed"}
    assert len(sweep.run_sweep(jobs, resources, record=record_of(root), root=root, runner=RUNNER).submitted) == 5


class Preempted(Exception):
    pass


def test_requeue_through_checkpoint_resumes_the_same_job_from_the_store(root, fake_slurm, tmp_path):
    job = train_job(5, epochs=3)
    sweep.run_sweep([job], sweep.Resources(executor="slurm"), record=record_of(root), root=root, runner=RUNNER)
    pickled = next((record_of(root) / "logs").glob("*/*_submitted.pkl"))
    submission = submitit.helpers.DelayedSubmission.load(pickled)   # what the SLURM job would run
    assert isinstance(submission.function, sweep.JobRunner) and submission.args[0] == job

    def preempt(epoch, row):
        if epoch == 0:
            raise Preempted

    with pytest.raises(Preempted):        # the job is stopped after one epoch (checkpoint stored)
        run_training(TrainConfig(**job.spec["config"]), experiment=STORE, root=root, progress=False,
                     control=Control(on_epoch_end=preempt))
    requeued = submission.function.checkpoint(*submission.args, **submission.kwargs)   # submitit on USR2
    assert isinstance(requeued, submitit.helpers.DelayedSubmission)
    assert requeued.function is submission.function
    assert requeued.args == submission.args and requeued.kwargs == submission.kwargs
    assert requeued.result() == job.key
    resumed = store.results_root(root) / STORE / job.key
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [0, 1, 2]
    alone = run_training(TrainConfig(**job.spec["config"]), experiment=STORE, root=tmp_path / "alone",
                         progress=False)
    ours = torch.load(resumed / "checkpoint_last.pt", weights_only=False)["model"]
    theirs = torch.load(alone.dir.file("checkpoint_last.pt"), weights_only=False)["model"]
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


# -- dry run and cost table ------------------------------------------------------------------------

def cost_job(key: str, experiment: str, **cost: Any) -> Job:
    return make_job("train", experiment, STORE, key, (), key, {}, cost)


def test_dry_run_estimates_gpu_hours_from_the_papers_and_the_gpu_check(root, tmp_path):
    table2 = cost_job("fast_at", "bs_comparison", model="resnet18", method="fast_at", dataset="cifar10",
                      iterations=100 * 391, batch_size=128)
    certify = make_job("certify_shard", "rs_certified_curves", STORE, "cert", ("x",), "cert", {},
                  {"model": "resnet110", "dataset": "cifar10", "images": 500, "samples": 500 * 100_100})
    unknown = cost_job("odd", "bs_comparison", model="resnet18")
    rows = sweep.estimate([table2, certify, unknown], root=root, job_done=fake_job_done, table=costs.CostTable())
    assert rows[0]["gpu_hours"] == pytest.approx(82 / 60)                 # BS Table 2: Fast AT, 82 min
    assert rows[1]["gpu_hours"] == pytest.approx(500 * 15 / 3600)        # Cohen et al.: ~15 s per input
    assert rows[2]["gpu_hours"] is None
    text = sweep.format_dry_run(rows, chapters={"bs_comparison": "backward_smoothing",
                                                "rs_certified_curves": "smoothing"}, source="test")
    assert "unknown" in text.splitlines()[3]
    assert "backward_smoothing" in text and "(1 jobs without an estimate)" in text
    assert f"{82 / 60 + 500 * 15 / 3600:10.1f} GPU-h in all" in text.splitlines()[-1]
    check = tmp_path / "gpu_check.json"
    check.write_text(json.dumps({"device": "H100", "train": {"resnet18/fast_at": {"s_per_iter": 0.05, "batch_size": 256}},
                                 "certify": {"resnet110": {"samples_per_s": 50_000.0, "batch_size": 4000}}}))
    measured = costs.load_table(check)
    assert measured.seconds("train", table2.cost) == pytest.approx(0.05 * 128 / 256 * 39_100)
    assert measured.seconds("certify_shard", certify.cost) == pytest.approx(500 * 100_100 / 50_000)
    assert "H100" in measured.source
    check.write_text("{not json")
    with pytest.raises(ValueError, match="not a GPU check file"):
        costs.load_table(check)


def test_estimates_of_other_models_scale_the_fitted_pass_cost_by_flops():
    table = costs.CostTable()
    base = {"dataset": "cifar10", "iterations": 1000, "batch_size": 128}
    gaussian = table.train_seconds({**base, "model": "resnet18", "method": "gaussian"})
    wide = table.train_seconds({**base, "model": "wrn34_10", "method": "gaussian"})
    assert wide / gaussian == pytest.approx(costs.relative_flops("wrn34_10", "cifar10", "resnet18", "cifar10"))
    assert gaussian == pytest.approx(1000 * costs.pass_seconds() * 3)    # forward + 2 x backward
    # the job's own hyperparameters count: SmoothAdv with more noise samples m costs more
    smoothadv = {**base, "model": "resnet110", "method": "smoothadv_pgd"}
    assert table.seconds("train", smoothadv, {"config": {"method_params": {"num_noise": 8}}}) > \
        table.seconds("train", smoothadv, {"config": {"method_params": {"num_noise": 1}}})
    pgd = {"model": "resnet18", "dataset": "cifar10", "images": 128, "samples": 0}
    assert table.seconds("evaluate", pgd, {"kwargs": {"protocol": "pgd20_bs"}}) == \
        pytest.approx(61 * costs.pass_seconds())
    assert table.seconds("evaluate", pgd, {"kwargs": {"protocol": "autoattack_standard"}}) is None
    assert table.seconds("evaluate", {**pgd, "protocol": "pgd100_bs"}) == pytest.approx(301 * costs.pass_seconds())


def test_waves_follow_the_longest_chain_of_unfinished_needs():
    a, b = train_job(0), train_job(1)
    ea, eb = eval_job(a), eval_job(b)
    merge = make_job("certify_merge", "exp_a", STORE, "merge", (ea.key, eb.key), "merge", {})
    assert [[j.key for j in w] for w in sweep.waves([merge, ea, eb, a, b], finished=())] == \
        [[a.key, b.key], [ea.key, eb.key], ["merge"]]
    assert [[j.key for j in w] for w in sweep.waves([merge, ea, eb, a, b], finished={a.key, ea.key})] == \
        [[b.key], [eb.key], ["merge"]]
    cycle = [make_job("train", "e", STORE, "x", ("y",), "x", {}), make_job("train", "e", STORE, "y", ("x",), "y", {})]
    with pytest.raises(ValueError, match="dependency cycle"):
        sweep.ordered(cycle)


# -- the real plan ---------------------------------------------------------------------------------

SMOKE_EXPERIMENTS = ["noise_training", "bs_hessian"]


def test_real_plan_smoke_sweep_then_read_only_notebooks(root, tmp_path, capsys):
    from rs_lib import execute

    argv = ["sweep", *SMOKE_EXPERIMENTS, "--profile", "smoke", "--cpu-workers", "2", "--threads", "1"]
    assert main(argv) == 0
    jobs = sweep.collect(SMOKE_EXPERIMENTS, "smoke")
    assert {j.kind for j in jobs} == {"train", "evaluate"} and all(plan.job_done(j) for j in jobs)
    # every job ran in a process of its own, and after the jobs it needs had ended
    spans = {j.key: sweep.JobRecord(sweep.record_dir(root, SMOKE_EXPERIMENTS, "smoke", {}), j).read() for j in jobs}
    assert len({s["pid"] for s in spans.values()} | {os.getpid()}) == len(jobs) + 1
    assert all(spans[j.key]["started"] >= spans[n]["ended"] for j in jobs for n in j.needs)
    capsys.readouterr()
    assert main(argv) == 0
    assert "submitted 0 jobs" in capsys.readouterr().out
    assert main(["sweep", *SMOKE_EXPERIMENTS, "--profile", "smoke", "--status"]) == 0
    assert " 0 missing" in capsys.readouterr().out
    for name in SMOKE_EXPERIMENTS:
        execute.execute_notebook(name, profile="smoke", output_dir=tmp_path / "executed", progress=False,
                                 threads=1, read_only=True)


def test_read_only_notebook_without_a_sweep_names_the_sweep_command(root, tmp_path):
    from rs_lib import execute

    with pytest.raises(lock.MissingResultError, match="sweep noise_training --profile smoke"):
        execute.execute_notebook("noise_training", profile="smoke", output_dir=tmp_path, progress=False,
                                 threads=1, read_only=True)
    assert not (root / "noise_training").exists() or not any((root / "noise_training").rglob("summary.json"))


def exit_like_submitit_after_requeue(job, **kwargs):
    raise SystemExit(-1)       # what submitit's USR2 handler does once it has requeued the job


def test_a_job_exiting_for_its_requeue_is_recorded_as_submitted_not_failed(root):
    job = train_job(0)
    runner = sweep.JobRunner(exit_like_submitit_after_requeue, fake_job_done)
    with pytest.raises(SystemExit):
        runner(job, [], record=str(record_of(root)), root=str(root), device="cpu")
    assert sweep.JobRecord(record_of(root), job).read()["state"] == "submitted"
    broken = sweep.JobRunner(lambda job, **kwargs: 1 / 0, fake_job_done)
    with pytest.raises(ZeroDivisionError):
        broken(job, [], record=str(record_of(root)), root=str(root), device="cpu")
    assert sweep.JobRecord(record_of(root), job).read()["error"] == "ZeroDivisionError: division by zero"
