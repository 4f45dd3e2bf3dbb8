"""``manage.py seed_demo``: the demo users and campaign, idempotent, no fixed passwords."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.management import CommandError, call_command

from rlhf_platform.accounts.models import Role, User
from rlhf_platform.campaigns.management.commands.seed_demo import (
    DEMO_CAMPAIGN,
    DEMO_LABEL_CAP,
    DEMO_PAIRS,
)
from rlhf_platform.campaigns.models import Campaign, CampaignState, Prompt
from rlhf_platform.insights.models import AuditEntry
from rlhf_platform.labeling.models import Comparison
from rlhf_platform.labeling.services import comparison_next, label_submit
from rlhf_platform.rounds.models import Response

LOGIN_LINE = re.compile(r"^\s+(admin|researcher|annotator)\s+(\S+)$", re.MULTILINE)


def seed(*args: str) -> tuple[str, dict[str, str]]:
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    text = out.getvalue()
    return text, dict(LOGIN_LINE.findall(text))


def test_bundled_pairs_are_varied_and_valid():
    pairs = [json.loads(line) for line in DEMO_PAIRS.read_text().splitlines() if line.strip()]
    assert len(pairs) >= 30
    assert len({p["prompt"] for p in pairs}) == len(pairs)
    for pair in pairs:
        assert pair["response_a"].strip() and pair["response_b"].strip()
        assert pair["response_a"] != pair["response_b"]
    assert sum("```" in p["response_a"] + p["response_b"] for p in pairs) >= 5
    assert len({p["metadata"]["topic"] for p in pairs}) >= 5


@pytest.mark.django_db
def test_it_creates_users_with_generated_passwords_printed_once():
    text, logins = seed()

    assert set(logins) == {"admin", "researcher", "annotator"}
    assert len(set(logins.values())) == 3
    for username, password in logins.items():
        user = User.objects.get(username=username)
        assert user.check_password(password)
        validate_password(password, user)
    admin = User.objects.get(username="admin")
    assert admin.role == Role.ADMIN and admin.is_staff and admin.is_superuser
    assert User.objects.get(username="researcher").role == Role.RESEARCHER
    annotator = User.objects.get(username="annotator")
    assert annotator.role == Role.ANNOTATOR and not annotator.is_staff

    again, logins_again = seed()
    assert logins_again == {}
    assert "password unchanged" in again
    for username, password in logins.items():
        assert User.objects.get(username=username).check_password(password)


@pytest.mark.django_db
def test_it_creates_a_running_campaign_of_the_bundled_pairs():
    seed()
    campaign = Campaign.objects.get(name=DEMO_CAMPAIGN)
    pairs = len([line for line in DEMO_PAIRS.read_text().splitlines() if line.strip()])

    assert campaign.state == CampaignState.RUNNING
    assert campaign.owner.username == "researcher"
    assert list(campaign.members.values_list("username", flat=True)) == ["annotator"]
    assert campaign.budget.label_cap == DEMO_LABEL_CAP
    assert campaign.comparisons.count() == pairs
    assert Prompt.objects.filter(campaign=campaign).count() == pairs
    # Started through the audited service, as the demo's researcher.
    entries = list(
        AuditEntry.objects.filter(campaign=campaign).values_list("actor__username", "action")
    )
    assert entries == [("researcher", "start")]


@pytest.mark.django_db
def test_running_it_again_changes_nothing():
    seed()
    counts = (Campaign.objects.count(), Comparison.objects.count(), Response.objects.count())
    seed()
    assert (
        Campaign.objects.count(),
        Comparison.objects.count(),
        Response.objects.count(),
    ) == counts
    assert User.objects.count() == 3


@pytest.mark.django_db
def test_reset_passwords_prints_new_ones_and_old_ones_stop_working():
    _, first = seed()
    _, second = seed("--reset-passwords")

    assert set(second) == {"admin", "researcher", "annotator"}
    for username in first:
        user = User.objects.get(username=username)
        assert first[username] != second[username]
        assert user.check_password(second[username])
        assert not user.check_password(first[username])


@pytest.mark.django_db
def test_the_seeded_annotator_can_label():
    seed()
    annotator = User.objects.get(username="annotator")
    campaign = Campaign.objects.get(name=DEMO_CAMPAIGN)

    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    label, created = label_submit(
        annotator=annotator, lease_id=lease.pk, choice="A", idempotency_key="demo-1"
    )
    assert created and label.campaign_id == campaign.pk
    campaign.budget.refresh_from_db()
    assert campaign.budget.labels_spent == 1


@pytest.mark.django_db
def test_a_bad_pair_file_names_the_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    good = json.dumps({"prompt": "Hi?", "response_a": "Hello!", "response_b": "Hey."})
    bad.write_text(good + "\n{not json\n")

    with pytest.raises(CommandError, match=r"pairs\.jsonl:2: invalid JSON"):
        call_command("seed_demo", "--pairs", str(bad), stdout=io.StringIO())
    assert not User.objects.exists()


@pytest.mark.django_db
def test_a_pair_the_import_rejects_rolls_everything_back(tmp_path):
    same = tmp_path / "pairs.jsonl"
    same.write_text(json.dumps({"prompt": "Hi?", "response_a": "Hello", "response_b": "Hello"}))

    with pytest.raises(CommandError, match="two different"):
        call_command("seed_demo", "--pairs", str(same), stdout=io.StringIO())
    assert not User.objects.exists()
    assert not Campaign.objects.exists()


def test_it_starts_the_live_campaigns_and_skips_them_on_request(
    db, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        seed()
    judge = Campaign.objects.get(name="Demo: infomax with the simulated judge")
    human = Campaign.objects.get(name="Demo: live generation for annotators")
    for campaign in (judge, human):
        assert campaign.state == CampaignState.RUNNING and campaign.runs_rounds
        assert campaign.prompts.filter(split="eval").exists()
    assert human.memberships.filter(user__username="annotator").exists()
    assert not judge.memberships.exists()
    # Mixed: the annotator and the oracle label every pair, so the agreement page has
    # kappa and position bias from the first labels on.
    assert (human.feedback_mode, human.mixed_fraction) == ("mixed", 1.0)
    assert human.judge_config["kind"] == "oracle"
    pairs = Campaign.objects.get(name="Demo: helpful answers")
    assert "no model and no rounds" in pairs.description and not pairs.runs_rounds
    assert len(callbacks) == 2  # each start asks a worker to open the first round


def test_no_live_seeds_only_the_pairs_campaign(db):
    seed("--no-live")
    assert list(Campaign.objects.values_list("name", flat=True)) == [DEMO_CAMPAIGN]
