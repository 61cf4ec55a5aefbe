"""Typed settings: one frozen dataclass of knobs per experiment, built on its chapter's class.

A knob is a field with its type and, where :class:`~rs_lib.train.TrainConfig` does not check it
already, a checker (:func:`knob`).  :func:`rs_lib.profiles.resolve` fills a class with the values of
a profile (the chapter modules' ``PRESETS``, with their citations) and the notebook's overrides;
construction validates every knob, so a bad value fails before any work starts.  Notebooks read the
knobs as attributes (``settings.epochs``), all of them as ``settings.values``, and build a run's
configuration with ``settings.train_config(...)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from ..train import TrainConfig

Check = Callable[[str, Any], Any]
_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
_DEFAULTS = TrainConfig()


def knob(check: Check | None = None, *, default: Any = MISSING) -> Any:
    """A knob field checked by ``check(name, value)`` (which raises ValueError naming it); without
    ``default`` every profile must give it a value."""
    return field(default=default, metadata={"check": check})


def _train_default(name: str) -> Any:
    value = getattr(_DEFAULTS, name)
    return field(default_factory=lambda: dict(value)) if isinstance(value, dict) else field(default=value)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """A resolved, validated preset of one experiment in one profile (subclasses add the knobs)."""

    experiment: ClassVar[str] = ""
    profile: str = field(metadata={"knob": False})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            if check is not None:
                check(f.name, getattr(self, f.name))
        self.train_config()  # the training knobs, checked by the loop's own rules

    @classmethod
    def knobs(cls) -> tuple[str, ...]:
        """The names of the knobs (what a notebook parameter or an override may set)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("knob", True))

    @property
    def values(self) -> Mapping[str, Any]:
        """Every knob and its value (read-only)."""
        return MappingProxyType({name: getattr(self, name) for name in self.knobs()})

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def train_config(self, **changes: Any) -> TrainConfig:
        """The :class:`TrainConfig` made of the training knobs, with ``changes`` on top."""
        fields = {k: v for k, v in self.values.items() if k in _TRAIN_FIELDS}
        fields.update(changes)
        return TrainConfig(**fields)


@dataclass(frozen=True, kw_only=True)
class TrainKnobs(Settings):
    """The training knobs every chapter sets (:class:`TrainConfig`'s fields, checked by it); a
    profile that leaves one out gets TrainConfig's default, as if it were not a knob."""

    dataset: str = knob()
    model: str = knob()
    epochs: int = knob()
    batch_size: int = knob()
    n_train: int | None = knob()
    n_val: int | None = _train_default("n_val")
    augment: bool = knob()
    optimizer: str = knob()
    lr: float = knob()
    momentum: float = _train_default("momentum")
    nesterov: bool = _train_default("nesterov")
    weight_decay: float = knob()
    schedule: str = knob()
    milestones: tuple[float, ...] = _train_default("milestones")
    lr_decay: float = _train_default("lr_decay")
    peak: float = _train_default("peak")
    val_metrics: tuple[str, ...] = _train_default("val_metrics")
    select_on: str = _train_default("select_on")
    eval_params: Mapping[str, Any] = _train_default("eval_params")
    full_train_set: bool = _train_default("full_train_set")
    normalization: str = _train_default("normalization")
    seed: int = knob()
