"""``POST /api/v1/auth/token/``: a token for a username and password.

Scripts send it as ``Authorization: Token <key>``; the browser UI uses the session instead.
"""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle

from rlhf_platform.accounts.models import User
from rlhf_platform.accounts.services import (
    client_ip,
    login_attempt_check,
    login_failure_record,
    login_success_reset,
)
from rlhf_platform.api.common import ApiView, StrictInputSerializer, error_responses, name_field
from rlhf_platform.errors import ServiceError


class InvalidCredentials(ServiceError):
    code = "invalid_credentials"
    status = 400


class TokenThrottle(AnonRateThrottle):
    """Slows password guessing: per client address, in Django's cache."""

    scope = "auth_token"
    rate = "30/minute"


def auth_token_for_credentials(*, request: Request, username: str, password: str) -> Token:
    """The user's API token (created on first use), if the credentials are right and this
    username and address have not failed too often (see :mod:`rlhf_platform.accounts.services`)."""
    ip = client_ip(request)
    login_attempt_check(username=username, ip=ip)
    user: User | None = authenticate(request=request, username=username, password=password)
    if user is None:  # also for inactive users: the default backend refuses them
        login_failure_record(username=username, ip=ip)
        raise InvalidCredentials("Unknown username or wrong password.")
    login_success_reset(username=username, ip=ip)
    token, _ = Token.objects.get_or_create(user=user)
    return token


class AuthTokenApi(ApiView):
    # No authentication: an anonymous POST without a CSRF token must reach the view.
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [TokenThrottle]
    parser_classes = [JSONParser, FormParser]

    @extend_schema_serializer(component_name="TokenCredentials")
    class InputSerializer(StrictInputSerializer):
        username = name_field(max_length=150)
        password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})

    @extend_schema_serializer(component_name="Token")
    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField(
            source="key", help_text="Send as `Authorization: Token <token>`."
        )
        username = serializers.CharField(source="user.username")
        role = serializers.CharField(source="user.role")

    @extend_schema(
        tags=["auth"],
        operation_id="auth_token",
        summary="Exchange a username and password for an API token",
        auth=[],
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            **{
                status: response
                for status, response in error_responses(
                    e400="`invalid_credentials`",
                    e415="`unsupported_media_type` (send JSON or a form)",
                    e429="`too_many_login_attempts` (too many failed logins for this "
                    "username and address, or from this address; see `Retry-After`), "
                    "`throttled` (too many requests from this address)",
                ).items()
                if status != 401
            },
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = auth_token_for_credentials(request=request, **serializer.validated_data)
        return Response(self.OutputSerializer(token).data)
