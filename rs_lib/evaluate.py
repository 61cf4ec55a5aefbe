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
PREDICT of a smoothed classifier under attack (`empirical_accuracy`) lives next to the smoothed
classifier, in :mod:`rs_lib.smoothing.attack`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from . import _validate as check
from . import attacks as _attacks
from . import models as _models

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
    correct = {m: 0 for m in metrics}
    total = 0
    generator = None
    with _models.mode(model, train=False):
        for x, y in batches:
            check.images("batches' x", x)
            check.labels("batches' y", y)
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(seed)
            for m in metrics:
                correct[m] += int(VAL_METRICS[m](model, x, y, params, generator).sum())
            total += len(y)
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
    check.flag("eval_params['pgd_random_start']", params.get("pgd_random_start", True))


def pgd_metric_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The 'pgd' validation metric's settings from ``eval_params``: ``eps``, ``pgd_steps`` (20),
    ``pgd_step_size`` (eps/4, the BS ratio 0.0078/0.031) and ``pgd_random_start`` (True, the
    reference notes' §7 pilot; random starts see through the gradient masking of a collapsed model)."""
    _pgd_params(params)
    eps = params["eps"]
    return {"eps": eps, "steps": params.get("pgd_steps", 20), "step_size": params.get("pgd_step_size", _attacks.pgd_step(eps)),
            "random_start": params.get("pgd_random_start", True)}


@register_metric("fgsm", check_params=_needs_eps)
def _fgsm(model, x, y, params, generator):
    """FGSM from x with step eps (no random start). With 'clean' and 'pgd' it shows catastrophic
    overfitting: FGSM accuracy above clean accuracy while PGD accuracy falls to 0."""
    x_adv = _attacks.fgsm(model, x, y, _attacks.FGSM(params["eps"])).x_adv
    with torch.inference_mode():
        return model(x_adv).argmax(1) == y


@register_metric("pgd", check_params=_pgd_params)
def _pgd(model, x, y, params, generator):
    """PGD-k on CE (settings: `pgd_metric_settings`), random start from ``generator``."""
    x_adv = _attacks.pgd(model, x, y, _attacks.PGD(**pgd_metric_settings(params)), generator=generator)
    with torch.inference_mode():
        return model(x_adv).argmax(1) == y
