"""Backward Smoothing chapter (Chen et al., AAAI 2022): presets of the six ``bs_*`` notebooks.

| experiment | notebook | paper figures / tables |
|---|---|---|
| ``bs_loss_increment`` | loss increment along training, catastrophic-overfitting curves | Fig. 1, Fig. 5 |
| ``bs_hessian`` | input-Hessian top eigenvalue at clean / random / backward-smoothed points | Fig. 3 |
| ``bs_comparison`` | every method: accuracy, PGD-20/100, AutoAttack, time, cyclic lr + AMP | Tables 1-6, 13-14 |
| ``bs_beta_tradeoff`` | natural vs robust accuracy over beta | Fig. 4, Table 12 |
| ``bs_stability`` | robust accuracy over seeds and step sizes | Fig. 6, arXiv Fig. 1 |
| ``bs_ablations`` | step size, gamma, BS alone, random points, single-step variants | Tables 7-11, 15 |

Every notebook builds its runs with :func:`train_config`, which derives a method's hyperparameters
from the chapter knobs every experiment shares (``linf_eps``, ``step_ratios``, ``trades_betas``, ...),
and trains them into the one run store :data:`STORE`. The same method at the same settings is
therefore the same ``TrainConfig`` (one store hash) in every notebook, and is trained once: the
``eps = 0.3`` Backward Smoothing run serves Fig. 1, Fig. 3, Fig. 4, the comparison and the ablations.

Profiles:

* ``smoke``: synthetic 28x28 data, Wong et al.'s MNIST net, 2 epochs of 128 images, every sweep cut
  to one or two values, attacks on 32 test images; seconds per notebook.
* ``cpu``: Fashion-MNIST, Wong et al.'s MNIST net (``wong_mnist``, no BatchNorm), 6 epochs of 15,000
  training images (a fixed subset), Adam with the cyclic learning rate 0 -> 5e-3 -> 0 (Wong et al.'s
  MNIST recipe), batch 128, no augmentation; per-epoch clean / FGSM / PGD-10 (random start, step
  eps/4) accuracy on 500 held-out training images, best epoch on PGD. Radii where the phenomena
  appear at this scale (reference notes §7; re-checked at 15,000 x 6 while writing these presets):
  eps 0.3 (certain catastrophic overfitting of Fast AT; Backward Smoothing and Fast TRADES survive),
  0.25 (seed-dependent collapse of Fast AT with alpha = 1.25 eps) and 0.1 (no collapse). The
  multi-step baselines (PGD-AT, TRADES: 10 steps) train on 7,500 images with an eps warm-up over
  the first 2 epochs (PGD-10 AT at eps 0.3 does not train at all without one, §7.1). TRADES-type
  methods all use beta = 6 (the paper's Backward Smoothing uses 10, which collapsed in a pilot at
  this scale: see ``bs_beta_tradeoff``); Backward Smoothing and Fast TRADES both take alpha = eps, so that the
  comparison isolates their initialisation. Cost: the budget table in ``book/backward_smoothing.md``.
* ``paper``: CIFAR-10, ResNet-18, 100 epochs, SGD lr 0.1 (x0.1 at epochs 50 and 75), momentum 0.9,
  weight decay 5e-4, batch 128, crop + flip, eps = 0.031 and the paper's step sizes (§5); per-epoch
  PGD-20 (no random start, step eps/4 ~ 2/255) on 2,560 held-out images for model selection (the BS
  code uses 2,560 *test* images); test: PGD-20/100 and AutoAttack on the full test set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import _validate as check
from .. import methods
from .. import robustness as _robustness
from ..attacks import pgd_step
from ..robustness import threat_eps
from ..train import CHECKPOINTS, TrainConfig
from ._checks import list_of, seed_list
from ._settings import TrainKnobs, knob

#: The run-store experiment shared by the six notebooks (one directory per TrainConfig hash).
STORE = "backward_smoothing"

#: Paper names of the methods (the row labels of the paper's tables).
LABELS = {
    "standard": "Standard",
    "pgd_at": "AT",
    "fast_at_zero": "Fast AT (no random init)",
    "fast_at": "Fast AT",
    "fast_at_2step": "Fast AT (2-step)",
    "gradalign": "Fast AT (GradAlign)",
    "trades": "TRADES",
    "fast_trades": "Fast TRADES",
    "fast_trades_2step": "Fast TRADES (2-step)",
    "backward_smoothing": "Backward Smoothing",
    "bs_alone": "Backward Smoothing alone",
    "backward_smoothing_pgd": "Backward Smoothing (PGD)",
    "odi_pgd": "ODI (PGD)",
    "odi_trades": "ODI (TRADES)",
}

#: The multi-step (10-step) baselines, which ``multistep_n_train`` and the warm-up apply to.
MULTISTEP = ("pgd_at", "trades")
_GAMMA = ("backward_smoothing", "bs_alone", "backward_smoothing_pgd")
_ODI = ("odi_pgd", "odi_trades")


def _paper(method: str, name: str) -> Any:
    """A paper hyperparameter read from its one home, the method's defaults (`rs_lib.methods.adversarial`,
    where each is quoted from the paper): the paper profile restates none of them."""
    return getattr(methods.method_config(method), name)


PAPER_EPS = _paper("backward_smoothing", "eps")  # BS §5: "we set eps = 0.031 for all three datasets"


def _paper_ratio(step_over_255: float) -> float:
    """A step size the paper gives in /255 units, as a multiple of eps = 0.031 (the knobs' unit)."""
    return step_over_255 / 255 / PAPER_EPS


# ------------------------------------------------------------------------------ training bases

_VAL = dict(val_metrics=("clean", "fgsm", "pgd"), select_on="pgd")

_TRAIN = {
    "smoke": dict(dataset="synthetic", model="wong_mnist", epochs=2, batch_size=64, n_train=128, n_val=32,
                  augment=False, optimizer="adam", lr=5e-3, schedule="cyclic", peak=0.4, weight_decay=0.0,
                  seed=0, **_VAL),
    # Wong et al.'s MNIST recipe (Adam, cyclic lr 0 -> 5e-3 -> 0 peaking at 2/5 of training, batch
    # 128; reference notes §2.1 and the §7 pilot) on a fixed 15,000-image subset for 6 epochs.
    "cpu": dict(dataset="fashion-mnist", model="wong_mnist", epochs=6, batch_size=128, n_train=15000, n_val=500,
                augment=False, optimizer="adam", lr=5e-3, schedule="cyclic", peak=0.4, weight_decay=0.0,
                seed=0, **_VAL),
    # BS §5: ResNet-18, lr 0.1 decayed at epochs 50 and 75 (x0.1); 100 epochs, batch 128, momentum
    # 0.9, weight decay 5e-4, crop + flip: the BS code (train_trades_backward.py, reference notes §1.2).
    "paper": dict(dataset="cifar10", model="resnet18", epochs=100, batch_size=128, n_train=None, n_val=2560,
                  augment=True, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
                  schedule="piecewise", milestones=(0.5, 0.75), lr_decay=0.1, seed=0, **_VAL),
}

# ------------------------------------------------------------------------------ method knobs

_CPU_STEPS = {
    "fast_at_zero": 1.25, "fast_at": 1.25, "gradalign": 1.25,       # Wong et al.'s MNIST alpha = 1.25 eps
    "fast_at_2step": 0.75, "fast_trades_2step": 0.625,               # the paper's 6/255 and 5/255 per 8/255
    "pgd_at": 0.25, "trades": 0.25,                                  # 2/255 per 8/255
    "fast_trades": 1.0, "backward_smoothing": 1.0, "bs_alone": 1.0,  # alpha = eps: BS vs Fast TRADES
    "backward_smoothing_pgd": 1.0, "odi_pgd": 1.0, "odi_trades": 1.0,  # differ only in their start
}

# BS §5 "Experimental Setting", as the methods' default step sizes (in /255 units there) over eps: 2/255
# for PGD-AT and TRADES ("10-step ... step size of 2/255 for both": PGD-AT's default; TRADES' own default
# is its code's 0.007), 8/255 for Backward Smoothing (and, not stated, App. B, its alone / PGD / ODI
# variants), 10/255 for Fast AT (with and without random init) and GradAlign, 6/255 for 2-step Fast AT
# and Fast TRADES, 5/255 for 2-step Fast TRADES.
_PAPER_STEPS = {m: _paper("pgd_at" if m == "trades" else m, "step_size") / PAPER_EPS for m in (
    "pgd_at", "trades", "backward_smoothing", "fast_at", "gradalign", "fast_at_zero", "fast_at_2step",
    "fast_trades", "fast_trades_2step", "bs_alone", "backward_smoothing_pgd", "odi_pgd", "odi_trades")}

_CPU_BETAS = {m: 6.0 for m in ("trades", "fast_trades", "fast_trades_2step", "backward_smoothing", "bs_alone",
                               "odi_trades")}
# TRADES: beta = 6 (Zhang et al.; the paper does not restate it, nor Fast TRADES' beta, for which the
# BS code's default is 6); Backward Smoothing: beta = 10 (Table 12's best, the README's command);
# its alone / ODI (TRADES) variants: the same 10 (App. B does not restate it).
_PAPER_BETAS = {m: _paper(m, "beta") for m in ("trades", "fast_trades", "fast_trades_2step", "backward_smoothing",
                                                "bs_alone", "odi_trades")}

_METHOD = {
    "smoke": dict(linf_eps=0.3, step_ratios=_CPU_STEPS, trades_betas=_CPU_BETAS, bs_gamma=1.0, gradalign_lam=2.0,
                  gradalign_form="gradalign_repository", clamp_start=True,
                  multistep_warmup_epochs=0.5, multistep_n_train=64,
                  hessian_methods=["fast_trades"], hessian_epochs=[0, 1]),
    # gradalign_lam: no Fashion-MNIST value exists (reference notes §7.2); 2.0 is GradAlign's value at
    # its largest CIFAR-10 radius (16/255, lambda(eps) = 0.02 10^(eps/8)), where CO is as certain as here.
    # gradalign_form, clamp_start: GradAlign's own code and Wong et al.'s clamped start (the BS repository's
    # unclamped start puts the first gradient far outside the box on Fashion-MNIST, half of whose pixels are 0).
    "cpu": dict(linf_eps=0.3, step_ratios=_CPU_STEPS, trades_betas=_CPU_BETAS, bs_gamma=1.0, gradalign_lam=2.0,
                gradalign_form="gradalign_repository", clamp_start=True,
                multistep_warmup_epochs=2.0, multistep_n_train=7500,
                hessian_methods=["fast_trades", "backward_smoothing"], hessian_epochs=[0, 1, 2, 3, 4, 5]),
    # BS §5 (eps, step sizes, gamma), Table 12 (beta); GradAlign lambda = 0.3, the BS repository's (GradAlign's
    # own code: 0.2 at 8/255, `-p gradalign_form gradalign_repository -p gradalign_lam 0.2`); Fig. 3 follows Fast TRADES "until [it] obtains its best robustness (the 51st epoch)".
    # The code behind the paper's numbers (the BS repository): its GradAlign (pgd_fast_gradalign.py: lambda 0.3,
    # create_graph on both input gradients) and its random start, not clamped before the first gradient
    # (pgd_fast.py, pgd_fast_gradalign.py).
    "paper": dict(linf_eps=PAPER_EPS, step_ratios=_PAPER_STEPS, trades_betas=_PAPER_BETAS,
                  bs_gamma=_paper("backward_smoothing", "gamma"), gradalign_lam=_paper("gradalign_bs", "lam"),
                  gradalign_form="bs_repository", clamp_start=False,
                  multistep_warmup_epochs=0.0, multistep_n_train=None,
                  hessian_methods=["fast_trades"],
                  hessian_epochs=[0, 10, 20, 30, 40, 50]),
}

_ALL_METHODS = ["pgd_at", "fast_at", "fast_at_2step", "gradalign", "trades", "fast_trades", "fast_trades_2step",
                "backward_smoothing"]
_VARIANTS = ["fast_at", "fast_trades", "backward_smoothing", "bs_alone", "backward_smoothing_pgd", "odi_pgd",
             "odi_trades"]


# Per-epoch 'fgsm' / 'pgd' validation attacks at the profile's radius; `train_config` rescales them to a
# run's own eps. cpu: PGD-10 with a random start (it sees through a collapsed model's masked gradients);
# paper: the BS code's PGD-20 without random start, step 0.0078 ~ eps/4 (reference notes §1.2).
_VAL_PGD = {"smoke": dict(pgd_steps=2, pgd_random_start=True), "cpu": dict(pgd_steps=10, pgd_random_start=True),
            "paper": dict(pgd_steps=20, pgd_random_start=False)}


def _base(profile: str) -> dict[str, Any]:
    eps = _METHOD[profile]["linf_eps"]
    return {**_TRAIN[profile], **_METHOD[profile],
            "eval_params": {"eps": eps, "pgd_step_size": pgd_step(eps), **_VAL_PGD[profile]}}


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Fig. 1 (loss increment per iteration) and Fig. 5 (clean / FGSM / PGD accuracy per epoch) of the same
    # runs; cpu adds the no-collapse regime eps = 0.1 for Fast AT without random init.
    "bs_loss_increment": {
        "smoke": {**_base("smoke"), "increment_methods": ["fast_at_zero", "fast_at", "backward_smoothing"],
                  "sanity_eps": 0.1, "sanity_methods": ["fast_at_zero"], "increment_window": 2,
                  "long_methods": ["fast_at_zero"], "long_training": {"n_train": 192, "epochs": 3}},
        # long_*: the collapsed zero-start FGSM run needs more iterations after its collapse than the shared
        # 15,000 x 6 runs give it before its loss increment turns negative (reference notes §7.1: 30,000 x 8;
        # measured: epoch means -0.02, -0.21, -0.34 over epochs 6-8, 43 s on two threads).
        "cpu": {**_base("cpu"), "increment_methods": ["fast_at_zero", "fast_at", "pgd_at", "backward_smoothing"],
                "sanity_eps": 0.1, "sanity_methods": ["fast_at_zero"], "increment_window": 15,
                "long_methods": ["fast_at_zero"], "long_training": {"n_train": 30000, "epochs": 8}},
        "paper": {**_base("paper"), "increment_methods": ["fast_at_zero", "fast_at", "pgd_at", "backward_smoothing"],
                  "sanity_eps": None, "sanity_methods": ["fast_at_zero"], "increment_window": 100,
                  "long_methods": [], "long_training": {}},
    },
    # Fig. 3: top eigenvalue of the input Hessian of the inner objective along the kept checkpoints of the
    # `hessian_methods` runs (paper: Fast TRADES), at clean, uniformly perturbed and backward-smoothed points.
    # KL only: for piecewise-linear networks (all of ours) the CE and KL input Hessians coincide.
    "bs_hessian": {
        "smoke": {**_base("smoke"), "hessian_n": 8, "hessian_iters": 3, "hessian_objectives": ["kl"],
                  "weight_hessian": True},
        "cpu": {**_base("cpu"), "hessian_n": 64, "hessian_iters": 20, "hessian_objectives": ["kl"],
                "weight_hessian": True},
        "paper": {**_base("paper"), "hessian_n": 512, "hessian_iters": 50, "hessian_objectives": ["kl"],
                  "weight_hessian": True},
    },
    # Tables 1-6, 13-14: every method at linf_eps (seed 0), Fast TRADES and Backward Smoothing over `seeds`,
    # the `test_protocols` on that many test images (best epoch; the first protocol also at the last epoch),
    # AutoAttack (and RayS, `rays_protocol`, None to skip) on `aa_methods`, and the methods of `extra_eps_methods` at each of `extra_eps`.
    "bs_comparison": {
        "smoke": {**_base("smoke"), "compare_methods": ["standard", "fast_at", "fast_trades", "backward_smoothing"],
                  "pair_methods": ["fast_trades", "backward_smoothing"], "seeds": [0, 1],
                  "test_protocols": {"pgd20_bs": 32, "pgd20_rs": 32}, "aa_protocol": "autoattack_fast", "aa_eps": None,
                  "aa_methods": ["backward_smoothing"], "aa_n_test": 8, "rays_protocol": "rays_fast",
                  "extra_eps": [0.1],
                  "extra_eps_methods": ["backward_smoothing"],
                  "accel_methods": ["backward_smoothing"],
                  "accel_training": {"schedule": "cyclic", "lr": 5e-3, "peak": 0.0, "epochs": 1}},
        "cpu": {**_base("cpu"), "compare_methods": ["standard", *_ALL_METHODS],
                "pair_methods": ["fast_trades", "backward_smoothing"], "seeds": [0, 1, 2],
                "test_protocols": {"pgd20_bs": 1000, "pgd20_rs": 500, "pgd100_bs": 500},
                "aa_protocol": "autoattack_fast", "aa_eps": None,
                "aa_methods": ["pgd_at", "fast_at", "trades", "fast_trades",
                                                                 "backward_smoothing"],
                "aa_n_test": 200, "rays_protocol": "rays", "extra_eps": [], "extra_eps_methods": [],
                # Table 6: the cpu comparison above already trains with a one-cycle lr; mixed precision
                # needs CUDA, so no separate runs here.
                "accel_methods": [], "accel_training": {}},
        # Table 2 (CIFAR-10; -p dataset cifar100 for Table 3, -p dataset tiny-imagenet -p model resnet50 for
        # Table 4), Table 5 (AutoAttack; the paper's models are
        # WRN-34-10: -p model wrn34_10), Tables 13-14 (eps 4/255 and 12/255; step sizes scale with eps).
        "paper": {**_base("paper"), "compare_methods": ["standard", *_ALL_METHODS],
                  "pair_methods": ["fast_trades", "backward_smoothing"], "seeds": [0],
                  "test_protocols": {"pgd100_bs": 10000, "pgd20_bs": 10000, "pgd20_rs": 10000},
                  # AutoAttack at 8/255, as the authors' evaluation script (jinghuichen/AutoAttackEval), not 0.031
                  "aa_protocol": "autoattack_standard", "aa_eps": 8 / 255,
                  "aa_methods": ["pgd_at", "fast_at", "trades", "fast_trades", "fast_trades_2step",
                                 "backward_smoothing"],
                  "aa_n_test": 10000, "rays_protocol": "rays",
                  "extra_eps": [4 / 255, 12 / 255], "extra_eps_methods": list(_ALL_METHODS),
                  # Table 6 (cyclic lr + mixed precision): the BS code's `cyclic` option (CyclicLR 0 -> 2 lr =
                  # 0.2 in one iteration, then linear to 0: peak 0) with AMP. The paper does not state the
                  # epochs; 30 is inferred from its times (Table 6 / Table 2 = 0.15 for every method: 30 %
                  # of the epochs at AMP's ~2x). CyclicLR's momentum cycling (0.9 <-> 0.8) is not modelled.
                  "accel_methods": list(_ALL_METHODS),
                  "accel_training": {"schedule": "cyclic", "lr": 0.2, "peak": 0.0, "amp": True, "epochs": 30}},
    },
    # Fig. 4 / Table 12: the TRADES-type methods over beta; the other methods as single points (shared runs).
    "bs_beta_tradeoff": {
        "smoke": {**_base("smoke"), "beta_grid": [2.0, 6.0], "tradeoff_methods": ["backward_smoothing"],
                  "point_methods": ["fast_at"], "n_test": 32, "test_protocol": "pgd20_rs"},
        "cpu": {**_base("cpu"), "beta_grid": [2.0, 6.0, 10.0], "tradeoff_methods": ["fast_trades", "backward_smoothing"],
                "point_methods": ["pgd_at", "fast_at", "gradalign", "trades"], "n_test": 1000,
                "test_protocol": "pgd20_rs"},
        "paper": {**_base("paper"), "beta_grid": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0],
                  "tradeoff_methods": ["trades", "fast_trades", "backward_smoothing"],
                  "point_methods": ["pgd_at", "fast_at", "gradalign"], "n_test": 10000, "test_protocol": "pgd100_bs"},
    },
    # Fig. 6 and arXiv Fig. 1: Fast AT at several step sizes and the `stability_methods` over `seeds`.
    "bs_stability": {
        "smoke": {**_base("smoke"), "stability_eps": 0.25, "seeds": [0, 1], "fast_at_step_ratios": [1.25],
                  "stability_methods": ["fast_trades", "backward_smoothing"], "n_test": 32, "test_protocol": "pgd20_rs"},
        "cpu": {**_base("cpu"), "stability_eps": 0.25, "seeds": [0, 1, 2, 3, 4], "fast_at_step_ratios": [1.0, 1.25],
                "stability_methods": ["fast_trades", "backward_smoothing"], "n_test": 500, "test_protocol": "pgd20_rs"},
        # arXiv §3: Fast AT run 10 times per step size (6, 8, 10 /255); Fast TRADES at 6/255 (arXiv Fig. 2).
        "paper": {**_base("paper"), "stability_eps": PAPER_EPS, "seeds": list(range(10)),
                  "fast_at_step_ratios": [_paper_ratio(6), _paper_ratio(8), _paper_ratio(10)],
                  "stability_methods": ["fast_trades", "backward_smoothing"], "n_test": 10000,
                  "test_protocol": "pgd100_bs"},
    },
    # Table 7 (step size), Table 11 (gamma), Table 10 (random points), Tables 8-9 (BS alone) and Table 15
    # (single-step variants), all at linf_eps, seed 0.
    "bs_ablations": {
        "smoke": {**_base("smoke"), "step_ratio_grid": [1.0, 1.5], "gamma_grid": [1.0, 5.0], "num_points_grid": [1, 2],
                  "variant_methods": ["fast_at", "fast_trades", "backward_smoothing", "bs_alone", "odi_pgd"], "n_test": 32,
                  "test_protocol": "pgd20_rs"},
        "cpu": {**_base("cpu"), "step_ratio_grid": [0.5, 1.0, 1.5], "gamma_grid": [0.1, 1.0, 5.0],
                "num_points_grid": [1, 4], "variant_methods": list(_VARIANTS), "n_test": 1000,
                "test_protocol": "pgd20_rs"},
        # Table 7: 6-12/255; Table 11: gamma in {0.1, 0.5, 1, 2, 5}; Table 10: 1, 2, 5, 10 points.
        "paper": {**_base("paper"), "step_ratio_grid": [_paper_ratio(s) for s in range(6, 13)],
                  "gamma_grid": [0.1, 0.5, 1.0, 2.0, 5.0], "num_points_grid": [1, 2, 5, 10],
                  "variant_methods": list(_VARIANTS), "n_test": 10000, "test_protocol": "pgd100_bs"},
    },
}


