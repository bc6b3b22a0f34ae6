"""Load and validate the project's clinical codelists (``rules/codelists``).

Each codelist is a CSV listed in ``rules/codelists/codelists.yaml``: either the project's own
format (``code,system,term,<extra columns>,source``) or an OpenCodelists CSV exactly as downloaded
(``code,term`` for SNOMED CT, CTV3 and Read v2; ``code,term,dmd_id[,dmd_type,bnf_code]`` or the
older ``dmd_type,dmd_id,dmd_name,bnf_code`` for dm+d), so a practice can use a list from
opencodelists.org without editing it. A download's coding system comes from the manifest entry
(``system:``), a sidecar, or the file name (``...-snomed-<version>.csv``); its version and
provenance (codelist id, URL, when downloaded) from the entry, a sidecar (``<file>.yaml``, or the
``codelists.json`` that ``opensafely codelists update`` writes) or the file name.

Rows are validated on load so that a malformed code fails loudly, naming the file, line and
field, instead of silently never matching a patient record. The file's SHA-256 is kept as
``Codelist.fingerprint`` so a screening run can record exactly which version of each list it
used.
"""

from __future__ import annotations

import copy
import csv
import functools
import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from recruit.errors import RecruitError
from recruit.resources import rules_folder

__all__ = [
    "Code",
    "CodeSystem",
    "Codelist",
    "CodelistError",
    "DownloadInfo",
    "available_codelists",
    "codelist_directory",
    "default_directory",
    "download_info",
    "load_codelist",
    "manifest_entry",
]

MANIFEST_NAME = "codelists.yaml"
_REQUIRED_COLUMNS = ("code", "system", "term")

_SCTID = re.compile(r"[0-9]{6,18}")
# Read v2 and CTV3 concept codes: five characters from letters, digits and '.'
_FIVE_CHAR = re.compile(r"[A-Za-z0-9.]{5}")


class CodelistError(RecruitError):
    """A codelist file or the manifest is missing or malformed."""


class CodeSystem(StrEnum):
    """Coding systems found in UK GP records (dm+d IDs are SNOMED-format product IDs)."""

    SNOMEDCT = "snomedct"
    READV2 = "readv2"
    CTV3 = "ctv3"
    DMD = "dmd"


@dataclass(frozen=True, slots=True)
class Code:
    """One row of a codelist. ``attrs`` holds the list-specific columns (category, drug, ...)."""

    system: CodeSystem
    code: str
    term: str
    attrs: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def source(self) -> str:
        """Where this row came from (every row must cite one)."""
        return self.attrs.get("source", "")

    @property
    def category(self) -> str | None:
        """The row's ``category`` column, when the list has one."""
        return self.attrs.get("category")


@dataclass(frozen=True, slots=True)
class Codelist:
    """A validated codelist plus the provenance needed to reproduce a screening run."""

    name: str
    codes: tuple[Code, ...]
    version: str
    sources: tuple[str, ...]
    fingerprint: str  # sha256 hex digest of the CSV file bytes

    def keys(self) -> frozenset[tuple[CodeSystem, str]]:
        """All ``(system, code)`` pairs, for fast membership tests."""
        return frozenset((c.system, c.code) for c in self.codes)

    def codes_for(self, system: CodeSystem | str) -> frozenset[str]:
        """The code values recorded in one coding system."""
        wanted = CodeSystem(system)
        return frozenset(c.code for c in self.codes if c.system is wanted)

    def by_category(self, category: str) -> tuple[Code, ...]:
        """Rows whose ``category`` column equals ``category``."""
        return tuple(c for c in self.codes if c.category == category)

    def __len__(self) -> int:
        return len(self.codes)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, tuple) and len(item) == 2:
            system, code = item
            try:
                return (CodeSystem(system), code) in self.keys()
            except ValueError:
                return False
        return False


def default_directory() -> Path:
    """Where codelists live: ``./rules/codelists`` if present, else the copy recruit comes with.

    The working directory wins so a deployment can ship its own reviewed lists.
    """
    try:
        return rules_folder("codelists", MANIFEST_NAME)
    except RecruitError as e:
        raise CodelistError(str(e)) from None


