"""The book: its chapters (read from ``_toc.yml``) and the build of the site (DESIGN.md, "The book").

A chapter is a parameterised notebook ``notebooks/<name>.ipynb``; ``_toc.yml`` lists the executed
copies ``book/executed/<name>`` in reading order, and :data:`NOTEBOOKS` is read from it (adding a
chapter: write the notebook, list it in ``_toc.yml``).  :func:`build_book` executes the chapters one
after another with papermill (:mod:`rs_lib.execute`; never two torch processes at once,
TOOLCHAIN.md), then Jupyter Book (execution off) renders the executed copies (:func:`build_site`)
and headless Chromium checks the pages (:func:`check_book`, the linter of :mod:`rs_lib.site_check`).

Importing this module is cheap and torch-free (the chapter and profile names, for tools and
tests); the runner, the validators and the linter are imported when a build needs them.

Public names: :data:`NOTEBOOKS`, :data:`PROFILES`, :func:`toc_pages`, :func:`toc_notebooks`,
:func:`build_book`, :func:`build_site`, :func:`check_book`, and the paths :data:`REPO_ROOT`,
:data:`NOTEBOOK_DIR`, :data:`EXECUTED_DIR`, :data:`TOC`, :data:`MATHJAX`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .profiles import PROFILES

__all__ = ["EXECUTED_DIR", "MATHJAX", "NOTEBOOKS", "NOTEBOOK_DIR", "PROFILES", "REPO_ROOT", "TOC", "build_book",
           "build_site", "check_book", "toc_notebooks", "toc_pages"]

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = REPO_ROOT / "book" / "executed"
TOC = REPO_ROOT / "_toc.yml"
MATHJAX = REPO_ROOT / "book" / "_static" / "mathjax" / "tex-svg.js"


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


def toc_notebooks(toc: str | Path = TOC) -> tuple[str, ...]:
    """The executed notebooks that ``_toc.yml`` lists (``book/executed/<name>``), in order."""
    prefix = "book/executed/"
    return tuple(page[len(prefix):].removesuffix(".html") for page in toc_pages(toc) if page.startswith(prefix))


#: The executed chapters, in reading order: those ``_toc.yml`` lists.
NOTEBOOKS: tuple[str, ...] = toc_notebooks()


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
    :func:`rs_lib.site_check.remote_resources`).  ``toc`` replaces ``_toc.yml`` and ``path_output`` the output folder
    (``<path_output>/_build/html``); both default to the repository's.  ``executed_dir`` builds
    the book from the executed notebooks in that folder instead of ``book/executed/`` (the sources
    are staged in a temporary copy; the repository is not written to).
    """
    from . import _validate as check
    from .site_check import remote_resources

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
    from . import _validate as check
    from .site_check import check_site, format_problems

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
               build: bool = True, threads: int | None = None, parameters: Mapping[str, Any] | None = None,
               read_only: bool = False, browser_check: bool = True) -> Path | None:
    """Execute the book's notebooks in ``profile``, one after another, then build the site.

    ``parameters`` are injected into every selected notebook (each must declare them).

    ``notebooks`` limits execution to some chapters (the others must have been executed before for
    the build).  Finished runs are read from the run store, so a rebuild does not retrain.  Returns
    ``_build/html/index.html`` (None with ``build=False``).  ``read_only``: nothing is computed,
    every result must be in the store already (after a ``sweep``).  With ``browser_check`` the built
    site is opened in headless Chromium (:func:`check_book`) and any problem raises.  Each
    notebook's progress is shown (papermill's bar).
    """
    from . import _validate as check
    from . import execute

    check.choice("profile", profile, PROFILES)
    execute.check_device(device)
    n_threads = execute.check_threads(threads)
    for flag, value in (("build", build), ("read_only", read_only), ("browser_check", browser_check)):
        check.flag(flag, value)
    if toc_notebooks() != NOTEBOOKS:
        raise ValueError(f"_toc.yml lists the executed notebooks {list(toc_notebooks())} but "
                         f"rs_lib.book.NOTEBOOKS (read from it on import) is {list(NOTEBOOKS)}: make them "
                         "agree (re-import rs_lib.book after editing _toc.yml)")
    if notebooks is None:
        selected = list(NOTEBOOKS)
    else:
        if isinstance(notebooks, str) or not all(isinstance(n, str) for n in notebooks):
            raise ValueError(f"notebooks must be a list of notebook names, got {notebooks!r}")
        selected = [check.choice("notebooks", n.removesuffix(".ipynb"), NOTEBOOKS) for n in notebooks]
    for name in selected:
        execute.check_parameters(execute.notebook_path(name), dict(parameters or {}))

    for i, name in enumerate(selected, 1):
        print(f"[{i}/{len(selected)}] notebooks/{name}.ipynb -> book/executed/{name}.ipynb "
              f"(profile {profile}, device {device}, {n_threads} threads)", flush=True)
        execute.execute_notebook(name, profile=profile, device=device, output_dir=EXECUTED_DIR,
                                 threads=n_threads, parameters=parameters, read_only=read_only)
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
