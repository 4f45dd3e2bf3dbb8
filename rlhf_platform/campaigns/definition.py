"""The one definition of a campaign's settings, shared by the API (``POST /campaigns/``),
spec files (``manage.py campaign_create``, the demo) and the "New campaign" page.

Each of them turns its input into a flat dict of these fields and validates it here;
:func:`campaign_validate` gives either the clean values or every error per field, and
:func:`rlhf_platform.campaigns.services.campaign_create` then writes the campaign and its
budget in one transaction, or nothing.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from ml_worker.core.campaign_config import policy_config_problem, reward_config_problem
from rlhf_platform import limits
from rlhf_platform.campaigns.models import AcquisitionRule, Algorithm, FeedbackMode

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

#: The judge kinds a worker can build (``ml_worker.core.judges.base.JUDGE_KINDS``, which the
#: web process does not import; a test keeps the two equal).
JUDGE_KINDS = ("gemini", "openai", "oracle")

BUDGET_FIELDS = (
    "label_cap",
    "cost_cap",
    "annotator_daily_cap",
    "human_label_cost",
    "judge_call_cost",
    "judge_token_cost",
)


class JsonObjectField(serializers.DictField):
    """A JSON object to store in a ``JSONField``: refuses U+0000 and lone surrogates in any
    key or string (``limits.value_problem``), which PostgreSQL's jsonb cannot hold (the
    insert would be a server error)."""

    def to_internal_value(self, data: dict[str, object]) -> dict[str, object]:
        value = super().to_internal_value(data)
        problem = limits.value_problem(value)
        if problem:
            raise serializers.ValidationError(f"The object {problem}.")
        return value


class CampaignDefinition(serializers.Serializer[None]):  # validates input, has no instance
    """Every setting of a new campaign; omitted ones take the model defaults."""

    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    guidelines = serializers.CharField(
        required=False, allow_blank=True, help_text="Shown to annotators beside each pair."
    )
    algorithm = serializers.ChoiceField(choices=Algorithm.choices, required=False)
    feedback_mode = serializers.ChoiceField(choices=FeedbackMode.choices, required=False)
    acquisition_rule = serializers.ChoiceField(choices=AcquisitionRule.choices, required=False)
    prompts_per_round = serializers.IntegerField(min_value=1, max_value=INT32_MAX, required=False)
    responses_per_prompt = serializers.IntegerField(
        min_value=2, max_value=INT32_MAX, required=False
    )
    labels_per_comparison = serializers.IntegerField(
        min_value=1, max_value=32767, required=False, help_text="Overlap."
    )
    seed = serializers.IntegerField(min_value=-INT64_MAX - 1, max_value=INT64_MAX, required=False)
    max_rounds = serializers.IntegerField(
        min_value=1,
        max_value=INT32_MAX,
        required=False,
        allow_null=True,
        help_text="Stop after this many rounds (empty: until the budget ends).",
    )
    eval_every = serializers.IntegerField(
        min_value=0,
        max_value=INT32_MAX,
        required=False,
        help_text="Evaluate the policy every N rounds (0: never).",
    )
    periodic_tau = serializers.IntegerField(
        min_value=1,
        max_value=INT32_MAX,
        required=False,
        help_text="Periodic algorithm: refit everything every tau rounds.",
    )
    round_deadline_seconds = serializers.IntegerField(
        min_value=1,
        max_value=INT32_MAX,
        required=False,
        help_text="A labeling round closes at this deadline.",
    )
    mixed_fraction = serializers.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        help_text="Mixed feedback: share of comparisons sent to the judge too.",
    )
    judge_config = JsonObjectField(required=False)
    policy_config = JsonObjectField(required=False)
    reward_config = JsonObjectField(required=False)

    label_cap = serializers.IntegerField(
        min_value=0, max_value=INT32_MAX, required=False, allow_null=True
    )
    cost_cap = serializers.DecimalField(
        max_digits=12, decimal_places=4, min_value=0, required=False, allow_null=True
    )
    annotator_daily_cap = serializers.IntegerField(
        min_value=0, max_value=INT32_MAX, required=False, allow_null=True
    )
    human_label_cost = serializers.DecimalField(
        max_digits=12, decimal_places=6, min_value=0, required=False
    )
    judge_call_cost = serializers.DecimalField(
        max_digits=12, decimal_places=6, min_value=0, required=False
    )
    judge_token_cost = serializers.DecimalField(
        max_digits=14, decimal_places=10, min_value=0, required=False
    )

    def validate_policy_config(self, value: dict[str, Any]) -> dict[str, Any]:
        problem = policy_config_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_reward_config(self, value: dict[str, Any]) -> dict[str, Any]:
        problem = reward_config_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        problems = judge_problems(
            attrs.get("feedback_mode", FeedbackMode.HUMAN),
            attrs.get("judge_config") or {},
            attrs.get("mixed_fraction", 0.0),
        )
        if problems:
            raise serializers.ValidationError(problems)
        return attrs


#: The campaign's own settings (the model's fields), in definition order; the rest of the
#: definition is the budget (:data:`BUDGET_FIELDS`).
CAMPAIGN_SETTINGS = tuple(n for n in CampaignDefinition._declared_fields if n not in BUDGET_FIELDS)
#: Every setting of the definition: what the API accepts, a spec file holds (budget ones
#: under ``budget:``) and ``campaign_create`` takes.
DEFINITION_FIELDS = tuple(CampaignDefinition._declared_fields)


def judge_problems(mode: str, judge: dict[str, Any], share: float | None) -> dict[str, list[str]]:
    """What a worker would otherwise find only when the first round fails: a judge or mixed
    campaign needs a judge it can build, and a mixed one a share above 0 (``share`` None:
    unknown, not checked)."""
    problems: dict[str, list[str]] = {}
    if judge and judge.get("kind") not in JUDGE_KINDS:
        problems["judge_config"] = [
            f"Name the judge's kind: one of {', '.join(JUDGE_KINDS)} (got {judge.get('kind')!r})."
        ]
    elif not judge and mode != FeedbackMode.HUMAN:
        problems["judge_config"] = [f"A {mode} campaign needs a judge (judge_config.kind)."]
    if mode == FeedbackMode.MIXED and share is not None and not share > 0:
        problems["mixed_fraction"] = [
            "A mixed campaign sends a share above 0 of its pairs to the judge."
        ]
    return problems


def campaign_validate(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """``(clean values, {})`` or ``({}, {field: [messages]})`` for every bad field."""
    serializer = CampaignDefinition(data=data)
    if serializer.is_valid():
        return dict(serializer.validated_data), {}
    errors: dict[str, list[str]] = {}
    for field, messages in serializer.errors.items():
        if isinstance(messages, dict):  # a nested dict field: flatten its messages
            messages = [f"{k}: {m}" for k, ms in messages.items() for m in ms]
        errors["form" if field == "non_field_errors" else field] = [str(m) for m in messages]
    # Field errors stop DRF before ``validate``: check the judge rules on the raw values too,
    # so that a form shows every problem at once.
    judge = data.get("judge_config")
    try:
        share: float | None = float(data.get("mixed_fraction") or 0)
    except (TypeError, ValueError):
        share = None
    for field, messages in judge_problems(
        str(data.get("feedback_mode") or FeedbackMode.HUMAN),
        judge if isinstance(judge, dict) else {},
        share,
    ).items():
        errors.setdefault(field, messages)
    return {}, errors
