"""The one campaign definition (rlhf_platform/campaigns/definition.py): what the API, spec
files and the "New campaign" page refuse alike, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from rest_framework.test import APIClient

from rlhf_platform.campaigns.definition import JUDGE_KINDS, campaign_validate
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.campaigns.specs import campaign_create_from_spec
from rlhf_platform.errors import InvalidInput

BAD = [
    ({"feedback_mode": "judge"}, "judge_config", "needs a judge"),
    ({"feedback_mode": "mixed", "mixed_fraction": 0.5}, "judge_config", "needs a judge"),
    ({"feedback_mode": "judge", "judge_config": {"name": "oracle"}}, "judge_config", "kind"),
    ({"feedback_mode": "judge", "judge_config": {"kind": "magic"}}, "judge_config", "'magic'"),
    (
        {"feedback_mode": "mixed", "judge_config": {"kind": "oracle"}},
        "mixed_fraction",
        "share above 0",
    ),
]


@pytest.mark.parametrize(("fields", "field", "words"), BAD)
def test_the_definition_refuses_a_judge_campaign_no_worker_could_run(fields, field, words):
    values, errors = campaign_validate({"name": "N", **fields})
    assert values == {} and words in " ".join(errors[field])


@pytest.mark.parametrize(("fields", "field", "words"), BAD)
def test_the_api_refuses_it_and_writes_nothing(db, researcher, fields, field, words):
    client = APIClient()
    client.force_authenticate(researcher)
    response = client.post("/api/v1/campaigns/", {"name": "N", **fields}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["details"]
    assert not Campaign.objects.filter(name="N").exists()


def test_a_spec_file_is_refused_the_same_way(researcher):
    spec = {"name": "N", "feedback_mode": "judge"}
    with pytest.raises(InvalidInput, match="judge_config: A judge campaign needs a judge"):
        campaign_create_from_spec(owner=researcher, spec=spec, base_dir=Path("."))
    assert not Campaign.objects.filter(name="N").exists()


def test_valid_judge_and_mixed_campaigns_pass():
    for fields in (
        {"feedback_mode": "judge", "judge_config": {"kind": "oracle"}},
        {"feedback_mode": "mixed", "judge_config": {"kind": "oracle"}, "mixed_fraction": 0.2},
        {"feedback_mode": "human"},
    ):
        values, errors = campaign_validate({"name": "N", **fields})
        assert errors == {} and values["name"] == "N"


def test_the_judge_kinds_are_the_workers():
    from ml_worker.core.judges.base import JUDGE_KINDS as WORKER_KINDS

    assert sorted(JUDGE_KINDS) == sorted(WORKER_KINDS)


def test_a_spec_file_takes_every_setting_of_the_definition(researcher):
    spec = {
        "name": "Every setting",
        "feedback_mode": "mixed",
        "mixed_fraction": 0.25,
        "judge_config": {"kind": "oracle"},
        "max_rounds": 3,
        "eval_every": 2,
        "periodic_tau": 5,
        "round_deadline_seconds": 600,
        "budget": {"label_cap": 100, "judge_token_cost": "0.000002"},
    }
    campaign, _ = campaign_create_from_spec(owner=researcher, spec=spec, base_dir=Path("."))
    assert (campaign.max_rounds, campaign.eval_every, campaign.periodic_tau) == (3, 2, 5)
    assert (campaign.round_deadline_seconds, campaign.mixed_fraction) == (600, 0.25)
    assert str(campaign.budget.judge_token_cost) == "0.0000020000"


def test_reward_config_rater_weighting_is_checked():
    from rlhf_platform.campaigns.definition import campaign_validate

    _, errors = campaign_validate({"name": "w", "reward_config": {"rater_weighting": "on"}})
    assert "rater_weighting" in errors["reward_config"][0]
    clean, errors = campaign_validate(
        {"name": "w", "reward_config": {"rater_weighting": "weighted"}}
    )
    assert not errors and clean["reward_config"] == {"rater_weighting": "weighted"}
