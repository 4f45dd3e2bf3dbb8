"""Security headers of the annotator pages.

``CONTENT_SECURITY_POLICY`` allows no inline script or style at all: every script and
style sheet is a static file of this app (htmx is vendored, see ``package.json``), and
htmx is configured not to inject its indicator ``<style>`` (see ``base.html``). Model
output is sanitized before it reaches the page (``annotator_ui.markdown``); the CSP is the
second wall should that ever fail.

:class:`SecurityHeadersMiddleware` (in ``settings.MIDDLEWARE``) adds them to every page,
error pages included (a 404, a CSRF failure), leaving the admin and the API to Django's
and DRF's own headers.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

# Paths the middleware leaves to their own policies.
EXEMPT_PREFIXES = ("/admin/", "/api/")


def apply_security_headers(response: HttpResponse) -> HttpResponse:
    for name, value in HEADERS.items():
        if name not in response.headers:
            response.headers[name] = value
    return response


class SecurityHeadersMiddleware:
    """Add :data:`HEADERS` to every response outside :data:`EXEMPT_PREFIXES`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith(EXEMPT_PREFIXES):
            return response
        return apply_security_headers(response)
