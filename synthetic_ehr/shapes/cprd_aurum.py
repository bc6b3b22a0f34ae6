"""CPRD Aurum, as CPRD sends it to researchers (CPRD Aurum Data Specification v2.9).

Tab-separated text files under DIR/cprd_aurum/, named <prefix>_Extract_<Table>_<nnn>.txt; the
Observation and DrugIssue tables are split over two numbered files (people with even and odd
keys), as CPRD splits large tables. Dates dd/mm/yyyy; `NA` for no value; year of birth only
(and month for children under 16, as CPRD gives it). patid is keys.pseudonym(person.index);
pracid a five-digit number per practice (not its ODS code).

medcodeid and prodcodeid are CPRD's own ids, translated by CPRD's licensed dictionaries. This
writer makes its own, clearly synthetic, dictionaries under DIR/cprd_aurum/dictionaries/ (ids
made up from each code, terms marked "(synthetic dictionary)"), so the population loads end to
end: give them beside the extract, as a CPRD user gives the real ones. Each medcodeid carries a
SNOMED CT concept (entries first coded in Read v2 or CTV3 carry the SNOMED CT concept of the same
codelists and categories: its twin, shapes/_crossmap.py) and, for Read v2 entries, the Read code
too.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from pathlib import Path

from ..codes import DATA_DIR, Code, find_codelists_dir
from ..keys import pseudonym
from ..people import Person, Practice
from ..record import Record
from ..util import uk_date
from . import Shape, shape
from ._crossmap import snomed_twin

PREFIX = "Synthetic"
NA = "NA"
PARTS = 2  # Observation and DrugIssue are each split over this many numbered files

PATIENT = [
    "patid",
    "pracid",
    "usualgpstaffid",
    "gender",
    "yob",
    "mob",
    "emis_ddate",
    "regstartdate",
    "patienttypeid",
    "regenddate",
    "acceptable",
    "cprd_ddate",
]
OBSERVATION = [
    "patid",
    "consid",
    "pracid",
    "obsid",
    "obsdate",
    "enterdate",
    "staffid",
    "parentobsid",
    "medcodeid",
    "value",
    "numunitid",
    "obstypeid",
    "numrangelow",
    "numrangehigh",
    "probobsid",
]
DRUG_ISSUE = [
    "patid",
    "issueid",
    "pracid",
    "probobsid",
    "drugrecid",
    "issuedate",
    "enterdate",
    "staffid",
    "prodcodeid",
    "dosageid",
    "quantity",
    "quantunitid",
    "duration",
    "estnhscost",
]
PRACTICE = ["pracid", "lcd", "uts", "region"]
STAFF = ["staffid", "pracid", "jobcatid"]
MEDICAL = [
    "MedCodeId",
    "Term",
    "OriginalReadCode",
    "CleansedReadCode",
    "SnomedCTConceptId",
    "SnomedCTDescriptionId",
    "Release",
    "EmisCodeCategoryId",
]
PRODUCT = [
    "ProdCodeId",
    "DMDID",
    "TermfromEMIS",
    "ProductName",
    "Formulation",
    "RouteOfAdministration",
    "DrugSubstanceName",
    "SubstanceStrength",
    "BNFChapter",
    "Release",
]
RELEASE = "synthetic_ehr: made up, not CPRD's dictionary"
GENDER = {"male": "1", "female": "2"}


def _file(table: str, part: int = 1) -> str:
    return f"{PREFIX}_Extract_{table}_{part:03d}.txt"


def _line(values: list[str]) -> str:
    return "\t".join(values) + "\n"


def _made_up_id(kind: str, system: str, code: str) -> str:
    """A stable 15-digit id for a code (the same in every worker and run), starting 9."""
    digest = hashlib.blake2b(f"{kind}|{system}|{code}".encode(), digest_size=8).digest()
    return str(900_000_000_000_000 + int.from_bytes(digest, "big") % 10**14)


def medcodeid(code: Code) -> str:
    return _made_up_id("medcode", code.system, code.code)


def prodcodeid(code: Code) -> str:
    return _made_up_id("prodcode", code.system, code.code)


def pracid(practice: Practice) -> str:
    """A five-digit practice number, as CPRD's pracid (not the ODS code)."""
    return f"{20001 + practice.index}"


def staffid(practice: Practice, gp_id: str) -> str:
    return f"{pracid(practice)}{int(gp_id.rsplit('gp', 1)[1]):03d}"


