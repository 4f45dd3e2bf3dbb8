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


# --- One definition, every interface derived from it -------------------------------------------


def test_every_interface_takes_its_fields_from_the_definition():
    from rlhf_platform.api.campaigns import CampaignDetailOutputSerializer, CampaignListCreateApi
    from rlhf_platform.budgets.models import Budget
    from rlhf_platform.campaigns.definition import (
        BUDGET_FIELDS,
        CAMPAIGN_SETTINGS,
        DEFINITION_FIELDS,
    )
    from rlhf_platform.campaigns.specs import BUDGET_KEYS, CAMPAIGN_KEYS

    assert set(DEFINITION_FIELDS) == set(CAMPAIGN_SETTINGS) | set(BUDGET_FIELDS)
    # The API accepts every setting and returns every setting.
    assert set(CampaignListCreateApi.CreateInputSerializer().fields) == set(DEFINITION_FIELDS)
    out = CampaignDetailOutputSerializer().fields
    assert set(CAMPAIGN_SETTINGS) <= set(out)
    assert set(out["budget"].fields) == set(BUDGET_FIELDS)
    # A spec file's keys: the campaign's at the top, the budget's under ``budget:``.
    assert (CAMPAIGN_KEYS, BUDGET_KEYS) == (set(CAMPAIGN_SETTINGS), set(BUDGET_FIELDS))
    # Every setting is stored: a field of the campaign or of its budget.
    assert set(CAMPAIGN_SETTINGS) <= {f.name for f in Campaign._meta.get_fields()}
    assert set(BUDGET_FIELDS) <= {f.name for f in Budget._meta.get_fields()}


def test_campaign_create_takes_exactly_the_definitions_fields(researcher):
    from rlhf_platform.campaigns.services import campaign_create

    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['max_round'\]"):
        campaign_create(owner=researcher, name="Typo", max_round=3)
    campaign = campaign_create(
        owner=researcher, name="All", max_rounds=3, judge_token_cost="0.5", label_cap=4
    )
    assert campaign.max_rounds == 3 and campaign.budget.label_cap == 4


BAD_CONFIGS = [
    ("policy_config", {"lr": 0.001}, "policy_config.backend must be"),
    ("policy_config", {"backend": "gpt"}, "policy_config.backend must be"),
    ("policy_config", {"backend": "tiny", "top_kk": 5}, "unknown policy_config key(s): ['top_kk']"),
    ("policy_config", {"backend": "hf"}, "policy_config.path is required"),
    ("policy_config", {"backend": "tiny", "max_new_tokens": "many"}, "must be a whole number"),
    ("reward_config", {"particles": 10}, "unknown reward_config key(s): ['particles']"),
    ("reward_config", {"num_particles": 0}, "num_particles must be >= 1"),
    ("reward_config", {"point_hidden": "wide"}, "a list of positive whole numbers"),
    ("reward_config", {"feature_dim": 8}, "taken from the policy's backbone"),
]


@pytest.mark.parametrize(("field", "config", "words"), BAD_CONFIGS)
def test_the_api_refuses_a_config_no_worker_could_build(db, researcher, field, config, words):
    client = APIClient()
    client.force_authenticate(researcher)
    response = client.post("/api/v1/campaigns/", {"name": "N", field: config}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "validation_error" and body["message"]
    assert words in " ".join(body["details"][field])
    assert not Campaign.objects.filter(name="N").exists()


@pytest.mark.parametrize(("field", "config", "words"), BAD_CONFIGS[:2] + BAD_CONFIGS[5:6])
def test_a_spec_and_the_service_refuse_it_too(researcher, field, config, words):
    from rlhf_platform.campaigns.services import campaign_create

    with pytest.raises(InvalidInput, match=r"invalid spec: " + field) as spec_error:
        campaign_create_from_spec(
            owner=researcher, spec={"name": "N", field: config}, base_dir=Path(".")
        )
    assert spec_error.value.code == "invalid_spec"
    # The admin's form reaches the service without the definition's serializer.
    with pytest.raises(InvalidInput) as service_error:
        campaign_create(owner=researcher, name="N", **{field: config})
    assert service_error.value.code == f"invalid_{field}"
    assert words in service_error.value.message
    assert not Campaign.objects.filter(name="N").exists()


def test_valid_configs_pass():
    for policy, reward in (
        ({}, {}),
        ({"backend": "tiny", "max_new_tokens": 6, "eval_prompts": 2}, {"num_particles": 4}),
        ({"backend": "pool", "path": "var/pool", "lr": 0.01}, {"point_hidden": [8, 8]}),
        ({"backend": "smollm2", "top_k": 5, "temperature": 0.7}, {"bootstrap": "bernoulli"}),
    ):
        values, errors = campaign_validate(
            {"name": "N", "policy_config": policy, "reward_config": reward}
        )
        assert errors == {}, (policy, reward, errors)


def test_reward_config_rater_weighting_is_checked():
    from rlhf_platform.campaigns.definition import campaign_validate

    _, errors = campaign_validate({"name": "w", "reward_config": {"rater_weighting": "on"}})
    assert "rater_weighting" in errors["reward_config"][0]
    clean, errors = campaign_validate(
        {"name": "w", "reward_config": {"rater_weighting": "weighted"}}
    )
    assert not errors and clean["reward_config"] == {"rater_weighting": "weighted"}
