"""Evaluation: clean and Gaussian-noise accuracy, and the per-epoch validation metrics registry.

A validation metric maps (model, x, y, params, generator) to a boolean tensor "correct" per
example; :func:`evaluate` averages it over a dataset in batches with the model in eval mode
(RobustBench habit: evaluation never runs in train mode).  The training loop computes the
metrics named in its config after every epoch on a fixed validation subset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from . import _validate as check

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
