"""The researcher's setup pages (new campaign, import with preview, members and invite
links, state buttons, exports), the label browser and its flags, the live refresh of the
research pages, and where a researcher lands after logging in. Both branches (plain page,
htmx fragment) are tested where a view has both."""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.urls import reverse
from django.utils import timezone

from rlhf_platform.budgets.models import Budget
from rlhf_platform.campaigns.models import Campaign, Invite, Membership, Prompt
from rlhf_platform.campaigns.services import campaign_create
from rlhf_platform.insights import views
from rlhf_platform.insights.models import AuditAction, AuditEntry
from rlhf_platform.labeling.models import Comparison, Label
from tests.conftest import make_campaign

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def _upload(name: str, text: str | bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, text.encode() if isinstance(text, str) else text)


# --- New campaign ----------------------------------------------------------------------------

GOOD = {
    "name": "Harmless",
    "algorithm": "online",
    "acquisition_rule": "uniform",
    "feedback_mode": "mixed",
    "mixed_fraction": "0.5",
    "seed": "3",
    "judge_kind": "oracle",
    "judge_temperature": "0.2",
    "policy_backend": "tiny",
    "policy_max_new_tokens": "12",
    "max_rounds": "5",
    "prompts_per_round": "8",
    "responses_per_prompt": "3",
    "eval_every": "2",
    "periodic_tau": "4",
    "round_deadline_seconds": "600",
    "labels_per_comparison": "1",
    "policy_config_extra": '{"nudge": 0.1}',
    "reward_config": '{"num_particles": 8}',
    "label_cap": "100",
    "cost_cap": "",
    "annotator_daily_cap": "",
    "human_label_cost": "0.25",
    "judge_call_cost": "0.01",
    "judge_token_cost": "0",
    "guidelines": "Prefer the **safer** answer.",
}


def test_a_researcher_creates_a_campaign_with_every_setting(client, researcher):
    client.force_login(researcher)
    assert client.get(reverse("insights:campaign-new")).status_code == 200
    response = client.post(reverse("insights:campaign-new"), GOOD)
    campaign = Campaign.objects.get(name="Harmless")
    assert response.status_code == 302 and response["Location"] == reverse(
        "insights:manage", args=[campaign.pk]
    )
    assert (campaign.algorithm, campaign.feedback_mode, campaign.mixed_fraction) == (
        "online",
        "mixed",
        0.5,
    )
    assert (campaign.max_rounds, campaign.eval_every, campaign.round_deadline_seconds) == (
        5,
        2,
        600,
    )
    assert campaign.judge_config == {"kind": "oracle", "temperature": 0.2}
    assert campaign.policy_config == {"nudge": 0.1, "backend": "tiny", "max_new_tokens": 12}
    assert campaign.reward_config == {"num_particles": 8}
    budget = Budget.objects.get(campaign=campaign)
    assert budget.label_cap == 100 and budget.cost_cap is None
    assert str(budget.human_label_cost) == "0.250000"


def test_the_form_shows_every_error_per_field_and_saves_nothing(client, researcher):
    client.force_login(researcher)
    bad = GOOD | {
        "name": "",
        "feedback_mode": "judge",
        "judge_kind": "",
        "responses_per_prompt": "1",
        "reward_config": "{not json",
        "mixed_fraction": "2",
    }
    response = client.post(reverse("insights:campaign-new"), bad)
    assert response.status_code == 400
    html = response.content.decode()
    for field in ("name", "judge_kind", "responses_per_prompt", "reward_config"):
        assert f'data-field="{field}"' in html
        assert f'id="err_{field}"' in html, field
    assert "A judge campaign needs a judge" in html
    assert not Campaign.objects.exists()


def test_a_taken_name_is_a_field_error(client, researcher):
    client.force_login(researcher)
    campaign_create(owner=researcher, name="Harmless")
    response = client.post(reverse("insights:campaign-new"), GOOD)
    assert response.status_code == 400 and 'id="err_name"' in response.content.decode()
    assert Campaign.objects.count() == 1


