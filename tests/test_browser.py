"""Every command's report, opened in headless Chromium as a reader would: every image and script loads, the console
has no errors, nothing runs off the page, the interactive attention views render, and the demo's found-vs-planted
table names the sycophancy organism's planted head (L0H2).

Needs Debian's `chromium` and `chromium-driver` (`scripts/test.sh` installs them when missing) and selenium.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hooked_reward import organisms
from hooked_reward.cli import main

pytestmark = pytest.mark.slow

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is needed for the browser tests ([test] extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if (CHROMIUM is None or CHROMEDRIVER is None) and os.environ.get("CI"):  # CI must run them: scripts/test.sh installs
    raise RuntimeError("chromium and chromium-driver are missing in CI (scripts/test.sh installs them with apt-get)")
if CHROMIUM is None or CHROMEDRIVER is None:  # pragma: no cover
    pytest.skip(
        "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

SYCOPHANCY = str(organisms.checkpoint_dir("sycophancy"))
COMMANDS = {
    "demo": ["demo", "--max-pairs", "12"],
    "analyze": ["analyze", "--model", SYCOPHANCY, "--max-pairs", "6"],
    "probe": ["probe", "--n-pairs", "8"],
    "compare": ["compare", "--model", SYCOPHANCY, "--model-b", SYCOPHANCY, "--max-pairs", "9"],
    "faithfulness": ["faithfulness", "--max-pairs", "9"],
    "extensions": ["extensions"],
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reports")
    out = {}
    for name, argv in COMMANDS.items():
        assert main([*argv, "--out", str(root / name), "--quiet"]) == 0, name
        out[name] = root / name / "index.html"
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="hr-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver: object, page: Path) -> list[dict]:
    """Load `page`, wait for it, and return the console messages of this load."""
    driver.get_log("browser")  # drop messages of earlier pages
    driver.get(page.as_uri())
    driver.execute_async_script(
        "const done = arguments[0];"
        "if (document.readyState === 'complete') { setTimeout(done, 300); }"
        "else { window.addEventListener('load', () => setTimeout(done, 300)); }"
    )
    return driver.get_log("browser")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_report_loads_cleanly(reports: dict[str, Path], browser: object, command: str) -> None:
    page = reports[command]
    log = _open(browser, page)
    errors = [entry["message"] for entry in log if entry["level"] == "SEVERE"]
    assert not errors, errors
    images = browser.execute_script(
        "return [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
    )
    assert images, "a report without plots"
    broken = [src for src, complete, width in images if not (complete and width > 0)]
    assert not broken, broken
    scripts = browser.execute_script(
        "return [...document.scripts].filter(s => s.src).map(s => [s.src, s.dataset.loaded]);"
    )
    assert all(loaded == "yes" for _, loaded in scripts), scripts  # the template marks each script on load
    scripts = [src for src, _ in scripts]
    assert all(src.startswith("file://") for src in scripts + [img[0] for img in images if "://" in img[0]]), (
        "assets must be local"
    )
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
    )
    assert overflow <= 1, f"the page is {overflow}px wider than the window (a table or figure runs off it)"
    text = browser.find_element("tag name", "body").text
    assert "(issue" not in text and "['" not in text, "internal references or Python reprs on the page"
    assert "Provenance" in text and "hooked_reward" in text
    data = json.loads((page.parent / "report.json").read_text())
    assert data["schema"] == "hooked_reward.report/1" and data["command"] == command


def test_demo_interactive_views_and_planted_head(reports: dict[str, Path], browser: object) -> None:
    _open(browser, reports["demo"])
    views = browser.execute_script(
        "return [...document.querySelectorAll('.cv-view')].map(v => [v.dataset.view, v.querySelectorAll('*').length]);"
    )
    assert len(views) == 9, views  # per mechanism: reward-position attention on both texts, and full patterns
    assert all(n > 5 for _, n in views), views  # circuitsvis rendered something into every view
    assert browser.execute_script("return typeof window.CircuitsVis") == "object"
    table = browser.find_element("css selector", "#found_vs_planted table").text
    row = next(line for line in table.splitlines() if line.startswith("sycophancy L0H2"))
    assert "1 of 8" in row and "yes" in row, row  # patching ranks the planted head first
    tokens = browser.find_elements("css selector", "#sycophancy_the_tokens_that_matter span.tok")
    assert tokens and any("Δ reward" in (t.get_attribute("title") or "") for t in tokens)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_report_opens_with_a_summary_and_no_table_overflows_its_column(
    reports: dict[str, Path], browser: object, command: str
) -> None:
    """Issue 32: the first section is a summary in words; every table stays inside its column (a wide one scrolls
    in its own box) and no cell's text runs out of its cell."""
    _open(browser, reports[command])
    first = browser.execute_script(
        "const s = document.querySelector('section');"
        "return s ? [s.className, s.querySelector('h2') && s.querySelector('h2').textContent, s.innerText] : null;"
    )
    assert first is not None and "summary" in first[0].split() and first[1] == "Summary", first
    assert len(first[2]) > 80, first  # sentences, not a heading alone
    problems = browser.execute_script(
        "const out = [];"
        "for (const w of document.querySelectorAll('.table-wrap')) {"
        "  const col = w.parentElement.getBoundingClientRect();"
        "  const box = w.getBoundingClientRect();"
        "  if (box.right > col.right + 1 || box.left < col.left - 1) out.push(['table box', box.right, col.right]);"
        "  if (w.scrollWidth > w.clientWidth + 1 && getComputedStyle(w).overflowX !== 'auto')"
        "    out.push(['clipped table', w.scrollWidth, w.clientWidth]);"
        "}"
        "for (const c of document.querySelectorAll('td, th')) {"
        "  if (c.scrollWidth > c.clientWidth + 1) out.push(['cell', c.textContent.slice(0, 40)]);"
        "}"
        "return out;"
    )
    assert not problems, problems[:10]
