"""PREDICT under attack: the empirical l2 robust accuracy of a smoothed classifier (SmoothAdv §4.3).

Each input is attacked, then classified by Cohen et al.'s PREDICT with fresh noise; an example
counts as correct iff PREDICT returns its label (abstentions are wrong).  What it guarantees: each
PREDICT answer is g's with probability at least 1 - alpha over its noise; the accuracy itself is an
*upper* bound on g's robust accuracy at eps (an attack finds some adversarial points, not all),
the empirical counterpart of CERTIFY's lower bound.

Public names:

* ``SmoothedAttack``: which attack at which l2 radius (``'pgd'``: SmoothAdv-PGD, ``'ddn'``:
  SmoothAdv-DDN, ``'base_pgd'``: PGD on the base classifier); cost ``steps * num_noise``
  forwards and backwards per input;
* ``PredictSettings``: PREDICT's ``n``, ``alpha`` and forward ``batch_size``; cost n forwards per
  input;
* ``empirical_accuracy`` -> ``EmpiricalAccuracy`` (per-example predictions, labels, correctness,
  accuracy and abstention rate); ``SMOOTHED_ATTACKS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rs_lib import _validate as check
from rs_lib import attacks, methods
from rs_lib import data as data_mod

from .classifier import ABSTAIN, Smooth
from .sampler import example_generator, model_device

SMOOTHED_ATTACKS = ("pgd", "ddn", "base_pgd")


@dataclass(frozen=True, kw_only=True)
class SmoothedAttack:
    """An l2 attack on the smoothed classifier at radius ``eps`` (pixel units; ``eps = 0``: none,
    i.e. PREDICT accuracy on clean inputs), with ``steps`` steps:

    * ``'pgd'``: SmoothAdv-PGD on −log F̂_y, m_test = ``num_noise`` noise vectors drawn once per
      input and reused by all steps (step 2·eps/steps, zero start); ``estimator='stein'`` uses the
      gradient-free estimate (SmoothAdv eq. 7, Fig. 9).
    * ``'ddn'``: SmoothAdv-DDN with the reference's evaluation settings, start radius 1.0 and
      γ = 1 − (3/510/eps)^(1/steps) (needs eps > 3/510).
    * ``'base_pgd'``: the same PGD on the base classifier f (zero noise; the reference's
      ``--base-attack``, "vanilla PGD" in Fig. 3/7).
    """

    eps: float
    attack: str = "pgd"
    steps: int = 20
    num_noise: int = 32
    estimator: str = "plugin"

    def __post_init__(self) -> None:
        check.non_negative("eps", self.eps)
        check.choice("attack", self.attack, SMOOTHED_ATTACKS)
        check.positive_int("steps", self.steps)
        check.positive_int("num_noise", self.num_noise)
        check.choice("estimator", self.estimator, ("plugin", "stein"))
        if self.attack == "ddn" and 0 < self.eps <= 3 / 510:
            raise ValueError(f"eps must be > 3/510 for attack='ddn' (its gamma needs it), got {self.eps!r}")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float,
                generator: torch.Generator | None) -> torch.Tensor:
        """The adversarial inputs of a batch (x itself when eps = 0)."""
        eps, steps = self.eps, self.steps
        if eps == 0:
            return x
        if self.attack == "base_pgd":
            zero = torch.zeros((x.shape[0], 1, *x.shape[1:]), dtype=x.dtype, device=x.device)
            return attacks.smoothadv_pgd(model, x, y, attacks.SmoothAdvPGD(eps, steps, sigma=0.0, num_noise=1),
                                         noise=zero, generator=generator).x_adv
        if self.attack == "ddn":
            gamma = 1 - (3 / 510 / eps) ** (1 / steps)
            ddn = attacks.SmoothAdvDDN(eps, steps, sigma, self.num_noise, gamma=gamma, init_norm=1.0)
            return attacks.smoothadv_ddn(model, x, y, ddn, generator=generator).x_adv
        pgd = attacks.SmoothAdvPGD(eps, steps, sigma, self.num_noise, estimator=self.estimator)
        return attacks.smoothadv_pgd(model, x, y, pgd, generator=generator).x_adv


@dataclass(frozen=True, kw_only=True)
class PredictSettings:
    """PREDICT's settings (the reference ``predict.py``): ``n`` noise samples, abstention level
    ``alpha`` and ``batch_size`` noisy copies per forward (speed only)."""

    n: int = 1000
    alpha: float = 0.001
    batch_size: int = 1000

    def __post_init__(self) -> None:
        check.positive_int("n", self.n)
        check.probability("alpha", self.alpha)
        check.positive_int("batch_size", self.batch_size)


class EmpiricalAccuracy(NamedTuple):
    """Per-example PREDICT outcome on the attacked inputs: ``predictions`` (int64, -1 = abstain),
    ``labels``, ``correct`` (bool: prediction == label, abstain counts as wrong) and their mean."""

    predictions: np.ndarray
    labels: np.ndarray
    correct: np.ndarray
    accuracy: float

    @property
    def abstain_rate(self) -> float:
        return float((self.predictions == ABSTAIN).mean())


def empirical_accuracy(model: nn.Module, data: Any, *, sigma: float, attack: SmoothedAttack,
                       predict: PredictSettings = PredictSettings(), generator: torch.Generator | None = None,
                       progress: bool = False) -> EmpiricalAccuracy:
    """Empirical l2 robust accuracy of the smoothed classifier g (Salman et al. 2019, §4.3, Fig. 3/7).

    Each input x (label y) is attacked with ``attack`` (at the smoothing ``sigma``), then classified
    by PREDICT on the adversarial input with ``predict.n`` fresh noise samples at level
    ``predict.alpha``; correct iff PREDICT returns y.

    ``data``: an ``ImageData``, a pair (x (N, C, H, W) in [0, 1], y (N,)) or an iterable of such
    (x, y) batches. The model is attacked and evaluated in eval mode (its mode is restored after).
    Inputs are attacked in chunks of ``batch_size // num_noise`` so that an attack forward holds
    about ``batch_size`` noisy copies; PREDICT forwards ``batch_size`` samples at a time.
    Randomness: the attack noise comes from ``generator`` (any device; None = the global RNG);
    PREDICT's noise for example i from ``example_generator(s, i)`` with one seed s drawn first from
    ``generator``, so the PREDICT noise of an example does not depend on the attack, eps or the
    chunking.
    """
    from rs_lib.robustness import labelled_batches as _labelled_batches

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check.positive("sigma", sigma)
    for name, value, kind in (("attack", attack, SmoothedAttack), ("predict", predict, PredictSettings)):
        if not isinstance(value, kind):
            raise ValueError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = model_device(model)
    chunk = max(1, predict.batch_size // attack.num_noise)
    chunks = _labelled_batches(data, chunk, device)
    total = len(data) if isinstance(data, data_mod.ImageData) else \
        len(data[0]) if isinstance(data, (tuple, list)) and len(data) == 2 else None
    sample_device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=sample_device))

    predictions: list[int] = []
    labels: list[int] = []
    smooth = None
    with methods.mode(model, train=False), tqdm(
            total=total, desc=f"empirical {attack.attack} eps={attack.eps:g}",
            disable=None if progress else True, unit="input") as bar:
        for x_batch, y_batch in chunks:
            for start in range(0, len(x_batch), chunk):
                x, y = x_batch[start:start + chunk], y_batch[start:start + chunk]
                if smooth is None:
                    with torch.no_grad():
                        num_classes = model(x[:1]).shape[1]
                    smooth = Smooth(model, num_classes, sigma)
                x_adv = attack.perturb(model, x, y, sigma=sigma, generator=generator)
                first = len(predictions)
                gens = [example_generator(seed, first + k, device) for k in range(len(x))]
                predictions += smooth.predict_batch(x_adv, predict.n, predict.alpha, predict.batch_size,
                                                    generators=gens)
                labels += y.tolist()
                bar.update(len(x))
    if not predictions:
        raise ValueError("data must hold at least one example")
    pred, lab = np.asarray(predictions, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    correct = pred == lab
    return EmpiricalAccuracy(pred, lab, correct, float(correct.mean()))
