"""Run store: one directory per resolved configuration, written atomically and verified on read.

Layout: ``<root>/<experiment>/<key>/`` with ``config.json`` (what the key is the hash of: the
resolved configuration and the fingerprint of the data), ``env.json`` (versions, code version,
data fingerprint, device, threads), ``metrics.jsonl`` (one JSON object per line), checkpoints
(``checkpoint_last.pt``, ``checkpoint_best.pt``), ``summary.json``, whose presence marks a
finished run, and ``manifest.json``, the size and SHA-256 of every artefact recorded when it was
written.  A finished run is a cache hit (re-rendering a notebook does not retrain) only if it
verifies: ``config.json`` hashes to the folder name and every recorded file has its recorded size
(its digest is checked when a checkpoint is loaded).  A run that does not verify raises
:class:`DamagedRunError` naming the file, and is never used, altered or deleted silently;
``python -m rs_lib discard DIR`` sets it aside so that the next call recomputes it.  An
interrupted run resumes from its last checkpoint.  The root is ``$RS_RESULTS`` if set, else
``<repo>/results``.

Results computed from a finished run (robust accuracy, certification, curvature, ...) live in its
folder too, evaluated once: :meth:`RunDir.cached` (``<name>-<hash of params>.json``,
:func:`cached_name`) is the one mechanism, :meth:`RunDir.lookup` the path every such result takes.

Public names: :class:`RunDir`, :func:`run_dir`, :func:`open_run_dir`, :func:`cached_name`,
:func:`discard`, :func:`results_root`, :func:`config_hash`, the atomic writers and readers, and the
errors :class:`StoreError`, :class:`CorruptFileError`, :class:`DamagedFileError`, :class:`DamagedRunError`.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import _record, lock
from . import _validate as check

REPO_ROOT = Path(__file__).resolve().parent.parent
SUMMARY = "summary.json"
CONFIG = "config.json"
MANIFEST = "manifest.json"
DISCARDED = ".discarded"
# Written by every finished run; a finished run missing one of them is damaged.
REQUIRED = (CONFIG, "metrics.jsonl", "checkpoint_last.pt", "checkpoint_best.pt", SUMMARY)


class StoreError(ValueError):
    """A store entry or path that cannot be used as asked (a user-facing error, exit code 2)."""


class CorruptFileError(StoreError):
    """A JSON or JSONL file that does not parse; the message names the file and the line."""


class DamagedFileError(StoreError):
    """A store file (e.g. a certification TSV) that is not whole; the message names it and ends
    with the command that sets it aside so that the next call recomputes it."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"damaged file {self.path}: {problem}; it is not used. To discard it and "
                         f"recompute: python -m rs_lib discard {self.path} (moves it and its sidecar to "
                         f"{self.path.parent / DISCARDED}/), then re-run the command that made it")


class DamagedRunError(StoreError):
    """A stored run whose files are not whole or whose config does not hash to its folder.

    ``path`` is the run directory, ``file`` the offending file, ``problem`` what is wrong; the
    message ends with the command that sets the run aside (it is then recomputed on demand)."""

    def __init__(self, path: Path, file: str, problem: str) -> None:
        self.path, self.file, self.problem = Path(path), file, problem
        super().__init__(f"damaged run {self.path}: {file} {problem}; the run is not used. "
                         f"To discard it and recompute: python -m rs_lib discard {self.path} "
                         f"(moves it to {self.path.parent / DISCARDED}/), then re-run the command "
                         "that made it")


def results_root(root: str | Path | None = None) -> Path:
    """The store's root: ``root`` if given, else ``$RS_RESULTS``, else ``<repo>/results``."""
    if root is not None:
        return check.directory("root", root, must_exist=False)
    env = os.environ.get("RS_RESULTS")
    if env and Path(env).exists() and not Path(env).is_dir():
        raise StoreError(f"RS_RESULTS={env!r} is a file, not a folder; point RS_RESULTS at a folder "
                         "for the run store (or unset it to use results/)")
    return Path(env) if env else REPO_ROOT / "results"


