from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from rlhf_platform.accounts.models import Role
from rlhf_platform.budgets.models import Budget
from rlhf_platform.campaigns.models import Campaign, CampaignState, Membership, Prompt, Split
from rlhf_platform.campaigns.services import campaign_add_member
from tests.conftest import make_campaign, make_user
from tests.rlhf_platform.api.helpers import V1, assert_error, writes_nothing

pytestmark = pytest.mark.django_db

CAMPAIGNS = f"{V1}/campaigns/"


def url(campaign, suffix: str = "") -> str:
    return f"{CAMPAIGNS}{campaign.pk}/{suffix}"


class TestList:
    def test_an_annotator_sees_the_campaigns_they_belong_to(
        self, client_for, annotator, campaign, foreign_campaign
    ):
        response = client_for(annotator).get(CAMPAIGNS)
        assert response.status_code == 200
        body = response.json()
        assert body["count"] == 1
        assert [c["name"] for c in body["results"]] == ["Helpfulness"]
        assert body["results"][0]["owner"] == "rita"

    def test_a_researcher_sees_own_and_member_campaigns(self, client_for, researcher, campaign):
        rex = make_user("rex", Role.RESEARCHER)
        member_of = make_campaign(rex, name="Rex's, with Rita", pairs=0, members=(researcher,))
        make_campaign(rex, name="Rex's alone", pairs=0)
        names = {c["name"] for c in client_for(researcher).get(CAMPAIGNS).json()["results"]}
        assert names == {campaign.name, member_of.name}

    def test_an_admin_sees_every_campaign(self, client_for, admin_user, campaign, foreign_campaign):
        assert client_for(admin_user).get(CAMPAIGNS).json()["count"] == 2

    def test_it_paginates_with_limit_and_offset(self, client_for, researcher):
        for i in range(3):
            make_campaign(researcher, name=f"c{i}", pairs=0)
        body = client_for(researcher).get(CAMPAIGNS, {"limit": 2, "offset": 1}).json()
        assert body["count"] == 3 and len(body["results"]) == 2
        assert body["previous"] is not None and body["next"] is None

    def test_its_query_count_does_not_grow_with_the_campaigns(
        self, client_for, researcher, django_assert_max_num_queries
    ):
        for i in range(10):
            make_campaign(researcher, name=f"c{i}", pairs=0)
        client = client_for(researcher)
        with django_assert_max_num_queries(4):
            assert len(client.get(CAMPAIGNS).json()["results"]) == 10


