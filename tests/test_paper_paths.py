"""Every distinct paper-scale code path runs for real on CPU before a GPU sees it.

Each (method, model, dataset) of the paper profiles trains for 2 optimiser steps at batch 2 and
validates one batch (``run_training(..., max_iterations=2)``) on generated images of the paper
dataset's shape and classes, written in the dataset's real on-disk format
(``data.write_stand_in``); the certification path certifies one input at a small n, and the
Backward Smoothing test protocols attack one test image.  A paper run must not die of a shape,
config or dtype error on its first GPU.  (AMP needs CUDA: ``benchmarks/gpu_check.py`` covers it.)

The paths are listed from the chapters' presets (the functions the notebooks call) plus the
models the Backward Smoothing paper reports beside ResNet-18 (WRN-34-10; ResNet-50 on Tiny
ImageNet; CIFAR-100).  The three heaviest (see ``SLOW``) are marked ``slow``; they run in
``make test`` too (deselect with ``-m "not slow"``).  AutoAttack and RayS, the other test
protocols, are left out: on one image they cost minutes of CPU.
"""

import math

import pytest
import torch

from rs_lib import data, profiles, smoothing
from rs_lib.presets import PRESETS
from rs_lib.presets import backward_smoothing as bs
from rs_lib.presets import smoothing as rs
from rs_lib.train import run_training

DATASETS = ("cifar10", "cifar100", "mnist", "tiny-imagenet")
# Measured on one CPU thread (process time): WRN-34-10 23 s, SmoothAdv on ResNet-110 7.5 s, ResNet-50
# on Tiny ImageNet 6 s; every other path 0.2-5 s (about 65 s together, most of it the per-epoch PGD-20
# validation of the Backward Smoothing runs).
SLOW = {("backward_smoothing", "wrn34_10", "cifar10"), ("backward_smoothing", "resnet50", "tiny-imagenet"),
        ("smoothadv_pgd", "resnet110", "cifar10")}


def _paper_training_paths() -> dict[tuple[str, str, str], object]:
    """One TrainConfig per distinct (method, model, dataset) that a paper-profile notebook trains
    (AMP runs excluded: CPU only), plus the Backward Smoothing paper's other models."""
    found = []
    for experiment in sorted(PRESETS):
        settings = profiles.resolve(experiment, "paper")
        if experiment.startswith("bs_"):
            methods = {m for knob, value in settings.as_dict().items() if knob.endswith("_methods") for m in value}
            found += [bs.train_config(settings, method) for method in sorted(methods)]
        elif experiment == "noise_training":
            found += [settings.train_config(method="standard")]
            found += [settings.train_config(method="gaussian", method_params={"sigma": s})
                      for s in settings.train_sigmas]
        else:
            for runs in (rs.comparison_runs, rs.ablation_runs, rs.vanilla_runs):
                try:
                    found += [row["config"] for row in runs(settings)]
                except AttributeError:   # the experiment has no such runs (no knob for them)
                    pass
    paths = {}
    for cfg in found:
        paths.setdefault((cfg.method, cfg.model, cfg.dataset), cfg)
    base = paths["backward_smoothing", "resnet18", "cifar10"]
    for model, dataset in (("wrn34_10", "cifar10"), ("resnet50", "tiny-imagenet"), ("resnet18", "cifar100")):
        paths.setdefault(("backward_smoothing", model, dataset), base.replace(model=model, dataset=dataset))
    return paths


PATHS = _paper_training_paths()


@pytest.fixture(scope="module")
def stand_in_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-data")
    for name in DATASETS:
        data.write_stand_in(name, root, n_train=40, n_test=10)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RS_DATA", str(root))
        yield root


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    return tmp_path_factory.mktemp("paper-runs")


def _smoke_train(cfg, root):
    return run_training(cfg.replace(batch_size=2), root=root, device="cpu", progress=False, max_iterations=2)


def test_the_paper_profiles_cover_both_chapters_and_their_datasets():
    models = {(m, d) for _, m, d in PATHS}
    assert {("resnet18", "cifar10"), ("resnet110", "cifar10"), ("lenet", "mnist"), ("wrn34_10", "cifar10"),
            ("resnet50", "tiny-imagenet")} <= models
    methods = {m for m, _, _ in PATHS}
    assert {"backward_smoothing", "trades", "pgd_at", "fast_at", "gradalign", "gaussian", "smoothadv_pgd",
            "smoothmix", "macer", "consistency"} <= methods


@pytest.mark.parametrize("key", [pytest.param(k, id="-".join(k), marks=[pytest.mark.slow] if k in SLOW else [])
                                 for k in sorted(PATHS)])
def test_paper_training_path_runs_two_iterations(key, stand_in_data, store_root):
    cfg = PATHS[key]
    run = _smoke_train(cfg, store_root)
    iters = run.iterations()
    assert list(iters["iter"]) == [0, 1] and all(math.isfinite(v) for v in iters["loss"])
    assert run.summary["max_iterations"] == 2
    info = data.dataset_info(cfg.dataset)
    model = run.load_model("last")
    x = torch.rand(2, *info.shape)
    logits = model(x)
    assert logits.shape == (2, info.num_classes) and torch.isfinite(logits).all()
    assert all(math.isfinite(v) for v in run.epochs().filter(like="val_").iloc[0])


def _bs_protocols():
    protocols = set()
    for experiment in PRESETS:
        if experiment.startswith("bs_"):
            settings = profiles.resolve(experiment, "paper")
            protocols |= set(getattr(settings, "test_protocols", {}) or {})
            if getattr(settings, "test_protocol", None):
                protocols.add(settings.test_protocol)
    return sorted(protocols)


@pytest.mark.parametrize("protocol", _bs_protocols())
def test_backward_smoothing_test_protocol_attacks_one_image(protocol, stand_in_data, store_root):
    run = _smoke_train(PATHS["backward_smoothing", "resnet18", "cifar10"], store_root)
    result = bs.robustness(run, protocol=protocol, n_test=1, device="cpu")
    assert 0.0 <= result["robust"] <= result["clean"] <= 1.0


@pytest.mark.parametrize("key", [("gaussian", "resnet110", "cifar10"), ("smoothmix", "lenet", "mnist")])
def test_paper_certification_path_certifies_one_input(key, stand_in_data, store_root):
    experiment = "rs_comparison" if key[2] == "cifar10" else "rs_smoothmix_ablations"
    cert = rs.cert_kwargs(profiles.resolve(experiment, "paper"))
    assert cert["n"] == 100_000
    run = _smoke_train(PATHS[key], store_root)
    sigma = run.config.method_params["sigma"]
    df = smoothing.certify_run(run, n_points=1, n0=cert["n0"], n=200, alpha=cert["alpha"], sigma=sigma,
                               batch_size=100, device="cpu", progress=False)
    assert len(df) == 1 and (df["radius"] >= 0).all()
