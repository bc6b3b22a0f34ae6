"""Code systems as UK GP extracts write them, mapped to the names recruit stores.

dm+d identifiers are SNOMED CT identifiers, and EPS and GP Connect send them under the SNOMED
URI; on a medication they are stored as `dmd` whichever URI carried them, so a dm+d codelist
matches both (see shared/reference/fhir-in-uk-primary-care.md, "Medications").
"""

from __future__ import annotations

import re

SNOMED = "snomedct"
READV2 = "readv2"
CTV3 = "ctv3"
DMD = "dmd"
CODE_SYSTEMS: tuple[str, ...] = (SNOMED, READV2, CTV3, DMD)
# How each system is named to practice staff.
SYSTEM_NAMES = {SNOMED: "SNOMED CT", READV2: "Read v2", CTV3: "CTV3", DMD: "dm+d"}

_SYSTEM_URIS = {
    "http://snomed.info/sct": SNOMED,
    "https://snomed.info/sct": SNOMED,
    "http://read.info/readv2": READV2,
    "https://read.info/readv2": READV2,
    "http://read.info/ctv3": CTV3,
    "https://read.info/ctv3": CTV3,
    "https://dmd.nhs.uk": DMD,
    "http://dmd.nhs.uk": DMD,
}

_SCTID = re.compile(r"^[1-9][0-9]{5,17}$")
_READ = re.compile(r"^[A-Za-z0-9.]{5}$")


def system_name(uri: object) -> str | None:
    """recruit's name for a coding system URI, or None for systems recruit does not use."""
    if not isinstance(uri, str):
        return None
    return _SYSTEM_URIS.get(uri.rstrip("/"))


def normalise_code(system: str, code: str) -> str | None:
    """The code in the form codelists use, or None when it cannot belong to that system.

    Read v2 codes often arrive with their two-digit term code (1M52.00): the concept is the
    first five characters.
    """
    code = code.strip()
    if system in (SNOMED, DMD):
        return code if _SCTID.match(code) else None
    if system == READV2 and len(code) == 7 and code[5:].isdigit():
        code = code[:5]
    return code if _READ.match(code) else None
