"""Per-experiment presets for the three profiles, resolved with overrides and validated.

- ``smoke``: seconds per notebook on tiny synthetic or sliced data (tests and CI);
- ``cpu``: the default, minutes per notebook on Fashion-MNIST on a 2-core machine;
- ``paper``: the papers' exact settings, for a GPU box.

Presets live in :mod:`rs_lib.presets`, one module per chapter: for each experiment a typed settings
class (a frozen dataclass of knobs, :class:`Settings`) and its values per profile.  Notebook
parameters default to ``None`` (= take the profile's value); :func:`resolve` rejects unknown knobs
(naming the known ones) and out-of-range values before any work starts.

Importing this module is torch-free (``PROFILES`` for tools and the book's chapter list); the
presets (``PRESETS``, ``SETTINGS``, ``Settings``, which build ``TrainConfig``s) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PRESETS", "PROFILES", "SETTINGS", "Settings", "knobs", "resolve"]

PROFILES = ("smoke", "cpu", "paper")

#: The names read from the presets on first access (module ``__getattr__``): they import torch.
_LAZY = {"PRESETS": ("rs_lib.presets", "PRESETS"), "SETTINGS": ("rs_lib.presets", "SETTINGS"),
         "Settings": ("rs_lib.presets._settings", "Settings")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def knobs(experiment: str) -> tuple[str, ...]:
    """The knobs (overridable parameters) of ``experiment``."""
    from . import _validate as check
    from .presets import SETTINGS

    check.choice("experiment", experiment, sorted(SETTINGS))
    return SETTINGS[experiment].knobs()


def resolve(experiment: str, profile: str, **overrides: Any) -> Settings:
    """The settings of ``experiment`` in ``profile`` with the non-``None`` ``overrides`` applied.

    Raises ValueError for an unknown experiment, profile or knob (naming the known knobs), or an
    invalid value.
    """
    from . import _validate as check
    from .presets import PRESETS, SETTINGS

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
