"""Turning slices of an extract into staging rows, in this process or on the other cores.

Reading and checking FHIR in Python costs several times more than the database inserts, so a
large extract is cut into chunks (a few MB of NDJSON lines, or one JSON file) and each chunk is
read by a worker process; the main process only writes the rows the workers hand back. The same
function stages a chunk in-process for small extracts, so both paths give the same rows.

Record order decides which of two duplicates is kept, so every record gets a sequence number
that sorts in file order: the chunk's number in the high bits, the record's place in the chunk
in the low bits.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson

from recruit.load.fhir import FhirReader, NotUsed, Parsed
from recruit.load.files import Record, expand, json_problem, read_fhir
from recruit.load.rows import OrgRow, PractitionerRow
from recruit.load.values import DateReader, Invalid

CHUNK_BYTES = 4 << 20
SEQ_BITS = 32  # records per chunk stay far below 2**32


@dataclass(frozen=True)
class Chunk:
    """A slice of one file: NDJSON lines starting at first_line, or a whole JSON file (data None)."""

    number: int
    file_no: int
    path: str
    first_line: int | None = None
    data: bytes | None = None
    size: int = 0


@dataclass
class Staged:
    """What some records contribute to the staging tables, and the counts a summary needs."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    # (file_no, line, entry, resource_type, resource_id, field, reason_code, reason, raw snippet)
    quarantine: list[tuple[Any, ...]] = field(default_factory=list)
    orgs: dict[str, OrgRow] = field(default_factory=dict)
    practitioners: dict[str, PractitionerRow] = field(default_factory=dict)
    # Records read per ODS code / practitioner id, so ones that end up unused can be counted so.
    org_records: Counter[str] = field(default_factory=Counter)
    practitioner_records: Counter[str] = field(default_factory=Counter)
    read: int = 0
    not_used: Counter[str] = field(default_factory=Counter)
    stu3: int = 0
    repaired: int = 0
    size: int = 0

    def add_row(self, table: str, row: tuple[Any, ...]) -> None:
        self.rows.setdefault(table, []).append(row)


class Stager:
    """Turns records (read, or already parsed by the CSV reader) into staging rows."""

    def __init__(self, dates: DateReader, strict_failures: dict[tuple[Any, ...], str] | None = None) -> None:
        self.dates = dates
        self.reader = FhirReader(dates)
        self.strict_failures = strict_failures or {}
        self.out = Staged()
        self.seq = 0

    def take(self) -> Staged:
        """The rows staged so far (the stager starts afresh, keeping its sequence)."""
        out, self.out = self.out, Staged()
        out.repaired, self.dates.repaired = self.dates.repaired, 0
        return out

    def record(self, record: Record, seq: int) -> None:
        if record.error is not None:
            self.parsed(record, Invalid("unreadable", record.error, None), seq)
            return
        try:
            parsed: Parsed | Exception = self.reader.read(record.resource, record.full_url)
        except (Invalid, NotUsed) as exc:
            parsed = exc
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            parsed = Invalid("malformed", f"the record's structure is not as FHIR R4 describes ({exc})")
        if self.strict_failures and isinstance(parsed, Parsed):
            problem = self.strict_failures.get((record.file_no, record.line, record.entry))
            if problem:
                field_, _, message = problem.partition(": ")
                parsed = Invalid("fhir_invalid", f"fails full FHIR R4 validation: {message}", field_)
        self.parsed(record, parsed, seq)

    def parsed(self, record: Record, parsed: Parsed | Exception, seq: int | None = None) -> None:
        out = self.out
        if isinstance(parsed, NotUsed):
            out.not_used[parsed.what] += 1
            return
        out.read += 1
        if seq is None:
            self.seq += 1
            seq = self.seq
        res = record.resource if isinstance(record.resource, dict) else {}
        rtype = res.get("resourceType") if isinstance(res.get("resourceType"), str) else None
        rid = res.get("id") if isinstance(res.get("id"), str) else None
        if isinstance(parsed, Exception):
            assert isinstance(parsed, Invalid)
            snippet = record.raw.decode("utf-8", "replace")[:300] if record.raw else None
            out.quarantine.append(
                (record.file_no, record.line, record.entry, rtype, rid)
                + (parsed.field, parsed.code, parsed.reason, snippet)
            )
            return
        if parsed.stu3:
            out.stu3 += 1
        fno, line = record.file_no, record.line
        for org in parsed.orgs:
            if rtype == "Organization":
                out.org_records[org.ods_code] += 1
            for key in org.keys:
                out.orgs[key] = org
        for prac in parsed.practitioners:
            if rtype == "Practitioner":  # (a CSV patient row names its GP: not a record of its own)
                out.practitioner_records[prac.source_id] += 1
            for key in prac.keys:
                out.practitioners[key] = prac
        rows = out.rows
        if parsed.medicines:
            rows.setdefault("ld_medicine", []).extend(parsed.medicines)
        for p in parsed.patients:
            rows.setdefault("ld_patient", []).append((seq, fno, line, rid, *p[1:], None, None, None, None))
            rows.setdefault("ld_patient_key", []).extend((key, seq) for key in dict.fromkeys(p.keys))
        if parsed.events:
            rows.setdefault("ld_event", []).extend(
                (seq, fno, line, rtype, e.resource_id, e.patient_ref, *e[1:7], e.status)
                for e in parsed.events
            )
        if parsed.medications:
            rows.setdefault("ld_med", []).extend(
                (seq, fno, line, rtype, m.resource_id, m.patient_ref, *m[1:7], m.medication_ref, m.status)
                for m in parsed.medications
            )


