"""The ground truth, written to DIR/truth/ and never mixed with the extract.

truth.csv has one row per patient; employment_spells.csv has the dated work history. Patient
ids, NHS numbers and pseudonyms (the key of the pseudonymised shapes, synthetic_ehr.keys) link to
the extract for scoring a search; nothing here is record data.
"""

from __future__ import annotations

import csv
import io

from .keys import pseudonym
from .people import Person, Practice
from .record import Record
from .truth import IN_WORK, Truth, eligible_ips
from .truth_columns import TRUTH_HEADER
from .util import iso

SPELL_HEADER = ["patient_id", "start", "end", "state"]


def _b(x: bool) -> str:
    return "true" if x else "false"


def _d(x: int | None) -> str:
    return iso(x) if x is not None else ""


def header_bytes(name: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(TRUTH_HEADER if name == "truth" else SPELL_HEADER)
    return buf.getvalue().encode("utf-8")


class TruthChunk:
    def __init__(self, extract: int) -> None:
        self.extract = extract
        self.truth_buf = io.StringIO()
        self.spell_buf = io.StringIO()
        self.tw = csv.writer(self.truth_buf, lineterminator="\n")
        self.sw = csv.writer(self.spell_buf, lineterminator="\n")

    def add(self, person: Person, practice: Practice, t: Truth, rec: Record) -> None:
        cur = t.spells[-1] if t.spells else None
        year_ago = self.extract - 365
        opioid_12m = any(i.date > year_ago and i.group not in _NON_OPIOID for i in rec.issues)
        self.tw.writerow(
            [
                person.id,
                person.nhs_number,
                pseudonym(person.index),
                practice.ods,
                practice.deprivation,
                person.sex,
                iso(person.birth),
                person.age,
                _b(person.death is None),
                _d(person.death),
                _b(person.death_coded),
                _b(person.death is None and person.dereg is None),
                iso(person.reg_start),
                _d(person.dereg),
                _d(person.ghost_since),
                _b(t.pain),
                _d(t.pain_onset),
                ("high" if t.pain_high else "low") if t.pain else "",
                _b(rec.pain_coded),
                cur.state if cur else "",
                _d(cur.start) if cur else "",
                _b(cur is not None and cur.state in IN_WORK),
                _b(rec.employment_coded),
                _d(t.cancer),
                _d(t.dementia),
                _d(t.palliative),
                _d(t.opt_out),
                t.access_need or "",
                _b(rec.opioid_long_term),
                _b(opioid_12m),
                _b(eligible_ips(person, t, self.extract)),
                _b(eligible_ips(person, t, self.extract, strict=True)),
            ]
        )
        for s in t.spells:
            self.sw.writerow([person.id, iso(s.start), iso(s.end), s.state])

    def bytes(self) -> dict[str, bytes]:
        return {
            "truth/truth.csv": self.truth_buf.getvalue().encode("utf-8"),
            "truth/employment_spells.csv": self.spell_buf.getvalue().encode("utf-8"),
        }


_NON_OPIOID = frozenset({"hypertension", "type2_diabetes", "asthma", "depression", "ppi", "nsaid"})
