"""Export and import endpoints: TRL-ready preferences, labels with provenance, prompt and
response-pair files (JSONL, CSV, Parquet). Formats: see :mod:`rlhf_platform.datafiles`
and ``docs/research.md``."""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from rlhf_platform import limits
from rlhf_platform.api.common import (
    ApiView,
    ErrorSerializer,
    StrictInputSerializer,
    enum_string_field,
    error_responses,
)
from rlhf_platform.api.permissions import require_researcher
from rlhf_platform.campaigns.selectors import get_campaign_for_user
from rlhf_platform.datafiles import exports, formats, imports
from rlhf_platform.errors import InvalidInput

TAG = ["exports"]


def _download(chunks: Iterator[bytes], fmt: str, filename: str) -> StreamingHttpResponse:
    """Stream the file: rows are read from the database in chunks (``iterator(chunk_size)``)
    and sent as they are written, so neither the server nor the response holds the whole
    file (a campaign's export can be gigabytes). The row count was checked before (409
    ``nothing_to_export``); an error mid-stream ends the download early."""
    response = StreamingHttpResponse(chunks, content_type=formats.CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _choice(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name, default)
    if value not in allowed:
        raise InvalidInput(
            f"{name} must be one of {', '.join(allowed)}, not {value!r}.", code="invalid_parameter"
        )
    return value


def _enum_param(name: str, values: tuple[str, ...], default: str, text: str) -> OpenApiParameter:
    return OpenApiParameter(
        name, OpenApiTypes.STR, enum=list(values), default=default, description=text
    )


# GET endpoints read no body, but they do check their query parameters.
_EXPORT_ERRORS = {
    **error_responses(
        body=False,
        e403="`permission_denied` (annotators)",
        e404="`not_found`",
        e409="`nothing_to_export` (no label matches: no file is sent)",
    ),
    400: OpenApiResponse(response=ErrorSerializer, description="`invalid_parameter`"),
}


class PreferenceExportApi(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="campaigns_export_preferences",
        summary="Preferences as TRL-ready JSONL (researchers and admins who see the campaign)",
        description="One row per label: `{prompt, chosen, rejected}`. `form=conversational` "
        "makes `prompt` a list of messages and `chosen`/`rejected` one assistant message "
        "each. Ties and both-bad are excluded unless `ties=keep`, which keeps them with "
        "`chosen` and `rejected` null (no trainer can read them as a preference) and adds "
        "`response_a`, `response_b`, `choice` and a boolean `tie` to every row. No "
        "matching label: 409 `nothing_to_export`.",
        parameters=[
            _enum_param("form", formats.PREFERENCE_FORMS, "standard", "Row form."),
            _enum_param("ties", ("exclude", "keep"), "exclude", "Ties and both-bad labels."),
            _enum_param("source", formats.LABEL_SOURCES, "all", "Whose labels."),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                response=OpenApiTypes.STR, description="JSON Lines."
            ),
            **_EXPORT_ERRORS,
        },
    )
    def get(self, request: Request, campaign_id: int) -> HttpResponse:
        require_researcher(request.user)
        campaign = get_campaign_for_user(request.user, campaign_id)
        form = _choice(request, "form", formats.PREFERENCE_FORMS, "standard")
        keep = _choice(request, "ties", ("exclude", "keep"), "exclude") == "keep"
        source = _choice(request, "source", formats.LABEL_SOURCES, "all")
        exports.require_rows(
            exports.preferences_count(campaign=campaign, keep_ties=keep, source=source),
            "preference labels",
        )
        rows = exports.preference_records(
            campaign=campaign, form=form, keep_ties=keep, source=source
        )
        return _download(
            exports.iter_jsonl(rows), "jsonl", f"campaign-{campaign.pk}-preferences.jsonl"
        )


class LabelExportApi(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="campaigns_export_labels",
        summary="Every label with its provenance as JSONL, CSV or Parquet "
        "(researchers and admins who see the campaign)",
        parameters=[
            _enum_param("file_format", formats.LABEL_FORMATS, "jsonl", "File format."),
            _enum_param("source", formats.LABEL_SOURCES, "all", "Whose labels."),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                response=OpenApiTypes.STR, description="JSON Lines."
            ),
            (200, "text/csv"): OpenApiResponse(response=OpenApiTypes.STR, description="CSV."),
            (200, "application/vnd.apache.parquet"): OpenApiResponse(
                response=OpenApiTypes.BINARY, description="Parquet."
            ),
            **_EXPORT_ERRORS,
        },
    )
    def get(self, request: Request, campaign_id: int) -> HttpResponse:
        require_researcher(request.user)
        campaign = get_campaign_for_user(request.user, campaign_id)
        fmt = _choice(request, "file_format", formats.LABEL_FORMATS, "jsonl")
        source = _choice(request, "source", formats.LABEL_SOURCES, "all")
        exports.require_rows(exports.labels_count(campaign=campaign, source=source), "labels")
        chunks = exports.iter_labels(exports.label_records(campaign=campaign, source=source), fmt)
        return _download(chunks, fmt, f"campaign-{campaign.pk}-labels.{fmt}")


class _FileImportApi(ApiView):
    parser_classes = [MultiPartParser]
    large_body = True  # limits.BodySizeLimitMiddleware: IMPORT_REQUEST_MAX_BYTES

    @extend_schema_serializer(component_name="ImportFile")
    class InputSerializer(StrictInputSerializer):
        file = serializers.FileField(
            help_text=f"At most {limits.describe(settings.IMPORT_MAX_BYTES)} (`IMPORT_MAX_BYTES`)."
        )
        file_format = enum_string_field(
            list(formats.IMPORT_FORMATS),
            required=False,
            help_text="Defaults from the file name: .jsonl/.ndjson, .csv or .parquet.",
        )

    @extend_schema_serializer(component_name="ImportResult")
    class OutputSerializer(serializers.Serializer):
        count = serializers.IntegerField(help_text="Rows imported.")

    def _read(self, request: Request) -> tuple[bytes, str]:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        fmt = formats.format_from_name(
            upload.name or "", serializer.validated_data.get("file_format")
        )
        limits.check_import_size(upload.size)
        return upload.read(), fmt


_IMPORT_ERRORS = error_responses(
    e400="`import_invalid` (bad rows, listed in `details`), `import_empty`, "
    "`invalid_format`, `invalid_encoding`",
    e403="`permission_denied` (not the owner or an admin)",
    e404="`not_found`",
    e413="`file_too_large` (over `IMPORT_MAX_BYTES`), `request_too_large`",
    e415="`unsupported_media_type` (send multipart/form-data)",
)


class PairFileImportApi(_FileImportApi):
    @extend_schema(
        tags=TAG,
        operation_id="campaigns_import_pairs_file",
        summary="Queue response pairs to label from a JSONL, CSV or Parquet file (owner or "
        "admin): every pair or none",
        description="Rows: `prompt`, `response_a`, `response_b`, optional `split`, "
        "`reference`, `priority`. For plain A/B campaigns that label existing model outputs.",
        request={"multipart/form-data": _FileImportApi.InputSerializer},
        responses={201: _FileImportApi.OutputSerializer, **_IMPORT_ERRORS},
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = get_campaign_for_user(request.user, campaign_id, manage=True)
        data, fmt = self._read(request)
        count = imports.pairs_import_file(campaign=campaign, data=data, fmt=fmt)
        return Response(
            self.OutputSerializer({"count": count}).data, status=status.HTTP_201_CREATED
        )
