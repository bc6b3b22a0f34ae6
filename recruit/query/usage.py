"""How often each codelist matches the loaded records, for `recruit codelists check`.

A codelist that never matches anything in a practice's records usually means a wrong coding
system or a typing error in the list, not that nobody has the condition; this finds those with
the search's own codelist matcher (recruit.query.codes_match, with its Read v2 prefix rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, literal_column, select, union

from recruit.codelists import Codelist
from recruit.query.codes_match import records_on_lists
from recruit.query.run import store_codelists
from recruit.tables import CODES, EVENT, MEDICATION


@dataclass(frozen=True)
class CodelistUsage:
    name: str
    codes: int
    records: int  # clinical events and medication issues with a code from the list
    patients: int
    codes_matched: int  # codelist rows that matched at least one record

    @property
    def never_matched(self) -> bool:
        return self.records == 0


def codelist_usage(engine: Engine, codelists: Mapping[str, Codelist]) -> list[CodelistUsage]:
    """For each codelist: how many records, patients and of its codes the database matches.

    The codelists are stored (deduplicated by fingerprint) as a search would store them.
    """
    out = []
    with engine.begin() as conn:
        ids = store_codelists(conn, codelists)
        for name, codelist in codelists.items():
            parts = []
            for source, records in enumerate((EVENT, MEDICATION)):
                columns: tuple[Any, ...] = (
                    records.c.id.label("record_id"),
                    records.c.patient_id,
                    CODES.c.code_system,
                    CODES.c.code,
                    # Distinguishes events from issues that share an id.
                    literal_column(str(source)).label("source"),
                )
                for by_prefix in (False, True):
                    parts.append(records_on_lists(records, columns, [ids[name]], by_prefix=by_prefix))
            matched = union(*parts).subquery()
            records_n = conn.execute(
                select(func.count()).select_from(
                    select(matched.c.source, matched.c.record_id).distinct().subquery()
                )
            ).scalar_one()
            patients_n = conn.execute(select(func.count(func.distinct(matched.c.patient_id)))).scalar_one()
            codes_n = conn.execute(
                select(func.count()).select_from(
                    select(matched.c.code_system, matched.c.code).distinct().subquery()
                )
            ).scalar_one()
            out.append(
                CodelistUsage(name, len(codelist.codes), int(records_n), int(patients_n), int(codes_n))
            )
    return out
