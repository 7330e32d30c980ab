"""The leaderboard page in a real browser: Debian's chromium, driven by playwright, from file://.

CI installs chromium (.ci/run); the screenshot is kept under build/test-artifacts/ for a person to look at.
"""
import os
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from leaderboard import Options, build
from record_factory import board_records, write_records

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("EHRBENCH_ARTIFACTS", REPO / "build" / "test-artifacts"))

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM} "
                                "(`apt-get install chromium`; CI's .ci/run installs it)")


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    write_records(root / "results", board_records())
    (root / "results" / "quick" / "broken.json").write_text('{"schema_version": 1, "run_')
    return build(root / "results", root / "site", Options(), release="v1.0").page.as_uri()


@pytest.fixture(scope="module")
def browser_page(page_url):
    requests, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(offline=True, viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_url, wait_until="load")
        yield page, requests, errors
        browser.close()


def column(page, table_id, index):
    return page.locator(f"#{table_id} tbody tr").evaluate_all(
        f"rows => rows.map(r => r.cells[{index}].textContent.trim())")


def test_page_opens_from_file_with_no_network_request_and_no_console_error(browser_page, page_url):
    page, requests, errors = browser_page
    assert page_url.startswith("file://")
    assert requests == [page_url]  # the page itself; no script, style, font or image from anywhere
    assert errors == []
    assert "broken.json" in page.locator("#skipped").inner_text()
    ids = page.locator("[id]").evaluate_all("nodes => nodes.map(n => n.id)")
    assert len(ids) == len(set(ids))  # seven inline figures, no shared element id
    assert page.locator("svg").count() == 7


def test_each_table_has_the_expected_rows_and_columns(browser_page):
    page = browser_page[0]
    phe = "table-quick-syn-phe"
    assert sorted(column(page, phe, 0)) == ["ASL", "FlexCare (BCE)", "Focal", "GCE"]
    headers = page.locator(f"#{phe} thead tr").nth(1).locator("th").all_inner_texts()
    assert headers == ["(20,20)", "(0,20)", "(20,0)", "(40,r)"]
    families = page.locator(f"#{phe} thead tr").first.locator("th.family").all_inner_texts()
    assert families == ["symmetric", "asymmetric", "balanced"]
    assert sorted(column(page, "table-quick-syn-dia", 0)) == ["FlexCare (BCE)", "Focal", "GCE"]
    assert page.locator("table.compute").count() == 2 and page.locator("table.summary tbody tr").count() == 3
    assert page.locator(f"#{phe} td.best").count() == 3  # one per column that has unflagged cells


def test_clicking_a_header_sorts_by_the_numeric_value(browser_page):
    page = browser_page[0]
    phe = "table-quick-syn-phe"
    header = page.locator(f"#{phe} th[data-col='1']")
    header.click()
    assert column(page, phe, 0) == ["ASL", "FlexCare (BCE)", "Focal", "GCE"]  # 0.510 > 0.410 > 0.350 > 0.313
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    assert column(page, phe, 0) == ["GCE", "Focal", "FlexCare (BCE)", "ASL"]
    page.locator(f"#{phe} th[data-col='4']").click()  # ASL has no bal-40 run: it goes last
    assert column(page, phe, 0) == ["Focal", "GCE", "FlexCare (BCE)", "ASL"]
    assert column(page, phe, 4) == ["0.347 (0.015)", "0.320 (0.020)", "0.300 (0.010)", "-"]


def test_hovering_a_cell_shows_the_command_that_makes_it_again(browser_page):
    page = browser_page[0]
    cell = page.locator("#table-quick-syn-dia tbody tr", has_text="GCE").locator("td").nth(1)
    cell.hover()
    tip = page.locator("#tip")
    assert tip.is_visible()
    text = tip.inner_text()
    assert "reproduce: ehrbench bench --method gce --track quick --tasks syn-dia --noise sym-20" in text
    assert "--seeds 30,40,100" in text and "harness 0.1.0 at commit dddddddddddd" in text and "runs: " in text
    assert cell.get_attribute("title") is None  # moved into the page's own tooltip: no second, native one
    cell.click()  # pinned: it stays while the pointer goes to it, to select the command
    tip.hover()
    assert tip.is_visible() and "pinned" in tip.get_attribute("class")
    page.keyboard.press("Escape")
    assert not tip.is_visible()


def test_the_release_index_opens_from_file_and_leads_to_the_frozen_page(browser_page, page_url):
    requests, errors = [], []
    page = browser_page[0].context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    index = page_url.replace("index.html", "releases/index.html")
    page.goto(index, wait_until="load")
    assert page.locator("table.releases tr.latest td").first.inner_text() == "v1.0 (latest)"
    page.locator("a", has_text="v1.0").first.click()
    page.wait_for_load_state("load")
    assert page.url.endswith("/releases/v1.0/index.html")
    assert "Release v1.0, frozen" in page.locator(".release-note").inner_text()
    assert page.locator("table.results").count() == 2
    assert all(url.startswith("file://") for url in requests) and errors == []
    page.close()


def test_the_second_tab_shows_one_secondary_metric_at_a_time(browser_page):
    page = browser_page[0]
    assert page.locator("#tab-results").is_visible() and not page.locator("#tab-secondary").is_visible()
    page.get_by_role("tab", name="Calibration, rare labels, missing modalities").click()
    assert page.locator("#tab-secondary").is_visible() and not page.locator("#tab-results").is_visible()
    ece, brier = "#secondary-quick-syn-dia-ece", "#secondary-quick-syn-dia-brier"
    assert page.locator(ece).is_visible() and not page.locator(brier).is_visible()
    assert sorted(column(page, ece[1:], 1)) == ["0.060 (0.010)", "0.110 (0.010)", "0.210 (0.010)"]
    assert set(column(page, "secondary-quick-syn-phe-ece", 1)) == {"-"}  # records from before the metric
    page.locator("#pick-quick-syn-dia").select_option("brier")
    assert page.locator(brier).is_visible() and not page.locator(ece).is_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "leaderboard-secondary.png"), full_page=True)
    page.get_by_role("tab", name="Results: mAP").click()
    assert page.locator("#tab-results").is_visible()


def test_a_screenshot_is_saved_as_a_test_artifact(browser_page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "leaderboard.png"
    browser_page[0].screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
