"""Validation metrics: the per-epoch accuracies the training loop records (clean, Gaussian noise,
FGSM, PGD), and clean / Gaussian-noise accuracy of a model.

A validation metric maps (model, x, y, params, generator) to a boolean tensor "correct" per
example; :func:`evaluate` averages it over a dataset in batches with the model in eval mode
(RobustBench habit: evaluation never runs in train mode).  The training loop computes the
metrics named in its config after every epoch on a fixed validation subset.  Their attacks are
cheap model-selection signals (FGSM: one pass; PGD-k: k passes), not robust-accuracy numbers to
report: those come from the named protocols of :mod:`rs_lib.robustness`.

Public names: `register_metric`, :data:`VAL_METRICS`, `metric_params`, `evaluate`,
`accuracy_under_noise`, `pgd_metric_settings`; metrics 'clean', 'gaussian' (``sigma``), 'fgsm'
(``eps``) and 'pgd' (``eps``, ``pgd_steps``, ``pgd_step_size``, ``pgd_random_start``).
The section at the end (PREDICT of a smoothed classifier under attack: `empirical_accuracy`,
`EmpiricalAccuracy`) moves next to the smoothed classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from . import _validate as check
from . import attacks as _attacks
from .robustness import PGD_STEP_RATIO
from .robustness import labelled_batches as _labelled_batches  # noqa: F401 (used by empirical_accuracy below)

MetricFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, Mapping[str, Any], torch.Generator], torch.Tensor]

VAL_METRICS: dict[str, MetricFn] = {}
_PARAM_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {}


def register_metric(name: str, *, check_params: Callable[[Mapping[str, Any]], None] | None = None):
    """Decorator adding a per-example correctness function to :data:`VAL_METRICS`.

    ``check_params(params)`` validates the ``eval_params`` the metric reads (raises ValueError).
    """

    def wrap(fn: MetricFn) -> MetricFn:
        VAL_METRICS[name] = fn
        if check_params is not None:
            _PARAM_CHECKS[name] = check_params
        return fn

    return wrap


def _needs_sigma(params: Mapping[str, Any]) -> None:
    if "sigma" not in params:
        raise ValueError("eval_params must give 'sigma' for the 'gaussian' validation metric")
    check.positive("eval_params['sigma']", params["sigma"])


@register_metric("clean")
def _clean(model, x, y, params, generator):
    with torch.inference_mode():
        return model(x).argmax(1) == y


@register_metric("gaussian", check_params=_needs_sigma)
def _gaussian(model, x, y, params, generator):
    """Accuracy of the base classifier on x + N(0, sigma² I) (one draw per example)."""
    sigma = params["sigma"]
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    with torch.inference_mode():
        return model(x + sigma * noise).argmax(1) == y


def metric_params(names: Iterable[str], params: Mapping[str, Any]) -> None:
    """Check metric names and the parameters they need, before any training starts."""
    for name in names:
        check.choice("val_metrics", name, sorted(VAL_METRICS))
        if name in _PARAM_CHECKS:
            _PARAM_CHECKS[name](params)


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], metrics: Iterable[str], *,
             params: Mapping[str, Any] | None = None, seed: int = 0) -> dict[str, float]:
    """Mean of each metric over ``batches`` (model in eval mode, restored after).

    Returns ``{f"{name}_acc": accuracy}``.  Randomised metrics draw from a generator seeded with
    ``seed`` so that repeated evaluations of one model agree.
    """
    metrics = list(metrics)
    params = dict(params or {})
    metric_params(metrics, params)
    was_training = model.training
    model.eval()
    correct = {m: 0 for m in metrics}
    total = 0
    generator = None
    try:
        for x, y in batches:
            check.images("batches' x", x)
            check.labels("batches' y", y)
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(seed)
            for m in metrics:
                correct[m] += int(VAL_METRICS[m](model, x, y, params, generator).sum())
            total += len(y)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate: no examples in batches")
    return {f"{m}_acc": correct[m] / total for m in metrics}


def accuracy_under_noise(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                         sigmas: Iterable[float], *, seed: int = 0) -> dict[float, float]:
    """Base-classifier accuracy on x + N(0, sigma² I) for each sigma (sigma = 0: clean)."""
    batches = list(batches)
    out = {}
    for sigma in sigmas:
        check.non_negative("sigma", sigma)
        if sigma == 0:
            out[sigma] = evaluate(model, batches, ["clean"], seed=seed)["clean_acc"]
        else:
            out[sigma] = evaluate(model, batches, ["gaussian"], params={"sigma": sigma}, seed=seed)["gaussian_acc"]
    return out


def _needs_eps(params: Mapping[str, Any]) -> None:
    if "eps" not in params:
        raise ValueError("eval_params must give 'eps' (l-inf radius, pixel units) for the 'fgsm' and 'pgd' "
                         "validation metrics")
    check.positive("eval_params['eps']", params["eps"])


def _pgd_params(params: Mapping[str, Any]) -> None:
    _needs_eps(params)
    if "pgd_steps" in params:
        check.positive_int("eval_params['pgd_steps']", params["pgd_steps"])
    if "pgd_step_size" in params:
        check.positive("eval_params['pgd_step_size']", params["pgd_step_size"])
    if not isinstance(params.get("pgd_random_start", True), bool):
        raise ValueError(f"eval_params['pgd_random_start'] must be True or False, got {params['pgd_random_start']!r}")


def pgd_metric_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The 'pgd' validation metric's settings from ``eval_params``: ``eps``, ``pgd_steps`` (20),
    ``pgd_step_size`` (eps/4, the BS ratio 0.0078/0.031) and ``pgd_random_start`` (True, the
    reference notes' §7 pilot; random starts see through the gradient masking of a collapsed model)."""
    _pgd_params(params)
    eps = params["eps"]
    return {"eps": eps, "steps": params.get("pgd_steps", 20),
            "step_size": params.get("pgd_step_size", PGD_STEP_RATIO * eps),
            "random_start": params.get("pgd_random_start", True)}


