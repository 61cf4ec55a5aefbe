"""Argument checks shared by every public function.

Each check raises ``ValueError`` whose message names the argument, the value received and what
is allowed, so that bad input fails before any heavy work starts; most return the value they accept.

Public names: `number`, `positive`, `non_negative`, `probability`, `integer`, `positive_int`,
`flag` (True or False), `choice`, `directory`, `resolve_device`, `images`, `labels`, `output_width`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` if it is a finite real number in the given interval, else raise."""
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high if high is not None else 'inf'}"
                         f"{')' if high_open or high is None else ']'}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {'(' if low_open else '['}"
                         f"{low if low is not None else '-inf'}, {high}{bracket}, got {value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    """True or False (not 0/1, not None): the one check of every boolean option."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def positive(name: str, value: Any) -> float:
    """A number > 0 (eps, sigma, lr, ...)."""
    return number(name, value, low=0.0, low_open=True)


def non_negative(name: str, value: Any) -> float:
    """A number >= 0 (weight decay, beta, ...)."""
    return number(name, value, low=0.0)


def probability(name: str, value: Any, *, open_interval: bool = True) -> float:
    """A number in (0, 1) (or [0, 1] with ``open_interval=False``)."""
    return number(name, value, low=0.0, high=1.0, low_open=open_interval, high_open=open_interval)


def integer(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """An int (not bool) in [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def positive_int(name: str, value: Any) -> int:
    """An int >= 1 (epochs, batch size, steps, n, ...)."""
    return integer(name, value, low=1)


def choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` must be one of ``allowed``; the message lists them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def directory(name: str, value: Any, *, must_exist: bool = True) -> Path:
    """A path that is a directory (or does not exist yet, with ``must_exist=False``)."""
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise ValueError(f"{name} must be a directory path, got {value!r}")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} must be a directory, but {str(path)!r} is a file")
    if must_exist and not path.exists():
        raise ValueError(f"{name} must be an existing directory, {str(path)!r} does not exist")
    return path


def resolve_device(name: str, value: Any) -> torch.device:
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:N' or a torch.device."""
    if isinstance(value, torch.device):
        device = value
    elif value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(value)
        except (RuntimeError, TypeError):
            raise ValueError(f"{name} must be 'auto', 'cpu' or 'cuda[:N]', got {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={value!r} but CUDA is not available on this machine; use 'cpu' or 'auto'")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be 'auto', 'cpu' or 'cuda[:N]', got {value!r}")
    return device


def images(name: str, x: Any) -> torch.Tensor:
    """A floating tensor of images with finite values in [0, 1] (normalisation belongs inside the
    model); NaN and inf are rejected, not passed on."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of images, got "
                         f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.numel():
        low, high = (float(v) for v in torch.aminmax(x.detach()))
        if not (math.isfinite(low) and math.isfinite(high)) or bool(torch.isnan(x).any()):
            raise ValueError(f"{name} holds NaN or infinite values; images must be finite, in [0, 1]")
        if low < 0.0 or high > 1.0:
            raise ValueError(f"{name} must hold images in [0, 1] (normalisation belongs inside the "
                             f"model), got values in [{low}, {high}]")
    return x


def labels(name: str, y: Any, num_classes: int | None = None) -> torch.Tensor:
    """An integer tensor of class indices in [0, num_classes) (>= 0 if ``num_classes`` is None)."""
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of class indices, got "
                         f"{getattr(y, 'dtype', type(y).__name__)}")
    if y.numel():
        low, high = int(y.min()), int(y.max())
        if low < 0 or (num_classes is not None and high >= num_classes):
            top = f"{num_classes - 1}" if num_classes is not None else "num_classes - 1"
            raise ValueError(f"{name} must lie in [0, {top}], got labels in [{low}, {high}]")
    return y


def output_width(name: str, logits: torch.Tensor, num_classes: int) -> None:
    """The model's logits must have one column per class (``num_classes`` of the dataset)."""
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"{name} returns logits of shape {tuple(logits.shape)}, but num_classes is "
                         f"{num_classes}; build the model with num_classes={num_classes}")
