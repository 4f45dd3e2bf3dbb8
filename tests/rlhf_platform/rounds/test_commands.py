from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.rounds.models import RoundState
from tests.rlhf_platform.rounds.conftest import EVAL, TRAIN

pytestmark = pytest.mark.django_db

SPEC = {
    "name": "cli-campaign",
    "algorithm": "online",
    "acquisition_rule": "uniform",
    "feedback_mode": "judge",
    "prompts_per_round": 3,
    "responses_per_prompt": 2,
    "max_rounds": 5,
    "policy_config": {"backend": "tiny", "max_new_tokens": 6, "eval_prompts": 2},
    "reward_config": {
        "num_particles": 4,
        "point_hidden": [8],
        "prior_hidden": [4],
        "diff_hidden": [4],
    },
    "judge_config": {"kind": "oracle", "encoder": "hashing"},
    "budget": {"label_cap": 100, "judge_call_cost": 0.002},
    "prompts": "prompts.jsonl",
}


def _write(tmp_path, spec, suffix=".json"):
    (tmp_path / "prompts.jsonl").write_text(
        "\n".join(json.dumps({"prompt": p}) for p in TRAIN)
        + "\n"
        + "\n".join(json.dumps({"prompt": p, "split": "eval"}) for p in EVAL)
    )
    path = tmp_path / f"spec{suffix}"
    path.write_text(json.dumps(spec))
    return path


def test_create_run_and_show_a_campaign_from_the_command_line(tmp_path, researcher, annotator):
    path = _write(tmp_path, SPEC | {"members": ["anna"]})
    out = StringIO()
    call_command("campaign_create", str(path), owner="rita", start=True, stdout=out)
    campaign = Campaign.objects.get(name="cli-campaign")
    assert campaign.state == "running" and campaign.budget.label_cap == 100
    assert campaign.prompts.count() == len(TRAIN) + len(EVAL)
    assert campaign.memberships.filter(user=annotator).exists()
    call_command("run_rounds", "cli-campaign", rounds=2, stdout=out, stderr=StringIO())
    assert list(campaign.rounds.filter(state=RoundState.DONE).values_list("index", flat=True)) == [
        0,
        1,
    ]
    status = StringIO()
    call_command("campaign_status", str(campaign.pk), stdout=status)
    text = status.getvalue()
    assert "labels 6 / 100" in text and "round   0 done" in text and "win " in text
    call_command("campaign_state", "cli-campaign", "pause", actor="rita", stdout=out)
    campaign.refresh_from_db()
    assert campaign.state == "paused"
    with pytest.raises(CommandError, match="is paused"):
        call_command("run_rounds", "cli-campaign", rounds=1, stdout=out)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"algorithmm": "online"}, "unknown key"),
        ({"budget": {"label_cap": 5, "cap": 1}}, "unknown budget key"),
        ({"prompts": "missing.jsonl"}, "cannot read"),
        ({"algorithm": "magic"}, "invalid spec"),
    ],
)
def test_a_bad_spec_is_refused_with_a_clear_message_and_nothing_created(
    tmp_path, researcher, change, message
):
    path = _write(tmp_path, SPEC | change)
    with pytest.raises(CommandError, match=message):
        call_command("campaign_create", str(path), owner="rita", stdout=StringIO())
    assert not Campaign.objects.exists()


def test_an_unknown_owner_is_refused(tmp_path, db):
    with pytest.raises(CommandError, match="--owner"):
        call_command(
            "campaign_create", str(_write(tmp_path, SPEC)), owner="nobody", stdout=StringIO()
        )
