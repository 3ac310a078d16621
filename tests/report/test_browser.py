"""The report as a user sees it: opened from disk in a real headless Chromium (Debian's
chromium and chromium-driver), with no network. The page loads without console errors, every
section of the run is there, every plot is drawn, and a screenshot is kept."""

import shutil
import tempfile
import time

import pytest
from report_helpers import DATA, sections_of

from edgeweave.report import write_report

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Without these, Chromium stalls trying to reach Google's services on a closed network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1300,1000"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no headless browser: install Debian's chromium and chromium-driver "
           "(apt-get install -y chromium chromium-driver) to run the report's browser test")


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(it is in the dev extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, script, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if driver.execute_script(script):
            return
        time.sleep(0.2)
    raise AssertionError(f"page never satisfied: {script}")


@pytest.mark.slow
def test_the_report_opens_offline_with_every_section_and_plot(browser, tmp_path):
    page = write_report([DATA], tmp_path / "report.html")
    expected = sections_of(page.read_text())
    plots = {sid: html.count('class="plotly-graph-div"') for sid, (_, html) in expected.items()}
    assert len(expected) == 7 and sum(plots.values()) > 0

    browser.get(page.as_uri())
    _wait(browser, "return document.readyState === 'complete'")
    _wait(browser, f"return document.querySelectorAll('.js-plotly-plot .main-svg').length "
                   f">= {sum(plots.values())}")

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    for sid, (kind, _) in expected.items():
        found = browser.execute_script(
            "const s = document.getElementById(arguments[0]); return s && [s.dataset.kind, "
            "s.querySelector('h2').innerText, s.offsetHeight, "
            "[...s.querySelectorAll('.js-plotly-plot')].map(p => "
            "p.querySelectorAll('.main-svg .trace, .main-svg .point, .main-svg .bars path')"
            ".length)]", sid)
        assert found, f"section {sid} missing"
        shown_kind, heading, height, drawn = found
        assert shown_kind == kind and heading.strip() and height > 100
        assert len(drawn) == plots[sid] and all(n > 0 for n in drawn), (sid, drawn)
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(r => r.name)")
    assert all(url.startswith(("file:", "data:", "blob:")) for url in fetched), fetched

    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1300, min(height + 40, 16000))
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
