"""Small charts drawn on the server as inline SVG: no script and no outside file, so the admin pages keep their strict
Content-Security-Policy (`default-src 'none'`). Numbers are escaped; the SVG scales to its box (`viewBox`)."""

from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT = 600, 120
LIVE, BACKFILL, ERROR, LIMIT = "#3b6fd8", "#9bb7ef", "#c0392b", "#a3161a"


def calls_per_minute(
    system: str, live: list[int], backfill: list[int], errors: list[int], limit: float | None
) -> Markup:
    """Bars of calls per minute (oldest left, this minute right): live below, backfill stacked on top, a red tick
    where calls failed; a dashed line at the limit."""
    n = max(1, len(live))
    peak = max((a + b for a, b in zip(live, backfill, strict=True)), default=0)
    top = max(1.0, float(peak), (limit or 0.0) * 1.15)
    bar = WIDTH / n
    parts: list[str] = []
    for i, (a, b) in enumerate(zip(live, backfill, strict=True)):
        x = i * bar + bar * 0.1
        w = bar * 0.8
        h_live = HEIGHT * a / top
        h_back = HEIGHT * b / top
        if a:
            parts.append(_rect(x, HEIGHT - h_live, w, h_live, LIVE))
        if b:
            parts.append(_rect(x, HEIGHT - h_live - h_back, w, h_back, BACKFILL))
        if errors[i]:
            parts.append(_rect(x, HEIGHT - 3, w, 3, ERROR))
    if limit:
        y = HEIGHT - HEIGHT * limit / top
        parts.append(
            f'<line x1="0" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}" stroke="{LIMIT}" stroke-width="1.5" '
            'stroke-dasharray="6 4" />'
        )
    title = f"{system}: calls per minute over the last hour (peak {peak})" + (
        f"; limit {limit:g} a minute" if limit else ""
    )
    svg = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fff" />{"".join(parts)}</svg>'
    )
    return Markup(svg)  # noqa: S704 - built from numbers and escaped text only


def backlog_bar(parts: dict[str, int]) -> Markup:
    """One horizontal bar split by lane (live, backfill, resync, waiting for a later try, paused)."""
    colours = {"live": LIVE, "backfill": BACKFILL, "resync": "#6aa84f", "later": "#f0c27b", "paused": "#8a8f98"}
    total = sum(parts.values())
    if not total:
        return Markup('<svg class="backlog" viewBox="0 0 600 16" preserveAspectRatio="none" role="img" '
                      'aria-label="no backlog" xmlns="http://www.w3.org/2000/svg"><rect x="0" y="0" width="600" '
                      'height="16" fill="#eef1f5" /></svg>')  # fmt: skip
    x = 0.0
    rects = []
    for lane, colour in colours.items():
        n = parts.get(lane, 0)
        if n:
            w = 600 * n / total
            rects.append(f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="16" fill="{colour}" />')
            x += w
    label = ", ".join(f"{lane} {n}" for lane, n in parts.items() if n)
    return Markup(  # noqa: S704 - numbers and escaped text only
        f'<svg class="backlog" viewBox="0 0 600 16" preserveAspectRatio="none" role="img" '
        f'aria-label="backlog: {escape(label)}" xmlns="http://www.w3.org/2000/svg"><title>backlog: {escape(label)}'
        f"</title>{''.join(rects)}</svg>"
    )


def _rect(x: float, y: float, w: float, h: float, fill: str) -> str:
    return f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" fill="{fill}" />'
