"""`recruit letters check`: every letter template has every element a letter must have, printed.

Each required element is marked in the templates with data-required="<element>". The check
renders every format with made-up sample details through the same path as real letters and
fails, naming the template and the element, when an element is missing, empty, lacks the
detail it must show (the contact's telephone and email, the GP's name, the ethics and IRAS
references, ...), or does not appear in the text of the printed PDF (hidden, say, by CSS). It
also checks that the reply slip carries the study number and never the patient's name or NHS
number, and that patient details are printed as text, never as markup.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

from recruit.letters.render import (
    FORMATS,
    SLOTS_TEMPLATE,
    GPView,
    Letter,
    LetterTemplates,
    PackKey,
    PatientView,
    PracticeView,
    TemplateProblem,
    long_date,
    study_variables,
)
from recruit.letters.study import StudySettings, parse_study_settings

if TYPE_CHECKING:
    from pypdf import PdfReader

    from recruit.letters.pdf import Mapper

# element -> (what a person calls it, values from the sample it must show)
PACK_ELEMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "letterhead": ("the practice letterhead", ("practice.name", "practice.postcode")),
    "why_you": ("why the patient got the letter", ()),
    "records": ("how their records were looked at, and that the researchers do not have their details", ()),
    "not_jobcentre": ("that the letter is not from the Jobcentre", ()),
    "voluntary": ("the statement that taking part is voluntary", ()),
    "interested": ("how to say yes", ()),
    "decline": ("how to decline", ()),
    "opt_out": ("how to opt out of further contact", ()),
    "now_in_work": ("what to do if they are now in paid work", ()),
    "no_paperwork": ("that there are no forms to fill in", ()),
    "contact": ("the contact details", ("study.contact.telephone", "study.contact.email")),
    "other_formats": ("how to get the letter in other formats", ()),
    "gp_signature": ("the GP signature block", ("gp.name",)),
    "study_reference": ("the study reference", ("study.ethics_reference", "study.iras_reference")),
    "reply_slip": ("the reply slip", ()),
    "reply_interested": ("the reply slip's 'interested' box", ()),
    "reply_not_interested": ("the reply slip's 'not interested' box", ()),
    "reply_do_not_contact": ("the reply slip's 'do not contact me again' box", ()),
    "reply_now_in_work": ("the reply slip's 'I am now in paid work' box", ()),
    "reply_in_work_question": ("the reply slip's question 'Are you in paid work at the moment?'", ()),
}
# Empty boxes, filled in by recruit: present, not necessarily with text.
PLACE_ELEMENTS = {"study_number_place": ("the boxes where the study number is printed", 2)}
SLOT_ELEMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "address_window": (
        "the name and address in the envelope window",
        ("patient.full_name", "patient.postcode"),
    ),
    "salutation": ('"Dear ..."', ("patient.salutation",)),
}

SAMPLE_STUDY = """\
code: sample
status: approved
title: Sample study title for the template check
short_title: SAMPLESTUDY
sponsor: Sample Sponsor University
research_team: the sample research team
ethics_committee: Sample Ethics Committee
ethics_reference: 99/ZZ/0999
iras_reference: "999111"
document_version: "9.9"
document_date: 2026-01-02
contact: {name: Sample Contact, telephone: 0808 157 0999, email: sample-contact@example.org, hours: 9 to 5}
complaints: {name: Sample Complaints, telephone: 0808 157 0998, email: sample-complaints@example.org}
privacy_notice: example.org/sample-privacy
reply_address: [Freepost SAMPLE, Sample Team]
study_number_prefix: SMPL
"""
SAMPLE_PRACTICE = PracticeView(
    "Quillfeather Sample Surgery", "Q99999", ("1 Sample Street", "Sampletown"), "SA1 9ZZ", "01632 960999", ""
)
SAMPLE_GP = GPView("Dr Wrenna Samplesigner", "GP partner")
SAMPLE_PATIENT = PatientView(
    "Ms Zorabel Testpatient", "Ms Testpatient", ("9 Window Lane", "Testtown"), "TE5 7PT"
)
SAMPLE_NHS_NUMBER = "9990001234"
SAMPLE_NUMBER = "SMPL-ABCD-EFGHJ"
HOSTILE_PATIENT = PatientView(
    "<i>Mx</i> {{ 7*7 }}", "<script>x</script>", ("=HYPERLINK(1)", "{% raw %}"), "AB1 2CD"
)


@dataclass(frozen=True)
class Problem:
    template: str
    message: str

    def __str__(self) -> str:
        return f"{self.template}: {self.message}"


class _Marked(HTMLParser):
    """Text inside each data-required element, and text outside data-readability="skip"."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None, bool]] = []
        self.marked: dict[str, list[str]] = {}
        self.nodes: dict[str, list[str]] = {}
        self.open_marks: list[tuple[str, int]] = []
        self.readable: list[str] = []
        self.skip_depth = 0
        self.in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        a = dict(attrs)
        mark = a.get("data-required")
        skip = a.get("data-readability") == "skip"
        self.stack.append((tag, mark, skip))
        if mark:
            self.marked.setdefault(mark, [])
            self.marked[mark].append("")
            self.open_marks.append((mark, len(self.marked[mark]) - 1))
        if skip:
            self.skip_depth += 1
        if tag in ("style", "title"):
            self.in_style = True
        if tag in ("p", "li", "div", "h2", "br"):
            self._text(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID or not self.stack:
            return
        while self.stack:
            open_tag, mark, skip = self.stack.pop()
            if mark:
                self.open_marks.pop()
            if skip:
                self.skip_depth -= 1
            if open_tag in ("style", "title"):
                self.in_style = False
            if open_tag == tag:
                break
        if tag == "h2":
            self._text(". ")  # a heading ends a sentence, for the reading-age measure
        elif tag in ("p", "li", "div"):
            self._text(" ")

    def handle_data(self, data: str) -> None:
        if not self.in_style:
            self._text(data)
            if data.strip():
                for mark, _ in self.open_marks:
                    self.nodes.setdefault(mark, []).append(" ".join(data.split()))

    def _text(self, data: str) -> None:
        for mark, index in self.open_marks:
            self.marked[mark][index] += data
        if not self.skip_depth and not self.in_style:
            self.readable.append(data)


def marked_text(html: str) -> dict[str, list[str]]:
    """data-required element -> the text of each occurrence, whitespace collapsed."""
    parser = _Marked()
    parser.feed(html)
    return {k: [" ".join(t.split()) for t in v] for k, v in parser.marked.items()}


def marked_nodes(html: str) -> dict[str, list[str]]:
    """data-required element -> its pieces of text (each printed without a break in between)."""
    parser = _Marked()
    parser.feed(html)
    return parser.nodes


def printed_text(pdf: PdfReader, margin_top_mm: float = 15, margin_bottom_mm: float = 18) -> list[str]:
    """The text of each page of a PDF (a pypdf reader) inside the page margins, in drawing order:
    the footers and marks in the margins are left out."""
    pages = []
    for page in pdf.pages:
        height = float(page.mediabox.height)
        low, high = margin_bottom_mm * 72 / 25.4, height - margin_top_mm * 72 / 25.4
        parts: list[str] = []

        def visit(
            text: str,
            cm: list[float],
            tm: list[float],
            font: object,
            size: float,
            parts: list[str] = parts,
            band: tuple[float, float] = (low, high),
        ) -> None:
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            if band[0] <= y <= band[1]:
                parts.append(text)

        page.extract_text(visitor_text=visit)
        pages.append("".join(parts))
    return pages


def readable_text(html: str) -> str:
    """The text a reading-age measure should see: without letterhead, addresses, contact
    details, references and other parts marked data-readability="skip"."""
    parser = _Marked()
    parser.feed(html)
    return " ".join("".join(parser.readable).split())


def sample_settings() -> StudySettings:
    return parse_study_settings(SAMPLE_STUDY, "<sample study>")


def _value(path: str, sample: dict[str, Any]) -> str:
    value: Any = sample
    for part in path.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return str(value)


def _squash(text: str) -> str:
    # Invisible formatting characters (such as the bidi isolate marks) print nothing.
    return "".join(ch for ch in re.sub(r"\s+", "", text) if unicodedata.category(ch) != "Cf")


def _squash_printed(text: str) -> str:
    # List bullets are drawn after the text of their page, so one can sit between the two halves
    # of a paragraph that runs onto the next page.
    return re.sub(r"[\s\u2022\u25e6\u25aa]+", "", text)


def check_templates(
    templates: LetterTemplates, settings: StudySettings | None = None, map_: Mapper = map
) -> None:
    """Raise TemplateProblem listing every problem, if there is one."""
    problems = find_problems(templates, map_)
    if problems:
        raise TemplateProblem(
            "The letter templates cannot be used:\n" + "\n".join(f"  {p}" for p in problems)
        )


def find_problems(templates: LetterTemplates, map_: Mapper = map) -> list[Problem]:
    """Every missing or broken required element, by template (an empty list when all is well).
    map_ lays out the sample documents (a process pool's map to use several processes)."""
    from recruit.letters.pdf import LetterPages, Stamper, fits, number_places, render_html

    settings = sample_settings()
    study = study_variables(settings)
    sample = {
        "study": study,
        "practice": SAMPLE_PRACTICE,
        "gp": SAMPLE_GP,
        "patient": SAMPLE_PATIENT,
    }
    problems: list[Problem] = []
    day = long_date(dt.date(2026, 3, 4))

    # Patient details: printed only from the slots template, and always as text.
    try:
        slots = templates.slots_html(
            Letter(PackKey("standard", SAMPLE_PRACTICE, SAMPLE_GP), SAMPLE_PATIENT, ""), "s"
        )
        hostile = templates.slots_html(
            Letter(PackKey("standard", SAMPLE_PRACTICE, SAMPLE_GP), HOSTILE_PATIENT, ""), "h"
        )
    except TemplateProblem as exc:
        return [Problem(SLOTS_TEMPLATE, str(exc))]
    slot_marks = marked_text(slots)
    for element, (words, must_show) in SLOT_ELEMENTS.items():
        problems += _element_problems(SLOTS_TEMPLATE, element, words, must_show, slot_marks, sample)
    if "<i>" in hostile or "<script>" in hostile or "49" in hostile:
        problems.append(
            Problem(
                SLOTS_TEMPLATE, "prints patient details as markup or template code; they must print as text"
            )
        )

    htmls: list[str] = []
    for letter_format, name in FORMATS.items():
        key = PackKey(letter_format, SAMPLE_PRACTICE, SAMPLE_GP)
        try:
            pack = templates.pack_html(key, study, day)
        except TemplateProblem as exc:
            problems.append(Problem(name, str(exc)))
            continue
        marks = marked_text(pack)
        for element, (words, must_show) in PACK_ELEMENTS.items():
            problems += _element_problems(name, element, words, must_show, marks, sample)
        for element, (words, count) in PLACE_ELEMENTS.items():
            if len(marks.get(element, [])) < count:
                problems.append(Problem(name, f'lacks {words} (data-required="{element}")'))
        htmls.append(templates.document([pack], draft=False, title="check"))
        htmls.append(
            templates.document(
                [templates.slots_html(Letter(key, SAMPLE_PATIENT, SAMPLE_NUMBER), "s")],
                draft=False,
                title="check",
                slots=True,
            )
        )
    if problems:
        return problems

    # Printed: every element's text must be in the PDF's text, through the real printing path.
    from pypdf import PdfReader

    docs = list(map_(render_html, htmls))
    stamper = Stamper()
    for index, (letter_format, name) in enumerate(FORMATS.items()):
        pack, details = docs[2 * index], docs[2 * index + 1]
        try:
            number_places(pack)
            if pack.page_of("reply-slip") is None:
                raise TemplateProblem('lost id="reply-slip" on the reply slip')
            if pack.page_of("reply-slip") != pack.page_count - 1:
                problems.append(
                    Problem(name, "the reply slip does not fit on one page, or is not the last page")
                )
                continue
            first = details.page_of("s")
            if first is None:
                raise TemplateProblem(f'{SLOTS_TEMPLATE} lost id="{{{{ letter.anchor }}}}"')
            if not (fits(details, "s", "window") and fits(details, "s", "salutation")):
                problems.append(
                    Problem(SLOTS_TEMPLATE, "the sample name and address do not fit their places")
                )
        except Exception as exc:  # noqa: BLE001 - reported, with the template named
            problems.append(Problem(name, str(exc)))
            continue
        target = stamper.new_target()
        stamper.add_letter(target, LetterPages(pack, index, details, 100 + index, first, SAMPLE_NUMBER))
        buffer = io.BytesIO()
        target.writer.write(buffer)
        pages = printed_text(PdfReader(buffer))
        printed = _squash_printed("".join(pages))
        slip = _squash_printed(pages[-1])
        pack_html = templates.pack_html(PackKey(letter_format, SAMPLE_PRACTICE, SAMPLE_GP), study, day)
        for element, texts in marked_nodes(pack_html).items():
            if element in PACK_ELEMENTS and not all(_squash(t) in printed for t in texts):
                problems.append(Problem(name, f"{PACK_ELEMENTS[element][0]} is not printed (hidden?)"))
        for element, texts in marked_nodes(slots).items():
            if element in SLOT_ELEMENTS and not all(_squash(t) in printed for t in texts):
                problems.append(
                    Problem(SLOTS_TEMPLATE, f"{SLOT_ELEMENTS[element][0]} is not printed (hidden?)")
                )
        if printed.count(SAMPLE_NUMBER) < 2 or SAMPLE_NUMBER not in slip:
            problems.append(
                Problem(name, "the study number is not printed on the letter and on the reply slip")
            )
        for private in (SAMPLE_PATIENT.full_name, "Testpatient", SAMPLE_NHS_NUMBER, "WindowLane"):
            if _squash(private) in slip:
                problems.append(
                    Problem(name, "the reply slip shows the patient's name, address or NHS number")
                )
                break
    return problems


def _element_problems(
    template: str,
    element: str,
    words: str,
    must_show: tuple[str, ...],
    marks: dict[str, list[str]],
    sample: dict[str, Any],
) -> list[Problem]:
    texts = marks.get(element)
    if not texts:
        return [Problem(template, f'lacks {words} (data-required="{element}")')]
    if not any(t.strip() for t in texts):
        return [Problem(template, f'{words} (data-required="{element}") is empty')]
    found = " ".join(texts)
    out = []
    for path in must_show:
        value = _value(path, sample)
        if _squash(value) not in _squash(found):
            out.append(Problem(template, f"{words} does not show {path.split('.')[-1].replace('_', ' ')}"))
    return out
