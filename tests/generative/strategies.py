"""Hypothesis strategies for the search tests: small populations, codelists and rule sets."""

from __future__ import annotations

import calendar
import datetime as dt

from hypothesis import strategies as st

from recruit.load.status import EVENT_STATUSES
from recruit.query.model import ISSUE_STATUSES, KINDS, AllOf, AnyOf, Not, Ref, RuleSet
from tests.search_helpers import Population, make_codelist

EVENT_CODES = [
    ("snomedct", "1000001"),
    ("snomedct", "1000002"),
    ("snomedct", "1000003"),
    ("readv2", "N2411"),
    ("readv2", "N2412"),
    ("readv2", "N2500"),
    ("ctv3", "XaB12"),
]
DRUG_CODES = [("dmd", "2000001"), ("dmd", "2000002"), ("dmd", "2000003")]
CATEGORIES = ["x", "y"]
INDEX_DATES = [dt.date(2025, 6, 30), dt.date(2024, 2, 29), dt.date(2025, 3, 31)]
dates = st.dates(dt.date(2014, 1, 1), dt.date(2026, 6, 30))
CODELIST_NAMES = ["a", "b", "c", "m"]


# --- strategies ------------------------------------------------------------------------------------


@st.composite
def codelists(draw):
    out = {}
    for name in ("a", "b", "c"):
        rows = draw(
            st.lists(
                st.tuples(st.sampled_from(EVENT_CODES), st.sampled_from([*CATEGORIES, ""])),
                min_size=1,
                max_size=4,
                unique_by=lambda r: r[0],
            )
        )
        listed = [(system, code, category) for (system, code), category in rows]
        if draw(st.booleans()):
            listed.append(("readv2", "N24..", draw(st.sampled_from(CATEGORIES)), "prefix"))
        out[name] = make_codelist(name, listed)
    drugs = draw(st.lists(st.sampled_from(DRUG_CODES), min_size=1, max_size=3, unique=True))
    out["m"] = make_codelist("m", drugs)
    return out


# NULL is a record loaded before statuses were kept.
event_statuses = st.one_of(st.none(), st.sampled_from(EVENT_STATUSES))
issue_statuses = st.one_of(st.none(), st.sampled_from(ISSUE_STATUSES))


@st.composite
def births(draw):
    """An exact birth date, or a partial one (a year, or a year and month) kept as its first and
    last possible days. Dates near the index dates' birthdays make the two readings differ."""
    day = draw(st.dates(dt.date(1950, 1, 1), dt.date(2012, 12, 31)))
    precision = draw(st.sampled_from(["day", "day", "year", "month"]))
    if precision == "day":
        return {"date_of_birth": day, "date_of_birth_latest": None}
    if precision == "year":
        return {"date_of_birth": dt.date(day.year, 1, 1), "date_of_birth_latest": dt.date(day.year, 12, 31)}
    last = calendar.monthrange(day.year, day.month)[1]
    return {
        "date_of_birth": dt.date(day.year, day.month, 1),
        "date_of_birth_latest": dt.date(day.year, day.month, last),
    }


