"""Small-number suppression: no hidden count can be worked out from the rest of the report.

The checker here is written apart from recruit.audit.suppress: it derives the report's relations
from the figures' names (totals across practices, entering = kept + excluded, sums across
reasons, ...), attacks the published figures with them, and checks the witnesses the library
offers as proof that each "<8" could have been another number.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from recruit.audit.figures import ALL, Column, PracticeCounts, RunFigures, Step, fill
from recruit.audit.suppress import EXACT, HIDDEN, SMALL, Rule, Shown, Table, protect

# --- the display rule on its own ----------------------------------------------------------------


@given(st.integers(3, 15), st.integers(1, 12), st.integers(0, 500))
def test_every_count_lies_in_the_range_its_display_stands_for(threshold, rounding, n):
    rule = Rule(threshold, rounding)
    shown = rule.show(n)
    low, high = rule.interval(shown)
    assert low <= n <= high
    # the range is exact: its ends show the same, the numbers just outside do not
    assert rule.show(low) == shown and rule.show(int(high)) == shown
    assert low == 0 or rule.show(low - 1) != shown
    assert rule.show(int(high) + 1) != shown


@given(st.integers(3, 15), st.integers(1, 12), st.integers(1, 500))
def test_a_count_above_zero_never_looks_like_zero(threshold, rounding, n):
    shown = Rule(threshold, rounding).show(n)
    assert shown.text != "0" and shown.number != 0
    if n < threshold:
        assert shown.kind == SMALL and shown.text == f"<{threshold}"


def test_zero_is_zero_and_the_defaults_follow_opensafely():
    rule = Rule()
    assert rule.show(0) == Shown(EXACT, "0", 0)
    assert [rule.show(n).text for n in (1, 7, 8, 12, 13, 17, 18, 1234)] == [
        "<8",
        "<8",
        "10",
        "10",
        "15",
        "15",
        "20",
        "1235",
    ]


def test_without_suppression_every_figure_is_exact():
    table = Table()
    table.add("a", 3)
    table.add("b", 4)
    table.add("t", 7)
    table.sum_is("t", ["a", "b"])
    shown = protect(table, Rule(enabled=False)).shown
    assert {k: s.text for k, s in shown.items()} == {"a": "3", "b": "4", "t": "7"}


def test_seven_ones_under_a_small_total_are_protected_by_hiding_one_more_figure():
    # Each of seven practices has 1 and the total is 7: "<8" everywhere would say each is exactly 1.
    table = Table()
    parts = [table.add(f"p{i}", 1) for i in range(7)]
    table.add("total", 7)
    table.sum_is("total", parts)
    result = protect(table, Rule())
    assert len(result.secondary) == 1
    assert all(result.shown[k].kind in (SMALL, HIDDEN) for k in table.values)
    check_report(
        table, Rule(), result.shown, result.witnesses, relations_of=lambda keys: table_relations(table)
    )


def test_a_small_figure_linked_to_nothing_needs_no_help():
    table = Table()
    table.add("alone", 2)
    table.add("a", 3)
    table.add("b", 30)
    table.add("t", 33)
    table.sum_is("t", ["a", "b"])
    result = protect(table, Rule())
    assert result.shown["alone"].text == "<8" and not result.secondary
    assert result.witnesses["alone"]["alone"] != 2


# --- the checker ---------------------------------------------------------------------------------


def table_relations(table: Table) -> list[tuple[dict[str, int], str]]:
    return [(dict(r), "eq") for r in table.relations if not any(k in table.unpublished for k in r)]


def report_relations(keys: set[str]) -> list[tuple[dict[str, int], str]]:
    """Every relation a reader can see between the report's figures, from their names alone:
    (coefficients, "eq" for sum == 0 or "ge" for sum >= 0)."""
    by_column: dict[str, set[str]] = defaultdict(set)
    run = None
    for key in keys:
        run, column, item = key.split("|", 2)
        by_column[column].add(item)
    out: list[tuple[dict[str, int], str]] = []

    def eq(total: str, parts: list[str], column: str, kind: str = "eq") -> None:
        coefs: dict[str, int] = defaultdict(int)
        coefs[f"{run}|{column}|{total}"] += 1
        for part in parts:
            coefs[f"{run}|{column}|{part}"] -= 1
        out.append(({k: c for k, c in coefs.items() if c}, kind))

    for column, items in by_column.items():
        if "searched" not in items:
            continue
        n = len([i for i in items if re.fullmatch(r"step\d+\.excluded", i)])

        def kept(i: int, n: int = n) -> str:
            return "candidates" if i == n - 1 else f"step{i}.kept"

        for i in range(n):
            eq("searched" if i == 0 else kept(i - 1), [kept(i), f"step{i}.excluded"], column)
            eq(f"step{i}.excluded", [f"step{i}.cost"], column, "eq" if i == n - 1 else "ge")
        eq("excluded_by_rules", [f"step{i}.excluded" for i in range(n)], column)
        eq("searched", ["candidates", "excluded_by_rules"], column)
        eq("candidates", ["review.screened", "review.awaiting"], column)
        eq("review.screened", ["review.approved", "review.excluded"], column)
        eq("review.excluded", sorted(i for i in items if i.startswith("review.reason.")), column)
        eq("review.approved", ["letters.invited", "letters.drafted", "letters.not_written"], column)
        eq("letters.not_sent", ["letters.drafted", "letters.not_written"], column)
        eq("letters.invited", ["replies.replied", "replies.none"], column)
        replies = ["replies.interested", "replies.declined", "replies.now_in_work", "replies.other"]
        eq("replies.replied", replies, column)
    refused = sorted(i for i in by_column[ALL] if i.startswith("letters.refused."))
    if refused:  # a reader may guess these add up to those approved but not written to
        eq("letters.not_written", refused, ALL, "guess")
    practices = [c for c in by_column if c != ALL]
    for item in by_column[ALL]:
        if all(item in by_column[p] for p in practices):
            coefs = {f"{run}|{ALL}|{item}": 1} | {f"{run}|{p}|{item}": -1 for p in practices}
            out.append((coefs, "eq"))
    return out


def published_range(rule: Rule, shown: Shown, most: int) -> tuple[int, float]:
    """The true counts that show as `shown`, found by trying them all (not by the library's sums)."""
    if shown.kind == HIDDEN:
        return 0, math.inf
    fits = [n for n in range(most + 1) if rule.show(n) == shown]
    assert fits, shown
    return fits[0], fits[-1]


def attack(ranges: dict[str, list[float]], relations: list[tuple[dict[str, int], str]]) -> None:
    """Subtract figures from totals, over and over, narrowing each figure's range until nothing moves."""
    for _ in range(10_000):
        changed = False
        for coefs, kind in relations:
            for key, c in coefs.items():
                rest = [(k, d) for k, d in coefs.items() if k != key]
                low = sum(d * (ranges[k][0] if d > 0 else ranges[k][1]) for k, d in rest)
                high = sum(d * (ranges[k][1] if d > 0 else ranges[k][0]) for k, d in rest)
                # c*x + rest == 0 (eq) or >= 0 (ge)
                if c > 0:
                    new = (-high if kind == "eq" else -high, -low if kind == "eq" else math.inf)
                else:
                    new = (low if kind == "eq" else -math.inf, high if kind == "eq" else high)
                lo, hi = max(ranges[key][0], new[0]), min(ranges[key][1], new[1])
                if math.isnan(lo) or math.isnan(hi):
                    continue
                if (lo, hi) != tuple(ranges[key]):
                    assert lo <= hi, f"the published figures contradict each other at {key}"
                    ranges[key] = [lo, hi]
                    changed = True
        if not changed:
            return


def check_report(table, rule, shown, witnesses, relations_of=lambda keys: report_relations(keys)):
    truth = {k: v for k, v in table.values.items() if k in shown}
    relations = []
    for coefs, kind in relations_of(set(shown)):  # the checker's relations do hold on the true counts
        total = sum(truth[k] * c for k, c in coefs.items())
        if kind == "guess":
            if total:
                continue
            kind = "eq"
        assert total == 0 if kind == "eq" else total >= 0, coefs
        relations.append((coefs, kind))
    most = max(truth.values(), default=0) + 50
    ranges = {k: list(published_range(rule, s, most)) for k, s in shown.items()}
    for key, value in truth.items():
        assert ranges[key][0] <= value <= ranges[key][1]
        if value > 0:
            assert shown[key].text != "0", key  # a suppressed count never looks like a true zero
    attack(ranges, relations)
    small = [k for k, s in shown.items() if rule.show(truth[k]).kind == SMALL]
    for key in small:
        assert ranges[key][0] < ranges[key][1], f"{key} = {truth[key]} can be worked out: {ranges[key]}"
        # ... and the witness proves more: another complete set of counts shows the same report
        witness = witnesses[key]
        assert witness[key] != truth[key]
        for other, s in shown.items():
            if s.kind == HIDDEN:
                assert witness[other] >= 0
            else:
                assert rule.show(witness[other]) == s, other
        for coefs, kind in relations:
            total = sum(witness[k] * c for k, c in coefs.items())
            assert total == 0 if kind == "eq" else total >= 0, coefs


# --- random flows --------------------------------------------------------------------------------


def split(draw, total: int, parts: int) -> list[int]:
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=parts - 1, max_size=parts - 1)))
    edges = [0, *cuts, total]
    return [b - a for a, b in zip(edges, edges[1:], strict=False)]


