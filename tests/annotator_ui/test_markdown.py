"""Untrusted Markdown (model output) to safe HTML."""

from __future__ import annotations

import pytest

from annotator_ui.markdown import render_markdown, sanitize_html


@pytest.mark.parametrize(
    "text",
    [
        "<script>window.__pwned=1</script>",
        '<img src=x onerror="window.__pwned=1">',
        "<svg onload=alert(1)>",
        '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
        '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
        '<base href="https://evil.example/">',
        '<form action="https://evil.example"><button>x</button></form>',
        '<div hx-get="/logout/" hx-trigger="load">x</div>',
        '<a href="javascript:alert(1)">x</a>',
        "<style>body{display:none}</style>",
    ],
)
def test_raw_html_is_shown_as_text(text):
    html = render_markdown(text)
    assert "<" + text[1:] not in html
    assert html.startswith("<p>&lt;") or html.startswith("&lt;")


@pytest.mark.parametrize(
    "text",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](vbscript:msgbox(1))",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](java&#09;script:alert(1))",
        "<javascript:alert(1)>",
    ],
)
def test_dangerous_links_are_not_links(text):
    assert "href" not in render_markdown(text)


def test_safe_links_get_rel_and_a_new_tab():
    html = render_markdown("[docs](https://example.com/a?b=1) <mailto:x@example.com>")
    assert (
        '<a href="https://example.com/a?b=1" target="_blank" rel="noopener noreferrer nofollow">'
        in html
    )
    assert 'href="mailto:x@example.com"' in html


def test_relative_links_into_the_app_are_dropped():
    html = render_markdown("[log out](/logout/) [next](../leases/1/label/)")
    assert "href" not in html and "log out" in html


def test_images_are_links_not_images():
    html = render_markdown("![tracker](https://evil.example/pixel.png)")
    assert "<img" not in html and 'href="https://evil.example/pixel.png"' in html


def test_code_blocks_keep_whitespace_and_escape_html():
    html = render_markdown("```html\n<b>  x</b>\n\tindented\n```")
    assert "<pre><code>&lt;b&gt;  x&lt;/b&gt;\n\tindented\n</code></pre>" in html


def test_formatting_survives():
    html = render_markdown(
        "# Title\n\n**bold** _it_ ~~gone~~ `code`\n\n- a\n- b\n\n| h |\n|---|\n| c |"
    )
    for fragment in ["<h1>Title</h1>", "<strong>bold</strong>", "<em>it</em>", "<s>gone</s>"]:
        assert fragment in html
    assert "<code>code</code>" in html and "<li>a</li>" in html and "<td>c</td>" in html


def test_sanitizer_strips_attributes_that_could_style_or_target_the_page():
    html = sanitize_html(
        '<p class="button" id="label-form" style="x" onclick="y" hx-post="/z">t</p>'
    )
    assert html == "<p>t</p>"


def test_empty_and_none_render_empty():
    assert render_markdown("") == "" and render_markdown(None) == ""
