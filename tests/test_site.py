"""The built book in headless Chromium (rs_lib.site_check): each failure class shown on a small
hand-made site with one deliberately broken page, then the smoke-profile site itself.

The smoke site reuses the notebooks that tests/test_notebooks.py executes (one execution per
notebook per session, the ``smoke_executed`` fixture) and is built once per session."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from rs_lib import book, site_check

# A 1x1 PNG.
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<script>window.MathJax = {{tex: {{inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]]}}}};</script>
<script defer src="tex-svg.js"></script>
<style>body {{margin: 0}} article {{width: 800px; margin-left: 300px}}</style></head>
<body><nav class="bd-docs-nav"><a href="index.html">Intro</a> <a href="chapter.html">Chapter</a></nav>
<article class="bd-article"><h1 id="top">{title}</h1>
<p>The loss <span class="math">\\(\\ell(x) = x^2\\)</span> is smooth.</p>
<img src="pixel.png" alt="a pixel"><a href="chapter.html#results">results</a>
{body}</article></body></html>"""

# A table as Sphinx numbers one: inside a figure whose caption starts with its number.
NUMBERED = ("<figure><table><tr><td>{cell}</td><td>2</td></tr></table>"
            "<figcaption><span class='caption-number'>Table 1 </span>A table.</figcaption></figure>")
GOOD_CHAPTER = "<h2 id='results'>Results</h2>" + NUMBERED.format(cell="1")

BROKEN = {
    "broken image": ("<img src='missing.png' alt='gone'>", "image not loaded: missing.png"),
    "raw $$": ("<p>Here $$x^2$$ was left unrendered.</p>", "raw $$ in the text"),
    "untypeset formula": ("<div class='math notranslate'>x^2</div>", "formula not typeset"),
    "remote request": ("<img src='http://example.com/logo.png' alt='remote'>",
                       "request leaving the machine: http://example.com/logo.png"),
    "remote script": ("<script src='https://cdn.example.org/lib.js'></script>",
                      "request leaving the machine: https://cdn.example.org/lib.js"),
    "overflowing table": (NUMBERED.format(cell="a very wide table").replace("<table>", "<table style='width: 1500px'>"),
                          "wider than the text column at 1280 px: element table (1500 px"),
    "squeezed column": ("<figure><table style='width: 120px'><tr><td style='overflow-wrap: anywhere'>smoke</td>"
                        "<td style='overflow-wrap: anywhere'>a long label that fills the rest of the table width</td>"
                        "</tr></table><figcaption><span class='caption-number'>Table 2 </span>Squeezed.</figcaption>"
                        "</figure>", "a word broken across lines in a table cell"),
    "unnumbered table": ("<table><tr><td>1</td></tr></table>", "table table (\"1\") without a number and caption"),
    "unnumbered figure": ("<div class='cell_output'><img src='pixel.png' alt='a plot'></div>",
                          "figure <img src=\"pixel.png\"> without a number and caption"),
    "NaN in a table": (NUMBERED.format(cell="NaN"), "NaN shown in table"),
    "pandas index": (NUMBERED.format(cell="1").replace("<tr>", "<tr><th class='row_heading level0 row0'>0</th>"),
                     "pandas' index column shown in table"),
    "console error": ("<script>console.error('boom')</script>", "console error: boom"),
    "uncaught exception": ("<script>null.x</script>", "uncaught exception"),
    "missing page": ("<a href='nowhere.html'>x</a>", "link to a missing page: nowhere.html"),
    "missing anchor": ("<a href='chapter.html#no-such-section'>x</a>",
                       "link to a missing anchor: chapter.html#no-such-section"),
}


def _site(root: Path, intro_body: str = "", *, sidebar: bool = True) -> Path:
    mathjax = book.MATHJAX
    if not mathjax.is_file():
        pytest.fail(f"{mathjax} is missing: run `make mathjax`")
    root.mkdir(parents=True)
    shutil.copy(mathjax, root / "tex-svg.js")
    (root / "pixel.png").write_bytes(PIXEL)
    intro = PAGE.format(title="Intro", body=intro_body)
    if not sidebar:
        intro = intro.replace('<a href="chapter.html">Chapter</a>', "")
    (root / "index.html").write_text(intro, encoding="utf8")
    (root / "chapter.html").write_text(PAGE.format(title="Chapter", body=GOOD_CHAPTER), encoding="utf8")
    return root


