"""Rounds of live campaigns: the timeline with evaluations, and retrying a failed round."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from rlhf_platform.api.common import ApiView, error_responses
from rlhf_platform.campaigns.selectors import get_campaign_for_user, get_round_for_user
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.state import round_retry

TAG = ["rounds"]


@extend_schema_serializer(component_name="RoundEvaluation")
class _EvaluationSerializer(serializers.Serializer):
    policy_version_id = serializers.IntegerField()
    labels_spent = serializers.IntegerField()
    win_rate = serializers.FloatField()
    ci_low = serializers.FloatField()
    ci_high = serializers.FloatField()
    n_prompts = serializers.IntegerField()


class RoundListApi(ApiView):
    @extend_schema_serializer(component_name="Round")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        index = serializers.IntegerField()
        state = serializers.ChoiceField(choices=RoundState.choices)
        started_at = serializers.DateTimeField()
        finished_at = serializers.DateTimeField(allow_null=True)
        transitions = serializers.ListField(
            child=serializers.ListField(child=serializers.CharField())
        )
        leftovers = serializers.IntegerField()
        failure_reason = serializers.CharField()
        policy_version_id = serializers.IntegerField(allow_null=True)
        reward_version_id = serializers.IntegerField(allow_null=True)
        evaluation = serializers.SerializerMethodField()

        @extend_schema_field(_EvaluationSerializer(allow_null=True))
        def get_evaluation(self, rnd: Round) -> dict | None:
            evaluations = list(rnd.evaluations.all())
            return _EvaluationSerializer(evaluations[0]).data if evaluations else None

    @extend_schema(
        tags=TAG,
        operation_id="campaigns_rounds",
        summary="The campaign's rounds, oldest first, with their evaluations",
        responses={
            200: OutputSerializer(many=True),
            **error_responses(body=False, e404="`not_found`"),
        },
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = get_campaign_for_user(request.user, campaign_id)
        rounds = campaign.rounds.order_by("index").prefetch_related("evaluations")
        return Response(self.OutputSerializer(rounds, many=True).data)


class RoundRetryApi(ApiView):
    @extend_schema_serializer(component_name="RoundRetried")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        state = serializers.ChoiceField(choices=RoundState.choices)

    @extend_schema(
        tags=TAG,
        operation_id="rounds_retry",
        summary="Send a failed round back to the step it failed in (owner or admin)",
        request=None,
        responses={
            200: OutputSerializer,
            **error_responses(
                body=False,
                e403="`permission_denied` (a member who does not manage the campaign)",
                e404="`not_found`",
                e409="`invalid_transition` (the round has not failed)",
            ),
        },
    )
    def post(self, request: Request, round_id: int) -> Response:
        rnd = get_round_for_user(request.user, round_id, manage=True)
        return Response(self.OutputSerializer(round_retry(round_id=rnd.pk)).data)