# ------------------------------------------------------------------------------ runs


#: The two codes of GradAlign (``gradalign_form``): the registered method each trains.
GRADALIGN_FORMS = {"gradalign_repository": "gradalign", "bs_repository": "gradalign_bs"}
#: Methods with a uniform random start that ``clamp_start`` applies to.
_RANDOM_START = ("pgd_at", "fast_at", "fast_at_2step", "gradalign")


def objective_name(settings: Any, method: str) -> str:
    """The registered objective that trains ``method`` (a key of :data:`LABELS`) under ``settings``:
    the method itself, except GradAlign, whose ``gradalign_form`` picks GradAlign's own code
    (``gradalign``) or the Backward Smoothing repository's (``gradalign_bs``)."""
    return GRADALIGN_FORMS[settings.gradalign_form] if method == "gradalign" else method


def method_params(settings: Any, method: str, *, eps: float | None = None) -> dict[str, Any]:
    """The hyperparameters of ``method`` that the chapter knobs of ``settings`` set, at radius ``eps``
    (default ``settings.linf_eps``): eps, step size(s) = ratio x eps, beta, gamma, GradAlign's lambda,
    and ``clamp_start=False`` for the random-start methods when the knob says so (left out when True,
    the default, so that stored runs keep their hash)."""
    eps = settings.linf_eps if eps is None else check.positive("eps", eps)
    if method == "standard":
        return {}
    params: dict[str, Any] = {"eps": eps}
    if method in settings.step_ratios:
        params["step_size"] = settings.step_ratios[method] * eps
    if method in _ODI:
        params["odi_step_size"] = params["step_size"]
    if method in settings.trades_betas:
        params["beta"] = settings.trades_betas[method]
    if method in _GAMMA:
        params["gamma"] = settings.bs_gamma
    if method == "gradalign":
        params["lam"] = settings.gradalign_lam
    if method in _RANDOM_START and not settings.clamp_start:
        params["clamp_start"] = False
    return params


