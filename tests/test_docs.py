"""The documentation site that the `docs` stage builds (`python docs/build.py`), from the smoke pipeline run that
tests/test_pipeline.py checks too (`smoke_repo`, tests/conftest.py).

The site is served from a local HTTP server and read in headless Chromium, as a person would: pages load, their
images decode, equations are typeset by MathJax, the console shows no error, search and navigation work, and no
request leaves localhost. Screenshots of the pages go to test-artifacts/docs/. Without Chromium the browser tests
skip (they fail instead when GINN_REQUIRE_BROWSER=1, as in CI)."""
import ast
import importlib.util
import json
import os
import re
import shutil
import threading
import time
from functools import partial
from html import unescape
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "docs"
INSTALL = "apt-get install -y chromium chromium-driver"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


# ---------------------------------------------------------------- the built site, read as files
@pytest.fixture(scope="module")
def site(smoke_repo):
    root, _ = smoke_repo
    return root, root / "_docs"


def experiments(root):
    "The experiments whose executed reports the site shows (the results notebook is the Results page instead)."
    return sorted(p.stem for p in (root / "reports").glob("*.ipynb") if not p.name.startswith(".") and p.stem != "results")


def html_text(html: str) -> str:
    "The text of an HTML page: tags dropped, entities (`&#64;` for `@`) decoded, whitespace collapsed."
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def article(html: str) -> str:
    "The page's own content, without the theme's navigation and table of contents."
    m = re.search(r'<article class="bd-article"[^>]*>(.*?)</article>', html, re.S)
    assert m, "no <article class=bd-article> in the page"
    return m.group(1)


def code_cells(html: str) -> list[str]:
    "The text of every code cell's input on a page (folded ones too)."
    return [html_text(c) for c in re.findall(r'<div class="cell_input[^"]*">.*?<pre>(.*?)</pre>', html, re.S)]


def test_docs_site_has_every_page(site):
    root, docs = site
    library = sorted(p.stem for p in (root / "nbs").glob("[0-9]*.ipynb"))
    assert library and experiments(root)
    pages = (["index", "results", "reproduce", "search", "genindex"] + [f"library/{n}" for n in library]
             + [f"reports/{n}" for n in experiments(root)])
    missing = [p for p in pages if not (docs / f"{p}.html").is_file()]
    assert not missing, f"pages not built: {missing}"
    for name in library:
        code = code_cells((docs / "library" / f"{name}.html").read_text())
        assert code, f"{name}: no code cell"
        assert not [c for c in code if re.search(r"^\s*#\s*\|", c, re.M)], f"{name}: nbdev directives rendered in code"
        assert not [c for c in code if c.strip().startswith("show_doc(")], f"{name}: show_doc rendered as code"
    assert not (docs.parent / "jupyter_execute").exists()


# ---------------------------------------------------------------- the API, where the notebook documents it
DIRECTIVE = re.compile(r"^\s*#\s*\|\s*([\w-]+):?\s*(.*)$")


