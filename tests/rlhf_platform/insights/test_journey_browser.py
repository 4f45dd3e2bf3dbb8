"""A researcher's whole journey in Chromium, with no command line and no admin:

1. log in (landing on the research pages), try the judge on one pair, and create a
   judge-and-human campaign;
2. upload a prompt file with a bad row, see it listed, fix it and upload again;
3. add an annotator and start the campaign;
4. the annotator labels 10 pairs, undoes one and labels it again;
5. the researcher watches the campaign page update without reloading, flags one label in
   the label browser, and downloads the TRL export, which loads with ``datasets`` and
   leaves out the flagged label;
6. they pause the campaign.

Rounds run in this process (``dispatch.inline()``; the tiny test model and the oracle judge
with its hashing encoder), driven by the test between the steps where a worker would act.
Screenshots of every new page, wide and narrow, go to var/screenshots/ (git ignores it);
copies live in docs/img/ for the README. At 390 px no page scrolls sideways.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_platform.campaigns.models import Campaign, CampaignState, Prompt
from rlhf_platform.insights import views as insight_views
from rlhf_platform.insights.models import AuditEntry
from rlhf_platform.labeling.models import Comparison, Label, LabelSource
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.services import (
    campaign_open_round,
    judge_trial_run,
    round_judge,
    round_step,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[3] / "var" / "screenshots"
WIDE = {"width": 1366, "height": 768}
NARROW = {"width": 390, "height": 844}
TRAIN = [f"Give one practical tip about topic number {i}." for i in range(12)]
EVAL = ["What is 2 + 2?", "Name a primary colour.", "Why is the sky blue?"]


@pytest.fixture(autouse=True)
def _fast(settings, tmp_path, monkeypatch):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    monkeypatch.setattr(insight_views, "LIVE_POLL_SECONDS", 1)


@pytest.fixture
def inline_rounds():
    """Round work the pages dispatch is queued here instead of going to Celery."""
    with dispatch.inline() as pop:
        yield pop


def _drive(pop, campaign_id: int) -> Round:
    """Do what a worker would: run the queued round work until the round waits for
    labels (the judge has labeled its share)."""
    for _ in range(200):
        item = pop()
        if item is None:
            rnd = Round.objects.filter(campaign_id=campaign_id).order_by("-index").first()
            if rnd is not None and rnd.state == RoundState.LABELING:
                round_judge(round_id=rnd.pk)
                return rnd
            continue
        kind, object_id = item
        if kind == "open":
            campaign_open_round(campaign_id=object_id)
        elif kind == "judge":
            round_judge(round_id=object_id)
        else:
            round_step(round_id=object_id)
    raise AssertionError("the first round never reached labeling")


class Shots:
    """Screenshots of a page at both widths; the narrow one must not scroll sideways."""

    def __init__(self, browser, live_server, storage_state):
        self.browser, self.base, self.state = browser, live_server.url, storage_state
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(self, name: str, path: str, *, full_page: bool = True) -> None:
        for label, viewport in (("wide", WIDE), ("narrow", NARROW)):
            context = self.browser.new_context(viewport=viewport, storage_state=self.state)
            page = context.new_page()
            page.goto(self.base + path)
            page.wait_for_load_state("networkidle")
            if label == "narrow":
                overflow = page.evaluate(
                    "() => document.documentElement.scrollWidth - window.innerWidth"
                )
                wide = page.evaluate(
                    """() => [...document.querySelectorAll('body *')]
                        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                        .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)"""
                )
                assert overflow <= 0, f"{name} scrolls sideways at 390 px by {overflow} px: {wide}"
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=full_page)
            context.close()


def _login(browser, base: str, username: str, viewport=WIDE):
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations of hx-confirm
    page.goto(base + "/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-" + username)
    page.get_by_role("button", name="Log in").click()
    return context, page


def test_a_researcher_runs_a_campaign_end_to_end_in_the_browser(
    browser, live_server, researcher, annotator, inline_rounds, tmp_path
):
    base = live_server.url
    r_context, r = _login(browser, base, researcher.username)
    # 1. Researchers land on the research pages; create a judge-and-human campaign.
    r.wait_for_url(base + "/research/")
    r.get_by_role("link", name="New campaign").click()
    r.wait_for_url("**/research/campaigns/new/")
    r.get_by_label("Name", exact=True).fill("Journey")
    r.get_by_label("Algorithm").select_option("online")
    r.get_by_label("Acquisition rule").select_option("uniform")
    r.get_by_label("Feedback", exact=True).select_option("mixed")
    r.get_by_label("Mixed: share of pairs also sent to the judge").fill("1")
    r.get_by_label("Judge", exact=True).select_option("oracle")
    r.get_by_label("More judge settings (JSON, optional)").fill('{"encoder": "hashing"}')
    # Try the judge on one pair: a worker answers (here, this test), the page shows it.
    r.get_by_role("button", name="Try it on one pair").click()
    r.locator("#judge-trial[data-trial-state='pending']").wait_for()
    kind, trial_id = inline_rounds()
    assert kind == "judge_trial" and judge_trial_run(trial_id=trial_id) == "done"
    r.locator("#judge-trial[data-trial-state='done']").wait_for()
    assert "The judge answered" in r.inner_text("#judge-trial")
    r.get_by_label("Policy backend").select_option("tiny")
    r.get_by_label("Max new tokens per response").fill("8")
    r.get_by_label("Rounds (empty: until the budget ends)").fill("2")
    r.get_by_label("Prompts per round (B)").fill("12")
    r.get_by_label("Responses per prompt (K)").fill("3")
    r.get_by_label("Evaluate every N rounds (0: never)").fill("0")
    r.get_by_label("More policy settings (JSON, optional)").fill(
        '{"policy_steps": 1, "eval_prompts": 3}'
    )
    r.get_by_label("Reward model settings (JSON, optional)").fill(
        '{"num_particles": 8, "point_hidden": [16, 16], "prior_hidden": [8], "diff_hidden": [8]}'
    )
    r.get_by_label("Label cap (empty: none)").fill("100")
    r.get_by_role("button", name="Create the campaign").click()
    r.wait_for_url("**/manage/")
    campaign = Campaign.objects.get(name="Journey")
    assert campaign.feedback_mode == "mixed" and campaign.judge_config["kind"] == "oracle"

    # 2. A prompt file with a bad row: listed with its line, nothing imported; fixed: imported.
    rows = [{"prompt": p} for p in TRAIN] + [{"prompt": p, "split": "eval"} for p in EVAL]
    bad = rows[:4] + [{"prompt": "", "split": "train"}] + rows[4:]
    bad_file, good_file = tmp_path / "prompts.jsonl", tmp_path / "prompts-fixed.jsonl"
    bad_file.write_text("\n".join(json.dumps(x) for x in bad) + "\n")
    good_file.write_text("\n".join(json.dumps(x) for x in rows) + "\n")
    r.set_input_files("#import-form input[type=file]", str(bad_file))
    r.get_by_role("button", name="Check the file").click()
    errors = r.locator("#import-errors")
    errors.wait_for()
    assert "line 5: missing or empty 'prompt'" in errors.inner_text()
    assert Prompt.objects.count() == 0
    r.set_input_files("#import-form input[type=file]", str(good_file))
    r.get_by_role("button", name="Check the file").click()
    r.locator("#import-ok").wait_for()
    r.get_by_role("button", name="Import", exact=True).click()
    r.locator("[data-imported='15']").wait_for()
    assert Prompt.objects.filter(campaign=campaign).count() == 15

    # 3. Add the annotator; start (confirmed in the browser, audited).
    r.goto(f"{base}/research/campaigns/{campaign.pk}/manage/")
    r.get_by_label("Add by username").fill(annotator.username)
    r.get_by_role("button", name="Add member").click()
    r.locator(f"[data-member='{annotator.username}']").wait_for()
    r.locator("button[data-action='start']").click()
    r.locator("[data-campaign-state='running']").wait_for()
    rnd = _drive(inline_rounds, campaign.pk)
    assert Comparison.objects.filter(round=rnd).count() == 12
    shots = Shots(browser, live_server, r_context.storage_state())
    shots.take("setup", f"/research/campaigns/{campaign.pk}/manage/")
    shots.take("research", "/research/")
    shots.take("new-campaign", "/research/campaigns/new/")

    # The researcher watches the campaign page; it will update by itself.
    r.goto(f"{base}/research/campaigns/{campaign.pk}/")
    r.wait_for_function("() => window.htmx !== undefined")
    r.evaluate("() => { window.__notReloaded = true; }")
    assert r.inner_text("[data-stat='labels']") == "12"  # the judge's labels

    # 4. The annotator labels 10 pairs, undoes the last, and labels it again.
    a_context, a = _login(browser, base, annotator.username, viewport=NARROW)
    a.goto(f"{base}/campaigns/{campaign.pk}/label/")
    a.wait_for_function("() => window.htmx !== undefined")
    a.get_by_role("button", name="Next pair").click()  # the POST that leases
    a.wait_for_function("() => document.getElementById('workspace').dataset.state === 'labeling'")
    a.wait_for_timeout(450)  # past the page's guard against double presses
    choice = a.locator("#label-form button[value='A']")
    box = choice.bounding_box()
    assert box and box["y"] + box["height"] <= NARROW["height"], "answer buttons below the fold"
    for i in range(10):
        lease = a.get_attribute("#workspace", "data-lease-id")
        a.keyboard.press("1" if i % 2 else "2")
        a.wait_for_function(
            "(old) => document.getElementById('workspace').dataset.leaseId !== old", arg=lease
        )
        a.wait_for_timeout(450)  # past the page's guard against double presses
    assert Label.objects.filter(annotator=annotator).count() == 10
    last = Label.objects.filter(annotator=annotator).order_by("-created_at").first()
    a.keyboard.press("u")
    a.wait_for_function(
        "(id) => document.getElementById('workspace').dataset.leaseId === id",
        arg=str(last.lease_id),
    )
    assert Label.objects.filter(annotator=annotator).count() == 9
    a.wait_for_timeout(450)
    a.keyboard.press("1")
    a.wait_for_function(
        "(id) => document.getElementById('workspace').dataset.leaseId !== id",
        arg=str(last.lease_id),
    )
    assert Label.objects.filter(annotator=annotator).count() == 10
    a_context.close()

    # 5. The page updated without a reload; flag one label; download the TRL export.
    r.wait_for_function(
        "() => document.querySelector(\"[data-stat='labels']\").textContent.trim() === '22'"
    )
    assert r.evaluate("() => window.__notReloaded") is True
    human = Label.objects.filter(annotator=annotator).order_by("id").first()
    r.goto(f"{base}/research/campaigns/{campaign.pk}/labels/?source=human")
    row = r.locator(f"#label-{human.pk}")
    row.locator("summary").click()
    row.get_by_label("Reason").fill("careless")
    row.locator("[data-flag-action='flag']").click()
    r.locator(f"#label-{human.pk}[data-flagged='1']").wait_for()
    human.refresh_from_db()
    assert human.flagged_at is not None
    assert AuditEntry.objects.filter(action="flag_label").count() == 1
    r.goto(f"{base}/research/campaigns/{campaign.pk}/")
    with r.expect_download() as download:
        r.locator("button[data-export='preferences']").click()
    path = tmp_path / "preferences.jsonl"
    download.value.save_as(path)
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(path), split="train")
    kept = Label.objects.filter(
        campaign=campaign, flagged_at__isnull=True, choice__in=["A", "B"]
    ).count()
    assert len(dataset) == kept and set(dataset.column_names) == {"prompt", "chosen", "rejected"}
    c = human.comparison
    flagged_pair = (c.prompt.text, c.response_a.text, c.response_b.text)
    rows_of_pair = [
        x
        for x in dataset
        if x["prompt"] == flagged_pair[0] and {x["chosen"], x["rejected"]} == set(flagged_pair[1:])
    ]
    assert len(rows_of_pair) == 1  # the judge's label of that pair stays, the flagged one not
    assert Label.objects.filter(comparison=c, source=LabelSource.JUDGE).exists()

    shots.take("labels", f"/research/campaigns/{campaign.pk}/labels/")
    shots.take("campaign", f"/research/campaigns/{campaign.pk}/")
    shots.take("agreement", f"/research/campaigns/{campaign.pk}/agreement/")
    shots.take("budget", f"/budgets/campaigns/{campaign.pk}/")
    shots.take("budgets", "/budgets/")
    shots.take("compare", f"/research/compare/?c={campaign.pk}")

    # 6. Pause, confirmed and audited.
    r.goto(f"{base}/research/campaigns/{campaign.pk}/manage/")
    r.locator("button[data-action='pause']").click()
    r.locator("[data-campaign-state='paused']").wait_for()
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.PAUSED
    assert list(
        AuditEntry.objects.filter(action__in=["start", "pause"])
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["start", "pause"]
    r_context.close()


def test_the_answer_buttons_fit_the_window_and_the_help_overlays(
    browser, live_server, researcher, annotator
):
    from tests.conftest import make_campaign

    campaign = make_campaign(researcher, members=(annotator,))
    long = "A long answer. " * 400
    from rlhf_platform.rounds.models import Response

    Response.objects.filter(prompt__campaign=campaign).update(text=long)
    for viewport in (WIDE, NARROW):
        context, page = _login(browser, live_server.url, annotator.username, viewport=viewport)
        page.goto(f"{live_server.url}/campaigns/{campaign.pk}/label/")
        page.wait_for_function("() => window.htmx !== undefined")
        if page.get_attribute("#workspace", "data-state") == "ready":
            page.get_by_role("button", name="Next pair").click()  # the POST that leases
            page.wait_for_function(
                "() => document.getElementById('workspace').dataset.state === 'labeling'"
            )
            # Measure from the top of the page, as loaded (the swap scrolled to the pair).
            page.evaluate("() => window.scrollTo(0, 0)")
        for value in ("A", "B", "tie", "both_bad"):
            box = page.locator(f"#label-form button[value='{value}']").bounding_box()
            assert box and 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"], (
                value,
                viewport,
            )
        before = page.locator("#workspace").bounding_box()["y"]
        page.keyboard.press("?")
        page.locator(".keys-overlay").wait_for(state="visible")
        assert page.locator("#workspace").bounding_box()["y"] == before  # not pushed down
        name = "label-wide" if viewport is WIDE else "label-narrow"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-help.png"))
        context.close()
