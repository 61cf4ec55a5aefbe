"""Checkers for knobs that are not TrainConfig fields, shared by the chapters' settings classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import _validate as check


def list_of(item_check: Callable[[str, Any], Any], *, allow_empty: bool = False) -> Callable[[str, Any], Any]:
    """Checker for a list (non-empty unless ``allow_empty``) whose items pass ``item_check``."""

    def checker(name: str, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
            raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}list, got {value!r}")
        for i, v in enumerate(value):
            item_check(f"{name}[{i}]", v)
        return value

    return checker


def seed_list(name: str, value: Any) -> Any:
    return list_of(lambda n, v: check.integer(n, v, low=0))(name, value)
