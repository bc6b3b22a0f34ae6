"""The mapping language: how a tabular extract's files and columns become recruit's records.

Practice systems and data services send tables, not FHIR: the EMIS extract, SystmOne's Strategic
Reporting Extract, practice search reports, CPRD, OpenSAFELY-shaped tables, OMOP CDM. Each is
described by a YAML mapping (rules/mappings/), so a new layout needs a file, not code. The
mapping says which column holds what; it never lets the loader guess a meaning:

- rows are keyed by the extract's own patient id (`patient`), or by NHS number when that is all
  a report carries;
- every code column declares its code system, or the lookup table (shipped in the extract, or
  given by the user) that translates its local ids;
- registration, address and death may come from tables of their own, several rows a patient.

The README ("Tabular extracts") documents the language with a worked example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recruit.errors import RecruitError
from recruit.load.codes import CODE_SYSTEMS
from recruit.load.files import regular_file

CodeSystem = Literal["snomedct", "readv2", "ctv3", "dmd"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FromLookup(_Strict):
    """A value found by looking this row's `column` up in one of the mapping's lookups."""

    column: str
    lookup: str
    take: str = Field(description="Which of the lookup's values.")


class DateSpec(_Strict):
    """A date written in parts (CPRD's year of birth, GOLD's year - 1800), or known only to
    the month or year (OpenSAFELY rounds birth dates to the first of the month)."""

    column: str | None = None
    year: str | None = None
    month: str | None = None
    year_offset: int = Field(0, description="Added to the year column (CPRD GOLD: 1800).")
    precision: Literal["day", "month", "year"] = "day"

    @model_validator(mode="after")
    def _one_source(self) -> DateSpec:
        if (self.column is None) == (self.year is None):
            raise ValueError("give either `column` (a whole date) or `year` (and `month`)")
        return self


class CodeColumn(_Strict):
    """A column of codes and what they are: a system recruit reads, a column naming each
    row's system, or a lookup translating the extract's own code ids."""

    column: str
    system: CodeSystem | None = None
    system_column: str | None = None
    lookup: str | None = None

    @model_validator(mode="after")
    def _one_meaning(self) -> CodeColumn:
        given = [x for x in (self.system, self.system_column, self.lookup) if x is not None]
        if len(given) != 1:
            raise ValueError(
                f"the code column '{self.column}' must say what its codes are: exactly one of "
                "`system` (snomedct, readv2, ctv3, dmd), `system_column`, or `lookup`"
            )
        return self


class RowFilter(_Strict):
    """Rows to leave out, counted and named in the load summary (never silently)."""

    column: str
    values: list[str] = Field(description="Cell values (any case) that mark a row to leave out.")
    reason: str = Field(description="In words, for the load summary: 'deleted in the clinical system'.")


class TableFile(_Strict):
    """One table of the extract: a file name pattern (every matching file is read, in name
    order, as one table split over several files) and its columns."""

    file: str
    encoding: str | None = None
    delimiter: str | None = None
    skip_rows: list[RowFilter] = Field(default_factory=list)
    fill_down: list[str] = Field(
        default_factory=list,
        description="Columns where a blank cell means 'same as the row above' (EMIS Web reports).",
    )
    columns: dict[str, object]


Value = str | list[str] | FromLookup


class PatientColumns(_Strict):
    patient: str | None = Field(None, description="The extract's own patient id (the key other tables use).")
    nhs_number: str | None = None
    date_of_birth: str | DateSpec
    practice_ods: Value | None = None
    source_id: str | None = None  # (older mappings: the id shown to staff; `patient` supersedes it)
    title: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    sex: str | None = None
    address: list[str] = Field(default_factory=list)
    postcode: str | None = None
    registration_start: str | DateSpec | None = None
    registration_end: str | DateSpec | None = None
    date_of_death: str | DateSpec | list[str] | None = None
    usual_gp: Value | None = None
    interpreter: str | None = None
    language: Value | None = None

    @model_validator(mode="after")
    def _keyed(self) -> PatientColumns:
        if self.patient is None and self.nhs_number is None:
            raise ValueError("the patients table needs `patient` (its own id column) or `nhs_number`")
        return self


class _Keyed(_Strict):
    patient: str | None = None
    nhs_number: str | None = None


class EventColumns(_Keyed):
    date: str | DateSpec
    code: str | None = None  # (older mappings: with code_system or the default system)
    code_system: str | None = None
    codes: list[CodeColumn] = Field(default_factory=list)
    term: str | None = None
    value: str | None = None
    unit: str | None = None
    id: str | None = None


class MedicationColumns(_Keyed):
    date: str | DateSpec
    code: str | None = None  # (older mappings: a dm+d column)
    codes: list[CodeColumn] = Field(default_factory=list)
    term: str | None = None
    quantity: str | None = None
    course: str | None = None
    id: str | None = None


class RegistrationColumns(_Keyed):
    start: str | DateSpec | None = None
    end: str | DateSpec | None = None
    practice_ods: Value | None = None
    type: str | None = None


class AddressColumns(_Keyed):
    address: list[str]
    postcode: str | None = None
    start: str | DateSpec | None = None
    end: str | DateSpec | None = None


class DeathColumns(_Keyed):
    date: str | DateSpec


class Lookup(_Strict):
    """A table the extract ships (or the user gives) that translates ids: EMIS Coding_ClinicalCode
    (CodeId to SNOMED CT), CPRD's medical dictionary (medcodeid to SNOMED CT), an organisation
    table (id to ODS code). `values` names what it gives; the names snomedct, readv2, ctv3 and
    dmd are codes in those systems."""

    file: str
    key: str
    values: dict[str, str | list[str]]
    encoding: str | None = None
    delimiter: str | None = None
    skip_rows: list[RowFilter] = Field(default_factory=list)
    describe: str | None = Field(
        None, description="What the file is and where it comes from, for the message when it is missing."
    )


class RegistrationFile(TableFile):
    registration_types: list[str] | None = Field(
        None, description="Values of the `type` column that are a registration for GP services."
    )


class Mapping(_Strict):
    """A tabular extract's layout."""

    name: str
    description: str | None = None
    specification: str | None = Field(None, description="The published specification and version it follows.")
    pseudonymised: bool = Field(False, description="No NHS number, name or address: counts only, no letters.")
    encoding: str = "utf-8-sig"
    delimiter: str = ","
    missing: list[str] = Field(default_factory=list, description="Cell values meaning 'no value' (NA).")
    date_formats: list[str] = Field(default_factory=lambda: ["%d/%m/%Y", "%Y-%m-%d"])
    practice_ods: str | None = Field(None, description="ODS code when the export has no practice column.")
    sex_values: dict[str, Literal["female", "male", "other", "unknown"]] = Field(default_factory=dict)
    yes_values: list[str] = Field(default_factory=lambda: ["Y", "Yes", "TRUE", "1"])
    code_systems: dict[str, CodeSystem] = Field(default_factory=dict)
    default_code_system: Literal["snomedct", "readv2", "ctv3"] | None = None
    course_values: dict[str, Literal["acute", "repeat", "unknown"]] = Field(default_factory=dict)
    lookups: dict[str, Lookup] = Field(default_factory=dict)
    patients: TableFile
    registrations: list[RegistrationFile] = Field(default_factory=list)
    addresses: list[TableFile] = Field(default_factory=list)
    deaths: list[TableFile] = Field(default_factory=list)
    events: list[TableFile] = Field(default_factory=list)
    medications: list[TableFile] = Field(default_factory=list)
    extract_date: ExtractDateMapping | None = Field(
        None, description="Where the export records when it was taken (else --extract-date)."
    )

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: object) -> object:
        """One table may be written without a list around it."""
        if isinstance(data, dict):
            for part in ("registrations", "addresses", "deaths", "events", "medications"):
                if isinstance(data.get(part), dict):
                    data = {**data, part: [data[part]]}
        return data