def test_annotators_cannot_create_campaigns(client, annotator):
    client.force_login(annotator)
    assert client.get(reverse("insights:campaign-new")).status_code == 403
    assert client.post(reverse("insights:campaign-new"), GOOD).status_code == 403
    assert not Campaign.objects.exists()


# --- Import with preview ---------------------------------------------------------------------

BAD_PROMPTS = "\n".join(
    [
        json.dumps({"prompt": "Fine one"}),
        json.dumps({"prompt": ""}),
        "not json",
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Tell me a joke."},
                ]
            }
        ),
    ]
)


def test_a_preview_lists_every_bad_row_and_imports_nothing(client, researcher):
    campaign = campaign_create(owner=researcher, name="Draft")
    client.force_login(researcher)
    url = reverse("insights:campaign-import", args=[campaign.pk])
    for do in ("preview", "import"):
        response = client.post(
            url, {"kind": "prompts", "do": do, "file": _upload("p.jsonl", BAD_PROMPTS)}
        )
        assert response.status_code == 400
        html = response.content.decode()
        assert 'data-bad-rows="2"' in html
        assert "line 2: missing or empty &#x27;prompt&#x27;" in html
        assert "line 3: invalid JSON" in html
        assert "Fine one" in html  # the first rows are shown
    assert not Prompt.objects.exists()


def test_a_good_file_is_previewed_then_imported_with_chat_turns(client, researcher):
    campaign = campaign_create(owner=researcher, name="Draft")
    client.force_login(researcher)
    url = reverse("insights:campaign-import", args=[campaign.pk])
    good = BAD_PROMPTS.replace(json.dumps({"prompt": ""}), json.dumps({"prompt": "Two"}))
    good = good.replace("not json", json.dumps({"prompt": "Three", "split": "eval"}))
    preview = client.post(
        url, {"kind": "prompts", "do": "preview", "file": _upload("p.jsonl", good)}, **HX
    )
    assert preview.status_code == 200
    assert preview.content.decode().lstrip().startswith('<div id="import-result"')  # a fragment
    assert 'id="import-ok"' in preview.content.decode()
    assert not Prompt.objects.exists()
    imported = client.post(
        url, {"kind": "prompts", "do": "import", "file": _upload("p.jsonl", good)}
    )
    assert imported.status_code == 302
    assert Prompt.objects.filter(campaign=campaign).count() == 4
    chat = Prompt.objects.get(text="Tell me a joke.")
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user"]
    assert AuditEntry.objects.count() == 0  # imports are in the prompts table, not audited


