"""The database schema: primary-care records, and the recruitment workflow built on them.

The records half (practice, practitioner, patient, clinical_event, medication_issue) is replaced
practice by practice as newer extracts arrive. The workflow half (search runs, reviews,
invitations) is history that must outlive any reload, so it refers to patients whose rows are
kept (a reload updates a patient in place rather than deleting it).

Every change to this module needs an Alembic migration under alembic/versions; a test compares
the two and fails when they disagree.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Explicit constraint names keep migrations identical on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class JSONText(TypeDecorator[Any]):
    """JSON kept as text: portable to every engine we target, and byte-stable for fingerprints."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Every model here is mapped to a plain Table (none maps a join or a select), so say so: the
    # base class types __table__ as any FromClause, which insert()/update()/delete() refuse.
    __table__: ClassVar[Table]


# --- primary-care records -------------------------------------------------------------------


class Practice(Base):
    __tablename__ = "practice"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ods_code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(Text, doc="Address lines joined by newlines.")
    postcode: Mapped[str | None] = mapped_column(String(10))
    telephone: Mapped[str | None] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(200))
    # The latest extract that supplied this practice's records.
    extract_id: Mapped[int | None] = mapped_column(ForeignKey("extract.id"))


class Practitioner(Base):
    __tablename__ = "practitioner"
    __table_args__ = (UniqueConstraint("practice_id", "source_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practice.id"))
    source_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str | None] = mapped_column(String(40))
    given_name: Mapped[str | None] = mapped_column(String(100))
    family_name: Mapped[str | None] = mapped_column(String(100))
    role: Mapped[str | None] = mapped_column(String(100), doc="For example GP, GP partner.")
    professional_code: Mapped[str | None] = mapped_column(String(20), doc="GMC or GMP code.")


class Patient(Base):
    __tablename__ = "patient"
    __table_args__ = (
        UniqueConstraint("practice_id", "source_id"),
        Index(None, "nhs_number"),
        CheckConstraint("sex IN ('female', 'male', 'other', 'unknown')", name="sex"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practice.id"))
    extract_id: Mapped[int | None] = mapped_column(
        ForeignKey("extract.id"), doc="The latest extract that held this patient."
    )
    source_id: Mapped[str] = mapped_column(String(128), doc="The id in the practice's system.")
    nhs_number: Mapped[str | None] = mapped_column(String(10))
    title: Mapped[str | None] = mapped_column(String(40))
    given_name: Mapped[str | None] = mapped_column(String(100))
    family_name: Mapped[str | None] = mapped_column(String(100))
    date_of_birth: Mapped[dt.date] = mapped_column(
        Date, doc="The earliest it can be (a partial date's first day)."
    )
    date_of_birth_latest: Mapped[dt.date | None] = mapped_column(
        Date, doc="The latest it can be when only a year or month is recorded; NULL when exact."
    )
    sex: Mapped[str] = mapped_column(String(8), default="unknown")
    address: Mapped[str | None] = mapped_column(Text, doc="Address lines joined by newlines.")
    postcode: Mapped[str | None] = mapped_column(String(10))
    usual_gp_id: Mapped[int | None] = mapped_column(ForeignKey("practitioner.id"))
    registration_start: Mapped[dt.date | None] = mapped_column(Date)
    registration_end: Mapped[dt.date | None] = mapped_column(Date)
    date_of_death: Mapped[dt.date | None] = mapped_column(Date)
    # Accessible Information Standard needs.
    needs_large_print: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_easy_read: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_braille: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_interpreter: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str | None] = mapped_column(String(40))
    pseudonymised: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default=false(),
        doc="Stored from a pseudonymised extract: no NHS number, name or address; never written to.",
    )