@st.composite
def populations(draw, max_records: int = 4, record_dates: st.SearchStrategy[dt.date] = dates):
    """max_records and record_dates: more records, closer together, put several in one window."""
    pop = Population()
    pop.practices.append({"id": 1, "ods_code": "A00001", "name": "One"})
    pop.practices.append({"id": 2, "ods_code": "A00002", "name": "Two"})
    n = draw(st.integers(1, 10))
    for pid in range(1, n + 1):
        start = draw(st.one_of(st.none(), dates))
        # A patient from a pseudonymised extract has no NHS number (and passes nhs_number_verified).
        pseudonymised = draw(st.booleans())
        pop.add_patient(
            pid,
            practice_id=draw(st.sampled_from([1, 2])),
            nhs_number=None if pseudonymised else draw(st.sampled_from([None, f"9{pid:09d}", "9000000001"])),
            pseudonymised=pseudonymised,
            **draw(births()),
            registration_start=start,
            # A start may be unknown with or without an end (an inactive record has an end).
            registration_end=draw(st.one_of(st.none(), dates)),
            date_of_death=draw(st.one_of(st.none(), dates)),
        )
        for _ in range(draw(st.integers(0, max_records))):
            system, code = draw(st.sampled_from(EVENT_CODES))
            term = draw(st.sampled_from([None, "t1", "t2"]))
            pop.add_event(pid, draw(record_dates), system, code, term, status=draw(event_statuses))
        for _ in range(draw(st.integers(0, max_records))):
            _, code = draw(st.sampled_from(DRUG_CODES))
            pop.add_issue(
                pid,
                draw(record_dates),
                code,
                course=draw(st.sampled_from(["acute", "repeat", "unknown"])),
                status=draw(issue_statuses),
            )
        for _ in range(draw(st.integers(0, 1))):
            pop.add_invitation(
                pid,
                draw(st.sampled_from(["instep", "other"])),
                # Every status and reply `recruit replies import` can leave on an invitation.
                status=draw(st.sampled_from(["drafted", "sent", "replied", "declined", "do_not_contact"])),
                reply=draw(
                    st.sampled_from([None, "interested", "not_interested", "do_not_contact", "now_in_work"])
                ),
            )
    # One invitation per NHS number per study (the table's rule).
    seen = set()
    pop.invitations = [
        i
        for i in pop.invitations
        if (key := (i["study_id"], i["nhs_number"])) not in seen and not seen.add(key)
    ]
    return pop


windows = st.one_of(
    st.just("ever"),
    st.builds(lambda n: {"last_months": n}, st.integers(1, 40)),
    st.builds(lambda n: {"last_days": n}, st.integers(1, 800)),
    st.builds(lambda a, b: {"start": min(a, b), "end": max(a, b)}, dates, dates),
)
categories = st.one_of(st.none(), st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=2, unique=True))


def _codes(draw, names: list[str]) -> dict:
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    out = {"codelist": chosen[0]} if len(chosen) == 1 else {"codelists": chosen}
    cats = draw(categories)
    if cats:
        out["categories"] = cats
    return out


@st.composite
def status_sources(draw):
    return [
        {"codelist": draw(st.sampled_from(["a", "b", "c"])), "status": draw(st.sampled_from(["in", "out"]))}
        | ({"categories": cats} if (cats := draw(categories)) else {})
        for _ in range(draw(st.integers(1, 3)))
    ]


# Every kind of the query model that is not a combination (all, any, not) or a reference: the
# generative tests build rule sets from all of them, so a new kind is compared across engines.
LEAF_KINDS = [kind.key for kind in KINDS if kind not in (AllOf, AnyOf, Not, Ref)]


@st.composite
def leaves(draw):
    kind = draw(st.sampled_from(LEAF_KINDS))
    if kind == "registered":
        return {
            "registered": {
                "for_at_least_months": draw(st.sampled_from([0, 6, 24])),
                "unknown_start": draw(st.sampled_from(["counts", "does_not_count"])),
            }
        }
    if kind == "alive":
        return {"alive": {}}
    if kind == "nhs_number_verified":
        return {"nhs_number_verified": {}}
    if kind == "age_between":
        low, high = sorted(draw(st.lists(st.integers(0, 80), min_size=2, max_size=2)))
        return {"age_between": {"min": low, "max": high}}
    if kind == "has_code":
        body = _codes(draw, ["a", "b", "c"]) | {"window": draw(windows)}
        body["occurrence"] = draw(st.sampled_from(["any", "first", "last"]))
        if draw(st.booleans()):
            body["statuses"] = draw(
                st.lists(st.sampled_from(EVENT_STATUSES), min_size=1, max_size=3, unique=True)
            )
        return {"has_code": body}
    if kind == "code_on_days":
        body = _codes(draw, ["a", "b", "c"]) | {"window": draw(windows), "min_days": draw(st.integers(1, 3))}
        if draw(st.booleans()):
            body["statuses"] = draw(
                st.lists(st.sampled_from(EVENT_STATUSES), min_size=1, max_size=3, unique=True)
            )
        return {"code_on_days": body}
    if kind == "medication_count":
        body = _codes(draw, ["m"]) | {"window": draw(windows), "min_issues": draw(st.integers(1, 3))}
        body.pop("categories", None)
        if draw(st.booleans()):
            body["min_distinct_months"] = draw(st.integers(1, 3))
        body["course"] = draw(st.sampled_from(["any", "repeat", "acute"]))
        if draw(st.booleans()):
            body["statuses"] = draw(
                st.lists(st.sampled_from(ISSUE_STATUSES), min_size=1, max_size=4, unique=True)
            )
        return {"medication_count": body}
    if kind == "latest_code_among":
        return {
            "latest_code_among": {
                "sources": draw(status_sources()),
                "window": draw(windows),
                "status_in": draw(
                    st.lists(st.sampled_from(["in", "out"]), min_size=1, max_size=2, unique=True)
                ),
                "when_none": draw(st.booleans()),
            }
        }
    if kind == "likely_in_work":
        return {
            "likely_in_work": {
                "look_back_months": draw(st.integers(1, 36)),
                "evidence": draw(status_sources()),
                "in_work_statuses": ["in"],
                "unknown": draw(st.sampled_from(["keep", "exclude"])),
            }
        }
    if kind == "already_invited":
        return {"already_invited": {}}
    if kind == "do_not_contact":
        return {"do_not_contact": {"any_study": draw(st.booleans())}}
    raise AssertionError(f"no strategy for the {kind!r} criterion kind: add one here")


