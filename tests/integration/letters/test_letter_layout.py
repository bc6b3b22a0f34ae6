"""Where things land on the page: nothing overlaps, pictures sit beside easy-read points, the
small print is off the first page, the reply slip's heading stays clear of the study-number box,
and study numbers print at least 12 pt (16 pt in large print and easy read).

Read from WeasyPrint's own layout boxes (the boxes it draws), not from guesses about the CSS."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import pytest

from recruit.letters.check import SAMPLE_GP, SAMPLE_NUMBER, SAMPLE_PRACTICE, sample_settings
from recruit.letters.numbers import new_study_number
from recruit.letters.pdf import (
    _fetch_nothing,
    number_places,
    number_size_and_place,
    render_html,
    weasyprint_html,
)
from recruit.letters.render import FORMATS, LetterTemplates, PackKey, long_date, study_variables

MM = 96 / 25.4  # CSS pixels per millimetre
A4_HEIGHT_PT = 841.89
SLACK = 0.5  # px: rounding in layout


@dataclass(frozen=True)
class Rect:
    what: str
    x1: float
    y1: float
    x2: float
    y2: float

    def overlaps(self, other: Rect) -> bool:
        return (
            min(self.x2, other.x2) - max(self.x1, other.x1) > SLACK
            and min(self.y2, other.y2) - max(self.y1, other.y1) > SLACK
        )


def _pack_html(letter_format: str, short_title: str | None = None, draft: bool = False) -> str:
    templates = LetterTemplates()
    study = study_variables(sample_settings())
    if short_title:
        study["short_title"] = short_title
    pack = templates.pack_html(
        PackKey(letter_format, SAMPLE_PRACTICE, SAMPLE_GP), study, long_date(dt.date(2026, 3, 4))
    )
    return templates.document([pack], draft=draft, title="layout")


def _layout(html: str):
    return weasyprint_html()(string=html, base_url=None, url_fetcher=_fetch_nothing).render()


def _rect(box, what: str) -> Rect:
    x, y = box.border_box_x(), box.border_box_y()
    return Rect(what, x, y, x + box.border_width(), y + box.border_height())


def _drawn(page) -> list[Rect]:
    """What is drawn on a page: each piece of text, each picture, and the study-number boxes."""
    from weasyprint.formatting_structure import boxes

    found = []
    for box in page._page_box.descendants(placeholders=True):
        element_id = box.element.get("id") if box.element is not None else None
        if isinstance(box, boxes.TextBox) and box.text.strip():
            found.append(_rect(box, f"text {box.text.strip()[:30]!r}"))
        elif isinstance(box, boxes.ReplacedBox):
            found.append(_rect(box, "picture"))
        elif element_id in ("number-place", "slip-number-place") and not isinstance(box, boxes.LineBox):
            found.append(_rect(box, element_id))
    return found


CASES = [(f, None, False) for f in FORMATS] + [
    # A long study name wraps the slip's heading onto two lines; a draft adds its mark.
    (f, "Supporting people with long-term pain back into work", True)
    for f in FORMATS
]


@pytest.mark.parametrize(("letter_format", "short_title", "draft"), CASES)
def test_nothing_drawn_overlaps(letter_format, short_title, draft):
    document = _layout(_pack_html(letter_format, short_title, draft))
    assert len(document.pages) >= 3
    for page_no, page in enumerate(document.pages):
        drawn = _drawn(page)
        assert len(drawn) > 3
        clashes = [(a.what, b.what) for a, b in itertools.combinations(drawn, 2) if a.overlaps(b)]
        assert not clashes, f"{letter_format} page {page_no + 1}: {clashes[:5]}"
        if page_no == 0:
            # The envelope window and "Dear ..." (printed from patient_slots.html.j2) stay empty.
            window = Rect("window", 20 * MM, 50 * MM, 110 * MM, 85 * MM)
            salutation = Rect("salutation", 20 * MM, 91 * MM, 190 * MM, 108 * MM)
            assert not [r.what for r in drawn if r.overlaps(window) or r.overlaps(salutation)]


@pytest.mark.parametrize("letter_format", list(FORMATS))
def test_slip_heading_is_above_the_number_box(letter_format):
    document = _layout(_pack_html(letter_format, "Supporting people with long-term pain back into work"))
    page = document.pages[-1]
    drawn = _drawn(page)
    box = next(r for r in drawn if r.what == "slip-number-place")
    heading = [r for r in drawn if r.what.startswith("text") and r.y2 <= box.y1 + SLACK]
    assert any("reply" in r.what for r in heading), "the heading is not above the box"


def test_every_easy_read_point_has_a_picture_beside_it():
    from weasyprint.formatting_structure import boxes

    document = _layout(_pack_html("easy_read"))
    points = 0
    for page in document.pages:
        for box in page._page_box.descendants(placeholders=True):
            if box.element is None or "point" not in (box.element.get("class") or "").split():
                continue
            if not isinstance(box, boxes.ParentBox) or not box.children:
                continue
            pictures = [b for b in box.descendants() if isinstance(b, boxes.ReplacedBox)]
            text = [b for b in box.descendants() if isinstance(b, boxes.TextBox) and b.text.strip()]
            if not pictures:
                continue  # the rest of a point that runs onto the next page
            points += 1
            picture = _rect(pictures[0], "picture")
            first_line = _rect(text[0], "text")
            assert picture.x2 <= first_line.x1 + SLACK  # to the left of the words ...
            assert picture.y1 < first_line.y2 and first_line.y1 < picture.y2  # ... beside them
            assert picture.x2 - picture.x1 >= 15 * MM
    assert points >= 8


def test_every_pictogram_says_what_it_shows():
    html = _pack_html("easy_read")
    assert html.count("<svg") >= 8
    assert html.count("<svg") == html.count("<title>Picture: ")


@pytest.mark.parametrize("letter_format", list(FORMATS))
def test_small_print_is_not_on_the_first_page(letter_format):
    doc = render_html(_pack_html(letter_format))
    assert doc.page_of("small-print") not in (None, 0)


@pytest.mark.parametrize(
    ("letter_format", "smallest"), [("standard", 12), ("large_print", 16), ("easy_read", 16)]
)
def test_study_numbers_print_large_enough(letter_format, smallest):
    doc = render_html(_pack_html(letter_format))
    places = number_places(doc)
    numbers = [SAMPLE_NUMBER, *(new_study_number("INSTEP") for _ in range(50)), "INSTEPAB-MMMM-WWMM0"[:17]]
    for page, box in places.items():
        letter_page = page < doc.page_count - 1
        for number in numbers:
            size, left, _baseline = number_size_and_place(number, box, A4_HEIGHT_PT)
            # The letter's box follows the format; the reply slip's is 16 pt or more in all.
            assert size >= (smallest if letter_page else 16), (letter_format, page, number, size)
            assert left >= box[0] * 0.75
