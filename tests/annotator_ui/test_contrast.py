"""The colour pairs of app.css pass WCAG AA (4.5:1 for text, 3:1 for focus and borders of
controls). Reads the custom properties from the style sheet, so a colour change that breaks
contrast fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = Path(__file__).resolve().parents[2] / "annotator_ui/static/annotator_ui/app.css"


def _vars() -> dict[str, str]:
    return dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", CSS.read_text()))


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted([_luminance(a), _luminance(b)], reverse=True)
    return (la + 0.05) / (lb + 0.05)


V = _vars()
TEXT_PAIRS = [
    ("text", "bg"),
    ("text", "surface"),
    ("text", "code-bg"),
    ("muted", "surface"),
    ("muted", "bg"),
    ("accent", "surface"),
    ("accent", "bg"),
    ("accent", "accent-soft"),
    ("accent-text", "accent"),
    ("ok-text", "ok-bg"),
    ("warn-text", "warn-bg"),
    ("error-text", "error-bg"),
    ("text", "accent-soft"),
]


@pytest.mark.parametrize(("fg", "bg"), TEXT_PAIRS)
def test_text_colours_pass_aa(fg, bg):
    assert contrast(V[fg], V[bg]) >= 4.5, (fg, bg, round(contrast(V[fg], V[bg]), 2))


@pytest.mark.parametrize("bg", ["surface", "bg", "accent-soft"])
def test_focus_ring_is_visible(bg):
    assert contrast(V["focus"], V[bg]) >= 3.0


def test_literal_colours_pass_aa():
    assert contrast("#173f73", V["accent-soft"]) >= 4.5  # .flash-info
    assert contrast("#ffffff", "#174b8a") >= 4.5  # .button-primary:hover
    assert contrast("#7a8594", V["surface"]) >= 3.0  # text field border (non-text, 3:1)
