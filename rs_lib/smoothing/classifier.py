"""Cohen et al.'s smoothed classifier: PREDICT and CERTIFY, with the statistics they rest on.

The smoothed classifier of a base classifier f at noise level sigma is
``g(x) = argmax_c P(f(x + delta) = c)`` with ``delta ~ N(0, sigma^2 I)`` (Cohen et al. 2019, eq. 1).
If the top class c_A has probability at least p_A >= 1/2, g is constant on the l2 ball of radius
``sigma * Phi^-1(p_A)`` around x (Cohen et al. 2019, Thm. 1, with p_B bounded by 1 - p_A).
``Smooth`` estimates g by Monte Carlo exactly as the reference ``core.py`` does (same API, same
statistics; the reference's removed ``scipy.stats.binom_test`` is replaced by ``binomtest``); the
samples are evaluated by a :class:`~rs_lib.smoothing.sampler.NoiseSampler` (device, batching,
``channels_last``, ``compile``, autocast), which changes speed, not the counts.

Public names:

* ``Smooth``: ``predict`` / ``predict_batch`` (PREDICT, Prop. 1) and ``certify`` /
  ``certify_detailed`` / ``certify_batch`` / ``certify_many`` (CERTIFY, Prop. 2).  Each answer
  holds with probability at least 1 - alpha over the noise; wrong with probability <= alpha, it
  abstains otherwise.  Cost: n (PREDICT) or n0 + n (CERTIFY) forwards of f per input.
* ``Certificate``: CERTIFY's outcome (prediction, radius, p_lower, count, n); ``ABSTAIN`` (-1).
* ``lower_confidence_bound`` (Clopper-Pearson) and ``prediction_from_counts`` (PREDICT's test):
  pure functions of the counts.

Radii are l2 distances in pixel units of [0, 1] inputs (normalisation is the model's first layer).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import stats
from torch import nn

from rs_lib import _validate as check

from .sampler import NoiseSampler, check_inputs

ABSTAIN = -1


class Certificate(NamedTuple):
    """Outcome of CERTIFY for one input.

    ``prediction`` is the certified class or ``ABSTAIN`` (-1); ``radius`` the certified l2 radius
    (0.0 on abstention); ``p_lower`` the one-sided (1 - alpha) Clopper-Pearson lower bound on the
    probability of the selected class; ``count`` its count among the ``n`` estimation samples.
    """

    prediction: int
    radius: float
    p_lower: float
    count: int
    n: int


def lower_confidence_bound(count: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion.

    Equals ``statsmodels.stats.proportion.proportion_confint(count, n, alpha=2 * alpha,
    method="beta")[0]``, the bound of the reference ``core.py``; it is ``0`` for ``count = 0`` and
    ``alpha ** (1 / n)`` for ``count = n``.  P(bound > true proportion) <= alpha.
    """
    check.integer("n", n, low=1)
    check.integer("count", count, low=0, high=n)
    check.probability("alpha", alpha)
    if count == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, count, n - count + 1))


def prediction_from_counts(counts: Sequence[int] | np.ndarray, alpha: float) -> int:
    """PREDICT's decision (Cohen et al. 2019, Prop. 1) from the class counts of n noise samples.

    Returns the top class if the two-sided exact binomial test of its count against the
    runner-up's (p = 1/2, Hung & Fithian 2016) rejects at level alpha, else ``ABSTAIN``.  Ties for
    the top never reject, so they abstain whatever the order of the tied classes.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or counts.size < 2 or (counts < 0).any() or counts.sum() == 0:
        raise ValueError(f"counts must be a 1-D array of >= 2 non-negative counts with a positive "
                         f"sum, got {counts!r}")
    check.probability("alpha", alpha)
    top2 = np.argsort(-counts, kind="stable")[:2]
    count1, count2 = int(counts[top2[0]]), int(counts[top2[1]])
    if stats.binomtest(count1, count1 + count2, 0.5).pvalue > alpha:
        return ABSTAIN
    return int(top2[0])


def check_certify_args(n0: int, n: int, alpha: float, batch_size: int) -> None:
    """CERTIFY's arguments: n0, n and batch_size positive ints, alpha in (0, 1)."""
    check.positive_int("n0", n0)
    check.positive_int("n", n)
    check.probability("alpha", alpha)
    check.positive_int("batch_size", batch_size)


def _one(x: Any, generator: torch.Generator | None) -> dict[str, Any]:
    check_inputs("x", x, batched=False)
    return {"xs": x.unsqueeze(0), "generators": None if generator is None else [generator]}


