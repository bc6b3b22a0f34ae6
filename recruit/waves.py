"""Waves that learn: the out-of-work evidence weights fitted to the replies of earlier waves.

The rule file's score weights are a judgement. Once reply slips come back, each one that
answers "Are you in paid work at the moment?" (or ticks "I am now in paid work") says whether the
evidence items that applied to that person pointed the right way. `fit_weights` fits a
regularised (L2) logistic regression of "not in paid work" on those items (0/1 each, kept per
candidate by the search in search_result.score_items), with scikit-learn, starting from the rule
file's judgement (the penalty holds back each item's change from it), and keeps the result as
a new version for the run; the run's next `recruit letters` wave is put in order by the newest
version (`order_wave`).

What it never does: change who may be written to. `recruit.letters.select.classify` decides that
first, on the latest data and every recorded reply (a decline, "do not contact", an invitation);
only the people it leaves are put in a new order. Answers of people who asked not to be contacted
are never used for a fit.

Confidence: 95% intervals from a bootstrap of the replies (the fit repeated on resampled
replies), because a penalised fit has no textbook standard errors.
"""

from __future__ import annotations

import datetime as dt
import getpass
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NotRequired, Protocol, TypedDict, TypeVar

import numpy as np
from sqlalchemy import Connection, Engine, FromClause, and_, exists, func, insert, or_, select
from sqlalchemy.sql.elements import ColumnElement

from recruit.errors import RecruitError
from recruit.models import utcnow
from recruit.query.model import RuleSet
from recruit.search_run import SearchRun
from recruit.tables import INVITATION, RESULT, WEIGHTS

# The refusal rule: at least MIN_ANSWERED answered replies, and at least MIN_EACH saying in paid
# work and MIN_EACH saying not. Fewer cannot tell a real difference from chance for several items.
MIN_ANSWERED = 30
MIN_EACH = 5
# An item held by fewer than MIN_ITEM answered replies (or lacking in fewer) is not learned: it
# keeps (about) its rule-file weight, put on the fitted scale, and has no interval.
MIN_ITEM = 5
# Strength of the penalty (scikit-learn's C: smaller pulls weights harder towards 0).
PENALTY_C = 1.0
# The rule score's column is scaled up by this so the penalty barely touches its coefficient.
SCORE_COLUMN = 10.0
BOOTSTRAP_FITS = 200
METHOD = (
    f"scikit-learn LogisticRegression: the rule score (scaled freely) plus each item's change, "
    f"L2 penalty C={PENALTY_C} on the changes; 95% intervals from {BOOTSTRAP_FITS} bootstrap refits"
)


class TooFewReplies(RecruitError):
    """Not enough answered replies to fit weights; nothing was stored."""


@dataclass(frozen=True)
class ItemWeight:
    item: str
    rule_weight: float
    weight: float
    low: float | None
    high: float | None
    learned: bool
    replies_with: int

    def as_json(self) -> dict[str, float | bool | None]:
        return {
            "rule_weight": self.rule_weight,
            "weight": self.weight,
            "low": self.low,
            "high": self.high,
            "learned": self.learned,
            "replies_with": self.replies_with,
        }


@dataclass(frozen=True)
class FittedWeights:
    run_id: int
    version: int
    items: list[ItemWeight]
    replies_used: int
    in_work: int
    out_of_work: int
    fitted_by: str | None
    fitted_at: dt.datetime
    method: str | None

    def weight_by_bit(self) -> list[float]:
        return [w.weight for w in self.items]


def run_score_items(conn: Connection, run_id: int) -> RuleSet:
    """The rule set stored with the run (its score items, in the order of the bits)."""
    rule_set = SearchRun.load(conn, run_id).rule_set
    if rule_set is None or not rule_set.score:
        raise RecruitError(f"Search run {run_id} has no out-of-work evidence score to learn weights for.")
    return rule_set


def _asked_not_to_be_contacted(inv: FromClause) -> ColumnElement[bool]:
    """The person (by NHS number, in any study) asked not to be contacted."""
    other = INVITATION.alias()
    return exists(
        select(other.c.id).where(
            other.c.nhs_number == inv.c.nhs_number,
            or_(other.c.reply == "do_not_contact", other.c.status == "do_not_contact"),
        )
    )


def answered_replies(conn: Connection, run_id: int) -> list[tuple[int | None, bool]]:
    """(score items, not in paid work) for each invitation of the run whose reply answered the
    in-work question, leaving out everyone who asked not to be contacted (in any study)."""
    inv = INVITATION.alias("inv")
    rows = conn.execute(
        select(RESULT.c.score_items, inv.c.in_work)
        .select_from(
            inv.join(RESULT, and_(RESULT.c.run_id == inv.c.run_id, RESULT.c.patient_id == inv.c.patient_id))
        )
        .where(inv.c.run_id == run_id, inv.c.in_work.is_not(None), ~_asked_not_to_be_contacted(inv))
    ).all()
    return [(r.score_items, not bool(r.in_work)) for r in rows]


