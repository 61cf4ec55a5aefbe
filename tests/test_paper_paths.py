"""Every distinct paper-scale code path runs for real on CPU before a GPU sees it.

Through the job function the sweep dispatches, ``plan.run_job(job, max_iterations=2)``: each
(method, model, dataset) that a paper-profile plan trains runs 2 optimiser steps at batch 2
(``-p batch_size 2``) and validates one batch; each kind of evaluation job (robustness per test
protocol, empirical attacks, curvature, interpolation, noisy accuracy) runs on its two images; each
certification (shards, then the merge into the file the notebook reads) certifies one input per
shard at a small n.  The data are generated images of the paper dataset's shape and classes,
written in its real on-disk format (``data.write_stand_in``), in a scratch store.  A paper run must
not die of a shape, config or dtype error on its first GPU.  AMP needs CUDA:
``benchmarks/gpu_check.py`` covers it.

Besides the paper profiles' own runs, the models the Backward Smoothing paper reports beside
ResNet-18 (``-p model wrn34_10``; ``-p model resnet50 -p dataset tiny-imagenet``; ``-p dataset
cifar100``) train their Backward Smoothing run.  The heaviest paths (``SLOW``, measured on one CPU
thread) are marked ``slow``: they run in ``make test`` too (``-m "not slow"`` leaves them out).
"""

import math
import os
import tempfile
from contextlib import contextmanager

import pytest

from rs_lib import data, plan

DATASETS = ("cifar10", "cifar100", "mnist", "tiny-imagenet")
SMALL = {"batch_size": 2}
EXTRA = ({"model": "wrn34_10"}, {"model": "resnet50", "dataset": "tiny-imagenet"}, {"dataset": "cifar100"})
# AutoAttack (standard) and RayS on two images cost minutes of one CPU thread; their code runs in
# tests/test_attacks.py / test_evaluate.py at small scale.
LEFT_OUT = {("evaluate", "robustness", "autoattack_standard"), ("evaluate", "robustness", "rays")}


def _path(job: plan.Job) -> tuple[str, ...] | None:
    """The code path a job exercises (None: AMP, which needs CUDA)."""
    c = job.cost
    if c.get("amp"):
        return None
    if job.kind == "train":
        return ("train", c["method"], c["model"], c["dataset"])
    if job.kind == "evaluate":
        return ("evaluate", job.spec["function"], job.spec["kwargs"].get("protocol", ""), c["model"], c["dataset"])
    if job.kind == "certify_merge":
        return ("certify", c["model"], c["dataset"])
    return None   # shards run as the needs of their merge


# The stand-in data, written once per test session (the plans' keys hold the data's fingerprint,
# and Tiny ImageNet has no published one to fall back on).
_DATA = tempfile.TemporaryDirectory(prefix="rs-paper-data-")
for _name in DATASETS:
    data.write_stand_in(_name, _DATA.name, n_train=40, n_test=16)   # >= the 11 certification shards


@contextmanager
def _stand_in_data():
    old = os.environ.get("RS_DATA")
    os.environ["RS_DATA"] = _DATA.name
    try:
        yield _DATA.name
    finally:
        if old is None:
            del os.environ["RS_DATA"]
        else:
            os.environ["RS_DATA"] = old


def _representatives() -> dict[tuple[str, ...], tuple[str, tuple, int]]:
    """Per code path: (experiment, overrides, index of its first job in that plan)."""
    with _stand_in_data():
        return _first_jobs()


def _first_jobs() -> dict[tuple[str, ...], tuple[str, tuple, int]]:
    reps: dict[tuple[str, ...], tuple[str, tuple, int]] = {}
    for experiment in plan.experiments():
        for i, job in enumerate(plan.plan(experiment, "paper", **SMALL)):
            path = _path(job)
            if path is not None and path[:3] not in LEFT_OUT:
                reps.setdefault(path, (experiment, tuple(SMALL.items()), i))
    for extra in EXTRA:
        overrides = tuple({**SMALL, **extra}.items())
        for i, job in enumerate(plan.plan("bs_comparison", "paper", **dict(overrides))):
            if job.kind == "train" and job.cost["method"] == "backward_smoothing" and not job.cost["amp"]:
                reps.setdefault(_path(job), ("bs_comparison", overrides, i))
                break
    return reps