def ensure_writable(path: Path, what: str = "the run store") -> None:
    """Raise :class:`StoreError` unless ``path`` (or its nearest existing ancestor) is a writable
    folder; called before any heavy work so that a read-only store fails at once."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StoreError(f"{what} at {str(path)!r} cannot be created: {str(existing)!r} is a file; "
                         "choose another folder (--results or RS_RESULTS)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"{what} at {str(path)!r} is not writable ({str(existing)!r} is read-only); "
                         "choose a writable folder (--results or RS_RESULTS)")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    atomic_write_bytes(path, _json_bytes(obj))


def atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    """The JSON value in ``path``; :class:`CorruptFileError` naming the file and line if torn."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"{path} line {err.lineno} is not valid JSON ({err.msg}, column "
                               f"{err.colno}); the file is torn or was edited") from None
    except UnicodeDecodeError as err:
        raise CorruptFileError(f"{path} is not UTF-8 text ({err.reason}); the file is damaged") from None


def read_jsonl(path: Path, *, drop_torn_tail: bool = False) -> list[dict]:
    """One JSON object per line.  A line that does not parse raises :class:`CorruptFileError`
    naming the file and line, except, with ``drop_torn_tail``, a last line without its newline (a
    kill mid-append), which is ignored."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if drop_torn_tail and number == len(lines) and not text.endswith("\n"):
                break
            raise CorruptFileError(f"{path} line {number} is not valid JSON ({err.msg}); the file is "
                                   "torn or was edited") from None
    return rows


def code_version() -> dict[str, Any]:
    """The package version and, in a git checkout, the commit and whether the tree was dirty."""
    from . import __version__

    info: dict[str, Any] = {"rs_lib": __version__}
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        info["git_commit"] = git("rev-parse", "HEAD")
        info["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def environment(device: torch.device | str, threads: int, *,
                data_fingerprint: str | None = None) -> dict[str, Any]:
    """What produced a run: library and code versions, the data fingerprint, device and threads."""
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
        "code": code_version(),
        "data_fingerprint": data_fingerprint,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@dataclass(frozen=True)
class RunDir:
    """One run's directory.  Nothing is written until :meth:`create` (so bad input writes nothing).

    Every write goes through this class: atomic (or append-only for ``metrics.jsonl``), with the
    file's size and digest recorded in ``manifest.json`` before the file is replaced, so that a
    kill between the two leaves an unfinished run that resumes, never a finished one that lies."""

    path: Path
    config: Mapping[str, Any]

    @property
    def finished(self) -> bool:
        return (self.path / SUMMARY).exists()

    def create(self) -> RunDir:
        ensure_writable(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / CONFIG).exists():
            self.write_json(CONFIG, dict(self.config))
        return self

    def file(self, name: str) -> Path:
        return self.path / name

    # -- writing -----------------------------------------------------------------------------
    def manifest(self) -> dict[str, dict[str, Any]]:
        path = self.path / MANIFEST
        return read_json(path)["files"] if path.exists() else {}

    def _write(self, name: str, data: bytes) -> None:
        files = self.manifest()
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_json(self.path / MANIFEST, {"files": files})
        atomic_write_bytes(self.path / name, data)

    def record(self, name: str) -> None:
        """Record the current size and digest of ``name`` (an append-only file, once complete)."""
        files = self.manifest()
        path = self.path / name
        files[name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        atomic_write_json(self.path / MANIFEST, {"files": files})

    def write_json(self, name: str, obj: Any) -> None:
        self._write(name, _json_bytes(obj))

    def save_torch(self, name: str, obj: Any) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        self._write(name, buffer.getvalue())

    def write_jsonl(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
        atomic_write_bytes(self.path / name, text.encode())

    def append_jsonl(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
        with open(self.path / name, "a") as f:
            f.write(text)
            f.flush()

    # -- reading -----------------------------------------------------------------------------
    def read_json(self, name: str) -> Any:
        return read_json(self.path / name)

    def read_jsonl(self, name: str, *, drop_torn_tail: bool = False) -> list[dict]:
        return read_jsonl(self.path / name, drop_torn_tail=drop_torn_tail)

    @property
    def summary(self) -> dict:
        return self.read_json(SUMMARY)

    def verify_config(self) -> None:
        """``config.json`` must hash to the folder name (and equal the expected config, if known)."""
        path = self.path / CONFIG
        if not path.exists():
            return
        try:
            stored = read_json(path)
        except CorruptFileError as err:
            raise DamagedRunError(self.path, CONFIG, f"does not parse ({err})") from None
        if not isinstance(stored, dict):
            raise DamagedRunError(self.path, CONFIG, "does not hold a JSON object")
        digest = config_hash(stored)
        if digest != self.path.name:
            expected = dict(self.config) if self.config else self._checkpoint_config()
            what = _differences(expected, stored) if expected else "its content"
            raise DamagedRunError(self.path, CONFIG, f"hashes to {digest}, not to its folder name "
                                  f"{self.path.name}: it was edited ({what})")

    def _checkpoint_config(self) -> dict[str, Any] | None:
        """The configuration a checkpoint carries (to say what an edited config.json changed)."""
        path = self.path / "checkpoint_last.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            return dict(state["config"])
        except Exception:  # noqa: BLE001 - only used to word an error message
            return None

    def verify(self) -> None:
        """Check a finished run cheaply: config hash, manifest, presence and size of every artefact,
        and that summary.json parses.  Raises :class:`DamagedRunError` naming the file."""
        self.verify_config()
        if not (self.path / MANIFEST).exists():
            raise DamagedRunError(self.path, MANIFEST, "is missing (a run written by an older rs_lib, or "
                                  "its files were copied without it)")
        try:
            files = self.manifest()
        except CorruptFileError as err:
            raise DamagedRunError(self.path, MANIFEST, f"does not parse ({err})") from None
        for name in REQUIRED:
            if name not in files:
                raise DamagedRunError(self.path, name, "is not recorded in manifest.json")
        for name, entry in files.items():
            path = self.path / name
            if not path.exists():
                raise DamagedRunError(self.path, name, "is missing")
            if path.stat().st_size != entry["size"]:
                raise DamagedRunError(self.path, name, f"has {path.stat().st_size} bytes, "
                                      f"{entry['size']} were written (truncated or replaced)")
        for name in (SUMMARY, "metrics.jsonl"):
            if sha256_file(self.path / name) != files[name]["sha256"]:
                raise DamagedRunError(self.path, name, "does not match the digest recorded when it "
                                      "was written (edited or damaged)")

    def verified_file(self, name: str) -> Path:
        """``name`` after checking its full SHA-256 against the manifest (checkpoints, on load)."""
        path = self.path / name
        entry = self.manifest().get(name)
        if not path.exists():
            raise DamagedRunError(self.path, name, "is missing")
        if entry is not None and (path.stat().st_size != entry["size"]
                                  or sha256_file(path) != entry["sha256"]):
            raise DamagedRunError(self.path, name, "does not match the size and digest recorded "
                                  "when it was written (truncated, replaced or damaged)")
        return path

    # -- results computed from a finished run ------------------------------------------------
    def lookup(self, name: str) -> Path:
        """The path of result file ``name`` of this run, the look-up recorded (:mod:`rs_lib._record`,
        what the plan tests compare with a notebook's keys).  Every cached result goes through it:
        :meth:`cached`'s JSON files and the certification TSVs (resumable row by row, so they keep
        their own writer, :func:`rs_lib.smoothing.certify_run`)."""
        _record.lookup(self.path.parent.name, f"{self.path.name}/{name}")
        return self.file(name)

    def cached(self, name: str, params: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        """``compute()`` stored as ``<run>/<name>-<hash of params>.json`` (:func:`cached_name`):
        evaluated once per run and parameters under the file's lock, so that re-rendering a notebook
        (or a second process) reads it back.  A file that does not hold a cached result is a
        :class:`DamagedRunError`."""
        path = self.lookup(cached_name(name, params))
        if not path.exists():
            lock.check_writable(f"evaluation {path.name!r} of run {self.path}")
            with lock.hold(path.with_name(path.name + ".lock"), what=f"evaluation {path}"):
                if not path.exists():   # else another process computed it while we waited
                    result = compute()
                    atomic_write_json(path, {"params": dict(params), "result": result})
                    return result
        try:
            return self.read_json(path.name)["result"]
        except (CorruptFileError, KeyError, TypeError) as err:
            raise DamagedRunError(self.path, path.name, f"is not a cached result ({err})") from None

    def load_torch(self, name: str, *, verify: bool = True) -> Any:
        """``torch.load`` of a verified file; a file torch cannot read is a damaged run.

        ``verify=False`` skips the digest, for the resume of an unfinished run: a kill between
        recording a checkpoint's digest and replacing the file leaves the previous (whole) one."""
        path = self.verified_file(name) if verify else self.path / name
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - pickle/zip errors have no common base
            raise DamagedRunError(self.path, name, f"cannot be read by torch.load ({err})") from None


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def _differences(expected: Mapping[str, Any], stored: Mapping[str, Any], prefix: str = "") -> str:
    """The keys whose values differ, as 'key: expected -> stored' (nested keys dotted)."""
    out = []
    for key in sorted(set(expected) | set(stored), key=str):
        a, b = expected.get(key, "<absent>"), stored.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            inner = _differences(a, b, f"{prefix}{key}.")
            out += [inner] if inner else []
        elif canonical_json(a) != canonical_json(b):
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return ", ".join(out)


