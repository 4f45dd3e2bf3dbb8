"""The researcher and budget pages in a real browser (Debian's Chromium, headless, driven by
Playwright against pytest-django's live server; the same setup as
tests/annotator_ui/test_browser.py). Each test opens a page of the seeded campaign, finds its
charts drawn with data, checks that the CSP blocked nothing, and saves a screenshot to
var/screenshots/ (git ignores it; copies live under docs/img/ for docs/research.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.rlhf_platform.insights.seed import seed_campaign

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[3] / "var" / "screenshots"


@pytest.fixture
def page_as(browser, live_server):
    contexts = []

    def make(username: str):
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.set_default_navigation_timeout(30_000)
        page.csp_errors = []
        page.on(
            "console",
            lambda m: (
                page.csp_errors.append(m.text) if "Content Security Policy" in m.text else None
            ),
        )
        page.goto(live_server.url + "/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill("pw-" + username)
        page.get_by_role("button", name="Log in").click()
        # Researchers land on the research pages, annotators on their campaigns.
        page.wait_for_url(re.compile(re.escape(live_server.url) + r"/(research/)?$"))
        page.base = live_server.url
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def seeded(researcher, annotator, other_annotator):
    return seed_campaign(researcher, [annotator, other_annotator])


def _points(page, chart: str) -> int:
    svg = page.locator(f'svg[data-chart="{chart}"]')
    assert svg.is_visible()
    box = svg.bounding_box()
    assert box["width"] > 300 and box["height"] > 100  # laid out, not collapsed
    return svg.locator(".pt").count()


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_campaign_page_draws_its_charts(page_as, researcher, seeded):
    page = page_as(researcher.username)
    page.goto(f"{page.base}/research/campaigns/{seeded.pk}/")
    assert _points(page, "win-rate") == 3
    assert page.locator('svg[data-chart="win-rate"] .band').count() == 1
    assert page.locator('svg[data-chart="win-rate"] .fit').count() == 1
    assert _points(page, "rounds") == 15  # 3 rounds x 5 states
    assert _points(page, "reward-accuracy") == 3
    assert _points(page, "acquisition-scores") == 6
    # The fit table recomputes for another win rate.
    page.get_by_label("Labels needed for win rate").fill("0.9")
    page.get_by_role("button", name="Recompute").click()
    page.wait_for_url("**target=0.9**")
    # The seeded points lie on the curve: no spread, so the interval is the point itself.
    assert page.locator("#fit .labels-needed").inner_text().strip() == "100 (95%: 100–100)"
    # The CSV link downloads the chart's data.
    with page.expect_download() as download:
        page.locator("#win-rate .csv-link").click()
    assert download.value.suggested_filename == f"campaign-{seeded.pk}-win-rate.csv"
    assert not page.csp_errors
    _shot(page, "research-campaign.png")


def test_overlay_of_two_campaigns(page_as, researcher, annotator, seeded):
    seed_campaign(
        researcher,
        [annotator],
        name="Offline baseline",
        algorithm="offline",
        evals=[(0, 16, 0.5, 0.4, 0.6), (1, 64, 0.75, 0.6, 0.8), (2, 256, 0.875, 0.8, 0.9)],
    )
    page = page_as(researcher.username)
    page.goto(f"{page.base}/research/")
    page.get_by_label("Compare Seeded").check()
    page.get_by_label("Compare Offline baseline").check()
    page.get_by_role("button", name="Overlay the selected campaigns").click()
    page.wait_for_url("**/research/compare/**")
    assert _points(page, "overlay") == 6
    assert page.locator('svg[data-chart="overlay"] .band').count() == 2
    assert not page.csp_errors
    _shot(page, "research-compare.png")


def test_agreement_page(page_as, researcher, seeded):
    page = page_as(researcher.username)
    page.goto(f"{page.base}/research/campaigns/{seeded.pk}/agreement/")
    assert _points(page, "annotator-agreement") == 2
    assert page.locator('[data-stat="kappa"]').inner_text() == "0.351"
    assert page.locator("#confusion tbody tr").count() == 4
    assert page.locator(".disagreement").first.get_by_text("Seeded prompt 4?").is_visible()
    assert not page.csp_errors
    _shot(page, "research-agreement.png")


def test_budget_page_filters_the_ledger_and_audits_a_cap(page_as, admin_user, seeded):
    page = page_as(admin_user.username)
    page.goto(f"{page.base}/budgets/campaigns/{seeded.pk}/")
    page.wait_for_function("() => window.htmx !== undefined")
    assert _points(page, "spend") == 18
    assert _points(page, "throughput") == 2
    assert page.locator('[data-stat="ledger-count"]').inner_text().startswith("18 entries")
    page.get_by_label("Source").select_option("judge")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_function(
        "() => document.querySelector('[data-stat=ledger-count]').textContent.startsWith('6 ')"
    )
    page.get_by_label("Label cap").fill("19")
    page.get_by_role("button", name="Save caps").click()
    page.wait_for_selector("#budget-alert")
    assert "of a cap is spent" in page.locator("#budget-alert").inner_text()
    assert "Changed the budget caps" in page.locator("#audit").inner_text()
    assert not page.csp_errors
    _shot(page, "budget.png")


def test_an_annotator_gets_not_allowed(page_as, annotator, seeded):
    page = page_as(annotator.username)
    response = page.goto(f"{page.base}/research/campaigns/{seeded.pk}/")
    assert response.status == 403
    assert page.get_by_role("heading", name="Not allowed").is_visible()