class ExtractDateMapping(_Strict):
    """Where the export says when it was taken: a column of a small file (its first row), or
    the file's own name (the EMIS extract names each file with its extraction time)."""

    file: str
    column: str | None = None
    name_pattern: str | None = Field(
        None, description="A regular expression whose first group is the date in the file's name."
    )
    name_format: str | None = Field(None, description="strptime format of that group (else date_formats).")

    @model_validator(mode="after")
    def _one_place(self) -> ExtractDateMapping:
        if (self.column is None) == (self.name_pattern is None):
            raise ValueError("give either `column` (a column of the file) or `name_pattern` (its name)")
        return self


Mapping.model_rebuild()

# The columns of one table of the mapping, whichever part it is.
Columns: TypeAlias = (
    PatientColumns | RegistrationColumns | AddressColumns | DeathColumns | EventColumns | MedicationColumns
)

# Each part of a mapping, the columns model its tables use, and the kind its rows are counted as.
PARTS: dict[str, tuple[type[Columns], str]] = {
    "patients": (PatientColumns, "Patient"),
    "registrations": (RegistrationColumns, "Registration"),
    "addresses": (AddressColumns, "Address"),
    "deaths": (DeathColumns, "Death"),
    "events": (EventColumns, "Event"),
    "medications": (MedicationColumns, "Medication"),
}