class Smooth:
    """Gaussian smoothing g of ``base_classifier`` f at noise level ``sigma`` (Cohen et al. 2019).

    f maps [0, 1] images (B, C, H, W) to logits (B, num_classes); ``sigma`` is the noise standard
    deviation in pixel units.  The keyword options (``channels_last``, ``compile``,
    ``autocast_dtype``) configure the :class:`NoiseSampler` held in ``sampler``: speed only, except
    ``autocast_dtype``, which certifies a reduced-precision f.  With ``generator(s)``, an input's
    noise is the same whatever ``batch_size`` or the inputs sharing its batches.
    """

    ABSTAIN = ABSTAIN

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float, *,
                 channels_last: bool | str = "auto", compile: bool = False,
                 autocast_dtype: torch.dtype | None = None) -> None:
        self.sampler = NoiseSampler(base_classifier, num_classes, sigma, channels_last=channels_last,
                                    compile=compile, autocast_dtype=autocast_dtype)

    base_classifier = property(lambda self: self.sampler.base_classifier, doc="f")
    num_classes = property(lambda self: self.sampler.num_classes, doc="f's number of classes")
    sigma = property(lambda self: self.sampler.sigma, doc="the noise level (pixel units)")
    device = property(lambda self: self.sampler.device, doc="f's device; the noise is drawn there")

    def lower_confidence_bound(self, count: int, n: int, alpha: float) -> float:
        """The (1 - alpha) lower bound on p_A used by CERTIFY; override only to study unsound bounds."""
        return lower_confidence_bound(count, n, alpha)

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int, *,
                generator: torch.Generator | None = None) -> int:
        """PREDICT (Cohen et al. 2019, Prop. 1): g(x) for one input x (C, H, W) in [0, 1], or ABSTAIN.

        The probability that it returns a class other than g(x) is at most alpha (over the noise).
        Uses n noise samples; the test is the two-sided binomial test of the top-2 counts.
        """
        return self.predict_batch(n=n, alpha=alpha, batch_size=batch_size, **_one(x, generator))[0]

    def predict_batch(self, xs: torch.Tensor, n: int, alpha: float, batch_size: int, *,
                      generators: Sequence[torch.Generator] | None = None) -> list[int]:
        """PREDICT for each input of ``xs`` (K, C, H, W), each with the guarantee of ``predict``;
        with ``generators`` (one per input) equal to ``predict(xs[k], ..., generator=generators[k])``."""
        check.positive_int("n", n)
        check.probability("alpha", alpha)
        check.positive_int("batch_size", batch_size)
        jobs = self.sampler.jobs(xs, generators, (n,))
        return [prediction_from_counts(counts[0], alpha)
                for group in self.sampler.count_groups(jobs, batch_size, total=len(jobs) * n)
                for _, counts in group]

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, *,
                generator: torch.Generator | None = None) -> tuple[int, float]:
        """CERTIFY (Cohen et al. 2019, Prop. 2) for one input x (C, H, W) in [0, 1]: the reference's
        ``(prediction, radius)``.  With probability at least 1 - alpha over the noise, ``prediction``
        is ABSTAIN or g(x + d) = prediction for every ||d||_2 < radius (Thm. 1).  ``n0`` samples pick
        the class and are discarded; ``n`` fresh samples bound its probability p_A."""
        certificate = self.certify_detailed(x, n0, n, alpha, batch_size, generator=generator)
        return certificate.prediction, certificate.radius

    def certify_detailed(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, *,
                         generator: torch.Generator | None = None) -> Certificate:
        """``certify`` returning the full ``Certificate`` (prediction, radius, p_lower, count, n)."""
        return self.certify_batch(n0=n0, n=n, alpha=alpha, batch_size=batch_size, **_one(x, generator))[0]

    def certify_batch(self, xs: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, *,
                      generators: Sequence[torch.Generator] | None = None) -> list[Certificate]:
        """CERTIFY for each input of ``xs`` (K, C, H, W), each with the guarantee of ``certify``;
        with ``generators`` (one per input) equal to ``certify_detailed(xs[k], ..., generator=generators[k])``."""
        check_certify_args(n0, n, alpha, batch_size)
        jobs = self.sampler.jobs(xs, generators, (n0, n))
        return [self._certificate(counts, alpha)
                for group in self.sampler.count_groups(jobs, batch_size, total=len(jobs) * (n0 + n))
                for _, counts in group]

    def certify_many(self, items: Iterable[tuple[Any, torch.Tensor, torch.Generator | None]],
                     n0: int, n: int, alpha: float, batch_size: int, *, total: int | None = None
                     ) -> Iterator[list[tuple[Any, Certificate]]]:
        """CERTIFY a stream of ``(key, x, generator)`` items, each with the guarantee of ``certify``;
        yields ``(key, certificate)`` lists of the inputs that finished in the same forward batch
        (in order), so a caller can write each result as soon as it exists.  ``total``: the number
        of samples of all items, when known (caps the batch)."""
        check_certify_args(n0, n, alpha, batch_size)
        jobs = (self.sampler.job(key, x, g, (n0, n)) for key, x, g in items)
        for group in self.sampler.count_groups(jobs, batch_size, total=total):
            yield [(key, self._certificate(counts, alpha)) for key, counts in group]

    def _certificate(self, counts: np.ndarray, alpha: float) -> Certificate:
        """CERTIFY's decision from the (selection, estimation) counts, shape (2, num_classes)."""
        selection, estimation = counts
        c_hat = int(np.argmax(selection))
        count, n = int(estimation[c_hat]), int(estimation.sum())
        p_lower = float(self.lower_confidence_bound(count, n, alpha))
        if p_lower < 0.5:
            return Certificate(ABSTAIN, 0.0, p_lower, count, n)
        return Certificate(c_hat, self.sigma * float(stats.norm.ppf(p_lower)), p_lower, count, n)
