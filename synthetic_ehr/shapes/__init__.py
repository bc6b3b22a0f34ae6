"""Tabular extract shapes the generator can write beside FHIR (issue 18).

Each module here defines a Shape subclass and registers it with @shape: an EMIS extract, a
SystmOne SRE, CPRD Aurum, OpenSAFELY tables, OMOP CDM. The generator writes shape NAME under
DIR/NAME/ when "NAME" is among the formats asked for; the same people and records as the FHIR
forms, keyed as that system keys them (synthetic_ehr.keys), so one population can be loaded from
every shape and searched to the same result.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from ..people import Person, Practice
from ..record import Record

SHAPES: dict[str, type[Shape]] = {}


class Shape:
    """A tabular extract written a chunk of patients at a time (in worker processes)."""

    name = ""

    def __init__(self, extract: int) -> None:
        self.extract = extract  # the extract date, a proleptic Gregorian ordinal

    @classmethod
    def headers(cls) -> dict[str, bytes]:
        """Files (relative to DIR/NAME/) that rows are appended to, with their header bytes."""
        return {}

    def add(self, person: Person, practice: Practice, rec: Record) -> None:
        """Write one patient's rows."""
        raise NotImplementedError

    def bytes(self) -> dict[str, bytes]:
        """This chunk's rows, by file (relative to DIR/NAME/, one of headers())."""
        raise NotImplementedError

    @classmethod
    def finish(cls, folder: Path, practices: list[Practice], extract: int) -> list[Path]:
        """Write the shape's other files once (lookups, practice tables, a manifest)."""
        return []


def shape(cls: type[Shape]) -> type[Shape]:
    """Register a shape under its name."""
    SHAPES[cls.name] = cls
    return cls


for _module in pkgutil.iter_modules([str(Path(__file__).parent)]):
    importlib.import_module(f"{__name__}.{_module.name}")