@register_metric("fgsm", check_params=_needs_eps)
def _fgsm(model, x, y, params, generator):
    """FGSM from x with step eps (no random start). With 'clean' and 'pgd' it shows catastrophic
    overfitting: FGSM accuracy above clean accuracy while PGD accuracy falls to 0."""
    x_adv = _attacks.fgsm(model, x, y, eps=params["eps"]).x_adv
    with torch.inference_mode():
        return model(x_adv).argmax(1) == y


@register_metric("pgd", check_params=_pgd_params)
def _pgd(model, x, y, params, generator):
    """PGD-k on CE (settings: `pgd_metric_settings`), random start from ``generator``."""
    x_adv = _attacks.pgd(model, x, y, generator=generator, **pgd_metric_settings(params))
    with torch.inference_mode():
        return model(x_adv).argmax(1) == y



# --------------------------------------------------------------------------------------------
# Empirical robust accuracy of a smoothed classifier (SmoothAdv §4.3, Fig. 3/7)
# --------------------------------------------------------------------------------------------

from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

SMOOTHED_ATTACKS = ("pgd", "ddn", "base_pgd")


class EmpiricalAccuracy(NamedTuple):
    """Per-example PREDICT outcome on the attacked inputs: ``predictions`` (int64, -1 = abstain),
    ``labels``, ``correct`` (bool: prediction == label, abstain counts as wrong) and their mean."""

    predictions: np.ndarray
    labels: np.ndarray
    correct: np.ndarray
    accuracy: float

    @property
    def abstain_rate(self) -> float:
        return float((self.predictions == -1).mean())


