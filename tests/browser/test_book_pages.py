"""Every page of the built book, opened in headless Chromium with no network.

Run with ``make test-browser`` after ``make book``. The site is served on 127.0.0.1 and Chromium
resolves no other host name, so a page that needs the network (a CDN script, a remote font)
fails here as it would on a plane. For every page in ``_toc.yml`` the test checks: no console
errors and no failed requests; math typeset by the bundled MathJax (no raw TeX left in the visible
text); every image loaded; no traceback in any cell output; the expected page title.

:func:`test_layout_at_laptop_and_phone_widths` then reads every page as a reader would, at
1280 × 900 and at 390 × 844 (a phone: mobile viewport), and asserts in one message, listing
every offender of every page:

- the visible ☰ opens the chapter list and a second press (on a phone: a tap beside the open
  list) closes it; on a phone the page-contents button opens the page's contents;
- no display equation is wider than its own container (the typeset ``mjx-math`` against the
  ``clientWidth`` of the block that holds it, dropdowns opened);
- no wide figure (natural width above :data:`WIDE_FIGURE` px, i.e. drawn for more than the
  column) is shown below 60 % of its natural width;
- visible code (cell inputs and code blocks, as the page opens: hidden inputs stay hidden) takes
  at most a quarter of the page's height, and no code block scrolls sideways.

It prints a table per page and width (also written to ``_build/screenshots/layout.txt``) and
saves full-page screenshots as ``_build/screenshots/<page>-<width>.png``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from book_toc import toc_pages

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
WIDTH, HEIGHT = 1280, 900
VIEWPORTS = ((1280, 900), (390, 844))
WIDE_FIGURE = 800  # px of natural width: more than the ~660 px column at the book's 110 dpi
MIN_FIGURE_SCALE = 0.6
MAX_CODE_FRACTION = 0.25
RAW_TEX = ("$$", "\\(", "\\)", "\\[", "\\]", "\\begin{", "\\frac")


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
// typeset, then fitted to the column by book/_static/fit-math.js (within two seconds)
const fitted = (tries) => (document.documentElement.dataset.mathFitted || tries <= 0
    ? done("typeset") : setTimeout(() => fitted(tries - 1), 50));
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(() => fitted(40)).catch((e) => done("error: " + e));
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


def _viewport(driver, width: int, height: int) -> None:
    """An exact viewport; below 600 px a phone's (mobile layout, the page's viewport meta)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def _screenshot(driver, path: Path, width: int = WIDTH, height: int = HEIGHT) -> None:
    """The whole page (up to Chromium's 16,000 px limit), then back to the normal viewport.

    The viewport itself is resized to the page's height: capturing beyond the viewport instead
    lays the page out differently from what a reader sees.
    """
    full = driver.execute_script("return document.documentElement.scrollHeight")
    _viewport(driver, width, min(full, 16000))
    driver.save_screenshot(str(path))
    _viewport(driver, width, height)


@pytest.mark.parametrize("page", toc_pages())
def test_page_renders_offline(page: str, site: str, browser) -> None:
    browser.get_log("browser"), browser.get_log("performance")  # start from clean logs
    _viewport(browser, WIDTH, HEIGHT)
    browser.get(f"{site}/{page}.html")
    mathjax = browser.execute_async_script(WAIT_FOR_MATHJAX)
    facts = browser.execute_script(PAGE_FACTS)

    SHOTS.mkdir(parents=True, exist_ok=True)
    _screenshot(browser, SHOTS / f"{Path(page).name}-{WIDTH}.png")

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

    broken = [image["src"] for image in facts["images"] if not image["ok"]]
    assert not broken, f"images that did not load on {page}: {broken}"

    assert facts["tracebacks"] == 0, f"error outputs on {page}"
    assert "Traceback (most recent call last)" not in facts["outputText"], page


SIDEBARS = """
const shown = (e) => {
  if (!e) return false;
  const r = e.getBoundingClientRect(), s = getComputedStyle(e);
  return r.width > 1 && r.height > 1 && s.visibility !== "hidden" && s.display !== "none"
      && r.right > 1 && r.left < innerWidth - 1;
};
return {
  primary: shown(document.querySelector("#pst-primary-sidebar, .bd-sidebar-primary")),
  secondary: shown(document.querySelector("#pst-secondary-sidebar, .bd-sidebar-secondary")),
};
"""

HAS_CONTENTS = """
return document.querySelectorAll(".bd-toc-nav a, .page-toc a").length > 0;
"""

