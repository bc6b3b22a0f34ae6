"""Turning slices of an extract into staging rows, in this process or on the other cores.

Reading and checking FHIR in Python costs several times more than the database inserts, so a
large extract is cut into chunks (a few MB of NDJSON lines, or one JSON file) and each chunk is
read by a worker process; the main process only writes the rows the workers hand back. The same
function stages a chunk in-process for small extracts, so both paths give the same rows.

Record order decides which of two duplicates is kept, so every record gets a sequence number
that sorts in file order: the chunk's number in the high bits, the record's place in the chunk
in the low bits.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from recruit.load.fhir import NHS_NUMBER_SYSTEM, FhirReader, NotUsed, Parsed, own_keys, reference_keys
from recruit.load.files import (
    BOM,
    DELETED_PATIENT,
    EMPTY_BUNDLE,
    MAX_RECORD_BYTES,
    Record,
    expand,
    json_problem,
    read_fhir,
    skip_line,
    snippet,
    too_long,
)
from recruit.load.rows import HoldRow, OrgRow, PractitionerRow
from recruit.load.scope import Scope, scope_holds, scope_rows
from recruit.load.values import DateReader, Invalid, nhs_number_is_valid
from recruit.nhs_numbers import digits_of

if TYPE_CHECKING:
    from recruit.load.strict import Failure, Key
    from recruit.models import Base

CHUNK_BYTES = 4 << 20
SEQ_BITS = 32  # records per chunk stay far below 2**32


@dataclass(frozen=True)
class Chunk:
    """A slice of one file: NDJSON lines starting at first_line, or a whole JSON file (data None)."""

    number: int
    file_no: int
    path: str
    first_line: int | None = None
    data: bytes | None = None
    size: int = 0
    too_long: int = 0  # the size of an over-long line at first_line, skipped unread (data is b"")


# Where a record is (file, line, entry) -> (FHIR version, field, message), from --strict.
StrictFailures = dict["Key", "Failure"]


@dataclass
class Staged:
    """What some records contribute to the staging tables, and the counts a summary needs."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    # (file_no, line, entry, resource_type, resource_id, field, reason_code, reason, raw snippet)
    quarantine: list[tuple[Any, ...]] = field(default_factory=list)
    orgs: dict[str, OrgRow] = field(default_factory=dict)
    practitioners: dict[str, PractitionerRow] = field(default_factory=dict)
    # Records read per (ODS code / practitioner id, file_no), so ones that end up unused can be
    # counted so, in their file.
    org_records: Counter[tuple[str, int]] = field(default_factory=Counter)
    practitioner_records: Counter[tuple[str, int]] = field(default_factory=Counter)
    read: int = 0
    read_by_type: Counter[str] = field(default_factory=Counter)  # resourceType (or "unreadable")
    not_used: Counter[str] = field(default_factory=Counter)
    # Per file: records read, by (file_no, kind); records not used (not counted as read), by file_no.
    read_by_file: Counter[tuple[int, str]] = field(default_factory=Counter)
    not_used_by_file: Counter[int] = field(default_factory=Counter)
    stu3: int = 0
    empty_bundles: Counter[int] = field(default_factory=Counter)  # Bundles with no entries, per file
    repaired: int = 0
    size: int = 0

    def add_row(self, table: str, row: tuple[Any, ...]) -> None:
        self.rows.setdefault(table, []).append(row)


