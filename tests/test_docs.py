"""The documentation site that the `docs` stage builds (`python docs/build.py`), from the smoke pipeline run that
tests/test_pipeline.py checks too (`smoke_repo`, tests/conftest.py).

The site is served from a local HTTP server and read in headless Chromium, as a person would: pages load, their
images decode, equations are typeset by MathJax, the console shows no error, search and navigation work, and no
request leaves localhost. Screenshots of the pages go to test-artifacts/docs/. Without Chromium the browser tests
skip (they fail instead when GINN_REQUIRE_BROWSER=1, as in CI)."""
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


def test_docs_site_has_every_page(site):
    root, docs = site
    library = sorted(p.stem for p in (root / "nbs").glob("[0-9]*.ipynb"))
    assert library and experiments(root)
    pages = (["index", "results", "reproduce", "search", "genindex"] + [f"library/{n}" for n in library]
             + [f"reports/{n}" for n in experiments(root)])
    missing = [p for p in pages if not (docs / f"{p}.html").is_file()]
    assert not missing, f"pages not built: {missing}"
    for name in library:                               # each library page ends with the API of its module
        html = (docs / "library" / f"{name}.html").read_text()
        assert re.search(r'<dl class="py (class|function)">', html), f"{name}: no API section"
        code = re.findall(r'<div class="cell_input[^"]*">(.*?)</div>\s*</div>', html, re.S)
        assert code and not [c for c in code if re.search(r"^#\|", html_text(c).strip(), re.M)], \
            f"{name}: nbdev directives rendered in code cells"
    assert not (docs.parent / "jupyter_execute").exists()


def test_docs_results_tables_come_from_metrics(site):
    root, docs = site
    text = html_text((docs / "results.html").read_text())
    experts = json.loads((root / "metrics" / "experts.json").read_text())
    assert all(role in text for role in experts)
    for name in experiments(root):
        metrics = json.loads((root / "metrics" / f"{name}.json").read_text())
        assert all(layer in text for layer in metrics["layers"]), f"results page lacks the layers of {name}"
        model, per = next(iter(next(iter(metrics["layers"].values())).items()))
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
