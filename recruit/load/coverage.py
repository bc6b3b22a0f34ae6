"""Which code systems an extract holds, against those the rule set's codelists cover.

A practice on an older system may send CTV3 or Read v2 codes; an OMOP or research extract may
send only SNOMED CT. A codelist with no code in the system an extract uses finds nobody there,
and the search says "0" without saying why. The load names the systems it stored that the
default rule set (./rules/instep.yaml, else recruit's own: the one `recruit search` uses) has no
codes in, so staff hear it before any search.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from recruit.errors import RecruitError
from recruit.load.codes import SYSTEM_NAMES


def system_words(system: str) -> str:
    return SYSTEM_NAMES.get(system, system)


def rule_set_systems(rules_path: Path | None = None) -> tuple[str, frozenset[str]] | None:
    """(the rule set's name, the code systems its codelists have codes in); None when the rule
    set or its codelists cannot be read (the load goes on: `recruit search` will say why)."""
    from recruit.resources import default_rules

    try:
        path = (rules_path or default_rules()).resolve()
        return _systems(path, path.stat().st_mtime_ns)
    except (RecruitError, OSError):
        return None


@lru_cache(maxsize=8)
def _systems(path: Path, _mtime: int) -> tuple[str, frozenset[str]]:
    from recruit.query.run import load_search

    rule_set, codelists, _ = load_search(path)
    return rule_set.name, frozenset(str(code.system) for cl in codelists.values() for code in cl.codes)


def uncovered_systems(
    coded: dict[str, int], prescribed: dict[str, int], rules_path: Path | None = None
) -> tuple[str, list[str]]:
    """(rule set name, the systems the extract's stored records use that no codelist covers)."""
    held = {system for system, n in {**coded, **prescribed}.items() if n}
    if not held:
        return "", []
    found = rule_set_systems(rules_path)
    if found is None:
        return "", []
    name, covered = found
    return name, sorted(held - covered)
