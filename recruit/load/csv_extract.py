"""CSV exports from a practice system's report, described by a YAML mapping.

Practice systems export searches as CSV with their own column names and date formats. A mapping
says which column holds what, so a new layout needs a YAML file, not code. Patients are matched to
their events by NHS number (report exports rarely carry an internal id).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recruit.errors import RecruitError
from recruit.load.codes import DMD, normalise_code
from recruit.load.fhir import NHS_NUMBER_SYSTEM, Parsed
from recruit.load.files import Record, input_files, regular_file
from recruit.load.rows import EventRow, HoldRow, MedicationRow, PatientRow, PractitionerRow
from recruit.load.status import ISSUED, RECORDED
from recruit.load.values import DateReader, Invalid, clean_nhs_number, clean_postcode, nhs_number_is_valid
from recruit.nhs_numbers import digits_of

csv.field_size_limit(64 * 1024 * 1024)

SYSTEMS = ("snomedct", "readv2", "ctv3", "dmd")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatientColumns(_Strict):
    nhs_number: str
    date_of_birth: str
    practice_ods: str | None = None
    source_id: str | None = None
    title: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    sex: str | None = None
    address: list[str] = Field(default_factory=list)
    postcode: str | None = None
    registration_start: str | None = None
    registration_end: str | None = None
    date_of_death: str | None = None
    usual_gp: str | None = None
    interpreter: str | None = None
    language: str | None = None


class EventColumns(_Strict):
    nhs_number: str
    date: str
    code: str
    code_system: str | None = None
    term: str | None = None
    value: str | None = None
    unit: str | None = None
    id: str | None = None


class MedicationColumns(_Strict):
    nhs_number: str
    date: str
    code: str
    term: str | None = None
    quantity: str | None = None
    course: str | None = None
    id: str | None = None


class FileMapping(_Strict):
    file: str = Field(description="File name (or glob) inside the extract folder.")
    columns: dict[str, Any]


class ExtractDateMapping(_Strict):
    """Where the export says when it was taken: a column of a small file (its first row)."""

    file: str = Field(description="File name (or glob) inside the extract folder.")
    column: str


class Mapping(_Strict):
    """A practice system's report layout."""

    name: str
    description: str | None = None
    encoding: str = "utf-8-sig"
    delimiter: str = ","
    date_formats: list[str] = Field(default_factory=lambda: ["%d/%m/%Y", "%Y-%m-%d"])
    practice_ods: str | None = Field(None, description="ODS code when the export has no practice column.")
    sex_values: dict[str, Literal["female", "male", "other", "unknown"]] = Field(default_factory=dict)
    yes_values: list[str] = Field(default_factory=lambda: ["Y", "Yes", "TRUE", "1"])
    code_systems: dict[str, Literal["snomedct", "readv2", "ctv3"]] = Field(default_factory=dict)
    default_code_system: Literal["snomedct", "readv2", "ctv3"] | None = None
    course_values: dict[str, Literal["acute", "repeat", "unknown"]] = Field(default_factory=dict)
    patients: FileMapping
    events: FileMapping | None = None
    medications: FileMapping | None = None
    extract_date: ExtractDateMapping | None = Field(
        None, description="Where the export records when it was taken (else --extract-date)."
    )
    pseudonymised: bool = Field(
        False, description="The provider removed NHS numbers, names and addresses (CPRD, OpenSAFELY, OMOP)."
    )