def train_config(settings: Any, method: str, *, eps: float | None = None, seed: int | None = None,
                 training: Mapping[str, Any] | None = None, **params: Any) -> TrainConfig:
    """The chapter's ``TrainConfig`` for ``method`` (a key of :data:`LABELS`): the training knobs of
    ``settings``, the method's hyperparameters from :func:`method_params` with ``params`` on top, the
    per-epoch validation attack at ``eps``, ``seed`` (default: the preset's) and ``training``, changes
    of the loop's own settings (e.g. Table 6's ``accel_training``: schedule, lr, amp, epochs).

    The multi-step baselines (:data:`MULTISTEP`) train on ``multistep_n_train`` images (if set) with an
    eps warm-up over ``multistep_warmup_epochs``. The base run of each of ``hessian_methods`` (at
    ``linf_eps`` and the preset's seed, no ``params`` changed) keeps the weights of ``hessian_epochs``.
    Equal arguments give equal configs, hence one stored run, in every notebook of the chapter.
    """
    check.choice("method", method, sorted(LABELS))
    base = method_params(settings, method, eps=eps)
    merged = {**base, **params}
    val_eps = merged.get("eps", settings.linf_eps if eps is None else eps)
    changes: dict[str, Any] = {"method": objective_name(settings, method), "method_params": merged,
                               "eval_params": validation_params(settings, val_eps)}
    if seed is not None:
        changes["seed"] = check.integer("seed", seed, low=0)
    if method in MULTISTEP:
        changes["warmup_epochs"] = settings.multistep_warmup_epochs
        if settings.multistep_n_train is not None:
            changes["n_train"] = settings.multistep_n_train
    if training:
        changes.update(_training("training", training))
    objective = objective_name(settings, method)
    resolved = methods.method_config(objective, merged)  # defaults filled in, as the store hash sees them
    is_base = (resolved == methods.method_config(objective, method_params(settings, method))
               and changes.get("seed", settings.seed) == settings.seed and not training)
    if method in settings.hessian_methods and is_base:
        changes["keep_epochs"] = tuple(e for e in settings.hessian_epochs if e < settings.epochs)
    return settings.train_config(**changes)


