"""Campaign endpoints: list, create, detail, state changes, members, prompt import, progress."""

from __future__ import annotations

import copy

from django.conf import settings
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from rlhf_platform import limits
from rlhf_platform.api.common import (
    ApiView,
    ErrorSerializer,
    StrictInputSerializer,
    StrictLimitOffsetPagination,
    decimal_string_field,
    enum_string_field,
    error_responses,
    name_field,
)
from rlhf_platform.api.permissions import require_researcher
from rlhf_platform.budgets.selectors import budget_status
from rlhf_platform.campaigns.definition import (
    BUDGET_FIELDS,
    CAMPAIGN_SETTINGS,
    CampaignDefinition,
)
from rlhf_platform.campaigns.models import Algorithm, Campaign, CampaignState, FeedbackMode
from rlhf_platform.campaigns.selectors import (
    campaign_progress,
    campaigns_visible_to,
    get_campaign_for_user,
    get_user_by_username,
)
from rlhf_platform.campaigns.services import (
    STATE_ACTIONS,
    campaign_add_member,
    campaign_create,
)
from rlhf_platform.datafiles.formats import format_from_name
from rlhf_platform.datafiles.imports import prompts_import, prompts_import_file
from rlhf_platform.insights.services import campaign_state_audited

TAG = ["campaigns"]
IMPORT_FORMATS = ["jsonl", "csv", "parquet"]


def _as_output(names) -> dict[str, serializers.Field]:
    """The one definition's fields (``CampaignDefinition``), as always-present output fields:
    a setting the API accepts is a setting it returns."""
    out = {}
    for name in names:
        field = copy.deepcopy(CampaignDefinition._declared_fields[name])
        field.required = True
        out[name] = field
    return out


CampaignBudgetOutputSerializer = extend_schema_serializer(component_name="CampaignBudgetConfig")(
    type(
        "CampaignBudgetOutputSerializer",
        (serializers.Serializer,),
        {"__doc__": "A campaign's budget settings.", **_as_output(BUDGET_FIELDS)},
    )
)

CampaignDetailOutputSerializer = extend_schema_serializer(component_name="CampaignDetail")(
    type(
        "CampaignDetailOutputSerializer",
        (serializers.Serializer,),
        {
            "__doc__": "A campaign as its detail page and its creation return it: every "
            "setting of the one definition, the budget's under ``budget``.",
            "id": serializers.IntegerField(),
            "owner": serializers.CharField(source="owner.username"),
            "state": serializers.ChoiceField(choices=CampaignState.choices),
            **_as_output(CAMPAIGN_SETTINGS),
            "budget": CampaignBudgetOutputSerializer(),
            "created_at": serializers.DateTimeField(),
            "updated_at": serializers.DateTimeField(),
        },
    )
)