def cached_name(name: str, params: Mapping[str, Any]) -> str:
    """The file name of :meth:`RunDir.cached`'s result ``name`` at ``params`` in a run's directory."""
    return f"{name}-{config_hash(dict(params))}.json"


def run_dir(experiment: str, config: Mapping[str, Any], *, root: str | Path | None = None) -> RunDir:
    """The directory of ``config`` under ``experiment`` (not created yet)."""
    if not isinstance(experiment, str) or not experiment or "/" in experiment or experiment.startswith("."):
        raise ValueError(f"experiment must be a non-empty name without '/', got {experiment!r}")
    return RunDir(results_root(root) / experiment / config_hash(config), dict(config))


def open_run_dir(path: str | Path, name: str = "--run") -> RunDir:
    """An existing run directory, verified as a finished run (for ``certify --run`` and friends)."""
    folder = check.directory(name, path)
    if not (folder / CONFIG).is_file():
        raise StoreError(f"{name} {str(folder)!r} is not a run directory (no {CONFIG}); give a folder "
                         "results/<experiment>/<hash>/ printed by `train`")
    rd = RunDir(folder, {})
    if not rd.finished:
        raise StoreError(f"{name} {str(folder)!r} is an unfinished run (no {SUMMARY}); re-run its "
                         "training to finish it")
    rd.verify()
    return rd


def discard(path: str | Path) -> Path:
    """Set a damaged store entry aside: a run directory, or a certification TSV with its
    ``.meta.json`` sidecar, is moved into ``.discarded/`` beside it (never deleted), so the next
    call that needs it recomputes it.  Returns the new location.  Anything else is refused."""
    src = Path(path)
    if not src.exists():
        raise StoreError(f"discard: {str(src)!r} does not exist")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    if src.is_dir():
        if not (src / CONFIG).is_file() and not (src / MANIFEST).is_file():
            raise StoreError(f"discard: {str(src)!r} is not a run directory (no {CONFIG}); nothing moved")
        moved = [src]
    else:
        meta = src.with_name(src.name + ".meta.json")
        if not meta.is_file():
            raise StoreError(f"discard: {str(src)!r} is neither a run directory nor a certification TSV "
                             f"with its {meta.name} sidecar; nothing moved")
        moved = [src, meta]
    target = src.parent / DISCARDED
    target.mkdir(exist_ok=True)
    for item in moved:
        os.replace(item, target / f"{item.name}-{stamp}")
    return target / f"{src.name}-{stamp}"