def train(cfg: TrainConfig, *, device: str = "auto", progress: bool = True):
    """Train (or read back from :data:`STORE`) the run of ``cfg`` (one of :func:`train_config`'s)."""
    from ..train import run_training

    return run_training(cfg, experiment=STORE, device=device, progress=progress)


def long_label(settings: Any, method: str) -> str:
    """The label of ``method``'s longer run (``long_training``) in ``bs_loss_increment``."""
    changed = ", ".join(f"{k}={v}" for k, v in settings.long_training.items())
    return f"{LABELS[method]}, ε={settings.linf_eps:g}, {changed}"


def loss_increment_runs(settings: Any) -> dict[str, TrainConfig]:
    """Fig. 1 / Fig. 5's runs by label: ``increment_methods`` at ``linf_eps``, ``sanity_methods`` at
    ``sanity_eps`` (if set) and ``long_methods`` with ``long_training`` (:func:`long_label`)."""
    runs = {f"{LABELS[m]}, ε={settings.linf_eps:g}": train_config(settings, m) for m in settings.increment_methods}
    if settings.sanity_eps is not None:
        runs.update({f"{LABELS[m]}, ε={settings.sanity_eps:g}": train_config(settings, m, eps=settings.sanity_eps)
                     for m in settings.sanity_methods})
    runs.update({long_label(settings, m): train_config(settings, m, training=settings.long_training)
                 for m in settings.long_methods})
    return runs