REPS = _representatives()
# Measured (process time, one thread): WRN-34-10 23 s, SmoothAdv on ResNet-110 7.5 s, ResNet-50 on Tiny
# ImageNet 6 s, the Hessian along the 6 kept checkpoints ~20 s; the other paths 0.2-5 s, most of it
# the per-epoch PGD-20 validation of the Backward Smoothing runs.
SLOW = {("train", "backward_smoothing", "wrn34_10", "cifar10"), ("train", "smoothadv_pgd", "resnet110", "cifar10"),
        ("train", "backward_smoothing", "resnet50", "tiny-imagenet"),
        ("evaluate", "curvature", "", "resnet18", "cifar10")}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The stand-in data in $RS_DATA and a scratch store."""
    with _stand_in_data():
        yield {"store": tmp_path_factory.mktemp("paper-runs"), "plans": {}}


def _run_with_needs(job: plan.Job, jobs: dict[str, plan.Job], store) -> None:
    for key in job.needs:
        _run_with_needs(jobs[key], jobs, store)
    if not plan.job_done(job, root=store):
        plan.run_job(job, device="cpu", root=store, progress=False, max_iterations=2)


def test_the_paper_plans_cover_both_chapters_their_models_and_job_kinds():
    models = {(p[-2], p[-1]) for p in REPS}
    assert {("resnet18", "cifar10"), ("resnet110", "cifar10"), ("lenet", "mnist"), ("wrn34_10", "cifar10"),
            ("resnet50", "tiny-imagenet"), ("resnet18", "cifar100")} <= models
    trained = {p[1] for p in REPS if p[0] == "train"}
    assert {"backward_smoothing", "trades", "pgd_at", "fast_at", "gradalign", "gaussian", "smoothadv_pgd",
            "smoothmix", "macer", "consistency", "stability", "standard"} <= trained
    assert {p[1] for p in REPS if p[0] == "evaluate"} >= {"robustness", "empirical", "curvature"}
    assert {p for p in REPS if p[0] == "certify"} == {("certify", "resnet110", "cifar10"),
                                                      ("certify", "lenet", "mnist")}


@pytest.mark.parametrize("path", [pytest.param(p, id="-".join(x for x in p if x),
                                               marks=[pytest.mark.slow] if p in SLOW else [])
                                  for p in sorted(REPS)])
def test_paper_code_path_runs_through_run_job(path, scratch):
    experiment, overrides, index = REPS[path]
    if (experiment, overrides) not in scratch["plans"]:
        scratch["plans"][experiment, overrides] = plan.plan(experiment, "paper", **dict(overrides))
    jobs = scratch["plans"][experiment, overrides]
    job = jobs[index]
    assert _path(job) == path
    by_key = {j.key: j for j in jobs}
    for key in job.needs:
        _run_with_needs(by_key[key], by_key, scratch["store"])
    run_dir = scratch["store"] / job.store / job.run_key
    before = set(run_dir.iterdir()) if run_dir.is_dir() else set()
    plan.run_job(job, device="cpu", root=scratch["store"], progress=False, max_iterations=2)
    run = plan._stored_run(by_key[job.run_key], scratch["store"])
    assert run.summary["max_iterations"] == 2
    assert all(math.isfinite(v) for v in run.iterations()["loss"]) and len(run.iterations()) == 2
    if job.kind != "train":   # its (small) result was written beside the run
        assert {p.name for p in set(run_dir.iterdir()) - before if not p.name.startswith(".")}
    assert not plan.job_done(job, root=scratch["store"]) or job.kind == "train"   # small != the real result
