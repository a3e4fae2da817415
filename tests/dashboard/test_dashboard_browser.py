"""The dashboard in a real browser: headless Chromium over a ledger with known data."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from aerostack_meter.servers.dashboard import DashboardHandle

from ._browser import FLAGS, chromium_path
from ._data import ledger_sum

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
CHARTS = ("chart-consumers", "chart-metric", "chart-api", "chart-top", "chart-exact")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page that records console errors, page errors and every request leaving the dashboard."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.errors: list[str] = []
        self.outside: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

        def route(r: Any) -> None:
            if r.request.url.startswith(base_url):
                r.continue_()
            else:
                self.outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)

    def loads(self) -> int:
        return int(self.page.evaluate("Number(document.body.dataset.loaded || 0)"))

    def wait_loaded(self, after: int = 0) -> None:
        self.page.wait_for_function(f"Number(document.body.dataset.loaded || 0) > {after}", timeout=30_000)

    def value(self, element_id: str) -> int:
        return int(self.page.get_attribute(f"#{element_id}", "data-value") or "-1")

    def drawn(self, chart: str) -> int:
        """How many marks (bars, slices) the chart drew."""
        return int(self.page.evaluate(
            f"document.querySelectorAll('#{chart} .main-svg g.point path, #{chart} .main-svg g.slice path').length"))


@pytest.fixture
def page(browser: Browser, dashboard: DashboardHandle) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1360, "height": 1500})
    try:
        yield Watched(context.new_page(), dashboard.base_url)
    finally:
        context.close()


def test_page_renders_the_ledgers_totals(page: Watched, dashboard: DashboardHandle, ledger: Path) -> None:
    page.page.goto(dashboard.base_url + "/")
    page.wait_loaded()
    assert page.errors == [] and page.outside == []
    for chart in CHARTS:
        assert page.drawn(chart) > 0, chart
    assert page.value("total-units") == ledger_sum(ledger) > 0
    assert page.value("total-cost") == ledger_sum(ledger, "WHERE metric = 'cost_micro_usd'") > 0
    estimated = ledger_sum(ledger, "WHERE estimated_units > 0")
    assert page.value("exact-units") == ledger_sum(ledger) - estimated
    assert page.page.text_content("#total-units") == f"{ledger_sum(ledger):,}"
    top_rows = page.page.locator("#top-table tbody tr")
    assert top_rows.count() == 5
    assert top_rows.first.locator("td").first.text_content() == "usr_alice"
    assert page.page.locator("#health-table tbody tr").count() >= 1


def test_screenshot_with_a_backlog(browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs' screenshot (written to docs/ with AEROSTACK_UPDATE_SCREENSHOT=1): a day of usage
    and a spool holding undelivered records."""
    import time

    from aerostack_meter.servers.dashboard import start_dashboard

    from ._data import make_ledger

    monkeypatch.chdir(tmp_path)
    make_ledger(Path("aerostack-usage.db"), time.time())
    from .test_dashboard_api import _journal_backlog

    _journal_backlog(tmp_path / "state", [(f"usr_{n}", "chat-api", "input_tokens", 100 + n, 0)
                                          for n in range(37)])
    with start_dashboard(ledger="aerostack-usage.db", state_dir="state", refresh_seconds=0) as dash:
        context = browser.new_context(viewport={"width": 1360, "height": 1500})
        try:
            page = Watched(context.new_page(), dash.base_url)
            page.page.goto(dash.base_url + "/?range=24h")
            page.wait_loaded()
            row = page.page.locator("#health-table tbody tr", has_text="state dir")
            cells = [c.strip() for c in row.locator("td").all_text_contents()]
            assert cells[1:3] == ["37", f"{sum(100 + n for n in range(37)):,}"]
            for chart in CHARTS:
                assert page.drawn(chart) > 0, chart
            assert page.errors == [] and page.outside == []
            target = SCREENSHOT if os.environ.get("AEROSTACK_UPDATE_SCREENSHOT") else tmp_path / "shot.png"
            page.page.screenshot(path=str(target), full_page=True)
            assert target.stat().st_size > 10_000
        finally:
            context.close()


