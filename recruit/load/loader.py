"""Loading an extract: read every record, stage it, resolve it in SQL, commit whole or not at all.

Every record read ends up loaded, quarantined with a reason, or counted as "not used" (a resource
type or kind recruit has no use for, another practice's Organization); loaded + quarantined = read.

Every extract has a date (given, or from its manifest, Bundle timestamps or meta.lastUpdated); an
extract older than the newest loaded for a practice it holds is refused. A newer extract of a
practice replaces that practice's events and prescriptions of the kinds it carries (a missing
file keeps its kind's earlier records) and updates its patients in place, so the workflow history
(runs, reviews, invitations) still points at the same patients; a patient id reused for another
person (a different NHS number or birth date) starts a new patient. An extract changes only the
practices its patients are registered with. Quarantined records that still signal death, leaving
or a coded entry (dissent) are kept as person holds, so the person is never written to.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    String,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect, Select, Subquery

from recruit.db import unavailable
from recruit.errors import RecruitError
from recruit.load import stage as S
from recruit.load.chunks import Staged, Stager, default_workers, record_kind, staged_chunks
from recruit.load.coverage import uncovered_systems
from recruit.load.extract_info import NO_DATE, check_manifest, fhir_extract_date, file_types
from recruit.load.fhir import NOT_DMD, Parsed
from recruit.load.files import (
    FHIR_SUFFIXES,
    Record,
    check_holds_fhir,
    find_files,
    fingerprint,
    input_files,
    nothing_to_load,
)
from recruit.load.rows import OrgRow, PractitionerRow
from recruit.load.values import LONDON, DateReader
from recruit.models import (
    ClinicalEvent,
    Extract,
    MedicationIssue,
    Patient,
    PersonHold,
    Practice,
    Practitioner,
    Quarantine,
)
from recruit.resources import rules_file

if TYPE_CHECKING:
    from recruit.load.csv_extract import CsvSource

_T = TypeVar("_T")

REASONS = {
    "reference_dangling": "refers to a patient who is not in this extract",
    "patient_quarantined": "belongs to a patient whose own record was quarantined (see that Patient's "
    "reason), so it cannot be placed",
    "before_birth": "is dated before the patient was born",
    "duplicate_id": "has the same id as an earlier record of this extract",
    "duplicate_nhs_number": "has the same NHS number as an earlier patient of this practice",
    "practice_unknown": "does not name its practice by an ODS code or an Organization in this extract, "
    "and the extract does not hold just one practice (if the extract is one practice's, give its "
    "ODS code with --practice)",
    "medication_dangling": "refers to a Medication that is not in this extract (or whose own record "
    "was quarantined: see that Medication's reason)",
}


@dataclass
class LoadSummary:
    """What a load did, in numbers a person can check: loaded + quarantined = read."""

    extract_id: int | None
    fingerprint: str
    files: int
    read: int = 0
    loaded: int = 0
    repaired: int = 0
    quarantined: int = 0
    quarantined_by_reason: Counter[str] = field(default_factory=Counter)
    not_used: Counter[str] = field(default_factory=Counter)
    already_loaded: bool = False
    practices: list[str] = field(default_factory=list)
    stu3_records: int = 0
    # Bundles with no entries, and the files holding them (in file order): nothing to read.
    empty_bundles: int = 0
    empty_bundle_files: list[str] = field(default_factory=list)
    extract_date: dt.date | None = None
    date_source: str | None = None
    resource_types: list[str] = field(default_factory=list)
    # Per practice (ODS code): kinds of record its previous extract had that this one lacks;
    # their earlier records were kept.
    kept_earlier: dict[str, list[str]] = field(default_factory=dict)
    holds: int = 0  # person holds written (quarantined records signalling death, leaving, dissent)
    retired: int = 0  # patient ids that now name another person (the earlier one kept apart)
    # Registration (issue 16): patients stored, and those still registered whose start the
    # extract does not give (a rule's `unknown_start` says how they count); of those, the ones
    # whose record names no practice at all (filed under the extract's one practice).
    patients: int = 0
    registration_start_unknown: int = 0
    registration_practice_unnamed: int = 0
    # Patient records that are a further copy of a person sent in several Bundles (joined).
    same_person: int = 0
    # Patients stored without a verified NHS number: kept from letters (search step, letters).
    no_nhs_number: int = 0
    # Per kind of record (resourceType, or a CSV row's kind): read, stored, quarantined and the
    # commonest reasons, so staff can see which kind of record an extract's problems are in.
    by_kind: dict[str, KindCounts] = field(default_factory=dict)
    # A pseudonymised extract (no NHS number, name or address): counted and searched, never written to.
    pseudonymised: bool = False
    # Per file (its path, in file order): read = stored + quarantined; not used counted apart.
    by_file: dict[str, FileCounts] = field(default_factory=dict)
    # Coded entries and prescriptions stored from this extract, per code system (snomedct, readv2,
    # ctv3, dmd); and the systems among them that no codelist of the default rule set has a code in.
    coded_by_system: dict[str, int] = field(default_factory=dict)
    prescribed_by_system: dict[str, int] = field(default_factory=dict)
    uncovered_systems: list[str] = field(default_factory=list)
    rule_set: str = ""  # the name of the default rule set the systems were checked against

    # Tabular extracts: entries read from each lookup file (code and id translations, not records).
    lookups: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FileCounts:
    read: int
    stored: int
    quarantined: int
    not_used: int
    kinds: list[str]  # the kinds of record read from the file, commonest first


@dataclass(frozen=True)
class KindCounts:
    read: int
    stored: int
    quarantined: int
    reasons: list[tuple[str, int]]  # (reason code, count), commonest first


Progress = Callable[[int], None]


def load_extract(
    engine: Engine,
    paths: Iterable[Path],
    *,
    format: str | None = None,
    mapping: Path | None = None,
    extract_date: dt.date | None = None,
    progress: Progress | None = None,
    strict: bool = False,
    workers: int | None = None,
    practice: str | None = None,
) -> LoadSummary:
    """Load an extract (FHIR files, or CSV exports with a mapping) in one transaction.

    practice: the ODS code of the practice the extract is from, for patients whose records name
    no practice (Synthea, a plain Bulk export without Organizations); those that name one keep it.

    strict: also validate every FHIR resource with fhir.resources R4B (slow; uses all cores).
    workers: processes reading FHIR (default: both cores for a large extract, else this one).
    """
    paths = [Path(p) for p in paths]
    practice = _ods_code(practice)
    fmt = format or guess_format(paths, mapping is not None)
    source = None
    if fmt == "csv":
        source = _csv_source(paths, mapping)
        files, print_ = source.files, source.fingerprint
        kinds = {table.kind for table in source.tables}
        if extract_date is not None:
            when, date_source = extract_date, "--extract-date"
        else:
            source.check_headers()
            found = source.extract_date()
            if found is None:
                raise RecruitError(NO_DATE)
            when, date_source = found, source.date_source
    elif fmt == "fhir":
        files = find_files(paths, FHIR_SUFFIXES)
        check_holds_fhir(paths, files)
        kinds = check_manifest(paths) | file_types(files)
        # (the practice given is part of what was loaded: the same files under another practice
        # are another extract)
        print_ = fingerprint(files, f"practice={practice}".encode() if practice else b"")
        when, date_source = fhir_extract_date(paths, files, extract_date)
    else:
        raise RecruitError(f"Unknown extract format '{fmt}': use fhir or csv.")
    _not_in_the_future(when, date_source)
    try:
        with engine.begin() as conn:
            existing = conn.execute(
                select(Extract.id).where(Extract.fingerprint == print_)
            ).scalar_one_or_none()
            if existing is not None:
                return LoadSummary(existing, print_, len(files), already_loaded=True)
            pseudonymised = bool(source is not None and source.pseudonymised)  # FHIR: never
            job = _Load(conn, files, print_, fmt, when, progress, date_source, kinds, pseudonymised)
            job.given_practice = practice
            if source is None:
                if strict:
                    from recruit.load.strict import strict_failures

                    job.strict_failures = strict_failures(files)
                job.stage_fhir(workers if workers is not None else default_workers(files))
            else:
                job.field_names = source.field_names()
                job.stage_rows(source.records(job.dates))
                job.summary.lookups = dict(source.lookup_rows)
            summary = job.finish()
            summary.rule_set, summary.uncovered_systems = uncovered_systems(
                summary.coded_by_system, summary.prescribed_by_system
            )
            return summary
    except SQLAlchemyError as exc:
        raise unavailable(engine, exc) from None


def _ods_code(value: str | None) -> str | None:
    """An ODS code as given by a person (spaces and case do not matter), or a plain refusal."""
    if value is None:
        return None
    code = value.strip().upper()
    if not re.fullmatch(r"[A-Z0-9]{3,10}", code):
        raise RecruitError(
            f"'{value}' is not an ODS code (letters and digits, such as A81001): give the practice's "
            "code with --practice."
        )
    return code


def guess_format(paths: list[Path], mapped: bool = False) -> str:
    """CSV when the inputs are .csv files (or a folder holding only those), or when a mapping is
    given and no input is a FHIR file (a mapping names its tables whatever their files are
    called: CPRD's .txt); else FHIR."""
    suffixes = {p.suffix.lower() for p in input_files(paths)}  # refuses FIFOs and links at once
    if suffixes and suffixes <= {".csv"}:
        return "csv"
    if mapped and suffixes and not suffixes & set(FHIR_SUFFIXES):
        return "csv"
    return "fhir"


def _not_in_the_future(when: dt.date, date_source: str) -> None:
    """An extract cannot be dated after today (in England): a slip such as a stray far-future
    meta.lastUpdated would otherwise become the practice's newest date, and every real extract
    after it would be refused as older."""
    today = dt.datetime.now(LONDON).date()
    if when > today:
        raise RecruitError(
            f"The extract's date, {when.isoformat()} (from {date_source}), is after today "
            f"({today.isoformat()}). Nothing was loaded: check the files, or give the date the "
            "extract was taken with --extract-date YYYY-MM-DD."
        )


def _csv_source(paths: list[Path], mapping: Path | None) -> CsvSource:
    """The tabular reader for the mapping given (a bare name such as emis_extract.yaml, not a
    file here, is one of rules/mappings/); with none given, the synthetic CSV's, and if the
    files are not that shape, a refusal that names the shipped mappings whose files they have."""
    from recruit.load.csv_extract import CsvSource

    if mapping is not None:
        return CsvSource(paths, _mapping_file(mapping))
    try:
        return CsvSource(paths, default_mapping())
    except RecruitError as exc:
        fits = mappings_for(paths)
        if not fits:
            raise
        names = " or ".join(f"--mapping {name}" for name in fits)
        raise RecruitError(f"{exc} These files look like another extract: try {names}.") from None


def _mapping_file(given: Path) -> Path:
    if given.exists() or len(given.parts) > 1:
        return given
    try:
        return rules_file(f"mappings/{given.name}")
    except RecruitError:
        return given  # (refused as not found, naming what was given)


def mappings_for(paths: list[Path]) -> list[str]:
    """Names of the shipped (or ./rules/) mappings whose patients file is among these files."""
    from recruit.load.mapping import load_mapping
    from recruit.resources import rules_dirs

    found = [f for p in paths for f in input_files([p])]
    names: list[str] = []
    for base in rules_dirs():
        for path in sorted((base / "mappings").glob("*.yaml")):
            if path.name in names or path.name == "synthetic_ehr.yaml":
                continue
            try:
                pattern = load_mapping(path)[0].patients.file
            except RecruitError:
                continue
            if any(f.match(pattern) for f in found):
                names.append(path.name)
    return names


def default_mapping() -> Path:
    """The mapping for recruit synth's CSV extract: ./rules/mappings/ first, else recruit's own."""
    try:
        return rules_file("mappings/synthetic_ehr.yaml")
    except RecruitError:
        raise RecruitError(
            "No CSV mapping given: use --mapping FILE (see rules/mappings/ for examples)."
        ) from None


SAME_PERSON = "same_person"  # a Patient record joining another of the same person (ld_patient.status)
OTHER_ORGANIZATION = "Organization of a practice no patient of the extract is registered with: not changed"
UNNAMED_PRACTITIONER = "Practitioner no patient of the extract names: not stored"
# Why an EpisodeOfCare was not used, in words for practice staff.
EPISODE_NOT_USED = {
    "no_patient": "EpisodeOfCare of a patient not stored from this extract (absent, or quarantined)",
    "stated": "EpisodeOfCare of a patient whose own record gives the registration period",
    "untyped": "EpisodeOfCare with no registration type, not managed by the patient's practice",
    "other_practice": "EpisodeOfCare of a registration with another practice",
    "earlier": "EpisodeOfCare of an earlier registration (the patient's latest one was used)",
}
NOT_USED = "not_used"  # ld_record.status of a record counted as not used (not stored, not quarantined)
# Kinds of record that become events or prescriptions, by format: a newer extract carrying any of
# them also replaces rows of unknown kind (loaded before kinds were kept) or of the other format.
FHIR_EVENT_KINDS = frozenset({"Condition", "Observation"})
FHIR_MED_KINDS = frozenset({"MedicationRequest", "MedicationStatement"})


class _Load:
    def __init__(
        self,
        conn: Connection,
        files: list[Path],
        print_: str,
        fmt: str,
        extract_date: dt.date,
        progress: Progress | None,
        date_source: str = "--extract-date",
        kinds: set[str] | None = None,
        pseudonymised: bool = False,
    ) -> None:
        self.conn = conn
        self.pseudonymised = pseudonymised
        self.files = files
        self.fmt = fmt
        self.dates = DateReader(extract_date)
        self.progress = progress
        self.summary = LoadSummary(
            None,
            print_,
            len(files),
            extract_date=extract_date,
            date_source=date_source,
            pseudonymised=pseudonymised,
        )
        # Kinds of record the extract carries: its files' (and manifest's) kinds, then every
        # record's kind as read, quarantined or not.
        self.kinds: set[str] = set(kinds or ())
        # (ODS code or practitioner id, file number) -> records seen
        self.org_records: Counter[tuple[str, int]] = Counter()
        self.practitioner_records: Counter[tuple[str, int]] = Counter()
        self.fallback_practice: int | None = None
        self.given_practice: str | None = None  # --practice: the ODS code of patients naming none
        self.extract_id = conn.execute(
            insert(Extract)
            .values(
                fingerprint=print_,
                format=fmt,
                source_paths=[str(p) for p in files],
                extract_date=extract_date,
                date_source=date_source,
                pseudonymised=pseudonymised,
            )
            .returning(Extract.id)
        ).scalar_one()
        self.summary.extract_id = self.extract_id
        S.create_staging(conn)
        self.writer = S.staging_writer(conn)
        for i, path in enumerate(files):
            self.writer.add(S.ld_file, (i, str(path)))
        self.paths = [str(p) for p in files]
        self.quarantine_rows: list[dict[str, Any]] = []
        self.read_by_kind: Counter[str] = Counter()
        self.read_by_file: Counter[tuple[int, str]] = Counter()  # (file_no, kind)
        self.not_used_by_file: Counter[int] = Counter()
        self.orgs: dict[str, OrgRow] = {}
        self.practitioners: dict[str, PractitionerRow] = {}
        self.repaired = 0
        self.strict_failures: dict[tuple[Any, ...], tuple[str, str, str]] = {}
        # Per file: the reader's own name for a field the loader judges (a table's column names).
        self.field_names: dict[int, dict[str, str]] = {}

    # --- reading ------------------------------------------------------------------------

    def stage_fhir(self, workers: int) -> None:
        for staged in staged_chunks(self.files, self.dates.latest, self.strict_failures, workers):
            self.absorb(staged)
            if self.progress:
                self.progress(staged.size)

    def stage_rows(self, items: Iterator[tuple[Record, Parsed | Exception]]) -> None:
        """Records already turned into rows by another reader (the CSV reader)."""
        stager = Stager(self.dates)
        for n, (record, parsed) in enumerate(items, start=1):
            stager.parsed(record, parsed)
            if n % 5000 == 0:
                self.absorb(stager.take())
        self.absorb(stager.take())

    def absorb(self, staged: Staged) -> None:
        """Write what a chunk staged, and count it."""
        s = self.summary
        s.read += staged.read
        self.read_by_kind.update(staged.read_by_type)
        self.read_by_file.update(staged.read_by_file)
        self.not_used_by_file.update(staged.not_used_by_file)
        s.not_used.update(staged.not_used)
        s.stu3_records += staged.stu3
        for file_no, n in sorted(staged.empty_bundles.items()):
            s.empty_bundles += n
            if self.paths[file_no] not in s.empty_bundle_files:
                s.empty_bundle_files.append(self.paths[file_no])
        self.repaired += staged.repaired
        self.orgs.update(staged.orgs)
        self.practitioners.update(staged.practitioners)
        self.org_records.update(staged.org_records)
        self.practitioner_records.update(staged.practitioner_records)
        for name, rows in staged.rows.items():
            self.writer.add_many(name, rows)
        paths = self.paths
        for file_no, line, entry, rtype, rid, field_, code, reason, snippet in staged.quarantine:
            if rtype:
                self.kinds.add(rtype)
            self.quarantine_rows.append(
                {
                    "extract_id": self.extract_id,
                    "file": paths[file_no],
                    "line": line,
                    "resource_type": rtype,
                    "resource_id": rid if rid else (f"entry[{entry}]" if entry is not None else None),
                    "entry": entry,
                    "field": field_,
                    "reason_code": code,
                    "reason": reason,
                    "raw_snippet": snippet,
                }
            )
            s.quarantined_by_reason[code] += 1
        if len(self.quarantine_rows) >= 2000:
            self._flush_quarantine()

    def _flush_quarantine(self) -> None:
        if self.quarantine_rows:
            self.conn.execute(insert(Quarantine), self.quarantine_rows)
            self.quarantine_rows = []

    # --- resolving ------------------------------------------------------------------------

    def finish(self) -> LoadSummary:
        self.writer.flush()
        self._flush_quarantine()
        S.index_staging(self.conn)
        if self.summary.read == 0 and not self.summary.not_used:
            raise RecruitError(nothing_to_load(self.summary.empty_bundle_files, len(self.paths)))
        practice_ids = self._practices()
        self._resolve_patients(practice_ids)
        gp_ids = self._practitioners(practice_ids)
        self._quarantine_staged_patients()
        self._apply_episodes()
        self._count_registrations()
        held = self._held_practices()
        self._refuse_if_older(held)
        self._record_kinds()
        self._kept_earlier(held)
        self._retire_reused_ids(held)
        self._replace_practice_records(held)
        self._upsert_patients()
        self._mark_pseudonymised()
        self._resolve_records()
        self._insert_events_and_medications()
        self._count_code_systems()
        self._write_holds(held)
        self._finish_practices(held, gp_ids)
        S.drop_staging(self.conn)
        s = self.summary
        s.repaired = self.repaired + self.dates.repaired
        s.quarantined = sum(s.quarantined_by_reason.values())
        s.loaded = s.read - s.quarantined
        s.resource_types = sorted(self.kinds)
        s.by_kind = self._by_kind()
        s.by_file = self._by_file()
        self.conn.execute(
            update(Extract)
            .where(Extract.id == self.extract_id)
            .values(
                records_read=s.read,
                records_loaded=s.loaded,
                records_repaired=s.repaired,
                records_quarantined=s.quarantined,
                practice_ods_code=s.practices[0] if len(s.practices) == 1 else None,
                resource_types=s.resource_types,
            )
        )
        return s

    def _not_used(self, what: str, n: int, kind: str, by_file: Counter[int] | None = None) -> None:
        """Records read but neither stored nor quarantined: counted as not used, not as read
        (by_file: how many of them each file held)."""
        if n:
            self.summary.read -= n
            self.read_by_kind[kind] -= n
            self.summary.not_used[what] += n
            for file_no, k in (by_file or {}).items():
                self.read_by_file[(file_no, kind)] -= k
                self.not_used_by_file[file_no] += k

    def _by_file(self) -> dict[str, FileCounts]:
        """Read, stored, quarantined and not used per file (read = stored + quarantined); the
        quarantine as recorded, so records quarantined while resolving count in their file."""
        quarantined: Counter[str] = Counter()
        rows = self.conn.execute(
            select(Quarantine.file, func.count())
            .where(Quarantine.extract_id == self.extract_id)
            .group_by(Quarantine.file)
        )
        for path, n in rows:
            quarantined[path] += n
        kinds: dict[int, Counter[str]] = {}
        for (file_no, kind), n in self.read_by_file.items():
            if n:
                kinds.setdefault(file_no, Counter())[kind] += n
        out = {}
        for file_no, path in enumerate(self.paths):
            read = sum(kinds.get(file_no, Counter()).values())
            q = quarantined.get(path, 0)
            out[path] = FileCounts(
                read,
                read - q,
                q,
                self.not_used_by_file.get(file_no, 0),
                [kind for kind, _ in kinds.get(file_no, Counter()).most_common()],
            )
        return out

    def _by_kind(self) -> dict[str, KindCounts]:
        """Read, stored and quarantined per kind of record; the quarantine as recorded."""
        quarantined: dict[str, Counter[str]] = {}
        rows = self.conn.execute(
            select(Quarantine.resource_type, Quarantine.reason_code, func.count())
            .where(Quarantine.extract_id == self.extract_id)
            .group_by(Quarantine.resource_type, Quarantine.reason_code)
        )
        for rtype, code, n in rows:
            quarantined.setdefault(record_kind(rtype), Counter())[code] += n
        out = {}
        for kind in sorted(set(self.read_by_kind) | set(quarantined)):
            read = self.read_by_kind.get(kind, 0)
            reasons = quarantined.get(kind, Counter())
            q = sum(reasons.values())
            if read or q:
                out[kind] = KindCounts(read, read - q, q, reasons.most_common())
        return out

    def _practices(self) -> dict[str, int]:
        """The practices the extract's patients are registered with: map key -> practice id.

        Only they are created (or found); an Organization no patient is registered with (a
        previous practice, say) changes nothing and is counted as not used. Their details are
        updated at the end, and only for the practices the extract holds.
        """
        c = self.conn
        referenced = {
            r for (r,) in c.execute(select(S.ld_patient.c.practice_ref).distinct()) if r is not None
        }
        unstated = c.execute(select(exists().where(S.ld_patient.c.practice_ref.is_(None)))).scalar()
        orgs: dict[str, OrgRow] = dict(self.orgs)
        for key in referenced:
            if key.startswith("ods:") and key not in orgs:
                ods = key[4:]
                orgs[key] = OrgRow([key], ods, f"Practice {ods}", None, None, None)
        # A patient naming an Organization the extract does not hold (by id or urn:uuid, no ODS
        # code) is filed as one naming no practice: under the extract's only practice, if it has one.
        unstated = unstated or any(key not in orgs for key in referenced)
        given = self.given_practice
        if given and f"ods:{given}" not in orgs:
            orgs[f"ods:{given}"] = OrgRow([f"ods:{given}"], given, f"Practice {given}", None, None, None)
        all_ods = {org.ods_code for org in orgs.values()}
        wanted = {orgs[key].ods_code for key in referenced if key in orgs}
        # One practice in the extract (or the one given): patients that do not say are its own.
        fallback = {given} if given else (all_ods if len(all_ods) == 1 else set())
        if unstated:
            wanted |= fallback
        self.org_values: dict[str, OrgRow] = {}
        key_to_id: dict[str, int] = {}
        by_ods: dict[str, int] = {}
        for key, org in sorted(orgs.items()):
            if org.ods_code not in wanted:
                continue
            if org.ods_code not in by_ods:
                found = c.execute(select(Practice.id).where(Practice.ods_code == org.ods_code)).scalar()
                if found is None:
                    found = c.execute(
                        insert(Practice)
                        .values(
                            ods_code=org.ods_code,
                            name=org.name,
                            address=org.address,
                            postcode=org.postcode,
                            telephone=org.telephone,
                        )
                        .returning(Practice.id)
                    ).scalar_one()
                by_ods[org.ods_code] = found
            key_to_id[key] = by_ods[org.ods_code]
            if org.address is not None or not org.name.startswith("Practice "):
                self.org_values[org.ods_code] = org
        if unstated and fallback and fallback <= set(by_ods):
            self.fallback_practice = by_ods[next(iter(fallback))]
        if key_to_id:
            c.execute(insert(S.ld_ref), [{"key": k, "target_id": v} for k, v in key_to_id.items()])
        # Every Organization key, with its practice if the extract holds it (None: another one).
        self.org_keys: dict[str, int | None] = {key: key_to_id.get(key) for key in orgs}
        others: Counter[int] = Counter()
        for (ods, file_no), n in self.org_records.items():
            if ods not in wanted:
                others[file_no] += n
        self._not_used(OTHER_ORGANIZATION, others.total(), "Organization", others)
        return key_to_id

    def _resolve_patients(self, practice_ids: dict[str, int]) -> None:
        c, p = self.conn, S.ld_patient
        c.execute(
            update(p).values(
                practice_id=select(S.ld_ref.c.target_id)
                .where(S.ld_ref.c.key == p.c.practice_ref)
                .scalar_subquery()
            )
        )
        if self.fallback_practice is not None:
            # No practice named, or one not in the extract (an ODS code always resolves).
            c.execute(update(p).where(p.c.practice_id.is_(None)).values(practice_id=self.fallback_practice))

    def _practitioners(self, practice_ids: dict[str, int]) -> dict[int, list[int]]:
        """Practitioners belong to the practices whose patients name them as usual GP."""
        c, p = self.conn, S.ld_patient
        wanted = {
            (practice_id, key)
            for practice_id, key in c.execute(
                select(p.c.practice_id, p.c.gp_ref)
                .where(p.c.gp_ref.is_not(None), p.c.practice_id.is_not(None))
                .distinct()
            )
            if key in self.practitioners
        }
        practices = set(practice_ids.values())
        if len(practices) == 1:  # one practice: every practitioner in the extract works there
            wanted |= {(next(iter(practices)), key) for key in self.practitioners}
        ids: dict[tuple[int, str], int] = {}
        rows = []
        for practice_id, key in sorted(wanted):
            prac = self.practitioners[key]
            if (practice_id, prac.source_id) not in ids:
                ids[(practice_id, prac.source_id)] = self._upsert_practitioner(practice_id, prac)
            gp_id = ids[(practice_id, prac.source_id)]
            rows.append({"practice_id": practice_id, "key": key, "practitioner_id": gp_id})
        if rows:
            c.execute(insert(S.ld_gp), rows)
        c.execute(
            update(p).values(
                usual_gp_id=select(S.ld_gp.c.practitioner_id)
                .where(S.ld_gp.c.practice_id == p.c.practice_id, S.ld_gp.c.key == p.c.gp_ref)
                .scalar_subquery()
            )
        )
        gp_ids: dict[int, list[int]] = {}
        for (practice_id, _), gp_id in sorted(ids.items()):
            gp_ids.setdefault(practice_id, []).append(gp_id)
        stored = {source_id for _, source_id in ids}
        unnamed_by_file: Counter[int] = Counter()
        for (sid, file_no), n in self.practitioner_records.items():
            if sid not in stored:
                unnamed_by_file[file_no] += n
        unnamed = unnamed_by_file.total()
        self._not_used(UNNAMED_PRACTITIONER, unnamed, "Practitioner", unnamed_by_file)
        return gp_ids

    def _upsert_practitioner(self, practice_id: int, prac: PractitionerRow) -> int:
        c = self.conn
        values = {
            "title": prac.title,
            "given_name": prac.given_name,
            "family_name": prac.family_name,
            "professional_code": prac.professional_code,
            "role": "GP",
        }
        found = c.execute(
            select(Practitioner.id).where(
                Practitioner.practice_id == practice_id, Practitioner.source_id == prac.source_id
            )
        ).scalar()
        if found is None:
            return c.execute(
                insert(Practitioner)
                .values(practice_id=practice_id, source_id=prac.source_id, **values)
                .returning(Practitioner.id)
            ).scalar_one()
        c.execute(update(Practitioner).where(Practitioner.id == found).values(**values))
        return found

    def _quarantine_staged_patients(self) -> None:
        c, p = self.conn, S.ld_patient
        c.execute(update(p).where(p.c.practice_id.is_(None)).values(status="practice_unknown"))
        self._join_same_people()
        # Patients from self-contained Bundles: none in a Bulk NDJSON export, which then pays
        # nothing for the next query.
        bundled = c.execute(select(exists().where(p.c.bundle.is_not(None)))).scalar()
        earlier = p.alias("earlier")
        if bundled:
            # Another person from another Bundle with the same id: both are kept, the later under
            # an id of its own (ids are only unique within a Bundle).
            c.execute(
                update(p)
                .where(
                    p.c.status.is_(None),
                    exists().where(
                        earlier.c.source_id == p.c.source_id,
                        earlier.c.practice_id == p.c.practice_id,
                        earlier.c.seq < p.c.seq,
                        earlier.c.bundle.is_distinct_from(p.c.bundle),
                    ),
                )
                .values(
                    source_id=func.substr(p.c.source_id, 1, 108, type_=String)
                    + "~"
                    + func.coalesce(p.c.nhs_number, cast(p.c.seq, String))
                )
            )
        # The first patient with an id (then with an NHS number) in a practice is kept; later ones go.
        for column, status, earlier_must_be_kept in (
            ("source_id", "duplicate_id", False),
            ("nhs_number", "duplicate_nhs_number", True),
        ):
            same = [
                earlier.c[column] == p.c[column],
                earlier.c.practice_id == p.c.practice_id,
                earlier.c.seq < p.c.seq,
            ]
            if earlier_must_be_kept:
                same.append(earlier.c.status.is_(None))
            else:
                same.append(earlier.c.bundle.is_not_distinct_from(p.c.bundle))
            c.execute(update(p).where(p.c.status.is_(None), exists().where(*same)).values(status=status))
        c.execute(update(p).where(p.c.status.is_(None)).values(status="ok"))
        S.analyse(c, p)
        self._quarantine_from(
            select(
                p.c.file_no,
                p.c.line,
                literal("Patient"),
                p.c.resource_id,
                case(
                    (p.c.status == "practice_unknown", literal("generalPractitioner")),
                    (p.c.status == "duplicate_nhs_number", literal("identifier")),
                    else_=literal("id"),
                ),
                p.c.status,
                p.c.entry,
            ).where(p.c.status.not_in(("ok", SAME_PERSON))),
            "Patient",
        )

    def _join_same_people(self) -> None:
        """One person sent more than once (EPS sends a message per prescription, each with its
        Patient; a PDS record fetched by read and by search) is one patient: a later record of
        one practice with the NHS number of an earlier one, and the same birth date, joins the
        first record of that number. Its records follow it (their keys are moved), and a death
        any copy records is kept; where the copies disagree on anything a letter uses, a hold
        says it is unclear which is current (recruit.load.loader._write_holds). A record with the
        number but another birth date is not joined (it is quarantined as a duplicate NHS number).
        """
        c, p = self.conn, S.ld_patient
        repeated = (
            select(p.c.practice_id, p.c.nhs_number)
            .where(p.c.status.is_(None), p.c.nhs_number.is_not(None))
            .group_by(p.c.nhs_number, p.c.practice_id)
            .having(func.count() > 1)
            .subquery("repeated")
        )
        if not c.execute(select(exists().select_from(repeated))).scalar():
            return  # the usual case: nothing to join, and nothing more to pay
        first = p.alias("first")
        c.execute(
            update(p)
            .where(
                p.c.status.is_(None),
                exists().where(
                    repeated.c.practice_id == p.c.practice_id, repeated.c.nhs_number == p.c.nhs_number
                ),
            )
            .values(
                same_as=select(func.min(first.c.seq))
                .where(
                    first.c.practice_id == p.c.practice_id,
                    first.c.nhs_number == p.c.nhs_number,
                    first.c.status.is_(None),
                )
                .scalar_subquery()
            )
        )
        c.execute(
            update(p)
            .where(
                p.c.same_as.is_not(None),
                p.c.same_as != p.c.seq,
                exists().where(
                    first.c.seq == p.c.same_as,
                    first.c.date_of_birth == p.c.date_of_birth,
                    first.c.date_of_birth_latest.is_not_distinct_from(p.c.date_of_birth_latest),
                ),
            )
            .values(status=SAME_PERSON)
        )
        c.execute(update(p).where(p.c.status.is_(None)).values(same_as=None))
        self.summary.same_person = c.execute(
            select(func.count()).select_from(p).where(p.c.status == SAME_PERSON)
        ).scalar_one()
        copy = p.alias("copy")
        dead_copy = select(copy.c.same_as).where(
            copy.c.status == SAME_PERSON, copy.c.date_of_death.is_not(None)
        )
        c.execute(  # a death in any copy is the person's
            update(p)
            .where(p.c.status.is_(None), p.c.date_of_death.is_(None), p.c.seq.in_(dead_copy))
            .values(
                date_of_death=select(func.min(copy.c.date_of_death))
                .where(copy.c.same_as == p.c.seq, copy.c.status == SAME_PERSON)
                .scalar_subquery()
            )
        )
        k = S.ld_patient_key
        c.execute(
            update(k)
            .where(exists().where(p.c.seq == k.c.seq, p.c.status == SAME_PERSON))
            .values(seq=select(p.c.same_as).where(p.c.seq == k.c.seq).scalar_subquery())
        )

    def _apply_episodes(self) -> None:
        """Registration periods from EpisodeOfCare records, for stored patients whose own record
        gives none (neither the registration-details extension nor a PDS period): the episode
        then comes before generalPractitioner + active, whose start is unknown.

        An episode is matched to its patient by key (ld_patient_key), as prescriptions are. It
        is used when it is a GMS registration, or untyped but managed by the patient's practice,
        and is not with another practice; of several, the one that began latest. Every other
        episode is counted as not used, saying why. Set-based: a few UPDATEs, whatever the size.
        """
        c, e, k, p, o = self.conn, S.ld_episode, S.ld_patient_key, S.ld_patient, S.ld_org_key
        if not c.execute(select(exists().select_from(e))).scalar():
            return
        if self.org_keys:
            c.execute(insert(o), [{"key": key, "practice_id": v} for key, v in self.org_keys.items()])
        first = select(func.min(k.c.seq)).where(k.c.key == e.c.patient_ref).scalar_subquery()
        c.execute(update(e).values(patient_seq=first))
        S.analyse(c, e, o)

        def patient(column: ColumnElement[_T]) -> ScalarSelect[_T]:
            return select(column).where(p.c.seq == e.c.patient_seq).scalar_subquery()

        # Managed by the patient's practice; by an organisation the extract names (or an ODS
        # code) that is not it; or by one that cannot be told (none given, or not in the extract).
        same = exists().where(
            o.c.key == e.c.practice_ref, p.c.seq == e.c.patient_seq, o.c.practice_id == p.c.practice_id
        )
        known_org = or_(e.c.practice_ref.like("ods:%"), exists().where(o.c.key == e.c.practice_ref))
        unresolved = e.c.status.is_(None)
        for status, condition in (
            ("no_patient", or_(e.c.patient_seq.is_(None), patient(p.c.status) != "ok")),
            ("stated", patient(p.c.registration_stated) == literal(True)),
            ("untyped", and_(e.c.registration.is_(None), ~same)),
            ("other_practice", and_(known_org, ~same)),
        ):
            c.execute(update(e).where(unresolved, condition).values(status=status))
        # Of a patient's usable episodes, the one that began latest (no start: earliest).
        c.execute(update(e).where(unresolved).values(status="candidate"))
        later = e.alias("later")
        began_later = or_(
            and_(later.c.period_start.is_not(None), e.c.period_start.is_(None)),
            later.c.period_start > e.c.period_start,
            and_(
                or_(
                    later.c.period_start == e.c.period_start,
                    and_(later.c.period_start.is_(None), e.c.period_start.is_(None)),
                ),
                later.c.seq > e.c.seq,
            ),
        )
        c.execute(
            update(e)
            .where(
                e.c.status == "candidate",
                exists().where(
                    later.c.patient_seq == e.c.patient_seq,
                    later.c.status.in_(("candidate", "earlier")),  # unchanged while updating
                    began_later,
                ),
            )
            .values(status="earlier")
        )
        chosen = and_(e.c.patient_seq == p.c.seq, e.c.status == "candidate")
        # An inactive record's end (the day before the extract) stands if the episode gives none.
        c.execute(
            update(p)
            .where(exists().where(chosen))
            .values(
                registration_start=select(e.c.period_start).where(chosen).scalar_subquery(),
                registration_end=func.coalesce(
                    select(e.c.period_end).where(chosen).scalar_subquery(), p.c.registration_end
                ),
            )
        )
        c.execute(update(e).where(e.c.status == "candidate").values(status="ok"))
        episodes: dict[str, Counter[int]] = {}
        for status, file_no, n in c.execute(
            select(e.c.status, e.c.file_no, func.count()).group_by(e.c.status, e.c.file_no)
        ).all():
            if status != "ok":
                episodes.setdefault(status, Counter())[file_no] += n
        for status, by_file in sorted(episodes.items()):
            self._not_used(EPISODE_NOT_USED[status], by_file.total(), "EpisodeOfCare", by_file)

    def _count_registrations(self) -> None:
        """How many stored patients have no usable registration start, in one query: still
        registered at the extract date (no end, or a later one) with no start date."""
        p = S.ld_patient
        unknown = and_(
            p.c.registration_start.is_(None),
            or_(p.c.registration_end.is_(None), p.c.registration_end > self.dates.latest),
        )
        one, zero = literal(1), literal(0)
        row = self.conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((unknown, one), else_=zero)), 0),
                func.coalesce(
                    func.sum(case((and_(unknown, p.c.practice_ref.is_(None)), one), else_=zero)), 0
                ),
                func.coalesce(func.sum(case((p.c.nhs_number.is_(None), one), else_=zero)), 0),
            ).where(p.c.status == "ok")
        ).one()
        s = self.summary
        s.patients, s.registration_start_unknown, s.registration_practice_unnamed, s.no_nhs_number = (
            int(v) for v in row
        )

    def _held_practices(self) -> list[int]:
        """The practices this extract is for: those its stored patients are registered with."""
        p = S.ld_patient
        found = self.conn.execute(
            select(p.c.practice_id).where(p.c.status == "ok", p.c.practice_id.is_not(None)).distinct()
        ).scalars()
        return sorted(found)

    def _refuse_if_older(self, held: list[int]) -> None:
        """An extract older than the newest loaded for a practice it holds would bring back
        facts that are no longer true (a death undone): refuse it, naming both dates."""
        if not held:
            return
        newer = self.conn.execute(
            select(Practice.ods_code, Extract.extract_date)
            .join(Extract, Extract.id == Practice.extract_id)
            .where(Practice.id.in_(held), Extract.extract_date > self.dates.latest)
            .order_by(Practice.ods_code)
        ).all()
        if newer:
            which = "; ".join(f"practice {ods} has one taken on {when}" for ods, when in newer)
            raise RecruitError(
                f"This extract was taken on {self.dates.latest_iso} ({self.summary.date_source}), "
                f"but a newer extract is already loaded: {which}. An older extract cannot replace "
                "newer records, so nothing was loaded."
            )

    def _record_kinds(self) -> None:
        """Add the kinds of every staged record to those the files named."""
        c = self.conn
        staged: list[set[str]] = []
        for table in (S.ld_event, S.ld_med):
            staged.append(
                {k for (k,) in c.execute(select(table.c.resource_type).distinct()) if k is not None}
            )
            self.kinds |= staged[-1]
        self.event_kinds = (FHIR_EVENT_KINDS | staged[0]) & self.kinds
        self.med_kinds = (FHIR_MED_KINDS | staged[1]) & self.kinds
        for table, kind in ((S.ld_patient, "Patient"), (S.ld_medicine, "Medication")):
            if c.execute(select(exists().select_from(table))).scalar():
                self.kinds.add(kind)
        if self.orgs:
            self.kinds.add("Organization")
        if self.practitioners and self.fmt != "csv":
            self.kinds.add("Practitioner")

    def _replaced(
        self, model: type[ClinicalEvent | MedicationIssue], sort_kinds: AbstractSet[str], csv_kind: str
    ) -> ColumnElement[bool]:
        """Which of a practice's earlier rows (events or prescriptions) this extract replaces.

        Rows of a kind it carries; and, when it carries any kind of this sort of record, rows of
        no recorded kind (loaded before kinds were kept) or of the other format's kinds."""
        column = model.resource_type
        # Never NULL (the "kept" query negates it): a row of unknown kind is decided explicitly.
        of_carried_kind = and_(column.is_not(None), column.in_(sorted(self.kinds)))
        if self.fmt == "csv":
            return literal(True) if csv_kind in self.kinds else of_carried_kind
        if not sort_kinds:
            return of_carried_kind
        return or_(of_carried_kind, column.is_(None), column == csv_kind)

    def _kept_earlier(self, held: list[int]) -> None:
        """Say which kinds of earlier record this extract lacks, so they were kept."""
        if not held:
            return
        c = self.conn
        kept: dict[str, set[str]] = {}
        for model, kinds, csv_kind in (
            (ClinicalEvent, self.event_kinds, "Event"),
            (MedicationIssue, self.med_kinds, "Medication"),
        ):
            rows = c.execute(
                select(Practice.ods_code, model.resource_type)
                .join(Practice, Practice.id == model.practice_id)
                .where(model.practice_id.in_(held), ~self._replaced(model, kinds, csv_kind))
                .distinct()
            ).all()
            for ods, kind in rows:
                kept.setdefault(ods, set()).add(kind or "earlier records of unrecorded kind")
        self.summary.kept_earlier = {ods: sorted(k) for ods, k in sorted(kept.items())}

    def _retire_reused_ids(self, held: list[int]) -> None:
        """A patient id that now carries another NHS number or birth date is another person.

        The stored row keeps its history (reviews, invitations) but frees its id and its
        registration ends at the extract date; the incoming person gets a row of their own, so
        nothing the GP decided about the first person passes to the second."""
        p = S.ld_patient
        taken = self.dates.latest
        differs = or_(
            p.c.nhs_number.is_distinct_from(Patient.nhs_number),
            p.c.date_of_birth != Patient.date_of_birth,
            p.c.date_of_birth_latest.is_distinct_from(Patient.date_of_birth_latest),
        )
        other = exists().where(
            p.c.status == "ok",
            p.c.practice_id == Patient.practice_id,
            p.c.source_id == Patient.source_id,
            differs,
        )
        if not held:
            return
        done = self.conn.execute(
            update(Patient)
            .where(Patient.practice_id.in_(held), other)
            .values(
                source_id=func.substr(Patient.source_id, 1, 100, type_=String)
                + "~retired~"
                + cast(Patient.id, String),
                registration_end=case(
                    (
                        or_(Patient.registration_end.is_(None), Patient.registration_end > taken),
                        taken,
                    ),
                    else_=Patient.registration_end,
                ),
            )
        )
        self.summary.retired = max(done.rowcount or 0, 0)

    def _replace_practice_records(self, held: list[int]) -> None:
        """A newer extract replaces its practices' events and prescriptions of the kinds it carries."""
        if not held:
            return
        for model, kinds, csv_kind in (
            (ClinicalEvent, self.event_kinds, "Event"),
            (MedicationIssue, self.med_kinds, "Medication"),
        ):
            self.conn.execute(
                delete(model).where(model.practice_id.in_(held), self._replaced(model, kinds, csv_kind))
            )

    def _upsert_patients(self) -> None:
        c, p = self.conn, S.ld_patient
        cols = [
            "nhs_number",
            "title",
            "given_name",
            "family_name",
            "date_of_birth",
            "sex",
            "address",
            "postcode",
            "usual_gp_id",
            "registration_start",
            "registration_end",
            "date_of_death",
            "needs_interpreter",
            "language",
            "date_of_birth_latest",
        ]
        ok = p.c.status == "ok"
        match = and_(Patient.practice_id == p.c.practice_id, Patient.source_id == p.c.source_id, ok)
        c.execute(
            update(Patient)
            .where(match)
            .values({**{col: p.c[col] for col in cols}, "extract_id": self.extract_id})
        )
        # Known patients get their ids first, so the insert below need not look in the table it
        # is filling (on PostgreSQL that look scans every row inserted so far: quadratic).
        self._patient_ids(ok)
        c.execute(
            insert(Patient).from_select(
                ["practice_id", "source_id", "extract_id", *cols],
                select(
                    p.c.practice_id, p.c.source_id, literal(self.extract_id), *[p.c[col] for col in cols]
                ).where(ok, p.c.patient_id.is_(None)),
            )
        )
        self._patient_ids(and_(ok, p.c.patient_id.is_(None)))
        S.analyse(c, p, Patient.__table__)

    def _mark_pseudonymised(self) -> None:
        """Every patient this extract stored carries its extract's pseudonymised flag (a patient
        seen again in an identified extract is identified again), in one UPDATE."""
        self.conn.execute(
            update(Patient)
            .where(Patient.extract_id == self.extract_id)
            .values(pseudonymised=literal(self.pseudonymised))
        )

    def _patient_ids(self, which: ColumnElement[bool]) -> None:
        p = S.ld_patient
        self.conn.execute(
            update(p)
            .where(which)
            .values(
                patient_id=select(Patient.id)
                .where(Patient.practice_id == p.c.practice_id, Patient.source_id == p.c.source_id)
                .scalar_subquery()
            )
        )

    def _resolve_records(self) -> None:
        """For every staged event or prescription record: its patient, or why it has none.

        One INSERT ... SELECT per kind decides each record's status; the checks run in the
        order their reasons take precedence (no patient, patient quarantined, medicine
        missing, dated before birth, a repeated id), so each record gets exactly one reason.
        """
        c, r, k, p = self.conn, S.ld_record, S.ld_patient_key, S.ld_patient
        first_key = select(k.c.key, func.min(k.c.seq).label("seq")).group_by(k.c.key).subquery("first_key")
        m, med = S.ld_med, S.ld_medicine
        for kind, table, date_col in (
            ("event", S.ld_event, S.ld_event.c.event_date),
            ("med", S.ld_med, S.ld_med.c.issue_date),
        ):
            # One row per record: a resource with several codes staged one row per code.
            one = (
                select(
                    table.c.seq,
                    func.min(table.c.file_no).label("file_no"),
                    func.min(table.c.line).label("line"),
                    func.min(table.c.resource_type).label("resource_type"),
                    func.min(table.c.resource_id).label("resource_id"),
                    func.min(table.c.patient_ref).label("patient_ref"),
                    func.min(date_col).label("date"),
                    func.min(table.c.bundle).label("bundle"),
                    func.min(table.c.entry).label("entry"),
                )
                .group_by(table.c.seq)
                .subquery("one")
            )
            earlier = table.alias("earlier")
            repeated = exists().where(
                earlier.c.resource_type == one.c.resource_type,
                earlier.c.resource_id == one.c.resource_id,
                earlier.c.seq < one.c.seq,
                earlier.c.bundle.is_not_distinct_from(one.c.bundle),
            )
            bad = S.ld_bad_patient_key
            checks: list[tuple[ColumnElement[bool], str]] = []
            if kind == "med":
                # A prescription of a Medication that is in the extract but coded only in systems
                # recruit does not read: counted as not used, as a prescription carrying that
                # code itself is (it is not quarantined, whatever else is true of it).
                checks.append(
                    (
                        exists().where(
                            m.c.seq == one.c.seq,
                            m.c.code.is_(None),
                            exists().where(med.c.key == m.c.medication_ref, med.c.code.is_(None)),
                            ~exists().where(med.c.key == m.c.medication_ref, med.c.code.is_not(None)),
                        ),
                        NOT_USED,
                    )
                )
            checks += [
                # Its patient's own record was quarantined while reading: say so, not "missing".
                (
                    and_(first_key.c.seq.is_(None), exists().where(bad.c.key == one.c.patient_ref)),
                    "patient_quarantined",
                ),
                (first_key.c.seq.is_(None), "reference_dangling"),
                (or_(p.c.status.is_(None), p.c.status != "ok"), "patient_quarantined"),
            ]
            if kind == "med":
                checks.append(
                    (
                        exists().where(
                            m.c.seq == one.c.seq,
                            m.c.code.is_(None),
                            ~exists().where(med.c.key == m.c.medication_ref),
                        ),
                        "medication_dangling",
                    )
                )
            checks += [
                (one.c.date < p.c.date_of_birth, "before_birth"),
                (and_(one.c.resource_id.is_not(None), repeated), "duplicate_id"),
            ]
            c.execute(
                insert(r).from_select(
                    [
                        "seq",
                        "kind",
                        "file_no",
                        "line",
                        "resource_type",
                        "resource_id",
                        "patient_seq",
                        "status",
                        "entry",
                    ],
                    select(
                        one.c.seq,
                        literal(kind),
                        one.c.file_no,
                        one.c.line,
                        one.c.resource_type,
                        one.c.resource_id,
                        first_key.c.seq,
                        case(*[(cond, literal(status)) for cond, status in checks], else_=literal("ok")),
                        one.c.entry,
                    )
                    .select_from(one)
                    .outerjoin(first_key, first_key.c.key == one.c.patient_ref)
                    .outerjoin(p, p.c.seq == first_key.c.seq),
                )
            )
        self._quarantine_from(
            select(
                r.c.file_no,
                r.c.line,
                r.c.resource_type,
                r.c.resource_id,
                case(
                    (r.c.status == "before_birth", literal("date")),
                    (r.c.status == "medication_dangling", literal("medicationReference")),
                    (r.c.status == "duplicate_id", literal("id")),
                    else_=literal("subject"),
                ),
                r.c.status,
                r.c.entry,
            )
            .where(r.c.status.not_in(("ok", NOT_USED)))
            .order_by(r.c.seq),
            None,
        )
        unused: dict[str, Counter[int]] = {}
        for rtype, file_no, n in c.execute(
            select(r.c.resource_type, r.c.file_no, func.count())
            .where(r.c.status == NOT_USED)
            .group_by(r.c.resource_type, r.c.file_no)
        ).all():
            unused.setdefault(record_kind(rtype), Counter())[file_no] += n
        for kind, by_file in sorted(unused.items()):
            self._not_used(f"{kind} for a medicine {NOT_DMD}", by_file.total(), kind, by_file)

    def _quarantine_from(self, rows: Select, rtype: str | None) -> None:
        """Copy staged problems into the quarantine table with their reasons, and count them."""
        c = self.conn
        found = c.execute(rows).all()
        paths = {i: str(p) for i, p in enumerate(self.files)}
        batch = []
        for file_no, line, resource_type, rid, field_, status, entry in found:
            batch.append(
                {
                    "extract_id": self.extract_id,
                    "file": paths.get(file_no, "?"),
                    "line": line,
                    "entry": entry,
                    "resource_type": resource_type or rtype,
                    "resource_id": rid,
                    "field": self.field_names.get(file_no, {}).get(field_, field_),
                    "reason_code": status,
                    "reason": f"This {resource_type or rtype or 'record'} {REASONS.get(status, status)}.",
                    "raw_snippet": None,
                }
            )
            self.summary.quarantined_by_reason[status] += 1
        for start in range(0, len(batch), 2000):
            c.execute(insert(Quarantine), batch[start : start + 2000])

    def _insert_events_and_medications(self) -> None:
        c, r, p = self.conn, S.ld_record, S.ld_patient
        e = S.ld_event
        c.execute(
            insert(ClinicalEvent).from_select(
                [
                    "patient_id",
                    "practice_id",
                    "event_date",
                    "code_system",
                    "code",
                    "term",
                    "value",
                    "unit",
                    "status",
                    "resource_type",
                    "source_resource_id",
                ],
                select(
                    p.c.patient_id,
                    p.c.practice_id,
                    e.c.event_date,
                    e.c.code_system,
                    e.c.code,
                    e.c.term,
                    e.c.value,
                    e.c.unit,
                    e.c.status,
                    e.c.resource_type,
                    e.c.resource_id,
                )
                .join(r, and_(r.c.seq == e.c.seq, r.c.status == "ok"))
                .join(p, p.c.seq == r.c.patient_seq)
                .order_by(e.c.seq),
            )
        )
        m = S.ld_med
        med = self._medicines()
        c.execute(
            insert(MedicationIssue).from_select(
                [
                    "patient_id",
                    "practice_id",
                    "issue_date",
                    "code_system",
                    "code",
                    "term",
                    "quantity",
                    "course",
                    "status",
                    "resource_type",
                    "source_resource_id",
                ],
                select(
                    p.c.patient_id,
                    p.c.practice_id,
                    m.c.issue_date,
                    func.coalesce(m.c.code_system, med.c.code_system),
                    func.coalesce(m.c.code, med.c.code),
                    func.coalesce(m.c.term, med.c.term),
                    m.c.quantity,
                    m.c.course,
                    m.c.status,
                    m.c.resource_type,
                    m.c.resource_id,
                )
                .join(r, and_(r.c.seq == m.c.seq, r.c.status == "ok"))
                .join(p, p.c.seq == r.c.patient_seq)
                .outerjoin(med, and_(m.c.code.is_(None), med.c.key == m.c.medication_ref))
                .order_by(m.c.seq),
            )
        )

    @staticmethod
    def _medicines() -> Subquery:
        """One coded Medication per key, should a key repeat: the smallest code with its own
        term, so the result does not depend on the engine or the order rows were staged in."""
        staged = S.ld_medicine
        least = (
            select(staged.c.key, func.min(staged.c.code).label("code"))
            .where(staged.c.code.is_not(None))
            .group_by(staged.c.key)
            .subquery("least")
        )
        return (
            select(
                staged.c.key,
                staged.c.code,
                func.min(staged.c.code_system).label("code_system"),
                func.min(staged.c.term).label("term"),
            )
            .join(least, and_(least.c.key == staged.c.key, least.c.code == staged.c.code))
            .group_by(staged.c.key, staged.c.code)
            .subquery("med")
        )

    def _count_code_systems(self) -> None:
        """Coded entries and prescriptions stored from this extract, per code system: two
        GROUP BYs over the staged rows that were stored (as _insert_events_and_medications)."""
        c, e, m, r, p = self.conn, S.ld_event, S.ld_med, S.ld_record, S.ld_patient
        stored = and_(r.c.status == "ok", p.c.seq == r.c.patient_seq)
        events = (
            select(e.c.code_system, func.count())
            .join(r, r.c.seq == e.c.seq)
            .join(p, stored)
            .group_by(e.c.code_system)
        )
        self.summary.coded_by_system = {system: n for system, n in c.execute(events) if system}
        med = self._medicines()
        system = func.coalesce(m.c.code_system, med.c.code_system)
        meds = (
            select(system, func.count())
            .join(r, r.c.seq == m.c.seq)
            .join(p, stored)
            .outerjoin(med, and_(m.c.code.is_(None), med.c.key == m.c.medication_ref))
            .group_by(system)
        )
        self.summary.prescribed_by_system = {name: n for name, n in c.execute(meds) if name}

    def _write_holds(self, held: list[int]) -> None:
        """Person holds: quarantined records that still say the person died, left, or has a
        coded entry (such as dissent from research use). Letters match them by NHS number or by
        (practice, patient id), so a broken record can never let a letter through.

        Three sources, each one INSERT ... SELECT: holds the reader staged for records it could
        not read (ld_hold); patients quarantined here carrying a death or an ended registration;
        events quarantined here, with their codes."""
        c, p, k = self.conn, S.ld_patient, S.ld_patient_key
        h, bk, f = S.ld_hold, S.ld_bad_patient_key, S.ld_file
        practice = literal(held[0]) if len(held) == 1 else null()
        first_key = select(k.c.key, func.min(k.c.seq).label("seq")).group_by(k.c.key).subquery("first_key")
        # A quarantined Patient's NHS number and id: from its own hold, else from an nhs: key.
        bad_key = select(bk.c.key, func.min(bk.c.seq).label("seq")).group_by(bk.c.key).subquery("bad_key")
        bad_hold = (
            select(
                h.c.seq,
                func.min(h.c.nhs_number).label("nhs_number"),
                func.min(h.c.source_id).label("source_id"),
            )
            .where(h.c.patient_ref.is_(None))
            .group_by(h.c.seq)
            .subquery("bad_hold")
        )
        bad_nhs = (
            select(bk.c.seq, func.min(func.substr(bk.c.key, 5)).label("nhs_number"))
            .where(bk.c.key.like("nhs:%"))
            .group_by(bk.c.seq)
            .subquery("bad_nhs")
        )

        def from_key(ref: ColumnElement[str]) -> ColumnElement[str | None]:
            return case((ref.like("nhs:%"), func.substr(ref, 5)), else_=null())

        def via_bad_patient(query: Select, ref: ColumnElement[str]) -> Select:
            """A record's patient reference, followed to a Patient quarantined while reading:
            its own hold (NHS number, id) and the NHS number its keys carry."""
            return (
                query.outerjoin(bad_key, bad_key.c.key == ref)
                .outerjoin(bad_hold, bad_hold.c.seq == bad_key.c.seq)
                .outerjoin(bad_nhs, bad_nhs.c.seq == bad_key.c.seq)
            )

        cols = [
            "extract_id",
            "nhs_number",
            "practice_id",
            "source_id",
            "signal",
            "code_system",
            "code",
            "reason_code",
            "file",
            "line",
        ]
        staged_holds = (
            select(
                literal(self.extract_id),
                func.coalesce(
                    h.c.nhs_number,
                    p.c.nhs_number,
                    bad_hold.c.nhs_number,
                    bad_nhs.c.nhs_number,
                    from_key(h.c.patient_ref),
                ),
                func.coalesce(p.c.practice_id, practice),
                func.coalesce(h.c.source_id, p.c.source_id, bad_hold.c.source_id),
                h.c.signal,
                h.c.code_system,
                h.c.code,
                h.c.reason_code,
                f.c.path,
                h.c.line,
            )
            .select_from(h)
            .outerjoin(first_key, first_key.c.key == h.c.patient_ref)
            .outerjoin(p, p.c.seq == first_key.c.seq)
        )
        staged_holds = via_bad_patient(staged_holds, h.c.patient_ref).outerjoin(f, f.c.file_no == h.c.file_no)
        quarantined = p.c.status.not_in(("ok", SAME_PERSON))
        patient_holds = [
            select(
                literal(self.extract_id),
                p.c.nhs_number,
                p.c.practice_id,
                p.c.source_id,
                literal(signal),
                null(),
                null(),
                p.c.status,
                f.c.path,
                p.c.line,
            )
            .select_from(p)
            .outerjoin(f, f.c.file_no == p.c.file_no)
            .where(quarantined, condition)
            for signal, condition in (
                ("death", p.c.date_of_death.is_not(None)),
                ("left", p.c.registration_end <= self.dates.latest),
                # A second record of the same NHS number (or id) in one practice's extract: its
                # registration may be the newer one, so which is current cannot be told.
                ("unclear", p.c.status.in_(("duplicate_nhs_number", "duplicate_id"))),
            )
        ]
        # A person sent in several Bundles whose copies disagree on what a letter uses (name,
        # address, registration, death): which copy is current cannot be told.
        first = p.alias("first")
        letter_fields: tuple[str, ...] = ("title", "given_name", "family_name", "address", "postcode", "sex")
        letter_fields += ("registration_start", "registration_end", "date_of_death", "practice_id")
        disagreeing = (
            select(
                literal(self.extract_id),
                p.c.nhs_number,
                p.c.practice_id,
                first.c.source_id,
                literal("unclear"),
                null(),
                null(),
                literal("same_person_disagrees"),
                f.c.path,
                p.c.line,
            )
            .select_from(p)
            .join(first, first.c.seq == p.c.same_as)
            .outerjoin(f, f.c.file_no == p.c.file_no)
            .where(
                p.c.status == SAME_PERSON,
                or_(*(p.c[name].is_distinct_from(first.c[name]) for name in letter_fields)),
            )
        )
        patient_holds.append(disagreeing)
        r, e = S.ld_record, S.ld_event
        event_holds = (
            select(
                literal(self.extract_id),
                func.coalesce(
                    p.c.nhs_number, bad_hold.c.nhs_number, bad_nhs.c.nhs_number, from_key(e.c.patient_ref)
                ),
                func.coalesce(p.c.practice_id, practice),
                func.coalesce(p.c.source_id, bad_hold.c.source_id),
                literal("code"),
                e.c.code_system,
                e.c.code,
                r.c.status,
                f.c.path,
                e.c.line,
            )
            .select_from(r)
            .join(e, e.c.seq == r.c.seq)
            .outerjoin(p, p.c.seq == r.c.patient_seq)
        )
        event_holds = (
            via_bad_patient(event_holds, e.c.patient_ref)
            .outerjoin(f, f.c.file_no == e.c.file_no)
            .where(r.c.kind == "event", r.c.status != "ok", e.c.code.is_not(None))
        )
        every = union_all(staged_holds, *patient_holds, event_holds).subquery("every")
        c.execute(
            insert(PersonHold).from_select(
                cols,
                select(*every.c).where(or_(every.c[1].is_not(None), every.c[3].is_not(None))),
            )
        )
        # Counted by record: one record may hold for several reasons (a duplicate that also
        # records a death) or codes.
        records = (
            select(PersonHold.file, PersonHold.line, PersonHold.source_id, PersonHold.reason_code)
            .where(PersonHold.extract_id == self.extract_id)
            .distinct()
            .subquery("held_records")
        )
        self.summary.holds = c.execute(select(func.count()).select_from(records)).scalar_one()

    def _finish_practices(self, held: list[int], gp_ids: dict[int, list[int]]) -> None:
        c = self.conn
        if held:
            c.execute(update(Practice).where(Practice.id.in_(held)).values(extract_id=self.extract_id))
            for ods, org in sorted(self.org_values.items()):
                c.execute(
                    update(Practice)
                    .where(Practice.id.in_(held), Practice.ods_code == ods)
                    .values(
                        name=org.name, address=org.address, postcode=org.postcode, telephone=org.telephone
                    )
                )
        if held and "Patient" in self.kinds:
            # A patient missing from the practice's newer extract is no longer on its list: keep the row
            # (runs, reviews and invitations point at it) but end the registration by the extract date,
            # so searches and letters treat them as gone. Only an extract carrying patients says so.
            taken = self.dates.latest
            c.execute(
                update(Patient)
                .where(
                    Patient.practice_id.in_(held),
                    Patient.extract_id != self.extract_id,
                    or_(Patient.registration_end.is_(None), Patient.registration_end > taken),
                )
                .values(registration_end=taken)
            )
        self.summary.practices = sorted(
            c.execute(select(Practice.ods_code).where(Practice.id.in_(held))).scalars()
        )


__all__ = ["LoadSummary", "load_extract"]
