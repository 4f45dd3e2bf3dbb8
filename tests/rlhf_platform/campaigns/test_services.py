from __future__ import annotations

import pytest

from rlhf_platform.campaigns.models import Campaign, CampaignState, Prompt
from rlhf_platform.campaigns.selectors import campaigns_visible_to, get_campaign_for_user
from rlhf_platform.campaigns.services import campaign_create, campaign_set_state, prompts_import
from rlhf_platform.errors import Conflict, InvalidInput, NotFound, PermissionDenied

pytestmark = pytest.mark.django_db


def test_create_makes_a_draft_campaign_with_its_budget(researcher):
    campaign = campaign_create(owner=researcher, name="c1", label_cap=100)
    assert campaign.state == CampaignState.DRAFT and campaign.budget.label_cap == 100


def test_an_annotator_cannot_create_a_campaign(annotator):
    with pytest.raises(PermissionDenied):
        campaign_create(owner=annotator, name="nope")
    assert not Campaign.objects.exists()


def test_a_duplicate_name_is_refused(researcher):
    campaign_create(owner=researcher, name="dup")
    with pytest.raises(Conflict) as exc:
        campaign_create(owner=researcher, name="dup")
    assert exc.value.code == "name_taken"


@pytest.mark.parametrize(
    "actions,final",
    [
        (["start"], "running"),
        (["start", "pause"], "paused"),
        (["start", "pause", "resume"], "running"),
        (["finish"], "finished"),
    ],
)
def test_state_actions_follow_the_machine(researcher, actions, final):
    campaign = campaign_create(owner=researcher, name="sm")
    for action in actions:
        campaign_set_state(campaign=campaign, action=action)
    assert campaign.state == final


@pytest.mark.parametrize("actions", [["pause"], ["start", "start"], ["finish", "resume"]])
def test_invalid_transitions_are_refused(researcher, actions):
    campaign = campaign_create(owner=researcher, name="bad")
    with pytest.raises(Conflict) as exc:
        for action in actions:
            campaign_set_state(campaign=campaign, action=action)
    assert exc.value.code == "invalid_transition"


def test_visibility_follows_membership(
    campaign, foreign_campaign, annotator, outsider, admin_user, researcher
):
    assert list(campaigns_visible_to(annotator)) == [campaign]
    assert list(campaigns_visible_to(outsider)) == [foreign_campaign]
    assert set(campaigns_visible_to(admin_user)) == {campaign, foreign_campaign}
    with pytest.raises(NotFound):
        get_campaign_for_user(annotator, foreign_campaign.pk)
    with pytest.raises(PermissionDenied):
        get_campaign_for_user(annotator, campaign.pk, manage=True)
    assert get_campaign_for_user(researcher, campaign.pk, manage=True) == campaign


class TestPromptImport:
    def test_jsonl_rows_are_imported_with_split_reference_and_messages(self, researcher):
        c = campaign_create(owner=researcher, name="imp")
        content = "\n".join(
            [
                '{"prompt": "What is 2+2?", "reference": "4", "split": "eval"}',
                "",
                '{"messages": [{"role": "user", "content": "Hi there"}], "metadata": {"kind": "chat"}}',
            ]
        )
        prompts = prompts_import(campaign=c, content=content, fmt="jsonl")
        assert len(prompts) == 2
        first, second = Prompt.objects.filter(campaign=c).order_by("id")
        assert (first.split, first.reference) == ("eval", "4")
        assert (
            second.text == "Hi there"
            and second.metadata == {"kind": "chat"}
            and second.split == "train"
        )

    def test_csv_rows_are_imported(self, researcher):
        c = campaign_create(owner=researcher, name="csv")
        content = 'prompt,split,reference\n"Explain, briefly, DNS",train,\nName a prime,eval,7\n'
        prompts_import(campaign=c, content=content, fmt="csv")
        assert list(Prompt.objects.filter(campaign=c).values_list("text", "split")) == [
            ("Explain, briefly, DNS", "train"),
            ("Name a prime", "eval"),
        ]

    def test_bad_jsonl_rows_are_reported_by_line_and_nothing_is_imported(self, researcher):
        c = campaign_create(owner=researcher, name="badjson")
        content = '{"prompt": "ok"}\n{"prompt": \n{"prompt": "x", "split": "test"}\n{"text": ""}\n'
        with pytest.raises(InvalidInput) as exc:
            prompts_import(campaign=c, content=content, fmt="jsonl")
        assert exc.value.code == "import_invalid"
        assert [e["line"] for e in exc.value.details] == [2, 3, 4]
        assert "split" in exc.value.details[1]["error"]
        assert not Prompt.objects.exists()

    def test_bad_csv_rows_are_reported_by_line(self, researcher):
        c = campaign_create(owner=researcher, name="badcsv")
        content = "prompt,split\ngood,train\n,train\nfine,holdout\n"
        with pytest.raises(InvalidInput) as exc:
            prompts_import(campaign=c, content=content, fmt="csv")
        assert [e["line"] for e in exc.value.details] == [3, 4]
        assert not Prompt.objects.exists()

    def test_a_csv_without_a_prompt_column_is_refused(self, researcher):
        c = campaign_create(owner=researcher, name="nohead")
        with pytest.raises(InvalidInput):
            prompts_import(campaign=c, content="question\nwhat\n", fmt="csv")

    def test_an_unknown_format_is_refused(self, researcher):
        c = campaign_create(owner=researcher, name="fmt")
        with pytest.raises(InvalidInput) as exc:
            prompts_import(campaign=c, content="x", fmt="xml")
        assert exc.value.code == "invalid_format"