def codelist_directory(file: Path, named: str | None, rules_root: Path) -> Path:
    """Where a rule set's or a study's codelists are, for searches and letters alike: the folder
    the file names (its codelist_directory, relative to the file), else codelists/ in the rules
    folder the file belongs to when that holds a manifest, else the usual folder."""
    if named:
        return (file.parent / named).resolve()
    beside = rules_root / "codelists"
    if (beside / MANIFEST_NAME).is_file():
        return beside
    return default_directory()


# A manifest entry as written in YAML: untyped (only name and file are checked; `sources` is
# iterated as written), so Any, like raw FHIR.
ManifestEntry = dict[str, Any]


def manifest_entry(name: str, directory: str | Path | None = None) -> ManifestEntry:
    """A codelist's entry in the manifest (a copy), or {} when it lists none of that name."""
    return _read_manifest(_resolve_dir(directory)).get(name) or {}


def _resolve_dir(directory: str | Path | None) -> Path:
    return Path(directory) if directory is not None else default_directory()


def _read_manifest(directory: Path) -> dict[str, ManifestEntry]:
    path = directory / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CodelistError(f"{path}: codelist manifest not found") from exc
    # A copy: callers may keep or change what they get.
    return copy.deepcopy(_parse_manifest(path, text))


@functools.lru_cache(maxsize=16)
def _parse_manifest(path: Path, text: str) -> dict[str, ManifestEntry]:
    """The manifest is read once per codelist a search loads: parse each version of it once
    (libyaml's C parser when PyYAML has it: the pure-Python one takes most of a second)."""
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise CodelistError(f"{path}: not valid YAML ({exc})") from exc
    entries = data.get("codelists") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise CodelistError(f"{path}: expected a top-level 'codelists' list")
    out: dict[str, ManifestEntry] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("file"):
            raise CodelistError(f"{path}: codelists[{i}] needs 'name' and 'file'")
        out[str(entry["name"])] = entry
    return out


def available_codelists(directory: str | Path | None = None) -> tuple[str, ...]:
    """Names of the codelists listed in the manifest, in manifest order."""
    return tuple(_read_manifest(_resolve_dir(directory)))


def validate_code(system: CodeSystem, code: str) -> str | None:
    """Return why ``code`` is not a well-formed code of ``system``, or None if it is."""
    if system in (CodeSystem.SNOMEDCT, CodeSystem.DMD):
        if not _SCTID.fullmatch(code):
            return "must be a numeric SNOMED-format ID of 6-18 digits"
    elif not _FIVE_CHAR.fullmatch(code):
        label = "Read v2" if system is CodeSystem.READV2 else "CTV3"
        return f"must be a 5-character {label} concept code (letters, digits, '.')"
    return None


