"""Markdown of untrusted model output (and of campaign guidelines), rendered to safe HTML.

Two layers, so that one mistake does not open the page to script:

1. markdown-it-py with raw HTML disabled: ``<script>`` in a response is escaped into text,
   and its link validator already refuses ``javascript:``/``vbscript:``/``data:`` links.
2. nh3 (ammonia) on the result, with an allowlist of tags and attributes: no event
   handlers, no ``style``, no ``class`` or ``id`` (nothing can imitate or target page
   elements), no htmx attributes; links only ``http``/``https``/``mailto`` and never
   relative (model output must not point into this application), each with
   ``rel="noopener noreferrer nofollow"`` and opened in a new tab.

Images are not rendered (a remote image is a tracking pixel, and the CSP would block it
anyway); ``![alt](url)`` shows as ``!`` followed by an ordinary sanitized link.
"""

from __future__ import annotations

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "hr", "blockquote",
        "h1", "h2", "h3", "h4", "h5", "h6",
        "ul", "ol", "li",
        "strong", "em", "s", "del", "code", "pre", "kbd", "sup", "sub",
        "a",
        "table", "thead", "tbody", "tr", "th", "td",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_md.enable(["table", "strikethrough"])
_md.disable("image")


def sanitize_html(html: str) -> str:
    """The allowlist pass alone (also used on anything else that is HTML already)."""
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style"},
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_relative="deny",
        strip_comments=True,
    )


def render_markdown(text: str) -> SafeString:
    """Untrusted Markdown to HTML that is safe to insert in the page."""
    return mark_safe(sanitize_html(_md.render(text or "")))  # noqa: S308 (sanitized above)
