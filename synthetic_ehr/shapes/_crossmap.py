"""The SNOMED CT concept an extract that holds only SNOMED CT carries a Read v2 or CTV3 entry as.

EMIS Web holds every entry as a SNOMED CT concept (practices that came from Read v2 or CTV3
systems had their records mapped on migration), and SystmOne has no Read v2. The generator's
FHIR form keeps the legacy code; a shape that cannot must write a SNOMED CT concept the search
treats the same way: one in exactly the same codelists and categories (so every search step
reads it as it reads the original). A code with no such twin takes the concept in the most of
its categories and in no others; failing that, a concept in no codelist (NEUTRAL). Either way
no category is ever added, only lost: `exact_twin` says which codes lose one, so the tests can
tell those patients apart. (The codelists hold some Read v2 and CTV3 categories, such as
national audit dissent, with no SNOMED CT code at all.)
"""

from __future__ import annotations

import csv
from collections import defaultdict
from functools import lru_cache

from ..codes import Code, find_codelists_dir

Membership = frozenset[tuple[str, str]]
NEUTRAL = Code("14734007", "snomedct", "Administrative procedure")


@lru_cache(maxsize=1)
def _tables() -> tuple[
    dict[tuple[str, str], Membership], dict[Membership, Code], list[tuple[Membership, Code]]
]:
    member: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    terms: dict[str, str] = {}
    folder = find_codelists_dir()
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                system = row.get("system", "")
                if system == "dmd" or not row.get("code"):
                    continue
                member[(system, row["code"])].add((path.stem, row.get("category") or ""))
                if system == "snomedct":
                    terms.setdefault(row["code"], row.get("term") or "")
    frozen = {k: frozenset(v) for k, v in member.items()}
    twins: dict[Membership, Code] = {}
    snomed: list[tuple[Membership, Code]] = []
    for (system, code), m in sorted(frozen.items()):
        if system == "snomedct":
            c = Code(code, "snomedct", terms[code])
            twins.setdefault(m, c)
            snomed.append((m, c))
    return frozen, twins, snomed


def snomed_twin(code: Code) -> Code:
    """The SNOMED CT concept to write for this entry (itself when it is SNOMED CT already)."""
    if code.system == "snomedct":
        return code
    member, twins, snomed = _tables()
    m = member.get((code.system, code.code))
    if m is None:
        raise ValueError(
            f"{code.system} code {code.code} is in no codelist: no SNOMED CT concept to carry it"
        )
    if m in twins:
        return twins[m]
    inside = [(mc, c) for mc, c in snomed if mc and mc < m]
    if not inside:
        return NEUTRAL
    return max(inside, key=lambda x: len(x[0]))[1]


def exact_twin(code: Code) -> bool:
    """Whether the SNOMED CT concept written for this code sits in exactly its codelist categories."""
    if code.system == "snomedct":
        return True
    member, twins, _ = _tables()
    return member.get((code.system, code.code)) in twins
