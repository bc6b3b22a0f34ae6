"""Finding the files of an extract, fingerprinting them, and reading FHIR records one at a time."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import orjson

from recruit.errors import RecruitError
from recruit.load.scope import Scope, bundle_scope

FHIR_SUFFIXES = (".ndjson", ".json", ".jsonl", ".xml")
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, which some Windows tools put at a file's start
# One record can be no longer than this: a longer NDJSON line is skipped unread (in pieces, so
# memory stays flat whatever its length) and quarantined as too long.
MAX_RECORD_BYTES = 32 << 20
# A JSON (not NDJSON) file is parsed whole; a larger one is quarantined rather than read, since
# parsing it would take several times its size in memory.
MAX_JSON_FILE_BYTES = 64 << 20
_PIECE = 1 << 20
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
    field: str | None = None  # the element an unreadable record's error is about (FHIR XML)
    scope: Scope | None = None  # the self-contained Bundle it came in (recruit.load.scope)
    # Something the extract carries that holds no record (a Bundle with no entries, an entry with
    # only a request), in words: counted as not used, never stored or quarantined.
    not_used: str | None = None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not an ordinary file"


def _mode(path: Path) -> int:
    """The file's type and permissions (following a link the user named), or a plain refusal."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        raise RecruitError(f"{path} does not exist.") from None
    except OSError as exc:
        raise RecruitError(f"{path} cannot be read ({exc.strerror}).") from None


def regular_file(path: Path) -> Path:
    """A file named directly must be an ordinary file: a FIFO would hang the load when opened,
    a device would be read for ever. Checked with stat, before anything opens it."""
    mode = _mode(path)
    if not stat.S_ISREG(mode):
        raise RecruitError(
            f"{path} is {_kind(mode)}, not an ordinary file: recruit reads only ordinary files, "
            "so it was not opened. Copy the extract's files into a folder and load that."
        )
    return path


def walk_files(folder: Path) -> list[Path]:
    """Every file in a folder and its subfolders, without following links.

    Anything that is not an ordinary file or folder is refused at once, naming it: a symbolic
    link could lead out of the extract (a system file would be read as records), and a FIFO or
    device would hang the load or never end. Nothing is opened here; entries are only lstat'ed.
    """
    found: list[Path] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            raise RecruitError(f"The folder {current} cannot be read ({exc.strerror}).") from None
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                raise RecruitError(
                    f"{path} is a symbolic link. recruit does not follow links inside an extract "
                    "folder (one could lead outside it), so nothing was loaded. Put the file itself "
                    "in the folder, or remove the link."
                )
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
            elif entry.is_file(follow_symlinks=False):
                found.append(path)
            else:
                mode = entry.stat(follow_symlinks=False).st_mode
                raise RecruitError(
                    f"{path} is {_kind(mode)}, not an ordinary file. recruit reads only ordinary "
                    "files, so nothing was loaded; remove it from the extract folder."
                )
    return sorted(found)


def input_files(paths: list[Path]) -> list[Path]:
    """Every ordinary file the given paths name: files named directly, and files inside folders.

    A path named directly may be a link (the user chose it); inside a folder nothing is followed.
    """
    found: list[Path] = []
    for path in paths:
        mode = _mode(path)
        if stat.S_ISDIR(mode):
            found.extend(walk_files(path))
        else:
            found.append(regular_file(path))
    return found


