"""Profile presets, one module per chapter, merged here.

Each chapter module defines ``PRESETS`` (experiment -> profile -> knobs) and ``KNOB_CHECKS``
(knob -> checker for knobs that are not :class:`~rs_lib.train.TrainConfig` fields).  Knob names
shared across chapters must mean the same thing (a duplicate checker is an error).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ._checks import COMMON_CHECKS

CHAPTERS = ("foundations", "backward_smoothing", "smoothing")

PRESETS: dict[str, dict[str, dict[str, Any]]] = {}
KNOB_CHECKS: dict[str, Callable[[str, Any], Any]] = dict(COMMON_CHECKS)

for _name in CHAPTERS:
    try:
        _module = importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _err:
        if _err.name != f"{__name__}.{_name}":
            raise
        continue
    for _exp in _module.PRESETS:
        if _exp in PRESETS:
            raise RuntimeError(f"experiment {_exp!r} defined by two chapters")
    PRESETS.update(_module.PRESETS)
    for _knob, _checker in getattr(_module, "KNOB_CHECKS", {}).items():
        if _knob in KNOB_CHECKS and KNOB_CHECKS[_knob] is not _checker:
            raise RuntimeError(f"knob {_knob!r} has two checkers; reuse the one in presets/_checks.py")
        KNOB_CHECKS[_knob] = _checker
