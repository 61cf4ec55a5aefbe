"""Per-experiment presets for the three profiles, resolved with overrides and validated.

- ``smoke``: seconds per notebook on tiny synthetic or sliced data (tests and CI);
- ``cpu``: the default, minutes per notebook on Fashion-MNIST on a 2-core machine;
- ``paper``: the papers' exact settings, for a GPU box.

Presets live in :mod:`rs_lib.presets`, one module per chapter.  A preset is a flat mapping of knobs.  Knobs that are :class:`~rs_lib.train.TrainConfig` fields
are the common training settings; every other knob has a checker in :data:`KNOB_CHECKS`.
Notebook parameters default to ``None`` (= take the profile's value); :func:`resolve` rejects
unknown knobs and out-of-range values before any work starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from . import _validate as check
from .presets import KNOB_CHECKS, PRESETS
from .train import TrainConfig

PROFILES = ("smoke", "cpu", "paper")
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


@dataclass(frozen=True)
class Settings:
    """A resolved, validated preset.  Knobs read as attributes (``settings.epochs``)."""

    experiment: str
    profile: str
    values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name]
        raise AttributeError(f"experiment {self.experiment!r} has no knob {name!r}")

    def train_config(self, **changes: Any) -> TrainConfig:
        """The :class:`TrainConfig` made of this preset's training knobs, with ``changes`` on top."""
        fields = {k: v for k, v in self.values.items() if k in TRAIN_FIELDS}
        fields.update(changes)
        return TrainConfig(**fields)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


def resolve(experiment: str, profile: str, **overrides: Any) -> Settings:
    """The preset of ``experiment`` in ``profile`` with the non-``None`` ``overrides`` applied.

    Raises ValueError for an unknown experiment, profile or knob, or an invalid value.
    """
    check.choice("experiment", experiment, sorted(PRESETS))
    check.choice("profile", profile, PROFILES)
    values = dict(PRESETS[experiment][profile])
    for key, value in overrides.items():
        if key not in values:
            raise ValueError(f"{key!r} is not a parameter of experiment {experiment!r} "
                             f"(allowed: {', '.join(sorted(values))})")
        if value is not None:
            values[key] = value
    for key, value in values.items():
        if key in KNOB_CHECKS:
            KNOB_CHECKS[key](key, value)
        elif key not in TRAIN_FIELDS:
            raise ValueError(f"preset knob {key!r} of {experiment!r} has no checker in KNOB_CHECKS")
    settings = Settings(experiment, profile, MappingProxyType(values))
    settings.train_config()  # validates the training knobs
    return settings