class Table:
    """A table of the mapping with its columns read into their model."""

    def __init__(self, part: str, spec: TableFile, index: int) -> None:
        self.part = part
        self.spec = spec
        self.index = index
        model, self.kind = PARTS[part]
        self.cols = model.model_validate(spec.columns)

    @property
    def name(self) -> str:
        return self.part if self.index == 0 else f"{self.part}[{self.index}]"


def load_mapping(path: Path) -> tuple[Mapping, list[Table], bytes]:
    """The mapping at path, checked whole: a mistake is reported with where it is."""
    raw = regular_file(path).read_bytes()
    try:
        data = yaml.safe_load(raw)
        if isinstance(data, dict) and isinstance(data.get("patients"), dict):
            data = _older_form(data)
        mapping = Mapping.model_validate(data)
        found = tables_of(mapping)
    except yaml.YAMLError as exc:
        raise RecruitError(f"The mapping {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecruitError(f"The mapping {path} has a problem at '{where}': {first['msg']}") from None
    problem = _check(mapping, found)
    if problem:
        raise RecruitError(f"The mapping {path} {problem}")
    return mapping, found, raw


def tables_of(mapping: Mapping) -> list[Table]:
    """As tables(), naming the table whose columns are wrong."""
    out = []
    for part in ("patients", "registrations", "addresses", "deaths", "events", "medications"):
        specs = [mapping.patients] if part == "patients" else getattr(mapping, part)
        for i, spec in enumerate(specs):
            try:
                out.append(Table(part, spec, i))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in (part, i, "columns", *first["loc"]))
                raise RecruitError(f"The mapping has a problem at '{where}': {first['msg']}") from None
    return out


def _older_form(data: dict[str, object]) -> dict[str, object]:
    """Mappings written before issue 18 keep working: a medication `code` column is dm+d."""
    meds = data.get("medications")
    if isinstance(meds, dict) and isinstance(meds.get("columns"), dict):
        cols = dict(meds["columns"])
        if "code" in cols and "codes" not in cols:
            cols["codes"] = [{"column": cols.pop("code"), "system": "dmd"}]
            data = {**data, "medications": {**meds, "columns": cols}}
    return data


def _check(mapping: Mapping, found: list[Table]) -> str | None:
    """What the models cannot see: keys that join, lookups that exist, codes that say what
    they are. None when the mapping is sound."""
    patients = found[0].cols
    assert isinstance(patients, PatientColumns)
    by_key = patients.patient is not None
    for t in found[1:]:
        cols = t.cols
        assert isinstance(cols, _Keyed)
        if by_key and cols.patient is None:
            return (
                f"keys patients by '{patients.patient}' but its {t.name} table names no `patient` "
                "column: every table must say which column holds the patient's id."
            )
        if not by_key and cols.nhs_number is None:
            return f"joins tables by NHS number but its {t.name} table names no `nhs_number` column."
        if isinstance(cols, EventColumns):
            if cols.code is not None and cols.codes:
                return f"gives both `code` and `codes` in its {t.name} table: use `codes`."
            if cols.code is None and not cols.codes:
                return f"gives no code column in its {t.name} table."
            if cols.code is not None and cols.code_system is None and mapping.default_code_system is None:
                return (
                    f"does not say which code system the {t.name} table's '{cols.code}' column "
                    "holds: give `codes: [{column: ..., system: snomedct}]` (or a lookup)."
                )
        if isinstance(cols, MedicationColumns) and not cols.codes:
            return f"gives no code column in its {t.name} table."
    for name, value in _lookup_uses(mapping, found):
        lookup = mapping.lookups.get(name)
        if lookup is None:
            return f"uses a lookup '{name}' that it does not define under `lookups`."
        if value is not None and value not in lookup.values:
            return f"takes '{value}' from the lookup '{name}', which gives only {', '.join(lookup.values)}."
        if value is None and not set(lookup.values) & set(CODE_SYSTEMS):
            return (
                f"translates codes through the lookup '{name}', which gives no code "
                "(snomedct, readv2, ctv3 or dmd)."
            )
    return None


def _lookup_uses(mapping: Mapping, found: list[Table]) -> list[tuple[str, str | None]]:
    uses: list[tuple[str, str | None]] = []
    for t in found:
        for value in t.cols.__dict__.values():
            if isinstance(value, FromLookup):
                uses.append((value.lookup, value.take))
        for code in getattr(t.cols, "codes", []):
            if code.lookup is not None:
                uses.append((code.lookup, None))
    return uses