class Stager:
    """Turns records (read, or already parsed by the CSV reader) into staging rows."""

    def __init__(self, dates: DateReader, strict_failures: StrictFailures | None = None) -> None:
        self.dates = dates
        self.reader = FhirReader(dates)
        self.strict_failures = strict_failures or {}
        self.out = Staged()
        self.seq = 0

    def take(self) -> Staged:
        """The rows staged so far (the stager starts afresh, keeping its sequence)."""
        out, self.out = self.out, Staged()
        out.repaired, self.dates.repaired = self.dates.repaired, 0
        return out

    def record(self, record: Record, seq: int) -> None:
        if record.not_used is not None:  # no record: an empty Bundle, an entry with only a request
            if record.not_used == EMPTY_BUNDLE:
                self.out.empty_bundles[record.file_no] += 1
            else:
                self.out.not_used[record.not_used] += 1
                self.out.not_used_by_file[record.file_no] += 1
            if record.not_used == DELETED_PATIENT:
                self._deleted_patient(record, seq)
            return
        if record.error is not None:
            code = "malformed" if record.field else "unreadable"
            self.parsed(record, Invalid(code, record.error, record.field), seq)
            return
        try:
            parsed: Parsed | Exception = self.reader.read(record.resource, record.full_url)
        except (Invalid, NotUsed) as exc:
            parsed = exc
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            # (the exception's own words may quote a value from the record: not shown)
            parsed = Invalid(
                "malformed", f"the record's structure is not as FHIR R4 describes ({type(exc).__name__})"
            )
        if record.scope is not None and isinstance(parsed, Parsed):
            scope_rows(record.scope, parsed)
        if self.strict_failures and isinstance(parsed, Parsed):
            problem = self.strict_failures.get((record.file_no, record.line, record.entry))
            if problem:
                version, field_, message = problem
                parsed = Invalid("fhir_invalid", f"fails full FHIR {version} validation: {message}", field_)
        self.parsed(record, parsed, seq)

    def parsed(self, record: Record, parsed: Parsed | Exception, seq: int | None = None) -> None:
        out = self.out
        if isinstance(parsed, NotUsed):
            out.not_used[parsed.what] += 1
            out.not_used_by_file[record.file_no] += 1
            if parsed.parsed is not None:
                self._not_used_rows(record, parsed.parsed, seq)
            return
        out.read += 1
        if seq is None:
            self.seq += 1
            seq = self.seq
        res = record.resource if isinstance(record.resource, dict) else {}
        rtype = res.get("resourceType") if isinstance(res.get("resourceType"), str) else None
        rid = res.get("id") if isinstance(res.get("id"), str) else None
        out.read_by_type[record_kind(rtype)] += 1
        out.read_by_file[(record.file_no, record_kind(rtype))] += 1
        fno, line = record.file_no, record.line
        staged: dict[str, list[tuple[Any, ...]]] = {}
        parsed_rows = None  # a record read whole but refused for a text value
        if isinstance(parsed, Parsed):
            staged = _rows(parsed, seq, fno, line, rid, rtype, record.scope, record.entry)
            problem = _text_problem(parsed, staged)
            if problem is not None:
                parsed_rows, parsed = parsed, problem
        if isinstance(parsed, Exception):
            assert isinstance(parsed, Invalid)
            self._quarantine(record, parsed, rtype, rid)
            if parsed_rows is not None:
                holds = parsed_holds(parsed_rows, self.dates.latest_iso)
            elif parsed.holds is not None:
                holds = parsed.holds
            else:
                holds = self.reader.holds(res, record.full_url)
                if record.scope is not None:
                    holds = scope_holds(record.scope, holds)
            self._hold(record, parsed, rtype, seq, holds)
            if rtype == "Patient":
                self._bad_patient(res, record, seq)
            return
        if parsed.stu3:
            out.stu3 += 1
        for org in parsed.orgs:
            if rtype == "Organization":
                out.org_records[(org.ods_code, fno)] += 1
            for key in org.keys:
                out.orgs[key] = org
        for prac in parsed.practitioners:
            if rtype == "Practitioner":  # (a CSV patient row names its GP: not a record of its own)
                out.practitioner_records[(prac.source_id, fno)] += 1
            for key in prac.keys:
                out.practitioners[key] = prac
        rows = out.rows
        for table, new in staged.items():
            rows.setdefault(table, []).extend(new)

    def _not_used_rows(self, record: Record, parsed: Parsed, seq: int | None) -> None:
        """Stage what a record counted as not used still tells other records (a Medication's
        keys, with no code); a key the database could not hold is left out, never fatal."""
        res = record.resource if isinstance(record.resource, dict) else {}
        rid = res.get("id") if isinstance(res.get("id"), str) else None
        rtype = res.get("resourceType") if isinstance(res.get("resourceType"), str) else None
        if record.scope is not None:
            scope_rows(record.scope, parsed)
        staged = _rows(parsed, seq or 0, record.file_no, record.line, rid, rtype, record.scope, record.entry)
        for table, new in staged.items():
            if table == "ld_medicine":
                new = [row for row in new if _problem(row[0], KEY_LIMIT) is None]
            self.out.rows.setdefault(table, []).extend(new)

    def _deleted_patient(self, record: Record, seq: int) -> None:
        """A request to delete a patient (Patient/x, or by NHS number) deletes nothing, but says
        the record is no longer to be trusted: the person it names is held back from letters."""
        try:
            keys = reference_keys({"reference": record.full_url}, "request.url")
        except Invalid:
            return
        keys = [k for k in keys if len(k) <= KEY_LIMIT and "\x00" not in k]
        if not keys:
            return
        key = keys[0]
        source_id = key.split("/", 1)[1] if key.startswith("Patient/") else None
        nhs = key[4:] if key.startswith("nhs:") else None
        problem = Invalid("deleted_in_extract", "a request to delete the patient", "request")
        self._hold(record, problem, "Patient", seq, [HoldRow(key, nhs, fit(source_id, 200), "left")])

    def _hold(
        self, record: Record, problem: Invalid, rtype: str | None, seq: int, holds: list[HoldRow]
    ) -> None:
        """Stage what a quarantined record still signals (the loader makes person_hold rows)."""
        if not holds:
            return
        rows = self.out.rows.setdefault("ld_hold", [])
        for h in holds:
            rows.append(
                (seq, record.file_no, record.line, fit(rtype, 40), problem.code[:64], fit(h.patient_ref, 250))
                + (h.nhs_number, fit(h.source_id, 200), h.signal, h.code_system, fit(h.code, 20))
            )

    def _bad_patient(self, res: dict[str, Any], record: Record, seq: int) -> None:
        """The keys of a Patient quarantined while reading, so its records say so rather than
        "not in this extract"."""
        keys = bad_patient_keys(res, record.full_url)
        if record.scope is not None:
            keys = [record.scope.own_key(key) for key in keys]
        if keys:
            self.out.rows.setdefault("ld_bad_patient_key", []).extend((key, seq) for key in keys)

    def _quarantine(self, record: Record, problem: Invalid, rtype: str | None, rid: str | None) -> None:
        """Quarantine rows are cut to fit their columns and cleared of NULs: they never fail."""
        snippet = record.raw.decode("utf-8", "replace")[:300].replace("\x00", "") if record.raw else None
        self.out.quarantine.append(
            (record.file_no, record.line, record.entry, fit(rtype, 64), fit(rid, 200))
            + (fit(problem.field, 200), problem.code, problem.reason.replace("\x00", ""), snippet)
        )


