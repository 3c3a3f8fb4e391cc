#!/usr/bin/env python3
"""The benchmark table as a picture: per-request cost and Envoy RSS per variant.

`make bench` runs it after benches/run.py: it reads the first table of
benches/RESULTS.md, writes benches/results.svg beside it and makes sure the
report embeds it right under the table. `--check` (run by `make test`)
fails when the committed SVG is not what the committed table draws, so the
picture cannot drift from the numbers.

    python3 benches/chart.py benches/RESULTS.md          # write
    python3 benches/chart.py benches/RESULTS.md --check  # compare
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

SVG_NAME = "results.svg"
EMBED = f"![Per-request cost and Envoy RSS per variant]({SVG_NAME})"
COST_COLUMN = "per-request cost (µs)"
RSS_COLUMN = "Envoy RSS (MiB)"

ROW_H = 22
CHAR_W = 6.7  # average width of a 12 px sans-serif character
BAR_W = 300
GAP = 40
TOP = 56


def number(cell: str) -> float | None:
    """The first number of a cell (`16.9 (16.6…18.3)`, `0 (baseline)`, `1,056.7`)."""
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?", cell)
    return float(m.group(0).replace(",", "")) if m else None


def table(markdown: str) -> list[tuple[str, float, float]]:
    """(variant, per-request cost µs, RSS MiB) for every row of the first table."""
    lines = markdown.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("| variant |")), None)
    if start is None:
        raise ValueError("no '| variant |' table")
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    try:
        cost_at, rss_at = header.index(COST_COLUMN), header.index(RSS_COLUMN)
    except ValueError as e:
        raise ValueError(f"table columns changed: {e}") from e
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        cost, rss = number(cells[cost_at]), number(cells[rss_at])
        if cost is not None and rss is not None:
            rows.append((cells[0], cost, rss))
    if not rows:
        raise ValueError("the table has no rows with both figures")
    return rows


def svg(rows: list[tuple[str, float, float]]) -> str:
    """Two bar panels side by side, one row per variant."""
    label_w = int(max(len(r[0]) for r in rows) * CHAR_W) + 16
    width = label_w + 2 * BAR_W + GAP + 80
    height = TOP + ROW_H * len(rows) + 30
    cost_max = max(r[1] for r in rows) or 1.0
    rss_max = max(r[2] for r in rows) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{label_w}" y="22" font-size="14" font-weight="bold">'
        "Per-request cost over router only (µs)</text>",
        f'<text x="{label_w + BAR_W + GAP}" y="22" font-size="14" font-weight="bold">'
        "Envoy RSS (MiB)</text>",
        f'<text x="{label_w}" y="40" fill="#555">p50 with one connection minus router only; '
        "median over rounds (benches/RESULTS.md)</text>",
    ]
    for i, (name, cost, rss) in enumerate(rows):
        y = TOP + i * ROW_H
        out.append(
            f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{escape(name)}</text>'
        )
        for x0, value, top, colour in (
            (label_w, cost, cost_max, "#3b6fb6"),
            (label_w + BAR_W + GAP, rss, rss_max, "#c9772b"),
        ):
            w = max(value / top * BAR_W, 0.0)
            out.append(
                f'<rect x="{x0}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 6}" fill="{colour}"/>'
            )
            out.append(f'<text x="{x0 + w + 4:.1f}" y="{y + 14}">{value:g}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def embedded(markdown: str) -> str:
    """The report with the picture right under its first table."""
    if EMBED in markdown:
        return markdown
    lines = markdown.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("| variant |"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[end:end] = ["", EMBED]
    return "\n".join(lines) + ("\n" if markdown.endswith("\n") else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    markdown = args.report.read_text()
    picture = svg(table(markdown))
    ET.fromstring(picture)  # well-formed, or this raises
    target = args.report.parent / SVG_NAME
    if args.check:
        problems = []
        if EMBED not in markdown:
            problems.append(f"{args.report} does not embed {SVG_NAME}")
        if not target.is_file() or target.read_text() != picture:
            problems.append(f"{target} is not what {args.report}'s table draws")
        for p in problems:
            print(f"chart.py: {p}: run `python3 benches/chart.py {args.report}`", file=sys.stderr)
        return 1 if problems else 0
    target.write_text(picture)
    args.report.write_text(embedded(markdown))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