def load_mapping(path: Path) -> tuple[Mapping, bytes]:
    raw = regular_file(path).read_bytes()
    try:
        mapping = Mapping.model_validate(yaml.safe_load(raw))
        PatientColumns.model_validate(mapping.patients.columns)
        if mapping.events:
            EventColumns.model_validate(mapping.events.columns)
        if mapping.medications:
            MedicationColumns.model_validate(mapping.medications.columns)
    except yaml.YAMLError as exc:
        raise RecruitError(f"The mapping {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecruitError(f"The mapping {path} has a problem at '{where}': {first['msg']}") from None
    return mapping, raw


class CsvSource:
    """Reads a folder (or files) of CSV exports into the rows the loader stages."""

    format = "csv"

    def __init__(self, paths: list[Path], mapping_path: Path) -> None:
        self.mapping, raw = load_mapping(mapping_path)
        self.pseudonymised = self.mapping.pseudonymised
        self.parts: dict[str, Path] = {}
        # Only ordinary files, found without following links (a FIFO or a link out of the folder
        # is refused before anything is opened).
        found = [(p, f) for p in paths for f in input_files([p])]
        for part in ("patients", "events", "medications"):
            fm = getattr(self.mapping, part)
            if fm is None:
                continue
            matches = [f for p, f in found if f.match(fm.file) and _named_by(f, p, fm.file)]
            if not matches:
                raise RecruitError(
                    f"No file matching '{fm.file}' (the {part} export named in {mapping_path.name}) "
                    f"in {', '.join(str(p) for p in paths)}."
                )
            self.parts[part] = matches[0]
        self.files = list(self.parts.values())
        self.date_file: Path | None = None
        if self.mapping.extract_date is not None:
            pattern = self.mapping.extract_date.file
            found = [m for p in paths for m in ([p] if p.is_file() else sorted(p.glob(pattern)))]
            found = [m for m in found if m.match(pattern)]
            self.date_file = found[0] if found else None
        from recruit.load.files import fingerprint

        dated = self.files + ([self.date_file] if self.date_file else [])
        self.fingerprint = fingerprint(dated, hashlib.sha256(raw).hexdigest().encode())

    def check_headers(self) -> None:
        """Refuse at once a file that is not text or lacks a mapped column (reads the header)."""
        for part, path in self.parts.items():
            rows = self._rows(path, getattr(self.mapping, part))
            next(rows, None)
            rows.close()

    def extract_date(self) -> dt.date | None:
        """The date the export says it was taken (the mapping's extract_date file), if any."""
        spec = self.mapping.extract_date
        if spec is None or self.date_file is None:
            return None
        fm = FileMapping(file=spec.file, columns={"extract_date": spec.column})
        for _, row, problem in self._rows(self.date_file, fm):
            if problem:
                break
            raw = row[spec.column].strip()
            for fmt in [*self.mapping.date_formats, "%Y-%m-%d"]:
                try:
                    return dt.datetime.strptime(raw, fmt).date()
                except ValueError:
                    continue
            raise RecruitError(
                f"{self.date_file.name} gives the extract date in a form the mapping does not expect; "
                "give the date with --extract-date YYYY-MM-DD."
            )
        return None

    def records(self, dates: DateReader) -> Iterator[tuple[Record, Parsed | Exception]]:
        for file_no, (part, path) in enumerate(self.parts.items()):
            fm = getattr(self.mapping, part)
            reader = {"patients": self._patient, "events": self._event, "medications": self._medication}[part]
            for line, row, problem in self._rows(path, fm):
                rtype = {"patients": "Patient", "events": "Event", "medications": "Medication"}[part]
                resource: dict[str, Any] = {"resourceType": rtype}
                nhs_column = fm.columns.get("nhs_number")
                if part == "patients" and row and isinstance(nhs_column, str):
                    # Only so a quarantined patient's key can be staged (recruit.load.chunks).
                    resource["identifier"] = [{"system": NHS_NUMBER_SYSTEM, "value": row.get(nhs_column)}]
                record = Record(file_no, line, resource, raw=_snippet(row))
                if problem:
                    yield record, Invalid("unreadable", problem)
                    continue
                try:
                    yield record, reader(row, fm.columns, dates)
                except Invalid as exc:
                    exc.holds = self._holds(part, row, fm.columns, dates)
                    yield record, exc

    def _holds(
        self, part: str, row: dict[str, str], cols: dict[str, Any], dates: DateReader
    ) -> list[HoldRow]:
        """What a row that could not be read still signals, best effort (issue 14 case 2): a
        patient with any date of death, or any deregistration date not after the extract date
        (or one that cannot be read); an event's code in a system recruit reads."""
        nhs = digits_of(row.get(cols.get("nhs_number") or "", ""))
        nhs = nhs if nhs_number_is_valid(nhs) else None
        if part == "patients":
            c = PatientColumns.model_validate(cols)
            source_id = (row.get(c.source_id) or "").strip() if c.source_id else nhs
            if not (nhs or source_id):
                return []
            holds = []
            if c.date_of_death and row.get(c.date_of_death, "").strip():
                holds.append(HoldRow(None, nhs, source_id, "death"))
            if c.registration_end and row.get(c.registration_end, "").strip():
                try:
                    end = self._date(row[c.registration_end], c.registration_end, dates)
                except Invalid as exc:
                    end = None if exc.code == "date_in_future" else ""
                if end is not None:
                    holds.append(HoldRow(None, nhs, source_id, "left"))
            return holds
        if part == "events" and nhs:
            c_event = EventColumns.model_validate(cols)
            try:
                system = self._system(row, c_event)
            except Invalid:
                return []
            code = normalise_code(system, row.get(c_event.code, ""))
            if code is not None:
                return [HoldRow(f"nhs:{nhs}", None, None, "code", system, code)]
        return []

    def _rows(self, path: Path, fm: FileMapping) -> Iterator[tuple[int, dict[str, str], str | None]]:
        wanted = _columns(fm.columns)
        with path.open("rb") as raw:
            text = io.TextIOWrapper(
                raw, encoding=_encoding(self.mapping.encoding), errors="strict", newline=""
            )
            try:
                reader = csv.reader(text, delimiter=self.mapping.delimiter)
                header = next(reader, None)
            except UnicodeDecodeError:
                raise RecruitError(
                    f"{path} is not {self.mapping.encoding} text; save it as UTF-8 and load it again."
                ) from None
            if header is None:
                raise RecruitError(f"{path} is empty: it has no header row.")
            missing = [c for c in wanted if c not in header]
            if missing:
                raise RecruitError(
                    f"{path.name} has no column {', '.join(repr(m) for m in missing)} "
                    f"(named in the mapping '{self.mapping.name}')."
                )
            line = 1
            while True:
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError:
                    line += 1
                    yield line, {}, "the line is not valid text in the file's encoding"
                    return
                except csv.Error as exc:
                    line += 1
                    yield line, {}, f"the line cannot be read as CSV ({exc})"
                    continue
                line = reader.line_num
                if not any(v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    yield line, {}, f"the line has {len(values)} values but the header has {len(header)}"
                    continue
                yield line, dict(zip(header, values, strict=True)), None

    def _date(self, raw: str, field: str, dates: DateReader, required: bool = True) -> str | None:
        raw = raw.strip()
        if not raw:
            if required:
                raise Invalid("date_missing", "the date is missing", field)
            return None
        for fmt in self.mapping.date_formats:
            try:
                value = dt.datetime.strptime(raw, fmt).date()
            except ValueError:
                continue
            return dates.read(value.isoformat(), field)
        raise Invalid("date_invalid", "the value is not a date in the form the mapping expects", field)

    def _patient(self, row: dict[str, str], cols: dict[str, Any], dates: DateReader) -> Parsed:
        c = PatientColumns.model_validate(cols)
        m = self.mapping
        nhs = clean_nhs_number(row[c.nhs_number], c.nhs_number)
        ods = (row[c.practice_ods].strip().upper() if c.practice_ods else m.practice_ods) or None
        get = lambda name: (row[name].strip() or None) if name else None  # noqa: E731
        sex_raw = get(c.sex) or ""
        sex = m.sex_values.get(sex_raw) or (
            sex_raw.lower() if sex_raw.lower() in ("male", "female") else "unknown"
        )
        gp_name = get(c.usual_gp)
        out = Parsed(fields=_fields(c))
        gp_key = None
        if gp_name and ods:
            gp_key = f"gpname:{ods}:{gp_name}"
            title, _, rest = gp_name.partition(" ") if gp_name.startswith("Dr ") else ("", "", gp_name)
            given, _, family = rest.rpartition(" ")
            out.practitioners.append(
                PractitionerRow([gp_key], gp_name, title or None, given or None, family, None)
            )
        address = "\n".join(v for v in (row[a].strip() for a in c.address) if v) or None
        out.patients.append(
            PatientRow(
                keys=[f"nhs:{nhs}"],
                source_id=get(c.source_id) or nhs,
                nhs_number=nhs,
                title=get(c.title),
                given_name=get(c.given_name),
                family_name=_name_case(get(c.family_name)),
                date_of_birth=self._date(row[c.date_of_birth], c.date_of_birth, dates),  # type: ignore[arg-type]
                sex=sex,
                address=address,
                postcode=clean_postcode(get(c.postcode)),
                practice_ref=f"ods:{ods}" if ods else None,
                gp_ref=gp_key,
                registration_start=self._date(row[c.registration_start], c.registration_start, dates, False)
                if c.registration_start
                else None,
                registration_end=self._end_date(row, c.registration_end, dates),
                date_of_death=self._date(row[c.date_of_death], c.date_of_death, dates, False)
                if c.date_of_death
                else None,
                needs_interpreter=bool(c.interpreter and row[c.interpreter].strip() in m.yes_values),
                language=get(c.language),
            )
        )
        return out

    def _end_date(self, row: dict[str, str], column: str | None, dates: DateReader) -> str | None:
        if not column:
            return None
        try:
            return self._date(row[column], column, dates, False)
        except Invalid as exc:
            if exc.code == "date_in_future":  # a planned deregistration: still registered today
                return None
            raise

    def _event(self, row: dict[str, str], cols: dict[str, Any], dates: DateReader) -> Parsed:
        c = EventColumns.model_validate(cols)
        nhs = clean_nhs_number(row[c.nhs_number], c.nhs_number)
        date = self._date(row[c.date], c.date, dates)
        system = self._system(row, c)
        code = normalise_code(system, row[c.code])
        if code is None:
            raise Invalid(
                "code_malformed", f"'{row[c.code][:30]}' is not a well-formed {system} code", c.code
            )
        value = _float(row[c.value], c.value) if c.value else None
        term = row[c.term].strip()[:255] or None if c.term else None
        unit = row[c.unit].strip()[:40] or None if c.unit else None
        rid = row[c.id].strip() or None if c.id else None
        assert date is not None
        return Parsed(
            events=[EventRow(f"nhs:{nhs}", date, system, code, term, value, unit, rid, RECORDED)],
            fields=_fields(c),
        )

    def _system(self, row: dict[str, str], c: EventColumns) -> str:
        if c.code_system:
            raw = row[c.code_system].strip()
            system = self.mapping.code_systems.get(raw) or (raw.lower() if raw.lower() in SYSTEMS else None)
            if system is None or system == DMD:
                raise Invalid(
                    "code_unknown_system",
                    f"'{raw[:30]}' is not a code system recruit reads (SNOMED CT, Read v2, CTV3)",
                    c.code_system,
                )
            return system
        if self.mapping.default_code_system is None:
            raise Invalid("code_unknown_system", "the mapping names no code system", "code_system")
        return self.mapping.default_code_system

    def _medication(self, row: dict[str, str], cols: dict[str, Any], dates: DateReader) -> Parsed:
        c = MedicationColumns.model_validate(cols)
        nhs = clean_nhs_number(row[c.nhs_number], c.nhs_number)
        date = self._date(row[c.date], c.date, dates)
        code = normalise_code(DMD, row[c.code])
        if code is None:
            raise Invalid("code_malformed", f"'{row[c.code][:30]}' is not a dm+d code", c.code)
        course_raw = row[c.course].strip() if c.course else ""
        course = self.mapping.course_values.get(course_raw) or (
            course_raw.lower() if course_raw.lower() in ("acute", "repeat") else "unknown"
        )
        quantity = _float(row[c.quantity], c.quantity) if c.quantity else None
        term = row[c.term].strip()[:255] or None if c.term else None
        rid = row[c.id].strip() or None if c.id else None
        assert date is not None
        return Parsed(
            fields=_fields(c),
            medications=[
                MedicationRow(f"nhs:{nhs}", date, DMD, code, term, quantity, course, rid, None, ISSUED)
            ],
        )


def _fields(c: PatientColumns | EventColumns | MedicationColumns) -> dict[str, str]:
    """Staged column -> the CSV column it came from, so a quarantine names the CSV's own column."""
    named = {k: v for k, v in c.model_dump().items() if isinstance(v, str)}
    out = {
        "key": c.nhs_number,
        "patient_ref": c.nhs_number,
        "source_id": named.get("source_id", c.nhs_number),
        "resource_id": named.get("id", "id"),
        "practice_ref": named.get("practice_ods", "practice_ods"),
        "gp_ref": named.get("usual_gp", "usual_gp"),
    }
    if isinstance(c, PatientColumns) and c.address:
        out["address"] = " / ".join(c.address)
    for staged in ("nhs_number", "title", "given_name", "family_name", "postcode", "language"):
        if staged in named:
            out[staged] = named[staged]
    for staged in ("code", "code_system", "term", "unit"):
        if staged in named:
            out[staged] = named[staged]
    return out


def _encoding(name: str) -> str:
    """UTF-8 read so that a byte-order mark at the start (Excel writes one) is skipped, not taken
    as part of the first column's name."""
    return "utf-8-sig" if name.lower().replace("_", "-") in ("utf-8", "utf8") else name


def _named_by(file: Path, given: Path, pattern: str) -> bool:
    """A file given directly, or one the pattern names inside the folder given (as glob would)."""
    if file == given:
        return True
    return len(file.relative_to(given).parts) == len(Path(pattern).parts)


def _columns(columns: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for value in columns.values():
        if isinstance(value, list):
            out.extend(value)
        elif isinstance(value, str):
            out.append(value)
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


def _snippet(row: dict[str, str]) -> bytes:
    return ",".join(row.values())[:300].encode()
