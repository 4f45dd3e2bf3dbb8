"""What every endpoint of ``/api/v1/`` shares: authentication, the error schema, fields.

Endpoints themselves live in :mod:`campaigns`, :mod:`labeling` and :mod:`auth`; each is a
thin APIView that parses with its own ``InputSerializer``, checks access through the
selectors, calls one service and renders with its own ``OutputSerializer``.
"""

from __future__ import annotations

import re

from django.http import QueryDict
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.views import APIView

from rlhf_platform.api.authentication import TokenAuthentication
from rlhf_platform.errors import NotFound


class ApiView(APIView):
    # Token first: DRF answers an anonymous call with 401 (and a ``WWW-Authenticate: Token``
    # header) only when the first authenticator names a scheme; session auth names none.
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]


class StrictInputSerializer(serializers.Serializer):
    """Base of every request-body serializer: a JSON value must have the type the schema
    gives its field. DRF coerces (``0`` to ``"0"`` for a string, ``"5"`` to ``5`` for an
    integer, ``"true"`` for a boolean), so a request the schema calls invalid was accepted;
    the fuzzer's ``negative_data_rejection`` check found it. Form and multipart bodies
    (a ``QueryDict``, where every value is text) are left to the fields."""

    def to_internal_value(self, data):
        if isinstance(data, dict) and not isinstance(data, QueryDict):
            errors = {}
            for name, field in self.fields.items():
                value = data.get(name, serializers.empty)
                expected = _json_type(field)
                if value is serializers.empty or value is None or expected is None:
                    continue
                if not expected(value):
                    errors[name] = [f"Expected {_TYPE_NAMES[expected]}."]
            if errors:
                raise ValidationError(errors)
        return super().to_internal_value(data)


def _is_string(value) -> bool:
    return isinstance(value, str)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_boolean(value) -> bool:
    return isinstance(value, bool)


def _is_object(value) -> bool:
    return isinstance(value, dict)


_TYPE_NAMES = {
    _is_string: "a string",
    _is_integer: "an integer",
    _is_number: "a number",
    _is_boolean: "true or false",
    _is_object: "an object",
}


def _json_type(field):
    if isinstance(field, serializers.FileField):
        return None
    if isinstance(field, serializers.BooleanField):
        return _is_boolean
    if isinstance(field, serializers.IntegerField):
        return _is_integer
    if isinstance(field, serializers.FloatField):
        return _is_number
    if isinstance(field, serializers.DictField):
        return _is_object
    if isinstance(field, (serializers.CharField, serializers.ChoiceField)):
        return _is_string
    return None


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
    413: "`request_too_large` (a body over `REQUEST_MAX_BYTES`, 2.5 MiB by default)",
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


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """``limit`` and ``offset`` as the schema states them: integers (limit at least 1,
    offset at least 0), or absent. DRF's own class reads ``offset=null`` or ``limit=-3``
    as "absent" and answers 200, which the schema says is not a valid request."""

    def _param(self, request, name: str, minimum: int) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return None
        if not re.fullmatch(r"[0-9]{1,18}", raw) or int(raw) < minimum:
            raise ValidationError({name: [f"An integer of at least {minimum}, not {raw!r}."]})
        return int(raw)

    def get_limit(self, request):
        limit = self._param(request, self.limit_query_param, 1)
        if limit is None:
            return self.default_limit
        return min(limit, self.max_limit) if self.max_limit else limit

    def get_offset(self, request):
        return self._param(request, self.offset_query_param, 0) or 0

    def get_schema_operation_parameters(self, view):
        params = super().get_schema_operation_parameters(view)
        for param in params:
            minimum = 1 if param["name"] == self.limit_query_param else 0
            param["schema"] = {"type": "integer", "minimum": minimum}
        return params


def name_field(*, max_length: int, **kwargs) -> serializers.CharField:
    """A required name: at most ``max_length`` characters *as sent* and some non-space.

    DRF trims surrounding whitespace before it checks ``max_length``, so 201 characters
    ending in a space passed a limit of 200 and were stored trimmed; the schema said
    ``maxLength: 200``. Here the length of what was sent is checked first, and the schema
    says the name must hold a non-space character (``pattern: \\S``), as the trim requires.
    """

    @extend_schema_field(
        {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": r"\S"}
    )
    class NameField(serializers.CharField):
        def run_validation(self, data=serializers.empty):
            if isinstance(data, str) and len(data) > max_length:
                self.fail("max_length", max_length=max_length)
            return super().run_validation(data)

    return NameField(max_length=max_length, **kwargs)


def decimal_string_field(*, max_digits: int, decimal_places: int, **kwargs):
    """A non-negative decimal sent as a JSON string, e.g. ``"0.05"``; the schema's pattern
    is exactly what the server accepts (no empty string, no sign, no number, no spaces)."""
    whole = max_digits - decimal_places
    pattern = (
        rf"^(?:[0-9]{{1,{whole}}}(?:\.[0-9]{{1,{decimal_places}}})?|\.[0-9]{{1,{decimal_places}}})$"
    )
    nullable = kwargs.get("allow_null", False)

    @extend_schema_field(
        {"type": "string", "format": "decimal", "pattern": pattern}
        | ({"nullable": True} if nullable else {})
    )
    class DecimalString(serializers.DecimalField):
        def run_validation(self, data=serializers.empty):
            # DRF reads "" as null on a nullable field; the schema's pattern refuses it.
            if data == "":
                self.to_internal_value(data)
            return super().run_validation(data)

        def to_internal_value(self, data):
            if not isinstance(data, str) or not re.fullmatch(pattern, data):
                raise ValidationError(
                    f"A non-negative decimal as a string, at most {whole} digits before the "
                    f'point and {decimal_places} after it (e.g. "0.05").'
                )
            return super().to_internal_value(data)

    return DecimalString(
        max_digits=max_digits, decimal_places=decimal_places, min_value=0, **kwargs
    )


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
