"""Execute one chapter notebook with papermill (DESIGN.md, "The book").

A chapter is a parameterised notebook ``notebooks/<name>.ipynb``, stored without outputs.  papermill
executes it into ``<output_dir>/<name>.ipynb`` with ``profile``, ``device`` and the caller's
parameters injected after its cell tagged ``parameters`` (every name must be defined there), the
kernel's threads and the store's read-only mode set through its environment.  What the book's
chapters are, and the build of the site, is :mod:`rs_lib.book`.

Public names: :func:`execute_notebook`, :func:`notebook_path`, :func:`notebook_parameters`.
"""

from __future__ import annotations

import ast
import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import _validate as check
from . import lock
from .book import NOTEBOOK_DIR, NOTEBOOKS, REPO_ROOT
from .profiles import PROFILES

KERNEL = "python3"


def notebook_path(name: str | Path) -> Path:
    """The source notebook for a chapter name (``notebooks/<name>.ipynb``) or a path to an .ipynb."""
    if isinstance(name, Path) or str(name).endswith(".ipynb"):
        path = Path(name)
    elif isinstance(name, str) and name and "/" not in name:
        path = NOTEBOOK_DIR / f"{name}.ipynb"
    else:
        raise ValueError(f"name must be a notebook name (e.g. {NOTEBOOKS[0]!r}) or a path to an .ipynb "
                         f"file, got {name!r}")
    if not path.is_file():
        raise ValueError(f"name: notebook {str(path)!r} does not exist; the book's notebooks are "
                         f"{', '.join(NOTEBOOKS)} (in {NOTEBOOK_DIR})")
    return path


def notebook_parameters(path: str | Path) -> tuple[str, ...]:
    """Names assigned at top level in the notebook's cell tagged ``parameters``, in order.

    papermill only warns about a parameter the notebook does not define (and then injects it
    anyway), so these names are what :func:`execute_notebook` accepts.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ValueError(f"notebook {str(path)!r} has no code cell tagged 'parameters'; papermill "
                         f"needs one to inject profile and device")
    try:
        body = ast.parse(cells[0].source).body
    except SyntaxError as err:
        raise ValueError(f"the 'parameters' cell of {str(path)!r} is not plain Python: {err}") from None
    names: list[str] = []
    for node in body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        while targets:
            target = targets.pop(0)
            if isinstance(target, (ast.Tuple, ast.List)):
                targets = list(target.elts) + targets
            elif isinstance(target, ast.Name) and target.id not in names:
                names.append(target.id)
    return tuple(names)


def check_device(device: str) -> str:
    if not isinstance(device, str):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]' (a string), got {device!r}")
    check.resolve_device("device", device)
    return device


def check_threads(threads: int | None) -> int:
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)
    return check.positive_int("threads", threads)


def check_parameters(path: Path, parameters: Mapping[str, Any]) -> None:
    known = notebook_parameters(path)
    for name in parameters:
        if name not in known:
            raise ValueError(f"parameters: {name!r} is not a parameter of {path.name}; its 'parameters' "
                             f"cell defines {', '.join(known) or 'nothing'}")


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the kernel papermill starts (it inherits ours), then restore."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute_notebook(name: str | Path, *, profile: str, device: str = "auto", output_dir: str | Path,
                     parameters: Mapping[str, Any] | None = None, progress: bool = True,
                     threads: int | None = None, read_only: bool = False) -> Path:
    """Run a notebook top to bottom with papermill and return the executed copy's path.

    ``name`` is a chapter name (``notebooks/<name>.ipynb``) or a path to an .ipynb file.  The
    kernel is ``python3`` of this Python, its working directory the repository root; ``profile``
    (one of smoke / cpu / paper), ``device`` and ``parameters`` are injected after the cell tagged
    ``parameters``, and every name must be defined there.  ``threads`` sets ``OMP_NUM_THREADS`` for
    the kernel (default: the current ``OMP_NUM_THREADS``, else all cores).  The executed notebook
    is written to ``output_dir/<name>.ipynb``; a failing cell raises papermill's
    ``PapermillExecutionError`` (the partial notebook, with the traceback, is still written).
    ``read_only`` renders from the store only (``RS_READ_ONLY=1`` in the kernel, see
    :mod:`rs_lib.lock`): a missing run fails the cell, naming the ``sweep`` command that makes it.
    """
    check.choice("profile", profile, PROFILES)
    check_device(device)
    n_threads = check_threads(threads)
    for flag, value in (("progress", progress), ("read_only", read_only)):
        check.flag(flag, value)
    out_dir = check.directory("output_dir", output_dir, must_exist=False)
    path = notebook_path(name)
    if parameters is not None and not isinstance(parameters, Mapping):
        raise ValueError(f"parameters must be a mapping of parameter name to value, got {parameters!r}")
    extra = dict(parameters or {})
    for reserved in ("profile", "device"):
        if reserved in extra:
            raise ValueError(f"parameters: pass {reserved!r} as the {reserved}= argument, not in parameters")
    injected = {"profile": profile, "device": device, **extra}
    check_parameters(path, injected)

    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{path.stem}.ipynb"
    env = {"OMP_NUM_THREADS": str(n_threads)}
    if read_only:
        env.update({lock.READ_ONLY_ENV: "1",
                    lock.SWEEP_HINT_ENV: _sweep_command(path.stem, profile, extra)})
    with _environment(**env):
        try:
            papermill.execute_notebook(str(path), str(output), parameters=injected, kernel_name=KERNEL,
                                       cwd=str(REPO_ROOT), progress_bar=progress, log_output=False)
        except papermill.PapermillExecutionError as err:
            if err.ename == lock.MissingResultError.__name__:   # the reader's error, not a bug
                raise lock.MissingResultError(f"{path.name}: {err.evalue}") from None
            raise
    _hide_injected_parameters(output)
    return output


def _hide_injected_parameters(path: Path) -> None:
    """Put papermill's injected-parameters cell behind a toggle, like the parameters cell it overrides."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
    nbformat.write(nb, str(path))


def _sweep_command(name: str, profile: str, parameters: Mapping[str, Any]) -> str:
    """The ``sweep`` command line that computes what notebook ``name`` reads in ``profile``."""
    import json
    import shlex

    extra = "".join(f" -p {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in parameters.items())
    return f"python -m rs_lib sweep {name} --profile {profile}{extra}"