def test_pairs_from_csv_and_parquet(client, researcher):
    campaign = campaign_create(owner=researcher, name="Pairs")
    client.force_login(researcher)
    url = reverse("insights:campaign-import", args=[campaign.pk])
    bad_csv = "prompt,response_a,response_b\nq1,a,b\nq2,same,same\nq3,x,\n"
    response = client.post(
        url, {"kind": "pairs", "do": "preview", "file": _upload("p.csv", bad_csv)}
    )
    html = response.content.decode()
    assert response.status_code == 400 and 'data-bad-rows="2"' in html
    # Numbered as the file's lines (the header is line 1), as the import API numbers them.
    assert "line 3: needs two different" in html and "line 4: missing or empty" in html
    table = pa.table({"prompt": ["q1", "q2"], "response_a": ["a", "c"], "response_b": ["b", "d"]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    response = client.post(
        url, {"kind": "pairs", "do": "import", "file": _upload("p.parquet", buffer.getvalue())}
    )
    assert response.status_code == 302
    assert Comparison.objects.filter(campaign=campaign).count() == 2


# --- Members, invites, state ------------------------------------------------------------------


def test_members_are_added_and_removed_audited(client, researcher, annotator):
    campaign = campaign_create(owner=researcher, name="Team")
    client.force_login(researcher)
    client.post(reverse("insights:members-add", args=[campaign.pk]), {"username": "anna"})
    assert Membership.objects.filter(campaign=campaign, user=annotator).exists()
    response = client.post(
        reverse("insights:members-add", args=[campaign.pk]), {"username": "nobody"}, follow=True
    )
    assert "No active user named" in response.content.decode()
    client.post(reverse("insights:members-remove", args=[campaign.pk]), {"username": "anna"})
    assert not Membership.objects.filter(campaign=campaign).exists()
    actions = list(AuditEntry.objects.order_by("id").values_list("action", flat=True))
    assert actions == [AuditAction.ADD_MEMBER, AuditAction.REMOVE_MEMBER]


def test_an_invite_link_adds_whoever_opens_it_until_it_expires(
    client, researcher, annotator, other_annotator
):
    campaign = campaign_create(owner=researcher, name="Team")
    client.force_login(researcher)
    response = client.post(reverse("insights:invite-new", args=[campaign.pk]), {"hours": "24"})
    html = response.content.decode()
    link = html.split('<code id="invite-link">')[1].split("</code>")[0]
    path = link.split("testserver", 1)[1]
    assert Invite.objects.get().token_hash not in link  # only the hash is stored
    client.force_login(annotator)
    assert client.get(path).status_code == 200
    assert client.post(path).status_code == 302
    assert Membership.objects.filter(campaign=campaign, user=annotator).exists()
    Invite.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    client.force_login(other_annotator)
    response = client.post(path)
    assert response.status_code == 409 and "expired" in response.content.decode()
    assert not Membership.objects.filter(user=other_annotator).exists()
    assert client.post("/invites/not-a-token/").status_code == 404


def test_state_buttons_are_confirmed_and_audited(client, researcher):
    campaign = campaign_create(owner=researcher, name="Team")
    client.force_login(researcher)
    url = reverse("insights:campaign-state", args=[campaign.pk])
    page = client.post(url, {"action": "start"})  # no confirmation yet: a page asks
    assert page.status_code == 200 and "Yes, start" in page.content.decode()
    campaign.refresh_from_db()
    assert campaign.state == "draft"
    client.post(url, {"action": "start", "confirmed": "1"})
    client.post(url, {"action": "pause", "confirmed": "1"}, **HX)
    campaign.refresh_from_db()
    assert campaign.state == "paused"
    response = client.post(url, {"action": "pause", "confirmed": "1"}, follow=True)
    assert "Cannot pause a campaign that is paused" in response.content.decode()
    entries = AuditEntry.objects.order_by("id")
    assert [(e.action, e.before, e.after) for e in entries] == [
        ("start", {"state": "draft"}, {"state": "running"}),
        ("pause", {"state": "running"}, {"state": "paused"}),
    ]


def test_the_manage_page_has_every_export_and_only_managers_open_it(client, researcher, annotator):
    campaign = make_campaign(researcher, members=(annotator,))
    client.force_login(researcher)
    html = client.get(reverse("insights:manage", args=[campaign.pk])).content.decode()
    assert f"/api/v1/campaigns/{campaign.pk}/exports/preferences/" in html
    assert f"/api/v1/campaigns/{campaign.pk}/exports/labels/" in html
    for value in ("standard", "conversational", "jsonl", "csv", "parquet"):
        assert f'value="{value}"' in html
    client.force_login(annotator)
    assert client.get(reverse("insights:manage", args=[campaign.pk])).status_code == 403


# --- Label browser ---------------------------------------------------------------------------


def _ids(response) -> list[int]:
    html = response.content.decode()
    return [int(chunk.split('"')[0]) for chunk in html.split('data-label="')[1:]]


def test_label_browser_filters(client, researcher, seeded):
    client.force_login(researcher)
    url = reverse("insights:labels", args=[seeded.pk])
    labels = Label.objects.filter(campaign=seeded)
    assert len(_ids(client.get(url))) == labels.count() == 18
    assert len(_ids(client.get(url, {"source": "judge"}))) == 6
    assert len(_ids(client.get(url, {"annotator": "anna"}))) == 6
    assert len(_ids(client.get(url, {"choice": "tie"}))) == 1
    judge = _ids(client.get(url, {"disagreement": "judge"}))
    assert len(judge) == 4  # otto on pair 1, anna's tie on 3, both on 4
    majority = _ids(client.get(url, {"disagreement": "majority"}))
    assert len(majority) == 3
    assert (
        len(_ids(client.get(url, {"round": "0"})))
        == labels.filter(comparison__round__index=0).count()
    )
    fragment = client.get(url, {"source": "human"}, HTTP_HX_TARGET="label-table", **HX)
    assert fragment.content.decode().lstrip().startswith('<section class="card" id="label-table"')
    assert len(_ids(fragment)) == 12


def test_label_browser_queries_do_not_grow_with_the_labels(
    client, researcher, seeded, django_assert_max_num_queries
):
    client.force_login(researcher)
    url = reverse("insights:labels", args=[seeded.pk])
    with django_assert_max_num_queries(12):
        assert len(_ids(client.get(url, {"disagreement": "majority"}))) == 3
    with django_assert_max_num_queries(12):
        assert len(_ids(client.get(url))) == 18


def test_label_browser_sorts_by_time_and_searches_rationales(client, researcher, seeded):
    labels = list(Label.objects.filter(campaign=seeded, source="human").order_by("id"))
    for i, label in enumerate(labels):
        Label.objects.filter(pk=label.pk).update(time_taken_ms=1000 * (i + 1), rationale="")
    Label.objects.filter(pk=labels[3].pk).update(rationale="Clearly more HELPFUL")
    client.force_login(researcher)
    url = reverse("insights:labels", args=[seeded.pk])
    assert _ids(client.get(url, {"q": "helpful"})) == [labels[3].pk]
    slowest = _ids(client.get(url, {"sort": "slowest", "source": "human"}))
    assert slowest == [lab.pk for lab in reversed(labels)]


def test_flagging_from_the_browser(client, researcher, annotator, seeded):
    label = Label.objects.filter(campaign=seeded, source="human").first()
    client.force_login(researcher)
    url = reverse("insights:label-flag", args=[seeded.pk, label.pk])
    row = client.post(url, {"flagged": "1", "reason": "careless"}, **HX)
    assert row.status_code == 200 and 'data-flagged="1"' in row.content.decode()
    label.refresh_from_db()
    assert label.flagged_at is not None and label.flag_reason == "careless"
    browse = reverse("insights:labels", args=[seeded.pk])
    assert _ids(client.get(browse, {"flag": "flagged"})) == [label.pk]
    assert client.post(url, {"flagged": "0"}).status_code == 302
    label.refresh_from_db()
    assert label.flagged_at is None
    client.force_login(annotator)
    assert client.post(url, {"flagged": "1"}).status_code == 403
    assert client.get(browse).status_code == 403


# --- Live pages, landing ----------------------------------------------------------------------


def test_running_campaign_pages_poll_themselves(client, researcher, seeded):
    client.force_login(researcher)
    seeded.state = "running"
    seeded.save()
    for name in ("insights:campaign", "insights:agreement", "insights:budget"):
        html = client.get(reverse(name, args=[seeded.pk])).content.decode()
        assert 'data-live="on"' in html and 'hx-select="#live"' in html, name
        assert f'hx-trigger="every {views.LIVE_POLL_SECONDS}s"' in html
    # The poll of the budget page gets the whole page (hx-select picks #live), not the
    # ledger fragment its filter form gets.
    poll = client.get(reverse("insights:budget", args=[seeded.pk]), {"live": "1"}, **HX)
    assert 'id="live"' in poll.content.decode()
    seeded.state = "paused"
    seeded.save()
    html = client.get(reverse("insights:campaign", args=[seeded.pk])).content.decode()
    assert 'data-live="off"' in html


def test_the_fit_says_not_enough_data_yet(client, researcher, annotator):
    from tests.rlhf_platform.insights.seed import seed_campaign

    two = seed_campaign(
        researcher, [annotator], name="Two", evals=[(0, 4, 0.5, 0.4, 0.6), (1, 16, 0.75, 0.6, 0.9)]
    )
    client.force_login(researcher)
    html = client.get(reverse("insights:campaign", args=[two.pk])).content.decode()
    assert 'data-fit="not-enough"' in html and "not enough data yet" in html


def test_the_fit_shows_labels_needed_with_an_interval(client, researcher, seeded):
    client.force_login(researcher)
    html = client.get(reverse("insights:campaign", args=[seeded.pk])).content.decode()
    assert 'data-fit="not-enough"' not in html and "(95%:" in html


def test_researchers_land_on_the_research_pages(client, researcher, annotator):
    response = client.post("/login/", {"username": "rita", "password": "pw-rita"})
    assert response["Location"] == reverse("insights:research")
    client.logout()
    response = client.post("/login/", {"username": "anna", "password": "pw-anna"})
    assert response["Location"] == "/"


# --- Try the judge on one pair ----------------------------------------------------------------


def test_a_judge_is_tried_on_one_pair_by_a_worker(
    client, researcher, django_capture_on_commit_callbacks
):
    from rlhf_platform.insights.models import JudgeTrial
    from rlhf_platform.rounds import dispatch
    from rlhf_platform.rounds.services import judge_trial_run

    client.force_login(researcher)
    form = GOOD | {"judge_kind": "oracle", "judge_extra": '{"encoder": "hashing"}'}
    with dispatch.inline() as pop:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(reverse("insights:judge-try"), form, **HX)
        assert response.status_code == 200
        html = response.content.decode()
        assert 'data-trial-state="pending"' in html and "hx-get" in html
        kind, trial_id = pop()
    assert kind == "judge_trial"
    trial = JudgeTrial.objects.get(pk=trial_id)
    assert trial.judge_config == {"encoder": "hashing", "kind": "oracle", "temperature": 0.2}
    assert judge_trial_run(trial_id=trial_id) == "done"
    html = client.get(reverse("insights:judge-trial", args=[trial_id]), **HX).content.decode()
    assert 'data-trial-state="done"' in html and "hx-get" not in html
    trial.refresh_from_db()
    assert trial.choice in ("A", "B", "tie") and 0 <= trial.prob_a <= 1
    assert not Campaign.objects.exists()  # trying a judge saves no campaign


def test_a_broken_judge_config_fails_with_its_reason(
    client, researcher, django_capture_on_commit_callbacks
):
    from rlhf_platform.rounds import dispatch
    from rlhf_platform.rounds.services import judge_trial_run

    client.force_login(researcher)
    with dispatch.inline() as pop:
        with django_capture_on_commit_callbacks(execute=True):
            client.post(
                reverse("insights:judge-try"),
                {"judge_kind": "oracle", "judge_extra": '{"no_such_option": 1}'},
            )
        _, trial_id = pop()
    assert judge_trial_run(trial_id=trial_id) == "failed"
    html = client.get(reverse("insights:judge-trial", args=[trial_id])).content.decode()
    assert "The judge failed" in html and "no_such_option" in html


def test_trying_needs_a_judge_and_a_researcher(client, researcher, annotator):
    client.force_login(researcher)
    response = client.post(reverse("insights:judge-try"), {"judge_kind": ""}, **HX)
    assert response.status_code == 400 and "Pick a judge to try." in response.content.decode()
    client.force_login(annotator)
    assert client.post(reverse("insights:judge-try"), {"judge_kind": "oracle"}).status_code == 403