UNREADABLE_KIND = "unreadable"  # a record whose resourceType cannot be read


def record_kind(rtype: str | None) -> str:
    """The kind a record is counted under in the load summary: its resourceType, cut to fit."""
    return fit(rtype, 64) or UNREADABLE_KIND


def bad_patient_keys(res: dict[str, Any], full_url: str | None) -> list[str]:
    """Best effort, never raising: Patient/id, the fullUrl, and nhs:NUMBER when one is valid."""
    keys: list[str] = []
    try:
        if isinstance(res.get("id"), str) or isinstance(full_url, str):
            keys = own_keys({"resourceType": "Patient", "id": res.get("id")}, full_url)
        idents = res.get("identifier") or []
        for ident in [idents] if isinstance(idents, dict) else idents:  # one object for a list
            if isinstance(ident, dict) and ident.get("system") == NHS_NUMBER_SYSTEM:
                value = digits_of(str(ident.get("value")))
                if nhs_number_is_valid(value):
                    keys.append(f"nhs:{value}")
                    break
    except (TypeError, AttributeError):
        pass
    return [k for k in dict.fromkeys(keys) if len(k) <= KEY_LIMIT and "\x00" not in k]


def parsed_holds(parsed: Parsed, today: str) -> list[HoldRow]:
    """What a record read whole, but refused for a text value, signals."""
    holds = []
    for p in parsed.patients:
        if p.date_of_death:
            holds.append(HoldRow(None, p.nhs_number, p.source_id, "death"))
        if p.registration_end and p.registration_end <= today:
            holds.append(HoldRow(None, p.nhs_number, p.source_id, "left"))
    for e in parsed.events:
        holds.append(HoldRow(e.patient_ref, None, None, "code", e.code_system, e.code))
    return holds


