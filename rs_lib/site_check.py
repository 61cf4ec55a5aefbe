"""Is a built site fit for its readers, offline?  Checked statically and in headless Chromium.

DESIGN.md, "The book": the site is tested in a real browser.  :func:`remote_resources` reads the
HTML and CSS for anything that would be fetched from another host; :func:`check_site` opens every
page in Debian's Chromium (driven by Playwright, with Chromium's own executable: Playwright's
browser download does not work offline) at a laptop's width and reports, per page:

* console errors and uncaught exceptions, and local resources that failed to load;
* every request that would leave the machine (each one is intercepted and refused);
* images that did not load (``naturalWidth == 0``);
* formulas MathJax did not typeset, and raw ``$$`` left in the text;
* internal links to a missing file or a missing ``#anchor``;
* elements of the main column wider than the viewport or than the text column;
* a word of a table cell broken across two lines (a column squeezed below its longest word);
* a table or a notebook's figure without a number and caption ("Table N", "Fig. N"), and a table
  that shows pandas' index column or a ``NaN``;
* chapters of the table of contents missing from the sidebar.

Pages are served from a loopback HTTP server (as a reader's ``python -m http.server`` would), so a
missing file shows as a failed request, not as a silent ``file://`` miss.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

from . import _validate as check

#: Debian's package ``chromium`` (``make setup`` installs it as root on Debian).
CHROMIUM = Path("/usr/bin/chromium")

#: Flags Chromium needs on a closed network in a container: no sandbox as root, no GPU, and none of
#: its background connections (updates, sync, QUIC probes), which are refused here and logged.
#: The fresh ``--user-data-dir`` is Playwright's own (a new temporary profile per launch).
CHROMIUM_ARGS: tuple[str, ...] = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                  "--no-first-run", "--disable-background-networking",
                                  "--disable-component-update", "--disable-sync",
                                  "--disable-dev-shm-usage")

#: A laptop window (the issue's "normal laptop window").
VIEWPORT = {"width": 1280, "height": 900}

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
_INLINE_SCHEMES = {"data", "blob", "about"}

# ------------------------------------------------------------------ static: resources on the network

_REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
_CSS_URL = re.compile(r"""(?:url\(|@import)\s*['"]?\s*((?:https?:)?//[^'")\s]+)""", re.IGNORECASE)
_QUOTED_URL = re.compile(r"""['"]((?:https?:)?//[^'"\s]+)['"]""", re.IGNORECASE)


class _RemoteResources(HTMLParser):
    """Collects what a page would fetch from another host when opened: script, style sheet, image,
    frame and media sources, CSS url()/@import, and addresses quoted in inline scripts.  Links a
    reader may click (``<a href>``) are not fetched and are allowed."""

    _ATTRS = {"script": ("src",), "link": ("href",), "img": ("src", "srcset"), "iframe": ("src",),
              "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",),
              "embed": ("src",), "object": ("data",), "track": ("src",), "input": ("src",)}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in self._ATTRS.get(tag, ()) and _REMOTE.match(value):
                self.found.append(f"<{tag} {name}={value!r}>")
            if value and name == "style":
                self.found += [f"style url {u!r}" for u in _CSS_URL.findall(value)]
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.found += [f"<style> url {u!r}" for u in _CSS_URL.findall(data)]
        elif self._in == "script":
            self.found += [f"<script> {u!r}" for u in _QUOTED_URL.findall(data)]


def remote_resources(site_dir: str | Path) -> dict[str, list[str]]:
    """For each page of a built site, the resources it would fetch from another host (empty = offline).

    Checks every ``.html`` page outside ``_static`` and every ``.css`` file (``url()``, ``@import``);
    hyperlinks the reader may follow are not resources and are not reported.
    """
    site = check.directory("site_dir", site_dir)
    report: dict[str, list[str]] = {}
    for page in sorted(site.rglob("*.html")):
        if "_static" in page.relative_to(site).parts:
            continue
        parser = _RemoteResources()
        parser.feed(page.read_text(encoding="utf8", errors="replace"))
        if parser.found:
            report[str(page.relative_to(site))] = parser.found
    for sheet in sorted(site.rglob("*.css")):
        urls = _CSS_URL.findall(sheet.read_text(encoding="utf8", errors="replace"))
        if urls:
            report[str(sheet.relative_to(site))] = [f"url {u!r}" for u in urls]
    return report