class ClinicalEvent(Base):
    """One coded entry (diagnosis, observation, status code) in a patient's record."""

    __tablename__ = "clinical_event"
    __table_args__ = (
        # A codelist within a date window: find patients by code first.
        Index(None, "code_system", "code", "event_date", "patient_id"),
        # A patient's most recent status-like code.
        Index(None, "patient_id", "event_date"),
        Index(None, "practice_id"),
        CheckConstraint("code_system IN ('snomedct', 'readv2', 'ctv3')", name="code_system"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id", ondelete="CASCADE"))
    practice_id: Mapped[int] = mapped_column(ForeignKey("practice.id"))
    event_date: Mapped[dt.date] = mapped_column(Date)
    code_system: Mapped[str] = mapped_column(String(10))
    code: Mapped[str] = mapped_column(String(20))
    term: Mapped[str | None] = mapped_column(String(255))
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str | None] = mapped_column(
        String(16), doc="recorded, active, resolved, unconfirmed or cancelled (see recruit.load.status)."
    )
    resource_type: Mapped[str | None] = mapped_column(
        String(40),
        doc="The record's kind (Condition, Observation, a CSV file's): a newer extract "
        "replaces only the kinds it carries.",
    )
    source_resource_id: Mapped[str | None] = mapped_column(String(200))


class MedicationIssue(Base):
    """One prescription issue (acute or one issue of a repeat)."""

    __tablename__ = "medication_issue"
    __table_args__ = (
        Index(None, "code_system", "code", "issue_date", "patient_id"),
        Index(None, "patient_id", "issue_date"),
        Index(None, "practice_id"),
        CheckConstraint("code_system IN ('dmd', 'snomedct')", name="code_system"),
        CheckConstraint("course IN ('acute', 'repeat', 'unknown')", name="course"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id", ondelete="CASCADE"))
    practice_id: Mapped[int] = mapped_column(ForeignKey("practice.id"))
    issue_date: Mapped[dt.date] = mapped_column(Date)
    code_system: Mapped[str] = mapped_column(String(10))
    code: Mapped[str] = mapped_column(String(20))
    term: Mapped[str | None] = mapped_column(String(255))
    quantity: Mapped[float | None] = mapped_column(Float)
    course: Mapped[str] = mapped_column(String(8), default="unknown")
    status: Mapped[str | None] = mapped_column(
        String(16), doc="issued, active, completed, stopped, cancelled, ... (see recruit.load.status)."
    )
    resource_type: Mapped[str | None] = mapped_column(String(40), doc="As clinical_event.resource_type.")
    source_resource_id: Mapped[str | None] = mapped_column(String(200))


# --- loading --------------------------------------------------------------------------------


class Extract(Base):
    """One loaded file set; its fingerprint makes loading the same files twice a no-op."""

    __tablename__ = "extract"
    __table_args__ = (CheckConstraint("format IN ('fhir', 'csv')", name="format"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True, doc="sha256 of the files.")
    format: Mapped[str] = mapped_column(String(8))
    practice_ods_code: Mapped[str | None] = mapped_column(
        String(16), doc="Text, not a key: an extract is recorded before its practice exists."
    )
    source_paths: Mapped[list[str] | None] = mapped_column(JSONText)
    extract_date: Mapped[dt.date | None] = mapped_column(Date)
    date_source: Mapped[str | None] = mapped_column(
        String(60), doc="Where the extract date came from (manifest, Bundle timestamp, --extract-date)."
    )
    resource_types: Mapped[list[str] | None] = mapped_column(
        JSONText, doc="The record kinds this extract carries (a kind it lacks keeps earlier records)."
    )
    records_read: Mapped[int] = mapped_column(Integer, default=0)
    records_loaded: Mapped[int] = mapped_column(Integer, default=0)
    records_repaired: Mapped[int] = mapped_column(Integer, default=0)
    records_quarantined: Mapped[int] = mapped_column(Integer, default=0)
    pseudonymised: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default=false(),
        doc="The data provider removed NHS numbers, names and addresses (CPRD, OpenSAFELY, OMOP).",
    )
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Quarantine(Base):
    """A record that could not be loaded, with where it was and what a person can do about it."""

    __tablename__ = "quarantine"
    __table_args__ = (Index(None, "extract_id", "reason_code"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    extract_id: Mapped[int] = mapped_column(ForeignKey("extract.id", ondelete="CASCADE"))
    file: Mapped[str] = mapped_column(String(500))
    line: Mapped[int | None] = mapped_column(Integer)
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(200))
    field: Mapped[str | None] = mapped_column(String(200))
    reason_code: Mapped[str] = mapped_column(String(64), doc="Stable key for counting by reason.")
    reason: Mapped[str] = mapped_column(Text, doc="What is wrong, in words a person can act on.")
    raw_snippet: Mapped[str | None] = mapped_column(Text, doc="At most a few hundred characters.")
    entry: Mapped[int | None] = mapped_column(
        Integer, doc="Its place in its Bundle (0: the first entry); NULL when not in a Bundle."
    )


class PersonHold(Base):
    """A record that could not be loaded but signals death, leaving the practice or a coded
    entry (such as dissent from research use): it holds the person back from letters, matched by
    NHS number or by the practice's own id, whatever else the extract says."""

    __tablename__ = "person_hold"
    __table_args__ = (
        Index(None, "nhs_number"),
        Index(None, "practice_id", "source_id"),
        CheckConstraint("signal IN ('death', 'left', 'code', 'unclear')", name="signal"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    extract_id: Mapped[int] = mapped_column(ForeignKey("extract.id", ondelete="CASCADE"))
    nhs_number: Mapped[str | None] = mapped_column(String(10))
    practice_id: Mapped[int | None] = mapped_column(Integer, doc="practice.id, when known.")
    source_id: Mapped[str | None] = mapped_column(String(200), doc="The patient's id in the practice system.")
    signal: Mapped[str] = mapped_column(String(8))
    code_system: Mapped[str | None] = mapped_column(String(10))
    code: Mapped[str | None] = mapped_column(String(20))
    reason_code: Mapped[str] = mapped_column(String(64), doc="Why the record was quarantined.")
    file: Mapped[str | None] = mapped_column(String(500))
    line: Mapped[int | None] = mapped_column(Integer)


# --- codelists and searching ----------------------------------------------------------------


class Codelist(Base):
    """A codelist as used by a run, kept so a run can be reproduced and joined in SQL."""

    __tablename__ = "codelist"
    __table_args__ = (UniqueConstraint("name", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str | None] = mapped_column(String(100))
    fingerprint: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(Text)


class CodelistCode(Base):
    __tablename__ = "codelist_code"
    __table_args__ = (Index(None, "code_system", "code"),)

    codelist_id: Mapped[int] = mapped_column(ForeignKey("codelist.id", ondelete="CASCADE"), primary_key=True)
    code_system: Mapped[str] = mapped_column(String(10), primary_key=True)
    code: Mapped[str] = mapped_column(String(20), primary_key=True)
    term: Mapped[str | None] = mapped_column(String(255))
    category: Mapped[str | None] = mapped_column(String(64))
    match_prefix: Mapped[bool] = mapped_column(Boolean, default=False)


class Study(Base):
    """Study settings: what the letters say and whose study an invitation belongs to."""

    __tablename__ = "study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True, doc="Short name, e.g. instep.")
    title: Mapped[str] = mapped_column(String(300))
    sponsor: Mapped[str | None] = mapped_column(String(300))
    ethics_reference: Mapped[str | None] = mapped_column(String(100))
    iras_reference: Mapped[str | None] = mapped_column(String(100))
    contact_telephone: Mapped[str | None] = mapped_column(String(40))
    contact_email: Mapped[str | None] = mapped_column(String(200))
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSONText)
    settings_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SearchRun(Base):
    __tablename__ = "search_run"
    __table_args__ = (CheckConstraint("status IN ('running', 'finished', 'failed')", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("study.id"))
    rule_set_name: Mapped[str] = mapped_column(String(200))
    rule_set_version: Mapped[str] = mapped_column(String(100))
    rule_set_fingerprint: Mapped[str] = mapped_column(String(64))
    rule_set_text: Mapped[str | None] = mapped_column(Text, doc="The rule file as run.")
    codelist_fingerprints: Mapped[dict[str, str] | None] = mapped_column(JSONText)
    extract_fingerprints: Mapped[list[str] | None] = mapped_column(JSONText)
    steps: Mapped[list[dict[str, Any]] | None] = mapped_column(
        JSONText, doc="Step ids in order: bit i of search_result.step_mask is step i."
    )
    practice_ods_code: Mapped[str | None] = mapped_column(String(16))
    index_date: Mapped[dt.date] = mapped_column(Date)
    recruit_version: Mapped[str | None] = mapped_column(String(40))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(10), default="running")
    error: Mapped[str | None] = mapped_column(Text)


class StepCount(Base):
    __tablename__ = "step_count"

    run_id: Mapped[int] = mapped_column(ForeignKey("search_run.id", ondelete="CASCADE"), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_id: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10), doc="include or exclude")
    description: Mapped[str | None] = mapped_column(Text)
    entering: Mapped[int] = mapped_column(Integer)
    kept: Mapped[int] = mapped_column(Integer)
    excluded: Mapped[int] = mapped_column(Integer)
    failing_alone: Mapped[int | None] = mapped_column(
        Integer, doc="Patients failing this step on its own, whatever the order."
    )


class SearchResult(Base):
    """One row per patient searched, written only by the search (recruit.query.run) from the
    patient table, in the transaction that creates its run. No foreign keys (migration
    0002_search_speed): PostgreSQL checks them row by row, locking each parent row, which made
    writing a region's million results take minutes; and so no cascade either: whoever deletes
    a run deletes its results."""

    __tablename__ = "search_result"
    __table_args__ = (
        # One secondary index (migration 0003): a run's candidates. The search writes a row per
        # patient searched, and each index an entry per row.
        Index(None, "run_id", "outcome"),
        CheckConstraint("outcome IN ('candidate', 'excluded')", name="outcome"),
    )

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True, doc="search_run.id")
    patient_id: Mapped[int] = mapped_column(Integer, primary_key=True, doc="patient.id")
    practice_id: Mapped[int] = mapped_column(Integer, doc="practice.id")
    outcome: Mapped[str] = mapped_column(String(10))
    excluding_step: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONText)
    step_mask: Mapped[int] = mapped_column(
        BigInteger, default=0, doc="Bit i set when the patient passes step i on its own."
    )
    score: Mapped[float | None] = mapped_column(Float, doc="Out-of-work evidence score.")
    rank: Mapped[int | None] = mapped_column(Integer)
    score_items: Mapped[int | None] = mapped_column(
        BigInteger,
        doc="Bit i set when score item i applied (NULL: searched before 0009), so fitted weights "
        "can order a wave without searching again.",
    )


# --- review, letters and replies ------------------------------------------------------------


class ReviewDecision(Base):
    __tablename__ = "review_decision"
    __table_args__ = (
        UniqueConstraint("run_id", "patient_id"),
        CheckConstraint("decision IN ('invite', 'do_not_invite')", name="decision"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("search_run.id", ondelete="CASCADE"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    decision: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason_text: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(200))
    source_file: Mapped[str | None] = mapped_column(String(500))
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sheet_id: Mapped[int | None] = mapped_column(
        Integer, doc="review_sheet.id of the sheet the decision came from (none: not from a sheet)."
    )


class ReviewSheet(Base):
    """One exported review workbook: which run and practice it lists and when it was made, so an
    import knows which decisions were made after the sheet was exported (a stale sheet never
    overrides a newer decision) and refuses rows of another practice."""

    __tablename__ = "review_sheet"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(36), unique=True, doc="Random id written into the workbook.")
    run_id: Mapped[int] = mapped_column(ForeignKey("search_run.id", ondelete="CASCADE"))
    practice_id: Mapped[int | None] = mapped_column(Integer, doc="practice.id; none: every practice.")
    exported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    rows: Mapped[int] = mapped_column(Integer, default=0)


class LetterBatch(Base):
    """One `recruit letters` run: the wave of letters it wrote and why others were refused."""

    __tablename__ = "letter_batch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("search_run.id"))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("study.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    output_dir: Mapped[str | None] = mapped_column(String(500))
    letters_written: Mapped[int] = mapped_column(Integer, default=0)
    refusals: Mapped[dict[str, int] | None] = mapped_column(
        JSONText, doc="Counts of patients not written to, by reason."
    )
    posted_on: Mapped[dt.date | None] = mapped_column(Date, doc="The day the batch was posted.")
    not_posted_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When the batch was recorded as never posted (destroyed)."
    )
    ranking: Mapped[dict[str, Any] | None] = mapped_column(
        JSONText, doc="Which weights put the wave in order (score items and weights; no identifiers)."
    )


class Invitation(Base):
    """An invitation to a study. One per person per study, ever: the NHS number is the key."""

    __tablename__ = "invitation"
    __table_args__ = (
        UniqueConstraint("study_id", "nhs_number"),
        UniqueConstraint("study_number"),
        Index(None, "patient_id"),
        CheckConstraint(
            "status IN ('drafted', 'sent', 'replied', 'declined', 'do_not_contact')",
            name="status",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    nhs_number: Mapped[str] = mapped_column(String(10))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("search_run.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("letter_batch.id"))
    study_number: Mapped[str] = mapped_column(String(40), doc="The only id on the reply slip.")
    letter_format: Mapped[str] = mapped_column(String(16), default="standard")
    status: Mapped[str] = mapped_column(String(16), default="drafted")
    reply: Mapped[str | None] = mapped_column(
        String(32), doc="interested, not_interested, do_not_contact or now_in_work."
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    replied_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    in_work: Mapped[bool | None] = mapped_column(
        Boolean, doc="The slip's 'Are you in paid work at the moment?' (NULL: not answered)."
    )


class ScoreWeights(Base):
    """Weights fitted to a run's replies (`recruit waves fit RUN`, recruit.waves): each fit is a
    new version, kept with who made it and when; the newest orders the run's next wave."""

    __tablename__ = "score_weights"
    __table_args__ = (UniqueConstraint("run_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("search_run.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    weights: Mapped[dict[str, Any]] = mapped_column(
        JSONText, doc="Score item id -> rule weight, fitted weight and its 95% interval."
    )
    replies_used: Mapped[int] = mapped_column(Integer)
    in_work: Mapped[int] = mapped_column(Integer)
    out_of_work: Mapped[int] = mapped_column(Integer)
    method: Mapped[str | None] = mapped_column(Text)
    fitted_by: Mapped[str | None] = mapped_column(String(200))
    fitted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StudyNumber(Base):
    """A person's study number for a study, given once and kept: written (and committed) before
    any letter carrying it is printed, so a letters run stopped part-way and run again prints the
    same number, and nobody ever holds two numbers for one study."""

    __tablename__ = "study_number"
    __table_args__ = (UniqueConstraint("study_id", "nhs_number"), UniqueConstraint("study_number"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"))
    nhs_number: Mapped[str] = mapped_column(String(10))
    study_number: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WorkFolder(Base):
    """A folder of files with patient identifiers that a command is still writing. The row is
    committed before the folder is made and deleted once its files are published; a row left
    behind (the command was killed) tells the next command to delete the folder."""

    __tablename__ = "work_folder"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1000))
    purpose: Mapped[str] = mapped_column(String(40), doc="e.g. letters")
    host: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