def comparison_runs(settings: Any) -> dict[str, dict[Any, TrainConfig]]:
    """``bs_comparison``'s runs by group: ``'compare'`` (method -> run at ``linf_eps``, Tables 1-4),
    ``'pairs'`` ((method, seed) -> run, the seeds table), ``'aa'`` (method -> run, Table 5),
    ``'extra_eps'`` ((eps, method) -> run, Tables 13-14) and ``'accel'`` (method -> run with
    ``accel_training``, Table 6)."""
    return {
        "compare": {m: train_config(settings, m) for m in settings.compare_methods},
        "pairs": {(m, seed): train_config(settings, m, seed=seed) for m in settings.pair_methods
                  for seed in settings.seeds},
        "aa": {m: train_config(settings, m) for m in settings.aa_methods},
        "extra_eps": {(eps, m): train_config(settings, m, eps=eps) for eps in settings.extra_eps
                      for m in settings.extra_eps_methods},
        "accel": {m: train_config(settings, m, training=settings.accel_training) for m in settings.accel_methods},
    }


def tradeoff_runs(settings: Any) -> dict[str, dict[Any, TrainConfig]]:
    """``bs_beta_tradeoff``'s runs: ``'swept'`` ((method, beta) -> run for the ``tradeoff_methods``
    over ``beta_grid``, Fig. 4 / Table 12) and ``'points'`` (method -> run of ``point_methods``)."""
    return {"swept": {(m, b): train_config(settings, m, beta=b) for m in settings.tradeoff_methods
                      for b in settings.beta_grid},
            "points": {m: train_config(settings, m) for m in settings.point_methods}}