@pytest.fixture(scope="module")
def chromium():
    if not site_check.CHROMIUM.is_file():
        pytest.fail(f"{site_check.CHROMIUM} is missing: `make setup` installs Debian's chromium as root "
                    f"(apt-get install -y chromium)")
    return site_check.CHROMIUM


def test_a_sound_site_has_no_problems_and_gets_its_screenshot(tmp_path, chromium):
    site = _site(tmp_path / "site")
    shot = tmp_path / "shots" / "intro.png"
    problems = site_check.check_site(site, chapters=["index.html", "chapter.html"],
                                     screenshots={"index.html": shot})
    assert problems == {}
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_broken_page_is_reported_with_its_own_failure_only(tmp_path, chromium):
    site = _site(tmp_path / "site")
    pages = {kind: f"broken-{i}.html" for i, kind in enumerate(BROKEN)}
    for kind, name in pages.items():
        (site / name).write_text(PAGE.format(title=kind, body=BROKEN[kind][0]), encoding="utf8")
    problems = site_check.check_site(site, chapters=["index.html", "chapter.html"])
    assert set(problems) == set(pages.values()), problems
    for kind, name in pages.items():
        expected = BROKEN[kind][1]
        assert any(expected in item for item in problems[name]), (kind, problems[name])
        others = [k for k in BROKEN if k != kind and not BROKEN[k][1].startswith(expected[:12])]
        assert not any(BROKEN[k][1] in item for k in others for item in problems[name]), (kind, problems[name])


def test_the_books_table_css_keeps_a_narrow_column_whole(tmp_path, chromium):
    """reader.css's wrap rule on the squeezed-column table above: the short column keeps its word
    (the rule that broke it, `overflow-wrap: anywhere`, is what the check catches)."""
    site = _site(tmp_path / "site")
    shutil.copy(book.REPO_ROOT / "book" / "_static" / "reader.css", site / "reader.css")
    table = ("<link rel='stylesheet' href='reader.css'><figure><table class='reader-table' style='width: 120px'>"
             "<tr><td>smoke</td><td>a long label that fills the rest of the table width</td></tr></table>"
             "<figcaption><span class='caption-number'>Table 2 </span>Wrapped.</figcaption></figure>")
    (site / "css.html").write_text(PAGE.format(title="css", body=table), encoding="utf8")
    assert site_check.check_site(site, pages=["css.html"]) == {}


def test_a_chapter_missing_from_the_sidebar_is_reported(tmp_path, chromium):
    site = _site(tmp_path / "site", sidebar=False)
    problems = site_check.check_site(site, chapters=["index.html", "chapter.html"])
    assert problems == {"index.html": ["the sidebar does not list the chapter chapter.html"]}


def test_check_site_rejects_a_page_that_is_not_in_the_site(tmp_path, chromium):
    site = _site(tmp_path / "site")
    with pytest.raises(ValueError, match="'nope.html' is not a file of the site"):
        site_check.check_site(site, pages=["nope.html"])


def test_check_site_names_the_missing_browser(tmp_path):
    site = _site(tmp_path / "site")
    with pytest.raises(FileNotFoundError, match="apt-get install -y chromium"):
        site_check.check_site(site, chromium=tmp_path / "no-chromium")


# ---------------------------------------------------------------------------- the smoke site

@pytest.mark.notebook
def test_the_smoke_site_passes_every_check_in_chromium(smoke_site, chromium):
    html, screenshots = smoke_site
    shots = {"book/intro.html": screenshots / "intro.png",
             f"book/executed/{book.NOTEBOOKS[1]}.html": screenshots / f"{book.NOTEBOOKS[1]}.png",
             "book/backward_smoothing.html": screenshots / "backward_smoothing.png"}
    problems = site_check.check_site(html, chapters=book.toc_pages(), screenshots=shots)
    assert not problems, "\n" + site_check.format_problems(problems)
    assert all(path.stat().st_size > 10_000 for path in shots.values())