def fit(value: str | None, limit: int) -> str | None:
    """A value for a column that must never fail: NULs removed, cut to the column's length."""
    if value is None:
        return None
    value = value.replace("\x00", "")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _rows(
    parsed: Parsed,
    seq: int,
    fno: int,
    line: int | None,
    rid: str | None,
    rtype: str | None,
    scope: Scope | None = None,
    entry: int | None = None,
) -> dict[str, list[tuple[Any, ...]]]:
    """The staging rows one parsed record gives, by staging table."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    if parsed.medicines:
        rows["ld_medicine"] = list(parsed.medicines)
    bundle = scope.name if scope is not None else None
    if parsed.patients:
        # (practice_id, usual_gp_id, patient_id, status are resolved later; then the Bundle it
        # came in, and same_as, the record of the same person it joins)
        rows["ld_patient"] = [
            (seq, fno, line, rid, *p[1:], None, None, None, None, bundle, None, entry)
            for p in parsed.patients
        ]
        rows["ld_patient_key"] = [(key, seq) for p in parsed.patients for key in dict.fromkeys(p.keys)]
    if parsed.events:
        rows["ld_event"] = [
            (seq, fno, line, rtype, e.resource_id, e.patient_ref, *e[1:7], e.status, bundle, entry)
            for e in parsed.events
        ]
    if parsed.medications:
        rows["ld_med"] = [
            (
                seq,
                fno,
                line,
                rtype,
                m.resource_id,
                m.patient_ref,
                *m[1:7],
                m.medication_ref,
                m.status,
                bundle,
                entry,
            )
            for m in parsed.medications
        ]
    if parsed.episodes:
        rows["ld_episode"] = [(seq, fno, line, rid, *e[:5], None, None) for e in parsed.episodes]
    return rows


# --- every text value headed for the database, checked in one place --------------------------------

# How a column is named in a FHIR record, for the quarantine's field (CSV rows name their columns).
FHIR_FIELDS = {
    "resource_id": "id",
    "source_id": "id",
    "key": "id",
    "nhs_number": "identifier",
    "title": "name.prefix",
    "given_name": "name.given",
    "family_name": "name.family",
    "address": "address.line",
    "postcode": "address.postalCode",
    "practice_ref": "generalPractitioner",
    "gp_ref": "generalPractitioner",
    "language": "communication.language",
    "patient_ref": "subject",
    "code_system": "code.coding.system",
    "code": "code.coding.code",
    "term": "code.coding.display",
    "unit": "valueQuantity.unit",
    "medication_ref": "medicationReference",
    "ods_code": "identifier",
    "name": "name",
    "telephone": "telecom",
    "professional_code": "identifier",
}
Limits = tuple[tuple[int, int | None, str], ...]


def _limits(table: str, target: type[Base] | None = None, renamed: dict[str, str] | None = None) -> Limits:
    """(position, longest allowed or None, column) of each text column of a staging table; the
    length is the smaller of the staging column's and the column the value finally lands in."""
    from sqlalchemy import String

    from recruit.load import stage as S

    out = []
    for i, col in enumerate(S.staging.tables[table].columns):
        if not isinstance(col.type, String) or col.name in (
            "status",
            "resource_type",
            "course",
            "sex",
            "bundle",
        ):
            continue
        limit = col.type.length
        if target is not None:
            final = target.__table__.columns.get((renamed or {}).get(col.name, col.name))
            if final is not None and isinstance(final.type, String) and final.type.length:
                limit = min(limit or final.type.length, final.type.length)
        out.append((i, limit, col.name))
    return tuple(out)