def dictionary_codes() -> dict[tuple[str, str], str]:
    """Every (system, code) the generator can write, with its term: the codelists and the
    background codes (the dictionaries list them all, as CPRD's list every code in use)."""
    found: dict[tuple[str, str], str] = {}
    paths = [*sorted(find_codelists_dir().glob("*.csv")), DATA_DIR / "noise_codes.csv"]
    for path in paths:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                if row.get("code") and row.get("system"):
                    key = (row["system"].strip(), row["code"].strip())
                    found.setdefault(key, (row.get("term") or "").strip())
    return found


def _na(ordinal: int | None) -> str:
    return uk_date(ordinal) if ordinal is not None else NA


@shape
class CprdAurum(Shape):
    name = "cprd_aurum"

    def __init__(self, extract: int) -> None:
        super().__init__(extract)
        self.bufs = {rel: io.StringIO() for rel in self.headers()}

    @classmethod
    def headers(cls) -> dict[str, bytes]:
        out = {_file("Patient"): _line(PATIENT).encode()}
        for part in range(1, PARTS + 1):
            out[_file("Observation", part)] = _line(OBSERVATION).encode()
            out[_file("DrugIssue", part)] = _line(DRUG_ISSUE).encode()
        return out

    def add(self, person: Person, practice: Practice, rec: Record) -> None:
        patid = str(pseudonym(person.index))
        prac = pracid(practice)
        staff = staffid(practice, person.gp.id)
        left = person.dereg if person.dereg is not None else (person.death if person.death_coded else None)
        death = person.death if person.death_coded else None
        birth = dt.date.fromordinal(person.birth)
        child = person.age < 16
        self.bufs[_file("Patient")].write(
            _line(
                [
                    patid,
                    prac,
                    staff,
                    GENDER[person.sex],
                    str(birth.year),
                    str(birth.month) if child else NA,
                    _na(death),
                    uk_date(person.reg_start),
                    NA,
                    _na(left),
                    "1",
                    _na(death),
                ]
            )
        )
        part = 1 + person.index % PARTS
        obs = self.bufs[_file("Observation", part)]
        events = [*rec.conditions, *rec.observations]
        for i, ev in enumerate(events):
            day = uk_date(ev.date)
            obs.write(
                _line(
                    [patid, NA, prac, f"{patid}{i:05d}", day, day, staff, NA, medcodeid(ev.code)] + [NA] * 6
                )
            )
        drugs = self.bufs[_file("DrugIssue", part)]
        for i, iss in enumerate(rec.issues):
            day = uk_date(iss.date)
            course = _made_up_id("course", patid, iss.course_id)
            drugs.write(
                _line(
                    [patid, f"{patid}{i:05d}", prac, NA, course, day, day, staff, prodcodeid(iss.code), NA]
                    + [str(iss.quantity), NA, "28", NA]
                )
            )

    def bytes(self) -> dict[str, bytes]:
        return {rel: buf.getvalue().encode("utf-8") for rel, buf in self.bufs.items()}

    @classmethod
    def finish(cls, folder: Path, practices: list[Practice], extract: int) -> list[Path]:
        """Practice and Staff tables, and the made-up dictionaries (under dictionaries/)."""
        written = []
        practice_rows = [_line(PRACTICE)] + [_line([pracid(p), uk_date(extract), NA, NA]) for p in practices]
        staff_rows = [_line(STAFF)] + [
            _line([staffid(p, gp.id), pracid(p), NA]) for p in practices for gp in p.gps
        ]
        for rel, rows in ((_file("Practice"), practice_rows), (_file("Staff"), staff_rows)):
            path = folder / rel
            path.write_text("".join(rows), encoding="utf-8")
            written.append(path)
        medical = [_line(MEDICAL)]
        product = [_line(PRODUCT)]
        for (system, code), term in sorted(dictionary_codes().items()):
            c = Code(code, system, term)
            label = f"{term} (synthetic dictionary)"
            if system == "dmd":
                product.append(_line([prodcodeid(c), code, label, term] + [""] * 5 + [RELEASE]))
                continue
            read = f"{code}00" if system == "readv2" else ""
            snomed = snomed_twin(c).code
            medical.append(_line([medcodeid(c), label, read, read, snomed, "", RELEASE, ""]))
        dictionaries = folder / "dictionaries"
        dictionaries.mkdir(parents=True, exist_ok=True)
        for name, rows in (("EMISMedicalDictionary.txt", medical), ("EMISProductDictionary.txt", product)):
            path = dictionaries / name
            path.write_text("".join(rows), encoding="utf-8")
            written.append(path)
        return written
