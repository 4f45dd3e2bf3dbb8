"""What every endpoint of ``/api/v1/`` shares: authentication, the error schema, fields.

Endpoints themselves live in :mod:`campaigns`, :mod:`labeling` and :mod:`auth`; each is a
thin APIView that parses with its own ``InputSerializer``, checks access through the
selectors, calls one service and renders with its own ``OutputSerializer``.
"""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.views import APIView

from rlhf_platform.api.authentication import TokenAuthentication
from rlhf_platform.campaigns.services import has_nul
from rlhf_platform.errors import NotFound


class ApiView(APIView):
    # Token first: DRF answers an anonymous call with 401 (and a ``WWW-Authenticate: Token``
    # header) only when the first authenticator names a scheme; session auth names none.
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    """The body of every error response (see docs/api.md for the codes)."""

    code = serializers.CharField(help_text="Stable, machine-readable error code.")
    message = serializers.CharField(help_text="What went wrong, for people.")
    details = serializers.JSONField(
        required=False,
        help_text="Optional structure: field errors for `validation_error`, "
        "`[{line, error}]` for `import_invalid`.",
    )


_COMMON = {
    400: "`malformed_request` (the body is not valid JSON), `validation_error` (fields "
    "missing or of the wrong type; `details` maps fields to messages)",
    401: "`not_authenticated` (no credentials), `authentication_failed` (bad token)",
    415: "`unsupported_media_type` (send JSON)",
}
#: Any endpoint, during an outage of the database: retry after `Retry-After` seconds.
_OUTAGE = {503: "`service_unavailable` (the database is briefly unreachable; retry)"}


def error_responses(*, body: bool = True, **codes_by_status: str) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for the errors an endpoint documents.

    ``error_responses(e404="`not_found`")`` adds a 404 to the 401 every endpoint can answer
    (and the 400 and 415 of every endpoint that reads a body). Codes given for 400 are
    listed after the common ones; any other status given here replaces the common text.
    """
    descriptions = (dict(_COMMON) if body else {401: _COMMON[401]}) | _OUTAGE
    for key, text in codes_by_status.items():
        status = int(key.removeprefix("e"))
        descriptions[status] = f"{descriptions[status]}; {text}" if status == 400 else text
    return {
        status: OpenApiResponse(response=ErrorSerializer, description=text)
        for status, text in sorted(descriptions.items())
    }


class JsonObjectField(serializers.DictField):
    """A JSON object to store in a ``JSONField``: refuses U+0000 in any key or string,
    which PostgreSQL's jsonb cannot hold (the insert would be a server error)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if has_nul(value):
            raise serializers.ValidationError("Null characters are not allowed.")
        return value


def enum_string_field(values: list[str], **kwargs) -> serializers.CharField:
    """A string documented as an enum whose value the *service* checks, so that a bad value
    gets the service's stable error code (``invalid_choice``...) rather than a generic
    ``validation_error``."""

    @extend_schema_field({"type": "string", "enum": list(values)})
    class EnumString(serializers.CharField):
        pass

    return EnumString(**kwargs)


@extend_schema(exclude=True)
class UnknownEndpointApi(APIView):
    """Answers any unknown path under ``/api/v1/`` with the JSON 404, not Django's page."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        raise NotFound("No such endpoint.", code="unknown_endpoint")