def _parse_rows(path: Path, text: str) -> tuple[Code, ...]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in (*_REQUIRED_COLUMNS, "source") if c not in header]
    if missing:
        raise CodelistError(f"{path}:1: missing column(s) {', '.join(missing)}")
    if tuple(header[:3]) != _REQUIRED_COLUMNS:
        raise CodelistError(f"{path}:1: header must start with code,system,term")
    codes: list[Code] = []
    seen: dict[tuple[CodeSystem, str], int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            raise CodelistError(f"{path}:{line}: more fields than header columns")
        values = {k: (v or "").strip() for k, v in row.items()}
        try:
            system = CodeSystem(values["system"])
        except ValueError:
            raise CodelistError(
                f"{path}:{line}: field 'system': unknown coding system {values['system']!r} "
                f"(expected one of {', '.join(s.value for s in CodeSystem)})"
            ) from None
        code = values["code"]
        problem = validate_code(system, code)
        if problem:
            raise CodelistError(f"{path}:{line}: field 'code': {code!r} {problem}")
        for column in ("term", "source"):
            if not values[column]:
                raise CodelistError(f"{path}:{line}: field {column!r} is empty")
        key = (system, code)
        if key in seen:
            raise CodelistError(
                f"{path}:{line}: field 'code': duplicate {system.value} code {code!r} "
                f"(first on line {seen[key]})"
            )
        seen[key] = line
        attrs = {k: v for k, v in values.items() if k not in _REQUIRED_COLUMNS}
        codes.append(Code(system, code, values["term"], MappingProxyType(attrs)))
    return tuple(codes)


# --- OpenCodelists downloads ---------------------------------------------------------------------

OPENCODELISTS_URL = "https://www.opencodelists.org/codelist/"
# The coding-system words OpenCodelists slugs end with ("...-snomed", "...-dmd"), most specific first.
_SYSTEM_WORDS: tuple[tuple[str, CodeSystem], ...] = (
    ("snomed-ct", CodeSystem.SNOMEDCT),
    ("snomedct", CodeSystem.SNOMEDCT),
    ("snomed", CodeSystem.SNOMEDCT),
    ("ctv3", CodeSystem.CTV3),
    ("readv2", CodeSystem.READV2),
    ("read-v2", CodeSystem.READV2),
    ("dmd", CodeSystem.DMD),
)
# A version at the end of a downloaded file's name: OpenCodelists' 8-hex-digit version id, a
# date tag (2020-04-15) or a version tag (v1.2).
_VERSION_TAIL = re.compile(r"-([0-9a-f]{8}|[0-9]{4}-[0-9]{2}-[0-9]{2}|v[0-9]+(?:\.[0-9]+)*)$")
_SIDECAR = "codelists.json"  # written by `opensafely codelists update`, one entry per file


@dataclass(frozen=True, slots=True)
class DownloadInfo:
    """Where a downloaded codelist came from, as far as the entry, a sidecar and its name tell."""

    system: CodeSystem | None
    version: str
    codelist_id: str  # owner/slug/version on OpenCodelists, when known
    url: str
    downloaded_at: str

    def provenance(self) -> tuple[str, ...]:
        """Lines for ``Codelist.sources`` (stored with every search run that uses the list)."""
        lines = []
        if self.codelist_id:
            lines.append(f"OpenCodelists {self.codelist_id}")
        if self.url:
            lines.append(self.url)
        if self.downloaded_at:
            lines.append(f"downloaded {self.downloaded_at}")
        return tuple(lines) or ("OpenCodelists download (no id, URL or sidecar given)",)


def _system_from_words(text: str) -> CodeSystem | None:
    """The coding system a slug or file stem names at its end ('opensafely-asthma-snomed-2f6dc8a9')."""
    stem = _VERSION_TAIL.sub("", text.lower().strip("/"))
    for word, system in _SYSTEM_WORDS:
        if stem.endswith("-" + word) or stem == word:
            return system
    return None


def _read_sidecar(path: Path) -> dict[str, str]:
    """What a sidecar says about ``path``: ``<file>.yaml`` (system, version, id, url, downloaded_at)
    or this file's entry in an OpenSAFELY ``codelists.json`` (id, url, downloaded_at)."""
    found: dict[str, str] = {}
    opensafely = path.parent / _SIDECAR
    if opensafely.is_file():
        try:
            files = json.loads(opensafely.read_text(encoding="utf-8")).get("files", {})
        except (ValueError, AttributeError) as exc:
            raise CodelistError(f"{opensafely}: not the codelists.json OpenSAFELY writes ({exc})") from exc
        entry = files.get(path.name) if isinstance(files, dict) else None
        if isinstance(entry, dict):
            found.update({k: str(v) for k, v in entry.items() if k in ("id", "url", "downloaded_at")})
    own = path.with_suffix(".yaml")
    if own.is_file():
        try:
            data = yaml.safe_load(own.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise CodelistError(f"{own}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise CodelistError(f"{own}: expected keys such as system, version, id, url")
        found.update({k: str(v) for k, v in data.items() if v is not None})
    return found


def _coding_system(value: str, where: str) -> CodeSystem:
    words = value.strip().lower().replace(" ", "").replace("+", "")
    system = _system_from_words(words) if words not in set(CodeSystem) else CodeSystem(words)
    if system is None:
        known = ", ".join(s.value for s in CodeSystem)
        raise CodelistError(f"{where}: unknown coding system {value!r} (expected one of {known})")
    return system


def download_info(path: Path, entry: Mapping[str, object], header: Sequence[str] = ()) -> DownloadInfo:
    """The coding system, version and provenance of a downloaded codelist: the manifest entry
    first, then a sidecar, then the names (codelist id, file name); dm+d's own columns say dm+d."""
    side = _read_sidecar(path)
    codelist_id = str(entry.get("opencodelists") or side.get("id") or "").strip("/")
    system_text = entry.get("system") or side.get("system")
    if system_text:
        system: CodeSystem | None = _coding_system(str(system_text), str(path))
    else:
        system = (
            (_system_from_words(codelist_id.rsplit("/", 1)[0]) if codelist_id.count("/") >= 2 else None)
            or (_system_from_words(codelist_id) if codelist_id else None)
            or _system_from_words(path.stem)
            or (CodeSystem.DMD if "dmd_id" in header else None)
        )
    version = str(entry.get("version") or side.get("version") or "")
    if not version and codelist_id.count("/") >= 2:
        version = codelist_id.rsplit("/", 1)[1]
    if not version and (tail := _VERSION_TAIL.search(path.stem)):
        version = tail.group(1)
    url = str(entry.get("url") or side.get("url") or "")
    if not url and codelist_id.count("/") >= 2:
        url = f"{OPENCODELISTS_URL}{codelist_id}/"
    return DownloadInfo(system, version, codelist_id, url, str(side.get("downloaded_at") or ""))


def _parse_download(path: Path, text: str, info: DownloadInfo) -> tuple[Code, ...]:
    """Rows of an OpenCodelists download, in its own columns; every row cites the download."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    if "code" in header and "term" in header:
        code_col, term_col = "code", "term"
    elif "dmd_id" in header and "dmd_name" in header:
        code_col, term_col = "dmd_id", "dmd_name"
    else:
        raise CodelistError(
            f"{path}:1: not a codelist recruit can read: expected the columns code,system,term,...,source "
            "or an OpenCodelists download (code,term or dmd_id,dmd_name,...)"
        )
    if info.system is None:
        raise CodelistError(
            f"{path}: an OpenCodelists download, but its coding system is not known: add "
            f"'system: snomedct' (or readv2, ctv3, dmd) to its entry in {MANIFEST_NAME}, or keep the "
            "name OpenCodelists gave the file (it ends with the system, e.g. ...-snomed-2f6dc8a9.csv)"
        )
    system = info.system
    source = "; ".join(info.provenance())
    codes: list[Code] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            raise CodelistError(f"{path}:{line}: more fields than header columns")
        values = {k: (v or "").strip() for k, v in row.items()}
        code = values[code_col]
        problem = validate_code(system, code)
        if problem:
            raise CodelistError(f"{path}:{line}: field {code_col!r}: {code!r} {problem} ({system.value})")
        if code in seen:
            continue  # dm+d downloads may list a product twice (as itself and as a previous VMP)
        seen[code] = line
        attrs = {k: v for k, v in values.items() if k not in (code_col, term_col) and v}
        attrs["source"] = source
        codes.append(Code(system, code, values[term_col] or code, MappingProxyType(attrs)))
    if not codes:
        raise CodelistError(f"{path}: the download holds no codes")
    return tuple(codes)


def load_codelist(name: str, directory: str | Path | None = None) -> Codelist:
    """Load and validate the codelist called ``name`` (as listed in the manifest).

    Raises ``CodelistError`` naming the file, line and field of the first bad row.
    """
    base = _resolve_dir(directory)
    manifest = _read_manifest(base)
    entry = manifest.get(name)
    if entry is None:
        raise CodelistError(
            f"{base / MANIFEST_NAME}: no codelist named {name!r} (available: {', '.join(manifest) or 'none'})"
        )
    path = base / str(entry["file"])
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise CodelistError(f"{path}: codelist file not found") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodelistError(f"{path}: not UTF-8 ({exc})") from exc
    header = [h.strip() for h in next(csv.reader(io.StringIO(text, newline="")), [])]
    sources = tuple(str(s) for s in entry.get("sources") or ())
    version = str(entry.get("version", ""))
    if "system" in header or not header:
        codes = _parse_rows(path, text)
    else:  # an OpenCodelists CSV as downloaded
        info = download_info(path, entry, header)
        codes = _parse_download(path, text, info)
        version = info.version
        sources = (*sources, *info.provenance())
    return Codelist(
        name=name,
        codes=codes,
        version=version,
        sources=sources,
        fingerprint=hashlib.sha256(raw).hexdigest(),
    )
