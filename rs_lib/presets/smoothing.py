"""Randomized-smoothing chapters (SmoothAdv, SmoothMix): presets of the four ``rs_*`` notebooks.

| experiment | notebook | paper figures / tables |
|---|---|---|
| ``rs_certified_curves`` | certified accuracy vs radius per sigma, envelope | Cohen / SmoothAdv Fig. 1 |
| ``rs_comparison`` | Gaussian, Stability, SmoothAdv, MACER, Consistency, SmoothMix | SmoothMix Tables 1-3, SmoothAdv Tables 2-4 |
| ``rs_smoothadv_attacks`` | empirical vs certified, m_test, n, Stein, vanilla PGD | SmoothAdv Fig. 3/7, 8, 9, 4 |
| ``rs_smoothmix_ablations`` | eta, (alpha, T), eps, m; interpolation; mixing ratios | SmoothMix Tables 6-9, Fig. 2, 5 |

Every notebook trains through :func:`model_config` into the run store :data:`STORE`, so a model
that two notebooks need (the Gaussian models, SmoothMix at the ablation's sigma) has one
``TrainConfig``, one hash and is trained once.  A model is a *spec*,
``{"method": name, "paper_row": row of the paper table, "sigmas": {sigma: hyperparameters}}``, plus
optionally ``"training"``: loop settings of that model's own recipe (MACER's CIFAR-10 rows);
the ``models`` knob holds the specs of a profile, keyed by the label the book prints.

Profiles:

* ``smoke``: synthetic 28x28 data, LeNet, one epoch of 128 images, 8 certified points at n = 100.
* ``cpu``: Fashion-MNIST, LeNet, 3 epochs of 10,000 training images, sigma in {0.25, 0.5, 1.0};
  CERTIFY with n0 = 100, n = 1,000, alpha = 0.001 on 120 test points (every 83rd), which caps the
  certifiable radius at 2.46 sigma (n = 100,000: 3.81 sigma).  Attacks and methods are scaled down
  (T = 2, m = 1-4); see each experiment.  Cost: the budget table of ``book/smoothadv.md``.
* ``paper``: CIFAR-10 ResNet-110 (comparison, curves, attacks; SmoothMix App. B.3 / SmoothAdv
  App. D: 150 epochs, batch 256, lr 0.1 x0.1 every 50 epochs, momentum 0.9, weight decay 1e-4,
  crop + flip) and MNIST LeNet for the ablations (SmoothMix App. B.3 and EXPERIMENTS.MD: 90 epochs,
  lr 0.01 x0.1 every 30 epochs); CERTIFY with n = 100,000, n0 = 100, alpha = 0.001 on the full
  test set.  Method hyperparameters per sigma: SmoothMix §4, App. B.4, App. D and EXPERIMENTS.MD.
  As the references train: on the *whole* training set (``full_train_set``: no held-out
  validation images; the certified model is the last epoch), with the references' normalisation
  (Cohen et al.'s CIFAR-10 constants; none for SmoothMix's MNIST LeNet), SmoothAdv's own l2 step
  order (``step_order='clamp_renorm'``) and, for the MACER rows, MACER's own recipe.

Batches: SmoothAdv, SmoothMix and Consistency references split a loader batch of B into m chunks
of B/m and step once per chunk; our loop steps once per batch, so :func:`model_config` uses
``batch_size // m`` for these methods (``rs_lib.methods.smoothing``'s docstring).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import _validate as check
from ._checks import list_of
from ._settings import TrainKnobs, knob

#: The run-store experiment shared by the four notebooks (one directory per TrainConfig hash).
STORE = "randomized_smoothing"

#: Methods whose reference chunks each loader batch into ``num_noise`` optimiser steps.
CHUNKED = ("smoothadv_pgd", "smoothadv_ddn", "consistency", "smoothmix")

# ------------------------------------------------------------------------------ training bases

_TRAIN = {
    "smoke": dict(dataset="synthetic", model="lenet", epochs=1, batch_size=64, n_train=128, n_val=64,
                  augment=False, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=False,
                  weight_decay=1e-4, schedule="constant", seed=0),
    # 10,000 images x 3 epochs: a Gaussian run is 30k image passes (~20 s on one thread at the
    # ~1.5k img/s measured here for LeNet through the loop, ~2 s at TOOLCHAIN.md's 15k img/s).
    "cpu": dict(dataset="fashion-mnist", model="lenet", epochs=3, batch_size=128, n_train=10000, n_val=1000,
                augment=False, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=False,
                weight_decay=1e-4, schedule="piecewise", milestones=(0.5, 0.75), lr_decay=0.1, seed=0),
    # SmoothMix App. B.3 / EXPERIMENTS.MD and SmoothAdv App. D: CIFAR-10 ResNet-110, 150 epochs,
    # batch 256, lr 0.1 divided by 10 at epochs 50 and 100, SGD momentum 0.9 (the code has no
    # Nesterov, the SmoothMix text says Nesterov), weight decay 1e-4, random crop + flip.
    # The references train on all 50,000 images and certify the last epoch (full_train_set), behind
    # Cohen et al.'s NormalizeLayer with their constants (datasets.py: std 0.2023, 0.1994, 0.2010).
    "paper": dict(dataset="cifar10", model="resnet110", epochs=150, batch_size=256, n_train=None, n_val=1000,
                  augment=True, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
                  weight_decay=1e-4, schedule="piecewise", milestones=(1 / 3, 2 / 3), lr_decay=0.1, seed=0,
                  full_train_set=True, normalization="cohen_cifar10"),
    # SmoothMix App. B.3 / EXPERIMENTS.MD, MNIST: LeNet, 90 epochs, lr 0.01 / 10 at epochs 30 and
    # 60, batch 256 (train_utils default), no augmentation.
    # All 60,000 images, last epoch; SmoothMix's MNIST LeNet has no normalisation layer (Identity).
    "paper_mnist": dict(dataset="mnist", model="lenet", epochs=90, batch_size=256, n_train=None, n_val=1000,
                        augment=False, optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False,
                        weight_decay=1e-4, schedule="piecewise", milestones=(1 / 3, 2 / 3), lr_decay=0.1,
                        seed=0, full_train_set=True, normalization="none"),
}

# ------------------------------------------------------------------------------ certification

_CERT = {
    "smoke": dict(cert_points=8, cert_n0=10, cert_n=100, cert_alpha=0.001, cert_batch=200),
    # 120 points (every 83rd test image) x (100 + 1,000) samples: ~26 s per model on one thread at
    # the ~5k samples/s measured here (channels_last LeNet), batch 1000 (faster than 2000 here).
    "cpu": dict(cert_points=120, cert_n0=100, cert_n=1000, cert_alpha=0.001, cert_batch=1000),
    # Cohen et al. / SmoothAdv App. D / SmoothMix App. B.2: n = 100,000, n0 = 100, alpha = 0.001;
    # SmoothAdv and SmoothMix certify the full CIFAR-10 / MNIST test sets.
    "paper": dict(cert_points=10000, cert_n0=100, cert_n=100_000, cert_alpha=0.001, cert_batch=1000),
}

_RADII = {
    "smoke": [0.0, 0.25, 0.5, 0.75, 1.0],
    "cpu": [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5],
    "paper": [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25],           # SmoothMix Tables 1, 3
    "paper_mnist": [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5],  # SmoothMix Tables 6-9
}


def _spec(method: str, paper_row: str | None, sigmas: Mapping[float, Mapping[str, Any]],
          training: Mapping[str, Any] | None = None) -> dict:
    spec = {"method": method, "paper_row": paper_row, "sigmas": {float(s): dict(p) for s, p in sigmas.items()}}
    return spec if training is None else {**spec, "training": dict(training)}


#: Loop settings a model spec's own recipe may change (``spec["training"]``).
_TRAINING_KEYS = ("epochs", "lr", "milestones", "lr_decay", "batch_size", "weight_decay", "momentum")

#: MACER's own CIFAR-10 recipe (Zhai et al. 2020, §4 and their repository), behind SmoothMix's
#: MACER* rows (the released models): 440 epochs, lr 0.01 divided by 10 at epochs 200 and 400.
MACER_CIFAR10_TRAINING = {"epochs": 440, "lr": 0.01, "milestones": (200 / 440, 400 / 440)}


def _each(sigmas, **params):
    return {s: dict(params) for s in sigmas}


# ------------------------------------------------------------------------------ model specs

_SIGMAS = {"smoke": [0.5], "cpu": [0.25, 0.5, 1.0], "paper": [0.25, 0.5, 1.0]}

# cpu: every method scaled to a few passes per batch; warm-ups over 2 of the 3 epochs (the papers:
# 10 of 90-150); SmoothMix keeps alpha * T = 8 sigma as in the paper (MNIST: alpha 1, T = 2, 4, 8;
# CIFAR-10: T = 4, alpha = 2 sigma) with T = 2 and m = 1 (Table 9: m = 1 still beats Gaussian);
# SmoothAdv T = 2, m = 1 (its Tables 7-11 grid) and eps = 2 sigma (its best CIFAR-10 models use eps
# 1.0 at sigma 0.25 and 2.0 at sigma 0.5 and 1.0); MACER with 2 instead of 16 noise samples and its
# lambda deferred until after the first lr decay (epoch 1.5 of 3, so lambda is on from epoch 2), as
# SmoothMix's MNIST runs do with --deferred (lambda = 0 while epoch <= lr_step_size).  With lambda on
# at the initial lr (0.05) the robustness term's gradient (~7x the CE gradient at lambda = 16) threw
# the model to chance within a few steps; the papers switch it on at lr 0.001.
_CPU_MODELS = {
    "Gaussian": _spec("gaussian", "Gaussian", _each([0.25, 0.5, 1.0])),
    "Stability training": _spec("stability", "Stability training", _each([0.25, 0.5, 1.0], lbd=2.0)),
    "SmoothAdv": _spec("smoothadv_pgd", "SmoothAdv", {
        s: dict(eps=2 * s, steps=2, num_noise=1, warmup_epochs=2.0) for s in (0.25, 0.5, 1.0)}),
    "MACER": _spec("macer", "MACER", {
        s: dict(num_noise=2, beta=16.0, gamma=8.0, lbd=16.0 if s < 1 else 6.0, deferred_epochs=2)
        for s in (0.25, 0.5, 1.0)}),
    "Consistency": _spec("consistency", "Consistency", {
        s: dict(num_noise=2, lbd=10.0 if s == 0.25 else 5.0, eta=0.5) for s in (0.25, 0.5, 1.0)}),
    "SmoothMix": _spec("smoothmix", "SmoothMix (eta=5)", {
        s: dict(eta=5.0, step_size=4 * s, steps=2, num_noise=1, mix_step=0, warmup_epochs=2.0)
        for s in (0.25, 0.5, 1.0)}),
}

_SMOKE_MODELS = {
    "Gaussian": _spec("gaussian", "Gaussian", {0.5: {}}),
    "Stability training": _spec("stability", "Stability training", {0.5: dict(lbd=2.0)}),
    "SmoothAdv": _spec("smoothadv_pgd", "SmoothAdv", {0.5: dict(eps=1.0, steps=1, num_noise=2, warmup_epochs=0.0)}),
    "MACER": _spec("macer", "MACER", {0.5: dict(num_noise=2, lbd=16.0)}),
    "Consistency": _spec("consistency", "Consistency", {0.5: dict(num_noise=2, lbd=5.0, eta=0.5)}),
    "SmoothMix": _spec("smoothmix", "SmoothMix (eta=5)", {
        0.5: dict(eta=5.0, step_size=2.0, steps=1, num_noise=2, mix_step=0, warmup_epochs=0.0)}),
}

# paper (CIFAR-10 ResNet-110), SmoothMix §4 and App. B.4:
#  Stability training: lambda = 2, 1 at sigma = 1.0.
#  SmoothAdv: T = 10, eps = 1.0, m = 8, eps warm-up over 10 epochs (the official models, App. B.1).
#  MACER: m = 16, beta = 16, gamma = 8, lambda = 12 / 4 at sigma 0.25 / 0.5; at sigma = 1.0 lambda = 0
#         until the first lr decay (epoch 50), then 12.
#  Consistency: m = 2, eta = 0.5, lambda = 10, doubled (20) at sigma = 0.25.
#  SmoothMix: T = 4, m = 2, eta = 5, alpha = 0.5 / 1.0 / 2.0 at sigma 0.25 / 0.5 / 1.0, warm-up 10
#             epochs (reference --warmup 10); "+ one-step adversary": mix_step = 1.
_PAPER_MODELS = {
    "Gaussian": _spec("gaussian", "Gaussian", _each([0.25, 0.5, 1.0])),
    "Stability training": _spec("stability", "Stability training",
                                {0.25: dict(lbd=2.0), 0.5: dict(lbd=2.0), 1.0: dict(lbd=1.0)}),
    "SmoothAdv": _spec("smoothadv_pgd", "SmoothAdv",
                       _each([0.25, 0.5, 1.0], eps=1.0, steps=10, num_noise=8, warmup_epochs=10.0,
                             step_order="clamp_renorm")),
    "MACER": _spec("macer", "MACER", {
        0.25: dict(num_noise=16, beta=16.0, gamma=8.0, lbd=12.0, deferred_epochs=0),
        0.5: dict(num_noise=16, beta=16.0, gamma=8.0, lbd=4.0, deferred_epochs=0),
        1.0: dict(num_noise=16, beta=16.0, gamma=8.0, lbd=12.0, deferred_epochs=200)},  # the first decay
        training=MACER_CIFAR10_TRAINING),
    "Consistency": _spec("consistency", "Consistency", {
        0.25: dict(num_noise=2, lbd=20.0, eta=0.5), 0.5: dict(num_noise=2, lbd=10.0, eta=0.5),
        1.0: dict(num_noise=2, lbd=10.0, eta=0.5)}),
    "SmoothMix": _spec("smoothmix", "SmoothMix", {
        s: dict(eta=5.0, step_size=a, steps=4, num_noise=2, mix_step=0, warmup_epochs=10.0)
        for s, a in ((0.25, 0.5), (0.5, 1.0), (1.0, 2.0))}),
    "SmoothMix + one-step adversary": _spec("smoothmix", "SmoothMix + one-step adversary", {
        s: dict(eta=5.0, step_size=a, steps=4, num_noise=2, mix_step=1, warmup_epochs=10.0)
        for s, a in ((0.25, 0.5), (0.5, 1.0), (1.0, 2.0))}),
}

# paper, MNIST LeNet (SmoothMix App. D and EXPERIMENTS.MD), for reference and for `-p models`:
# SmoothAdv T = 10, eps = 255/256, m = 4, warm-up 10; Stability lambda = 2; MACER m = 16, beta = 16,
# gamma = 8, lambda = 16 (6 at sigma = 1.0), --deferred (lambda = 0 until the first decay, epoch 30);
# Consistency m = 2, eta = 0.5, lambda = 10 at sigma 0.25 and 5 otherwise; SmoothMix m = 4, alpha = 1,
# T = 2 / 4 / 8 at sigma 0.25 / 0.5 / 1.0 (App. D; the eta = 1 command uses T = 3 at 0.25), eta 1 or 5.
MNIST_PAPER_MODELS = {
    "Gaussian": _spec("gaussian", "Gaussian", _each([0.25, 0.5, 1.0])),
    "Stability training": _spec("stability", "Stability training", _each([0.25, 0.5, 1.0], lbd=2.0)),
    "SmoothAdv": _spec("smoothadv_pgd", "SmoothAdv",
                       _each([0.25, 0.5, 1.0], eps=255 / 256, steps=10, num_noise=4, warmup_epochs=10.0,
                             step_order="clamp_renorm")),
    "MACER": _spec("macer", "MACER", {
        s: dict(num_noise=16, beta=16.0, gamma=8.0, lbd=16.0 if s < 1 else 6.0, deferred_epochs=30)
        for s in (0.25, 0.5, 1.0)}),
    "Consistency": _spec("consistency", "Consistency", {
        s: dict(num_noise=2, lbd=10.0 if s == 0.25 else 5.0, eta=0.5) for s in (0.25, 0.5, 1.0)}),
    "SmoothMix": _spec("smoothmix", "SmoothMix (eta=5)", {
        s: dict(eta=5.0, step_size=1.0, steps=t, num_noise=4, mix_step=0, warmup_epochs=10.0)
        for s, t in ((0.25, 2), (0.5, 4), (1.0, 8))}),
    "SmoothMix + one-step adversary": _spec("smoothmix", "SmoothMix (eta=5) + one-step adversary", {
        s: dict(eta=5.0, step_size=1.0, steps=t, num_noise=4, mix_step=1, warmup_epochs=10.0)
        for s, t in ((0.25, 2), (0.5, 4), (1.0, 8))}),
}


def _pick(models: Mapping[str, dict], *labels: str) -> dict:
    return {label: models[label] for label in labels}


# ------------------------------------------------------------------------------ experiments

def _base(profile: str, train: str | None = None) -> dict:
    return {**_TRAIN[train or profile], **_CERT[profile], "cert_radii": list(_RADII[train or profile])}


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Certified accuracy vs radius of Gaussian-trained models per sigma and their upper envelope
    # (Cohen et al. Fig. 7; SmoothAdv Fig. 1, which adds sigma = 0.12 on CIFAR-10).
    "rs_certified_curves": {
        "smoke": {**_base("smoke"), "train_sigmas": [0.25, 0.5], "models": {
            "Gaussian": _spec("gaussian", "Gaussian", {0.25: {}, 0.5: {}})}},
        "cpu": {**_base("cpu"), "train_sigmas": [0.25, 0.5, 1.0], "models": _pick(_CPU_MODELS, "Gaussian")},
        "paper": {**_base("paper"), "train_sigmas": [0.12, 0.25, 0.5, 1.0], "models": {
            "Gaussian": _spec("gaussian", "Gaussian", _each([0.12, 0.25, 0.5, 1.0]))}},
    },
    # Every method at every sigma: ACR, certified accuracy at radii, abstention, l2 -> linf.
    "rs_comparison": {
        "smoke": {**_base("smoke"), "train_sigmas": _SIGMAS["smoke"], "models": _SMOKE_MODELS,
                  "paper_reference": "smoothmix_mnist", "linf_radius": 2 / 255},
        "cpu": {**_base("cpu"), "train_sigmas": _SIGMAS["cpu"], "models": _CPU_MODELS,
                "paper_reference": "smoothmix_mnist", "linf_radius": 2 / 255},
        "paper": {**_base("paper"), "train_sigmas": _SIGMAS["paper"], "models": _PAPER_MODELS,
                  "paper_reference": "smoothmix_cifar10", "linf_radius": 2 / 255},
    },
    # SmoothAdv §4.3 and App. C: empirical accuracy under the SmoothAdv attack (m_test, n in PREDICT,
    # Stein estimator) of the Gaussian models, and vanilla-PGD-trained models (App. C.1, Fig. 4).
    "rs_smoothadv_attacks": {
        "smoke": {**_base("smoke"), "train_sigmas": [0.5], "models": _pick(_SMOKE_MODELS, "Gaussian"),
                  "attack_points": 6, "attack_eps": [0.5], "attack_steps": 2, "m_test": [1, 4],
                  "predict_n": 100, "predict_ns": [50, 100], "stein_m_test": [4], "study_sigma": 0.5,
                  "vanilla_grid": [[0.5, 1.0]], "vanilla_steps": 1, "vanilla_warmup_epochs": 0.0,
                  "smoothadv_grid_params": dict(steps=1, num_noise=1, warmup_epochs=0.0)},
        # cpu: 50 of the 120 certified points, T = 10 (paper 20), m_test in {1, 4, 16} (paper up to 128),
        # PREDICT with n = 200 (README: 1,000); the vanilla-PGD models at (sigma, eps) = (0.5, 1.0),
        # T = 2, whose SmoothAdv counterpart (m = 1) is the comparison's SmoothAdv model at sigma 0.5.
        "cpu": {**_base("cpu"), "train_sigmas": [0.25, 0.5, 1.0], "models": _pick(_CPU_MODELS, "Gaussian"),
                "attack_points": 50, "attack_eps": [0.25, 0.5, 1.0], "attack_steps": 10, "m_test": [1, 4, 16],
                "predict_n": 200, "predict_ns": [100, 200, 1000], "stein_m_test": [16], "study_sigma": 0.5,
                "vanilla_grid": [[0.5, 1.0]], "vanilla_steps": 2, "vanilla_warmup_epochs": 2.0,
                "smoothadv_grid_params": dict(steps=2, num_noise=1, warmup_epochs=2.0)},
        # paper: SmoothAdv README/§4.3: T = 20, m_test in {1, 4, 8, 16, 64, 128}, PREDICT n = 1,000
        # (README commands; App. D states 100,000 as the default), alpha = 0.001, 500 test points;
        # App. C.1: T = 2, m_train = 1, eps in {0.25, 0.5, 1, 2} x sigma in {0.12, 0.25, 0.5, 1}.
        "paper": {**_base("paper"), "train_sigmas": [0.12, 0.25, 0.5, 1.0],
                  "models": {"Gaussian": _spec("gaussian", "Gaussian", _each([0.12, 0.25, 0.5, 1.0]))},
                  "attack_points": 500, "attack_eps": [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0],
                  "attack_steps": 20, "m_test": [1, 4, 8, 16, 64, 128], "predict_n": 1000,
                  "predict_ns": [100, 1000, 10_000, 100_000], "stein_m_test": [1, 4, 16, 64, 128],
                  "study_sigma": 0.25,
                  "vanilla_grid": [[s, e] for s in (0.12, 0.25, 0.5, 1.0) for e in (0.25, 0.5, 1.0, 2.0)],
                  "vanilla_steps": 2, "vanilla_warmup_epochs": 10.0,
                  "smoothadv_grid_params": dict(steps=2, num_noise=1, warmup_epochs=10.0, step_order="clamp_renorm")},
    },
    # SmoothMix App. H (Tables 6-9) at one sigma, plus Fig. 2 (confidence along the interpolation to
    # the unrestricted adversarial point) and Fig. 5 (equal-confidence mixing ratios).
    "rs_smoothmix_ablations": {
        "smoke": {**_base("smoke"), "models": _pick(_SMOKE_MODELS, "Gaussian", "SmoothMix"),
                  "ablation_sigma": 0.5, "ablation_etas": [1.0], "ablation_alpha_steps": [[4.0, 1]],
                  "ablation_maxnorms": [1.0], "ablation_num_noise": [1],
                  "interp_points": 6, "interp_steps": 2, "interp_step_size": 1.0, "interp_num_noise": 4,
                  "interp_ratios": 11},
        # cpu: sigma = 1.0 as the paper; the default model is the comparison's SmoothMix (eta 5,
        # alpha 4, T 2, m 1, unrestricted) and each axis adds one value.
        "cpu": {**_base("cpu"), "models": _pick(_CPU_MODELS, "Gaussian", "SmoothMix"),
                "ablation_sigma": 1.0, "ablation_etas": [1.0], "ablation_alpha_steps": [[8.0, 1]],
                "ablation_maxnorms": [2.0], "ablation_num_noise": [2],
                "interp_points": 120, "interp_steps": 8, "interp_step_size": 1.0, "interp_num_noise": 8,
                "interp_ratios": 21},
        # paper: MNIST sigma = 1.0, default eta 1, (alpha, T) = (1, 8), m = 4, unrestricted
        # (Tables 6-9: their "eta = 1", "(1.0, 8)", "eps = inf" and "m = 4" rows are one model);
        # eta in {1, 2, 4, 8, 16}, (alpha, T) with alpha T = 8, eps in {2, 4, 6, 8}, m in {1, 2, 4, 8}.
        "paper": {**_base("paper", "paper_mnist"), "models": {
            "Gaussian": MNIST_PAPER_MODELS["Gaussian"],
            "SmoothMix": _spec("smoothmix", "eta=1", {1.0: dict(eta=1.0, step_size=1.0, steps=8, num_noise=4,
                                                                mix_step=0, warmup_epochs=10.0)})},
                  "ablation_sigma": 1.0, "ablation_etas": [2.0, 4.0, 8.0, 16.0],
                  "ablation_alpha_steps": [[8.0, 1], [4.0, 2], [2.0, 4]],
                  "ablation_maxnorms": [2.0, 4.0, 6.0, 8.0], "ablation_num_noise": [1, 2, 8],
                  "interp_points": 500, "interp_steps": 8, "interp_step_size": 1.0, "interp_num_noise": 64,
                  "interp_ratios": 41},
    },
}


# ------------------------------------------------------------------------------ knob checks

def _float_list(name: str, value: Any, check_item=check.positive) -> Any:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list, got {value!r}")
    for i, v in enumerate(value):
        check_item(f"{name}[{i}]", v)
    return value


def _radii(name: str, value: Any) -> Any:
    _float_list(name, value, check.non_negative)
    if list(value) != sorted(value):
        raise ValueError(f"{name} must be increasing, got {value!r}")
    return value


def _int_list(name: str, value: Any) -> Any:
    return _float_list(name, value, check.positive_int)


def _pairs(item_checks):
    def checker(name: str, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{name} must be a non-empty list of pairs, got {value!r}")
        for i, pair in enumerate(value):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"{name}[{i}] must be a pair, got {pair!r}")
            for j, (item, item_check) in enumerate(zip(pair, item_checks)):
                item_check(f"{name}[{i}][{j}]", item)
        return value
    return checker


def _maxnorms(name: str, value: Any) -> Any:
    return _float_list(name, value, lambda n, v: None if v is None else check.positive(n, v))


def _paper_reference(name: str, value: Any) -> Any:
    from .. import paper

    return check.choice(name, value, paper.TABLES)


def _method_params(name: str, value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of method hyperparameters, got {value!r}")
    return value


def _models(name: str, value: Any) -> Any:
    """Each spec names a registered method and, per sigma, hyperparameters its config accepts."""
    from .. import methods

    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{name} must be a non-empty mapping label -> model spec, got {value!r}")
    for label, spec in value.items():
        where = f"{name}[{label!r}]"
        if not isinstance(spec, Mapping) or not {"method", "paper_row", "sigmas"} <= set(spec) <= {
                "method", "paper_row", "sigmas", "training"}:
            raise ValueError(f"{where} must be a mapping with keys 'method', 'paper_row', 'sigmas' (and "
                             f"optionally 'training'), got {spec!r}")
        check.choice(f"{where}['method']", spec["method"], sorted(methods.METHODS))
        training = spec.get("training", {})
        if not isinstance(training, Mapping):
            raise ValueError(f"{where}['training'] must map loop settings to values, got {training!r}")
        for key in training:
            check.choice(f"{where}['training'] key", key, sorted(_TRAINING_KEYS))
        sigmas = spec["sigmas"]
        if not isinstance(sigmas, Mapping) or not sigmas:
            raise ValueError(f"{where}['sigmas'] must map sigma -> hyperparameters, got {sigmas!r}")
        for sigma, params in sigmas.items():
            check.positive(f"{where}['sigmas'] key", sigma)
            method_params(spec, sigma)  # unknown names and bad values raise ValueError
    return value


# ------------------------------------------------------------------------------ typed settings


@dataclass(frozen=True, kw_only=True)
class SmoothingSettings(TrainKnobs):
    """The knobs every ``rs_*`` notebook shares: CERTIFY's (points, n0, n, alpha, batch), the radii
    of the tables and the model specs (``models``, label -> spec) that :func:`model_config` trains."""

    cert_points: int = knob(check.positive_int)
    cert_n0: int = knob(check.positive_int)
    cert_n: int = knob(check.positive_int)
    cert_alpha: float = knob(check.probability)
    cert_batch: int = knob(check.positive_int)
    cert_radii: list[float] = knob(_radii)
    models: Mapping[str, Mapping[str, Any]] = knob(_models)


@dataclass(frozen=True, kw_only=True)
class CertifiedCurves(SmoothingSettings):
    """``rs_certified_curves`` (Cohen et al. Fig. 7, SmoothAdv Fig. 1)."""

    experiment: ClassVar[str] = "rs_certified_curves"
    train_sigmas: list[float] = knob(list_of(check.positive))


@dataclass(frozen=True, kw_only=True)
class Comparison(SmoothingSettings):
    """``rs_comparison`` (SmoothMix Tables 1-3, SmoothAdv Tables 2-4)."""

    experiment: ClassVar[str] = "rs_comparison"
    train_sigmas: list[float] = knob(list_of(check.positive))
    paper_reference: str = knob(_paper_reference)
    linf_radius: float = knob(check.positive)


@dataclass(frozen=True, kw_only=True)
class SmoothAdvAttacks(SmoothingSettings):
    """``rs_smoothadv_attacks`` (SmoothAdv Fig. 3/7, 8, 9, 4)."""

    experiment: ClassVar[str] = "rs_smoothadv_attacks"
    train_sigmas: list[float] = knob(list_of(check.positive))
    attack_points: int = knob(check.positive_int)
    attack_eps: list[float] = knob(_float_list)
    attack_steps: int = knob(check.positive_int)
    m_test: list[int] = knob(_int_list)
    predict_n: int = knob(check.positive_int)
    predict_ns: list[int] = knob(_int_list)
    stein_m_test: list[int] = knob(_int_list)
    study_sigma: float = knob(check.positive)
    vanilla_grid: list[list[float]] = knob(_pairs((check.positive, check.positive)))
    vanilla_steps: int = knob(check.positive_int)
    vanilla_warmup_epochs: float = knob(check.non_negative)
    smoothadv_grid_params: Mapping[str, Any] = knob(_method_params)


@dataclass(frozen=True, kw_only=True)
class SmoothMixAblations(SmoothingSettings):
    """``rs_smoothmix_ablations`` (SmoothMix Tables 6-9, Fig. 2, 5)."""

    experiment: ClassVar[str] = "rs_smoothmix_ablations"
    ablation_sigma: float = knob(check.positive)
    ablation_etas: list[float] = knob(_float_list)
    ablation_alpha_steps: list[list[float]] = knob(_pairs((check.positive, check.positive_int)))
    ablation_maxnorms: list[float | None] = knob(_maxnorms)
    ablation_num_noise: list[int] = knob(_int_list)
    interp_points: int = knob(check.positive_int)
    interp_steps: int = knob(check.positive_int)
    interp_step_size: float = knob(check.positive)
    interp_num_noise: int = knob(check.positive_int)
    interp_ratios: int = knob(lambda n, v: check.integer(n, v, low=2))


SETTINGS = {cls.experiment: cls for cls in (CertifiedCurves, Comparison, SmoothAdvAttacks, SmoothMixAblations)}


# ------------------------------------------------------------------------------ model configs

def sigma_key(sigmas: Mapping[float, Any], sigma: float) -> float:
    """The key of ``sigmas`` equal to ``sigma`` (floats compared to 1e-9); ValueError if none."""
    check.positive("sigma", sigma)
    for key in sigmas:
        if math.isclose(float(key), float(sigma), rel_tol=0, abs_tol=1e-9):
            return key
    raise ValueError(f"sigma must be one of {sorted(float(k) for k in sigmas)} for this model, got {sigma!r}")


def method_params(spec: Mapping[str, Any], sigma: float, **changes: Any) -> dict[str, Any]:
    """The hyperparameters of ``spec``'s method at ``sigma`` (with ``sigma`` itself where the method
    has one), ``changes`` on top; validated by the method's config dataclass."""
    from .. import methods

    method = spec["method"]
    params = dict(spec["sigmas"][sigma_key(spec["sigmas"], sigma)])
    if any(f == "sigma" for f in methods.get_method(method).config_cls.__dataclass_fields__):
        params["sigma"] = float(sigma)
    params.update(changes)
    methods.method_config(method, params)
    return params


