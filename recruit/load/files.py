"""Finding the files of an extract, fingerprinting them, and reading FHIR records one at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from recruit.errors import RecruitError

FHIR_SUFFIXES = (".ndjson", ".json", ".jsonl")
IGNORED_NAMES = ("log.ndjson",)  # Bulk Data $export writes non-resources here


class Record(NamedTuple):
    """One resource as read, or the reason it could not be read (a tuple: made per record)."""

    file_no: int
    line: int | None
    resource: Any
    full_url: str | None = None
    entry: int | None = None  # index within a Bundle
    error: str | None = None
    raw: bytes | None = None


def find_files(paths: list[Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Every input file under the given files and folders, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise RecruitError(f"{path} does not exist.")
        if path.is_dir():
            children = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            found.extend(p for p in children if p.name not in IGNORED_NAMES and not _is_manifest(p))
        elif path.name not in IGNORED_NAMES:
            found.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise RecruitError(f"No extract files found in {', '.join(str(p) for p in paths)}.")
    return unique


def _is_manifest(path: Path) -> bool:
    """A Bulk Data export manifest lists files; it is not a resource."""
    if path.suffix.lower() != ".json" or path.stat().st_size > 10_000_000:
        return False
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and "output" in data and "resourceType" not in data


def fingerprint(files: list[Path], extra: bytes = b"") -> str:
    """sha256 over the files' contents (not their names or order), plus e.g. a mapping file."""
    digests = []
    for path in files:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digests.append(h.hexdigest())
    combined = hashlib.sha256()
    for d in sorted(digests):
        combined.update(d.encode())
    combined.update(extra)
    return combined.hexdigest()


def read_fhir(path: Path, file_no: int) -> Iterator[Record]:
    """Resources from an NDJSON file (a line each) or a JSON file (a resource or a Bundle)."""
    with path.open("rb") as f:
        head = f.read(1)
        while head and head in b" \t\r\n\xef\xbb\xbf":
            head = f.read(1)
    if path.suffix.lower() in (".ndjson", ".jsonl"):
        yield from _read_ndjson(path, file_no)
    elif head:
        yield from _read_json(path, file_no)


def _read_ndjson(path: Path, file_no: int) -> Iterator[Record]:
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield Record(file_no, line_no, None, error=json_problem(exc, line), raw=line[:300])
                continue
            yield from expand(data, file_no, line_no)


def _read_json(path: Path, file_no: int) -> Iterator[Record]:
    raw = path.read_bytes()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        yield Record(file_no, None, None, error=json_problem(exc, raw), raw=raw[:300])
        return
    yield from expand(data, file_no, None)


def expand(data: Any, file_no: int, line: int | None) -> Iterator[Record]:
    """A Bundle of any type gives its entries' resources; request/response parts are ignored."""
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        entries = data.get("entry") or []
        if not isinstance(entries, list):
            yield Record(file_no, line, None, error="the Bundle's 'entry' is not a list")
            return
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                yield Record(file_no, line, None, entry=i, error="the Bundle entry has no resource")
                continue
            full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
            yield from _expand_entry(entry["resource"], file_no, line, full_url, i)
        return
    yield Record(file_no, line, data)


def _expand_entry(res: dict[str, Any], file_no: int, line: int | None, full_url: str | None, i: int):
    if res.get("resourceType") == "Bundle":  # a Bundle inside a Bundle (e.g. a message's payload)
        for record in expand(res, file_no, line):
            yield Record(record.file_no, line, record.resource, record.full_url, i, record.error)
        return
    yield Record(file_no, line, res, full_url, i)


def json_problem(exc: orjson.JSONDecodeError, raw: bytes) -> str:
    msg = str(exc)
    if "utf-8" in msg.lower() or "surrogates" in msg.lower():
        return "the text is not valid UTF-8 (the file may be in another encoding, such as Windows-1252)"
    if not raw.strip():
        return "the file is empty"
    return f"not valid JSON ({msg.split(':')[0]}); the line may be cut short"