def find_files(paths: list[Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Every input file under the given files and folders, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if not os.path.lexists(path):
            raise RecruitError(f"{path} does not exist.")
        if path.is_dir():
            children = [p for p in walk_files(path) if p.suffix.lower() in suffixes]
            found.extend(p for p in children if p.name not in IGNORED_NAMES and not _is_manifest(p))
        elif path.name not in IGNORED_NAMES:
            found.append(regular_file(path))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        looked_for = ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]
        raise RecruitError(
            f"No extract files found in {', '.join(str(p) for p in paths)} "
            f"(recruit looks for {looked_for} files)."
        )
    return unique


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The JSON object a Bulk Data export manifest file holds (None: another kind of JSON value).

    The one reader of extract manifests: the loader skips them among an extract's files and
    takes the extract's date and list of files from one (recruit.load.extract_info). Raises
    orjson.JSONDecodeError when the file is not JSON at all."""
    data = orjson.loads(path.read_bytes())
    return data if isinstance(data, dict) else None


def _is_manifest(path: Path) -> bool:
    """A Bulk Data export manifest lists files; it is not a resource."""
    if path.suffix.lower() != ".json" or path.stat().st_size > 10_000_000:
        return False
    try:
        data = read_manifest(path)
    except orjson.JSONDecodeError:
        return False
    return data is not None and "output" in data and "resourceType" not in data


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
    """Resources from an NDJSON file (a line each), or a JSON or FHIR XML file (a resource or a
    Bundle)."""
    with path.open("rb") as f:
        head = f.read(1)
        while head and head in b" \t\r\n\xef\xbb\xbf":
            head = f.read(1)
    if path.suffix.lower() in (".ndjson", ".jsonl"):
        yield from _read_ndjson(path, file_no)
    elif path.suffix.lower() == ".xml":
        yield from _read_xml(path, file_no)
    elif head:
        yield from _read_json(path, file_no)


def too_long(size: int) -> str:
    return (
        f"the line is {size / 2**20:,.0f} MB long, more than one record can be "
        f"({MAX_RECORD_BYTES >> 20} MB); it was skipped without being read"
    )


def skip_line(f: BinaryIO) -> int:
    """Read to the end of the current line in pieces (never all at once); the bytes skipped."""
    skipped = 0
    while piece := f.readline(_PIECE):
        skipped += len(piece)
        if piece.endswith(b"\n"):
            break
    return skipped


def _read_ndjson(path: Path, file_no: int) -> Iterator[Record]:
    with path.open("rb") as f:
        line_no = 0
        while line := f.readline(MAX_RECORD_BYTES + 1):
            line_no += 1
            if line_no == 1 and line.startswith(BOM):
                line = line[len(BOM) :]
            if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
                size = len(line) + skip_line(f)
                yield Record(file_no, line_no, None, error=too_long(size))
                continue
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield Record(file_no, line_no, None, error=json_problem(exc, line), raw=snippet(line))
                continue
            yield from expand(data, file_no, line_no)


def _too_big(path: Path, file_no: int, kind: str) -> Record | None:
    size = path.stat().st_size
    if size <= MAX_JSON_FILE_BYTES:
        return None
    return Record(
        file_no,
        None,
        None,
        error=f"the file is {size / 2**20:,.0f} MB, more than a {kind} file recruit reads whole "
        f"({MAX_JSON_FILE_BYTES >> 20} MB); export it as NDJSON (one record a line)",
    )


def _read_xml(path: Path, file_no: int) -> Iterator[Record]:
    """A FHIR XML file's resources, read into the same dicts as JSON (see fhir_xml)."""
    from recruit.load import fhir_xml

    if (big := _too_big(path, file_no, "XML")) is not None:
        yield big
        return
    raw = path.read_bytes()
    if not raw.strip(BOM + b" \t\r\n"):
        return  # as an empty JSON file: no records
    try:
        kind, found = fhir_xml.document(raw)
        records = list(_xml_records(found, file_no))
    except fhir_xml.XmlRefused as exc:
        yield Record(file_no, None, None, error=str(exc))
        return
    scope = None
    if kind is not fhir_xml.NOT_A_BUNDLE:
        scope = bundle_scope(kind, file_no, None, ((r.resource, r.full_url) for r in records))
    for record in records:
        yield record if scope is None else record._replace(scope=scope)


def _xml_records(found: Iterator[Any], file_no: int) -> Iterator[Record]:
    for item in found:
        if item.empty_bundle:
            yield empty_bundle(file_no, None, item.entry)
        elif item.resource is None and item.problem is None:
            yield entry_without_resource(item.request, file_no, None, item.entry)
        elif item.problem is not None:
            problem = item.problem
            yield Record(
                file_no,
                None,
                item.resource,
                item.full_url,
                item.entry,
                error=f"the XML element {problem.reason}",
                field=problem.field,
            )
        else:
            yield Record(file_no, None, item.resource, item.full_url, item.entry)


def _read_json(path: Path, file_no: int) -> Iterator[Record]:
    if (big := _too_big(path, file_no, "JSON")) is not None:
        yield big
        return
    raw = path.read_bytes()
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        yield Record(file_no, None, None, error=json_problem(exc, raw, "file"), raw=snippet(raw))
        return
    yield from expand(data, file_no, None)


def snippet(raw: bytes) -> bytes | None:
    """The start of an unreadable record, kept to help fix it, but only when it looks like a JSON
    record: bytes of anything else (a binary or system file) are never stored."""
    head = raw[:300]
    if not head.lstrip().startswith(b"{") or b"\x00" in head:
        return None
    if "\ufffd" in head.decode("utf-8", "replace")[:-1]:  # not UTF-8 text (the last may be cut)
        return None
    return head


def expand(data: Any, file_no: int, line: int | None) -> Iterator[Record]:
    """A Bundle of any type gives its entries' resources; request/response parts are ignored.
    Records of a self-contained Bundle carry its scope, so their references resolve within it."""
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        records = list(_bundle_records(data, file_no, line))
        scope = bundle_scope(data.get("type"), file_no, line, ((r.resource, r.full_url) for r in records))
        if scope is None:
            yield from records
        else:
            for record in records:
                yield record._replace(scope=scope)
        return
    yield Record(file_no, line, data)


def _bundle_records(data: dict[str, Any], file_no: int, line: int | None) -> Iterator[Record]:
    entries = data.get("entry")
    if entries is None or entries == []:
        yield empty_bundle(file_no, line, None)
        return
    if not isinstance(entries, list):
        yield Record(file_no, line, None, error="the Bundle's 'entry' is not a list")
        return
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            request = entry.get("request") if isinstance(entry, dict) else None
            yield entry_without_resource(request, file_no, line, i)
            continue
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        yield from _expand_entry(entry["resource"], file_no, line, full_url, i)


def _expand_entry(
    res: dict[str, Any], file_no: int, line: int | None, full_url: str | None, i: int
) -> Iterator[Record]:
    if res.get("resourceType") == "Bundle":  # a Bundle inside a Bundle (e.g. a message's payload)
        for record in _bundle_records(res, file_no, line):
            yield record._replace(line=line, entry=i)
        return
    yield Record(file_no, line, res, full_url, i)


# --- what a Bundle carries that is not a record (JSON and XML alike) --------------------------

EMPTY_BUNDLE = "Bundle with no entries"
DELETED_PATIENT = (
    "Bundle entry asking to delete a patient (DELETE Patient), no record: nothing was deleted, "
    "and the person is held back from letters"
)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")


def empty_bundle(file_no: int, line: int | None, entry: int | None) -> Record:
    """A Bundle with no entries (none, or "entry": []): nothing to read, which the load says."""
    return Record(file_no, line, None, entry=entry, not_used=EMPTY_BUNDLE)


def entry_without_resource(request: Any, file_no: int, line: int | None, i: int | None) -> Record:
    """A Bundle entry with no resource. A transaction's or batch's entry may carry only a request
    (DELETE Patient/x, a GET): that holds no record, so it is counted as not used, saying what it
    asked. A DELETE of a patient is named apart, since it says something about a person: recruit
    deletes nothing because of it, but holds that person back from letters. An entry with neither
    is quarantined."""
    method = request.get("method") if isinstance(request, dict) else None
    if not isinstance(method, str) or method.strip().upper() not in HTTP_METHODS:
        why = "its request has no method FHIR names" if request is not None else "no request either"
        return Record(
            file_no, line, None, entry=i, error=f"the Bundle entry has no resource ({why})", field="resource"
        )
    method = method.strip().upper()
    url = request.get("url") if isinstance(request, dict) else None
    target = re.split(r"[/?]", url.strip(), maxsplit=1)[0] if isinstance(url, str) else ""
    if not _TYPE_NAME.fullmatch(target):
        target = ""  # (only a resource type is named: never an id or a search's values)
    if method == "DELETE" and target == "Patient" and isinstance(url, str):  # (target came from url)
        # The url it names goes with it (as full_url), so the person can be held back from letters.
        return Record(file_no, line, None, url.strip(), entry=i, not_used=DELETED_PATIENT)
    what = f"{method} {target}".strip()
    return Record(
        file_no, line, None, entry=i, not_used=f"Bundle entry with only a request ({what}), no record"
    )


def nothing_to_load(empty_bundle_files: list[str], files: int) -> str:
    """Why an extract with no records loads nothing, in words that are true of it."""
    if not empty_bundle_files:
        return "The extract holds no records: the files are empty."
    n = len(empty_bundle_files)
    rest = "; the other files are empty" if n < files else ""
    return (
        f"The extract holds no records: {n:,} file(s) hold a Bundle with no entries "
        f"(the first: {empty_bundle_files[0]}){rest}. Nothing was loaded."
    )


def only_empty_bundles(files: list[Path]) -> list[str] | None:
    """The files holding a Bundle with no entries, when the extract holds nothing else (None as
    soon as a record is found). For saying why an extract gives nothing to load."""
    found: list[str] = []
    for file_no, path in enumerate(files):
        for record in read_fhir(path, file_no):  # (stops at the first record)
            if record.not_used != EMPTY_BUNDLE:
                return None
            if str(path) not in found:
                found.append(str(path))
    return found


def json_problem(exc: orjson.JSONDecodeError, raw: bytes, what: str = "line") -> str:
    """Why a line (NDJSON) or a whole file (JSON) could not be read, in words that fit it: text
    that does not even begin as JSON (a web page, a template, a report) is not called cut short."""
    msg = str(exc)
    if not raw.strip():
        return "the file is empty"
    start = raw.lstrip(BOM + _SPACE)
    if start.startswith((b"{%", b"{{")):  # Jekyll / Liquid lines around a published example
        return (
            f"the {what} is not JSON (it starts with a web page template line such as "
            "'{% highlight json %}'; remove such lines); is it a FHIR file?"
        )
    if not start.startswith((b"{", b"[")):
        return f"the {what} is not JSON (it does not start with '{{'); is it a FHIR file?"
    if not _starts_as_json(start):
        return f"the {what} is not JSON (it does not start with '{{\"' as JSON does); is it a FHIR file?"
    if "utf-8" in msg.lower() or "surrogates" in msg.lower():
        return "the text is not valid UTF-8 (the file may be in another encoding, such as Windows-1252)"
    return f"not valid JSON ({msg.split(':')[0]}); the {what} may be cut short"


_SPACE = b" \t\r\n"


def _starts_as_json(start: bytes) -> bool:
    """Whether text begins as a JSON object or array does ('{' then a name or '}', '[' then a
    value or ']'), so that a failure later in it can be a cut-short or broken record."""
    rest = start[1:].lstrip(_SPACE)
    if not rest:
        return True  # cut short right after its first character
    return rest[0] in (b'"}' if start.startswith(b"{") else b'{["-0123456789tfn]')


# What every FHIR file holds near its start: a JSON resource names its resourceType, and an XML
# one is in the FHIR namespace. Enough to tell FHIR from other files, never to check it.
_FHIR_MARKS = (b'"resourceType"', b"hl7.org/fhir")
_HEAD = 65_536


def _looks_like_fhir(path: Path) -> bool | None:
    """True if the file's start shows a FHIR resource, False if not, None for an empty file."""
    with path.open("rb") as f:
        head = f.read(_HEAD)
    if not head.strip():
        return None
    return any(mark in head for mark in _FHIR_MARKS)


def check_holds_fhir(paths: list[Path], files: list[Path]) -> None:
    """Refuse, naming what was found, when none of the files holds FHIR (such as the truth folder
    of a made-up extract, or a folder of CSV exports): otherwise the load "succeeds" with nothing
    but quarantined non-records, or asks for an extract date it cannot use."""
    seen = [_looks_like_fhir(f) for f in files]
    if any(seen) or not any(s is False for s in seen):
        return  # some FHIR, or only empty files (said elsewhere: nothing to load)
    found = [p.name for p in input_files(paths)]
    shown = ", ".join(found[:6]) + (f" and {len(found) - 6:,} more" if len(found) > 6 else "")
    where = ", ".join(str(p) for p in paths)
    message = f"{where} holds no FHIR records (found {shown}); nothing was loaded."
    if "truth.csv" in found:
        message += (
            " This is the hidden truth of a made-up extract, which is never loaded as records: "
            "load the extract's fhir folder instead."
        )
    elif any(name.lower().endswith(".csv") for name in found):
        message += " For CSV exports give --format csv and --mapping FILE (see rules/mappings/)."
    raise RecruitError(message)
