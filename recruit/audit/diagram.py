"""Lay out a CONSORT-style flow diagram: boxes and arrows, drawn as inline SVG by the template.

The main column runs down the page (records searched, candidates, screened, approved, invited,
replied); the people who leave the flow at each stage go into a box to the right, listed by
reason; the replies split into a row of boxes at the bottom. Positions are worked out here so the
template only draws; text is data and the template escapes it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

CHAR = 6.6  # average width of one character at the diagram's 12px font, in SVG units
LINE = 16
PAD = 8
MAIN_X, MAIN_W = 10, 250
SIDE_X, SIDE_W = 300, 420
WIDTH = SIDE_X + SIDE_W + 10
GAP = 26


@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float
    lines: list[tuple[str, bool]]  # (text, bold)
    kind: str = "main"


@dataclass
class Diagram:
    title: str
    width: float = WIDTH
    height: float = 0
    boxes: list[Box] = field(default_factory=list)
    arrows: list[tuple[float, float, float, float]] = field(default_factory=list)
    lines: list[tuple[float, float, float, float]] = field(default_factory=list)  # no arrowhead

    @property
    def print_width_mm(self) -> float:
        """Printed, the whole diagram fits on an A4 page below a heading: at most 160mm tall."""
        return min(180.0, 160.0 * self.width / self.height) if self.height else 180.0


def _lines(heading: str, count: str, items: list[tuple[str, str]], width: float) -> list[tuple[str, bool]]:
    chars = max(12, int((width - 2 * PAD) / CHAR))
    out = [(line, True) for line in textwrap.wrap(f"{heading} (n = {count})", chars)]
    for label, n in items:
        wrapped = textwrap.wrap(f"{label}: {n}", chars - 2) or [""]
        out.append((f"\u2022 {wrapped[0]}", False))
        out += [(f"  {more}", False) for more in wrapped[1:]]
    return out


def _height(lines: list[tuple[str, bool]]) -> float:
    return len(lines) * LINE + 2 * PAD - 4


def flow_diagram(
    title: str, text: Callable[[str], str], steps: list[tuple[str, str]], review: list[str]
) -> Diagram:
    """text(item) gives a figure as shown; steps are (item, label) for each rule step's exclusions,
    review the review.reason.* items."""
    d = Diagram(title)
    y = 10.0

    def main(heading: str, item: str) -> Box:
        nonlocal y
        lines = [(line, True) for line in textwrap.wrap(heading, int((MAIN_W - 2 * PAD) / CHAR))]
        lines.append((f"n = {text(item)}", False))
        box = Box(MAIN_X, y, MAIN_W, _height(lines), lines)
        d.boxes.append(box)
        y += box.h
        return box

    def side(heading: str, item: str, items: list[tuple[str, str]]) -> None:
        nonlocal y
        lines = _lines(heading, text(item), items, SIDE_W)
        h = _height(lines)
        top = y + GAP
        box = Box(SIDE_X, top, SIDE_W, h, lines, kind="side")
        d.boxes.append(box)
        mid = top + h / 2
        d.arrows.append((MAIN_X + MAIN_W / 2, mid, SIDE_X, mid))
        y = top + h + GAP

    def down(start: Box) -> None:
        d.arrows.append((MAIN_X + MAIN_W / 2, start.y + start.h, MAIN_X + MAIN_W / 2, y))

    box = main("Records searched", "searched")
    side("Excluded by the search rules", "excluded_by_rules", [(label, text(item)) for item, label in steps])
    down(box)
    box = main("Candidates for the GP to review", "candidates")
    side("Not yet reviewed", "review.awaiting", [])
    down(box)
    box = main("Screened by the GP", "review.screened")
    side(
        "Excluded at GP review",
        "review.excluded",
        [(label, text(item)) for item, label in ((r, _reason(r)) for r in review)],
    )
    down(box)
    box = main("Approved for a letter", "review.approved")
    side(
        "Not sent a letter",
        "letters.not_sent",
        [
            ("Letter written, not yet sent", text("letters.drafted")),
            ("No letter written", text("letters.not_written")),
        ],
    )
    down(box)
    box = main("Invited (letter sent)", "letters.invited")
    side("No reply yet", "replies.none", [])
    down(box)
    box = main("Replied", "replies.replied")
    y += GAP
    outcomes = [
        ("Interested", "replies.interested"),
        ("Declined", "replies.declined"),
        ("Now in work", "replies.now_in_work"),
        ("Other reply", "replies.other"),
    ]
    w = (WIDTH - 20 - 3 * 10) / 4
    lines_each = [[(heading, True), (f"n = {text(item)}", False)] for heading, item in outcomes]
    h = max(_height(lines) for lines in lines_each)
    fork = y - GAP / 2
    d.lines.append((MAIN_X + MAIN_W / 2, box.y + box.h, MAIN_X + MAIN_W / 2, fork))
    for i, lines in enumerate(lines_each):
        x = 10 + i * (w + 10)
        d.boxes.append(Box(x, y, w, h, lines, kind="outcome"))
        d.arrows.append((x + w / 2, fork, x + w / 2, y))
    d.lines.append((10 + w / 2, fork, 10 + 3 * (w + 10) + w / 2, fork))
    d.height = y + h + 10
    return d


def _reason(item: str) -> str:
    from .figures import review_reason_label

    return review_reason_label(item.removeprefix("review.reason."))