def ablation_runs(settings: Any) -> dict[str, dict[Any, TrainConfig]]:
    """``bs_ablations``' runs of Backward Smoothing by table: ``'step'`` (ratio -> run at step
    ratio x ``linf_eps``, Table 7), ``'gamma'`` (Table 11), ``'points'`` (number of random points,
    Table 10), ``'variants'`` (method -> run, Tables 8-9 and 15) and ``'literal'`` (PGD-based Backward
    Smoothing with the appendix's printed target γψ_y, ``target='literal'``, beside the default shifted
    one when ``backward_smoothing_pgd`` is a variant: Table 15's verdict can depend on the choice)."""
    bs, eps = "backward_smoothing", settings.linf_eps
    pgd = "backward_smoothing_pgd"
    return {"step": {r: train_config(settings, bs, step_size=r * eps) for r in settings.step_ratio_grid},
            "gamma": {g: train_config(settings, bs, gamma=g) for g in settings.gamma_grid},
            "points": {k: train_config(settings, bs, num_points=k) for k in settings.num_points_grid},
            "variants": {m: train_config(settings, m) for m in settings.variant_methods},
            "literal": {pgd: train_config(settings, pgd, target="literal")} if pgd in settings.variant_methods else {}}


def stability_configurations(settings: Any) -> dict[str, tuple[str, dict[str, float]]]:
    """Fig. 6's configurations by label: Fast AT at each of ``fast_at_step_ratios`` x
    ``stability_eps`` and each of ``stability_methods`` at its own step; ``(method, params)``."""
    eps = settings.stability_eps
    configs: dict[str, tuple[str, dict[str, float]]] = {}
    for ratio in settings.fast_at_step_ratios:
        name = f"Fast AT, α = {ratio:.3g}ε ({ratio * eps * 255:.3g}/255)".replace("= 1ε", "= ε")
        configs[name] = ("fast_at", {"step_size": ratio * eps})
    for method in settings.stability_methods:
        ratio = settings.step_ratios[method]
        configs[f"{LABELS[method]}, α = {ratio:.3g}ε".replace("= 1ε", "= ε")] = (method, {})
    return configs


def stability_runs(settings: Any) -> dict[tuple[str, int], TrainConfig]:
    """The runs of :func:`stability_configurations` at ``stability_eps`` over ``seeds``."""
    return {(name, seed): train_config(settings, method, eps=settings.stability_eps, seed=seed, **extra)
            for name, (method, extra) in stability_configurations(settings).items() for seed in settings.seeds}


def check_training_device(training: Mapping[str, Any], device: Any, *, name: str = "training") -> None:
    """Raise before any training if the loop settings ``training`` cannot run on ``device``
    (mixed precision, ``amp=True``, needs CUDA), naming ``name`` and what to change."""
    if training.get("amp") and check.resolve_device("device", device).type != "cuda":
        raise ValueError(f"{name} has amp=True (mixed precision), which needs CUDA, but device={device!r} "
                         f"runs on the CPU; set amp to false in {name} or leave out those runs")


def validation_params(settings: Any, eps: float) -> dict[str, Any]:
    """The preset's ``eval_params`` (per-epoch 'fgsm' / 'pgd' metrics) moved to radius ``eps``, with the
    PGD step eps/4 (the BS code's 0.0078 at 0.031)."""
    return {**settings.eval_params, "eps": eps, "pgd_step_size": pgd_step(eps)}


#: The checkpoint the chapter's tables report unless a column says "last": the epoch with the best
#: validation robust accuracy (the paper's early stopping, Rice et al. 2020). A chapter protocol, not
#: the library's default (`rs_lib.train.DEFAULT_CHECKPOINT`, the last epoch, which a smoothed classifier
#: certifies).
REPORTED_CHECKPOINT = "best"


def fit(settings: Any, method: str, *, device: str = "auto", progress: bool = True, **kwargs: Any):
    """Train (or read back from :data:`STORE`) the run of :func:`train_config` (same arguments)."""
    from ..train import run_training

    return run_training(train_config(settings, method, **kwargs), experiment=STORE, device=device,
                        progress=progress)


