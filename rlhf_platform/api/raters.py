"""Rater endpoints (issue 20): the estimates of every rater of a campaign, exclusion, gold
pairs. For the campaign's owner and admins only (a rater's quality is not shown to other
annotators). Gold answers are never part of a response."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from ml_worker.core.choice import Choice
from rlhf_platform.api.common import (
    ApiView,
    StrictInputSerializer,
    enum_string_field,
    error_responses,
)
from rlhf_platform.campaigns.selectors import get_campaign_for_user
from rlhf_platform.errors import InvalidInput
from rlhf_platform.raters.selectors import raters_overview
from rlhf_platform.raters.services import gold_mark, gold_rate_set, rater_exclusion_set

TAG = ["raters"]
_MANAGE_403 = "`permission_denied` (a member who does not manage the campaign)"


class _IntervalField(serializers.ListField):
    def __init__(self, **kwargs):
        super().__init__(child=serializers.FloatField(), min_length=2, max_length=2, **kwargs)


@extend_schema_serializer(component_name="RaterRate")
class _RateSerializer(serializers.Serializer):
    n = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True)


@extend_schema_serializer(component_name="RaterGold")
class _GoldSerializer(serializers.Serializer):
    n = serializers.IntegerField(help_text="Gold pairs this rater answered.")
    correct = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    interval = _IntervalField(allow_null=True, help_text="Wilson 95% interval.")


@extend_schema_serializer(component_name="RaterFlag")
class _FlagSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=["spam", "position", "too_fast"])
    reason = serializers.CharField()


@extend_schema_serializer(component_name="RaterTimeline")
class _TimelineSerializer(serializers.Serializer):
    start = serializers.DateTimeField(allow_null=True)
    end = serializers.DateTimeField(allow_null=True)
    buckets = serializers.IntegerField()


@extend_schema_serializer(component_name="Rater")
class _RaterSerializer(serializers.Serializer):
    rater = serializers.CharField(help_text="`user:<id>` or `judge:<name>`.")
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["human", "judge"])
    labels = serializers.IntegerField()
    gold = _GoldSerializer()
    agreement = _RateSerializer(help_text="Same answer as another rater on the same pair.")
    judge_agreement = _RateSerializer(help_text="Same answer as the judge on the same pair.")
    reliability = serializers.FloatField(
        allow_null=True, help_text="max(0, 2 * preference accuracy - 1); 0 is a coin."
    )
    reliability_interval = _IntervalField(allow_null=True)
    accuracy = serializers.FloatField(allow_null=True)
    first_share = serializers.FloatField(allow_null=True)
    first_share_interval = _IntervalField(allow_null=True)
    position_bias = serializers.FloatField(allow_null=True)
    median_seconds = serializers.FloatField(allow_null=True)
    flags = _FlagSerializer(many=True)
    excluded = serializers.BooleanField()
    exclusion_reason = serializers.CharField()
    labels_over_time = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="Labels in each of the campaign's `timeline.buckets` equal time spans.",
    )


class CampaignRatersApi(ApiView):
    @extend_schema_serializer(component_name="CampaignRaters")
    class OutputSerializer(serializers.Serializer):
        campaign = serializers.IntegerField()
        gold_rate = serializers.FloatField()
        gold_pairs = serializers.IntegerField()
        fitted_at = serializers.DateTimeField(allow_null=True)
        labels_fitted = serializers.IntegerField()
        timeline = _TimelineSerializer(help_text="From the campaign's first label to its last.")
        raters = _RaterSerializer(many=True)

    @extend_schema(
        tags=TAG,
        operation_id="campaigns_raters",
        summary="Every rater of a campaign: reliability, position bias, speed, gold accuracy",
        responses={
            200: OutputSerializer,
            **error_responses(body=False, e403=_MANAGE_403, e404="`not_found`"),
        },
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = get_campaign_for_user(request.user, campaign_id, manage=True)
        return Response(self.OutputSerializer(raters_overview(campaign)).data)


class RaterExclusionApi(ApiView):
    @extend_schema_serializer(component_name="RaterExclusionInput")
    class InputSerializer(StrictInputSerializer):
        rater = serializers.CharField(max_length=120, help_text="`user:<id>` or `judge:<name>`.")
        excluded = serializers.BooleanField(help_text="true: exclude; false: include again.")
        reason = serializers.CharField(max_length=200, required=False, allow_blank=True)

    @extend_schema_serializer(component_name="RaterExclusionOutput")
    class OutputSerializer(serializers.Serializer):
        rater = serializers.CharField()
        excluded = serializers.BooleanField()
        changed = serializers.BooleanField()

    @extend_schema(
        tags=TAG,
        operation_id="campaigns_raters_exclusion",
        summary="Exclude a rater from training and exports, or include them again",
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            **error_responses(
                e400="`invalid_rater`, `invalid_reason`",
                e403=_MANAGE_403,
                e404="`not_found`, `rater_not_found`",
            ),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = get_campaign_for_user(request.user, campaign_id, manage=True)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        changed = rater_exclusion_set(
            actor=request.user,
            campaign=campaign,
            rater=data["rater"],
            excluded=data["excluded"],
            reason=data.get("reason", ""),
        )
        return Response(
            self.OutputSerializer(
                {"rater": data["rater"], "excluded": data["excluded"], "changed": changed}
            ).data
        )


class RaterGoldApi(ApiView):
    @extend_schema_serializer(component_name="RaterGoldInput")
    class InputSerializer(StrictInputSerializer):
        rate = serializers.FloatField(
            required=False, help_text="Share of an annotator's new pairs that are gold (0-0.5)."
        )
        comparison_id = serializers.IntegerField(
            required=False, help_text="Mark this comparison as gold (with `answer`)."
        )
        answer = enum_string_field([c.value for c in Choice], required=False)

    @extend_schema_serializer(component_name="RaterGoldOutput")
    class OutputSerializer(serializers.Serializer):
        gold_rate = serializers.FloatField()
        gold_pairs = serializers.IntegerField()
        marked = serializers.IntegerField(
            allow_null=True, help_text="The comparison marked as gold, if one was."
        )

    @extend_schema(
        tags=TAG,
        operation_id="campaigns_raters_gold",
        summary="Set the gold rate and/or mark a comparison as a gold pair",
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            **error_responses(
                e400="`invalid_gold_rate`, `invalid_gold_answer`, `already_gold`, `nothing_to_do`",
                e403=_MANAGE_403,
                e404="`not_found`, `comparison_not_found`",
            ),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = get_campaign_for_user(request.user, campaign_id, manage=True)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "rate" not in data and "comparison_id" not in data:
            raise InvalidInput(
                "Give a rate, or a comparison_id and its answer.", code="nothing_to_do"
            )
        with transaction.atomic():  # both or neither
            if "comparison_id" in data:
                gold_mark(
                    actor=request.user,
                    campaign=campaign,
                    comparison_id=data["comparison_id"],
                    answer=data.get("answer"),
                )
            if "rate" in data:
                gold_rate_set(actor=request.user, campaign=campaign, rate=data["rate"])
        overview = raters_overview(campaign)
        return Response(
            self.OutputSerializer(
                {
                    "gold_rate": overview["gold_rate"],
                    "gold_pairs": overview["gold_pairs"],
                    "marked": data.get("comparison_id"),
                }
            ).data
        )
