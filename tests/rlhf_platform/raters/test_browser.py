"""The raters page in Chromium (headless, Playwright, the project's ``browser`` fixture):
a simulated crowd's raters with their flags, the exclude button, no CSP violation. Saves
var/screenshots/raters.png (docs/img/raters.png is a copy, shown in the README)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rlhf_platform.raters.models import RaterExclusion
from tests.rlhf_platform.raters.crowd import crowd_campaign

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[3] / "var" / "screenshots"


def test_raters_page_shows_flags_and_excludes_a_rater(browser, live_server, researcher):
    campaign, users = crowd_campaign(researcher)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    csp_errors = []
    page.on(
        "console",
        lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(live_server.url + "/login/")
    page.get_by_label("Username").fill(researcher.username)
    page.get_by_label("Password").fill("pw-" + researcher.username)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(re.escape(live_server.url) + r"/(research/)?$"))
    page.goto(f"{live_server.url}/research/campaigns/{campaign.pk}/raters/")
    rows = page.locator("table.raters tbody tr")
    assert rows.count() == 5
    fiona = page.locator(f'tr[data-rater="user:{users["fiona"].pk}"]')
    assert fiona.locator(".flag-position").is_visible()
    rudi = page.locator(f'tr[data-rater="user:{users["rudi"].pk}"]')
    assert rudi.locator(".flag-too_fast").is_visible()
    carla = page.locator(f'tr[data-rater="user:{users["carla"].pk}"]')
    assert carla.locator("svg.spark rect").count() >= 1
    assert carla.locator('[data-stat="gold"]').inner_text() != "–"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "raters.png"), full_page=True)
    fiona.get_by_role("button", name="Exclude").click()
    page.wait_for_load_state()
    assert page.locator(".flash").first.inner_text() == "Rater excluded."
    assert RaterExclusion.objects.filter(campaign=campaign, annotator=users["fiona"]).exists()
    assert page.locator(f'tr[data-rater="user:{users["fiona"].pk}"].excluded').is_visible()
    assert not csp_errors
    context.close()
