"""The study settings file: the facts a letter states about the study, checked before any letter.

A letter must name the study, its sponsor, its ethics and IRAS references and a contact; a wrong
or missing one cannot be mended once the letters are posted, so the file is validated with
pydantic (unknown fields are errors, every error names the file, line and field) and stored in
the `study` table, with its fingerprint, before a letter is written. The wording of the letters
lives in the templates (letter_templates/); this file holds only facts that change per study or
per practice, such as which GP signs for a practice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Connection, insert, select, update

from recruit.errors import RecruitError
from recruit.models import utcnow
from recruit.resources import rules_file
from recruit.rules.model import _located, _message
from recruit.tables import STUDY

# UK telephone numbers as people write them: digits, spaces, brackets and a leading +44.
_PHONE = re.compile(r"^\+?[0-9][0-9 ()]{8,18}[0-9]$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ODS = re.compile(r"^[A-Z0-9]{3,8}$")


class StudySettingsError(RecruitError):
    """The study settings file is broken; the message names file, line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(_Strict):
    """Someone a patient can telephone or email."""

    name: str = Field(min_length=2, max_length=200)
    telephone: str
    email: str
    hours: str | None = Field(default=None, max_length=100, description="When the line is answered.")

    @field_validator("telephone")
    @classmethod
    def _phone(cls, value: str) -> str:
        value = value.strip()
        if not _PHONE.match(value):
            raise ValueError(f"{value!r} is not a telephone number (digits and spaces, e.g. 023 8059 0000)")
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        value = value.strip()
        if not _EMAIL.match(value):
            raise ValueError(f"{value!r} is not an email address")
        return value


class SigningGP(_Strict):
    """The GP who signs a practice's letters, when it is not each patient's usual GP."""

    name: str = Field(min_length=3, max_length=200, description="As printed, e.g. Dr Asha Patel.")
    role: str = Field(default="GP", max_length=100)


class LetterCodelists(_Strict):
    """Codelists read at letter time (from codelist_directory)."""

    research_opt_out: str = "research_opt_out"
    accessible_information: str = "accessible_information"


class StudySettings(_Strict):
    """What the letters say about the study. See rules/studies/instep.yaml for every field."""

    code: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$", description="Short name, e.g. instep.")
    status: Literal["draft", "approved"] = Field(
        description="draft: every page says DRAFT - do not post. approved: the REC approved this wording."
    )
    title: str = Field(min_length=5, max_length=300)
    short_title: str = Field(min_length=2, max_length=60, description="The name used in the letter.")
    sponsor: str = Field(min_length=3, max_length=300)
    research_team: str = Field(min_length=3, max_length=300, description="Who runs the study.")
    ethics_committee: str = Field(min_length=3, max_length=200)
    ethics_reference: str = Field(min_length=3, max_length=100)
    iras_reference: str = Field(min_length=3, max_length=100)
    document_version: str = Field(min_length=1, max_length=40, description="Version of the letter pack.")
    document_date: dt.date
    contact: Contact
    complaints: Contact = Field(description="Someone independent of the research team.")
    privacy_notice: str = Field(min_length=5, max_length=300, description="Where the privacy notice is.")
    reply_address: list[str] = Field(min_length=2, max_length=6, description="Freepost address lines.")
    study_number_prefix: str = Field(default="", pattern=r"^[A-Z0-9]{0,8}$")
    signing_gps: dict[str, SigningGP] = Field(
        default_factory=dict, description="ODS code -> the GP who signs every letter of that practice."
    )
    codelist_directory: str | None = Field(
        default=None, description="Relative to this file; default: ../codelists, else rules/codelists."
    )
    codelists: LetterCodelists = LetterCodelists()

    @field_validator("signing_gps")
    @classmethod
    def _ods_codes(cls, value: dict[str, SigningGP]) -> dict[str, SigningGP]:
        for ods in value:
            if not _ODS.match(ods):
                raise ValueError(f"{ods!r} is not an ODS practice code (capital letters and digits)")
        return value

    @property
    def number_prefix(self) -> str:
        return self.study_number_prefix or re.sub(r"[^A-Z0-9]", "", self.code.upper())[:8]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def default_study_file(code: str = "instep") -> Path:
    """rules/studies/<code>.yaml: the user's ./rules/ first, else the copy recruit comes with.

    When neither has it, the relative path is returned so the caller's message names it."""
    try:
        return rules_file(Path("studies") / f"{code}.yaml")
    except RecruitError:
        return Path("rules") / "studies" / f"{code}.yaml"


def load_study_settings(path: str | Path) -> StudySettings:
    """Read and check a study settings file; StudySettingsError names every problem's line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudySettingsError(
            f"The study settings file {path} does not exist. Give it with --study FILE "
            "(see rules/studies/instep.yaml for an example)."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudySettingsError(f"{path}: cannot read the study settings: {exc}") from None
    return parse_study_settings(text, str(path))


def parse_study_settings(text: str, filename: str = "<study>") -> StudySettings:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark is not None else filename
        raise StudySettingsError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise StudySettingsError(f"{filename}:1: study settings are a mapping with code, title, sponsor, ...")
    try:
        return StudySettings.model_validate(data)
    except ValidationError as exc:
        problems = [
            _located(filename, root, tuple(err["loc"]), _message(err))
            for err in exc.errors(include_url=False)
        ]
        raise StudySettingsError("\n".join(problems)) from None


def store_study(conn: Connection, settings: StudySettings) -> int:
    """The study's row, created or brought up to date with these settings; its id."""
    values: dict[str, Any] = {
        "title": settings.title,
        "sponsor": settings.sponsor,
        "ethics_reference": settings.ethics_reference,
        "iras_reference": settings.iras_reference,
        "contact_telephone": settings.contact.telephone,
        "contact_email": settings.contact.email,
        "settings": settings.model_dump(mode="json"),
        "settings_fingerprint": settings.fingerprint(),
    }
    row = conn.execute(
        select(STUDY.c.id, STUDY.c.settings_fingerprint).where(STUDY.c.code == settings.code)
    ).first()
    if row is None:
        return conn.execute(
            insert(STUDY).values(code=settings.code, created_at=utcnow(), **values).returning(STUDY.c.id)
        ).scalar_one()
    if row.settings_fingerprint != values["settings_fingerprint"]:
        conn.execute(update(STUDY).where(STUDY.c.id == row.id).values(**values))
    return int(row.id)
