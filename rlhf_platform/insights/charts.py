"""Server-side SVG charts: no JavaScript, no CDN, and no ``style`` attribute anywhere.

The pages' Content-Security-Policy forbids inline styles, so colours and strokes are SVG
*presentation attributes* (``fill``, ``stroke``...), which CSP does not govern. Every chart
is an ``<svg class="chart" data-chart=... data-points=N>`` with ``role="img"``, an
``aria-label`` and a ``<title>``; every data point a ``<circle class="pt">`` (or a bar or box
with class ``pt``) with its values in a ``<title>`` tooltip, so the browser tests can count
what was drawn. Text is escaped; nothing from the data becomes markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Colour-blind-safe palette (Okabe-Ito), dark enough on white for lines and markers.
PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#8a6d00", "#56b4e9", "#000000"]
STATE_COLOURS = {
    "generating": "#56b4e9",
    "selecting": "#009e73",
    "labeling": "#e69f00",
    "learning": "#0072b2",
    "evaluating": "#cc79a7",
    "failed": "#d55e00",
}
TEXT = "#1d232b"
GRID = "#d6dbe2"
W, H = 720, 340
M_LEFT, M_RIGHT, M_TOP, M_BOTTOM = 78, 20, 20, 64


@dataclass
class Series:
    name: str
    points: list[tuple[float, float, float | None, float | None]]  # x, y, y_low, y_high
    colour: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)  # a fitted line, dashed


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _svg_open(kind: str, label: str, points: int, height: int = H) -> list[str]:
    return [
        f'<svg class="chart" data-chart="{escape(kind)}" data-points="{points}" role="img" '
        f'aria-label="{escape(label)}" viewBox="0 0 {W} {height}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
        f'<rect x="0" y="0" width="{W}" height="{height}" fill="#ffffff"/>',
    ]


def _empty(kind: str, label: str, message: str) -> SafeString:
    parts = _svg_open(kind, label, 0, 120)
    parts.append(
        f'<text x="{W / 2}" y="64" text-anchor="middle" fill="{TEXT}" font-size="15">'
        f"{escape(message)}</text></svg>"
    )
    return mark_safe("".join(parts))  # noqa: S308 (every data string is escaped above)


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 x powers of ten inside [lo, hi] (only powers of ten when the range is wide)."""
    ticks = []
    steps = (1, 2, 5) if hi / lo < 1e3 else (1,)
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for s in steps:
            t = s * 10**e
            if lo <= t <= hi:
                ticks.append(t)
    return ticks or [lo, hi]


def _tick_label(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:.3g}k"
    return f"{v:.3g}"