def check_enough(n_in_work: int, n_out: int) -> None:
    """The refusal rule, said plainly."""
    answered = n_in_work + n_out
    if answered < MIN_ANSWERED or min(n_in_work, n_out) < MIN_EACH:
        raise TooFewReplies(
            f"Too few replies to learn from: {answered} repl(ies) answered whether the person is in paid "
            f"work ({n_out} not in paid work, {n_in_work} in paid work). recruit needs at least "
            f"{MIN_ANSWERED} answered replies, with at least {MIN_EACH} of each answer, before it "
            "changes the order of letters. Nothing was changed: the next wave keeps the present order."
        )


def _fit_once(x: np.ndarray, y: np.ndarray, old: np.ndarray) -> np.ndarray:
    """One penalised fit; the weights on the log-odds scale.

    The model is logit P(not in paid work) = b + s * (rule score) + sum of d_j * item_j: the rule
    file's order scaled by s, plus a penalised change d_j for each item. The rule score's column is
    multiplied by SCORE_COLUMN so that the penalty barely touches s, which is then learned freely,
    while each d_j is pulled towards 0. So an item few replies had keeps (about) its rule weight on
    the fitted scale, s * rule weight, and the replies move an item only as far as they show."""
    from sklearn.linear_model import LogisticRegression  # only here: a second to import

    design = np.column_stack([x @ old * SCORE_COLUMN, x])
    coef = LogisticRegression(C=PENALTY_C, max_iter=2000).fit(design, y).coef_[0]
    scale = coef[0] * SCORE_COLUMN
    return scale * old + coef[1:]


def fit_items(
    x: np.ndarray, y: np.ndarray, rule_weights: Sequence[float], seed: int = 0
) -> list[tuple[float, float | None, float | None, bool]]:
    """(weight, low, high, learned) per item: the penalised fit of y (1 = not in paid work) on the
    0/1 items x (see _fit_once), with bootstrap 95% intervals. An item fewer than MIN_ITEM
    replies had (or lacked) is not learned: it has no interval, and its weight is essentially its
    rule weight on the fitted scale."""
    n, k = x.shape
    old = np.array([float(w) for w in rule_weights])
    held = x.sum(axis=0)
    learn = [j for j in range(k) if MIN_ITEM <= held[j] <= n - MIN_ITEM]
    weights = _fit_once(x, y, old)
    low: list[float | None] = [None] * k
    high: list[float | None] = [None] * k
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP_FITS):
        idx = rng.integers(0, n, n)
        if y[idx].min() != y[idx].max():
            draws.append(_fit_once(x[idx], y[idx], old))
    if draws:
        lo, hi = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
        for j in learn:
            low[j], high[j] = float(lo[j]), float(hi[j])
    return [(float(weights[j]), low[j], high[j], j in learn) for j in range(k)]


def fit_weights(
    engine: Engine, run_id: int, fitted_by: str | None = None, seed: int = 0
) -> tuple[FittedWeights | None, FittedWeights]:
    """Fit the run's evidence weights to its answered replies and store them as a new version.
    Returns (the version before, or None for the rule file's, and the new one). Raises
    TooFewReplies (storing nothing) when the replies cannot say anything."""
    with engine.begin() as conn:
        rule_set = run_score_items(conn, run_id)
        items = rule_set.score
        rows = answered_replies(conn, run_id)
        if any(mask is None for mask, _ in rows):
            raise RecruitError(
                f"Search run {run_id} was made by an older recruit that did not keep each person's "
                "evidence items, so weights cannot be learned for it. Run the search again; the next "
                "run's letters can then learn from its own replies."
            )
        n_out = sum(out for _, out in rows)
        check_enough(len(rows) - n_out, n_out)
        masks = [mask for mask, _ in rows if mask is not None]
        x = np.array([[(mask >> j) & 1 for j in range(len(items))] for mask in masks], dtype=np.float64)
        y = np.array([int(out) for _, out in rows])
        fitted = fit_items(x, y, [c.weight for c in items], seed)
        before = latest_weights(conn, run_id)
        version = (before.version if before else 0) + 1
        item_weights = [
            ItemWeight(c.id, float(c.weight), w, lo, hi, learned, int(x[:, j].sum()))
            for j, (c, (w, lo, hi, learned)) in enumerate(zip(items, fitted, strict=True))
        ]
        who = fitted_by or _login()
        now = utcnow()
        conn.execute(
            insert(WEIGHTS).values(
                run_id=run_id,
                version=version,
                weights={w.item: w.as_json() for w in item_weights},
                replies_used=len(rows),
                in_work=len(rows) - n_out,
                out_of_work=n_out,
                method=METHOD,
                fitted_by=who,
                fitted_at=now,
            )
        )
    new = FittedWeights(run_id, version, item_weights, len(rows), len(rows) - n_out, n_out, who, now, METHOD)
    return before, new


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def latest_weights(conn: Connection, run_id: int, version: int | None = None) -> FittedWeights | None:
    """The newest fitted version for the run, or the one asked for (None: the rule file's
    weights still rank it)."""
    query = select(WEIGHTS).where(WEIGHTS.c.run_id == run_id)
    if version is not None:
        query = query.where(WEIGHTS.c.version == version)
    row = conn.execute(query.order_by(WEIGHTS.c.version.desc()).limit(1)).first()
    if row is None:
        return None
    stored = row.weights or {}
    items = []
    for c in run_score_items(conn, run_id).score:
        w = stored.get(c.id, {})
        items.append(
            ItemWeight(
                c.id,
                float(c.weight),
                float(w.get("weight", 0.0)),
                w.get("low"),
                w.get("high"),
                bool(w.get("learned", False)),
                int(w.get("replies_with", 0)),
            )
        )
    fitted_at = row.fitted_at
    if isinstance(fitted_at, str):
        fitted_at = dt.datetime.fromisoformat(fitted_at)
    return FittedWeights(
        run_id,
        row.version,
        items,
        row.replies_used,
        row.in_work,
        row.out_of_work,
        row.fitted_by,
        fitted_at,
        row.method,
    )