def _model_limits(model: type[Base], names: tuple[str, ...], renamed: dict[str, str] | None = None) -> Limits:
    """The same for a row type written with SQLAlchemy (organisations, practitioners)."""
    out = []
    for i, name in enumerate(names):
        col = model.__table__.columns.get((renamed or {}).get(name, name))
        if col is not None:
            out.append((i, getattr(col.type, "length", None), name))
    return tuple(out)


def _all_limits() -> dict[str, Limits]:
    from recruit.models import ClinicalEvent, MedicationIssue, Patient, Practice, Practitioner

    record = {"resource_id": "source_resource_id"}
    return {
        "ld_patient": _limits("ld_patient", Patient),
        "ld_patient_key": _limits("ld_patient_key"),
        "ld_event": _limits("ld_event", ClinicalEvent, record),
        "ld_med": _limits("ld_med", MedicationIssue, record),
        "ld_medicine": _limits("ld_medicine"),
        "ld_episode": _limits("ld_episode"),
        "org": _model_limits(Practice, OrgRow._fields, {"keys": "-"}),
        "practitioner": _model_limits(Practitioner, PractitionerRow._fields, {"keys": "-"}),
    }


LIMITS = _all_limits()
NO_LIMIT = 1 << 62  # a Text column: only the NUL check applies
# The hot path: each staging table's text values fetched in one call, with their limits.
_GETTERS = {
    table: (itemgetter(*[i for i, _, _ in limits]), tuple(lim or NO_LIMIT for _, lim, _ in limits), limits)
    for table, limits in LIMITS.items()
    if table.startswith("ld_") and len(limits) > 1
}
KEY_LIMIT = 250  # ld_patient_key.key, ld_ref.key


def _problem(value: str, limit: int | None) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    if limit is not None and len(value) > limit:
        return f"is longer than {limit} characters"
    return None


def _text_problem(parsed: Parsed, staged: dict[str, list[tuple[Any, ...]]]) -> Invalid | None:
    """The first text value of a record that the database would refuse or cut: a NUL character
    (PostgreSQL refuses it) or more characters than its column holds. The whole record is then
    quarantined, naming the field and what is wrong but never the value."""
    fields = parsed.fields or FHIR_FIELDS
    for table, rows in staged.items():
        if table == "ld_patient_key":
            for key, _ in rows:
                if len(key) > KEY_LIMIT or "\x00" in key:
                    return _text_invalid("key", _problem(key, KEY_LIMIT), fields)
            continue
        get, lims, limits = _GETTERS[table]
        for row in rows:
            for n, (value, limit) in enumerate(zip(get(row), lims, strict=True)):
                if value and (len(value) > limit or "\x00" in value):
                    _, column_limit, name = limits[n]
                    return _text_invalid(name, _problem(value, column_limit), fields)
    for kind, items in (("org", parsed.orgs), ("practitioner", parsed.practitioners)):
        for item in items:
            for i, longest, name in LIMITS[kind]:
                value = item[i]
                if isinstance(value, str) and (problem := _problem(value, longest)):
                    if parsed.fields:  # a CSV's usual GP column, or its practice code column
                        name = "gp_ref" if kind == "practitioner" else "practice_ref"
                    return _text_invalid(name, problem, fields)
            for key in item.keys:
                if problem := _problem(key, KEY_LIMIT):
                    return _text_invalid("key", problem, fields)
    return None


def _text_invalid(column: str, problem: str | None, fields: dict[str, str]) -> Invalid:
    field_ = fields.get(column, column)
    code = "text_nul" if problem and "NUL" in problem else "text_too_long"
    return Invalid(code, f"the value of {field_} {problem}", field_)


