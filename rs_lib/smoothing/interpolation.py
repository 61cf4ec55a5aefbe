"""SmoothMix's interpolation analysis: the smoothed soft prediction along x -> its adversary (Fig. 2, 5).

SmoothMix (Jeong et al. 2021) motivates its mixup by how the soft smoothed classifier
F̂(z) = (1/m) Σ_i softmax(f(z + δ_i)) behaves on the segment from an input x to an adversarial
point x̃: an over-confident model keeps F̂_y high almost to x̃, then flips.  Diagnostics only: no
certificate is involved and nothing here carries a guarantee.

Public names:

* ``interpolation_confidence``: F̂ at mixing ratios λ of (1 − λ)x + λx̃, the same m noise vectors
  for every λ (cost: len(ratios) · m forwards per input);
* ``equal_confidence_ratio``: the first λ at which F̂_y stops being the largest (Fig. 5);
* ``SmoothMixAscent`` and ``adversarial_interpolation``: attack with SmoothMix's unrestricted
  ascent, then follow F̂ (cost: steps · m forwards and backwards, plus the path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rs_lib import _validate as check
from rs_lib import attacks, methods, models

from .sampler import check_inputs


@dataclass(frozen=True, kw_only=True)
class SmoothMixAscent:
    """SmoothMix's attack on the smoothed classifier at ``sigma``: ``steps`` normalised gradient
    steps of ``step_size`` (l2, unrestricted) on −log F̂_y estimated with ``num_noise`` noise vectors
    (SmoothMix eq. 8; ``attacks.smoothmix_attack``)."""

    sigma: float
    step_size: float
    steps: int
    num_noise: int

    def __post_init__(self) -> None:
        check.positive("sigma", self.sigma)
        check.positive("step_size", self.step_size)
        check.positive_int("steps", self.steps)
        check.positive_int("num_noise", self.num_noise)


def interpolation_confidence(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, *, sigma: float,
                             num_noise: int, ratios: Sequence[float] | np.ndarray,
                             generator: torch.Generator | None = None) -> np.ndarray:
    """Soft smoothed prediction F̂ along x(λ) = (1 − λ)·x + λ·x_adv (SmoothMix Fig. 2, eq. 9).

    F̂(z) = (1/m) Σ_i softmax(f(z + δ_i)) with the same m = ``num_noise`` noise vectors for every λ
    of an example (drawn from ``generator``), so each path is a deterministic curve.  Returns an
    array (N, len(ratios), C); the model runs in eval mode (restored after), without gradients.
    """
    check_inputs("x", x, batched=True)
    check_inputs("x_adv", x_adv, batched=True)
    if x.shape != x_adv.shape:
        raise ValueError(f"x_adv must have x's shape {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    check.positive("sigma", sigma)
    check.positive_int("num_noise", num_noise)
    ratios = np.asarray(ratios, dtype=float).reshape(-1)
    if ratios.size == 0 or (ratios < 0).any() or (ratios > 1).any():
        raise ValueError(f"ratios must be mixing ratios in [0, 1], got {list(ratios)}")
    device = models.device_of(model)
    x, x_adv = x.to(device), x_adv.to(device)
    noise = attacks.draw_noise(x, sigma=sigma, num_noise=num_noise, generator=generator)
    with methods.mode(model, train=False), torch.inference_mode():
        path = [attacks.smoothed_softmax(model, (1 - lam) * x + lam * x_adv, noise) for lam in ratios]
    return torch.stack(path, dim=1).cpu().numpy()


def equal_confidence_ratio(confidence: np.ndarray, labels: Sequence[int] | np.ndarray,
                           ratios: Sequence[float] | np.ndarray) -> np.ndarray:
    """The smallest mixing ratio at which F̂_y stops being the largest (SmoothMix Fig. 5).

    ``confidence`` (N, K, C) from ``interpolation_confidence`` on the ratios (K, increasing).  The
    margin F̂_y − max_{c≠y} F̂_c is interpolated linearly between grid points to its first zero.
    NaN where the clean point is already misclassified or the path never changes the prediction.
    """
    confidence = np.asarray(confidence, dtype=float)
    ratios = np.asarray(ratios, dtype=float).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if confidence.ndim != 3 or confidence.shape[:2] != (labels.size, ratios.size):
        raise ValueError(f"confidence must have shape (N={labels.size}, K={ratios.size}, C), "
                         f"got {confidence.shape}")
    if (np.diff(ratios) <= 0).any():
        raise ValueError("ratios must be increasing")
    rows = np.arange(labels.size)
    true = confidence[rows, :, labels]
    other = confidence.copy()
    other[rows, :, labels] = -np.inf
    margin = true - other.max(axis=2)                       # (N, K)
    out = np.full(labels.size, np.nan)
    for i in range(labels.size):
        if margin[i, 0] <= 0:
            continue
        crossing = np.flatnonzero(margin[i] <= 0)
        if crossing.size == 0:
            continue
        k = crossing[0]
        m0, m1 = margin[i, k - 1], margin[i, k]
        out[i] = ratios[k - 1] + (ratios[k] - ratios[k - 1]) * m0 / (m0 - m1)
    return out


def adversarial_interpolation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, ascent: SmoothMixAscent,
                              ratios: Sequence[float] | np.ndarray,
                              generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
    """SmoothMix Fig. 2 and 5 for a batch: attack, then follow F̂ from x to the adversarial point.

    x̃ comes from SmoothMix's unrestricted ascent (``attacks.smoothmix_attack`` with ``ascent``:
    ``steps`` normalised steps of ``step_size`` on −log F̂_y at ``sigma`` with ``num_noise`` noise
    vectors), then F̂ is evaluated along
    (1 − λ)x + λx̃ (``interpolation_confidence``, fresh noise shared by all λ).  Returns ``true``
    (N, K): F̂_y; ``other`` (N, K): F̂ of the class c* most confident at x̃ besides y;
    ``other_class`` (N,): c*; ``ratio`` (N,): the equal-confidence mixing ratio (NaN if none).
    The model must be in eval mode for the attack (as the reference); it is left as it was.
    """
    check_inputs("x", x, batched=True)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape[:1]:
        raise ValueError(f"y must be a tensor of {x.shape[0]} labels, got {getattr(y, 'shape', y)!r}")
    device = models.device_of(model)
    x, y = x.to(device), y.to(device)
    adversary = attacks.SmoothMix(ascent.step_size, ascent.steps, ascent.sigma, ascent.num_noise)
    x_adv = attacks.smoothmix_attack(model, x, y, adversary, generator=generator).x_adv
    conf = interpolation_confidence(model, x, x_adv, sigma=ascent.sigma, num_noise=ascent.num_noise,
                                    ratios=ratios, generator=generator)
    labels = y.cpu().numpy()
    rows = np.arange(labels.size)
    at_adv = conf[:, -1].copy()
    at_adv[rows, labels] = -np.inf
    other = at_adv.argmax(1)
    return {"true": conf[rows, :, labels], "other": conf[rows, :, other], "other_class": other,
            "ratio": equal_confidence_ratio(conf, labels, ratios)}