class _Person(Protocol):
    @property
    def patient_id(self) -> int: ...


T = TypeVar("T", bound=_Person)


class Ranking(TypedDict):
    """What put a wave in order, as the batch records it: score items and weights, no people."""

    by: str  # "rule file" or "fitted"
    weights: dict[str, float]  # score item -> weight
    version: NotRequired[int]  # the fit's, with its date and how many replies it used
    fitted_at: NotRequired[str]
    replies_used: NotRequired[int]


def order_wave(
    conn: Connection, run_id: int, eligible: Sequence[T], patient_id: Callable[[T], int] | None = None
) -> tuple[list[T], Ranking]:
    """The people who may be written to, in the order of the run's newest fitted weights (ties,
    and everyone when there is no fit, keep the search's order), and what ranked them: score
    items and weights only, for the batch record and the audit (no patient identifiers)."""
    key = patient_id or (lambda c: c.patient_id)
    fitted = latest_weights(conn, run_id) if _has_weights(conn, run_id) else None
    # (checked first: a run without a fit may have no stored rules to read)
    if fitted is None:
        try:
            weights = {c.id: float(c.weight) for c in run_score_items(conn, run_id).score}
        except RecruitError:
            weights = {}
        return list(eligible), Ranking(by="rule file", weights=weights)
    by_bit = fitted.weight_by_bit()
    masks: dict[int, int | None] = {}
    ids = [key(c) for c in eligible]
    for i in range(0, len(ids), 500):
        for pid, mask in conn.execute(
            select(RESULT.c.patient_id, RESULT.c.score_items).where(
                RESULT.c.run_id == run_id, RESULT.c.patient_id.in_(ids[i : i + 500])
            )
        ):
            masks[pid] = mask

    def learned_score(c: T) -> float:
        mask = masks.get(key(c))
        if mask is None:
            return -math.inf
        return sum(w for j, w in enumerate(by_bit) if mask >> j & 1)

    order = sorted(range(len(eligible)), key=lambda i: (-learned_score(eligible[i]), i))
    ranking = Ranking(
        by="fitted",
        version=fitted.version,
        fitted_at=fitted.fitted_at.isoformat(),
        replies_used=fitted.replies_used,
        weights={w.item: round(w.weight, 4) for w in fitted.items},
    )
    return [eligible[i] for i in order], ranking


def _has_weights(conn: Connection, run_id: int) -> bool:
    return bool(conn.execute(select(func.count()).where(WEIGHTS.c.run_id == run_id)).scalar())


# --- what ranks the next wave ------------------------------------------------------------------


@dataclass(frozen=True)
class RunWeights:
    """What will rank a run's next wave, as data for `recruit waves show` (worded by
    recruit.cli_render): the newest fit and the one before it, or, with no fit yet, the rule
    file's (item, weight) pairs in the order of the bits."""

    run_id: int
    fitted: FittedWeights | None
    earlier: FittedWeights | None = None
    rule_weights: tuple[tuple[str, float], ...] = ()


def run_weights(conn: Connection, run_id: int) -> RunWeights:
    """The weights that will rank the run's next wave, and the version before them."""
    fitted = latest_weights(conn, run_id)
    if fitted is None:
        rule_set = run_score_items(conn, run_id)
        return RunWeights(run_id, None, rule_weights=tuple((c.id, float(c.weight)) for c in rule_set.score))
    earlier = latest_weights(conn, run_id, fitted.version - 1) if fitted.version > 1 else None
    return RunWeights(run_id, fitted, earlier)
