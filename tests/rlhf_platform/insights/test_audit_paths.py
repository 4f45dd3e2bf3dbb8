"""Every change of a campaign's state or caps goes through the service that writes the audit
entry, whichever interface asks: the API, the command line, the admin, a spec file and the
demo seed (tests/rlhf_platform/test_seed_demo.py)."""

from __future__ import annotations

import ast
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from rlhf_platform.campaigns.models import Campaign, CampaignState
from rlhf_platform.campaigns.specs import campaign_create_from_spec
from rlhf_platform.insights.models import AuditEntry
from rlhf_platform.insights.services import CAP_FIELDS
from tests.conftest import make_campaign

ROOT = Path(__file__).resolve().parents[3]

# The modules that face a user: they parse, check access and call a service.
INTERFACES = sorted(
    {
        *ROOT.glob("rlhf_platform/api/*.py"),
        *ROOT.glob("annotator_ui/*.py"),
        *ROOT.glob("rlhf_platform/*/management/commands/*.py"),
        *ROOT.glob("rlhf_platform/*/admin.py"),
        *ROOT.glob("rlhf_platform/*/*views.py"),
        ROOT / "rlhf_platform/campaigns/specs.py",
        ROOT / "rlhf_platform/insights/campaign_form.py",
    }
)
GUARDED = {"state", *CAP_FIELDS}


def _bypasses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "campaign_set_state":
                found.append(f"{path.name}:{node.lineno} calls campaign_set_state")
            # A queryset's UPDATE (``X.objects.filter(...).update(state=...)``), not a dict's.
            queryset = isinstance(func, ast.Attribute) and (
                "objects" in ast.unparse(func.value) or isinstance(func.value, ast.Call)
            )
            if name == "update" and queryset and GUARDED & {k.arg for k in node.keywords}:
                found.append(
                    f"{path.name}:{node.lineno} updates {GUARDED & {k.arg for k in node.keywords}}"
                )
        if isinstance(node, ast.ImportFrom) and any(
            a.name == "campaign_set_state" for a in node.names
        ):
            found.append(f"{path.name}:{node.lineno} imports campaign_set_state")
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr in CAP_FIELDS:
                    found.append(f"{path.name}:{node.lineno} assigns .{target.attr}")
    return found


def test_the_guard_sees_the_interfaces():
    names = {str(p.relative_to(ROOT)) for p in INTERFACES}
    for expected in (
        "rlhf_platform/api/campaigns.py",
        "rlhf_platform/campaigns/admin.py",
        "rlhf_platform/budgets/admin.py",
        "rlhf_platform/campaigns/management/commands/campaign_state.py",
        "rlhf_platform/campaigns/management/commands/seed_demo.py",
        "rlhf_platform/insights/views.py",
        "annotator_ui/views.py",
    ):
        assert expected in names


def test_the_guard_catches_a_bypass(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from rlhf_platform.campaigns.services import campaign_set_state\n"
        "campaign_set_state(campaign=c, action='start')\n"
        "Campaign.objects.filter(pk=1).update(state='running')\n"
        "budget.label_cap = 3\n"
    )
    assert len(_bypasses(bad)) == 4


def test_no_interface_changes_state_or_caps_without_the_audited_service():
    found = [problem for path in INTERFACES for problem in _bypasses(path)]
    assert found == []


@pytest.mark.django_db
def test_the_api_writes_the_audit_entry(researcher):
    campaign = make_campaign(researcher, start=False)
    client = APIClient()
    client.force_authenticate(researcher)
    response = client.post(
        f"/api/v1/campaigns/{campaign.pk}/state/", {"action": "start"}, format="json"
    )
    assert response.status_code == 200, response.content
    entry = AuditEntry.objects.get(campaign=campaign)
    assert (entry.actor, entry.action, entry.before, entry.after) == (
        researcher,
        "start",
        {"state": "draft"},
        {"state": "running"},
    )


@pytest.mark.django_db
def test_a_refused_api_transition_writes_nothing(researcher):
    campaign = make_campaign(researcher, start=False)
    client = APIClient()
    client.force_authenticate(researcher)
    response = client.post(
        f"/api/v1/campaigns/{campaign.pk}/state/", {"action": "resume"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_the_command_line_needs_an_actor_and_logs_it(researcher, admin_user):
    campaign = make_campaign(researcher)
    with pytest.raises(CommandError, match="--actor"):
        call_command("campaign_state", str(campaign.pk), "pause", stdout=StringIO())
    with pytest.raises(CommandError, match="--actor: no user named 'nobody'"):
        call_command("campaign_state", str(campaign.pk), "pause", actor="nobody", stdout=StringIO())
    call_command("campaign_state", str(campaign.pk), "pause", actor="ada", stdout=StringIO())
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.PAUSED
    assert list(AuditEntry.objects.values_list("actor__username", "action")) == [("ada", "pause")]


@pytest.mark.django_db
def test_the_command_line_refuses_an_actor_who_does_not_manage_the_campaign(researcher, annotator):
    campaign = make_campaign(researcher)
    with pytest.raises(CommandError, match="permission_denied"):
        call_command("campaign_state", str(campaign.pk), "pause", actor="anna", stdout=StringIO())
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.RUNNING
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_a_spec_started_on_import_is_logged_as_its_owner(researcher, tmp_path):
    campaign, _ = campaign_create_from_spec(
        owner=researcher,
        spec={"name": "From a spec", "algorithm": "offline"},
        base_dir=tmp_path,
        start=True,
    )
    assert campaign.state == CampaignState.RUNNING
    assert list(AuditEntry.objects.values_list("actor__username", "action")) == [("rita", "start")]


@pytest.mark.django_db
def test_the_admin_changes_state_only_through_its_audited_actions(researcher, admin_user):
    campaign = make_campaign(researcher, start=False)
    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    assert page.status_code == 200
    assert b'name="state"' not in page.content  # read-only: no input to post
    response = client.post(
        "/admin/campaigns/campaign/",
        {"action": "start_campaigns", "_selected_action": [campaign.pk]},
    )
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.RUNNING
    entry = AuditEntry.objects.get(campaign=campaign)
    assert (entry.actor, entry.action) == (admin_user, "start")


@pytest.mark.django_db
def test_the_admin_shows_caps_read_only(researcher, admin_user):
    campaign = make_campaign(researcher, label_cap=10)
    client = Client()
    client.force_login(admin_user)
    for url in (
        f"/admin/campaigns/campaign/{campaign.pk}/change/",
        f"/admin/budgets/budget/{campaign.budget.pk}/change/",
    ):
        page = client.get(url)
        assert page.status_code == 200
        for cap in CAP_FIELDS:
            assert f'name="{cap}"'.encode() not in page.content
            assert f'name="budget-0-{cap}"'.encode() not in page.content
    assert Campaign.objects.get(pk=campaign.pk).budget.label_cap == 10
