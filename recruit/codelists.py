"""Load and validate the project's clinical codelists (``rules/codelists``).

Each codelist is a CSV (``code,system,term,<extra columns>,source``) listed in
``rules/codelists/codelists.yaml``. Rows are validated on load so that a malformed code
fails loudly, naming the file, line and field, instead of silently never matching a
patient record. The file's SHA-256 is kept as ``Codelist.fingerprint`` so a screening run
can record exactly which version of each list it used.
"""

from __future__ import annotations

import copy
import csv
import functools
import hashlib
import io
import re
from collections.abc import Mapping
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
    "available_codelists",
    "default_directory",
    "load_codelist",
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


def _resolve_dir(directory: str | Path | None) -> Path:
    return Path(directory) if directory is not None else default_directory()


def _read_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    path = directory / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CodelistError(f"{path}: codelist manifest not found") from exc
    # A copy: callers may keep or change what they get.
    return copy.deepcopy(_parse_manifest(path, text))


@functools.lru_cache(maxsize=16)
def _parse_manifest(path: Path, text: str) -> dict[str, dict[str, Any]]:
    """The manifest is read once per codelist a search loads: parse each version of it once
    (libyaml's C parser when PyYAML has it: the pure-Python one takes most of a second)."""
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise CodelistError(f"{path}: not valid YAML ({exc})") from exc
    entries = data.get("codelists") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise CodelistError(f"{path}: expected a top-level 'codelists' list")
    out: dict[str, dict[str, Any]] = {}
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
    codes = _parse_rows(path, text)
    sources = entry.get("sources") or ()
    return Codelist(
        name=name,
        codes=codes,
        version=str(entry.get("version", "")),
        sources=tuple(str(s) for s in sources),
        fingerprint=hashlib.sha256(raw).hexdigest(),
    )
