"""What an extract says about itself before any record is read: when it was taken, and which
kinds of record it carries.

The date decides which of two extracts of a practice is newer (an older one must never overwrite
newer facts), and the kinds decide which earlier records a newer extract replaces (a missing file
must never wipe the records of its kind).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

from recruit.errors import RecruitError
from recruit.load.files import nothing_to_load, only_empty_bundles, read_manifest
from recruit.load.values import LONDON

NO_DATE = "This extract does not say when it was taken; give the date with --extract-date YYYY-MM-DD."

# A Bulk Data file is named after its resource type, sometimes with a part number:
# Observation.ndjson, Observation_2.ndjson, Observation.000.ndjson, Observation-1.ndjson.
_TYPE_NAME = re.compile(r"^([A-Z][A-Za-z]+)(?:[._-]\d+)?$")
# Every FHIR R4 resource type a GP extract might name a file after (a file called Notes.ndjson
# says nothing about its kind).
FHIR_TYPES = frozenset(
    [
        "AllergyIntolerance",
        "Appointment",
        "Binary",
        "Bundle",
        "CarePlan",
        "CareTeam",
        "Composition",
        "Condition",
        "Consent",
        "Device",
        "DiagnosticReport",
        "DocumentReference",
        "Encounter",
        "EpisodeOfCare",
        "Flag",
        "Group",
        "Immunization",
        "List",
        "Location",
        "Medication",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Organization",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
        "ProcedureRequest",
        "ReferralRequest",
        "RelatedPerson",
        "ServiceRequest",
        "Specimen",
    ]
)

_TIMESTAMP = re.compile(rb'"timestamp"\s*:\s*"([0-9][0-9T:.+\-Z]{3,40})"')
_LAST_UPDATED = re.compile(rb'"lastUpdated"\s*:\s*"([0-9][0-9T:.+\-Z]{3,40})"')
# the same in FHIR XML: <timestamp value="..."/>
_XML_TIMESTAMP = re.compile(rb'<timestamp\s+value="([0-9][0-9T:.+\-Z]{3,40})"')
_XML_LAST_UPDATED = re.compile(rb'<lastUpdated\s+value="([0-9][0-9T:.+\-Z]{3,40})"')
_SCAN_BLOCK = 4 << 20
_OVERLAP = 128


def parse_instant(raw: str) -> dt.date | None:
    """An ISO date or dateTime as a calendar date in England (None when it is not one)."""
    text = raw.strip().replace("Z", "+00:00")
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(LONDON)
    return when.date()


def manifest_of(paths: list[Path]) -> tuple[Path, dict[str, Any]] | None:
    """The Bulk Data manifest of an extract folder (manifest.json), if it has one."""
    for path in paths:
        manifest = path / "manifest.json" if path.is_dir() else None
        if manifest is not None and manifest.is_file():
            try:
                data = read_manifest(manifest)
            except orjson.JSONDecodeError:
                raise RecruitError(
                    f"{manifest} is not valid JSON, so the extract cannot be checked against it."
                ) from None
            if data is not None:
                return manifest, data
    return None


def manifest_date(paths: list[Path]) -> dt.date | None:
    """A Bulk Data manifest's transactionTime is when the extract was taken."""
    found = manifest_of(paths)
    if found is None:
        return None
    raw = found[1].get("transactionTime")
    return parse_instant(raw) if isinstance(raw, str) else None


def check_manifest(paths: list[Path]) -> set[str]:
    """The resource types a manifest lists; a file it lists that is not there refuses the load."""
    found = manifest_of(paths)
    if found is None:
        return set()
    manifest, data = found
    output = data.get("output")
    if not isinstance(output, list):
        return set()
    types: set[str] = set()
    missing: list[str] = []
    for item in output:
        if not isinstance(item, dict):
            continue
        rtype, url = item.get("type"), item.get("url")
        if isinstance(rtype, str) and rtype:
            types.add(rtype)
        if isinstance(url, str) and url:
            parsed = urlparse(url)
            where = unquote(parsed.path)
            name = Path(where).name
            # A relative URL names a path beside the manifest; an absolute one, a file copied here.
            candidates = [manifest.parent / name]
            if not parsed.scheme and not where.startswith("/"):
                candidates.append(manifest.parent / where)
            if name and not any(c.is_file() for c in candidates):
                missing.append(name)
    if missing:
        raise RecruitError(
            f"The extract's manifest lists {', '.join(sorted(set(missing)))}, which "
            f"{'is' if len(set(missing)) == 1 else 'are'} not in {manifest.parent}: the extract is "
            "incomplete. Copy the whole extract and load it again; nothing was loaded."
        )
    return types


def file_types(files: list[Path]) -> set[str]:
    """The resource types the files are named after (Observation.ndjson, Observation_2.ndjson)."""
    types = set()
    for path in files:
        stem = path.name.split(".")[0] if path.suffix.lower() == ".ndjson" else path.stem
        m = _TYPE_NAME.match(stem) or _TYPE_NAME.match(path.stem)
        if m and m.group(1) in FHIR_TYPES and m.group(1) != "Bundle":
            types.add(m.group(1))
    return types


def scanned_date(files: list[Path]) -> tuple[dt.date, str] | None:
    """The latest Bundle.timestamp, else the latest meta.lastUpdated, found in the files' bytes.

    A plain scan, block by block (memory stays flat whatever the file or line size); values that
    are not dates are ignored.
    """
    latest: dict[str, dt.date] = {}
    for path in files:
        xml = path.suffix.lower() == ".xml"
        patterns = (
            (("timestamp", _XML_TIMESTAMP), ("lastUpdated", _XML_LAST_UPDATED))
            if xml
            else (("timestamp", _TIMESTAMP), ("lastUpdated", _LAST_UPDATED))
        )
        with path.open("rb") as f:
            tail = b""
            while block := f.read(_SCAN_BLOCK):
                data = tail + block
                for name, pattern in patterns:
                    for m in pattern.finditer(data):
                        day = parse_instant(m.group(1).decode("ascii", "replace"))
                        if day is not None and (name not in latest or day > latest[name]):
                            latest[name] = day
                tail = data[-_OVERLAP:]
    if "timestamp" in latest:
        return latest["timestamp"], "latest Bundle.timestamp"
    if "lastUpdated" in latest:
        return latest["lastUpdated"], "latest meta.lastUpdated of its records"
    return None


def fhir_extract_date(paths: list[Path], files: list[Path], given: dt.date | None) -> tuple[dt.date, str]:
    """When a FHIR extract was taken, and where that came from; refused when nothing says."""
    if given is not None:
        return given, "--extract-date"
    from_manifest = manifest_date(paths)
    if from_manifest is not None:
        return from_manifest, "manifest transactionTime"
    scanned = scanned_date(files)
    if scanned is not None:
        return scanned
    if all(path.stat().st_size == 0 for path in files):
        raise RecruitError(nothing_to_load([], len(files)))
    empty = only_empty_bundles(files)  # (say so, rather than ask for a date it does not need)
    if empty:
        raise RecruitError(nothing_to_load(empty, len(files)))
    raise RecruitError(NO_DATE)
