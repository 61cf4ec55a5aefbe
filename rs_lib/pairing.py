"""Our numbers beside the paper's, and verdicts on differences with their standard errors.

A reading such as "larger η gives larger ACR: yes" compares two numbers measured on a finite test
set (or over a few seeds). Every verdict of the book on a difference carries its standard error:

* :func:`paired_difference`: two measurements on the *same* examples (the certificates of two models
  on the same test points, with the same certification noise per point): the mean of the per-example
  differences and its standard error sd/√n.
* :func:`acr_difference`: the paired difference of the per-example ACR terms R·1[correct] of two
  certification frames (SmoothMix's ACR, `smoothing.acr`), matched on the test index.
* :func:`accuracy_difference`: two accuracies on the same n test images when only their means were
  kept (the binomial standard errors added as if independent: conservative).
* :func:`independent_difference`: two sets of independent runs (e.g. seeds of two methods): the
  difference of the means with Welch's standard error.
* :func:`describe`: "+0.010 ± 0.020 (2 SE), within two standard errors", the form every page uses.

:func:`other_settings` states, beside each row of an ablation paired with the paper's row of the same
varied hyperparameter, the settings the two rows do *not* share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd


class Difference(NamedTuple):
    """A difference a − b, its standard error and the number of pairs (or of runs, a + b)."""

    mean: float
    se: float
    n: int

    @property
    def clear(self) -> bool:
        """Whether |difference| exceeds two standard errors (False when the SE is undefined)."""
        return math.isfinite(self.se) and abs(self.mean) > 2 * self.se


def _values(name: str, values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    out = np.asarray(values, dtype=float).ravel()
    if out.size == 0 or not np.isfinite(out).all():
        raise ValueError(f"{name} must be a non-empty sequence of finite numbers, got {values!r}")
    return out


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Mean of a_i − b_i over pairs measured on the same examples, with its standard error sd/√n
    (sample sd, ddof = 1; NaN for a single pair)."""
    a, b = _values("a", a), _values("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up one to one, got {a.size} and {b.size} values")
    diff = a - b
    se = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else math.nan
    return Difference(float(diff.mean()), se, int(diff.size))


def independent_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """mean(a) − mean(b) for independent samples (e.g. runs over seeds), with Welch's standard error
    √(s_a²/n_a + s_b²/n_b) (NaN when either side has one value)."""
    a, b = _values("a", a), _values("b", b)
    if a.size < 2 or b.size < 2:
        se = math.nan
    else:
        se = float(math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))
    return Difference(float(a.mean() - b.mean()), se, int(a.size + b.size))


def accuracy_difference(p_a: float, p_b: float, n: int) -> Difference:
    """p_a − p_b for two accuracies (fractions) measured on the same ``n`` test images when only the
    means were kept: the standard error √(p_a(1−p_a)/n + p_b(1−p_b)/n) treats the two as independent,
    which overstates it when the models err on the same images (conservative for a verdict)."""
    for name, value in (("p_a", p_a), ("p_b", p_b)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be an accuracy in [0, 1], got {value!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of test images, got {n!r}")
    se = math.sqrt(p_a * (1 - p_a) / n + p_b * (1 - p_b) / n)
    return Difference(float(p_a - p_b), se, n)


def acr_difference(a: pd.DataFrame, b: pd.DataFrame) -> Difference:
    """ACR(a) − ACR(b), paired on the test index ``idx`` (both frames must certify the same points):
    the mean of R_a·1[correct_a] − R_b·1[correct_b] and its standard error."""
    for name, frame in (("a", a), ("b", b)):
        missing = {"idx", "radius", "correct"} - set(frame.columns)
        if missing:
            raise ValueError(f"{name} must be a certification frame with idx, radius, correct; missing {sorted(missing)}")
    left, right = a.set_index("idx"), b.set_index("idx")
    if set(left.index) != set(right.index):
        raise ValueError("a and b must certify the same test points (their idx columns differ)")
    right = right.loc[left.index]
    term = lambda f: (f["radius"] * f["correct"].astype(float)).to_numpy()  # noqa: E731
    return paired_difference(term(left), term(right))


def describe(diff: Difference, digits: int = 3) -> str:
    """``+0.010 ± 0.020 (2 SE), within two standard errors`` (or "beyond"; "SE undefined")."""
    if not math.isfinite(diff.se):
        return f"{diff.mean:+.{digits}f} (one value per side: standard error undefined)"
    where = "beyond" if diff.clear else "within"
    return f"{diff.mean:+.{digits}f} ± {2 * diff.se:.{digits}f} (2 SE), {where} two standard errors"


def verdict(diff: Difference, digits: int = 3) -> str:
    """``**yes** (+0.010 ± 0.020 (2 SE), within ...)`` for a claimed positive difference a − b > 0;
    the yes or no is the sign of the measured difference, the rest says whether it is clear."""
    return f"**{'yes' if diff.mean > 0 else 'no'}** ({describe(diff, digits)})"


#: SmoothMix App. H's default model for the MNIST ablations (Tables 6-9): η = 1, α = 1, T = 8,
#: no ℓ2 limit, m = 4.
SMOOTHMIX_PAPER_DEFAULT = {"eta": 1.0, "step_size": 1.0, "steps": 8, "maxnorm": None, "num_noise": 4}
#: The method parameters each SmoothMix ablation axis varies.
SMOOTHMIX_AXES = {"eta": ("eta",), "alpha_T": ("step_size", "steps"), "eps": ("maxnorm",), "m": ("num_noise",)}
_SHORT = {"eta": "η", "step_size": "α", "steps": "T", "maxnorm": "ε", "num_noise": "m"}


def _fmt(value: Any) -> str:
    return "∞" if value is None else f"{value:g}"


def other_settings(params: Mapping[str, Any], ablation: str,
                   paper: Mapping[str, Any] = SMOOTHMIX_PAPER_DEFAULT) -> tuple[str, str]:
    """(ours, the paper's) values of the SmoothMix hyperparameters that ``ablation`` does not vary,
    e.g. ``("η 5, α 4, T 2, m 1", "η 1, α 1, T 8, m 4")``: the settings a paired row does not share.
    ``params``: the row's method parameters (missing keys take the paper's default: not set = ∞ for ε)."""
    if ablation not in SMOOTHMIX_AXES:
        raise ValueError(f"ablation must be one of {sorted(SMOOTHMIX_AXES)}, got {ablation!r}")
    keys = [k for k in paper if k not in SMOOTHMIX_AXES[ablation]]
    ours = ", ".join(f"{_SHORT[k]} {_fmt(params.get(k, paper[k] if k != 'maxnorm' else None))}" for k in keys)
    theirs = ", ".join(f"{_SHORT[k]} {_fmt(paper[k])}" for k in keys)
    return ours, theirs