def robustness(run: Any, *, protocol: str, n_test: int, which: str = REPORTED_CHECKPOINT, device: str = "auto",
               eps: float | None = None) -> dict[str, Any]:
    """Clean and robust accuracy of a run's ``which`` checkpoint ('best' on validation or 'last') on
    the first ``n_test`` test images under the named ``protocol`` of :data:`rs_lib.robustness.PROTOCOLS`,
    at the run's own radius (`rs_lib.robustness.threat_eps` of its stored config; ``eps``: another radius,
    e.g. the paper's AutoAttack at 8/255). Computed once, then read from the run directory.

    Returns ``{"clean": ..., "robust": ..., "label": protocol label, "n": n_test, "checks": [...]}``
    (fractions; ``checks``: AutoAttack's sanity-check warnings, `robustness.RobustAccuracy.checks`), plus
    ``"adbd"`` (RayS's mean l-inf boundary distance of the correct examples) for ``protocol="rays"`` and
    ``"stages"`` (robust accuracy after each AutoAttack attack) for the AutoAttack protocols.
    """
    from .. import data

    params = robustness_params(run.config, protocol=protocol, n_test=n_test, which=which, eps=eps)
    eps = params["eps"]

    def compute() -> dict[str, Any]:
        model = run.load_model(which, device=device)
        test = data.load(run.config.dataset, "test", n=n_test)
        result = _robustness.robust_accuracy(model, test, protocol=protocol, eps=eps)
        out = {"clean": result.clean_accuracy, "robust": result.accuracy, "label": result.label, "n": n_test,
               "checks": list(result.checks)}
        out.update({} if result.stages is None else {"stages": result.stages})
        return out if result.adbd is None else {**out, "adbd": result.adbd}

    return run.cached("robustness", params, compute)


def robustness_params(config: TrainConfig, *, protocol: str, n_test: int, which: str = REPORTED_CHECKPOINT,
                      eps: float | None = None) -> dict[str, Any]:
    """What :func:`robustness`'s cached result on a run of ``config`` depends on (validated); the
    radius defaults to the run's own (`rs_lib.robustness.threat_eps`)."""
    _protocol("protocol", protocol)
    check.positive_int("n_test", n_test)
    check.choice("which", which, CHECKPOINTS)
    eps = _run_eps(config) if eps is None else check.positive("eps", eps)
    params = {"protocol": protocol, "n_test": n_test, "which": which, "eps": eps}
    if protocol.startswith("autoattack"):
        params["checks"] = 1  # results cached before the sanity checks were recorded are recomputed
    return params


def _run_eps(config: TrainConfig) -> float:
    """The run's own l-inf radius (`rs_lib.robustness.threat_eps`); ValueError if it has none."""
    eps = threat_eps(config)
    if eps is None:
        raise ValueError(f"the run's method {config.method!r} has no eps: give eps")
    return eps


def curvature_params(config: TrainConfig, settings: Any) -> dict[str, Any]:
    """What :func:`curvature`'s cached result on a run of ``config`` depends on (its kept epochs)."""
    return {"epochs": list(config.keep_epochs), "n": settings.hessian_n, "iters": settings.hessian_iters,
            "eps": settings.linf_eps, "step_size": method_params(settings, "backward_smoothing")["step_size"],
            "gamma": settings.bs_gamma, "objectives": list(settings.hessian_objectives),
            "weight_space": settings.weight_hessian, "weight_iters": 5 * settings.hessian_iters,
            "weight_points": ["clean", "random", "backward-smoothed"]}  # hessian.POINTS (weight Hessian at all three)


def curvature(run: Any, settings: Any, *, device: str = "auto") -> list[dict[str, Any]]:
    """Fig. 3: :func:`rs_lib.hessian.curvature_along_training` of a run's kept checkpoints on the
    first ``hessian_n`` training images, at radius ``linf_eps`` with Backward Smoothing's step and
    gamma; computed once, then read from the run directory."""
    from .. import data, hessian

    knobs = curvature_params(run.config, settings)

    def compute() -> list[dict[str, Any]]:
        probe_x, probe_y = data.load(settings.dataset, "train", n=settings.hessian_n).tensors()
        probe = hessian.Probe(knobs["eps"], knobs["step_size"], knobs["gamma"], knobs["objectives"], knobs["iters"])
        return hessian.curvature_along_training(
            lambda e: run.load_model(e, device=device), knobs["epochs"], probe_x, probe_y, probe,
            weight_space=knobs["weight_space"], weight_iters=knobs["weight_iters"])

    return run.cached("curvature", knobs, compute)


def cost(run: Any) -> dict[str, float]:
    """Training cost of a run: seconds per epoch (mean, training only) and milliseconds per iteration
    (comparable between runs on different numbers of images), and its forward / backward passes per
    iteration as its method states them."""
    summary = run.summary
    per_epoch = sum(summary["train_time_per_epoch"]) / summary["epochs"]
    iters = int((run.iterations()["epoch"] == 0).sum())
    passes = summary["passes_per_iteration"]
    return {"s_per_epoch": per_epoch, "ms_per_iter": 1000 * per_epoch / iters,
            "forward": passes["forward"], "backward": passes["backward"]}


# ------------------------------------------------------------------------------ knob checks


def _method(name: str, value: Any) -> Any:
    return check.choice(name, value, sorted(LABELS))


def _method_map(item_check):
    def checker(name: str, value: Any) -> Any:
        if not isinstance(value, Mapping) or not value:
            raise ValueError(f"{name} must be a non-empty mapping method -> value, got {value!r}")
        for key, v in value.items():
            _method(f"{name} key", key)
            item_check(f"{name}[{key!r}]", v)
        return value
    return checker


def _optional(item_check):
    def checker(name: str, value: Any) -> Any:
        return None if value is None else item_check(name, value)
    return checker


def _protocol(name: str, value: Any) -> Any:
    return check.choice(name, value, sorted(_robustness.PROTOCOLS))


def _protocol_sizes(name: str, value: Any) -> Any:
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{name} must be a non-empty mapping protocol -> number of test images, got {value!r}")
    for key, n in value.items():
        _protocol(f"{name} key", key)
        check.positive_int(f"{name}[{key!r}]", n)
    return value


