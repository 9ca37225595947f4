"""The daily processed/failed chart, drawn server-side as inline SVG (no JavaScript, no library).

Processed counts every finished attempt and failed the failed ones (Asynq's counters), so a day's
bar is processed tall with its failed part drawn on top in another colour. Each bar carries a
``<title>`` (a tooltip and a name for screen readers) and the whole chart a text summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape

from asynq_aio._inspection import DailyStats

__all__ = ["daily_totals", "history_svg"]

WIDTH = 560
HEIGHT = 170
TOP = 14
BOTTOM = 24  # room for the date labels
LEFT = 44  # room for the scale


def daily_totals(stats: Sequence[DailyStats]) -> list[tuple[date, int, int]]:
    """Sum the rows of many queues per day: ``(day, processed, failed)``, oldest day first."""
    by_day: dict[date, tuple[int, int]] = {}
    for s in stats:
        p, f = by_day.get(s.date, (0, 0))
        by_day[s.date] = (p + s.processed, f + s.failed)
    return [(d, p, f) for d, (p, f) in sorted(by_day.items())]


def history_svg(days: Sequence[tuple[date, int, int]], *, label: str) -> Markup:
    """An SVG bar chart of ``(day, processed, failed)`` rows (oldest first), labelled ``label``."""
    n = max(len(days), 1)
    peak = max([p for _, p, _ in days] + [f for _, _, f in days] + [1])
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT) / n
    bar_w = max(slot * 0.6, 2.0)
    total_p = sum(p for _, p, _ in days)
    total_f = sum(f for _, _, f in days)
    summary = f"{label}: {total_p} processed, {total_f} failed over {len(days)} days"
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(summary)}"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(summary)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}"/>',
        f'<text class="scale" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{peak}</text>',
        f'<text class="scale" x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for i, (day, processed, failed) in enumerate(days):
        x = LEFT + i * slot + (slot - bar_w) / 2
        h_p = plot_h * processed / peak
        h_f = plot_h * min(failed, processed or failed) / peak
        base = TOP + plot_h
        tip = escape(f"{day.isoformat()}: {processed} processed, {failed} failed")
        parts.append(f"<g><title>{tip}</title>")
        parts.append(
            f'<rect class="bar-ok" x="{x:.1f}" y="{base - h_p:.1f}" width="{bar_w:.1f}" height="{h_p:.1f}"/>'
        )
        if failed:
            parts.append(
                f'<rect class="bar-failed" x="{x:.1f}" y="{base - h_p:.1f}" width="{bar_w:.1f}"'
                f' height="{h_f:.1f}"/>'
            )
        parts.append("</g>")
        parts.append(
            f'<text class="day" x="{x + bar_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
            f"{day:%m-%d}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
