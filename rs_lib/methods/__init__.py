"""Training objectives: one function per method, behind one registry and one training loop.

Every objective has the shape of TRADES' ``trades_loss``: it takes the model and a batch and
returns the loss plus a few named statistics, with no optimiser side effects.  It chooses the
BatchNorm mode of each phase itself (attacks in eval mode where the reference does so, the
training forward in train mode) and the loop relies on it leaving the model in train mode.

A method is registered with its hyperparameters (a frozen dataclass whose defaults are the
paper's) and its cost per iteration in forward / backward passes, counted in batch-equivalents
(a forward of m noisy copies of the batch counts m; an input-gradient backward counts 1, the
weight backward counts 1).

Public names: `METHODS`, `register`, `get_method`, `method_config`, `resolved_params`, `added_option`
(an option added after runs were stored), `Method`, `Passes`, `StepContext`, `StepOutput`, `scalar`,
`warmup_factor` (the one linear warm-up rule, the loop's and the methods' own), and `mode` (re-exported
from :mod:`rs_lib.models`). Attacks come from :mod:`rs_lib.attacks`, each with its config dataclass.

Hyperparameter spellings are stored run keys (``method_params`` in ``config.json``, hence the run's
hash) and stay as first stored: λ is ``lbd`` for the smoothing regularisers and ``lam`` for
GradAlign (``lam``, ``lam_rule``, GradAlign's own code's names); renaming either would re-key every
stored run of those methods.

The package holds the registry and the two foundation objectives (``standard``, ``gaussian``);
the chapters' objectives live in submodules imported at the end of this file:
:mod:`rs_lib.methods.adversarial` (Backward Smoothing and its baselines) and
:mod:`rs_lib.methods.smoothing` (SmoothAdv, SmoothMix and the other smoothing trainers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as check
from ..models import mode  # noqa: F401  (re-exported: the objectives' phase helper)


@dataclass(frozen=True)
class Passes:
    """Forward and backward passes per training iteration, in batch-equivalents.

    ``double_backward`` counts back-propagations through a gradient's own graph (GradAlign's
    ``create_graph`` gradient): real work that no module hook sees, so it is not part of ``backward``.
    """

    forward: float
    backward: float
    double_backward: float = 0.0


@dataclass
class StepContext:
    """What an objective may know about where training is.

    ``warmup`` is the loop's hyperparameter warm-up factor in [0, 1] (1 when no warm-up is
    configured); methods with an eps (or other) warm-up multiply by it.
    """

    epoch: int
    iteration: int
    progress: float
    generator: torch.Generator
    num_classes: int
    warmup: float = 1.0


@dataclass
class StepOutput:
    """The loss to back-propagate and named statistics (detached scalars) for the metrics log."""

    loss: torch.Tensor
    stats: dict[str, torch.Tensor | float] = field(default_factory=dict)


Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, Any, StepContext], StepOutput]


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type
    objective: Objective
    passes: Callable[[Any], Passes]
    summary: str


METHODS: dict[str, Method] = {}


def register(name: str, config_cls: type, *, passes: Callable[[Any], Passes]):
    """Decorator: add an objective to :data:`METHODS` under ``name``."""

    def wrap(fn: Objective) -> Objective:
        if name in METHODS:
            raise RuntimeError(f"method {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        METHODS[name] = Method(name, config_cls, fn, passes, doc[0] if doc else name)
        return fn

    return wrap


#: Field metadata of an option added to a method after runs were stored: at its default value it is
#: left out of the resolved parameters (`resolved_params`), so the store hash of every run stored
#: before the option existed stays the same and those runs are read back, not retrained.
OMIT_DEFAULT = "omit_from_hash_at_default"


def added_option(default: Any) -> Any:
    """A dataclass field with ``default`` that `resolved_params` leaves out while it has that value."""
    return field(default=default, metadata={OMIT_DEFAULT: True})


def resolved_params(cfg: Any) -> dict[str, Any]:
    """The parameters of a method's config dataclass, defaults filled in, except `added_option`
    fields at their default (what a run's config and store hash record)."""
    out = dataclasses.asdict(cfg)
    for f in dataclasses.fields(cfg):
        if f.metadata.get(OMIT_DEFAULT) and getattr(cfg, f.name) == f.default:
            del out[f.name]
    return out


def get_method(name: str) -> Method:
    check.choice("method", name, sorted(METHODS))
    return METHODS[name]


def method_config(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The frozen hyperparameter dataclass of ``name`` with ``params`` over the paper defaults.

    Unknown parameter names are errors (listing the known ones); values are validated by the
    dataclass.
    """
    method = get_method(name)
    params = dict(params or {})
    known = [f.name for f in dataclasses.fields(method.config_cls)]
    for key in params:
        if key not in known:
            allowed = ", ".join(known) if known else "none"
            raise ValueError(f"method_params: {key!r} is not a parameter of method {name!r} (allowed: {allowed})")
    return method.config_cls(**params)


def warmup_factor(warmup_epochs: float, epoch: int, progress: float = 0.0, *, by: str = "epoch") -> float:
    """The linear warm-up factor in [0, 1] of every warm-up in the book (1 when ``warmup_epochs`` is 0).

    ``by='epoch'``: min(1, (epoch + 1) / warmup_epochs), constant within an epoch (SmoothAdv's and
    SmoothMix's per-method warm-up); ``by='iteration'``: min(1, progress / warmup_epochs), with
    ``progress`` the fractional epochs done (the loop's ``TrainConfig.warmup_by`` default).
    """
    if warmup_epochs == 0:
        return 1.0
    if by == "epoch":
        return min(1.0, (epoch + 1) / warmup_epochs)
    return min(1.0, progress / warmup_epochs)


def scalar(t: torch.Tensor) -> torch.Tensor:
    """A detached scalar for the statistics dict."""
    return t.detach().float()


# --------------------------------------------------------------------------------------------
# Natural and Gaussian-noise training (the foundation's two objectives)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StandardConfig:
    """Cross-entropy on clean inputs: no hyperparameters."""


@register("standard", StandardConfig, passes=lambda cfg: Passes(forward=1, backward=1))
def standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: StandardConfig,
             ctx: StepContext) -> StepOutput:
    """Standard training: CE(f(x), y), train mode.  1 forward + 1 backward."""
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    return StepOutput(loss, {"ce": scalar(loss), "acc": scalar((logits.argmax(1) == y).float().mean())})


@dataclass(frozen=True)
class GaussianConfig:
    """Gaussian data augmentation (Cohen et al. 2019, §3.3 and their ``train.py``).

    sigma: standard deviation of the N(0, sigma² I) noise added in pixel space ([0, 1] units).
    """

    sigma: float = 0.25

    def __post_init__(self) -> None:
        check.positive("sigma", self.sigma)


@register("gaussian", GaussianConfig, passes=lambda cfg: Passes(forward=1, backward=1))
def gaussian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: GaussianConfig,
             ctx: StepContext) -> StepOutput:
    """Gaussian-noise training: CE(f(x + δ), y), δ ~ N(0, σ² I), no clamping.  1 forward + 1 backward."""
    noise = torch.randn(x.shape, generator=ctx.generator, device=ctx.generator.device,
                        dtype=x.dtype).to(x.device)
    logits = model(x + cfg.sigma * noise)
    loss = F.cross_entropy(logits, y)
    return StepOutput(loss, {"ce": scalar(loss), "acc": scalar((logits.argmax(1) == y).float().mean())})


# The chapters' objectives register themselves on import.
import importlib as _importlib  # noqa: E402

for _chapter in ("adversarial", "smoothing"):
    try:
        _importlib.import_module(f"{__name__}.{_chapter}")
    except ModuleNotFoundError as _err:
        if _err.name != f"{__name__}.{_chapter}":
            raise