# ------------------------------------------------------------------------- in the browser

# Runs in the page once it has loaded and MathJax has finished: everything the checks need, as data.
_INSPECT = r"""
async ({mainSelector, sidebarSelector}) => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  await Promise.all([...document.images].map(img => img.complete ? null :
      new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done); })));
  const first = sel => sel.split(',').map(s => document.querySelector(s.trim())).find(el => el) || null;
  const main = first(mainSelector) || document.body;
  const box = main.getBoundingClientRect();
  const style = getComputedStyle(main);
  const textRight = box.right - parseFloat(style.paddingRight || '0');
  const describe = el => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += '#' + el.id;
    if (el.classList.length) s += '.' + [...el.classList].slice(0, 2).join('.');
    return s;
  };
  const wide = [];
  for (const el of main.querySelectorAll('*')) {
    if (el.closest('mjx-container')) continue;            // a formula's glyphs lie inside its own box
    if (el.closest('pre') && el.tagName !== 'PRE') continue;  // a code line: its block is checked
    if (!el.checkVisibility()) continue;                      // not shown (e.g. code behind a toggle)
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    if (el.tagName === 'PRE' && el.scrollWidth > el.clientWidth + 1) {
      wide.push({el, width: el.scrollWidth, what: 'code that scrolls sideways'});
      continue;
    }
    if (r.width > innerWidth + 1 || r.right > textRight + 1) {
      // Report the outermost offender only: its children are wide because it is.
      if (!wide.some(w => w.el.contains(el))) wide.push({el, width: Math.round(r.width), what: 'element'});
    }
  }
  // Every table of a page is numbered and captioned ("Table N"), shows neither pandas' index column
  // nor a NaN (rs_lib.report.reader_table), and has no word of a cell broken across two lines
  // ("pap/er": a column squeezed below its longest word, as `overflow-wrap: anywhere` does to a narrow
  // column of a wide table; words are runs of letters and digits, which never break at a normal
  // line-break opportunity).  Every figure a notebook draws is numbered ("Fig. N").
  const isCode = el => el.closest('.cell_input, pre, .highlight, mjx-container');
  const numbered = (el, kind) => {
    const holder = el.closest('figure') || el;
    const num = holder.querySelector(':scope > figcaption .caption-number, :scope > caption .caption-number');
    return num && num.textContent.trim().startsWith(kind);
  };
  const brokenWord = cell => {
    const cellText = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    while (cellText.nextNode()) {
      const node = cellText.currentNode;
      for (const m of node.textContent.matchAll(/[\p{L}\p{N}]{2,}/gu)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
        if (lines.size > 1) return m[0];
      }
    }
    return null;
  };
  const unnumbered = [], nanTables = [], indexTables = [], splitWords = [];
  for (const t of main.querySelectorAll('table')) {
    if (isCode(t) || !t.checkVisibility()) continue;
    const label = `${describe(t)} ("${t.innerText.trim().replace(/\s+/g, ' ').slice(0, 40)}")`;
    if (!numbered(t, 'Table')) unnumbered.push(`table ${label}`);
    if (/\bNaN\b/.test(t.innerText)) nanTables.push(label);
    if (t.querySelector('th.row_heading, th.blank.level0, th.index_name')) indexTables.push(label);
    for (const cell of t.querySelectorAll('td, th')) {
      const word = splitWords.length < 10 && brokenWord(cell);
      if (word) splitWords.push(`'${word}' in ${describe(cell)} of ${describe(t)}`);
    }
  }
  for (const img of main.querySelectorAll('.cell_output img')) {
    if (img.checkVisibility() && !numbered(img, 'Fig')) unnumbered.push(`figure <img src="${img.getAttribute('src')}">`);
  }
  const rawText = [];
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT, {
    acceptNode: n => n.parentElement.closest('pre, code, script, style, textarea, mjx-container')
        ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  while (walker.nextNode()) {
    const t = walker.currentNode.textContent;
    if (t.includes('$$')) rawText.push(t.trim().slice(0, 80));
  }
  const untypeset = [...main.querySelectorAll('.math')]
      .filter(el => !el.querySelector('mjx-container') && !el.closest('mjx-container'))
      .map(el => el.textContent.trim().slice(0, 80));
  const sidebar = first(sidebarSelector);
  return {
    ids: [...document.querySelectorAll('[id]')].map(el => el.id)
        .concat([...document.querySelectorAll('a[name]')].map(el => el.getAttribute('name'))),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    brokenImages: [...document.images].filter(img => !img.complete || img.naturalWidth === 0)
        .map(img => img.getAttribute('src')),
    mathElements: main.querySelectorAll('mjx-container').length,
    untypeset, rawDollars: rawText,
    splitWords,
    unnumbered, nanTables, indexTables,
    wide: wide.map(w => `${w.what} ${describe(w.el)} (${w.width} px; text column ${Math.round(textRight - box.left)} px)`),
    pageWidth: document.documentElement.scrollWidth,
    sidebar: sidebar ? [...sidebar.querySelectorAll('a[href]')].map(a => a.href) : null,
  };
}
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the browser closing a connection early (a page closed mid-download) is not a problem


_REFRESH = re.compile(r"""<meta[^>]+http-equiv=["']?refresh["']?[^>]*url=([^"'>\s]+)""", re.IGNORECASE)


@contextlib.contextmanager
def _serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on a free loopback port for the duration; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in _INLINE_SCHEMES or (parts.scheme in ("http", "https", "file", "ws")
                                               and (parts.scheme == "file" or parts.hostname in _LOCAL_HOSTS))


def _site_path(url: str, base: str, site: Path) -> Path | None:
    """The file of the site that a same-site URL names (None for another site's URL)."""
    if not url.startswith(base):
        return None
    rel = unquote(urldefrag(url)[0][len(base):].split("?")[0])
    path = site / rel
    return path / "index.html" if (not rel or rel.endswith("/")) else path


def _route(route, request, *, found: list[str]) -> None:  # noqa: ANN001 - playwright's types
    """Let loopback and inline requests through; refuse and record any other."""
    if _is_local(request.url):
        route.continue_()
    else:
        found.append(f"request leaving the machine: {request.url}")
        route.abort("blockedbyclient")


def check_site(site_dir: str | Path, *, chapters: Sequence[str] = (), pages: Sequence[str] | None = None,
               screenshots: Mapping[str, str | Path] | None = None, chromium: str | Path = CHROMIUM,
               main_selector: str = "article.bd-article, main",
               sidebar_selector: str = "nav.bd-docs-nav, #bd-docs-nav, nav",
               timeout_s: float = 60.0) -> dict[str, list[str]]:
    """Open every page of a built site in headless Chromium at 1280 px; return its problems per page.

    ``pages`` are paths of ``.html`` files relative to ``site_dir`` (default: every page outside
    ``_static``, ``_sources`` and ``_images``); ``chapters`` are the pages (``book/intro.html``, ...)
    that the sidebar of every page must link to; ``screenshots`` maps a page to the PNG file to
    write its full-page screenshot to.  An empty result means every check passed.
    """
    site = check.directory("site_dir", site_dir)
    executable = Path(chromium)
    if not executable.is_file():
        raise FileNotFoundError(f"chromium: {executable} does not exist; install Debian's browser "
                                f"(as root: apt-get install -y chromium) or run `make setup`")
    if pages is None:
        skip = {"_static", "_sources", "_images", "_downloads"}
        pages = [str(p.relative_to(site)) for p in sorted(site.rglob("*.html"))
                 if not skip & set(p.relative_to(site).parts)]
    pages = [str(p) for p in pages]
    for page in list(pages) + list(chapters) + list(screenshots or {}):
        if not (site / page).is_file():
            raise ValueError(f"pages/chapters/screenshots: {page!r} is not a file of the site {site}")
    from playwright.sync_api import sync_playwright

    problems: dict[str, list[str]] = {page: [] for page in pages}
    links: dict[str, list[str]] = {}
    ids: dict[Path, set[str]] = {}
    with _serve(site) as base, sync_playwright() as playwright:
        # Playwright gives every launch a fresh, empty profile (its own --user-data-dir).
        browser = playwright.chromium.launch(executable_path=str(executable), args=list(CHROMIUM_ARGS),
                                             headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT, service_workers="block")
            context.set_default_timeout(timeout_s * 1000)
            for page_name in pages:
                found = problems[page_name]

                redirect = _REFRESH.search((site / page_name).read_text(encoding="utf8", errors="replace"))
                if redirect:  # e.g. Sphinx's index.html: nothing to read, the target is checked itself
                    target = (site / page_name).parent / unquote(redirect.group(1))
                    if not target.is_file():
                        found.append(f"redirect to a missing page: {redirect.group(1)}")
                    continue
                page = context.new_page()
                page.route("**/*", functools.partial(_route, found=found))
                page.on("console", lambda m, found=found: found.append(f"console {m.type}: {m.text}")
                        if m.type == "error" else None)
                page.on("pageerror", lambda e, found=found: found.append(f"uncaught exception: {e}"))
                page.on("requestfailed", lambda q, found=found: found.append(
                    f"failed to load {q.url}: {q.failure}") if _is_local(q.url) else None)
                page.on("response", lambda s, found=found: found.append(
                    f"HTTP {s.status} for {s.url}") if s.status >= 400 else None)
                page.goto(base + page_name, wait_until="load")
                info = page.evaluate(_INSPECT, {"mainSelector": main_selector,
                                                "sidebarSelector": sidebar_selector})
                if screenshots and page_name in screenshots:
                    Path(screenshots[page_name]).parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshots[page_name]), full_page=True)
                page.close()
                found += [f"image not loaded: {src}" for src in info["brokenImages"]]
                found += [f"formula not typeset by MathJax: {t!r}" for t in info["untypeset"]]
                found += [f"raw $$ in the text: {t!r}" for t in info["rawDollars"]]
                found += [f"wider than the text column at {VIEWPORT['width']} px: {w}" for w in info["wide"]]
                found += [f"{w} without a number and caption" for w in info["unnumbered"]]
                found += [f"NaN shown in table {w}" for w in info["nanTables"]]
                found += [f"pandas' index column shown in table {w}" for w in info["indexTables"]]
                found += [f"a word broken across lines in a table cell (its column is narrower than the word): {w}"
                          for w in info["splitWords"]]
                if info["pageWidth"] > VIEWPORT["width"]:
                    found.append(f"the page scrolls sideways: {info['pageWidth']} px wide at "
                                 f"{VIEWPORT['width']} px")
                if chapters:
                    listed = {p for u in info["sidebar"] or [] if (p := _site_path(u, base, site))}
                    for chapter in chapters:
                        if (site / chapter) not in listed and Path(page_name) != Path(chapter):
                            found.append(f"the sidebar does not list the chapter {chapter}")
                links[page_name] = info["links"]
                ids[site / page_name] = set(info["ids"])
        finally:
            browser.close()
    for page_name, urls in links.items():
        for url in urls:
            target = _site_path(url, base, site)
            if target is None:
                continue
            if not target.is_file():
                problems[page_name].append(f"link to a missing page: {url[len(base):]}")
                continue
            fragment = urldefrag(url)[1]
            if fragment and target in ids and unquote(fragment) not in ids[target]:
                problems[page_name].append(f"link to a missing anchor: {url[len(base):]}")
    return {page: sorted(set(found), key=found.index) for page, found in problems.items() if found}


def format_problems(problems: Mapping[str, Sequence[str]]) -> str:
    """One line per problem, grouped by page (for an error message)."""
    return "\n".join(f"  {page}: {item}" for page, found in problems.items() for item in found)
