"""Labeling endpoints: next comparison, submit a label, undo it, skip, renew.

An annotator only ever sees the two responses in the order of their lease: ``response_a``
is the one shown first, and a ``choice`` of ``"A"`` means that one. Which response is the
comparison's own A, and whether the lease swapped them, is never sent.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from rlhf_platform.api.common import (
    ApiView,
    StrictInputSerializer,
    enum_string_field,
    error_responses,
)
from rlhf_platform.labeling.models import Choice, Label
from rlhf_platform.labeling.selectors import lease_display
from rlhf_platform.labeling.services import (
    IDEMPOTENCY_KEY_MAX,
    NothingToLabel,
    comparison_next,
    label_submit,
    label_undo,
    lease_renew,
    lease_skip,
)

TAG = ["labeling"]
NOTHING_QUEUED = "nothing_queued"
LEASED = "leased"


def _shown_choice(label: Label) -> str:
    """The label's choice in the order the annotator saw (stored in the comparison's)."""
    if label.shown_swapped and label.choice in (Choice.A, Choice.B):
        return Choice.B if label.choice == Choice.A else Choice.A
    return label.choice


def _iso(value: dt.datetime) -> str:
    """A datetime as DRF's DateTimeField writes it: ISO 8601 in the current time zone,
    "Z" for UTC."""
    text = value.astimezone(timezone.get_current_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# The two bodies every label costs are built directly, as their serializers (below, which
# document them) would build them: instantiating a DRF serializer deep-copies its fields on
# every call, a measurable share of a label's CPU (issue 21). test_hot_paths.py checks that
# both give the same JSON.
def leased_body(shown: dict) -> dict:
    messages = shown["messages"]
    return {
        "status": LEASED,
        "lease_id": shown["lease_id"],
        "campaign_id": shown["campaign_id"],
        "expires_at": _iso(shown["expires_at"]),
        "prompt": str(shown["prompt"]),
        "messages": None
        if messages is None
        else [{k: str(v) for k, v in m.items()} for m in messages],
        "response_a": str(shown["response_a"]),
        "response_b": str(shown["response_b"]),
    }


def receipt_body(label: Label) -> dict:
    return {
        "label_id": label.pk,
        "lease_id": label.lease_id,
        "choice": _shown_choice(label),
        "created_at": _iso(label.created_at),
    }


@extend_schema_serializer(component_name="LeasedComparison")
class LeasedOutputSerializer(serializers.Serializer):
    status = serializers.CharField(help_text=f'Always "{LEASED}".')
    lease_id = serializers.IntegerField()
    campaign_id = serializers.IntegerField()
    expires_at = serializers.DateTimeField(help_text="Renew the lease before this time.")
    prompt = serializers.CharField()
    messages = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        allow_null=True,
        help_text="Optional chat history: [{role, content}, ...].",
    )
    response_a = serializers.CharField(help_text='Shown first: the answer "A".')
    response_b = serializers.CharField(help_text='Shown second: the answer "B".')


@extend_schema_serializer(component_name="NothingQueued")
class NothingQueuedOutputSerializer(serializers.Serializer):
    status = serializers.CharField(help_text=f'Always "{NOTHING_QUEUED}".')
    message = serializers.CharField(help_text="Why, for people; ask again later.")


class NextComparisonApi(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="comparisons_next",
        summary="Lease the next comparison of a campaign (members only)",
        description="Returns the caller's live lease of the campaign if there is one, else "
        "leases the highest-priority comparison that still needs labels and that the caller "
        "has neither labeled nor skipped. Always 200 on success, with a `status`: "
        f'`"{LEASED}"` and the pair, or `"{NOTHING_QUEUED}"` and a message when nothing '
        "waits for the caller now (ask again later). No request body.",
        request=None,
        responses={
            200: PolymorphicProxySerializer(
                component_name="NextComparison",
                serializers={
                    LEASED: LeasedOutputSerializer,
                    NOTHING_QUEUED: NothingQueuedOutputSerializer,
                },
                resource_type_field_name="status",
            ),
            **error_responses(
                body=False,
                e404="`not_found` (unknown campaign, or the caller is not a member)",
                e409="`campaign_not_running`, `budget_exhausted`, `daily_cap_reached`",
            ),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        try:
            served = comparison_next(annotator=request.user, campaign_id=campaign_id)
        except NothingToLabel as exc:
            body = {"status": NOTHING_QUEUED, "message": exc.message}
            return Response(NothingQueuedOutputSerializer(body).data)
        return Response(leased_body(lease_display(served.lease)))


@extend_schema_field({"type": "string", "maxLength": settings.RATIONALE_MAX_LENGTH, "default": ""})
class RationaleField(serializers.CharField):
    """Length checked by the service (``rationale_too_long``), documented here."""


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX})
class IdempotencyKeyField(serializers.CharField):
    """Length checked by the service (``invalid_idempotency_key``), documented here: the
    schema used to allow the empty key that the service refuses."""


class LabelSubmitApi(ApiView):
    @extend_schema_serializer(component_name="LabelSubmit")
    class InputSerializer(StrictInputSerializer):
        choice = enum_string_field(
            Choice.values,
            help_text='"A": the response shown first is better; "B": the one shown second; '
            '"tie": equally good (a half win each way); "both_bad": neither is acceptable (kept, '
            "but not trained on; docs/choice.md).",
        )
        idempotency_key = IdempotencyKeyField(
            trim_whitespace=False,
            allow_blank=True,  # the service answers `invalid_idempotency_key`
            help_text=f"1 to {IDEMPOTENCY_KEY_MAX} characters, chosen by the client once per "
            "answer (e.g. a UUID) and sent again on every retry of it.",
        )
        rationale = RationaleField(
            required=False,
            allow_blank=True,
            trim_whitespace=False,
            help_text=f"Optional, at most {settings.RATIONALE_MAX_LENGTH} characters.",
        )
        time_taken_ms = serializers.IntegerField(
            required=False, allow_null=True, min_value=0, max_value=2**31 - 1
        )

    @extend_schema_serializer(component_name="LabelReceipt")
    class OutputSerializer(serializers.Serializer):
        label_id = serializers.IntegerField(source="pk")
        lease_id = serializers.IntegerField()
        choice = serializers.SerializerMethodField(help_text="As sent: in the shown order.")
        created_at = serializers.DateTimeField()

        @extend_schema_field({"type": "string", "enum": Choice.values})
        def get_choice(self, label: Label) -> str:
            return _shown_choice(label)

    @extend_schema(
        tags=TAG,
        operation_id="leases_label",
        summary="Submit the answer for a lease",
        description="Writes the label and debits the campaign's budget in one transaction. "
        "A retry with the same `idempotency_key` returns the first label (200) and writes "
        "nothing, whatever else it sends.",
        request=InputSerializer,
        responses={
            201: OpenApiResponse(OutputSerializer, description="The label was stored."),
            200: OpenApiResponse(
                OutputSerializer, description="A replay: this key's label, stored before."
            ),
            **error_responses(
                e400="`invalid_choice`, `rationale_too_long`, `invalid_idempotency_key`",
                e404="`lease_not_found` (unknown, or another annotator's lease)",
                e409="`lease_expired`, `lease_closed` (already submitted or skipped), "
                "`comparison_expired` (its round closed), `idempotency_key_reused` (the key "
                "labeled another lease), `budget_exhausted`, `daily_cap_reached`",
            ),
        },
    )
    def post(self, request: Request, lease_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        label, created = label_submit(
            annotator=request.user, lease_id=lease_id, **serializer.validated_data
        )
        return Response(
            receipt_body(label), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class LeaseSkipApi(ApiView):
    @extend_schema_serializer(component_name="LeaseSkipped")
    class OutputSerializer(serializers.Serializer):
        lease_id = serializers.IntegerField(source="pk")
        state = serializers.CharField(help_text='"skipped".')

    @extend_schema(
        tags=TAG,
        operation_id="leases_skip",
        summary="Give a comparison back; the caller is not shown it again",
        request=None,
        responses={
            200: OutputSerializer,
            **error_responses(
                body=False,
                e404="`lease_not_found`",
                e409="`lease_closed` (already submitted, skipped or expired)",
            ),
        },
    )
    def post(self, request: Request, lease_id: int) -> Response:
        lease = lease_skip(annotator=request.user, lease_id=lease_id)
        return Response(self.OutputSerializer(lease).data)


class LeaseRenewApi(ApiView):
    @extend_schema_serializer(component_name="LeaseRenewed")
    class OutputSerializer(serializers.Serializer):
        lease_id = serializers.IntegerField(source="pk")
        expires_at = serializers.DateTimeField()

    @extend_schema(
        tags=TAG,
        operation_id="leases_renew",
        summary="Extend a live lease by the configured lease time",
        request=None,
        responses={
            200: OutputSerializer,
            **error_responses(
                body=False,
                e404="`lease_not_found`",
                e409="`lease_expired` (expired, or no longer active)",
            ),
        },
    )
    def post(self, request: Request, lease_id: int) -> Response:
        lease = lease_renew(annotator=request.user, lease_id=lease_id)
        return Response(self.OutputSerializer(lease).data)


class LabelUndoApi(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="labels_undo",
        summary="Take back your last label (within LABEL_UNDO_SECONDS, default 30 s)",
        description="Only the caller's most recent label of its campaign, within the undo "
        "window, and only while no round has consumed it (its round is still labeling). "
        "The label is deleted, the budget credited back (a correction in the ledger), and "
        "the comparison is leased to the caller again: the answer is the reopened lease, "
        "like `next`. A live lease the caller held on another pair goes back to the queue.",
        request=None,
        responses={
            200: LeasedOutputSerializer,
            **error_responses(
                body=False,
                e404="`label_not_found` (unknown, or another annotator's label)",
                e409="`undo_window_passed`, `undo_not_last`, `undo_label_consumed`, "
                "`comparison_expired`",
            ),
        },
    )
    def post(self, request: Request, label_id: int) -> Response:
        lease = label_undo(annotator=request.user, label_id=label_id)
        body = {"status": LEASED, **lease_display(lease)}
        return Response(LeasedOutputSerializer(body).data)
