"""Limits on size and encoding of everything that enters the platform, in one place.

Every edge (API serializers, file imports, the annotator's pages, the round engine storing
model output) calls these, so that a text is either stored exactly or refused with a code,
and nothing reaches PostgreSQL that it cannot store. The figures are settings (see
``docs/security.md``, "Limits", for the table):

- ``REQUEST_MAX_BYTES``: any request body (JSON, form, multipart), except on views marked
  with :func:`allows_large_body`, which accept up to ``IMPORT_REQUEST_MAX_BYTES``. Checked
  on ``Content-Length`` by :class:`BodySizeLimitMiddleware` before anything reads the body:
  **413 `request_too_large`**.
- ``IMPORT_MAX_BYTES``: an imported file, as uploaded (multipart) or as the UTF-8 encoding
  of the JSON ``content`` field: **413 `file_too_large`**. The JSON path gets a larger
  request limit than the file itself because JSON escaping makes text longer (a ``"``
  becomes ``\\"``); twice the file limit covers any text sent without ``\\u`` escapes.
- ``PROMPT_MAX_CHARS``, ``RESPONSE_MAX_CHARS``: one prompt or one response, in an import
  (a bad row, listed with the others) and from a model (cut, see :func:`model_text`).
- ``RATIONALE_MAX_LENGTH``: a label's rationale.

Encoding: text must be valid Unicode without U+0000 (PostgreSQL cannot store it in ``text``
or ``jsonb``) and without lone surrogates (U+D800..U+DFFF: a JSON ``\\ud800`` escape decodes
to one; they cannot be encoded as UTF-8, so neither database nor any file can hold them).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from rlhf_platform.errors import ServiceError

# A NUL or a lone surrogate: the characters no store of ours can hold.
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


class TooLarge(ServiceError):
    """A size limit: the body, a file, or a text. The message names the limit."""

    code = "request_too_large"
    status = 413


def bad_char(text: str) -> str | None:
    """A description of the first character of ``text`` that cannot be stored, else None."""
    match = _BAD_CHAR.search(text)
    if match is None:
        return None
    char = match.group()
    where = f"at character {match.start() + 1}"
    if char == "\x00":
        return f"contains a NUL character (U+0000) {where}, which cannot be stored"
    return f"contains a lone surrogate (U+{ord(char):04X}) {where}, which is not valid Unicode"


def value_problem(value: object) -> str | None:
    """:func:`bad_char` over every key and string inside a JSON-like value."""
    if isinstance(value, str):
        return bad_char(value)
    if isinstance(value, dict):
        for key, item in value.items():
            problem = value_problem(key) or value_problem(item)
            if problem:
                return problem
    elif isinstance(value, list | tuple):
        for item in value:
            problem = value_problem(item)
            if problem:
                return problem
    return None


def too_long(text: str, limit: int, what: str) -> str | None:
    if len(text) > limit:
        return f"{what} is {len(text)} characters; at most {limit} are accepted"
    return None


def check_import_size(n_bytes: int) -> None:
    """An imported file's size, multipart or JSON ``content`` alike: 413 over the limit."""
    if n_bytes > settings.IMPORT_MAX_BYTES:
        raise TooLarge(
            f"The file is {n_bytes} bytes; at most {settings.IMPORT_MAX_BYTES} "
            f"({describe(settings.IMPORT_MAX_BYTES)}, IMPORT_MAX_BYTES) are accepted.",
            code="file_too_large",
        )


def model_text(text: str, *, limit: int | None = None) -> str:
    """Model output made storable: NULs and lone surrogates become U+FFFD, and text beyond
    ``limit`` (default ``RESPONSE_MAX_CHARS``) is cut. A model's output is not the caller's
    fault, so it is repaired rather than refused; the cut is visible as a missing tail."""
    limit = settings.RESPONSE_MAX_CHARS if limit is None else limit
    return _BAD_CHAR.sub("\ufffd", text[:limit])


# --- Request bodies -------------------------------------------------------------------------


_View = TypeVar("_View", bound=Callable[..., object])


def allows_large_body(view: _View) -> _View:
    """Mark a view (function, or a class-based view's ``as_view()``) that takes file-sized
    bodies: imports. Its limit is ``IMPORT_REQUEST_MAX_BYTES`` instead of
    ``REQUEST_MAX_BYTES``. For a class, set ``large_body = True`` on it instead."""
    view.large_body = True  # type: ignore[attr-defined]
    return view


def body_limit(view: Callable[..., object]) -> int:
    cls = getattr(view, "view_class", None)
    if getattr(view, "large_body", False) or getattr(cls, "large_body", False):
        return settings.IMPORT_REQUEST_MAX_BYTES
    return settings.REQUEST_MAX_BYTES


def too_large_response(request: HttpRequest, *, size: int, limit: int) -> HttpResponse:
    message = f"The request body is {size} bytes; at most {limit} are accepted here."
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "request_too_large", "message": message}, status=413)
    return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")


class BodySizeLimitMiddleware:
    """Answers 413 for a body over its view's limit before anything reads it.

    Runs in ``process_view`` (the view is known, the body still unread) and must come
    before ``CsrfViewMiddleware``, which reads form bodies. Django's own
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is set to the largest limit, as a backstop for bodies
    without a ``Content-Length``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view: Callable[..., object],
        args: tuple[object, ...],
        kwargs: dict[str, object],
    ) -> HttpResponse | None:
        try:
            size = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0
        limit = body_limit(view)
        if size > limit:
            return too_large_response(request, size=size, limit=limit)
        return None


@functools.cache
def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def describe(n_bytes: int) -> str:
    """``20 MiB`` for a byte count, in messages and docs."""
    return _mib(n_bytes)
