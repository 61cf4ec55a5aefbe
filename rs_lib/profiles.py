"""Per-experiment presets for the three profiles, resolved with overrides and validated.

- ``smoke``: seconds per notebook on tiny synthetic or sliced data (tests and CI);
- ``cpu``: the default, minutes per notebook on Fashion-MNIST on a 2-core machine;
- ``paper``: the papers' exact settings, for a GPU box.

Presets live in :mod:`rs_lib.presets`, one module per chapter: for each experiment a typed settings
class (a frozen dataclass of knobs, :class:`Settings`) and its values per profile.  Notebook
parameters default to ``None`` (= take the profile's value); :func:`resolve` rejects unknown knobs
(naming the known ones) and out-of-range values before any work starts.
"""

from __future__ import annotations

from typing import Any

from . import _validate as check
from .presets import PRESETS, SETTINGS
from .presets._settings import Settings

__all__ = ["PRESETS", "PROFILES", "SETTINGS", "Settings", "knobs", "resolve"]

PROFILES = ("smoke", "cpu", "paper")


def knobs(experiment: str) -> tuple[str, ...]:
    """The knobs (overridable parameters) of ``experiment``."""
    check.choice("experiment", experiment, sorted(SETTINGS))
    return SETTINGS[experiment].knobs()


def resolve(experiment: str, profile: str, **overrides: Any) -> Settings:
    """The settings of ``experiment`` in ``profile`` with the non-``None`` ``overrides`` applied.

    Raises ValueError for an unknown experiment, profile or knob (naming the known knobs), or an
    invalid value.
    """
    known = knobs(experiment)
    check.choice("profile", profile, PROFILES)
    values = dict(PRESETS[experiment][profile])
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"{key!r} is not a parameter of experiment {experiment!r} "
                             f"(allowed: {', '.join(sorted(known))})")
        if value is not None:
            values[key] = value
    return SETTINGS[experiment](profile=profile, **values)