class CampaignListCreateApi(ApiView):
    @extend_schema_serializer(component_name="CampaignListItem")
    class ListOutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField()
        description = serializers.CharField()
        owner = serializers.CharField(source="owner.username")
        state = serializers.ChoiceField(choices=CampaignState.choices)
        algorithm = serializers.ChoiceField(choices=Algorithm.choices)
        feedback_mode = serializers.ChoiceField(choices=FeedbackMode.choices)
        created_at = serializers.DateTimeField()

    @extend_schema_serializer(component_name="CampaignCreate")
    class CreateInputSerializer(StrictInputSerializer, CampaignDefinition):
        """The one campaign definition (``rlhf_platform.campaigns.definition``), read as
        strict JSON. Only the wire format differs from a form or a spec file: the name is
        measured as sent, and money is a decimal *string* whose pattern the schema states."""

        name = name_field(max_length=200)
        cost_cap = decimal_string_field(
            max_digits=12, decimal_places=4, required=False, allow_null=True
        )
        human_label_cost = decimal_string_field(max_digits=12, decimal_places=6, required=False)
        judge_call_cost = decimal_string_field(max_digits=12, decimal_places=6, required=False)
        judge_token_cost = decimal_string_field(max_digits=14, decimal_places=10, required=False)

    pagination_class = StrictLimitOffsetPagination

    @extend_schema(
        tags=TAG,
        operation_id="campaigns_list",
        summary="Campaigns the caller may see",
        description="Annotators: the campaigns they belong to. Researchers: the ones they own "
        "or belong to. Admins: all. Paginated with `limit` and `offset`.",
        responses={
            200: ListOutputSerializer(many=True),
            **error_responses(body=False),
            400: OpenApiResponse(
                response=ErrorSerializer,
                description="`validation_error` (`limit` or `offset` not an integer, or "
                "below its minimum)",
            ),
        },
    )
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        qs = campaigns_visible_to(request.user).select_related("owner")
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(self.ListOutputSerializer(page, many=True).data)

    @extend_schema(
        tags=TAG,
        operation_id="campaigns_create",
        summary="Create a campaign (researchers and admins)",
        description="The campaign starts in the `draft` state, owned by the caller, with its "
        "budget. Omitted fields take the model defaults.",
        request=CreateInputSerializer,
        responses={
            201: CampaignDetailOutputSerializer,
            **error_responses(
                e400="`judge_host_not_allowed`, `judge_host_private`, "
                "`judge_host_unresolvable`, `judge_url_invalid`, `judge_api_key_env_not_allowed` "
                "(the judge endpoint is not on the admins' allow-list of judge hosts, or "
                "resolves to a private address; see docs/security.md)",
                e403="`permission_denied` (the caller is an annotator)",
                e409="`name_taken`",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        require_researcher(request.user)
        serializer = self.CreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = campaign_create(owner=request.user, **serializer.validated_data)
        return Response(
            CampaignDetailOutputSerializer(campaign).data, status=status.HTTP_201_CREATED
        )


class CampaignDetailApi(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="campaigns_retrieve",
        summary="One campaign",
        responses={
            200: CampaignDetailOutputSerializer,
            **error_responses(body=False, e404="`not_found` (unknown, or not visible to you)"),
        },
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = get_campaign_for_user(request.user, campaign_id)
        return Response(CampaignDetailOutputSerializer(campaign).data)


class CampaignStateApi(ApiView):
    @extend_schema_serializer(component_name="CampaignStateChange")
    class InputSerializer(StrictInputSerializer):
        action = enum_string_field(
            list(STATE_ACTIONS),
            help_text="start: draft to running; pause: running to paused; resume: paused to "
            "running; finish: any but finished to finished.",
        )

    @extend_schema_serializer(component_name="CampaignStateOutput")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        state = serializers.ChoiceField(choices=CampaignState.choices)

    @extend_schema(
        tags=TAG,
        operation_id="campaigns_state",
        summary="Start, pause, resume or finish a campaign (owner or admin)",
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            **error_responses(
                e400="`invalid_action`",
                e403="`permission_denied` (a member who does not manage the campaign)",
                e404="`not_found`",
                e409="`invalid_transition` (e.g. resume a running campaign)",
            ),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = get_campaign_for_user(request.user, campaign_id, manage=True)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = campaign_state_audited(
            actor=request.user, campaign=campaign, action=serializer.validated_data["action"]
        )
        return Response(self.OutputSerializer(campaign).data)


class CampaignMembersApi(ApiView):
    @extend_schema_serializer(component_name="CampaignMemberAdd")
    class InputSerializer(StrictInputSerializer):
        username = name_field(max_length=150)

    @extend_schema_serializer(component_name="CampaignMember")
    class OutputSerializer(serializers.Serializer):
        campaign_id = serializers.IntegerField()
        username = serializers.CharField(source="user.username")
        role = serializers.CharField(source="user.role")
        created_at = serializers.DateTimeField()

    @extend_schema(
        tags=TAG,
        operation_id="campaigns_members_add",
        summary="Add a member (owner or admin); adding a member twice changes nothing",
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            **error_responses(
                e403="`permission_denied`",
                e404="`not_found` (campaign), `user_not_found`",
            ),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = get_campaign_for_user(request.user, campaign_id, manage=True)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = get_user_by_username(serializer.validated_data["username"])
        membership = campaign_add_member(campaign=campaign, user=user)
        return Response(self.OutputSerializer(membership).data)


class PromptImportApi(ApiView):
    parser_classes = [JSONParser, MultiPartParser]
    large_body = True  # limits.BodySizeLimitMiddleware: IMPORT_REQUEST_MAX_BYTES

    @extend_schema_serializer(component_name="PromptImportText")
    class JsonInputSerializer(StrictInputSerializer):
        format = enum_string_field(IMPORT_FORMATS)
        content = serializers.CharField(
            trim_whitespace=False,
            help_text="The file's text: at most `IMPORT_MAX_BYTES` (20 MiB) as UTF-8, the same "
            "limit as a file upload.",
        )

    @extend_schema_serializer(component_name="PromptImportFile")
    class FileInputSerializer(StrictInputSerializer):
        file = serializers.FileField(
            help_text=f"UTF-8 text, at most {limits.describe(settings.IMPORT_MAX_BYTES)} "
            "(`IMPORT_MAX_BYTES`)."
        )
        format = enum_string_field(
            IMPORT_FORMATS,
            required=False,
            help_text="Defaults from the file name: .jsonl/.ndjson, .csv or .parquet.",
        )

    @extend_schema_serializer(component_name="PromptImportResult")
    class OutputSerializer(serializers.Serializer):
        count = serializers.IntegerField(help_text="Prompts imported.")

    @extend_schema(
        tags=TAG,
        operation_id="campaigns_prompts_import",
        summary="Import prompts from JSONL, CSV or Parquet (owner or admin): every row or none",
        description="JSONL: one object per line with `prompt` (or `messages`), optional "
        "`split` (train/eval), `reference`, `metadata`. CSV: a header row with a `prompt` "
        "column and the same optional columns; Parquet (a file upload): the same columns. Any bad row rejects the whole file with "
        "`import_invalid` and `details: [{line, error}, ...]`; nothing is imported.",
        request={
            "application/json": JsonInputSerializer,
            "multipart/form-data": FileInputSerializer,
        },
        responses={
            201: OutputSerializer,
            **error_responses(
                e400="`import_invalid` (bad rows, listed in `details`; or a CSV without a "
                "`prompt` column), `import_empty`, `invalid_format`, `invalid_encoding`",
                e403="`permission_denied`",
                e404="`not_found`",
                e413="`file_too_large` (over `IMPORT_MAX_BYTES`), `request_too_large` (a body "
                "over `IMPORT_REQUEST_MAX_BYTES`)",
                e415="`unsupported_media_type` (send JSON or multipart/form-data)",
            ),
        },
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = get_campaign_for_user(request.user, campaign_id, manage=True)
        if request.content_type.startswith("multipart/"):
            data, fmt = self._read_file(request)
            count = prompts_import_file(campaign=campaign, data=data, fmt=fmt)
            return Response(
                self.OutputSerializer({"count": count}).data, status=status.HTTP_201_CREATED
            )
        else:
            serializer = self.JsonInputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            content, fmt = serializer.validated_data["content"], serializer.validated_data["format"]
            limits.check_import_size(len(content.encode("utf-8", "surrogatepass")))
        prompts = prompts_import(campaign=campaign, content=content, fmt=fmt)
        return Response(
            self.OutputSerializer({"count": len(prompts)}).data, status=status.HTTP_201_CREATED
        )

    def _read_file(self, request: Request) -> tuple[bytes, str]:
        serializer = self.FileInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        # The same detection (and error) as every other import: one list of extensions.
        fmt = format_from_name(upload.name or "", serializer.validated_data.get("format"))
        limits.check_import_size(upload.size)
        return upload.read(), fmt


class CampaignProgressApi(ApiView):
    @extend_schema_serializer(component_name="CampaignProgress")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="CampaignProgressCounts")
        class ProgressSerializer(serializers.Serializer):
            rounds = serializers.IntegerField()
            current_round = serializers.IntegerField(allow_null=True)
            comparisons = serializers.IntegerField()
            comparisons_open = serializers.IntegerField()
            comparisons_labeled = serializers.IntegerField()
            labels = serializers.IntegerField()
            prompts_train = serializers.IntegerField()
            prompts_eval = serializers.IntegerField()

        @extend_schema_serializer(component_name="CampaignBudgetStatus")
        class BudgetSerializer(serializers.Serializer):
            label_cap = serializers.IntegerField(allow_null=True)
            labels_spent = serializers.IntegerField()
            labels_remaining = serializers.IntegerField(allow_null=True)
            cost_cap = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True)
            cost_spent = serializers.DecimalField(max_digits=14, decimal_places=6)
            cost_remaining = serializers.DecimalField(
                max_digits=14, decimal_places=6, allow_null=True
            )
            annotator_daily_cap = serializers.IntegerField(allow_null=True)
            near_cap = serializers.BooleanField(help_text="A cap is at least 90% spent.")
            exhausted = serializers.BooleanField(help_text="The campaign serves no more.")
            reason = serializers.CharField(help_text="Why it is exhausted; empty otherwise.")

        campaign_id = serializers.IntegerField()
        state = serializers.ChoiceField(choices=CampaignState.choices)
        progress = ProgressSerializer()
        budget = BudgetSerializer()

    @extend_schema(
        tags=TAG,
        operation_id="campaigns_progress",
        summary="Progress and budget of a campaign (members and managers)",
        responses={
            200: OutputSerializer,
            **error_responses(body=False, e404="`not_found`"),
        },
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign: Campaign = get_campaign_for_user(request.user, campaign_id)
        data = {
            "campaign_id": campaign.pk,
            "state": campaign.state,
            "progress": campaign_progress(campaign),
            "budget": budget_status(campaign_id=campaign.pk),
        }
        return Response(self.OutputSerializer(data).data)