def stage_chunk(chunk: Chunk, extract_date: dt.date, strict: StrictFailures) -> Staged:
    """Read and stage every record of one chunk (runs in a worker process, or in-process)."""
    stager = Stager(DateReader(extract_date), strict)
    base = chunk.number << SEQ_BITS
    if chunk.data is None:
        records: Iterator[Record] = read_fhir(Path(chunk.path), chunk.file_no)
    elif chunk.too_long:
        records = iter([Record(chunk.file_no, chunk.first_line, None, error=too_long(chunk.too_long))])
    else:
        records = _ndjson_records(chunk)
    for i, record in enumerate(records):
        stager.record(record, base + i)
    out = stager.take()
    out.size = chunk.size
    return out


def _ndjson_records(chunk: Chunk) -> Iterator[Record]:
    assert chunk.data is not None and chunk.first_line is not None
    for line_no, line in enumerate(chunk.data.splitlines(keepends=True), start=chunk.first_line):
        if len(line) > MAX_RECORD_BYTES:  # only when chunks are larger than one record may be
            yield Record(chunk.file_no, line_no, None, error=too_long(len(line)))
            continue
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield Record(chunk.file_no, line_no, None, error=json_problem(exc, line), raw=snippet(line))
            continue
        yield from expand(data, chunk.file_no, line_no)


def chunks(files: list[Path], chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """The extract cut into chunks, in file order; NDJSON files are cut between lines.

    A line longer than MAX_RECORD_BYTES is never held whole: it is skipped in pieces and handed
    on as a chunk of its own that says only where it was and how long, to be quarantined.
    """
    number = 0
    for file_no, path in enumerate(files):
        if path.suffix.lower() not in (".ndjson", ".jsonl"):
            number += 1
            yield Chunk(number, file_no, str(path), size=path.stat().st_size)
            continue
        line = 1
        with path.open("rb") as f:
            if f.read(len(BOM)) != BOM:  # a byte-order mark at the start is skipped
                f.seek(0)
            while block := f.read(chunk_bytes):
                long_size = 0
                if not block.endswith(b"\n"):
                    start = block.rfind(b"\n") + 1  # where the unfinished line begins
                    so_far = len(block) - start
                    rest = f.readline(max(MAX_RECORD_BYTES + 1 - so_far, 1))
                    if so_far + len(rest) > MAX_RECORD_BYTES and not rest.endswith(b"\n"):
                        long_size = so_far + len(rest) + skip_line(f)
                        block = block[:start]
                    else:
                        block += rest
                if block:
                    number += 1
                    yield Chunk(number, file_no, str(path), line, block, len(block))
                    line += block.count(b"\n")
                if long_size:
                    number += 1
                    yield Chunk(number, file_no, str(path), line, b"", long_size, too_long=long_size)
                    line += 1


def _ignore_interrupt() -> None:
    """Workers leave Ctrl-C to the main process, which rolls the load back and says so."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def staged_chunks(
    files: list[Path],
    extract_date: dt.date,
    strict: StrictFailures,
    workers: int,
    chunk_bytes: int | None = None,
) -> Iterator[Staged]:
    """Every chunk's staged rows, in file order; read on `workers` processes when more than one.

    Only a few chunks are in flight at a time, so memory stays flat whatever the extract size.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    if workers <= 1:
        for chunk in chunks(files, chunk_bytes):
            yield stage_chunk(chunk, extract_date, strict)
        return
    methods = ("fork", "forkserver", "spawn")
    context = next(get_context(m) for m in methods if m in _start_methods())
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_interrupt) as pool:
        pending: list[Future[Staged]] = []
        try:
            for chunk in chunks(files, chunk_bytes):
                pending.append(pool.submit(stage_chunk, chunk, extract_date, strict))
                if len(pending) > workers * 2:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            for future in pending:
                future.cancel()


def _start_methods() -> list[str]:
    from multiprocessing import get_all_start_methods

    return get_all_start_methods()


def default_workers(files: list[Path]) -> int:
    """Both cores for an extract big enough to repay starting the workers (tens of MB)."""
    size = sum(p.stat().st_size for p in files)
    if size < 32 << 20:
        return 1
    return max(1, min(os.cpu_count() or 1, 4))
