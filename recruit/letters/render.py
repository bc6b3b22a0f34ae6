"""Letter templates to HTML (Jinja2).

Names and addresses are data, never markup: templates run in Jinja's sandbox with autoescaping
on and StrictUndefined, so a missing value is an error and no letter can say "Dear ,"
(shared/reference/letters-and-review.md 5.1).

A letter pack is printed in two layers. The pack itself (letter, signature, small print and
reply slip) is the same for every patient of a practice with the same signing GP and format,
so it is laid out once (a "master"); the patient's details (name and address in the envelope
window, study number, "Dear ...", the number on the reply slip) are laid out per letter in
fixed places (patient_slots.html.j2) and printed over it. Laying text out is what costs time
in WeasyPrint, so this makes a batch many times quicker, and it keeps patient data out of every
template but one: the pack templates are rendered without any patient in their context.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
)
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from recruit.errors import RecruitError
from recruit.resources import shipped_templates

if TYPE_CHECKING:
    import datetime as dt

    from recruit.letters.study import StudySettings

# Letter format -> the template of its pack (letter and reply slip), and the CSS class it uses.
FORMATS: dict[str, str] = {
    "standard": "invitation.html.j2",
    "large_print": "invitation_large_print.html.j2",
    "easy_read": "invitation_easy_read.html.j2",
}
FORMAT_CLASSES = {"standard": "standard", "large_print": "large-print", "easy_read": "easy-read"}
SLOTS_TEMPLATE = "patient_slots.html.j2"
DOCUMENT_TEMPLATE = "document.html.j2"
STYLESHEET = "letters.css"
SLOTS_STYLESHEET = "slots.css"
# Every file a template folder must have.
TEMPLATE_FILES = (
    *FORMATS.values(),
    SLOTS_TEMPLATE,
    DOCUMENT_TEMPLATE,
    "letterhead.html.j2",
    "invitation_text.html.j2",
    "signature.html.j2",
    "references.html.j2",
    "reply_slip.html.j2",
    STYLESHEET,
    SLOTS_STYLESHEET,
)


class TemplateProblem(RecruitError):
    """A letter template cannot be used; the message names the template and what is wrong."""


def templates_dir() -> Path:
    """The letter templates recruit comes with (letter_templates/, shipped in the wheel)."""
    candidate = shipped_templates()
    if (candidate / DOCUMENT_TEMPLATE).is_file():
        return candidate
    raise RecruitError("recruit's letter templates are missing from this installation; reinstall it.")


# --- what the templates see -----------------------------------------------------------------


@dataclass(frozen=True)
class PatientView:
    full_name: str
    salutation: str
    address_lines: tuple[str, ...]
    postcode: str


@dataclass(frozen=True)
class PracticeView:
    name: str
    ods_code: str
    address_lines: tuple[str, ...] = ()
    postcode: str = ""
    telephone: str = ""
    email: str = ""


@dataclass(frozen=True)
class GPView:
    name: str
    role: str = "GP"


@dataclass(frozen=True)
class PackKey:
    """What makes two letters' packs identical: format, practice and signing GP."""

    letter_format: str
    practice: PracticeView
    gp: GPView


@dataclass(frozen=True)
class Letter:
    """One letter: its pack, and the patient details printed over it."""

    pack: PackKey
    patient: PatientView
    study_number: str


def full_name(title: str | None, given: str | None, family: str | None) -> str:
    return " ".join(part.strip() for part in (title, given, family) if part and part.strip())


def salutation(title: str | None, given: str | None, family: str | None) -> str:
    """'Mrs Khan' when there is a title, else 'Amina Khan' (never a bare 'Dear ,')."""
    if title and title.strip() and family and family.strip():
        return f"{title.strip()} {family.strip()}"
    return full_name(None, given, family)


def long_date(day: dt.date) -> str:
    """3 November 2026, as British letters write it."""
    return f"{day.day} {day:%B %Y}"


def study_variables(settings: StudySettings) -> dict[str, Any]:
    """The study settings as templates see them (dates written out)."""
    study = settings.model_dump(mode="json")
    study["document_date"] = long_date(settings.document_date)
    return study


# --- templates ------------------------------------------------------------------------------


class LetterTemplates:
    """A folder of letter templates, compiled once and used for every letter of a batch."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else templates_dir()
        if not self.directory.is_dir():
            raise TemplateProblem(f"The letter template folder {self.directory} does not exist.")
        missing = [name for name in TEMPLATE_FILES if not (self.directory / name).is_file()]
        if missing:
            raise TemplateProblem(
                f"The letter template folder {self.directory} is missing {', '.join(missing)}."
            )
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(self.directory)),
            autoescape=True,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self.css = self._stylesheet(STYLESHEET)
        self.slots_css = self._stylesheet(SLOTS_STYLESHEET)
        self._compiled: dict[str, Template] = {}

    def _stylesheet(self, name: str) -> Markup:
        css = (self.directory / name).read_text(encoding="utf-8")
        if "</" in css:
            raise TemplateProblem(f"{name} must not contain '</' (it is placed inside <style>).")
        return Markup(css)

    def fingerprint(self) -> str:
        """sha256 over every file of the folder, so a batch records exactly which wording it used."""
        digest = hashlib.sha256()
        for path in sorted(p for p in self.directory.rglob("*") if p.is_file()):
            digest.update(path.relative_to(self.directory).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        return digest.hexdigest()

    def _template(self, name: str) -> Template:
        if name not in self._compiled:
            try:
                self._compiled[name] = self.env.get_template(name)
            except TemplateSyntaxError as exc:
                raise TemplateProblem(
                    f"Letter template {exc.name or name}, line {exc.lineno}: {exc.message}"
                ) from None
            except TemplateNotFound as exc:
                raise TemplateProblem(
                    f"Letter template {name} includes {exc.name}, which is missing."
                ) from None
        return self._compiled[name]

    def render(self, name: str, variables: Mapping[str, Any]) -> Markup:
        try:
            return Markup(self._template(name).render(**variables))
        except TemplateProblem:
            raise
        except TemplateError as exc:
            hint = ""
            if "patient" in str(exc) and name != SLOTS_TEMPLATE:
                hint = f" (patient details belong only in {SLOTS_TEMPLATE})"
            raise TemplateProblem(f"Letter template {name}: {exc}{hint}") from None

    def pack_html(self, key: PackKey, study: Mapping[str, Any], letter_date: str) -> Markup:
        """One pack (letter and reply slip) without patient details, as an HTML fragment."""
        return self.render(
            FORMATS[key.letter_format],
            {
                "practice": asdict(key.practice),
                "gp": asdict(key.gp),
                "study": dict(study),
                "letter": {"date": letter_date, "format_class": FORMAT_CLASSES[key.letter_format]},
            },
        )

    def slots_html(self, letter: Letter, anchor: str) -> Markup:
        """The patient's details for one letter, in their fixed places, as an HTML fragment."""
        return self.render(
            SLOTS_TEMPLATE,
            {
                "patient": asdict(letter.patient),
                "letter": {
                    "study_number": letter.study_number,
                    "anchor": anchor,
                    "format_class": FORMAT_CLASSES[letter.pack.letter_format],
                },
            },
        )

    def document(self, fragments: Sequence[Markup], *, draft: bool, title: str, slots: bool = False) -> str:
        """One HTML document holding the fragments in order (packs, or patients' details)."""
        css = self.slots_css if slots else self.css
        return str(
            self.render(
                DOCUMENT_TEMPLATE,
                {"letters": Markup("\n").join(fragments), "css": css, "draft": draft, "title": title},
            )
        )