def leading_directives(source: str) -> dict[str, str]:
    "nbdev's directives: the `#| name args` lines before a cell's first line of code."
    found = {}
    for line in source.splitlines():
        m = DIRECTIVE.match(line)
        if not m:
            if line.strip():
                break
            continue
        found[m.group(1)] = m.group(2).strip()
    return found


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def documented_in_notebook(path: Path) -> tuple[str | None, list[tuple[int, str]]]:
    """The module a library notebook exports to, and what nbdev's docs show for it, as (number of headings before,
    name): each `show_doc(name)`, and every public function and class of an exported cell that no `show_doc`
    names (nbdev's `add_show_docs`), in the section where the cell stands."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    shown = {m for c in cells if c["cell_type"] == "code" for m in re.findall(r"^show_doc\(([\w.]+)", source(c), re.M)}
    module, headings, found = None, 0, []
    for cell in cells:
        src = source(cell)
        if cell["cell_type"] == "markdown":
            if not (src.strip().startswith("#") and src.strip().endswith(" -")):     # nbdev's rm_header_dash
                headings += len(re.findall(r"^#{1,6} \S", re.sub(r"```.*?```", "", src, flags=re.S), re.M))
            continue
        if cell["cell_type"] != "code":
            continue
        d = leading_directives(src)
        module = module or d.get("default_exp") or None
        if "hide" in d:
            continue
        found += [(headings, m) for m in re.findall(r"^show_doc\(([\w.]+)", src, re.M)]
        if {"export", "exports"} & set(d):
            tree = ast.parse("\n".join(l for l in src.splitlines() if not DIRECTIVE.match(l)))
            found += [(headings, n.name) for n in tree.body
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                      and not n.name.startswith("_") and n.name not in shown]
    return module, found


def test_docs_show_doc_renders_in_place(site):
    """Every library page documents each exported function and class, and each `show_doc`, as an API entry (its
    signature and docstring), in the section of the notebook where it is defined or shown, not as code."""
    root, docs = site
    for path in sorted((root / "nbs").glob("[0-9]*.ipynb")):
        module, expected = documented_in_notebook(path)
        if not module:
            continue
        assert expected, f"{path.name} documents nothing"
        page = article((docs / "library" / f"{path.stem}.html").read_text())
        events = [(m.group(1) or "h", m.group(2)) for m in
                  re.finditer(r'<dt class="sig sig-object py" id="([^"]+)"|<h([1-6])[ >]', page)]
        sections, ids = {}, {}
        for n, (kind, value) in enumerate(events):     # for each entry: how many headings come before it
            if kind != "h":
                ids.setdefault(kind, sum(1 for k, _ in events[:n] if k == "h"))
        for heading, name in expected:
            anchor = next((i for i in ids if i.endswith(f".{name}")), None)
            assert anchor, f"{path.name}: no API entry for {name} (entries: {sorted(ids)})"
            sections[name] = (ids[anchor], heading)
            signature = page.split(f'id="{anchor}"', 1)[1].split("</dt>", 1)[0]
            assert 'class="sig-name descname"' in signature, f"{path.name}: {name} has no signature"
        misplaced = {n: s for n, s in sections.items() if s[0] != s[1]}
        assert not misplaced, f"{path.name}: entries not in their notebook section (found, expected): {misplaced}"


def alnum(text: str) -> str:
    "Only the letters and digits of `text` (markup and escapes aside)."
    return re.sub(r"\W+", "", text)


def test_docs_api_entries_have_docstrings(site):
    "The docstring of each documented object is on its page, under its signature."
    import importlib
    root, docs = site
    for path in sorted((root / "nbs").glob("[0-9]*.ipynb")):
        module, expected = documented_in_notebook(path)
        if not module:
            continue
        mod = importlib.import_module(f"ginn.{module}")
        page = article((docs / "library" / f"{path.stem}.html").read_text())
        for _, name in expected:
            obj = mod
            for part in name.split("."):
                obj = getattr(obj, part)
            doc = (getattr(obj, "__doc__", None) or "").strip()
            if not doc or getattr(obj, "__module__", "").split(".")[0] != "ginn":
                continue
            m = re.search(rf'<dt class="sig sig-object py" id="[\w.]*\.{re.escape(name)}">(.*?)</dd>', page, re.S)
            assert m, f"{path.name}: no entry for {name}"
            assert alnum(doc.splitlines()[0])[:30] in alnum(html_text(m.group(1))), \
                f"{path.name}: the docstring of {name} is not under its signature"


def test_docs_results_tables_come_from_metrics(site):
    root, docs = site
    text = html_text((docs / "results.html").read_text())
    experts = json.loads((root / "metrics" / "experts.json").read_text())
    assert all(role in text for role in experts)
    for name in experiments(root):
        metrics = json.loads((root / "metrics" / f"{name}.json").read_text())
        assert all(layer in text for layer in metrics["layers"]), f"results page lacks the layers of {name}"
        _, per = next(iter(next(iter(metrics["layers"].values())).items()))
        first = next(v for v in per.values() if isinstance(v, dict) and v.get("mean") is not None)
        assert f"{first['mean']:.4g}" in text            # a number, as formatted from the JSON
        assert f'href="reports/{name}.html"' in (docs / "results.html").read_text()


def test_docs_reproduce_page_has_the_readme_commands(site):
    root, docs = site
    readme = (root / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    text = html_text((docs / "reproduce.html").read_text()).replace("&quot;", '"').replace("&amp;", "&")
    assert len(commands) == 2 and all(html_text(c).strip() in text for c in commands)
    assert "dvc repro" in text and "_docs" in text


def docs_builder():
    "docs/build.py as a module (it is a script, not part of the package)."
    spec = importlib.util.spec_from_file_location("ginn_docs_build", REPO / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_load_nothing_from_the_network(site):
    "No page or style sheet names an asset on another host; MathJax is one of the site's own files."
    _, docs = site
    found = docs_builder().remote_assets(docs)          # what the page and style sheet parsers find
    assert not found, found
    (docs / "_static" / "probe.css").write_text("@import 'https://example.org/x.css';")
    try:                                                # and the check can fail
        assert docs_builder().remote_assets(docs) == ["_static/probe.css: https://example.org/x.css"]
    finally:
        (docs / "_static" / "probe.css").unlink()
    assert (docs / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert 'src="../_static/mathjax/tex-chtml.js' in (docs / "library" / "00_flow.html").read_text()


def test_docs_staged_notebooks_number_lines_from_their_cells(tmp_path):
    """myst-nb numbers a staged notebook's lines from the cells' own line counts (`source_map`), not 10000 per cell:
    MyST parses each `{eval-rst}` block (every autodoc entry) after as many blank lines as its line number, which
    made the API pages take minutes to read. Read back from a Sphinx warning's line number, here from a notebook
    of 60 cells whose last one holds an `{eval-rst}` block with an unknown directive."""
    import subprocess
    import sys
    build = docs_builder()
    cells = [build.markdown_cell(f"# Page\n\nparagraph {i}\n\nmore text") for i in range(59)]
    cells.append(build.markdown_cell("```{eval-rst}\n.. no-such-directive:: x\n```"))
    src = tmp_path / "src"
    build.write_nb({"cells": cells, "metadata": {"kernelspec": build.KERNELSPEC}, "nbformat": 4, "nbformat_minor": 5},
                   src / "page.ipynb")
    smap = json.loads((src / "page.ipynb").read_text())["metadata"]["source_map"]
    assert smap == [6 * i for i in range(60)]           # each cell: 5 lines and one between
    (tmp_path / "conf.py").write_text("extensions = ['myst_nb']\nnb_execution_mode = 'off'\nroot_doc = 'page'\n")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(tmp_path), str(src),
                           str(tmp_path / "html")], capture_output=True, text=True)
    lines = [int(n) for n in re.findall(r"page\.ipynb:(\d+): \w+: Unknown directive type", done.stderr)]
    assert lines and lines[0] < 400, done.stderr       # 59 * 6 + 2 (without source_map: 600002)


# ---------------------------------------------------------------- the site in a browser
def _missing_browser():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"the Python package selenium is missing (pip install -e '.[dev]'), and Chromium: {INSTALL}"
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chrome and driver):
        return f"Chromium and its driver are not installed: {INSTALL}"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = _missing_browser()
    if missing:
        if os.environ.get("GINN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"GINN_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                # every host name but localhost resolves to nothing: a page that needs the network shows it
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
                "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                "--disable-extensions", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(browser, site):
    "The built site on a free localhost port; its base URL."
    _, docs = site
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(docs)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    thread.join(5)
    httpd.server_close()


WAIT_FOR_PAGE = """
const done = arguments[arguments.length - 1], t0 = Date.now();
const hasMath = !!document.querySelector('script[src*="mathjax"]');
(function wait() {
  const images = [...document.images].every(i => i.complete);
  const math = !hasMath || (window.MathJax && MathJax.startup && MathJax.startup.promise);
  if (document.readyState === 'complete' && images && math) {
    const typeset = hasMath ? MathJax.startup.promise : Promise.resolve();
    typeset.then(() => done({hasMath}), e => done({hasMath, error: String(e)}));
  } else if (Date.now() - t0 > 30000) {
    done({hasMath, error: 'timed out: readyState ' + document.readyState + ', images ' + images + ', MathJax ' + !!math});
  } else setTimeout(wait, 50);
})();
"""


def shot_name(url: str) -> str:
    "`library/00_flow.html?q=x` -> `library-00_flow-q-x`: the screenshot's file name."
    path = urlsplit(url)
    name = (path.path.strip("/").removesuffix(".html") or "index").replace("/", "-")
    return name + (("-" + re.sub(r"\W+", "-", path.query)) if path.query else "")


def visit(driver, url: str) -> dict:
    """Open `url`, wait until its images and equations are done, save a screenshot; return what the page did:
    its requests, console messages, images (src, naturalWidth) and typeset equations."""
    driver.get_log("browser"), driver.get_log("performance")       # drop what earlier pages left
    driver.get(url)
    driver.set_script_timeout(40)
    state = driver.execute_async_script(WAIT_FOR_PAGE)
    assert not state.get("error"), f"{url}: {state['error']}"
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 6000)")
    driver.set_window_size(1280, max(900, height))
    driver.save_screenshot(str(ARTIFACTS / f"{shot_name(url)}.png"))
    driver.set_window_size(1280, 900)
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    return {
        "requests": requests,
        "console": driver.get_log("browser"),
        "images": driver.execute_script("return [...document.images].map(i => [i.currentSrc || i.src, i.naturalWidth])"),
        "math": driver.execute_script("return document.querySelectorAll('mjx-container').length"),
        "math_errors": driver.execute_script(
            "return [...document.querySelectorAll('mjx-merror')].map(e => e.closest('mjx-container').textContent)"),
        "has_math": state["hasMath"],
    }


def check_page(page: dict, url: str, images: bool = False):
    "The checks every page must pass: local requests only, a clean console, decoded images, no TeX errors."
    remote = [u for u in page["requests"] if urlsplit(u).scheme in ("http", "https", "ws", "wss")
              and urlsplit(u).hostname not in LOCAL_HOSTS]
    assert not remote, f"{url} requested other hosts: {remote}"
    errors = [e["message"] for e in page["console"] if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, f"{url}: console errors {errors}"
    broken = [src for src, width in page["images"] if not width]
    assert not broken, f"{url}: images that did not load: {broken}"
    if images:
        assert page["images"], f"{url} shows no image"
    assert not page["math_errors"], f"{url}: MathJax errors in {page['math_errors']}"
    if page["has_math"]:
        assert page["math"] > 0, f"{url} loads MathJax but typeset nothing"


def test_browser_index_page(browser, server, site):
    root, _ = site
    page = visit(browser, server)
    check_page(page, server, images=True)
    assert page["math"] > 0                            # the index states z_Θ = τ(v | z_Φ)
    nav = browser.execute_script(
        "return [...document.querySelectorAll('nav.bd-docs-nav a')].map(a => a.getAttribute('href'))")
    expected = ([f"library/{p.stem}.html" for p in sorted((root / "nbs").glob("[0-9]*.ipynb"))]
                + [f"reports/{n}.html" for n in experiments(root)] + ["results.html", "reproduce.html"])
    assert [h for h in expected if h not in nav] == [], f"navigation lacks pages; it has {nav}"


def test_browser_flow_page_typesets_equations(browser, server):
    url = server + "library/00_flow.html"
    page = visit(browser, url)
    check_page(page, url)
    assert page["has_math"] and page["math"] >= 10, page["math"]
    assert browser.execute_script("return document.querySelectorAll('mjx-container[display=\"true\"]').length") > 0
    signatures = browser.execute_script("return [...document.querySelectorAll('dt.sig')].map(d => d.id)")
    assert "ginn.flow.ConditionalFlow" in signatures and "ginn.flow.ActNorm" in signatures


def test_browser_library_pages_show_their_api(browser, server, site):
    """Each library page shows its API where the notebook documents it, stored outputs or not: signatures and
    docstrings on screen, no `show_doc(` as code, the exported source folded away (one click opens it)."""
    root, _ = site
    for path in sorted((root / "nbs").glob("[0-9]*.ipynb")):
        if not documented_in_notebook(path)[0]:
            continue                                    # exports nothing: no API to show
        url = server + f"library/{path.stem}.html"
        check_page(visit(browser, url), url)
        shown = browser.execute_script(
            "return [...document.querySelectorAll('article dl.py > dt.sig')].filter(d => d.offsetParent).length")
        assert shown > 0, f"{url}: no API entry on screen"
        folded = browser.execute_script("return [...document.querySelectorAll('article details.hide')]"
                                        ".map(d => [d.open, !!(d.querySelector('pre') && d.querySelector('pre').checkVisibility())])")
        assert folded and all(not is_open and not visible for is_open, visible in folded), f"{url}: {folded}"
        browser.execute_script("document.querySelector('article details.hide summary').click()")
        assert browser.execute_script("const d = document.querySelector('article details.hide');"
                                      "return d.open && d.querySelector('pre').checkVisibility()"), url


def test_browser_experiment_report_page(browser, server, site):
    root, _ = site
    for name in experiments(root):
        url = server + f"reports/{name}.html"
        page = visit(browser, url)
        check_page(page, url, images=True)
        headers = browser.execute_script("return [...document.querySelectorAll('table th')].map(t => t.textContent.trim())")
        assert "model" in headers, f"{url}: no metrics table ({headers})"


def test_browser_navigation_and_search(browser, server):
    visit(browser, server)
    link = browser.execute_script(
        "return [...document.querySelectorAll('nav.bd-docs-nav a')].find(a => a.getAttribute('href') === 'results.html')")
    link.click()
    deadline = time.time() + 20
    while not browser.current_url.endswith("results.html") and time.time() < deadline:
        time.sleep(0.1)
    assert browser.current_url == server + "results.html"
    assert browser.execute_script("return document.querySelectorAll('table').length") >= 2

    url = server + "search.html?q=ConditionalFlow"
    page = visit(browser, url)
    deadline, hits = time.time() + 30, []
    while not hits and time.time() < deadline:
        hits = browser.execute_script("return [...document.querySelectorAll('ul.search li a')].map(a => a.getAttribute('href'))")
        time.sleep(0.2)
    browser.save_screenshot(str(ARTIFACTS / f"{shot_name(url)}.png"))
    assert any(h.startswith("library/00_flow.html") for h in hits), hits
    page["console"] += browser.get_log("browser")      # what the search itself logged
    check_page(page, url)


def test_browser_every_page_renders_offline(browser, server, site):
    "Every page of the site: only local requests, no console error, every image decoded, no TeX error."
    _, docs = site
    pages = sorted(str(p.relative_to(docs)) for p in docs.rglob("*.html") if not p.relative_to(docs).parts[0].startswith("_"))
    for rel in pages:
        url = server + rel
        check_page(visit(browser, url), url)
