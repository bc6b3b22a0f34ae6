"""Whether a recorded code is on a codelist: the one place this is written.

A search stores each codelist's rows in codelist_code (recruit.query.run.store_codelists), and
every query that asks "has this person a code from the list" joins records to those rows here:
the search's compiler, the letters' last checks (opt-outs, accessible information, quarantined
records that still signal dissent) and `recruit codelists check`.

A row matches a record in one of two ways:
- exactly: the same coding system and the same code;
- by prefix: a Read v2 row marked `match: prefix` (in the list or its manifest entry) matches
  every code that starts with its code less trailing dots, so N24.. matches N2411. Read v2 is
  the only hierarchy spelt out in its codes, so no other system matches by prefix.

The two ways are separate joins (a query runs one or both and takes their UNION), so the exact
join stays an equality join on the (code_system, code) indexes; the prefix join is needed only
when a list has prefix rows at all (has_prefix_rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import FromClause, Select, and_, false, func, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from recruit.codelists import Code, Codelist, CodeSystem
from recruit.tables import CODES


def code_matches_by_prefix(code: Code) -> bool:
    """A Read v2 row matches by prefix (its code without trailing dots, so N24.. matches N2411)
    when its `match` column says `prefix`. Read v2 is the only hierarchy spelt out in its codes."""
    return code.system == CodeSystem.READV2 and code.attrs.get("match", "").strip().lower() == "prefix"


def has_prefix_rows(codelist: Codelist | None) -> bool:
    """Whether any row of the list matches by prefix (else the exact join alone finds every record)."""
    return codelist is not None and any(code_matches_by_prefix(code) for code in codelist.codes)


def code_on_list(
    codes: FromClause, system: ColumnElement[str], value: ColumnElement[str], *, by_prefix: bool
) -> ColumnElement[bool]:
    """A stored codelist row (`codes`: codelist_code or an alias of it) matches the recorded
    code (`system`, `value`): exactly, or (`by_prefix`) a prefix row by its code's stem."""
    if by_prefix:
        stem = func.rtrim(codes.c.code, ".")
        return and_(
            codes.c.code_system == system,
            func.substr(value, 1, func.length(stem)) == stem,
            codes.c.match_prefix == true(),
        )
    return and_(codes.c.code_system == system, codes.c.code == value, codes.c.match_prefix == false())


def code_on_list_either_way(
    codes: FromClause, system: ColumnElement[str], value: ColumnElement[str]
) -> ColumnElement[bool]:
    """The row matches the recorded code exactly or by prefix (one join condition for both)."""
    return or_(
        code_on_list(codes, system, value, by_prefix=False),
        code_on_list(codes, system, value, by_prefix=True),
    )


def records_on_lists(
    records: FromClause,
    columns: Sequence[ColumnElement[Any]],
    codelist_ids: Iterable[int],
    *,
    by_prefix: bool,
    categories: Sequence[str] | None = None,
    codes: FromClause = CODES,
) -> Select[Any]:
    """`columns` of the records (events or issues, or an alias) with a code on one of the lists,
    matched one way (exactly, or by prefix), and when `categories` are given only the rows of
    those categories. One row per matching codelist row: several lists can repeat a record."""
    where: list[ColumnElement[bool]] = [codes.c.codelist_id.in_(list(codelist_ids))]
    if categories:
        where.append(codes.c.category.in_(list(categories)))
    return (
        select(*columns)
        .select_from(records)
        .join(codes, code_on_list(codes, records.c.code_system, records.c.code, by_prefix=by_prefix))
        .where(*where)
    )
