"""Domain errors raised by services and selectors.

Each carries a stable machine-readable ``code`` and a human ``message``; the API turns them
into ``{"code": ..., "message": ...}`` with ``status``, the UI into a message on the page.
"""

from __future__ import annotations


class ServiceError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, details: object = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class NotFound(ServiceError):
    """Unknown object, or one the caller may not see (never says which)."""

    code = "not_found"
    status = 404


class PermissionDenied(ServiceError):
    code = "permission_denied"
    status = 403


class InvalidInput(ServiceError):
    code = "invalid"
    status = 400


class Conflict(ServiceError):
    code = "conflict"
    status = 409


class BudgetExhausted(ServiceError):
    """The campaign (or the annotator's daily cap) has no labels left to spend."""

    code = "budget_exhausted"
    status = 409