def _objective(name: str, value: Any) -> Any:
    return check.choice(name, value, ("kl", "ce"))


#: Loop settings a notebook may change per run (Table 6: the acceleration techniques).
TRAINING_KEYS = ("epochs", "n_train", "schedule", "lr", "peak", "milestones", "momentum", "amp")


def _training(name: str, value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of loop settings, got {value!r}")
    for key in value:
        check.choice(f"{name} key", key, TRAINING_KEYS)
    try:
        TrainConfig(**value)   # each value checked by the loop's own rules (e.g. schedule, amp)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    return dict(value)


# ------------------------------------------------------------------------------ typed settings

_methods = list_of(_method)
_maybe_methods = list_of(_method, allow_empty=True)


@dataclass(frozen=True, kw_only=True)
class BackwardSmoothingSettings(TrainKnobs):
    """The chapter knobs every ``bs_*`` notebook shares (:func:`train_config` derives each method's
    hyperparameters from them): the radius, step sizes as multiples of eps, TRADES betas, Backward
    Smoothing's gamma, GradAlign's lambda, the multi-step baselines' warm-up and training subset,
    and the runs whose checkpoints Fig. 3 probes."""

    linf_eps: float = knob(check.positive)
    step_ratios: Mapping[str, float] = knob(_method_map(check.positive))
    trades_betas: Mapping[str, float] = knob(_method_map(check.non_negative))
    bs_gamma: float = knob(check.non_negative)
    gradalign_lam: float = knob(check.non_negative)
    gradalign_form: str = knob(lambda name, value: check.choice(name, value, sorted(GRADALIGN_FORMS)))
    clamp_start: bool = knob(check.flag)
    multistep_warmup_epochs: float = knob(check.non_negative)
    multistep_n_train: int | None = knob(_optional(check.positive_int))
    hessian_methods: list[str] = knob(_maybe_methods)
    hessian_epochs: list[int] = knob(list_of(lambda n, v: check.integer(n, v, low=0)))


@dataclass(frozen=True, kw_only=True)
class LossIncrement(BackwardSmoothingSettings):
    """``bs_loss_increment`` (Fig. 1, Fig. 5)."""

    experiment: ClassVar[str] = "bs_loss_increment"
    increment_methods: list[str] = knob(_methods)
    sanity_eps: float | None = knob(_optional(check.positive))
    sanity_methods: list[str] = knob(_maybe_methods)
    increment_window: int = knob(check.positive_int)
    long_methods: list[str] = knob(_maybe_methods)
    long_training: Mapping[str, Any] = knob(_training)


@dataclass(frozen=True, kw_only=True)
class Hessian(BackwardSmoothingSettings):
    """``bs_hessian`` (Fig. 3)."""

    experiment: ClassVar[str] = "bs_hessian"
    hessian_n: int = knob(check.positive_int)
    hessian_iters: int = knob(check.positive_int)
    hessian_objectives: list[str] = knob(list_of(_objective))
    weight_hessian: bool = knob(check.flag)


@dataclass(frozen=True, kw_only=True)
class Comparison(BackwardSmoothingSettings):
    """``bs_comparison`` (Tables 1-6, 13-14)."""

    experiment: ClassVar[str] = "bs_comparison"
    compare_methods: list[str] = knob(_methods)
    pair_methods: list[str] = knob(_methods)
    seeds: list[int] = knob(seed_list)
    test_protocols: Mapping[str, int] = knob(_protocol_sizes)
    aa_protocol: str = knob(_protocol)
    aa_eps: float | None = knob(_optional(check.positive))
    aa_methods: list[str] = knob(_maybe_methods)
    aa_n_test: int = knob(check.positive_int)
    rays_protocol: str | None = knob(_optional(_protocol))
    extra_eps: list[float] = knob(list_of(check.positive, allow_empty=True))
    extra_eps_methods: list[str] = knob(_maybe_methods)
    accel_methods: list[str] = knob(_maybe_methods)
    accel_training: Mapping[str, Any] = knob(_training)


@dataclass(frozen=True, kw_only=True)
class _TestedAt(BackwardSmoothingSettings):
    n_test: int = knob(check.positive_int)
    test_protocol: str = knob(_protocol)


@dataclass(frozen=True, kw_only=True)
class BetaTradeoff(_TestedAt):
    """``bs_beta_tradeoff`` (Fig. 4, Table 12)."""

    experiment: ClassVar[str] = "bs_beta_tradeoff"
    beta_grid: list[float] = knob(list_of(check.non_negative))
    tradeoff_methods: list[str] = knob(_methods)
    point_methods: list[str] = knob(_maybe_methods)


@dataclass(frozen=True, kw_only=True)
class Stability(_TestedAt):
    """``bs_stability`` (Fig. 6, arXiv Fig. 1)."""

    experiment: ClassVar[str] = "bs_stability"
    stability_eps: float = knob(check.positive)
    seeds: list[int] = knob(seed_list)
    fast_at_step_ratios: list[float] = knob(list_of(check.positive))
    stability_methods: list[str] = knob(_maybe_methods)


@dataclass(frozen=True, kw_only=True)
class Ablations(_TestedAt):
    """``bs_ablations`` (Tables 7-11, 15)."""

    experiment: ClassVar[str] = "bs_ablations"
    step_ratio_grid: list[float] = knob(list_of(check.positive))
    gamma_grid: list[float] = knob(list_of(check.non_negative))
    num_points_grid: list[int] = knob(list_of(check.positive_int))
    variant_methods: list[str] = knob(_methods)


SETTINGS = {cls.experiment: cls for cls in (LossIncrement, Hessian, Comparison, BetaTradeoff, Stability, Ablations)}
