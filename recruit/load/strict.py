"""`--strict`: every resource also validated with fhir.resources' R4B models, on all cores.

R4B validation runs at about 1,000 to 6,000 resources a second per core
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
CHUNK_LINES = 2000


def _validate(resource: Any) -> str | None:
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return None  # the narrow reader reports these
    try:
        model = get_fhir_model_class(resource["resourceType"])
    except (KeyError, ValueError, LookupError):
        return f"'{resource['resourceType']}' is not a FHIR R4 resource type"
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(resource)"
        return f"{where}: {first['msg']}"
    return None


def _check_chunk(task: tuple[int, int | None, list[bytes]]) -> list[tuple[Key, str]]:
    file_no, first_line, payloads = task
    failures: list[tuple[Key, str]] = []
    for offset, payload in enumerate(payloads):
        line = None if first_line is None else first_line + offset
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("resourceType") == "Bundle":
            for i, entry in enumerate(data.get("entry") or []):
                if isinstance(entry, dict):
                    problem = _validate(entry.get("resource"))
                    if problem:
                        failures.append(((file_no, line, i), problem))
        else:
            problem = _validate(data)
            if problem:
                failures.append(((file_no, line, None), problem))
    return failures


def _tasks(files: list[Path]) -> Iterator[tuple[int, int | None, list[bytes]]]:
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
                        yield file_no, start, chunk
                        chunk = []
            if chunk:
                yield file_no, start, chunk
        else:
            yield file_no, None, [path.read_bytes()]


def strict_failures(files: list[Path], workers: int | None = None) -> dict[Key, str]:
    """Records failing full R4 validation, keyed by where they are, with the first problem."""
    workers = workers or os.cpu_count() or 1
    failures: dict[Key, str] = {}
    if workers <= 1:
        results: Iterator[list[tuple[Key, str]]] = map(_check_chunk, _tasks(files))
        for chunk in results:
            failures.update(chunk)
        return failures
    with mp.get_context("spawn").Pool(workers) as pool:
        for chunk in pool.imap(_check_chunk, _tasks(files), chunksize=1):
            failures.update(chunk)
    return failures
