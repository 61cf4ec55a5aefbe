"""Profile presets, one module per chapter, merged here.

Each chapter module defines ``SETTINGS`` (experiment -> its typed settings class, a frozen
dataclass of knobs with their types and checks, :mod:`rs_lib.presets._settings`) and ``PRESETS``
(experiment -> profile -> the knobs' values, with the papers' citations beside them).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._settings import Settings

CHAPTERS = ("foundations", "backward_smoothing", "smoothing")

PRESETS: dict[str, dict[str, dict[str, Any]]] = {}
SETTINGS: dict[str, type[Settings]] = {}

for _name in CHAPTERS:
    _module = importlib.import_module(f"{__name__}.{_name}")
    for _exp in _module.PRESETS:
        if _exp in PRESETS:
            raise RuntimeError(f"experiment {_exp!r} defined by two chapters")
        if _exp not in _module.SETTINGS:
            raise RuntimeError(f"experiment {_exp!r} of {_name} has presets but no settings class")
    PRESETS.update(_module.PRESETS)
    SETTINGS.update(_module.SETTINGS)
