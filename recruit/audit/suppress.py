"""Small-number suppression for the audit report, done so that a hidden count stays hidden.

What trusted research environments do
-------------------------------------
OpenSAFELY redacts every count of 7 or fewer and then rounds every count, totals included, to the
nearest 5, because rounding "broadly protects against secondary disclosure" (a count worked out
by subtracting published figures from a published total):
https://www.opensafely.org/updated-output-checking-processes/ and https://docs.opensafely.org/sdc/
("Row and column totals should be recalculated after you have redacted the cell values, to ensure
that the redacted values can not be inferred from the totals"). The ONS treats a figure that can
be derived from others as disclosive as the figure itself and protects it by secondary
(complementary) suppression, marking hidden figures [c] (ONS policy on protecting confidentiality
in tables of birth and death statistics; GSS guidance on symbols in tables).

What this module does
---------------------
1. Primary suppression, each count on its own: a true 0 is shown as 0; 1 .. threshold-1 is shown
   as "<8"; a larger count is rounded to the nearest `rounding` (halves up), never to less than
   `rounding`, so a small count can never look like a true zero.
2. Every figure is treated alike, totals included: a total is its true value rounded, not the sum
   of rounded parts, so no non-zero published figure is exact.
3. An audit against differencing. The report's figures are tied by equalities (a total is the sum
   of the practices; entering = kept + excluded; screened = approved + excluded at review; ...)
   and inequalities (a step's cost is at most its exclusions), the latter written as equalities
   with an unpublished non-negative slack. Someone reading the report knows each figure only as
   the range of true counts that show that way ("<8" is 1..7, "10" is 8..12, [c] is any count)
   and may combine the relations as often as they like. For every "<8" figure the audit looks for
   a *witness*: a complete set of true counts that satisfies every relation and shows exactly as
   published, in which that figure has a different value. A witness proves the figure cannot be
   recovered from the report by any reasoning over its relations, not only by one subtraction.
   Rounding usually leaves witnesses; when it does not (seven practices each "<8" under a total of
   "<8": each must be 1), a figure linked to the exposed one is hidden as [c] (secondary
   suppression: the smallest first, headline figures last) and the audit runs again.
4. The witness search is a depth-first search that first lets only the figures near the tested one
   move (a witness usually moves a person or two between neighbouring figures), mending broken
   relations first, then widens. It is bounded: a figure for which no witness is found in time is
   treated as exposed, so running out of time can only hide more, never publish a recoverable
   count. The witnesses are returned, and tests check each one against the report on its own.

Limits, said plainly: a figure of `threshold` or more may be narrowed, even pinned, by the
relations; that is allowed since it is publishable on its own. The guarantee covers the published
figures and their relations, not someone who already knows other true counts, nor someone who
reasons about which figures this procedure chose to hide. Two runs shown side by side are each
protected on their own, and their differences are taken between the figures as shown; true counts
shared by two runs (the same people searched twice) are not modelled as relations between them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from recruit.errors import RecruitError

INF = math.inf

EXACT, SMALL, ROUNDED, HIDDEN = "exact", "small", "rounded", "hidden"
HIDDEN_TEXT = "[c]"


@dataclass(frozen=True)
class Shown:
    """How one figure appears in the report: kind, the text shown, and the number if there is one."""

    kind: str
    text: str
    number: int | None


@dataclass(frozen=True)
class Rule:
    """Counts 1..threshold-1 shown as "<threshold", the rest rounded to the nearest `rounding`."""

    threshold: int = 8
    rounding: int = 5
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        if self.threshold < 3:
            raise RecruitError(
                f"--threshold {self.threshold} is too low: it must be 3 or more "
                "(a count shown as '<2' could only be 1)."
            )
        if self.rounding < 1:
            raise RecruitError(f"--rounding {self.rounding} must be 1 (no rounding) or more.")

    def _nearest(self, n: int) -> int:
        base = self.rounding
        return max(base, (n + base // 2) // base * base)

    def show(self, n: int) -> Shown:
        """The figure as published."""
        if n < 0:
            raise ValueError(f"a count cannot be negative: {n}")
        if not self.enabled or n == 0:
            return Shown(EXACT, str(n), n)
        if n < self.threshold:
            return Shown(SMALL, f"<{self.threshold}", None)
        rounded = self._nearest(n)
        return Shown(ROUNDED, str(rounded), rounded)

    def interval(self, shown: Shown) -> tuple[int, float]:
        """Every true count that would be shown this way, as (lowest, highest)."""
        if shown.kind == EXACT:
            assert shown.number is not None
            return shown.number, shown.number
        if shown.kind == SMALL:
            return 1, self.threshold - 1
        if shown.kind == HIDDEN:
            return 0, INF
        assert shown.number is not None
        base, s = self.rounding, shown.number
        smallest = self._nearest(self.threshold)
        low = self.threshold if s == smallest else max(self.threshold, s - base // 2)
        return low, s + (base - base // 2) - 1

    def describe(self) -> str:
        if not self.enabled:
            return "No suppression: every count is exact."
        rounding = "" if self.rounding == 1 else f"; other counts are rounded to the nearest {self.rounding}"
        return (
            f"Counts from 1 to {self.threshold - 1} are shown as <{self.threshold}{rounding}; "
            f"0 means none. {HIDDEN_TEXT} marks a count hidden so that a small number elsewhere "
            "cannot be worked out from it."
        )


HIDDEN_SHOWN = Shown(HIDDEN, HIDDEN_TEXT, None)


@dataclass
class Table:
    """Figures with their true counts, and the relations a reader knows hold between them.

    Each relation is {key: +1 or -1} whose weighted sum is 0. Keys in `unpublished` (slacks
    standing for inequalities) take part in relations but never appear in the report.
    """

    values: dict[str, int] = field(default_factory=dict)
    relations: list[dict[str, int]] = field(default_factory=list)
    unpublished: set[str] = field(default_factory=set)
    headline: set[str] = field(default_factory=set)

    def add(self, key: str, value: int, headline: bool = False) -> str:
        if key in self.values and self.values[key] != value:
            raise ValueError(f"figure {key} given two values")
        self.values[key] = int(value)
        if headline:
            self.headline.add(key)
        return key

    def sum_is(self, total: str, parts: Iterable[str]) -> None:
        """total = sum(parts), checked against the true counts."""
        parts = list(parts)
        relation = {total: -1}
        for part in parts:
            relation[part] = relation.get(part, 0) + 1
        relation = {k: c for k, c in relation.items() if c}
        if sum(self.values[k] * c for k, c in relation.items()) != 0:
            raise ValueError(f"{total} is not the sum of {parts}")
        if relation:  # even total = (nothing): a reader then knows the total is 0
            self.relations.append(relation)

    def at_most(self, small: str, big: str) -> None:
        """small <= big, as big = small + an unpublished slack."""
        slack = f"{small}~slack"
        self.add(slack, self.values[big] - self.values[small])
        if self.values[slack] < 0:
            raise ValueError(f"{small} is more than {big}")
        self.unpublished.add(slack)
        self.sum_is(big, [small, slack])


@dataclass
class Protected:
    """The published figures, which were hidden to protect others, and the proofs."""

    shown: dict[str, Shown]
    secondary: set[str]
    witnesses: dict[str, dict[str, int]]  # small figure -> other true counts showing the same


# --- the audit ------------------------------------------------------------------------------


Range = tuple[float, float]


class _System:
    def __init__(self, table: Table):
        self.relations = [list(r.items()) for r in table.relations]
        self.index: dict[str, list[int]] = {k: [] for k in table.values}
        for i, relation in enumerate(self.relations):
            for key, _ in relation:
                self.index[key].append(i)
        # Bounds can creep by one at a time around an impossible combination that involves a
        # hidden figure; stopping early only leaves ranges wider than they could be.
        self.limit = 4 * len(self.relations) + 100

    def propagate(self, dom: dict[str, Range], todo: Iterable[int] | None = None) -> bool:
        """Narrow each range by every relation until nothing changes; False if they contradict.
        Ranges are replaced, never changed in place, so a copy of `dom` is cheap to keep."""
        queue = list(range(len(self.relations))) if todo is None else list(dict.fromkeys(todo))
        queued = set(queue)
        steps = 0
        while queue:
            r = queue.pop()
            queued.discard(r)
            steps += 1
            if steps > self.limit:  # ranges stay valid, only wider than they could be
                return True
            terms = self.relations[r]
            mins = [dom[k][0] if c > 0 else -dom[k][1] for k, c in terms]
            maxs = [dom[k][1] if c > 0 else -dom[k][0] for k, c in terms]
            min_inf = sum(1 for m in mins if m == -INF)
            max_inf = sum(1 for m in maxs if m == INF)
            min_sum = sum(m for m in mins if m != -INF)
            max_sum = sum(m for m in maxs if m != INF)
            for j, (key, c) in enumerate(terms):
                rest_min = (
                    -INF if min_inf - (mins[j] == -INF) else min_sum - (mins[j] if mins[j] != -INF else 0)
                )
                rest_max = INF if max_inf - (maxs[j] == INF) else max_sum - (maxs[j] if maxs[j] != INF else 0)
                # c * x = -rest
                low, high = (-rest_max, -rest_min) if c > 0 else (rest_min, rest_max)
                old_low, old_high = dom[key]
                new_low, new_high = max(old_low, low), min(old_high, high)
                if new_low > new_high:
                    return False
                if new_low != old_low or new_high != old_high:
                    dom[key] = (new_low, new_high)
                    for other in self.index[key]:
                        if other != r and other not in queued:
                            queue.append(other)
                            queued.add(other)
        return True

    def satisfied(self, values: Mapping[str, float]) -> bool:
        return all(sum(values[k] * c for k, c in terms) == 0 for terms in self.relations)

    def neighbourhoods(self, key: str) -> Iterator[set[str]]:
        """The figures within 1, 2, 3 ... relations of `key`, growing to all it is linked to."""
        if not self.index[key]:  # linked to nothing: any other value in its range will do
            yield {key}
        seen, layer = {key}, {key}
        while layer:
            layer = {other for k in layer for r in self.index[k] for other, _ in self.relations[r]} - seen
            seen |= layer
            if layer:
                yield set(seen)


def _near(value: int, low: float, high: float) -> Iterator[int]:
    """value, value+1, value-1, value+2, ... within [low, high]."""
    if low <= value <= high:
        yield value
    step = 1
    while value + step <= high or value - step >= low:
        if value + step <= high:
            yield value + step
        if value - step >= low:
            yield value - step
        step += 1


def _search(
    system: _System, dom: dict[str, Range], free: list[str], truth: Mapping[str, int], budget: list[int]
) -> dict[str, int] | None:
    """Values for the `free` figures within `dom` satisfying every relation, close to the truth
    (every other figure is already fixed in `dom`).

    A depth-first search that repairs: each step puts every open figure at its true value (or as
    near as its range allows); if a relation is then broken, it branches on a figure of that
    relation, trying first the value that mends it. Complete within its budget."""
    free_set = set(free)
    relations = sorted({r for k in free for r in system.index[k]})
    stack: list[tuple[dict[str, Range], str, Iterator[int]]] = []
    current = dom
    held = {k: int(d[0]) for k, d in dom.items() if k not in free_set}
    while True:
        if budget[0] <= 0:
            return None
        values = dict(held)
        for k in free:
            low, high = current[k]
            values[k] = int(min(max(truth[k], low), high))
        broken = None
        for r in relations:
            residual = sum(values[k] * c for k, c in system.relations[r])
            if residual:
                broken = (r, residual)
                break
        if broken is None:
            return values
        r, residual = broken
        open_keys = [
            (k, c) for k, c in system.relations[r] if k in free_set and current[k][0] != current[k][1]
        ]
        if open_keys:
            key, c = min(open_keys, key=lambda kc: current[kc[0]][1] - current[kc[0]][0])
            low, high = current[key]
            mend = int(min(max(values[key] - residual * c, low), high))
            order = itertools.chain([mend], (v for v in _near(truth[key], low, high) if v != mend))
            stack.append((current, key, order))
        while True:  # the next value of the innermost open choice
            if not stack:
                return None
            parent, key, values_iter = stack[-1]
            value = next(values_iter, None)
            if value is None:
                stack.pop()
                continue
            budget[0] -= 1
            trial = dict(parent)
            trial[key] = (value, value)
            if system.propagate(trial, system.index[key]):
                current = trial
                break


def _witness(
    system: _System, base: dict[str, Range], key: str, truth: Mapping[str, int], budget: int
) -> dict[str, int] | None:
    """True counts showing as published in which `key` differs from its true value, or None.

    Most witnesses move a person or two between neighbouring figures, so the search first lets
    only the figures near `key` change (the rest held at their true values), then widens."""
    fixed = {k: (float(v), float(v)) for k, v in truth.items()}
    # Searching only among counts up to a cap is safe (a witness found is checked in full) and
    # stops ranges creeping towards infinity.
    cap = 2 * max(truth.values(), default=0) + 10
    for free in system.neighbourhoods(key):
        for alternative in _near(truth[key], base[key][0], min(base[key][1], cap)):
            if alternative == truth[key]:
                continue
            trial = dict(fixed)
            trial.update({k: (base[k][0], min(base[k][1], cap)) for k in free})
            trial[key] = (alternative, alternative)
            todo = {r for k in free for r in system.index[k]}
            if not system.propagate(trial, todo):
                continue
            found = _search(system, trial, sorted(free - {key}), truth, [budget])
            if found is not None:
                return found
    return None


def _nearest_partners(system: _System, key: str, can_hide: Callable[[str], bool]) -> set[str]:
    """The figures that can still be hidden nearest to `key` in the web of relations: those sharing
    a relation with it, else with a figure that does, and so on."""
    seen, layer = {key}, {key}
    while layer:
        nxt = {other for k in layer for r in system.index[k] for other, _ in system.relations[r]} - seen
        found = {k for k in nxt if can_hide(k)}
        if found:
            return found
        seen |= nxt
        layer = nxt
    return set()


def protect(table: Table, rule: Rule, budget: int = 3_000) -> Protected:
    """Suppress, round, then hide linked figures until every small figure has a witness."""
    shown = {k: rule.show(v) for k, v in table.values.items() if k not in table.unpublished}
    if not rule.enabled:
        return Protected(shown, set(), {})
    system = _System(table)
    order = {k: i for i, k in enumerate(table.values)}
    small = [k for k, s in shown.items() if s.kind == SMALL]
    secondary: set[str] = set()
    witnesses: dict[str, dict[str, int]] = {}

    def ranges(shown: dict[str, Shown]) -> dict[str, Range]:
        return {k: (0, INF) if k in table.unpublished else rule.interval(shown[k]) for k in table.values}

    def cost(key: str) -> tuple[bool, bool, float, int]:
        # headline figures last, then true zeros (hiding one rarely helps), then the smallest first
        return key in table.headline, shown[key].kind == EXACT, rule.interval(shown[key])[0], order[key]

    while True:
        base = ranges(shown)
        if not system.propagate(base):
            raise AssertionError("the true counts break the report's own relations")
        exposed = []
        for key in small:
            if key in witnesses:  # hiding more only widens the ranges: an old witness still holds
                continue
            found = (
                None if base[key][0] == base[key][1] else _witness(system, base, key, table.values, budget)
            )
            if found is None:
                exposed.append(key)
                continue
            for other in small:
                if found[other] != table.values[other]:
                    witnesses[other] = found
        if not exposed:
            return Protected(shown, secondary, {k: witnesses[k] for k in small})
        hidden_now = False
        touched: set[int] = set()  # relations already loosened this round: re-audit before more
        for key in exposed:
            if touched.intersection(system.index[key]):
                continue
            partners = _nearest_partners(
                system, key, lambda k: k not in table.unpublished and shown[k].kind != HIDDEN
            )
            if not partners:
                continue
            ranked = sorted(partners, key=cost)
            choice = ranked[0]
            if base[key][0] == base[key][1]:  # pinned by subtraction: hide the cheapest figure that frees it
                for candidate in ranked[:12]:
                    trial = ranges({**shown, candidate: HIDDEN_SHOWN})
                    system.propagate(trial)
                    if trial[key][0] < trial[key][1]:
                        choice = candidate
                        break
            shown[choice] = HIDDEN_SHOWN
            secondary.add(choice)
            touched.update(system.index[choice])
            hidden_now = True
        if not hidden_now:
            raise RecruitError(
                "recruit could not hide every small number in this report safely, so it wrote nothing. "
                "Please report this as a fault."
            )