def nice_ceiling(v: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at or above ``v`` (for an axis maximum)."""
    if v <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(v))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= v)


def line_chart(
    series: Sequence[Series],
    *,
    kind: str,
    label: str,
    x_label: str,
    y_label: str,
    log_x: bool = True,
    y_range: tuple[float, float] = (0.0, 1.0),
    reference_y: float | None = 0.5,
) -> SafeString:
    """Lines with markers, a shaded confidence band per series (where ``y_low``/``y_high``
    are given), and optional dashed fitted curves. ``log_x`` drops points with x <= 0."""
    series = [
        Series(
            s.name,
            [p for p in s.points if not log_x or p[0] > 0],
            s.colour or PALETTE[i % len(PALETTE)],
            [c for c in s.curve if not log_x or c[0] > 0],
        )
        for i, s in enumerate(series)
    ]
    xs = [p[0] for s in series for p in s.points] + [c[0] for s in series for c in s.curve]
    n_points = sum(len(s.points) for s in series)
    if not n_points:
        return _empty(kind, label, "No data yet.")
    x_lo, x_hi = min(xs), max(xs)
    if log_x:
        x_lo, x_hi = 10 ** math.floor(math.log10(x_lo)), 10 ** math.ceil(math.log10(x_hi))
        if x_lo == x_hi:
            x_hi = x_lo * 10
    elif x_lo == x_hi:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = y_range
    plot_w, plot_h = W - M_LEFT - M_RIGHT, H - M_TOP - M_BOTTOM

    def px(x: float) -> float:
        if log_x:
            f = (math.log10(x) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo))
        else:
            f = (x - x_lo) / (x_hi - x_lo)
        return M_LEFT + f * plot_w

    def py(y: float) -> float:
        y = min(max(y, y_lo), y_hi)
        return M_TOP + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h

    parts = _svg_open(kind, label, n_points)
    # Grid and axes.
    ticks_x = log_ticks(x_lo, x_hi) if log_x else [x_lo + (x_hi - x_lo) * i / 5 for i in range(6)]
    for t in ticks_x:
        x = px(t)
        parts.append(
            f'<line x1="{_fmt(x)}" y1="{M_TOP}" x2="{_fmt(x)}" y2="{M_TOP + plot_h}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{_fmt(x)}" y="{M_TOP + plot_h + 18}" text-anchor="middle" '
            f'font-size="12" fill="{TEXT}">{_tick_label(t)}</text>'
        )
    for i in range(6):
        t = y_lo + (y_hi - y_lo) * i / 5
        y = py(t)
        parts.append(
            f'<line x1="{M_LEFT}" y1="{_fmt(y)}" x2="{M_LEFT + plot_w}" y2="{_fmt(y)}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{M_LEFT - 8}" y="{_fmt(y + 4)}" text-anchor="end" font-size="12" '
            f'fill="{TEXT}">{_tick_label(t)}</text>'
        )
    if reference_y is not None and y_lo < reference_y < y_hi:
        y = py(reference_y)
        parts.append(
            f'<line x1="{M_LEFT}" y1="{_fmt(y)}" x2="{M_LEFT + plot_w}" y2="{_fmt(y)}" '
            f'stroke="#6b7280" stroke-width="1" stroke-dasharray="2 4"/>'
        )
    parts.append(
        f'<rect x="{M_LEFT}" y="{M_TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
        f'stroke="#9aa3af"/>'
        f'<text x="{M_LEFT + plot_w / 2}" y="{H - 30}" text-anchor="middle" font-size="13" '
        f'fill="{TEXT}">{escape(x_label)}{" (log scale)" if log_x else ""}</text>'
        f'<text x="14" y="{M_TOP + plot_h / 2}" text-anchor="middle" font-size="13" '
        f'fill="{TEXT}" transform="rotate(-90 14 {M_TOP + plot_h / 2})">{escape(y_label)}</text>'
    )
    # Bands first (under every line), then curves, lines and markers.
    for s in series:
        band = [(x, lo, hi) for x, _, lo, hi in s.points if lo is not None and hi is not None]
        if len(band) >= 2:
            upper = " ".join(f"{_fmt(px(x))},{_fmt(py(hi))}" for x, _, hi in band)
            lower = " ".join(f"{_fmt(px(x))},{_fmt(py(lo))}" for x, lo, _ in reversed(band))
            parts.append(
                f'<polygon class="band" points="{upper} {lower}" fill="{s.colour}" '
                f'fill-opacity="0.15" stroke="none"/>'
            )
        elif len(band) == 1:
            x, lo, hi = band[0]
            parts.append(
                f'<line class="band" x1="{_fmt(px(x))}" y1="{_fmt(py(lo))}" x2="{_fmt(px(x))}" '
                f'y2="{_fmt(py(hi))}" stroke="{s.colour}" stroke-opacity="0.4" stroke-width="6"/>'
            )
    for s in series:
        if s.curve:
            pts = " ".join(f"{_fmt(px(x))},{_fmt(py(y))}" for x, y in s.curve)
            parts.append(
                f'<polyline class="fit" points="{pts}" fill="none" stroke="{s.colour}" '
                f'stroke-width="1.5" stroke-dasharray="6 4"/>'
            )
        if len(s.points) >= 2:
            pts = " ".join(f"{_fmt(px(x))},{_fmt(py(y))}" for x, y, _, _ in s.points)
            parts.append(
                f'<polyline class="line" points="{pts}" fill="none" stroke="{s.colour}" '
                f'stroke-width="2"/>'
            )
        for x, y, lo, hi in s.points:
            ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
            parts.append(
                f'<circle class="pt" cx="{_fmt(px(x))}" cy="{_fmt(py(y))}" r="4" '
                f'fill="{s.colour}"><title>{escape(s.name)}: {x:g} labels, {y:.3f}{ci}</title>'
                f"</circle>"
            )
    # Legend along the bottom.
    lx = M_LEFT
    for s in series:
        parts.append(
            f'<rect x="{lx}" y="{H - 18}" width="12" height="12" fill="{s.colour}"/>'
            f'<text x="{lx + 16}" y="{H - 8}" font-size="12" fill="{TEXT}">'
            f"{escape(s.name[:40])}</text>"
        )
        lx += 24 + 7 * min(len(s.name), 40)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every data string is escaped above)


def bar_chart(
    bars: Sequence[tuple[str, float | None, str]],
    *,
    kind: str,
    label: str,
    y_label: str,
    y_range: tuple[float, float] = (0.0, 1.0),
) -> SafeString:
    """Vertical bars ``(category, value or None, tooltip)``; None draws no bar."""
    drawn = [b for b in bars if b[1] is not None]
    if not drawn:
        return _empty(kind, label, "No data yet.")
    y_lo, y_hi = y_range
    plot_w, plot_h = W - M_LEFT - M_RIGHT, H - M_TOP - M_BOTTOM
    step = plot_w / len(bars)
    parts = _svg_open(kind, label, len(drawn))
    for i in range(6):
        t = y_lo + (y_hi - y_lo) * i / 5
        y = M_TOP + (1 - i / 5) * plot_h
        parts.append(
            f'<line x1="{M_LEFT}" y1="{_fmt(y)}" x2="{M_LEFT + plot_w}" y2="{_fmt(y)}" '
            f'stroke="{GRID}"/><text x="{M_LEFT - 8}" y="{_fmt(y + 4)}" text-anchor="end" '
            f'font-size="12" fill="{TEXT}">{_tick_label(t)}</text>'
        )
    for i, (name, value, tip) in enumerate(bars):
        cx = M_LEFT + step * (i + 0.5)
        parts.append(
            f'<text x="{_fmt(cx)}" y="{M_TOP + plot_h + 18}" text-anchor="middle" '
            f'font-size="12" fill="{TEXT}">{escape(name)}</text>'
        )
        if value is None:
            continue
        f = (min(max(value, y_lo), y_hi) - y_lo) / (y_hi - y_lo)
        top = M_TOP + (1 - f) * plot_h
        parts.append(
            f'<rect class="pt" x="{_fmt(cx - step * 0.3)}" y="{_fmt(top)}" '
            f'width="{_fmt(step * 0.6)}" height="{_fmt(M_TOP + plot_h - top)}" '
            f'fill="{PALETTE[0]}"><title>{escape(tip)}</title></rect>'
            f'<text x="{_fmt(cx)}" y="{_fmt(top - 5)}" text-anchor="middle" font-size="12" '
            f'fill="{TEXT}">{value:.3g}</text>'
        )
    parts.append(
        f'<text x="14" y="{M_TOP + plot_h / 2}" text-anchor="middle" font-size="13" '
        f'fill="{TEXT}" transform="rotate(-90 14 {M_TOP + plot_h / 2})">{escape(y_label)}</text>'
        "</svg>"
    )
    return mark_safe("".join(parts))  # noqa: S308 (every data string is escaped above)


def box_chart(
    groups: Sequence[tuple[str, tuple[float, float, float, float, float] | None, list[float]]],
    *,
    kind: str,
    label: str,
    y_label: str,
) -> SafeString:
    """One box (quartiles, whiskers at min and max) per group, with its raw values as dots."""
    values = [v for _, _, vs in groups for v in vs]
    if not values:
        return _empty(kind, label, "No data yet.")
    y_lo, y_hi = min(values), max(values)
    if y_lo == y_hi:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    pad = (y_hi - y_lo) * 0.05
    y_lo, y_hi = y_lo - pad, y_hi + pad
    plot_w, plot_h = W - M_LEFT - M_RIGHT, H - M_TOP - M_BOTTOM

    def py(v: float) -> float:
        return M_TOP + (1 - (v - y_lo) / (y_hi - y_lo)) * plot_h

    step = plot_w / len(groups)
    parts = _svg_open(kind, label, len(values))
    for i in range(6):
        t = y_lo + (y_hi - y_lo) * i / 5
        parts.append(
            f'<line x1="{M_LEFT}" y1="{_fmt(py(t))}" x2="{M_LEFT + plot_w}" y2="{_fmt(py(t))}" '
            f'stroke="{GRID}"/><text x="{M_LEFT - 8}" y="{_fmt(py(t) + 4)}" text-anchor="end" '
            f'font-size="12" fill="{TEXT}">{t:.3g}</text>'
        )
    for i, (name, q, vs) in enumerate(groups):
        cx = M_LEFT + step * (i + 0.5)
        half = min(step * 0.3, 30)
        parts.append(
            f'<text x="{_fmt(cx)}" y="{M_TOP + plot_h + 18}" text-anchor="middle" '
            f'font-size="12" fill="{TEXT}">{escape(name)}</text>'
        )
        if q is None:
            continue
        lo, q1, med, q3, hi = q
        parts.append(
            f'<line x1="{_fmt(cx)}" y1="{_fmt(py(lo))}" x2="{_fmt(cx)}" y2="{_fmt(py(hi))}" '
            f'stroke="{TEXT}"/>'
            f'<rect class="box" x="{_fmt(cx - half)}" y="{_fmt(py(q3))}" width="{_fmt(2 * half)}" '
            f'height="{_fmt(max(py(q1) - py(q3), 1))}" fill="#e8f0fb" stroke="{PALETTE[0]}"/>'
            f'<line x1="{_fmt(cx - half)}" y1="{_fmt(py(med))}" x2="{_fmt(cx + half)}" '
            f'y2="{_fmt(py(med))}" stroke="{PALETTE[0]}" stroke-width="2"/>'
        )
        for v in vs:
            parts.append(
                f'<circle class="pt" cx="{_fmt(cx + half * 1.4)}" cy="{_fmt(py(v))}" r="2.5" '
                f'fill="{PALETTE[1]}" fill-opacity="0.7"><title>{v:.4g}</title></circle>'
            )
    parts.append(
        f'<text x="14" y="{M_TOP + plot_h / 2}" text-anchor="middle" font-size="13" '
        f'fill="{TEXT}" transform="rotate(-90 14 {M_TOP + plot_h / 2})">{escape(y_label)}</text>'
        "</svg>"
    )
    return mark_safe("".join(parts))  # noqa: S308 (every data string is escaped above)


def timeline_chart(rows: Sequence, *, kind: str = "rounds", label: str) -> SafeString:
    """One horizontal bar per round, split into the states it spent time in."""
    rows = [r for r in rows if r.segments]
    if not rows:
        return _empty(kind, label, "No rounds yet.")
    row_h = 22
    height = M_TOP + row_h * len(rows) + 56
    t0 = min(r.segments[0].start for r in rows)
    t1 = max(r.segments[-1].end for r in rows)
    total = max((t1 - t0).total_seconds(), 1.0)
    plot_w = W - M_LEFT - M_RIGHT

    def px(t) -> float:
        return M_LEFT + (t - t0).total_seconds() / total * plot_w

    parts = _svg_open(kind, label, sum(len(r.segments) for r in rows), height)
    for i, r in enumerate(rows):
        y = M_TOP + i * row_h
        parts.append(
            f'<text x="{M_LEFT - 8}" y="{y + 15}" text-anchor="end" font-size="12" '
            f'fill="{TEXT}">round {r.index}</text>'
        )
        for s in r.segments:
            x0, x1 = px(s.start), px(s.end)
            colour = STATE_COLOURS.get(s.state, "#9aa3af")
            parts.append(
                f'<rect class="pt" x="{_fmt(x0)}" y="{y + 3}" width="{_fmt(max(x1 - x0, 1.5))}" '
                f'height="{row_h - 6}" fill="{colour}"><title>round {r.index} {escape(s.state)}: '
                f"{s.seconds:.0f} s</title></rect>"
            )
    lx = M_LEFT
    ly = height - 30
    for state, colour in STATE_COLOURS.items():
        parts.append(
            f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{lx + 16}" y="{ly + 10}" font-size="12" fill="{TEXT}">{state}</text>'
        )
        lx += 24 + 7 * len(state)
    parts.append(
        f'<text x="{W - M_RIGHT}" y="{height - 4}" text-anchor="end" font-size="12" '
        f'fill="{TEXT}">{total / 60:.1f} min in all</text></svg>'
    )
    return mark_safe("".join(parts))  # noqa: S308 (every data string is escaped above)