def criteria(definitions: list[str]):
    base = (
        leaves()
        if not definitions
        else st.one_of(leaves(), st.sampled_from([{"ref": d} for d in definitions]))
    )
    return st.recursive(
        base,
        lambda inner: st.one_of(
            st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda x: {"not": x}, inner),
        ),
        max_leaves=4,
    )


@st.composite
def rule_sets(draw):
    definitions = {}
    for name in draw(st.lists(st.sampled_from(["d1", "d2"]), max_size=2, unique=True)):
        definitions[name] = draw(criteria(sorted(definitions)))  # refer only to earlier ones: no loops
    names = sorted(definitions)
    steps = [
        {
            "id": f"s{i}",
            "kind": draw(st.sampled_from(["include", "exclude"])),
            "reason": f"reason {i}",
            "criterion": draw(criteria(names)),
        }
        for i in range(draw(st.integers(1, 5)))
    ]
    score = [
        {
            "id": f"c{j}",
            "weight": draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])),
            "why": "w",
            "criterion": draw(criteria(names)),
        }
        for j in range(draw(st.integers(0, 2)))
    ]
    return RuleSet.model_validate(
        {
            "name": "gen",
            "version": "1",
            "study": "instep",
            "definitions": definitions,
            "steps": steps,
            "score": score,
        }
    )


# Kinds that name a record as their evidence: rule sets whose inclusions are made of them give
# candidates something to be explained by (review's explanations are compared on these).
EVIDENCE_KINDS = ["has_code", "code_on_days", "medication_count", "latest_code_among", "likely_in_work"]


@st.composite
def evidence_leaves(draw):
    while True:
        leaf = draw(leaves())
        if next(iter(leaf)) in EVIDENCE_KINDS:
            return leaf


@st.composite
def explained_rule_sets(draw):
    """One to three inclusions built from record criteria (with any / all and a definition), so
    most candidates have evidence, and a score from any criteria."""
    definitions = {"d1": draw(evidence_leaves())}
    inner = st.one_of(evidence_leaves(), st.just({"ref": "d1"}))
    combined = st.one_of(
        inner,
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=2)),
    )
    steps = [
        {"id": f"s{i}", "kind": "include", "reason": f"reason {i}", "criterion": draw(combined)}
        for i in range(draw(st.integers(1, 3)))
    ]
    score = [
        {
            "id": f"c_{j}",
            "weight": draw(st.sampled_from([0.5, 1.0, 2.0])),
            "why": "w",
            "criterion": draw(criteria(["d1"])),
        }
        for j in range(draw(st.integers(0, 2)))
    ]
    return RuleSet.model_validate(
        {
            "name": "gen",
            "version": "1",
            "study": "instep",
            "definitions": definitions,
            "steps": steps,
            "score": score,
        }
    )
