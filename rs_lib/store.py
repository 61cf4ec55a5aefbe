"""Run store: one directory per resolved configuration, written atomically.

Layout: ``<root>/<experiment>/<config hash>/`` with ``config.json`` (the resolved configuration),
``env.json`` (versions, device, threads), ``metrics.jsonl`` (one JSON object per line),
checkpoints (``checkpoint_last.pt``, ``checkpoint_best.pt``) and ``summary.json``, whose presence
marks a finished run.  A finished run is a cache hit (re-rendering a notebook does not retrain);
an interrupted run resumes from its last checkpoint.  The root is ``$RS_RESULTS`` if set, else
``<repo>/results``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import _validate as check

REPO_ROOT = Path(__file__).resolve().parent.parent
SUMMARY = "summary.json"


def results_root(root: str | Path | None = None) -> Path:
    """The store's root: ``root`` if given, else ``$RS_RESULTS``, else ``<repo>/results``."""
    if root is not None:
        return check.directory("root", root, must_exist=False)
    env = os.environ.get("RS_RESULTS")
    return Path(env) if env else REPO_ROOT / "results"


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace variation: the basis of the config hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(config: Mapping[str, Any]) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON of ``config``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def environment(device: torch.device | str, threads: int) -> dict[str, Any]:
    """What produced a run: library versions, device and thread count."""
    import numpy
    import torchvision

    device = torch.device(device)
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "device": str(device),
        "threads": threads,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@dataclass(frozen=True)
class RunDir:
    """One run's directory.  Nothing is written until :meth:`create` (so bad input writes nothing)."""

    path: Path
    config: Mapping[str, Any]

    @property
    def finished(self) -> bool:
        return (self.path / SUMMARY).exists()

    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "config.json").exists():
            atomic_write_json(self.path / "config.json", dict(self.config))
        return self

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def read_json(self, name: str) -> Any:
        with open(self.path / name) as f:
            return json.load(f)

    def write_jsonl(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
        atomic_write_bytes(self.path / name, text.encode())

    def append_jsonl(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
        with open(self.path / name, "a") as f:
            f.write(text)
            f.flush()

    def read_jsonl(self, name: str) -> list[dict]:
        return read_jsonl(self.path / name)

    @property
    def summary(self) -> dict:
        return self.read_json(SUMMARY)


def run_dir(experiment: str, config: Mapping[str, Any], *, root: str | Path | None = None) -> RunDir:
    """The directory of ``config`` under ``experiment`` (not created yet)."""
    if not isinstance(experiment, str) or not experiment or "/" in experiment or experiment.startswith("."):
        raise ValueError(f"experiment must be a non-empty name without '/', got {experiment!r}")
    return RunDir(results_root(root) / experiment / config_hash(config), dict(config))