def model_config(settings: Any, spec: Mapping[str, Any], sigma: float, **changes: Any):
    """The ``TrainConfig`` of model ``spec`` at noise level ``sigma`` under ``settings``.

    Training knobs come from the preset; the method's hyperparameters from ``spec['sigmas'][sigma]``
    with ``changes`` on top (e.g. ``eta=1.0`` for an ablation).  For methods whose reference splits
    each batch into m optimiser steps (:data:`CHUNKED`) the batch is ``batch_size // m``.  Two
    notebooks asking for the same model get equal configs, hence one stored run.
    """
    from .. import methods

    params = method_params(spec, sigma, **changes)
    cfg = methods.method_config(spec["method"], params)
    batch = settings.batch_size
    if spec["method"] in CHUNKED:
        batch = max(1, batch // cfg.num_noise)
    return settings.train_config(method=spec["method"], method_params=params, batch_size=batch,
                                 **dict(spec.get("training") or {}))


# ------------------------------------------------------------------------------ run lists

def comparison_runs(settings: Any) -> list[dict[str, Any]]:
    """One row per (model label, sigma) of ``settings.models`` at ``settings.train_sigmas``:
    ``label``, ``sigma``, ``paper_row`` and the ``config`` to train (models lacking a sigma skip it)."""
    rows = []
    for label, spec in settings.models.items():
        for sigma in settings.train_sigmas:
            try:
                sigma_key(spec["sigmas"], sigma)
            except ValueError:
                continue
            rows.append({"label": label, "sigma": float(sigma), "paper_row": spec["paper_row"],
                         "config": model_config(settings, spec, sigma)})
    return rows


def _alpha_t(alpha: float, steps: int) -> str:
    return f"(alpha,T)=({float(alpha):.1f},{int(steps)})"


def ablation_runs(settings: Any) -> list[dict[str, Any]]:
    """SmoothMix App. H at ``settings.ablation_sigma``: rows ``ablation`` (eta, alpha_T, eps, m),
    ``setting`` (the paper table's label, e.g. ``eta=1``), ``value`` (the varied hyperparameter
    itself: eta, (alpha, T), the eps limit (inf: none) or m), ``default``, ``config``.  The preset's SmoothMix
    model is the default point of every axis; each axis varies one hyperparameter from it."""
    sigma = settings.ablation_sigma
    spec = settings.models["SmoothMix"]
    base = method_params(spec, sigma)
    rows = []

    def add(ablation: str, setting: str, value: Any, **changes: Any) -> None:
        rows.append({"ablation": ablation, "setting": setting, "value": value, "default": not changes,
                     "config": model_config(settings, spec, sigma, **changes)})

    for eta in sorted({base["eta"], *settings.ablation_etas}):
        add("eta", f"eta={eta:g}", eta, **({} if eta == base["eta"] else {"eta": eta}))
    pairs = {(float(base["step_size"]), int(base["steps"]))} | {(float(a), int(t)) for a, t in settings.ablation_alpha_steps}
    for alpha, steps in sorted(pairs, key=lambda p: -p[0]):
        same = (alpha, steps) == (base["step_size"], base["steps"])
        add("alpha_T", _alpha_t(alpha, steps), (alpha, steps), **({} if same else {"step_size": alpha, "steps": steps}))
    norms = [n for n in settings.ablation_maxnorms if n is not None]
    for norm in sorted(norms):
        add("eps", f"eps={norm:.1f}", float(norm), maxnorm=float(norm))
    base_norm = base.get("maxnorm")
    add("eps", "eps=inf" if base_norm is None else f"eps={base_norm:.1f}",
        math.inf if base_norm is None else float(base_norm))
    for m in sorted({base["num_noise"], *settings.ablation_num_noise}):
        add("m", f"m={m}", m, **({} if m == base["num_noise"] else {"num_noise": m}))
    return rows


def vanilla_runs(settings: Any) -> list[dict[str, Any]]:
    """SmoothAdv App. C.1 (Fig. 4): for each (sigma, eps) of ``settings.vanilla_grid``, rows for
    ``vanilla_pgd``, ``vanilla_pgd_noise`` and ``smoothadv_pgd`` (``settings.smoothadv_grid_params``),
    all with T = ``settings.vanilla_steps``; ``label``, ``sigma`` (certification), ``eps``, ``config``."""
    rows = []
    for sigma, eps in settings.vanilla_grid:
        warm = settings.vanilla_warmup_epochs
        specs = {
            "Vanilla PGD": {"method": "vanilla_pgd", "paper_row": None, "sigmas": {float(sigma): dict(
                eps=float(eps), steps=settings.vanilla_steps, warmup_epochs=warm)}},
            "Vanilla PGD + noise": {"method": "vanilla_pgd_noise", "paper_row": None, "sigmas": {float(sigma): dict(
                eps=float(eps), steps=settings.vanilla_steps, warmup_epochs=warm)}},
            "SmoothAdv": {"method": "smoothadv_pgd", "paper_row": None, "sigmas": {float(sigma): dict(
                settings.smoothadv_grid_params, eps=float(eps))}},
        }
        for label, spec in specs.items():
            rows.append({"label": label, "sigma": float(sigma), "eps": float(eps),
                         "config": model_config(settings, spec, sigma)})
    return rows


def certification(settings: Any, *, sigma: float | None = None):
    """The preset's certification of a stored run (``smoothing.certify_run``'s argument): CERTIFY
    with ``cert_n0``, ``cert_n``, ``cert_alpha``, ``cert_batch`` on ``cert_points`` test points,
    noise seeded by ``seed``, at the run's own training sigma (``sigma``: only for a model trained
    without one, e.g. vanilla PGD)."""
    from .. import smoothing

    cert = smoothing.CertifySettings(n0=settings.cert_n0, n=settings.cert_n, alpha=settings.cert_alpha,
                                     batch_size=settings.cert_batch)
    return smoothing.RunCertification(settings=cert, n_points=settings.cert_points, sigma=sigma,
                                      seed=settings.seed)


# ------------------------------------------------------------------------------ evaluations on stored runs

def attack_indices(settings: Any, size: int) -> list[int]:
    """The ``attack_points`` test indices that SmoothAdv's empirical attacks use: evenly spread over
    the certified points (:func:`rs_lib.smoothing.certify_indices`), so certified and empirical
    accuracy are measured on the same inputs."""
    from .. import smoothing

    cert_idx = smoothing.certify_indices(size, settings.cert_points)
    return cert_idx[::max(1, len(cert_idx) // settings.attack_points)][:settings.attack_points]


def empirical_params(settings: Any, *, eps: float, attack: str = "pgd", m: int = 1, n: int | None = None,
                     estimator: str = "plugin") -> dict[str, Any]:
    """What :func:`empirical`'s cached result depends on."""
    return dict(eps=float(eps), attack=attack, m=int(m), n=int(n or settings.predict_n), estimator=estimator,
                steps=settings.attack_steps, points=settings.attack_points, cert_points=settings.cert_points,
                alpha=settings.cert_alpha, batch=settings.cert_batch, seed=settings.seed)


def empirical(run: Any, settings: Any, *, eps: float, attack: str = "pgd", m: int = 1, n: int | None = None,
              estimator: str = "plugin", device: str = "auto") -> dict[str, float]:
    """SmoothAdv §4.3: PREDICT accuracy (and abstention) of the smoothed last model of ``run`` at
    its own training sigma (from its stored config) on the :func:`attack_indices` points attacked
    at l2 radius ``eps`` (``attack`` 'pgd' = SmoothAdv with ``m`` noise samples, 'base_pgd' =
    vanilla PGD on f; ``estimator`` 'plugin' or 'stein'), PREDICT with ``n`` samples (default
    ``predict_n``); cached in the run."""
    import torch

    from .. import data, smoothing

    params = empirical_params(settings, eps=eps, attack=attack, m=m, n=n, estimator=estimator)

    def compute() -> dict[str, float]:
        sigma = smoothing.run_sigma(run.config)
        test = data.load(settings.dataset, "test")
        points = test.subset(attack_indices(settings, len(test)))
        model = run.load_model("last", device=device)
        gen = torch.Generator(device=smoothing.model_device(model)).manual_seed(settings.seed)
        out = smoothing.empirical_accuracy(
            model, points, sigma=sigma,
            attack=smoothing.SmoothedAttack(eps=eps, attack=attack, steps=settings.attack_steps,
                                            num_noise=params["m"], estimator=estimator),
            predict=smoothing.PredictSettings(n=params["n"], alpha=settings.cert_alpha,
                                              batch_size=settings.cert_batch),
            generator=gen)
        return {"accuracy": out.accuracy, "abstain": out.abstain_rate}

    return run.cached("empirical", params, compute)


def interpolation_indices(settings: Any, size: int) -> list[int]:
    """The ``interp_points`` evenly spaced test indices of SmoothMix Fig. 2 / 5."""
    return list(range(0, size, size // settings.interp_points))[:settings.interp_points]


def interpolation_params(settings: Any) -> dict[str, Any]:
    """What :func:`interpolation`'s cached result depends on."""
    return dict(points=settings.interp_points, steps=settings.interp_steps, step_size=settings.interp_step_size,
                m=settings.interp_num_noise, ratios=settings.interp_ratios, sigma=settings.ablation_sigma,
                seed=settings.seed)


def interpolation(run: Any, settings: Any, *, device: str = "auto") -> dict[str, Any]:
    """SmoothMix Fig. 2 / 5: :func:`rs_lib.smoothing.adversarial_interpolation` of a run's last model
    at its own training sigma (which must be ``ablation_sigma``, the cached result's) on the :func:`interpolation_indices` points (lists, NaN ratios as None);
    cached in the run."""
    import numpy as np
    import torch

    from .. import data, smoothing

    def compute() -> dict[str, Any]:
        sigma = smoothing.run_sigma(run.config)
        if not math.isclose(sigma, settings.ablation_sigma, rel_tol=0, abs_tol=1e-9):
            raise ValueError(f"run must be trained at ablation_sigma {settings.ablation_sigma} (the cached "
                             f"result's sigma), got a run at sigma {sigma}")
        test = data.load(settings.dataset, "test")
        model = run.load_model("last", device=device)
        x, y = test.subset(interpolation_indices(settings, len(test))).tensors(smoothing.model_device(model))
        ascent = smoothing.SmoothMixAscent(sigma=sigma, step_size=settings.interp_step_size,
                                           steps=settings.interp_steps, num_noise=settings.interp_num_noise)
        out = smoothing.adversarial_interpolation(
            model, x, y, ascent=ascent, ratios=np.linspace(0, 1, settings.interp_ratios),
            generator=torch.Generator(device=x.device).manual_seed(settings.seed))
        return {k: [None if np.isnan(v) else float(v) for v in a] if k == "ratio" else a.tolist()
                for k, a in out.items()}

    return run.cached("interpolation", interpolation_params(settings), compute)
