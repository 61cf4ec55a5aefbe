"""Write access to a run store shared by many processes: per-result locks and the read-only mode.

A result (a training run's folder, a cached evaluation, a certification TSV) is computed by the
one process that holds its lock file; a second process on the same result waits, telling which
process holds it, and afterwards finds the result finished instead of computing it again.

The lock is a POSIX record lock (``fcntl.lockf``, i.e. ``fcntl(F_SETLK)`` on the whole file):

- the kernel drops it when its process dies, however it dies (``kill -9`` included), so a lock
  file left behind by a killed process is *stale* by construction: it still names the dead
  holder, but locking it succeeds, and the new holder says so;
- on NFS it is forwarded to the server: by the NLM side protocol (``lockd``/``statd``) on NFSv3
  and natively (stateful LOCK operations with a lease) on NFSv4, so processes on different
  cluster nodes exclude each other.  A node that crashes holding a lock loses it when the server
  notices (NFSv4: after its lease, about 90 s; NFSv3: when ``statd`` reports the reboot).
  ``flock`` is avoided on purpose: before Linux 2.6.12 it was local-only on NFS, and since then
  the NFS client emulates it with a whole-file ``fcntl`` lock anyway; a mount with
  ``-o nolock``/``local_lock=all`` keeps locks node-local and so cannot share a store across
  nodes.
- POSIX locks belong to a process, not to a file descriptor: closing *any* descriptor of the
  file drops them, and a second lock from the same process always succeeds.  :func:`hold`
  therefore keeps one descriptor per path per process, counts re-entries, and reads a held lock
  file through that descriptor only.

Read-only mode (``RS_READ_ONLY=1``, set by ``python -m rs_lib book --read-only``) turns every
computation of a missing result into :class:`MissingResultError` naming the result and the
``sweep`` command that produces it, so rendering the book never silently starts training.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

READ_ONLY_ENV = "RS_READ_ONLY"
SWEEP_HINT_ENV = "RS_SWEEP_HINT"
RUN_LOCK = ".lock"          # inside a run's folder
POLL_S = 0.2

_held: dict[str, tuple[int, int]] = {}       # path -> (fd, depth) of the locks this process holds
_held_guard = threading.Lock()


class LockTimeoutError(TimeoutError):
    """The lock stayed held by another process for longer than the caller would wait."""


class MissingResultError(FileNotFoundError):
    """Read-only mode: a result the caller needs is not in the store."""


def read_only() -> bool:
    """True when ``$RS_READ_ONLY`` is set to 1/true/yes: the store may be read, never computed into."""
    return os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes")


def check_writable(what: str) -> None:
    """Raise :class:`MissingResultError` for the missing result ``what`` in read-only mode."""
    if not read_only():
        return
    hint = os.environ.get(SWEEP_HINT_ENV) or "python -m rs_lib sweep <experiment> --profile <profile>"
    raise MissingResultError(f"{what} is not in the store and {READ_ONLY_ENV}=1 forbids computing it "
                             f"here; produce it first with `{hint}` (same profile and overrides), "
                             f"or unset {READ_ONLY_ENV}")


def holder(path: str | Path) -> dict | None:
    """Who holds (or last held, if stale) the lock file ``path``: {"pid", "host", "since"}, or None."""
    key = str(Path(path).resolve())
    with _held_guard:
        fd = _held.get(key, (None, 0))[0]
    try:
        # A lock this process holds is read through its own descriptor: opening and closing another
        # one would drop the POSIX lock.
        text = _read_fd(fd) if fd is not None else Path(path).read_text(encoding="utf-8")
        info = json.loads(text) if text.strip() else None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


def _read_fd(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8")


def describe(info: dict | None) -> str:
    if not info:
        return "an unknown process"
    return f"pid {info.get('pid')} on host {info.get('host')} since {info.get('since')}"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise


def _write_holder(fd: int) -> None:
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    data = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _acquire(path: Path, what: str, timeout: float | None) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            print(f"{what}: waiting for {describe(holder(path))}, which holds {path}",
                  file=sys.stderr, flush=True)
            deadline = None if timeout is None else time.monotonic() + timeout
            while not _try_lock(fd):
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeoutError(f"{what}: {describe(holder(path))} still holds {path} after "
                                           f"{timeout:g} s; wait for it to finish, or if that process "
                                           f"is gone (its node crashed), delete the lock file")
                time.sleep(POLL_S)
        text = _read_fd(fd)         # a clean release empties the file: a name left in it is stale
        if text.strip():
            try:
                previous = json.loads(text)
            except json.JSONDecodeError:
                previous = None
            print(f"{what}: lock {path} was left by {describe(previous)}, which ended without "
                  f"releasing it (stale); taking over", file=sys.stderr, flush=True)
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def hold(path: str | Path, *, what: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock file ``path`` while the block runs.

    Waits for another process's lock (printing once to stderr who holds it: pid, host, since when),
    or raises :class:`LockTimeoutError` after ``timeout`` seconds (None: wait as long as it takes;
    0: fail at once).  Re-entrant within a process.  The holder's identity is written into the
    file while it is held and erased on release, so a lock file that names a holder but can be
    locked was left by a process that died (reported as stale, then taken over).
    """
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or >= 0 seconds, got {timeout!r}")
    key = str(Path(path).resolve())
    with _held_guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if not reentered:
        fd = _acquire(Path(path), what, timeout)
        _write_holder(fd)
        with _held_guard:
            _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _held_guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
                fd = -1
            else:
                del _held[key]
        if fd >= 0:
            os.ftruncate(fd, 0)
            os.close(fd)      # closing the descriptor releases the POSIX lock
