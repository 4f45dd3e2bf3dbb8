"""Every API error is JSON ``{"code": "<stable code>", "message": "<for people>"}``."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import InterfaceError, OperationalError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from rlhf_platform.errors import ServiceError

log = logging.getLogger(__name__)

#: Seconds a client should wait before retrying a request refused by an outage.
RETRY_AFTER_SECONDS = 2

_DRF_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "validation_error",
}


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        body = {"code": exc.code, "message": exc.message}
        if exc.details is not None:
            body["details"] = exc.details
        response = Response(body, status=exc.status)
        if getattr(exc, "retry_after", None):
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, RequestDataTooBig):
        # A body without Content-Length (the middleware refuses the others unread) that
        # outgrew DATA_UPLOAD_MAX_MEMORY_SIZE while it was read.
        return Response(
            {
                "code": "request_too_large",
                "message": "The request body is over "
                f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes, the most accepted.",
            },
            status=413,
        )
    if isinstance(exc, TooManyFieldsSent):
        return Response(
            {
                "code": "malformed_request",
                "message": f"More than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} form fields.",
            },
            status=400,
        )
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable or restarting (connection refused or dropped, server
        # shutting down), or the transaction hit a serialization failure or deadlock. The
        # request is safe to repeat: its transaction rolled back, or (a commit whose answer
        # was lost) a repeat is answered from what was stored, as label submits are by their
        # idempotency key. Say so with a retryable 503, not a 500 (found by bench/soak
        # restarting PostgreSQL under load).
        log.warning("database unavailable: %s", exc)
        return Response(
            {
                "code": "service_unavailable",
                "message": "The service is briefly unavailable; retry shortly.",
            },
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        if settings.DEBUG:
            return None  # Django's debug page, with the traceback
        # An unexpected error: log it with its traceback, answer JSON like every other error.
        log.exception("unhandled API error", exc_info=exc)
        return Response(
            {"code": "server_error", "message": "Something went wrong on our side; it was logged."},
            status=500,
        )
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        body = {"code": code, "message": "The request is invalid.", "details": response.data}
    else:
        detail = response.data.get("detail") if isinstance(response.data, dict) else None
        body = {"code": code, "message": str(detail or exc)}
    response.data = body
    return response
