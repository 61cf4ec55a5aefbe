"""Certified-accuracy curves and their summaries, from certify frames (``read_certify_tsv``).

Every function is a pure function of a frame's ``correct``, ``radius`` and ``predict`` columns (or of
CERTIFY's settings, for ``radius_cap``); none samples, all cost one pass over the rows.

Public names:

* ``certified_accuracy`` (Cohen et al.'s ApproximateAccuracy at radii), ``acr`` (average certified
  radius, SmoothMix Sec. 4), ``abstention_rate`` (SmoothAdv Table 4), ``upper_envelope`` (best model
  per radius, SmoothAdv Fig. 1), ``summary_table`` (SmoothMix Tables 1-3 layout);
* ``high_prob_accuracy``: a (1 - rho) lower bound on the *true* certified accuracy of g, from
  CERTIFY's failure rate alpha (Cohen et al.'s HighProbAccuracy); the others are estimates;
* ``l2_to_linf`` (the l-inf radius an l2 certificate implies) and ``radius_cap`` (the largest
  radius CERTIFY can return with n samples).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from rs_lib import _validate as check

from .classifier import ABSTAIN, lower_confidence_bound


def _curve_columns(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(df, pd.DataFrame) or not {"correct", "radius"} <= set(df.columns):
        raise ValueError("df must be a DataFrame with 'correct' and 'radius' columns "
                         "(see read_certify_tsv)")
    if len(df) == 0:
        raise ValueError("df must hold at least one certified example")
    return df["correct"].to_numpy().astype(bool), df["radius"].to_numpy(dtype=float)


def certified_accuracy(df: pd.DataFrame, radii: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Fraction of all rows that are correct with certified radius >= r, for each r in ``radii``.

    Abstentions and wrong predictions count as failures (Cohen et al.'s ``ApproximateAccuracy``).
    Returns an array of ``radii``'s shape.
    """
    correct, radius = _curve_columns(df)
    radii = np.asarray(radii, dtype=float)
    return (correct[:, None] & (radius[:, None] >= radii.reshape(1, -1))).mean(0).reshape(radii.shape)


def acr(df: pd.DataFrame) -> float:
    """Average certified radius: mean of correct * radius over all rows (SmoothMix, Sec. 4)."""
    correct, radius = _curve_columns(df)
    return float((correct * radius).mean())


def abstention_rate(df: pd.DataFrame) -> float:
    """Fraction of rows where CERTIFY (or PREDICT) abstained (SmoothAdv, Table 4)."""
    if not isinstance(df, pd.DataFrame) or "predict" not in df.columns or len(df) == 0:
        raise ValueError("df must be a non-empty DataFrame with a 'predict' column")
    return float((df["predict"].to_numpy() == ABSTAIN).mean())


def upper_envelope(curves: Mapping[Any, Any] | Iterable[Any],
                   radii: Sequence[float] | np.ndarray) -> np.ndarray:
    """Best certified accuracy over models at each radius (SmoothAdv, Fig. 1 envelopes).

    ``curves`` holds certify frames (evaluated at ``radii``) or accuracy arrays already evaluated
    at ``radii``; a mapping's values are used.
    """
    radii = np.asarray(radii, dtype=float).reshape(-1)
    values = curves.values() if isinstance(curves, Mapping) else curves
    rows = [certified_accuracy(c, radii) if isinstance(c, pd.DataFrame) else np.asarray(c, dtype=float)
            for c in values]
    if not rows:
        raise ValueError("curves must hold at least one model")
    for row in rows:
        if row.shape != radii.shape:
            raise ValueError(f"each curve must have one value per radius ({radii.size}), "
                             f"got {row.shape}")
    return np.max(np.stack(rows), axis=0)


def l2_to_linf(radius_l2: float | np.ndarray, dim: int) -> float | np.ndarray:
    """The l-inf radius implied by an l2 certificate in dimension ``dim``: r / sqrt(dim).

    An l-inf ball of radius e lies inside the l2 ball of radius e * sqrt(dim) (SmoothAdv, Sec. 4,
    Table 3: 2/255 on CIFAR-10 needs an l2 radius of 0.435).
    """
    check.positive_int("dim", dim)
    radius = np.asarray(radius_l2, dtype=float)
    if (radius < 0).any() or not np.isfinite(radius).all():
        raise ValueError(f"radius_l2 must be finite and >= 0, got {radius_l2!r}")
    result = radius / math.sqrt(dim)
    return float(result) if result.ndim == 0 else result


def high_prob_accuracy(df: pd.DataFrame, radii: float | Sequence[float] | np.ndarray, *,
                       alpha: float, rho: float) -> np.ndarray:
    """A (1 - rho) lower bound on the true certified accuracy of g (Cohen et al.'s HighProbAccuracy).

    Each of the N rows is wrong with probability <= alpha (CERTIFY's failure rate, independent
    across rows since each draws its own noise), so the approximate accuracy minus alpha minus a
    Bernstein deviation term, ``sqrt(alpha (1 - alpha) ln(1/rho) / N) + ln(1/rho) / (3N)``, bounds
    it.  Not clipped at 0, as the reference.
    """
    check.probability("alpha", alpha)
    check.probability("rho", rho)
    accuracy = certified_accuracy(df, radii)
    count = len(df)
    log_term = math.log(1 / rho)
    return accuracy - alpha - math.sqrt(alpha * (1 - alpha) * log_term / count) - log_term / (3 * count)


def summary_table(frames: Mapping[Any, pd.DataFrame], radii: Sequence[float]) -> pd.DataFrame:
    """One row per certify frame: ``acr``, ``abstain`` (rate) and the certified accuracy at each
    radius in columns ``r0.00``, ``r0.25``, ... (fractions; SmoothMix Tables 1-3 / SmoothAdv
    Table 2 layout).  The index holds the keys of ``frames``."""
    radii = np.asarray(radii, dtype=float).reshape(-1)
    if radii.size == 0 or (radii < 0).any():
        raise ValueError(f"radii must be a non-empty list of radii >= 0, got {list(radii)}")
    rows = {}
    for key, df in frames.items():
        row = {"acr": acr(df), "abstain": abstention_rate(df)}
        row.update({f"r{r:.2f}": a for r, a in zip(radii, certified_accuracy(df, radii))})
        rows[key] = row
    if not rows:
        raise ValueError("frames must hold at least one certify frame")
    return pd.DataFrame.from_dict(rows, orient="index")


def radius_cap(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with n samples: sigma * Phi^-1(alpha^(1/n)), reached
    when all n samples vote for the class (2.70 sigma at n = 2,000, 3.81 sigma at n = 100,000)."""
    check.positive("sigma", sigma)
    check.positive_int("n", n)
    check.probability("alpha", alpha)
    return float(sigma * stats.norm.ppf(lower_confidence_bound(n, n, alpha)))
