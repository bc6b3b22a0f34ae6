"""`--strict`: every resource also validated with fhir.resources' models, on all cores: the R4B
models for R4 input (R4B differs from R4 only in resources recruit does not read), the STU3
models for resources whose profile is an STU3 one (GP Connect structured records), JSON and XML
alike (XML read into the same dicts by recruit.load.fhir_xml).

Validation runs at about 1,000 to 6,000 resources a second per core
(shared/reference/fhir-in-uk-primary-care.md section 4), so it is a separate pass spread over
worker processes; the normal load then quarantines the records it flagged.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

Key = tuple[int, int | None, int | None]  # file number, line, Bundle entry
Failure = tuple[str, str, str]  # FHIR version checked against (R4, STU3), field, message
CHUNK_LINES = 2000


def is_stu3(resource: Any) -> bool:
    """A resource (or Bundle) whose meta.profile names an STU3 profile, as GP Connect's do."""
    from recruit.load.fhir_xml import STU3_PROFILE_MARK

    meta = resource.get("meta") if isinstance(resource, dict) else None
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return isinstance(profiles, list) and any(isinstance(p, str) and STU3_PROFILE_MARK in p for p in profiles)


def _validate(resource: Any, stu3: bool) -> Failure | None:
    from pydantic import ValidationError

    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return None  # the narrow reader reports these
    stu3 = stu3 or is_stu3(resource)
    version = "STU3" if stu3 else "R4"
    if stu3:
        from fhir.resources.STU3 import get_fhir_model_class
    else:
        from fhir.resources.R4B import get_fhir_model_class
    try:
        model = get_fhir_model_class(resource["resourceType"])
    except (KeyError, ValueError, LookupError):
        return version, "resourceType", f"'{resource['resourceType']}' is not a FHIR {version} resource type"
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        return version, ".".join(str(p) for p in first["loc"]) or "(resource)", first["msg"]
    return None


def _resources(kind: str, payload: bytes) -> Iterator[tuple[int | None, Any, bool]]:
    """(Bundle entry, resource, in an STU3 Bundle) for each resource of one JSON payload or XML file."""
    if kind == "xml":
        from recruit.load import fhir_xml

        try:
            for item in fhir_xml.items(payload):
                if item.resource is not None and item.problem is None:
                    yield item.entry, item.resource, False
        except fhir_xml.XmlRefused:
            return  # the reader quarantines the file
        return
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        stu3 = is_stu3(data)
        for i, entry in enumerate(data.get("entry") or []):
            if isinstance(entry, dict):
                yield i, entry.get("resource"), stu3
    else:
        yield None, data, False


def _check_chunk(task: tuple[str, int, int | None, list[bytes]]) -> list[tuple[Key, Failure]]:
    kind, file_no, first_line, payloads = task
    failures: list[tuple[Key, Failure]] = []
    for offset, payload in enumerate(payloads):
        line = None if first_line is None else first_line + offset
        for entry, resource, stu3 in _resources(kind, payload):
            problem = _validate(resource, stu3)
            if problem:
                failures.append(((file_no, line, entry), problem))
    return failures


def _tasks(files: list[Path]) -> Iterator[tuple[str, int, int | None, list[bytes]]]:
    for file_no, path in enumerate(files):
        if path.suffix.lower() in (".ndjson", ".jsonl"):
            chunk: list[bytes] = []
            start = 1
            with path.open("rb") as f:
                for line_no, line in enumerate(f, start=1):
                    if not line.strip():
                        line = b"null"
                    if not chunk:
                        start = line_no
                    chunk.append(line)
                    if len(chunk) >= CHUNK_LINES:
                        yield "json", file_no, start, chunk
                        chunk = []
            if chunk:
                yield "json", file_no, start, chunk
        else:
            kind = "xml" if path.suffix.lower() == ".xml" else "json"
            yield kind, file_no, None, [path.read_bytes()]


def strict_failures(files: list[Path], workers: int | None = None) -> dict[Key, Failure]:
    """Records failing full validation, keyed by where they are, with the first problem."""
    workers = workers or os.cpu_count() or 1
    failures: dict[Key, Failure] = {}
    if workers <= 1:
        results: Iterator[list[tuple[Key, Failure]]] = map(_check_chunk, _tasks(files))
        for chunk in results:
            failures.update(chunk)
        return failures
    with mp.get_context("spawn").Pool(workers) as pool:
        for chunk in pool.imap(_check_chunk, _tasks(files), chunksize=1):
            failures.update(chunk)
    return failures
