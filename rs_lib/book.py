"""Execute the book's notebooks with papermill and build the Jupyter Book (DESIGN.md, "The book").

A chapter is a parameterised notebook ``notebooks/<name>.ipynb``, stored without outputs.  papermill
executes it into ``book/executed/<name>.ipynb`` with ``profile`` and ``device`` injected after its
cell tagged ``parameters``; Jupyter Book (execution off) then renders the executed copies listed in
``_toc.yml``.  Notebooks run one after another, never two torch processes at once (TOOLCHAIN.md).

Adding a chapter: write ``notebooks/<name>.ipynb``, add ``"<name>"`` to :data:`NOTEBOOKS` and
``book/executed/<name>`` to ``_toc.yml`` (a test checks that the three agree).
"""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import _validate as check
from . import lock
from .profiles import PROFILES
from .site_check import check_site, format_problems, remote_resources

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = REPO_ROOT / "book" / "executed"
TOC = REPO_ROOT / "_toc.yml"
MATHJAX = REPO_ROOT / "book" / "_static" / "mathjax" / "tex-svg.js"
KERNEL = "python3"

#: The executed chapters, in reading order (the same order as in ``_toc.yml``).
NOTEBOOKS: tuple[str, ...] = (
    "noise_training",
    "bs_loss_increment",
    "bs_hessian",
    "bs_comparison",
    "bs_beta_tradeoff",
    "bs_stability",
    "bs_ablations",
    "rs_certified_curves",
    "rs_smoothadv_attacks",
    "rs_comparison",
    "rs_smoothmix_ablations",
)


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


def toc_notebooks(toc: str | Path = TOC) -> tuple[str, ...]:
    """The executed notebooks that ``_toc.yml`` lists (``book/executed/<name>``), in order."""
    prefix = "book/executed/"
    return tuple(page[len(prefix):].removesuffix(".html") for page in toc_pages(toc) if page.startswith(prefix))


def _check_device(device: str) -> str:
    if not isinstance(device, str):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]' (a string), got {device!r}")
    check.resolve_device("device", device)
    return device


def _check_threads(threads: int | None) -> int:
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)
    return check.positive_int("threads", threads)


def _check_parameters(path: Path, parameters: Mapping[str, Any]) -> None:
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
    _check_device(device)
    n_threads = _check_threads(threads)
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
    _check_parameters(path, injected)

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


def toc_pages(toc: str | Path = TOC) -> tuple[str, ...]:
    """Every page of ``_toc.yml`` (root first) as the site's ``.html`` path, in reading order."""
    import yaml

    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                entry = node.get(key)
                if isinstance(entry, str):
                    found.append(str(Path(entry).with_suffix("")) + ".html")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(Path(toc).read_text(encoding="utf8")))
    return tuple(found)


def _stage_sources(executed_dir: Path, stage: Path) -> Path:
    """A copy of the book's sources in ``stage`` with ``executed_dir``'s notebooks as book/executed."""
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO_ROOT / name, stage / name)
    shutil.copytree(REPO_ROOT / "book", stage / "book", ignore=shutil.ignore_patterns("executed", ".*"))
    (stage / "book" / "executed").mkdir()
    for name in NOTEBOOKS:
        source = executed_dir / f"{name}.ipynb"
        if not source.is_file():
            raise FileNotFoundError(f"executed_dir: {source} is missing; execute every notebook first")
        shutil.copy(source, stage / "book" / "executed" / source.name)
    return stage


def build_site(*, toc: str | Path | None = None, path_output: str | Path | None = None,
               executed_dir: str | Path | None = None) -> Path:
    """``jupyter-book build --all -W -n --keep-going`` of the repository; returns the site's index.html.

    Warnings are errors, and so is a page that would load anything from the network (see
    :func:`remote_resources`).  ``toc`` replaces ``_toc.yml`` and ``path_output`` the output folder
    (``<path_output>/_build/html``); both default to the repository's.  ``executed_dir`` builds
    the book from the executed notebooks in that folder instead of ``book/executed/`` (the sources
    are staged in a temporary copy; the repository is not written to).
    """
    if not MATHJAX.is_file():
        raise FileNotFoundError(f"{MATHJAX} is missing, so formulas would not render offline; "
                                f"run `make mathjax` (fetches MathJax 3.2.2 with npm)")
    out_root = REPO_ROOT if path_output is None else Path(path_output).resolve()
    with contextlib.ExitStack() as stack:
        source = REPO_ROOT
        if executed_dir is not None:
            executed = check.directory("executed_dir", executed_dir)
            source = _stage_sources(executed, Path(stack.enter_context(tempfile.TemporaryDirectory())))
        executable = Path(sys.executable).with_name("jupyter-book")
        cmd = [str(executable) if executable.exists() else "jupyter-book",
               "build", "--all", "-W", "-n", "--keep-going", str(source)]
        if toc is not None:
            cmd += ["--toc", str(Path(toc).resolve())]
        if path_output is not None or executed_dir is not None:
            cmd += ["--path-output", str(out_root)]
        result = subprocess.run(cmd, cwd=source, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {result.returncode}; warnings count as "
                           f"errors): see its messages above")
    html = out_root / "_build" / "html"
    remote = remote_resources(html)
    if remote:
        listing = "\n".join(f"  {page}: {', '.join(found)}" for page, found in remote.items())
        raise RuntimeError(f"the site in {html} would load resources from the network, but it must "
                           f"work offline:\n{listing}")
    return html / "index.html"


