"""The Jupyter Book configuration: the site builds with warnings as errors, serves MathJax from
its own _static folder, and loads nothing from the network."""

from __future__ import annotations

import re

import pytest

from rs_lib import book, execute, site_check


@pytest.mark.notebook
def test_intro_builds_offline_with_local_mathjax(smoke_site):
    # The intro glues numbers from executed notebooks, so it is checked in the session's smoke site
    # (built with warnings as errors from the notebooks tests/test_notebooks.py executes).
    assert book.MATHJAX.is_file(), "run `make mathjax` (part of `make setup`) first"
    html, _ = smoke_site
    page = (html / "book" / "intro.html").read_text(encoding="utf8")
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page)
    assert scripts and all(s.startswith("../_static/mathjax/tex-svg.js") for s in scripts)
    assert (html / "_static" / "mathjax" / "tex-svg.js").stat().st_size > 1_000_000
    assert 'class="citation"' in page  # the bibliography rendered from book/references.bib
    assert site_check.remote_resources(html) == {}


@pytest.mark.parametrize("snippet", [
    '<script src="https://cdn.example.org/require.min.js"></script>',
    '<link rel="stylesheet" href="//fonts.example.com/css">',
    '<script>const THEBE_JS_URL = "https://unpkg.com/thebe@0.8.2/lib/index.js"</script>',
    '<style>@import url("https://fonts.example.com/x.css");</style>',
    '<img src="http://example.org/a.png">',
])
def test_remote_resources_reports_network_loads(tmp_path, snippet):
    (tmp_path / "page.html").write_text(f"<html><head>{snippet}</head><body></body></html>")
    assert list(site_check.remote_resources(tmp_path)) == ["page.html"]


def test_remote_resources_allows_links_and_local_files(tmp_path):
    (tmp_path / "page.html").write_text(
        '<html><head><script src="_static/mathjax/tex-svg.js"></script></head><body>'
        '<a href="https://doi.org/10.1000/1">paper</a><img src="fig.png">'
        '<svg xmlns="http://www.w3.org/2000/svg"></svg></body></html>')
    (tmp_path / "style.css").write_text('a { background: url("data:image/svg+xml;utf8,<svg/>") }')
    assert site_check.remote_resources(tmp_path) == {}


def test_environment_yml_has_the_pyproject_pins():
    import tomllib

    import yaml

    project = tomllib.loads((book.REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((book.REPO_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) - {"-e ."} == pins and "-e ." in pip
    assert "python=3.11" in env["dependencies"]


@pytest.mark.parametrize("kwargs, argument", [
    ({"profile": "laptop"}, "profile"),
    ({"device": "tpu"}, "device"),
    ({"threads": -2}, "threads"),
    ({"notebooks": ["no_such_chapter"]}, "notebooks"),
    ({"notebooks": "noise_training"}, "notebooks"),
    ({"build": "no"}, "build"),
])
def test_build_book_rejects_bad_arguments_before_running_anything(kwargs, argument, monkeypatch):
    monkeypatch.setattr(execute, "execute_notebook", lambda *a, **k: pytest.fail("executed a notebook"))
    with pytest.raises(ValueError, match=argument):
        book.build_book(**kwargs)


def test_build_book_refuses_a_toc_that_disagrees_with_NOTEBOOKS(monkeypatch):
    monkeypatch.setattr(book, "NOTEBOOKS", book.NOTEBOOKS + ("unlisted_chapter",))
    monkeypatch.setattr(execute, "execute_notebook", lambda *a, **k: pytest.fail("executed a notebook"))
    with pytest.raises(ValueError, match="make them agree"):
        book.build_book(profile="smoke")


def test_the_chapter_list_is_read_from_the_toc():
    assert book.NOTEBOOKS == book.toc_notebooks() and len(book.NOTEBOOKS) > 0


def test_importing_the_chapter_and_profile_names_is_torch_free_and_fast():
    """``import rs_lib.book`` (chapters, profile names) loads no torch and takes < 0.5 s, timed
    around the import statement inside a fresh interpreter."""
    import os
    import subprocess
    import sys

    code = ("import sys, time; t = time.perf_counter(); import rs_lib.book; t = time.perf_counter() - t; "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "assert rs_lib.book.NOTEBOOKS and rs_lib.book.PROFILES; print(t)")
    env = {**os.environ, "PYTHONPATH": str(book.REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=book.REPO_ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 0.5