@st.composite
def flows(draw):
    n_steps = draw(st.integers(1, 4))
    full = (1 << n_steps) - 1
    reasons = ["deceased_since", "in_work", "safeguarding"][: draw(st.integers(0, 3))]
    size = st.one_of(st.integers(1, 9), st.integers(1, 9), st.integers(1, 60))
    practices = {}
    for p in range(draw(st.integers(1, 4))):
        histogram = draw(st.dictionaries(st.integers(0, full), size, max_size=6))
        histogram[full] = histogram.get(full, 0) + draw(st.integers(0, 30))
        histogram = {m: n for m, n in histogram.items() if n}
        candidates = histogram.get(full, 0)
        screened = draw(st.integers(0, candidates))
        parts = split(draw, screened, len(reasons) + 1)
        approved, by_reason = parts[0], dict(zip(reasons, parts[1:], strict=True))
        invited, drafted, not_written = split(draw, approved, 3)
        none, interested, declined, in_work, other = split(draw, invited, 5)
        letters = {
            "letters.invited": invited,
            "letters.drafted": drafted,
            "letters.not_written": not_written,
            "replies.replied": invited - none,
            "replies.none": none,
            "replies.interested": interested,
            "replies.declined": declined,
            "replies.now_in_work": in_work,
            "replies.other": other,
        }
        practices[f"P{p}"] = PracticeCounts(histogram, screened, by_reason, letters)
    steps = [Step(i, f"s{i}", "include" if i % 2 else "exclude", f"reason {i}") for i in range(n_steps)]
    figures = RunFigures(
        run_id=1,
        provenance={},
        rule_set_text=None,
        steps=steps,
        columns=[Column(ALL, "All"), *(Column(c, c) for c in practices)],
        review_reasons=[],
        refusal_reasons=[],
        extracts=[],
    )
    not_written = sum(c.letters["letters.not_written"] for c in practices.values())
    if draw(st.booleans()):  # the letter runs' reasons for not writing, summing to the total or not
        refusals = dict(zip(["no_address", "deceased"], split(draw, not_written, 2), strict=True))
    else:
        refusals = {"no_address": draw(st.integers(0, 9))}
    fill(figures, practices, refusals)
    rule = draw(st.sampled_from([Rule(), Rule(), Rule(3, 5), Rule(10, 10), Rule(8, 1)]))
    return figures, rule


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows())
def test_no_suppressed_count_can_be_recovered_from_the_others(case):
    figures, rule = case
    result = protect(figures.table, rule)
    assume(any(s.kind == SMALL for s in result.shown.values()))
    check_report(figures.table, rule, result.shown, result.witnesses)


@settings(max_examples=40, deadline=None)
@given(flows())
def test_with_suppression_off_the_figures_are_the_true_counts(case):
    figures, _ = case
    shown = protect(figures.table, Rule(enabled=False)).shown
    assert {k: s.number for k, s in shown.items()} == {
        k: v for k, v in figures.table.values.items() if k not in figures.table.unpublished
    }