def stage_chunk(chunk: Chunk, extract_date: dt.date, strict: dict[tuple[Any, ...], str]) -> Staged:
    """Read and stage every record of one chunk (runs in a worker process, or in-process)."""
    stager = Stager(DateReader(extract_date), strict)
    base = chunk.number << SEQ_BITS
    if chunk.data is None:
        records: Iterator[Record] = read_fhir(Path(chunk.path), chunk.file_no)
    else:
        records = _ndjson_records(chunk)
    for i, record in enumerate(records):
        stager.record(record, base + i)
    out = stager.take()
    out.size = chunk.size
    return out


def _ndjson_records(chunk: Chunk) -> Iterator[Record]:
    assert chunk.data is not None and chunk.first_line is not None
    for line_no, line in enumerate(chunk.data.splitlines(keepends=True), start=chunk.first_line):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield Record(chunk.file_no, line_no, None, error=json_problem(exc, line), raw=line[:300])
            continue
        yield from expand(data, chunk.file_no, line_no)


def chunks(files: list[Path], chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """The extract cut into chunks, in file order; NDJSON files are cut between lines."""
    number = 0
    for file_no, path in enumerate(files):
        if path.suffix.lower() not in (".ndjson", ".jsonl"):
            number += 1
            yield Chunk(number, file_no, str(path), size=path.stat().st_size)
            continue
        line = 1
        with path.open("rb") as f:
            while block := f.read(chunk_bytes):
                if not block.endswith(b"\n"):
                    block += f.readline()
                number += 1
                yield Chunk(number, file_no, str(path), line, block, len(block))
                line += block.count(b"\n")


def _ignore_interrupt() -> None:
    """Workers leave Ctrl-C to the main process, which rolls the load back and says so."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def staged_chunks(
    files: list[Path],
    extract_date: dt.date,
    strict: dict[tuple[Any, ...], str],
    workers: int,
    chunk_bytes: int | None = None,
) -> Iterator[Staged]:
    """Every chunk's staged rows, in file order; read on `workers` processes when more than one.

    Only a few chunks are in flight at a time, so memory stays flat whatever the extract size.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    if workers <= 1:
        for chunk in chunks(files, chunk_bytes):
            yield stage_chunk(chunk, extract_date, strict)
        return
    methods = ("fork", "forkserver", "spawn")
    context = next(get_context(m) for m in methods if m in _start_methods())
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_interrupt) as pool:
        pending: list[Future[Staged]] = []
        try:
            for chunk in chunks(files, chunk_bytes):
                pending.append(pool.submit(stage_chunk, chunk, extract_date, strict))
                if len(pending) > workers * 2:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            for future in pending:
                future.cancel()


def _start_methods() -> list[str]:
    from multiprocessing import get_all_start_methods

    return get_all_start_methods()


def default_workers(files: list[Path]) -> int:
    """Both cores for an extract big enough to repay starting the workers (tens of MB)."""
    size = sum(p.stat().st_size for p in files)
    if size < 32 << 20:
        return 1
    return max(1, min(os.cpu_count() or 1, 4))
