"""Tabular extracts (CSV or tab-separated files) read through a YAML mapping (recruit.load.mapping).

A practice's report export, an EMIS or SystmOne extract, CPRD, OpenSAFELY-shaped tables and
OMOP CDM all arrive as tables. The mapping says which column holds what; this module reads every
file each table's pattern matches and turns each row into the rows the loader stages, or into a
quarantine reason naming the file, line and column. Nothing is guessed: a code goes through the
system or lookup its column declares, and a code that cannot be placed is quarantined.

Order of reading, so each row can be judged whole: lookups (dictionaries, not records), the
patients table's keys, the tables of several rows a patient (registration, address, death: the
one in force is kept for its patient), the patients, then coded entries and prescriptions.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import hashlib
import io
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from stdnum import verhoeff

from recruit.errors import RecruitError
from recruit.load.codes import DMD, SNOMED, SYSTEM_NAMES, normalise_code
from recruit.load.fhir import NHS_NUMBER_SYSTEM, NotUsed, Parsed
from recruit.load.files import Record, fingerprint, input_files
from recruit.load.mapping import (
    CODE_SYSTEMS,
    AddressColumns,
    CodeColumn,
    Columns,
    DateSpec,
    DeathColumns,
    EventColumns,
    FromLookup,
    Lookup,
    Mapping,
    MedicationColumns,
    PatientColumns,
    RegistrationColumns,
    RegistrationFile,
    RowFilter,
    Table,
    TableFile,
    Value,
    load_mapping,
)
from recruit.load.rows import EventRow, HoldRow, MedicationRow, PatientRow, PractitionerRow
from recruit.load.status import ISSUED, RECORDED
from recruit.load.values import DateReader, Invalid, clean_postcode, nhs_number_is_valid
from recruit.nhs_numbers import digits_of

csv.field_size_limit(64 * 1024 * 1024)

SYSTEMS = CODE_SYSTEMS
# SNOMED CT identifiers: the partition (second and third digits from the right) of a concept.
CONCEPT_PARTITIONS = ("00", "10")


@lru_cache(maxsize=65536)
def _parse_date(raw: str, formats: tuple[str, ...]) -> str | None:
    """ISO text of a date written in one of the formats (an extract repeats few dates)."""
    for fmt in formats:
        try:
            return dt.datetime.strptime(raw, fmt).date().isoformat()
        except ValueError:
            continue
    return None


@lru_cache(maxsize=65536)
def valid_nhs_number(digits: str) -> bool:
    """nhs_number_is_valid, remembered: every row of a report joined by NHS number asks again."""
    return nhs_number_is_valid(digits)


@lru_cache(maxsize=65536)
def valid_sctid(code: str) -> bool:
    """A SNOMED CT (or dm+d) concept id: digits, 6 to 18 long, no leading zero, a concept
    partition, and a correct Verhoeff check digit. A local code id (EMIS CodeId, CPRD
    medcodeid) that merely looks like one fails one of these nearly always."""
    return (
        code.isdigit()
        and 6 <= len(code) <= 18
        and code[0] != "0"
        and code[-3:-1] in CONCEPT_PARTITIONS
        and verhoeff.is_valid(code)
    )


def place_code(system: str, raw: str) -> str | None:
    """The code in the form codelists use, or None when it cannot be a code of that system."""
    code = normalise_code(system, raw)
    if code is not None and system in (SNOMED, DMD) and not valid_sctid(code):
        return None
    return code


def _malformed(system: str, raw: str) -> str:
    what = SYSTEM_NAMES.get(system, system)
    if system in (SNOMED, DMD):
        return (
            f"'{raw[:30]}' is not a valid {what} id (its check digit or partition is wrong; "
            "a local code id here needs its lookup table)"
        )
    return f"'{raw[:30]}' is not a well-formed {what} code"


@dataclass
class _Detail:
    """The row of a several-rows-a-patient table kept for one patient, and where it is."""

    rank: tuple[Any, ...]
    value: Any
    file_no: int
    line: int
    snippet: bytes
    kind: str
    holds: list[HoldRow] = field(default_factory=list)


class CsvSource:
    """Reads a folder (or files) of tables into the rows the loader stages."""

    format = "csv"

    def __init__(self, paths: list[Path], mapping_path: Path) -> None:
        self.mapping, self.tables, raw = load_mapping(mapping_path)
        self.mapping_name = mapping_path.name
        self.pseudonymised = self.mapping.pseudonymised
        # Only ordinary files, found without following links (a FIFO or a link out of the folder
        # is refused before anything is opened).
        found = [(p, f) for p in paths for f in input_files([p])]
        claimed: dict[Path, str] = {}

        def matching(pattern: str, what: str) -> list[Path]:
            out = sorted(
                {f for p, f in found if f.match(pattern) and _named_by(f, p, pattern)}, key=_name_order
            )
            for f in out:
                if f in claimed and claimed[f] != what:
                    raise RecruitError(
                        f"{f.name} matches both the {claimed[f]} and the {what} file names of the mapping "
                        f"'{self.mapping.name}': make the patterns in {self.mapping_name} tell them apart."
                    )
                claimed[f] = what
            return out

        self.lookup_files: dict[str, list[Path]] = {}
        for name, lookup in self.mapping.lookups.items():
            files = matching(lookup.file, f"'{name}' lookup")
            if not files:
                described = f" ({lookup.describe})" if lookup.describe else ""
                raise RecruitError(
                    f"No file matching '{lookup.file}', the '{name}' lookup{described} that the mapping "
                    f"{self.mapping_name} translates codes or ids through, in "
                    f"{', '.join(str(p) for p in paths)}. Without it those codes cannot be read; nothing was "
                    "loaded. Give the file beside the extract (an extra path to recruit load)."
                )
            self.lookup_files[name] = files
        self.table_files: list[tuple[Table, list[Path]]] = []
        for table in self.tables:
            files = matching(table.spec.file, f"{table.name} table")
            if not files:
                raise RecruitError(
                    f"No file matching '{table.spec.file}' (the {table.name} table named in "
                    f"{self.mapping_name}) in {', '.join(str(p) for p in paths)}."
                )
            self.table_files.append((table, files))
        self.files: list[Path] = [f for fs in self.lookup_files.values() for f in fs]
        self.files += [f for _, fs in self.table_files for f in fs]
        self.file_no = {f: i for i, f in enumerate(self.files)}
        self.date_file: Path | None = None
        if self.mapping.extract_date is not None:
            pattern = self.mapping.extract_date.file
            dated = [m for p in paths for m in ([p] if p.is_file() else sorted(p.glob(pattern)))]
            dated = [m for m in dated if m.match(pattern)]
            self.date_file = dated[0] if dated else None
        printed = self.files + ([self.date_file] if self.date_file else [])
        self.fingerprint = fingerprint(printed, hashlib.sha256(raw).hexdigest().encode())
        self.lookup_rows: dict[str, int] = {}  # lookup file -> entries read (not records)
        self.date_source = "the CSV export's date file"  # where extract_date() found the date
        self._lookups: dict[str, dict[str, dict[str, str] | None]] = {}

    def field_names(self) -> dict[int, dict[str, str]]:
        """Per file: the table's column for each field the loader judges after reading (the
        patient a row refers to, its date, its id), so its quarantine names the column."""
        out: dict[int, dict[str, str]] = {}
        for table, files in self.table_files:
            cols = table.cols
            names = {"subject": _key_column(table), "id": getattr(cols, "id", None) or _key_column(table)}
            date = getattr(cols, "date", None) or getattr(cols, "date_of_birth", None)
            if isinstance(date, str):
                names["date"] = date
            elif isinstance(date, DateSpec):
                names["date"] = date.column or date.year or "date"
            for path in files:
                out[self.file_no[path]] = names
        return out

    # --- checks before the load ------------------------------------------------------------

    def check_headers(self) -> None:
        """Refuse at once a file that is not text or lacks a mapped column (reads the header)."""
        for name, files in self.lookup_files.items():
            lookup = self.mapping.lookups[name]
            for path in files:
                rows = self._rows(path, _lookup_table(lookup), _lookup_columns(lookup))
                next(rows, None)
                rows.close()
        for table, files in self.table_files:
            for path in files:
                rows = self._rows(path, table.spec, _columns(table.spec.columns))
                next(rows, None)
                rows.close()

    def extract_date(self) -> dt.date | None:
        """The date the export says it was taken (the mapping's extract_date file), if any."""
        spec = self.mapping.extract_date
        if spec is None or self.date_file is None:
            return None
        formats = [*self.mapping.date_formats, "%Y-%m-%d"]
        if spec.name_pattern is not None:
            found = re.search(spec.name_pattern, self.date_file.name)
            raw = found.group(1) if found and found.groups() else ""
            formats = [spec.name_format] if spec.name_format else formats
            self.date_source = f"the name of {self.date_file.name}"
            return self._extract_date(raw, formats, self.date_source)
        assert spec.column is not None
        fm = TableFile(file=spec.file, columns={"extract_date": spec.column})
        for _, row, problem in self._rows(self.date_file, fm, [spec.column]):
            if problem or not isinstance(row, dict):
                break
            self.date_source = f"{self.date_file.name}, column {spec.column}"
            return self._extract_date(row[spec.column].strip(), formats, self.date_file.name)
        return None

    def _extract_date(self, raw: str, formats: list[str], where: str) -> dt.date:
        for fmt in formats:
            try:
                return dt.datetime.strptime(raw, fmt).date()
            except ValueError:
                continue
        raise RecruitError(
            f"{where} gives the extract date in a form the mapping does not expect; "
            "give the date with --extract-date YYYY-MM-DD."
        )

    # --- reading ---------------------------------------------------------------------------

    def records(self, dates: DateReader) -> Iterator[tuple[Record, Parsed | Exception]]:
        """Every row of every table, as staged rows or the reason it could not be used."""
        self.dates = dates
        self._read_lookups()
        patient_table, patient_files = self.table_files[0]
        by_key = isinstance(patient_table.cols, PatientColumns) and patient_table.cols.patient is not None
        self.by_key = by_key
        # (the first pass over the patients is needed only to judge rows of detail tables)
        has_details = any(t.part in ("registrations", "addresses", "deaths") for t, _ in self.table_files)
        known = self._patient_keys(patient_table, patient_files) if has_details else set()
        details: dict[str, dict[str, _Detail]] = {"registrations": {}, "addresses": {}, "deaths": {}}
        later: list[tuple[Table, list[Path]]] = []
        for table, files in self.table_files[1:]:
            if table.part in details:
                yield from self._detail_rows(table, files, known, details[table.part])
            else:
                later.append((table, files))
        outcome: dict[str, bool] = {}  # patient key -> stored (True) or quarantined (False)
        for record, parsed in self._patient_rows(patient_table, patient_files, details):
            key = self._row_key(record) if has_details else None
            if key is not None:
                outcome[key] = outcome.get(key, False) or isinstance(parsed, Parsed)
            yield record, parsed
        for chosen in details.values():
            for key, detail in chosen.items():
                record = Record(
                    detail.file_no, detail.line, {"resourceType": detail.kind}, raw=detail.snippet
                )
                if outcome.get(key):
                    yield record, Parsed()
                else:
                    problem = Invalid(
                        "patient_quarantined",
                        "its patient's row in the patients table was quarantined",
                        _key_column(self.tables[0]),
                    )
                    problem.holds = detail.holds
                    yield record, problem
        for table, files in later:
            yield from self._record_rows(table, files)

    def _row_key(self, record: Record) -> str | None:
        res = record.resource
        return res.get("id") if isinstance(res, dict) else None

    def _read_lookups(self) -> None:
        for name, files in self.lookup_files.items():
            lookup = self.mapping.lookups[name]
            entries: dict[str, dict[str, str] | None] = {}
            wanted = _lookup_columns(lookup)
            table = _lookup_table(lookup)
            for path in files:
                n = 0
                for _, row, problem in self._rows(path, table, wanted):
                    if problem or row is None or isinstance(row, RowFilter):
                        continue
                    key = row[lookup.key].strip()
                    if not key:
                        continue
                    n += 1
                    value = {
                        out: " ".join(v for v in (row[c].strip() for c in _as_list(cols)) if v)
                        for out, cols in lookup.values.items()
                    }
                    if key in entries and entries[key] is not None and entries[key] != value:
                        entries[key] = None  # two meanings for one id: never guessed
                    elif key not in entries:
                        entries[key] = value
                self.lookup_rows[str(path)] = n
            self._lookups[name] = entries

    def _lookup(self, spec: FromLookup, row: dict[str, str]) -> str | None:
        raw = row[spec.column].strip()
        if not raw:
            return None
        entry = self._lookups[spec.lookup].get(raw)
        if entry is None:
            raise Invalid(
                "lookup_missing" if raw not in self._lookups[spec.lookup] else "lookup_conflict",
                f"'{raw[:40]}' is not in the '{spec.lookup}' lookup"
                if raw not in self._lookups[spec.lookup]
                else f"the '{spec.lookup}' lookup gives two different values for '{raw[:40]}'",
                spec.column,
            )
        return entry.get(spec.take) or None

    def _patient_keys(self, table: Table, files: list[Path]) -> set[str]:
        """The patient keys the patients table holds (a first, light pass), so a row of another
        table can be told from one whose patient the extract does not have."""
        cols = table.cols
        assert isinstance(cols, PatientColumns)
        column = cols.patient or cols.nhs_number
        assert column is not None
        keys: set[str] = set()
        for path in files:
            for _, row, problem in self._rows(path, table.spec, _columns(table.spec.columns)):
                if problem or row is None or isinstance(row, RowFilter):
                    continue
                key = self._key_value(row, column)
                if key:
                    keys.add(key)
        return keys

    def _key_value(self, row: dict[str, str], column: str) -> str:
        raw = row.get(column, "").strip()
        return raw if self.by_key else digits_of(raw)

    def _ref(self, row: dict[str, str], cols: Columns) -> tuple[str, str]:
        """The patient reference a row of another table makes, and its key."""
        # load_mapping has checked that every table names the column the patients are keyed by.
        if self.by_key:
            assert cols.patient is not None
            key = row[cols.patient].strip()
            if not key:
                raise Invalid("patient_missing", "the patient id is missing", cols.patient)
            return f"Patient/{key}", key
        assert cols.nhs_number is not None
        nhs = digits_of(row[cols.nhs_number])
        if not valid_nhs_number(nhs):
            raise Invalid(
                "nhs_number_invalid",
                "the NHS number fails its check digit (Modulus 11) or is not 10 digits",
                cols.nhs_number,
            )
        return f"nhs:{nhs}", nhs

    def _each_row(
        self, table: Table, files: list[Path], resource: Callable[[dict[str, str] | None], dict[str, Any]]
    ) -> Iterator[tuple[Record, dict[str, str], Exception | None]]:
        """Each row of a table's files as a Record, with what ends it early: a row the mapping
        leaves out (not used, with its reason) or a line that cannot be read (quarantined)."""
        for path in files:
            file_no = self.file_no[path]
            for line, row, problem in self._rows(path, table.spec, _columns(table.spec.columns)):
                as_dict = row if isinstance(row, dict) else None
                record = Record(file_no, line, resource(as_dict), raw=_snippet(row))
                if isinstance(row, RowFilter):
                    yield record, {}, NotUsed(f"{table.kind} row {row.reason}")
                elif problem or as_dict is None:
                    yield record, {}, Invalid("unreadable", problem or "the line cannot be read")
                else:
                    yield record, as_dict, None

    def _detail_rows(
        self, table: Table, files: list[Path], known: set[str], chosen: dict[str, _Detail]
    ) -> Iterator[tuple[Record, Parsed | Exception]]:
        """Rows of registration, address or death tables: the one in force is kept per patient
        (yielded after the patients); the rest are counted as not used, or quarantined."""
        cols = table.cols
        resource = {"resourceType": table.kind}
        for record, row, early in self._each_row(table, files, lambda _: resource):
            if early is not None:
                yield record, early
                continue
            try:
                ref, key = self._ref(row, cols)
                if key not in known:
                    raise Invalid(
                        "patient_unknown",
                        "no patient with this id in the patients table",
                        getattr(cols, "patient", None) or cols.nhs_number,
                    )
                rank, value, holds = self._detail(table, row, key)
            except Invalid as exc:
                exc.holds = self._detail_holds(table, row)
                yield record, exc
                continue
            if rank is None:
                yield record, NotUsed(value)
                continue
            detail = _Detail(
                rank, value, record.file_no, record.line or 0, record.raw or b"", table.kind, holds
            )
            old = chosen.get(key)
            if old is None or rank > old.rank:
                chosen[key] = detail
                if old is not None:
                    yield (
                        Record(old.file_no, old.line, resource, raw=old.snippet),
                        NotUsed(_superseded(table)),
                    )
            else:
                yield record, NotUsed(_superseded(table))

    def _detail(self, table: Table, row: dict[str, str], key: str) -> tuple[Any, Any, list[HoldRow]]:
        """(rank, value, holds) of a detail row; rank None: not used, value says why."""
        cols = table.cols
        latest = self.dates.latest_iso
        if isinstance(cols, RegistrationColumns):
            spec = table.spec
            assert isinstance(spec, RegistrationFile)
            if cols.type and spec.registration_types is not None:
                kind = row[cols.type].strip()
                if kind.lower() not in {t.lower() for t in spec.registration_types}:
                    return None, "Registration of another type (not for GP services)", []
            start = self._date_of(row, cols.start, False)[0] if cols.start else None
            end = self._end(row, cols.end)
            ods = self._text(row, cols.practice_ods)
            return (start or "", "1"), (start, end, ods), []
        if isinstance(cols, AddressColumns):
            start = self._date_of(row, cols.start, False)[0] if cols.start else None
            end = self._end(row, cols.end)
            if end is not None and end <= latest:
                return None, "Address that ended before the extract (an earlier address)", []
            lines = "\n".join(v for v in (row[c].strip() for c in cols.address) if v) or None
            postcode = clean_postcode(row[cols.postcode].strip() or None) if cols.postcode else None
            return (start or "",), (lines, postcode), []
        assert isinstance(cols, DeathColumns)
        when = self._date_of(row, cols.date, True)[0]
        source_id = key if self.by_key else None
        nhs = None if self.by_key else key
        hold = HoldRow(None, nhs, source_id, "death")
        # the earliest death recorded is kept (a later one ranks lower)
        return (_negate(when),), when, [hold]

    def _detail_holds(self, table: Table, row: dict[str, str]) -> list[HoldRow]:
        """A death row that cannot be read still says the person may have died."""
        cols = table.cols
        if not isinstance(cols, DeathColumns):
            return []
        key = self._key_value(row, cols.patient or cols.nhs_number or "")
        if not key:
            return []
        return [HoldRow(None, None if self.by_key else key, key if self.by_key else None, "death")]

    def _patient_rows(
        self, table: Table, files: list[Path], details: dict[str, dict[str, _Detail]]
    ) -> Iterator[tuple[Record, Parsed | Exception]]:
        cols = table.cols
        assert isinstance(cols, PatientColumns)
        key_column = cols.patient or cols.nhs_number or ""

        def resource(row: dict[str, str] | None) -> dict[str, Any]:
            out: dict[str, Any] = {"resourceType": "Patient"}
            if row is not None:
                key = self._key_value(row, key_column)
                if key:
                    out["id"] = key
                if cols.nhs_number:
                    # Only so a quarantined patient's key can be staged (recruit.load.chunks).
                    out["identifier"] = [{"system": NHS_NUMBER_SYSTEM, "value": row.get(cols.nhs_number)}]
            return out

        for record, row, early in self._each_row(table, files, resource):
            if early is not None:
                yield record, early
                continue
            try:
                yield record, self._patient(row, cols, details)
            except Invalid as exc:
                exc.holds = self._patient_holds(row, cols, details)
                yield record, exc

    def _patient(
        self, row: dict[str, str], c: PatientColumns, details: dict[str, dict[str, _Detail]]
    ) -> Parsed:
        m = self.mapping
        nhs = digits_of(row[c.nhs_number]) if c.nhs_number else ""
        nhs_ok = valid_nhs_number(nhs)
        if self.by_key:
            assert c.patient is not None  # by_key means the patients table names its id column
            key = row[c.patient].strip()
            if not key:
                raise Invalid("patient_missing", "the patient id is missing", c.patient)
            keys = [f"Patient/{key}"] + ([f"nhs:{nhs}"] if nhs_ok else [])
            source_id = key
        else:
            if not nhs_ok:
                raise Invalid(
                    "nhs_number_invalid",
                    "the NHS number fails its check digit (Modulus 11) or is not 10 digits",
                    c.nhs_number,
                )
            key = nhs
            keys = [f"nhs:{nhs}"]
            source_id = (row[c.source_id].strip() if c.source_id else "") or nhs
        if m.pseudonymised:
            nhs_ok = False
        ods = (self._text(row, c.practice_ods) or m.practice_ods or "").strip().upper() or None
        get = lambda name: (row[name].strip() or None) if name else None  # noqa: E731
        sex_raw = get(c.sex) or ""
        sex = m.sex_values.get(sex_raw) or (
            sex_raw.lower() if sex_raw.lower() in ("male", "female") else "unknown"
        )
        out = Parsed(fields=_fields_of(c))
        gp_name = self._text(row, c.usual_gp)
        gp_key = None
        if gp_name and ods:
            gp_key = f"gpname:{ods}:{gp_name}"
            title, given, family = person_name(gp_name)
            out.practitioners.append(PractitionerRow([gp_key], gp_name, title, given, family, None))
        birth, birth_latest = self._date_of(row, c.date_of_birth, True)
        assert birth is not None  # required: a missing birth date raised Invalid
        address = "\n".join(v for v in (row[a].strip() for a in c.address) if v) or None
        postcode = clean_postcode(get(c.postcode))
        moved = details["addresses"].get(key)
        if moved is not None:
            address, postcode = moved.value
        start = self._date_of(row, c.registration_start, False)[0] if c.registration_start else None
        end = self._end(row, c.registration_end)
        stated = bool(c.registration_start or c.registration_end)
        registration = details["registrations"].get(key)
        if registration is not None:
            start, end, reg_ods = registration.value
            ods = ods or reg_ods
            stated = True
        death = None
        if isinstance(c.date_of_death, list):
            for column in c.date_of_death:  # (CPRD: the practice's and CPRD's own death dates)
                found = self._date_of(row, column, False)[0]
                death = min(d for d in (death, found) if d) if found else death
        elif c.date_of_death:
            death = self._date_of(row, c.date_of_death, False)[0]
        died = details["deaths"].get(key)
        if died is not None:
            death = min(d for d in (death, died.value) if d)
        nhs_value = nhs if nhs_ok and not m.pseudonymised else None
        out.patients.append(
            PatientRow(
                keys=keys,
                source_id=source_id,
                nhs_number=nhs_value,
                title=get(c.title),
                given_name=get(c.given_name),
                family_name=_name_case(get(c.family_name)),
                date_of_birth=birth,
                sex=sex,
                address=address,
                postcode=postcode,
                practice_ref=f"ods:{ods}" if ods else None,
                gp_ref=gp_key,
                registration_start=start,
                registration_end=end,
                date_of_death=death,
                needs_interpreter=bool(c.interpreter and row[c.interpreter].strip() in m.yes_values),
                language=self._text(row, c.language),
                date_of_birth_latest=birth_latest,
                registration_stated=stated,
            )
        )
        return out

    def _patient_holds(
        self, row: dict[str, str], c: PatientColumns, details: dict[str, dict[str, _Detail]]
    ) -> list[HoldRow]:
        """What a patient row that could not be read still signals, best effort (issue 14 case
        2): any date of death, or any deregistration date not after the extract date (or one
        that cannot be read)."""
        key = self._key_value(row, c.patient or c.nhs_number or "")
        digits = digits_of(row.get(c.nhs_number or "", "")) if c.nhs_number else ""
        nhs = digits if valid_nhs_number(digits) else None
        source_id = key if self.by_key else ((row.get(c.source_id or "", "") or "").strip() or nhs)
        if not (nhs or source_id):
            return []
        holds = []
        death_columns = c.date_of_death if isinstance(c.date_of_death, list) else [c.date_of_death]
        if any(isinstance(d, str) and row.get(d, "").strip() for d in death_columns) or (
            key in details["deaths"]
        ):
            holds.append(HoldRow(None, nhs, source_id, "death"))
        if isinstance(c.registration_end, str) and row.get(c.registration_end, "").strip():
            try:
                end = self._end(row, c.registration_end)
            except Invalid:
                end = ""
            if end is not None:
                holds.append(HoldRow(None, nhs, source_id, "left"))
        return holds

    def _record_rows(self, table: Table, files: list[Path]) -> Iterator[tuple[Record, Parsed | Exception]]:
        cols = table.cols
        resource: dict[str, Any] = {"resourceType": table.kind}
        if isinstance(cols, EventColumns):
            read = partial(self._event, c=cols)
        else:
            assert isinstance(cols, MedicationColumns)  # the only other part read as records
            read = partial(self._medication, c=cols)
        id_column = getattr(cols, "id", None)

        def with_id(row: dict[str, str] | None) -> dict[str, Any]:
            rid = row[id_column].strip() if row is not None and id_column else ""
            return {**resource, "id": rid} if rid else resource

        for record, row, early in self._each_row(table, files, with_id):
            if early is not None:
                yield record, early
                continue
            try:
                yield record, read(row)
            except Invalid as exc:
                exc.holds = self._record_holds(row, cols)
                yield record, exc

    def _codes(
        self, row: dict[str, str], cols: EventColumns | MedicationColumns
    ) -> list[tuple[str, str, str | None]]:
        """(system, code, term from a lookup) for each code the row's code columns give."""
        specs = list(cols.codes)
        if isinstance(cols, EventColumns) and cols.code is not None:
            if cols.code_system:
                specs.append(CodeColumn(column=cols.code, system_column=cols.code_system))
            else:
                specs.append(CodeColumn(column=cols.code, system=self.mapping.default_code_system))
        out: list[tuple[str, str, str | None]] = []
        blank = []
        for spec in specs:
            raw = row[spec.column].strip()
            if not raw:
                blank.append(spec.column)
                continue
            if spec.lookup is not None:
                out.extend(self._translate(spec, raw))
                continue
            if spec.system_column is not None:
                named = row[spec.system_column].strip()
                system = self.mapping.code_systems.get(named) or (
                    named.lower() if named.lower() in SYSTEMS else None
                )
                if system is None or (isinstance(cols, EventColumns) and system == DMD):
                    raise Invalid(
                        "code_unknown_system",
                        f"'{named[:30]}' is not a code system recruit reads (SNOMED CT, Read v2, CTV3)",
                        spec.system_column,
                    )
            else:
                # CodeColumn's own check: with neither system_column nor lookup it has a system.
                assert spec.system is not None
                system = spec.system
            code = place_code(system, raw)
            if code is None:
                raise Invalid("code_malformed", _malformed(system, raw), spec.column)
            out.append((system, code, None))
        if not out:
            raise Invalid("code_missing", "the code is missing", " / ".join(blank) or "code")
        return out

    def _translate(self, spec: CodeColumn, raw: str) -> list[tuple[str, str, str | None]]:
        assert spec.lookup is not None
        entries = self._lookups[spec.lookup]
        where = ", ".join(p.name for p in self.lookup_files[spec.lookup])
        if raw not in entries:
            raise Invalid(
                "code_not_in_lookup",
                f"the code id '{raw[:30]}' is not in the '{spec.lookup}' lookup ({where}); it is not guessed",
                spec.column,
            )
        entry = entries[raw]
        if entry is None:
            raise Invalid(
                "code_lookup_conflict",
                f"the '{spec.lookup}' lookup ({where}) gives two different codes for '{raw[:30]}'",
                spec.column,
            )
        out = []
        for system in SYSTEMS:
            value = entry.get(system)
            if not value:
                continue
            code = place_code(system, value)
            if code is None:
                raise Invalid(
                    "code_lookup_malformed",
                    f"the '{spec.lookup}' lookup gives '{value[:30]}' for '{raw[:30]}', "
                    f"which is not a valid {SYSTEM_NAMES[system]} code",
                    spec.column,
                )
            out.append((system, code, entry.get("term") or None))
        if not out:
            raise Invalid(
                "code_untranslated",
                f"the '{spec.lookup}' lookup ({where}) gives no code recruit reads for '{raw[:30]}'",
                spec.column,
            )
        return out

    def _event(self, row: dict[str, str], c: EventColumns) -> Parsed:
        ref, _ = self._ref(row, c)
        date = self._date_of(row, c.date, True)[0]
        assert date is not None
        codes = self._codes(row, c)
        value = _float(row[c.value], c.value) if c.value else None
        term = (row[c.term].strip()[:255] or None) if c.term else None
        unit = (row[c.unit].strip()[:40] or None) if c.unit else None
        rid = (row[c.id].strip() or None) if c.id else None
        return Parsed(
            events=[
                EventRow(ref, date, system, code, term or lookup_term, value, unit, rid, RECORDED)
                for system, code, lookup_term in codes
            ],
            fields=_fields_of(c),
        )

    def _medication(self, row: dict[str, str], c: MedicationColumns) -> Parsed:
        ref, _ = self._ref(row, c)
        date = self._date_of(row, c.date, True)[0]
        assert date is not None
        codes = [(s, code, t) for s, code, t in self._codes(row, c) if s in (DMD, SNOMED)]
        if not codes:
            column = " / ".join(spec.column for spec in c.codes)
            raise Invalid("code_unknown_system", "the medicine has no dm+d code", column)
        system, code, lookup_term = codes[0]
        course_raw = row[c.course].strip() if c.course else ""
        course = self.mapping.course_values.get(course_raw) or (
            course_raw.lower() if course_raw.lower() in ("acute", "repeat") else "unknown"
        )
        quantity = _quantity(row[c.quantity], c.quantity) if c.quantity else None
        term = (row[c.term].strip()[:255] or None) if c.term else None
        rid = (row[c.id].strip() or None) if c.id else None
        return Parsed(
            fields=_fields_of(c),
            medications=[
                MedicationRow(ref, date, DMD, code, term or lookup_term, quantity, course, rid, None, ISSUED)
            ],
        )

    def _record_holds(self, row: dict[str, str], cols: Columns) -> list[HoldRow]:
        """A coded entry that cannot be stored whole still holds its person back when its code
        is readable (it may be dissent from research)."""
        if not isinstance(cols, EventColumns):
            return []
        try:
            ref, _ = self._ref(row, cols)
            codes = self._codes(row, cols)
        except Invalid:
            return []
        return [HoldRow(ref, None, None, "code", system, code) for system, code, _ in codes]

    # --- values ----------------------------------------------------------------------------

    def _text(self, row: dict[str, str], spec: Value | None) -> str | None:
        if spec is None:
            return None
        if isinstance(spec, FromLookup):
            return self._lookup(spec, row)
        if isinstance(spec, list):
            return " ".join(v for v in (row[c].strip() for c in spec) if v) or None
        return row[spec].strip() or None

    def _end(self, row: dict[str, str], spec: str | DateSpec | None) -> str | None:
        """A registration or address end; one after the extract date is planned, not yet."""
        if spec is None:
            return None
        try:
            return self._date_of(row, spec, False)[0]
        except Invalid as exc:
            if exc.code == "date_in_future":
                return None
            raise

    def _date_of(
        self, row: dict[str, str], spec: str | DateSpec, required: bool
    ) -> tuple[str | None, str | None]:
        """(first possible day, last possible day or None when exact) of a date column."""
        if isinstance(spec, str):
            return self._date(row[spec], spec, required), None
        if spec.column is not None:
            first = self._date(row[spec.column], spec.column, required)
            if first is None or spec.precision == "day":
                return first, None
            day = dt.date.fromisoformat(first)
            return _span(day.year, day.month if spec.precision == "month" else None, spec.column, self.dates)
        assert spec.year is not None
        year_raw = row[spec.year].strip()
        if not year_raw:
            if required:
                raise Invalid("date_missing", "the year is missing", spec.year)
            return None, None
        if not year_raw.isdigit():
            raise Invalid("date_invalid", "the year is not a number", spec.year)
        year = int(year_raw) + spec.year_offset
        month = None
        if spec.month:
            month_raw = row[spec.month].strip()
            if month_raw and month_raw != "0":
                if not month_raw.isdigit() or not 1 <= int(month_raw) <= 12:
                    raise Invalid("date_invalid", "the month is not a number from 1 to 12", spec.month)
                month = int(month_raw)
        return _span(year, month, spec.year, self.dates)

    def _date(self, raw: str, column: str, required: bool = True) -> str | None:
        raw = raw.strip()
        if not raw:
            if required:
                raise Invalid("date_missing", "the date is missing", column)
            return None
        iso = _parse_date(raw, tuple(self.mapping.date_formats))
        if iso is None:
            raise Invalid("date_invalid", "the value is not a date in the form the mapping expects", column)
        return self.dates.read(iso, column)

    # --- files -----------------------------------------------------------------------------

    def _rows(
        self, path: Path, spec: TableFile, wanted: list[str]
    ) -> Generator[tuple[int, dict[str, str] | RowFilter | None, str | None], None, None]:
        """(line, row, problem) for each line: a row as a dict; a RowFilter when the mapping leaves
        the row out; None with the problem when the line cannot be read."""
        m = self.mapping
        encoding = spec.encoding or m.encoding
        delimiter = spec.delimiter or m.delimiter
        missing = set(m.missing)
        fill = spec.fill_down
        above: dict[str, str] = {}
        with path.open("rb") as raw:
            text = io.TextIOWrapper(raw, encoding=_encoding(encoding), errors="strict", newline="")
            try:
                reader = csv.reader(text, delimiter=delimiter)
                header = next(reader, None)
            except UnicodeDecodeError:
                raise RecruitError(
                    f"{path} is not {encoding} text; save it as UTF-8 (or say its encoding in the mapping) "
                    "and load it again."
                ) from None
            if header is None:
                raise RecruitError(f"{path} is empty: it has no header row.")
            header = [h.strip() for h in header]
            need = wanted + [f.column for f in spec.skip_rows] + list(fill)
            missing_cols = [c for c in dict.fromkeys(need) if c not in header]
            if missing_cols:
                raise RecruitError(
                    f"{path.name} has no column {', '.join(repr(c) for c in missing_cols)} "
                    f"(named in the mapping '{m.name}')."
                )
            filters = [(f, {v.strip().lower() for v in f.values}) for f in spec.skip_rows]
            line = 1
            while True:
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError:
                    line += 1
                    yield line, None, "the line is not valid text in the file's encoding"
                    return
                except csv.Error as exc:
                    line += 1
                    yield line, None, f"the line cannot be read as CSV ({exc})"
                    continue
                line = reader.line_num
                if not any(v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    yield line, None, f"the line has {len(values)} values but the header has {len(header)}"
                    continue
                row = dict(zip(header, values, strict=True))
                if missing:
                    row = {k: ("" if v.strip() in missing else v) for k, v in row.items()}
                for column in fill:
                    if row[column].strip():
                        above[column] = row[column]
                    else:
                        row[column] = above.get(column, "")
                left_out = next((f for f, vals in filters if row[f.column].strip().lower() in vals), None)
                if left_out is not None:
                    yield line, left_out, None
                    continue
                yield line, row, None


def person_name(text: str) -> tuple[str | None, str | None, str]:
    """(title, given, family) of a name as clinical systems print it: 'Dr A Smith',
    'SMITH, Anne (Dr)', 'Smith, Anne', 'Anne Smith'."""
    text = " ".join(text.split())
    title = None
    bracket = re.search(r"\(([^)]*)\)\s*$", text)
    if bracket:
        title = bracket.group(1).strip() or None
        text = text[: bracket.start()].strip()
    if "," in text:
        family, _, given = text.partition(",")
        family, given = family.strip(), given.strip()
    else:
        first, _, rest = text.partition(" ")
        if title is None and first.rstrip(".").lower() in _TITLES and rest:
            title, text = first, rest
        given, _, family = text.rpartition(" ")
    return title, (given or None), _name_case(family) or family


_TITLES = {"dr", "mr", "mrs", "ms", "miss", "prof", "professor", "sister", "nurse"}


def _span(year: int, month: int | None, column: str, dates: DateReader) -> tuple[str | None, str | None]:
    """First and last day of a year, or of a month of it, as ISO text (the last no later than
    the extract date)."""
    if not 1800 <= year <= 9999:
        raise Invalid("date_invalid", f"{year} is not a year of birth", column)
    first = dt.date(year, month or 1, 1)
    last = dt.date(year, month or 12, calendar.monthrange(year, month or 12)[1])
    start = dates.read(first.isoformat(), column)
    end = min(last, dates.latest).isoformat()
    return start, end


def _negate(iso: str | None) -> tuple[int, ...]:
    if iso is None:
        return (0,)
    return tuple(-int(p) for p in iso.split("-"))


def _superseded(table: Table) -> str:
    return {
        "registrations": "Registration of an earlier period (the latest was used)",
        "addresses": "Address superseded by a later one (the current address was used)",
        "deaths": "Death record repeated (the earliest date was used)",
    }[table.part]


_FIELDS: dict[int, tuple[Columns, dict[str, str]]] = {}


def _fields_of(c: Columns) -> dict[str, str]:
    """_fields of a table's columns, worked out once per table (the same dict for every row:
    the loader only reads it)."""
    found = _FIELDS.get(id(c))
    if found is None or found[0] is not c:
        found = _FIELDS[id(c)] = (c, _fields(c))
    return found[1]


def _fields(c: Columns) -> dict[str, str]:
    """Staged column -> the CSV column it came from, so a quarantine names the CSV's own column."""
    named = {k: v for k, v in c.__dict__.items() if isinstance(v, str)}
    key_column = named.get("patient") or named.get("nhs_number") or "patient"
    out = {
        "key": key_column,
        "patient_ref": key_column,
        "source_id": named.get("patient") or named.get("source_id") or key_column,
        "resource_id": named.get("id", "id"),
        "practice_ref": named.get("practice_ods", "practice_ods"),
        "gp_ref": named.get("usual_gp", "usual_gp"),
    }
    if isinstance(c, PatientColumns) and c.address:
        out["address"] = " / ".join(c.address)
    for staged in ("nhs_number", "title", "given_name", "family_name", "postcode", "language"):
        if staged in named:
            out[staged] = named[staged]
    codes = getattr(c, "codes", None)
    if codes:
        out["code"] = " / ".join(spec.column for spec in codes)
    for staged in ("code", "code_system", "term", "unit"):
        if staged in named:
            out[staged] = named[staged]
    return out


def _key_column(table: Table) -> str:
    cols = table.cols
    return getattr(cols, "patient", None) or getattr(cols, "nhs_number", None) or "patient"


def _lookup_table(lookup: Lookup) -> TableFile:
    return TableFile(
        file=lookup.file,
        encoding=lookup.encoding,
        delimiter=lookup.delimiter,
        skip_rows=lookup.skip_rows,
        columns={},
    )


def _lookup_columns(lookup: Lookup) -> list[str]:
    return [lookup.key] + [c for cols in lookup.values.values() for c in _as_list(cols)]


def _as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def _encoding(name: str) -> str:
    """UTF-8 read so that a byte-order mark at the start (Excel writes one) is skipped, not taken
    as part of the first column's name."""
    return "utf-8-sig" if name.lower().replace("_", "-") in ("utf-8", "utf8") else name


def _named_by(file: Path, given: Path, pattern: str) -> bool:
    """A file given directly, or one the pattern names inside the folder given (as glob would)."""
    if file == given:
        return True
    return len(file.relative_to(given).parts) == len(Path(pattern).parts)


def _name_order(path: Path) -> tuple[tuple[int | str, ...], str]:
    """Files of one table in the order their names number them (Observation_2 before _10)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)), str(path)


def _columns(columns: dict[str, object]) -> list[str]:
    """Every column a table's mapping names (the file must have each)."""
    out: list[str] = []

    def add(value: object) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            for v in value:
                add(v)
        elif isinstance(value, dict):
            for k in ("column", "year", "month", "system_column"):
                if isinstance(value.get(k), str):
                    out.append(value[k])

    for value in columns.values():
        add(value)
    return out


def _name_case(name: str | None) -> str | None:
    """Reports often export surnames in capitals (BROWN); letters need Brown. Mixed case is kept."""
    if name and name.isupper():
        return name.title()
    return name


def _float(raw: str, field: str) -> float | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise Invalid("wrong_type", "the value is not a number", field) from None


_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)(?:\s+[^\d\s][^\d]*)?\s*$")


def _quantity(raw: str, field: str) -> float | None:
    """A quantity as a number, or a number followed by its unit in words ("28 tablet", as
    SystmOne writes it); anything else is not guessed at."""
    found = _QUANTITY.match(raw)
    if found:
        return float(found.group(1))
    return _float(raw, field)


def _snippet(row: object) -> bytes:
    if not isinstance(row, dict):
        return b""
    return ",".join(row.values())[:300].encode()


__all__ = ["CsvSource", "Mapping", "load_mapping", "person_name", "valid_sctid"]
