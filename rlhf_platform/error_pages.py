"""Error pages for the browser (the API answers JSON, see ``api/errors.py``).

Django calls ``handler500`` for any exception a page view did not handle. During a database
outage (PostgreSQL restarting: ``OperationalError`` / ``InterfaceError``) the page answers
``503`` with ``Retry-After`` and reloads itself, as the API answers ``503
service_unavailable``; anything else is a plain ``500``. Both pages are rendered without the
request, so they never touch the database (no session, no user).
"""

from __future__ import annotations

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from rlhf_platform.api.errors import RETRY_AFTER_SECONDS

log = logging.getLogger(__name__)


def server_error(request: HttpRequest) -> HttpResponse:
    exc = sys.exc_info()[1]  # Django calls this handler while handling the exception
    if isinstance(exc, (OperationalError, InterfaceError)):
        log.warning("database unavailable for page %s: %s", request.path, exc)
        html = render_to_string("503.html", {"retry_after": RETRY_AFTER_SECONDS})
        return HttpResponse(html, status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return HttpResponse(render_to_string("500.html"), status=500)
