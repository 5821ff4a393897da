"""Every page of the built book, opened in headless Chromium with no network.

Run with ``make test-browser`` after ``make book``. The site is served on 127.0.0.1 and Chromium
resolves no other host name, so a page that needs the network (a CDN script, a remote font)
fails here as it would on a plane. For every page in ``_toc.yml`` the test checks: no console
errors and no failed requests; math typeset by the bundled MathJax (no raw TeX left in the visible
text); every image loaded; no traceback in any cell output; the expected page title. A full-page
screenshot of each page is saved under ``_build/screenshots/``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
WIDTH, HEIGHT = 1280, 900
RAW_TEX = ("$$", "\\(", "\\)", "\\[", "\\]", "\\begin{", "\\frac")


def toc_pages() -> list[str]:
    """Document paths (without suffix) in the order of ``_toc.yml``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part["chapters"]:
            pages += [chapter["file"], *(s["file"] for s in chapter.get("sections", []))]
    return pages


def source_title(page: str) -> str:
    """The page's H1 as written in its source (.md or .ipynb)."""
    md = ROOT / f"{page}.md"
    if md.exists():
        lines = md.read_text().splitlines()
    else:
        nb = json.loads((ROOT / f"{page}.ipynb").read_text())
        lines = [
            line
            for cell in nb["cells"]
            if cell["cell_type"] == "markdown"
            for line in "".join(cell["source"]).splitlines()
        ]
    title = next(line[2:].strip() for line in lines if line.startswith("# "))
    return title.replace("`", "")  # inline code in a heading is plain text in <title>


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    if not (HTML / "index.html").exists():
        pytest.fail("no built book at _build/html: run `make book` first")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _find(name: str, env: str) -> str | None:
    return os.environ.get(env) or shutil.which(name)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = _find("chromium", "CHROMIUM") or _find("chromium-browser", "CHROMIUM")
    driver_path = _find("chromedriver", "CHROMEDRIVER")
    if not (chromium and driver_path):
        pytest.fail("Chromium and chromedriver are needed: `make browser-deps` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},{HEIGHT}",
        # Offline: every host name but the loopback server fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(() => done("typeset")).catch((e) => done("error: " + e));
} else { done("no mathjax"); }
"""

PAGE_FACTS = """
const visible = (root) => {
  const copy = root.cloneNode(true);
  copy.querySelectorAll("pre, code, .highlight, script, style, mjx-container")
      .forEach((e) => e.remove());
  return copy.textContent;
};
const main = document.querySelector("main") || document.body;
const math = [...document.querySelectorAll(".math")];
return {
  title: document.title,
  text: visible(main),
  math: math.length,
  mathUntypeset: math.filter((e) => !e.querySelector("mjx-container")).length,
  mathjaxSrc: [...document.scripts].map((s) => s.src).filter((s) => /mathjax/i.test(s)),
  images: [...document.images].map((i) => ({src: i.src, ok: i.complete && i.naturalWidth > 0})),
  tracebacks: document.querySelectorAll(".cell_output .traceback, .output.traceback, .output.error")
      .length,
  outputText: [...document.querySelectorAll(".cell_output")].map((e) => e.textContent).join("\\n"),
  // Display math and tables must fit the text column (code may scroll sideways).
  overflowing: [...document.querySelectorAll('main mjx-container[display="true"], main table')]
      .filter((e) => e.scrollWidth > Math.ceil(main.querySelector("article, .bd-article")
          .getBoundingClientRect().width) + 2)
      .map((e) => e.tagName + ": " + e.textContent.slice(0, 60)),
};
"""


def _failed_requests(driver) -> list[str]:
    failures = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.loadingFailed":
            failures.append(f"{params.get('errorText')} (request {params.get('requestId')})")
        elif message["method"] == "Network.responseReceived":
            response = params["response"]
            if response["status"] >= 400:
                failures.append(f"HTTP {response['status']} {response['url']}")
    return failures


def _screenshot(driver, path: Path) -> None:
    """The whole page (up to Chromium's 16,000 px limit), then back to the normal window.

    The window itself is resized to the page's height: capturing beyond the viewport instead
    lays the page out differently from what a reader sees.
    """
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(height, 16000) + 140)
    driver.save_screenshot(str(path))
    driver.set_window_size(WIDTH, HEIGHT)


@pytest.mark.parametrize("page", toc_pages())
def test_page_renders_offline(page: str, site: str, browser) -> None:
    browser.get_log("browser"), browser.get_log("performance")  # start from clean logs
    browser.get(f"{site}/{page}.html")
    mathjax = browser.execute_async_script(WAIT_FOR_MATHJAX)
    facts = browser.execute_script(PAGE_FACTS)

    SHOTS.mkdir(parents=True, exist_ok=True)
    _screenshot(browser, SHOTS / f"{Path(page).name}.png")

    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"console errors on {page}: {errors}"
    failed = _failed_requests(browser)
    assert not failed, f"failed requests on {page}: {failed}"

    assert source_title(page) in facts["title"], f"title {facts['title']!r} on {page}"

    if facts["math"]:
        assert mathjax == "typeset", f"MathJax on {page}: {mathjax}"
        assert all(src.startswith(site) for src in facts["mathjaxSrc"]), facts["mathjaxSrc"]
        assert facts["mathUntypeset"] == 0, f"{facts['mathUntypeset']} math elements untypeset"
    raw = [token for token in RAW_TEX if token in facts["text"]]
    assert not raw, f"raw TeX {raw} left in the visible text of {page}"

    assert not facts["overflowing"], f"wider than the text column on {page}: {facts['overflowing']}"

    broken = [image["src"] for image in facts["images"] if not image["ok"]]
    assert not broken, f"images that did not load on {page}: {broken}"

    assert facts["tracebacks"] == 0, f"error outputs on {page}"
    assert "Traceback (most recent call last)" not in facts["outputText"], page