def empirical_accuracy(model: nn.Module, data: Any, *, sigma: float, eps: float, attack: str = "pgd",
                       steps: int = 20, num_noise: int = 32, n: int = 1000, alpha: float = 0.001,
                       batch_size: int = 1000, estimator: str = "plugin",
                       generator: torch.Generator | None = None, progress: bool = False) -> EmpiricalAccuracy:
    """Empirical l2 robust accuracy of the smoothed classifier g (Salman et al. 2019, §4.3, Fig. 3/7).

    Each input x (label y) is attacked with ``attack``, then classified by Cohen et al.'s PREDICT on
    the adversarial input with ``n`` fresh noise samples at level ``alpha`` (reference ``predict.py``);
    an example counts as correct iff PREDICT returns y (abstentions are wrong). Attacks, all l2 with
    radius ``eps`` (pixel units; ``eps = 0``: no attack, i.e. PREDICT accuracy on clean inputs):

    * ``'pgd'``: SmoothAdv-PGD on −log F̂_y, m_test = ``num_noise`` noise vectors drawn once per
      input and reused by all ``steps`` steps (step 2·eps/steps, zero start); ``estimator='stein'``
      uses the gradient-free estimate (SmoothAdv eq. 7, Fig. 9).
    * ``'ddn'``: SmoothAdv-DDN with the reference's evaluation settings, start radius 1.0 and
      γ = 1 − (3/510/eps)^(1/steps) (needs eps > 3/510).
    * ``'base_pgd'``: the same PGD on the base classifier f (zero noise; the reference's
      ``--base-attack``, "vanilla PGD" in Fig. 3/7).

    ``data``: an ``ImageData``, a pair (x (N, C, H, W) in [0, 1], y (N,)) or an iterable of such
    (x, y) batches. The model is attacked and evaluated in eval mode (its mode is restored after).
    Inputs are attacked in chunks of ``batch_size // num_noise`` so that an attack forward holds about
    ``batch_size`` noisy copies; PREDICT forwards ``batch_size`` samples at a time. Randomness: the attack noise comes from
    ``generator`` (any device; None = the global RNG); PREDICT's noise for example i from
    ``rs_lib.smoothing.example_generator(s, i)`` with one seed s drawn first from ``generator``, so the
    PREDICT noise of an example does not depend on the attack, eps or the chunking.
    """
    from . import attacks
    from . import data as data_mod
    from . import smoothing

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check.positive("sigma", sigma)
    check.non_negative("eps", eps)
    check.choice("attack", attack, SMOOTHED_ATTACKS)
    check.positive_int("steps", steps)
    check.positive_int("num_noise", num_noise)
    check.positive_int("n", n)
    check.probability("alpha", alpha)
    check.positive_int("batch_size", batch_size)
    check.choice("estimator", estimator, ("plugin", "stein"))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if attack == "ddn" and eps > 0 and eps <= 3 / 510:
        raise ValueError(f"eps must be > 3/510 for attack='ddn' (its gamma needs it), got {eps!r}")
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    chunk = max(1, batch_size // num_noise)
    chunks = _labelled_batches(data, chunk, device)
    total = len(data) if isinstance(data, data_mod.ImageData) else \
        len(data[0]) if isinstance(data, (tuple, list)) and len(data) == 2 else None
    sample_device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=sample_device))

    was_training = model.training
    model.eval()
    predictions: list[int] = []
    labels: list[int] = []
    smooth = None
    try:
        with tqdm(total=total, desc=f"empirical {attack} eps={eps:g}", disable=None if progress else True,
                  unit="input") as bar:
            for x_batch, y_batch in chunks:
                for start in range(0, len(x_batch), chunk):
                    x, y = x_batch[start:start + chunk], y_batch[start:start + chunk]
                    if smooth is None:
                        with torch.no_grad():
                            num_classes = model(x[:1]).shape[1]
                        smooth = smoothing.Smooth(model, num_classes, sigma)
                    x_adv = _attack_smoothed(attacks, model, x, y, attack=attack, eps=eps, steps=steps,
                                             sigma=sigma, num_noise=num_noise, estimator=estimator,
                                             generator=generator)
                    first = len(predictions)
                    gens = [smoothing.example_generator(seed, first + k, device) for k in range(len(x))]
                    predictions += smooth.predict_batch(x_adv, n, alpha, batch_size, generators=gens)
                    labels += y.tolist()
                    bar.update(len(x))
    finally:
        model.train(was_training)
    if not predictions:
        raise ValueError("data must hold at least one example")
    pred, lab = np.asarray(predictions, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    correct = pred == lab
    return EmpiricalAccuracy(pred, lab, correct, float(correct.mean()))


def _attack_smoothed(attacks: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str,
                     eps: float, steps: int, sigma: float, num_noise: int, estimator: str,
                     generator: torch.Generator | None) -> torch.Tensor:
    """The adversarial inputs of one chunk (x itself when eps = 0)."""
    if eps == 0:
        return x
    if attack == "base_pgd":
        zero = torch.zeros((x.shape[0], 1, *x.shape[1:]), dtype=x.dtype, device=x.device)
        return attacks.smoothadv_pgd(model, x, y, eps=eps, steps=steps, sigma=0.0, num_noise=1, noise=zero,
                                     generator=generator).x_adv
    if attack == "ddn":
        gamma = 1 - (3 / 510 / eps) ** (1 / steps)
        return attacks.smoothadv_ddn(model, x, y, eps=eps, steps=steps, sigma=sigma, num_noise=num_noise,
                                     gamma=gamma, init_norm=1.0, generator=generator).x_adv
    return attacks.smoothadv_pgd(model, x, y, eps=eps, steps=steps, sigma=sigma, num_noise=num_noise,
                                 estimator=estimator, generator=generator).x_adv