CODE_FACTS = """
const main = document.querySelector("main") || document.body;
const laidOut = (e) => e.getClientRects().length > 0 && e.getBoundingClientRect().height > 0;
const inOutput = (e) => e.closest(".cell_output, .output");
const code = [...main.querySelectorAll("div.highlight pre, pre.literal-block")]
    .filter((e) => !inOutput(e) && laidOut(e));
// A closed <details> (a hide-input cell, a dropdown) keeps its content laid out under
// content-visibility: hidden, so the boxes have a height the reader never sees:
// checkVisibility() is false there.
const shown = code.filter((e) => e.checkVisibility());
const height = main.getBoundingClientRect().height;
return {
  codeHeight: shown.reduce((sum, e) => sum + e.getBoundingClientRect().height, 0),
  pageHeight: height,
  sideways: code.filter((e) => e.scrollWidth > e.clientWidth + 1)
      .map((e) => e.textContent.split("\\n").reduce((a, b) => (a.length >= b.length ? a : b))
          .trim().slice(0, 70)),
};
"""

MATH_AND_FIGURES = """
document.querySelectorAll("main details").forEach((d) => { d.open = true; });
const main = document.querySelector("main") || document.body;
const laidOut = (e) => e.getClientRects().length > 0 && e.getBoundingClientRect().width > 0;
const equations = [...main.querySelectorAll('mjx-container[display="true"]')].filter(laidOut)
  .map((e) => {
    const math = e.querySelector("mjx-math") || e;
    const box = e.parentElement;
    return {width: Math.round(math.getBoundingClientRect().width),
            room: box.clientWidth, scale: parseFloat(e.dataset.scale || "1"),
            tex: (e.getAttribute("aria-label") || e.textContent)};
  });
const figures = [...main.querySelectorAll("img")].filter(laidOut).map((i) => ({
  src: i.getAttribute("src"), natural: i.naturalWidth,
  shown: Math.round(i.getBoundingClientRect().width)}));
return {equations, figures};
"""


def _tap(driver, x: int, y: int) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    builder = ActionBuilder(driver)
    builder.pointer_action.move_to_location(x, y).click()
    builder.perform()


def _press(driver, selector: str) -> str | None:
    """Click the visible button matching ``selector``; the reason when there is none."""
    from selenium.common.exceptions import WebDriverException

    buttons = [b for b in driver.find_elements("css selector", selector) if b.is_displayed()]
    if not buttons:
        return f"no visible {selector}"
    try:
        buttons[0].click()
    except WebDriverException as err:
        return f"{selector} cannot be clicked: {err.msg.splitlines()[0][:80]}"
    time.sleep(0.6)  # the theme's transition
    return None


