"""SNOMED CT for entries first coded in Read v2 or CTV3, for shapes that hold SNOMED CT only.

OpenSAFELY's clinical_events, OMOP source values and CPRD's SNOMED CT column carry every coded
entry as a SNOMED CT concept: the practice systems moved their Read and CTV3 records to SNOMED CT
in 2018-2020. The generator still writes older entries in Read v2 or CTV3 (as the FHIR form
shows them), so these shapes need the SNOMED CT concept an entry would have become.

There is no licensed Read/CTV3-to-SNOMED map here. Instead each legacy code is given a SNOMED CT
code of the project's codelists that sits in exactly the same codelists and categories (its
"signature"), so any search built from those codelists treats the entry the same way whichever
form it is loaded from. Codes on no list (background noise) become a SNOMED code on no list. The
few legacy codes with no SNOMED code of the same signature take the closest one (fewest
memberships gained or lost, losing before gaining): of the codes the generator writes, eight
(benefit "other" and "disability benefit", fit-note duration and "other certification" codes), none
of them in a category InSTEP looks at. Codes on a list with no SNOMED counterpart at all (such as
the Read codes for national audit dissent, which the generator does not write) lose that list.
tests/load/tabular/test_opensafely.py checks this against rules/instep.yaml.
"""

from __future__ import annotations

import csv
import importlib
from functools import lru_cache
from pathlib import Path

import orjson

from ..codes import DATA_DIR, Code, find_codelists_dir

Signature = frozenset[tuple[str, str]]


def codelists_dir_in_use() -> str | None:
    """The codelists the running generator uses (set in each worker), else the default."""
    # The module, not the function of the same name that the package exports.
    generate = importlib.import_module("..generate", __package__)
    st = generate._STATE
    return st.params.codelists_dir if st is not None else None


def codelists_dir_of_run(out: Path) -> str | None:
    """The codelists a finished run used, from its truth/params.json (for Shape.finish)."""
    path = out.parent / "truth" / "params.json"
    if not path.is_file():
        return None
    return orjson.loads(path.read_bytes()).get("params", {}).get("codelists_dir")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return [r for r in csv.DictReader(fh) if r.get("code") and r.get("system")]


@lru_cache(maxsize=4)
def _tables(
    codelists_dir: str | None,
) -> tuple[dict[tuple[str, str], Code], dict[tuple[str, str], str], Code]:
    """(legacy (system, code) -> SNOMED Code, every (system, code) -> term, a SNOMED code on no list)."""
    root = find_codelists_dir(codelists_dir)
    sig: dict[tuple[str, str], set[tuple[str, str]]] = {}
    terms: dict[tuple[str, str], str] = {}
    for path in sorted(root.glob("*.csv")):
        for r in _rows(path):
            key = (r["system"].strip(), r["code"].strip())
            sig.setdefault(key, set()).add((path.stem, (r.get("category") or "").strip()))
            terms.setdefault(key, (r.get("term") or "").strip())
    for r in _rows(DATA_DIR / "noise_codes.csv"):
        key = (r["system"].strip(), r["code"].strip())
        sig.setdefault(key, set())
        terms.setdefault(key, (r.get("term") or "").strip())
    snomed: dict[Signature, list[str]] = {}
    for (system, code), s in sorted(sig.items()):
        if system == "snomedct":
            snomed.setdefault(frozenset(s), []).append(code)
    choices = sorted(snomed.items(), key=lambda kv: sorted(kv[0]))
    out: dict[tuple[str, str], Code] = {}
    for (system, code), s in sorted(sig.items()):
        if system not in ("readv2", "ctv3"):
            continue
        want = frozenset(s)
        codes = snomed.get(want)
        if codes is None:  # closest signature: fewest differences, losing before gaining
            _, codes = min(choices, key=lambda kv: (len(kv[0] ^ want), len(kv[0] - want)))
        target = codes[0]
        out[(system, code)] = Code(target, "snomedct", terms[("snomedct", target)])
    plain = snomed[frozenset()][0]
    return out, terms, Code(plain, "snomedct", terms[("snomedct", plain)])


def as_snomed(code: Code, codelists_dir: str | None = None) -> Code:
    """The SNOMED CT form of a coded entry (SNOMED CT and dm+d codes are returned as they are)."""
    if code.system not in ("readv2", "ctv3"):
        return code
    table = _tables(codelists_dir)[0]
    found = table.get((code.system, code.code))
    if found is not None:
        return found
    # A legacy code on no list the generator knows: a SNOMED code on no list keeps it off them.
    return _tables(codelists_dir)[2]


def all_codes(codelists_dir: str | None = None) -> dict[tuple[str, str], str]:
    """Every (system, code) the generator can write, with its term (for dictionaries)."""
    return dict(_tables(codelists_dir)[1])