def test_a_filter_changes_the_totals_and_stays_in_the_url(page: Watched, dashboard: DashboardHandle,
                                                          ledger: Path) -> None:
    page.page.goto(dashboard.base_url + "/?range=all")
    page.wait_loaded()
    total = page.value("total-units")
    loads = page.loads()
    page.page.select_option("#f-consumer", "usr_bob")
    page.wait_loaded(loads)
    bob = ledger_sum(ledger, "WHERE consumer_id = 'usr_bob'")
    assert page.value("total-units") == bob < total
    assert parse_qs(urlparse(page.page.url).query)["consumer"] == ["usr_bob"]
    loads = page.loads()
    page.page.select_option("#f-metric", "output_tokens")
    page.wait_loaded(loads)
    assert page.value("total-units") == ledger_sum(
        ledger, "WHERE consumer_id = 'usr_bob' AND metric = 'output_tokens'")
    assert page.page.is_hidden("#cost-card")  # no cost metric in this view
    # the URL is the view: opening it again shows the same numbers and the same filters
    shared = page.page.url
    page.page.goto("about:blank")
    page.page.goto(shared)
    page.wait_loaded()
    assert page.page.input_value("#f-consumer") == "usr_bob"
    assert page.page.input_value("#f-metric") == "output_tokens"
    assert page.value("total-units") == ledger_sum(
        ledger, "WHERE consumer_id = 'usr_bob' AND metric = 'output_tokens'")
    assert page.errors == [] and page.outside == []


def test_the_page_refreshes_itself(browser: Browser, ledger: Path) -> None:
    from aerostack_meter.servers.dashboard import start_dashboard

    with start_dashboard(ledger=ledger, refresh_seconds=0.3) as dash:
        context = browser.new_context()
        try:
            page = Watched(context.new_page(), dash.base_url)
            page.page.goto(dash.base_url + "/")
            page.wait_loaded()
            before = page.value("total-units")
            conn = sqlite3.connect(ledger)
            conn.execute("INSERT INTO ledger (ts, consumer_id, api_id, metric, units, events)"
                         " VALUES (strftime('%s','now'), 'usr_new', 'chat-api', 'input_tokens', 1000, 1)")
            conn.commit()
            conn.close()
            page.page.wait_for_function(
                f"Number(document.getElementById('total-units').dataset.value) === {before + 1000}",
                timeout=30_000)
            assert "usr_new" in (page.page.text_content("#f-consumer") or "")
            assert page.errors == []
        finally:
            context.close()


def test_an_empty_ledger_renders_without_errors(browser: Browser, tmp_path: Path) -> None:
    from aerostack_meter.servers.dashboard import start_dashboard

    from ._data import new_ledger

    new_ledger(tmp_path / "empty.db").close()
    with start_dashboard(ledger=tmp_path / "empty.db", refresh_seconds=0) as dash:
        context = browser.new_context()
        try:
            page = Watched(context.new_page(), dash.base_url)
            page.page.goto(dash.base_url + "/?range=24h")
            page.wait_loaded()
            assert page.value("total-units") == 0
            assert re.search("no usage", page.page.text_content("#chart-consumers") or "")
            assert page.errors == [] and page.outside == []
        finally:
            context.close()


def test_a_token_in_the_url_opens_a_guarded_dashboard(browser: Browser, ledger: Path) -> None:
    from aerostack_meter.servers.dashboard import start_dashboard

    with start_dashboard(ledger=ledger, token="s3cret", refresh_seconds=0) as dash:
        context = browser.new_context()
        try:
            page = Watched(context.new_page(), dash.base_url)
            page.page.goto(dash.url)  # .../?token=s3cret
            page.wait_loaded()
            assert page.value("total-units") == ledger_sum(ledger)
            loads = page.loads()
            page.page.select_option("#f-consumer", "usr_dave")
            page.wait_loaded(loads)
            assert page.value("total-units") == ledger_sum(ledger, "WHERE consumer_id = 'usr_dave'")
            assert "token=s3cret" in page.page.url
            assert page.errors == [] and page.outside == []
        finally:
            context.close()