class TestCreate:
    def test_a_researcher_creates_a_draft_campaign_with_its_budget(self, client_for, researcher):
        payload = {
            "name": "Harmlessness",
            "description": "Which answer is safer?",
            "guidelines": "Prefer the safer answer.",
            "algorithm": "online",
            "feedback_mode": "mixed",
            "acquisition_rule": "double_thompson",
            "prompts_per_round": 32,
            "responses_per_prompt": 8,
            "labels_per_comparison": 2,
            "seed": 7,
            "judge_config": {"kind": "oracle"},
            "mixed_fraction": 0.5,
            "policy_config": {"backend": "tiny", "lr": 0.001},
            "reward_config": {"num_particles": 10},
            "max_rounds": 12,
            "eval_every": 3,
            "periodic_tau": 5,
            "round_deadline_seconds": 600,
            "label_cap": 500,
            "cost_cap": "25.5",
            "annotator_daily_cap": 100,
            "human_label_cost": "0.05",
            "judge_call_cost": "0.001",
            "judge_token_cost": "0.0000002",
        }
        response = client_for(researcher).post(CAMPAIGNS, payload, format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        campaign = Campaign.objects.get(name="Harmlessness")
        assert body["id"] == campaign.pk and body["state"] == "draft"
        assert body["owner"] == "rita" and campaign.owner == researcher
        for field in [
            "description",
            "guidelines",
            "algorithm",
            "feedback_mode",
            "acquisition_rule",
            "prompts_per_round",
            "responses_per_prompt",
            "labels_per_comparison",
            "seed",
            "judge_config",
            "policy_config",
            "reward_config",
            "max_rounds",
            "eval_every",
            "periodic_tau",
            "round_deadline_seconds",
            "mixed_fraction",
        ]:
            assert body[field] == payload[field] == getattr(campaign, field), field
        budget = Budget.objects.get(campaign=campaign)
        assert (budget.label_cap, budget.cost_cap, budget.annotator_daily_cap) == (
            500,
            Decimal("25.5"),
            100,
        )
        assert budget.human_label_cost == Decimal("0.05")
        assert budget.judge_call_cost == Decimal("0.001")
        assert budget.judge_token_cost == Decimal("0.0000002")
        assert body["budget"]["label_cap"] == 500
        assert Decimal(body["budget"]["judge_token_cost"]) == Decimal("0.0000002")

    def test_omitted_fields_take_the_defaults(self, client_for, researcher):
        response = client_for(researcher).post(CAMPAIGNS, {"name": "Minimal"}, format="json")
        assert response.status_code == 201
        body = response.json()
        assert body["algorithm"] == "infomax" and body["responses_per_prompt"] == 16
        assert body["budget"]["label_cap"] is None

    def test_an_admin_may_create(self, client_for, admin_user):
        response = client_for(admin_user).post(CAMPAIGNS, {"name": "Admin's"}, format="json")
        assert response.status_code == 201

    @pytest.mark.parametrize("payload", [{"name": "Mine"}, {"bogus": 1}])
    def test_an_annotator_may_not_create(self, client_for, annotator, payload):
        with writes_nothing():
            response = client_for(annotator).post(CAMPAIGNS, payload, format="json")
        assert_error(response, 403, "permission_denied")

    def test_a_taken_name_conflicts(self, client_for, researcher, campaign):
        with writes_nothing():
            response = client_for(researcher).post(
                CAMPAIGNS, {"name": campaign.name}, format="json"
            )
        assert_error(response, 409, "name_taken")

    @pytest.mark.parametrize(
        "payload,field",
        [
            ({}, "name"),
            ({"name": "x" * 201}, "name"),
            ({"name": "k", "responses_per_prompt": 1}, "responses_per_prompt"),
            ({"name": "k", "labels_per_comparison": 0}, "labels_per_comparison"),
            ({"name": "k", "algorithm": "magic"}, "algorithm"),
            ({"name": "k", "feedback_mode": "telepathy"}, "feedback_mode"),
            ({"name": "k", "judge_config": [1, 2]}, "judge_config"),
            ({"name": "k", "cost_cap": "-1"}, "cost_cap"),
            ({"name": "k", "seed": 2**64}, "seed"),
        ],
    )
    def test_invalid_fields_are_refused(self, client_for, researcher, payload, field):
        with writes_nothing():
            response = client_for(researcher).post(CAMPAIGNS, payload, format="json")
        body = assert_error(response, 400, "validation_error")
        assert field in body["details"]

    def test_malformed_json_is_refused(self, client_for, researcher):
        with writes_nothing():
            response = client_for(researcher).post(
                CAMPAIGNS, data='{"name": ', content_type="application/json"
            )
        assert_error(response, 400, "malformed_request")


class TestDetail:
    def test_a_member_sees_the_campaign(self, client_for, annotator, campaign):
        response = client_for(annotator).get(url(campaign))
        assert response.status_code == 200
        body = response.json()
        assert body["name"] == campaign.name and body["state"] == "running"
        assert body["budget"]["human_label_cost"] == "0.100000"

    def test_a_foreign_campaign_is_not_found_like_an_unknown_one(
        self, client_for, annotator, foreign_campaign
    ):
        client = client_for(annotator)
        body = assert_error(client.get(url(foreign_campaign)), 404, "not_found")
        assert client.get(f"{CAMPAIGNS}999999/").json() == body


class TestState:
    @pytest.mark.parametrize(
        "actions,final",
        [
            (["pause"], "paused"),
            (["pause", "resume"], "running"),
            (["finish"], "finished"),
        ],
    )
    def test_the_owner_changes_the_state(self, client_for, researcher, campaign, actions, final):
        client = client_for(researcher)
        for action in actions:
            response = client.post(url(campaign, "state/"), {"action": action}, format="json")
            assert response.status_code == 200
        assert response.json() == {"id": campaign.pk, "state": final}
        campaign.refresh_from_db()
        assert campaign.state == final

    def test_an_admin_starts_a_draft(self, client_for, admin_user, researcher):
        draft = make_campaign(researcher, name="draft", pairs=0, start=False)
        response = client_for(admin_user).post(
            url(draft, "state/"), {"action": "start"}, format="json"
        )
        assert response.json()["state"] == "running"

    @pytest.mark.parametrize("action", ["start", "resume"])
    def test_an_invalid_transition_conflicts(self, client_for, researcher, campaign, action):
        with writes_nothing():
            response = client_for(researcher).post(
                url(campaign, "state/"), {"action": action}, format="json"
            )
        body = assert_error(response, 409, "invalid_transition")
        assert "running" in body["message"]

    def test_a_finished_campaign_stays_finished(self, client_for, researcher, campaign):
        client = client_for(researcher)
        client.post(url(campaign, "state/"), {"action": "finish"}, format="json")
        with writes_nothing():
            response = client.post(url(campaign, "state/"), {"action": "finish"}, format="json")
        assert_error(response, 409, "invalid_transition")

    def test_an_unknown_action_is_refused(self, client_for, researcher, campaign):
        with writes_nothing():
            response = client_for(researcher).post(
                url(campaign, "state/"), {"action": "explode"}, format="json"
            )
        assert_error(response, 400, "invalid_action")

    def test_a_member_annotator_may_not_change_it(self, client_for, annotator, campaign):
        with writes_nothing():
            response = client_for(annotator).post(
                url(campaign, "state/"), {"action": "pause"}, format="json"
            )
        assert_error(response, 403, "permission_denied")

    def test_a_member_researcher_who_is_not_the_owner_may_not(self, client_for, campaign):
        rex = make_user("rex", Role.RESEARCHER)
        campaign_add_member(campaign=campaign, user=rex)
        with writes_nothing():
            response = client_for(rex).post(
                url(campaign, "state/"), {"action": "pause"}, format="json"
            )
        assert_error(response, 403, "permission_denied")

    def test_another_researchers_campaign_is_not_found(self, client_for, campaign):
        rex = make_user("rex", Role.RESEARCHER)
        with writes_nothing():
            response = client_for(rex).post(
                url(campaign, "state/"), {"action": "pause"}, format="json"
            )
        assert_error(response, 404, "not_found")

    def test_a_foreign_campaign_is_not_found_for_an_annotator(
        self, client_for, annotator, foreign_campaign
    ):
        with writes_nothing():
            response = client_for(annotator).post(
                url(foreign_campaign, "state/"), {"action": "pause"}, format="json"
            )
        assert_error(response, 404, "not_found")

    def test_malformed_json_is_refused(self, client_for, researcher, campaign):
        with writes_nothing():
            response = client_for(researcher).post(
                url(campaign, "state/"), data="{", content_type="application/json"
            )
        assert_error(response, 400, "malformed_request")


class TestMembers:
    def test_the_owner_adds_a_member(self, client_for, researcher, outsider, campaign):
        response = client_for(researcher).post(
            url(campaign, "members/"), {"username": "olga"}, format="json"
        )
        assert response.status_code == 200
        body = response.json()
        assert body["username"] == "olga" and body["campaign_id"] == campaign.pk
        assert body["role"] == "annotator"
        assert client_for(outsider).get(url(campaign)).status_code == 200

    def test_adding_a_member_twice_changes_nothing(self, client_for, researcher, campaign):
        with writes_nothing():
            response = client_for(researcher).post(
                url(campaign, "members/"), {"username": "anna"}, format="json"
            )
        assert response.status_code == 200
        assert Membership.objects.filter(campaign=campaign, user__username="anna").count() == 1

    @pytest.mark.parametrize("username", ["nobody", ""])
    def test_an_unknown_user_is_refused(self, client_for, researcher, campaign, username):
        with writes_nothing():
            response = client_for(researcher).post(
                url(campaign, "members/"), {"username": username}, format="json"
            )
        if username:
            assert_error(response, 404, "user_not_found")
        else:
            assert_error(response, 400, "validation_error")

    def test_an_annotator_may_not_add_members(self, client_for, annotator, outsider, campaign):
        with writes_nothing():
            response = client_for(annotator).post(
                url(campaign, "members/"), {"username": "olga"}, format="json"
            )
        assert_error(response, 403, "permission_denied")

    def test_a_foreign_campaign_is_not_found(self, client_for, annotator, foreign_campaign):
        with writes_nothing():
            response = client_for(annotator).post(
                url(foreign_campaign, "members/"), {"username": "anna"}, format="json"
            )
        assert_error(response, 404, "not_found")


JSONL = "\n".join(
    [
        json.dumps({"prompt": "What is RLHF?"}),
        json.dumps({"prompt": "Held out", "split": "eval", "reference": "ref"}),
        "",
        json.dumps({"messages": [{"role": "user", "content": "Hi there"}]}),
    ]
)
CSV = 'prompt,split,metadata\nFirst,train,\nSecond,eval,"{""topic"": ""x""}"\n'
BAD_JSONL = "\n".join(
    [
        json.dumps({"prompt": "fine"}),
        "{not json",
        json.dumps({"prompt": "also fine"}),
        json.dumps({"prompt": ""}),
        json.dumps({"prompt": "bad split", "split": "test"}),
    ]
)


class TestPromptImport:
    def import_url(self, campaign) -> str:
        return url(campaign, "prompts/import/")

    def test_it_imports_jsonl_content(self, client_for, researcher, campaign):
        before = Prompt.objects.filter(campaign=campaign).count()
        response = client_for(researcher).post(
            self.import_url(campaign), {"format": "jsonl", "content": JSONL}, format="json"
        )
        assert response.status_code == 201
        assert response.json() == {"count": 3}
        new = Prompt.objects.filter(campaign=campaign).order_by("id")[before:]
        assert [p.text for p in new] == ["What is RLHF?", "Held out", "Hi there"]
        assert [p.split for p in new] == [Split.TRAIN, Split.EVAL, Split.TRAIN]

    def test_it_imports_csv_content(self, client_for, researcher, campaign):
        response = client_for(researcher).post(
            self.import_url(campaign), {"format": "csv", "content": CSV}, format="json"
        )
        assert response.json() == {"count": 2}
        assert Prompt.objects.get(campaign=campaign, text="Second").metadata == {"topic": "x"}

    @pytest.mark.parametrize(
        "name,content,count",
        [
            ("prompts.jsonl", JSONL.encode(), 3),
            ("prompts.csv", b"\xef\xbb\xbf" + CSV.encode(), 2),  # with a byte-order mark
        ],
    )
    def test_it_imports_an_uploaded_file(
        self, client_for, researcher, campaign, name, content, count
    ):
        upload = SimpleUploadedFile(name, content, content_type="text/plain")
        response = client_for(researcher).post(
            self.import_url(campaign), {"file": upload}, format="multipart"
        )
        assert response.status_code == 201, response.content
        assert response.json() == {"count": count}

    def test_an_explicit_format_overrides_the_file_name(self, client_for, researcher, campaign):
        upload = SimpleUploadedFile("prompts.txt", CSV.encode())
        response = client_for(researcher).post(
            self.import_url(campaign), {"file": upload, "format": "csv"}, format="multipart"
        )
        assert response.json() == {"count": 2}

    def test_bad_rows_are_listed_by_line_and_nothing_is_imported(
        self, client_for, researcher, campaign
    ):
        with writes_nothing():
            response = client_for(researcher).post(
                self.import_url(campaign), {"format": "jsonl", "content": BAD_JSONL}, format="json"
            )
        body = assert_error(response, 400, "import_invalid")
        assert [row["line"] for row in body["details"]] == [2, 4, 5]
        assert "invalid JSON" in body["details"][0]["error"]
        assert "line 2" in body["message"]

    def test_a_bad_csv_row_is_listed_by_line(self, client_for, researcher, campaign):
        content = "prompt,split\nok,train\nbad,nowhere\n"
        upload = SimpleUploadedFile("p.csv", content.encode())
        with writes_nothing():
            response = client_for(researcher).post(
                self.import_url(campaign), {"file": upload}, format="multipart"
            )
        body = assert_error(response, 400, "import_invalid")
        assert body["details"] == [{"line": 3, "error": body["details"][0]["error"]}]

    @pytest.mark.parametrize(
        "payload,status,code",
        [
            ({"format": "xml", "content": "<p/>"}, 400, "invalid_format"),
            ({"format": "jsonl", "content": "\n\n"}, 400, "import_empty"),
            ({"format": "csv", "content": "question\nwhy\n"}, 400, "import_invalid"),
            ({"format": "jsonl"}, 400, "validation_error"),
        ],
    )
    def test_bad_imports_are_refused(self, client_for, researcher, campaign, payload, status, code):
        with writes_nothing():
            response = client_for(researcher).post(
                self.import_url(campaign), payload, format="json"
            )
        assert_error(response, status, code)

    @pytest.mark.parametrize(
        "name,content,code",
        [
            ("prompts.jsonl", b"\xff\xfe{}", "invalid_encoding"),
            ("prompts.txt", b'{"prompt": "x"}', "invalid_format"),
        ],
    )
    def test_bad_files_are_refused(self, client_for, researcher, campaign, name, content, code):
        upload = SimpleUploadedFile(name, content)
        with writes_nothing():
            response = client_for(researcher).post(
                self.import_url(campaign), {"file": upload}, format="multipart"
            )
        assert_error(response, 400, code)

    def test_a_missing_file_is_a_validation_error(self, client_for, researcher, campaign):
        with writes_nothing():
            response = client_for(researcher).post(
                self.import_url(campaign), {"format": "csv"}, format="multipart"
            )
        body = assert_error(response, 400, "validation_error")
        assert "file" in body["details"]

    def test_an_oversize_file_is_refused(self, client_for, researcher, campaign, settings):
        settings.IMPORT_MAX_BYTES = 10
        upload = SimpleUploadedFile("p.jsonl", JSONL.encode())
        with writes_nothing():
            response = client_for(researcher).post(
                self.import_url(campaign), {"file": upload}, format="multipart"
            )
        assert_error(response, 413, "file_too_large")

    def test_oversize_content_is_refused(self, client_for, researcher, campaign, settings):
        settings.IMPORT_MAX_BYTES = 10
        with writes_nothing():
            response = client_for(researcher).post(
                self.import_url(campaign), {"format": "jsonl", "content": JSONL}, format="json"
            )
        assert_error(response, 413, "file_too_large")

    def test_malformed_json_is_refused(self, client_for, researcher, campaign):
        with writes_nothing():
            response = client_for(researcher).post(
                self.import_url(campaign), data='{"format": "jsonl', content_type="application/json"
            )
        assert_error(response, 400, "malformed_request")

    def test_a_member_annotator_may_not_import(self, client_for, annotator, campaign):
        with writes_nothing():
            response = client_for(annotator).post(
                self.import_url(campaign), {"format": "jsonl", "content": JSONL}, format="json"
            )
        assert_error(response, 403, "permission_denied")

    def test_a_foreign_campaign_is_not_found(self, client_for, annotator, foreign_campaign):
        with writes_nothing():
            response = client_for(annotator).post(
                self.import_url(foreign_campaign),
                {"format": "jsonl", "content": JSONL},
                format="json",
            )
        assert_error(response, 404, "not_found")


class TestProgress:
    def test_a_member_sees_progress_and_budget(self, client_for, annotator, researcher):
        c = make_campaign(researcher, name="p", pairs=4, label_cap=10, members=(annotator,))
        client = client_for(annotator)
        lease_id = client.post(url(c, "next/")).json()["lease_id"]
        client.post(
            f"{V1}/leases/{lease_id}/label/", {"choice": "B", "idempotency_key": "k"}, format="json"
        )
        response = client.get(url(c, "progress/"))
        assert response.status_code == 200
        body = response.json()
        assert body["campaign_id"] == c.pk and body["state"] == CampaignState.RUNNING
        assert body["progress"] == {
            "rounds": 0,
            "current_round": None,
            "comparisons": 4,
            "comparisons_open": 3,
            "comparisons_labeled": 1,
            "labels": 1,
            "prompts_train": 4,
            "prompts_eval": 0,
        }
        budget = body["budget"]
        assert budget["label_cap"] == 10 and budget["labels_spent"] == 1
        assert budget["labels_remaining"] == 9 and budget["cost_spent"] == "0.100000"
        assert budget["exhausted"] is False and budget["reason"] == ""

    def test_a_spent_budget_says_why(self, client_for, researcher, annotator):
        c = make_campaign(researcher, name="p", pairs=2, label_cap=0, members=(annotator,))
        budget = client_for(researcher).get(url(c, "progress/")).json()["budget"]
        assert budget["exhausted"] is True and "label cap" in budget["reason"]

    def test_the_owner_sees_progress(self, client_for, researcher, campaign):
        assert client_for(researcher).get(url(campaign, "progress/")).status_code == 200

    def test_a_foreign_campaign_is_not_found(self, client_for, annotator, foreign_campaign):
        assert_error(
            client_for(annotator).get(url(foreign_campaign, "progress/")), 404, "not_found"
        )