def check_book(html: str | Path, *, screenshots: str | Path | None = None) -> None:
    """Open every page of the built book in headless Chromium (:func:`rs_lib.site_check.check_site`)
    and raise ``RuntimeError`` listing every problem; screenshots of the intro, the first chapter
    page and the first notebook page go to ``screenshots`` (default ``<html>/../screenshots``)."""
    html = check.directory("html", html)
    shots = Path(screenshots) if screenshots is not None else html.parent / "screenshots"
    pages = toc_pages()
    chapter = next(p for p in pages if p.startswith("book/") and "/executed/" not in p and p != pages[0])
    wanted = {pages[0]: "intro.png", chapter: f"{Path(chapter).stem}.png",
              f"book/executed/{NOTEBOOKS[0]}.html": f"{NOTEBOOKS[0]}.png"}
    problems = check_site(html, chapters=pages, screenshots={p: shots / f for p, f in wanted.items()})
    if problems:
        raise RuntimeError(f"the built book in {html} fails its browser check:\n{format_problems(problems)}")
    print(f"Browser check passed on every page; screenshots in {shots}", flush=True)


def build_book(*, profile: str = "cpu", device: str = "auto", notebooks: Sequence[str] | None = None,
               build: bool = True, threads: int | None = None, progress: bool = True,
               parameters: Mapping[str, Any] | None = None, read_only: bool = False,
               browser_check: bool = True) -> Path | None:
    """Execute the book's notebooks in ``profile``, one after another, then build the site.

    ``parameters`` are injected into every selected notebook (each must declare them).

    ``notebooks`` limits execution to some chapters (the others must have been executed before for
    the build).  Finished runs are read from the run store, so a rebuild does not retrain.  Returns
    ``_build/html/index.html`` (None with ``build=False``).  ``read_only``: nothing is computed,
    every result must be in the store already (after a ``sweep``).  With ``browser_check`` the built
    site is opened in headless Chromium (:func:`check_book`) and any problem raises.
    """
    check.choice("profile", profile, PROFILES)
    _check_device(device)
    n_threads = _check_threads(threads)
    for flag, value in (("build", build), ("progress", progress), ("read_only", read_only),
                        ("browser_check", browser_check)):
        check.flag(flag, value)
    if toc_notebooks() != NOTEBOOKS:
        raise ValueError(f"_toc.yml lists the executed notebooks {list(toc_notebooks())} but "
                         f"rs_lib.book.NOTEBOOKS is {list(NOTEBOOKS)}: make them agree")
    if notebooks is None:
        selected = list(NOTEBOOKS)
    else:
        if isinstance(notebooks, str) or not all(isinstance(n, str) for n in notebooks):
            raise ValueError(f"notebooks must be a list of notebook names, got {notebooks!r}")
        selected = [check.choice("notebooks", n.removesuffix(".ipynb"), NOTEBOOKS) for n in notebooks]
    for name in selected:
        notebook_path(name)
        _check_parameters(notebook_path(name), dict(parameters or {}))

    for i, name in enumerate(selected, 1):
        print(f"[{i}/{len(selected)}] notebooks/{name}.ipynb -> book/executed/{name}.ipynb "
              f"(profile {profile}, device {device}, {n_threads} threads)", flush=True)
        execute_notebook(name, profile=profile, device=device, output_dir=EXECUTED_DIR,
                         progress=progress, threads=n_threads, parameters=parameters, read_only=read_only)
    if not build:
        return None
    missing = [n for n in NOTEBOOKS if not (EXECUTED_DIR / f"{n}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"not executed yet: {', '.join(missing)}; run `python -m rs_lib book "
                                f"--profile {profile}` without --notebooks first")
    index = build_site()
    if browser_check:
        check_book(index.parent)
    print(f"The book is at {index} (open file://{index})", flush=True)
    return index
