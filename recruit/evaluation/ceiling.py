"""The ceiling: the best precision any ranking of a run's candidates could reach using only what
their records hold, so anyone can see how much better the out-of-work score could do.

Candidates whose recorded features (the run's score and the yes/no criteria of
rules/ceiling_features.yaml) are identical form one group; no ranking by those features can
tell them apart, so the best one ranks whole groups by their share truly eligible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Integer, Subquery, Table, case, func, literal_column, select

from recruit.codelists import Codelist
from recruit.query.model import RuleSet
from recruit.search_run import SearchRun
from recruit.tables import PATIENT

# A group's recorded features: the run's score (None: no score), then 1 or 0 for each criterion.
Features = tuple[float | None, ...]

CEILING_FEATURES_FILE = "ceiling_features.yaml"
SMALL_GROUP = 10  # fewer people than this with the same records: their share eligible is mostly chance


@dataclass(frozen=True)
class CeilingFeatures:
    """What the oracle ranking may know about each candidate: named yes/no criteria about their
    record (a rule file's `score:` items; their weights are not used), besides the run's own score.
    """

    rule_set: RuleSet
    codelists: dict[str, Codelist]

    @property
    def names(self) -> list[str]:
        return [item.id for item in self.rule_set.score]


def load_ceiling_features(path: str | Path | None = None) -> CeilingFeatures:
    """The features file (default: rules/ceiling_features.yaml, ./rules/ first) and its codelists."""
    from recruit.query.run import load_search
    from recruit.resources import rules_file

    rule_set, codelists, _ = load_search(rules_file(CEILING_FEATURES_FILE) if path is None else path)
    return CeilingFeatures(rule_set, codelists)


def ceiling_by_wave(
    groups: Sequence[tuple[int, int]], sizes: Sequence[int], prior: float = 0.0
) -> list[float | None]:
    """The best precision of the first `size` letters for each size, ranking groups of people.

    `groups` are (people, truly eligible) for each group of candidates whose recorded features are
    identical: no ranking that uses only those features can tell them apart, so the oracle ranks
    whole groups by their share eligible, best first, and a wave that ends inside a group takes
    its people at the group's share (a random draw from the group, on average). No score built
    from those features can do better on these people (ties broken at random).

    It flatters when groups are small: a group of one person is 0% or 100% eligible by chance,
    and no score could repeat that luck on the next practice's records. `prior` > 0 ranks the
    groups instead by their share shrunk towards the share among all candidates, as if `prior`
    more people at that share were in each, (eligible + prior x overall) / (people + prior),
    while still counting each group's real share (so the whole list's figure is unchanged).
    """
    people = sum(n for n, _ in groups)
    overall = sum(e for _, e in groups) / people if people else 0.0
    ranked = sorted(((e + prior * overall) / (n + prior), e / n, n) for n, e in groups if n)
    ranked.reverse()
    shares = [(rate, n) for _, rate, n in ranked]
    return [top_precision(shares, size) if size else None for size in sizes]


def top_precision(shares: Sequence[tuple[float, int]], size: float) -> float:
    """Precision of the first `size` letters taken from groups in the order given, as (share
    eligible, people) each: a wave ending inside a group takes its people at the group's share."""
    left, eligible = float(size), 0.0
    for rate, n in shares:
        if left <= 0:
            break
        take = min(n, left)
        eligible += take * rate
        left -= take
    return eligible / size


def ceiling_groups(
    conn: Connection, run: SearchRun, people: Subquery, truth: Table, features: CeilingFeatures
) -> list[tuple[int, int, Features]]:
    """(people, truly eligible, features) for each group of candidates with identical recorded
    features (the run's score, then 1 or 0 for each criterion of `features`).

    The features are the run's score and each criterion of `features`, worked out by the search's
    own compiler for the candidates only (their codelists are stored as a search stores them).
    """
    from recruit.query.compiler import Compiler
    from recruit.query.run import store_codelists

    rule_set = features.rule_set
    compiler = Compiler(
        conn, rule_set, run.index_date, store_codelists(conn, features.codelists), features.codelists
    )
    candidates = select(people.c.patient_id).where(people.c.outcome == "candidate")
    compiler.population = compiler.patient_set(candidates)
    criteria = [item.criterion for item in rule_set.score]
    compiler.prepare(criteria)
    one, zero = literal_column("1", Integer), literal_column("0", Integer)
    flags = [case((compiler.condition(c), one), else_=zero).label(f"x{i}") for i, c in enumerate(criteria)]
    per_person = (
        select(
            people.c.score,
            *flags,
            func.coalesce(truth.c.eligible, zero).label("eligible"),
        )
        .select_from(
            compiler.patients_from()
            .join(people, people.c.patient_id == PATIENT.c.id)
            .outerjoin(truth, truth.c.nhs_number == people.c.nhs_number)
        )
        .where(people.c.outcome == "candidate")
        .subquery("features")
    )
    keys = [per_person.c.score, *(per_person.c[f"x{i}"] for i in range(len(criteria)))]
    rows = conn.execute(select(func.count(), func.sum(per_person.c.eligible), *keys).group_by(*keys)).all()
    compiler.drop()
    return [(int(n), int(e or 0), tuple(key)) for n, e, *key in rows]