def _navigation(driver, width: int, height: int) -> list[str]:
    """What does not work of ☰ (and, on a phone, of the page-contents button)."""
    problems = []
    before = driver.execute_script(SIDEBARS)["primary"]
    why = _press(driver, "button.primary-toggle")
    if why:
        return [why]
    if driver.execute_script(SIDEBARS)["primary"] == before:
        return [f"☰ does not {'close' if before else 'open'} the chapter list"]
    if width < 600:  # a phone: the list covers the page, a tap beside it closes it
        _tap(driver, width - 6, height // 2)
        time.sleep(0.6)
    else:
        _press(driver, "button.primary-toggle")
    if driver.execute_script(SIDEBARS)["primary"] != before:
        problems.append(f"☰ opens but does not {'open' if before else 'close'} it again")
    if width < 600:
        if driver.execute_script(SIDEBARS)["secondary"]:
            problems.append("page contents shown before the button is pressed")
        why = _press(driver, "button.secondary-toggle")
        if why and driver.execute_script(HAS_CONTENTS):
            problems.append(why)  # (a page without sections has no contents to show)
        elif not why and not driver.execute_script(SIDEBARS)["secondary"]:
            problems.append("the page-contents button does not open the page's contents")
    return problems


def _page_layout(driver, site: str, page: str, width: int, height: int) -> dict:
    _viewport(driver, width, height)
    driver.get(f"{site}/{page}.html")
    driver.execute_async_script(WAIT_FOR_MATHJAX)
    SHOTS.mkdir(parents=True, exist_ok=True)
    _screenshot(driver, SHOTS / f"{Path(page).name}-{width}.png", width, height)
    code = driver.execute_script(CODE_FACTS)
    nav = _navigation(driver, width, height)
    driver.get(f"{site}/{page}.html")  # a fresh page: dropdowns opened for what they hide
    driver.execute_async_script(WAIT_FOR_MATHJAX)
    facts = driver.execute_script(MATH_AND_FIGURES)
    over = [e for e in facts["equations"] if e["width"] > e["room"] + 1]
    shrunk = [f for f in facts["figures"] if f["natural"] > WIDE_FIGURE
              and f["shown"] < MIN_FIGURE_SCALE * f["natural"]]
    fraction = code["codeHeight"] / max(code["pageHeight"], 1)
    return {
        "page": page, "width": width, "nav": nav,
        "equations": len(facts["equations"]), "over": over,
        "scale": min((e["scale"] for e in facts["equations"]), default=1.0),
        "wide": sum(f["natural"] > WIDE_FIGURE for f in facts["figures"]), "shrunk": shrunk,
        "code": fraction, "sideways": code["sideways"],
    }


def _table(rows: list[dict]) -> str:
    head = (f"{'page':<28}{'width':>6}  {'☰':<4}{'eq over/all':>12}{'wide fig shrunk':>16}"
            f"{'eq scale':>9}{'code frac':>10}{'code sideways':>14}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{Path(r['page']).name:<28}{r['width']:>6}  {'ok' if not r['nav'] else 'NO':<4}"
            f"{len(r['over']):>5}/{r['equations']:<6}{len(r['shrunk']):>9}/{r['wide']:<6}"
            f"{r['scale']:>9.2f}{r['code']:>10.0%}{len(r['sideways']):>14}")
    return "\n".join(lines)


def _offences(r: dict) -> list[str]:
    where = f"{r['page']} @ {r['width']} px"
    found = [f"{where}: {problem}" for problem in r["nav"]]
    found += [f"{where}: equation {e['width']} px in {e['room']} px: {e['tex'][:60]!r}"
              for e in r["over"]]
    found += [f"{where}: figure {f['src']} shown at {f['shown']} of {f['natural']} px "
              f"({f['shown'] / f['natural']:.0%})" for f in r["shrunk"]]
    found += [f"{where}: code scrolls sideways: {line!r}" for line in r["sideways"]]
    return found


@pytest.fixture(scope="module")
def layout(site: str, browser) -> list[dict]:
    """Every page measured at both widths, once; the table is printed and kept with the
    screenshots.
    """
    rows = [_page_layout(browser, site, page, width, height)
            for page in toc_pages() for width, height in VIEWPORTS]
    table = _table(rows)
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "layout.txt").write_text(table + "\n")
    print("\n" + table)
    return rows


def test_layout_at_laptop_and_phone_widths(layout: list[dict]) -> None:
    """☰ works, no display equation is wider than its container, no wide figure is shrunk
    below MIN_FIGURE_SCALE, no code block scrolls sideways: at 1280 px and at 390 px.
    """
    offences = [o for r in layout for o in _offences(r)]
    assert not offences, (f"{len(offences)} layout problems (table in "
                          f"{SHOTS / 'layout.txt'}):\n" + "\n".join(offences))


def test_visible_code_is_at_most_a_quarter_of_each_page(layout: list[dict]) -> None:
    over = [f"{r['page']} @ {r['width']} px: visible code is {r['code']:.0%} of the page"
            for r in layout if r["code"] > MAX_CODE_FRACTION]
    assert not over, "\n".join(over)


def test_ledger_lists_every_checked_claim_and_links_to_its_cell() -> None:
    """The ledger page has one row per claim of every chapter, each link landing on a cell."""
    if not (HTML / "book" / "ledger.html").exists():
        pytest.fail("no ledger page at _build/html/book/ledger.html: run `make book` first")
    ledger = (HTML / "book" / "ledger.html").read_text()
    links = re.findall(r'href="([\w./-]+\.html)#(claim-cell-\d+)"', ledger)
    expected = {}
    for page in toc_pages():
        built = HTML / f"{page}.html"
        text = built.read_text() if built.exists() else ""
        records = [json.loads(html.unescape(m))
                   for m in re.findall(r'class="bncore-claims" data-ledger="([^"]*)"', text)]
        if records:
            expected[f"{Path(page).name}.html"] = (sum(map(len, records)), text)
    problems = []
    for name, (count, text) in expected.items():
        targets = [anchor for target, anchor in links if Path(target).name == name]
        if len(targets) != count:
            problems.append(f"{name}: {count} claims on the page, {len(targets)} in the ledger")
        problems += [f"{name}: no #{a} on the page" for a in set(targets)
                     if f'id="{a}"' not in text]
    assert expected and not problems, "\n".join(problems) or "no page shows a checked claim"
