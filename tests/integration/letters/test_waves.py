"""Waves that learn (issue 19): evidence weights fitted to the replies of wave 1 put wave 2 in a new
order, and nothing else: the same people may be written to, declines and "do not contact" hold
whatever the fit, too few replies are refused, and the audit says which weights ordered each wave."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, update

from recruit.audit.report import build_report, render_html, wave_rankings
from recruit.audit.suppress import Rule
from recruit.cli_render import format_fit
from recruit.letters.batch import _letter_codelists, write_letters
from recruit.letters.select import classify
from recruit.letters.study import load_study_settings
from recruit.models import Invitation, SearchResult, SearchRun
from recruit.query.run import store_codelists
from recruit.replies import import_replies
from recruit.tables import WEIGHTS
from recruit.waves import (
    MIN_ANSWERED,
    MIN_EACH,
    TooFewReplies,
    check_enough,
    fit_items,
    fit_weights,
    order_wave,
)
from tests.integration.letters.builders import ROOT, STUDY_FILE, Person, build, invited

INSTEP = (ROOT / "rules" / "instep.yaml").read_text(encoding="utf-8")
# Bits of search_result.score_items, in the order of rules/instep.yaml's score (by item id, so
# the test follows the rule file when items are added).
SCORE_IDS = [item["id"] for item in yaml.safe_load(INSTEP)["score"]]
FIT_NOTE, NO_STATUS = 1 << SCORE_IDS.index("not_fit_note_3_months"), 1 << SCORE_IDS.index("no_recent_status")


# --- the fit on simulated replies whose true weights are known ---------------------------------------

TRUE = np.array([1.5, 0.5, 1.0, -0.8, 0.0, -1.2])
INTERCEPT = 0.2
# Stated error: with 4,000 answered replies, each recovered weight within 0.3 (log odds) of the true
# one; the penalty (C=1) shrinks by far less than that at this size.
ERROR = 0.3


def simulate(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.random((n, len(TRUE))) < 0.35).astype(float)
    p = 1 / (1 + np.exp(-(INTERCEPT + x @ TRUE)))
    return x, (rng.random(n) < p).astype(int)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fit_recovers_known_weights_within_the_stated_error(seed):
    x, y = simulate(seed, 4000)
    fitted = fit_items(x, y, [3, 1, 2, 1, 0.5, 0.5], seed=seed)
    weights = np.array([w for w, *_ in fitted])
    assert np.all(np.abs(weights - TRUE) < ERROR), weights
    assert all(learned for *_, learned in fitted)
    # The 95% intervals hold the true weight (all but at most one of six, allowing for chance).
    covered = sum(low <= t <= high for (_, low, high, _), t in zip(fitted, TRUE, strict=True))
    assert covered >= 5


def test_an_item_too_rare_to_learn_keeps_its_rule_weight_on_the_new_scale():
    x, y = simulate(7, 600)
    x[:, 2] = 0
    x[:3, 2] = 1  # only 3 replies had item 2
    fitted = fit_items(x, y, [3, 1, 2, 1, 0.5, 0.5])
    weight, low, high, learned = fitted[2]
    assert not learned and low is None and high is None
    assert weight >= 0  # the rule weight (2) times a scale that is never negative


def test_refusal_rule_fewer_than_30_answered_or_fewer_than_5_of_either_answer():
    check_enough(n_in_work=MIN_EACH, n_out=MIN_ANSWERED - MIN_EACH)
    for n_in, n_out in ((10, MIN_ANSWERED - 11), (MIN_EACH - 1, 100), (100, MIN_EACH - 1), (0, 0)):
        with pytest.raises(TooFewReplies, match="at least 30 answered replies, with at least 5 of each"):
            check_enough(n_in_work=n_in, n_out=n_out)


# --- wave 1, replies, fit, wave 2, on the database ---------------------------------------------------


def people() -> list[Person]:
    """1..70 approved, ranked by id (the rule file's order): odd ids have a recent not-fit-for-work
    note, even ids no work record. 71 and 72 (no work record) asked another study not to contact them."""
    return [Person(i) for i in range(1, 71)] + [Person(i, do_not_contact_elsewhere=True) for i in (71, 72)]


def in_work_truth(pid: int) -> bool:
    """Replies drawn from a truth opposite to the rule file's: a fit note mostly means a job."""
    return pid % 10 not in (1, 7) if pid % 2 else pid % 10 == 4


def give_items(engine, run_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(update(SearchRun.__table__).where(SearchRun.id == run_id).values(rule_set_text=INSTEP))
        for pid in range(1, 73):
            conn.execute(
                update(SearchResult.__table__)
                .where(SearchResult.run_id == run_id, SearchResult.patient_id == pid)
                .values(score_items=FIT_NOTE if pid % 2 and pid <= 70 else NO_STATUS)
            )


def reply(engine, tmp_path, rows: list[tuple[int, str, str]]) -> None:
    numbers = {pid: inv["study_number"] for pid, inv in invited(engine).items()}
    today = dt.date.today()
    text = "study number,reply,date,in paid work\n" + "".join(
        f"{numbers[pid]},{answer},{today.isoformat()},{work}\n" for pid, answer, work in rows
    )
    path = tmp_path / "replies.csv"
    path.write_text(text, encoding="utf-8")
    import_replies(engine, path, today=today)


def eligible_ids(engine, run_id: int) -> list[int]:
    settings = load_study_settings(STUDY_FILE)
    opt_out, accessible = _letter_codelists(settings, STUDY_FILE)
    with engine.begin() as conn:
        stored = store_codelists(conn, {"opt_out": opt_out, "accessible": accessible})
        study_id = conn.execute(select(SearchRun.study_id).where(SearchRun.id == run_id)).scalar_one()
        found = classify(conn, run_id, study_id, [stored["opt_out"]], [stored["accessible"]])
        ordered, _ = order_wave(conn, run_id, found.eligible)
    return [c.patient_id for c in ordered]


def test_wave_two_is_ordered_by_the_fit_and_writes_to_nobody_new(engine, tmp_path):
    world = build(engine, people())
    run_id = world.run_id
    give_items(engine, run_id)
    first = write_letters(engine, run_id, tmp_path / "wave1", limit=40, study_file=STUDY_FILE, workers=1)
    wave1 = set(invited(engine, first.batch_id))
    assert wave1 == set(range(1, 41))

    # Too few answers so far: refused, nothing stored, the order unchanged.
    reply(
        engine,
        tmp_path,
        [(pid, "not interested", "yes" if in_work_truth(pid) else "no") for pid in range(1, 11)],
    )
    with pytest.raises(TooFewReplies, match="Too few replies"):
        fit_weights(engine, run_id, fitted_by="test")
    with engine.connect() as conn:
        assert conn.execute(select(WEIGHTS)).first() is None

    rows = []
    for pid in range(1, 39):
        answer = "interested" if pid % 3 else "not interested"
        rows.append((pid, answer, "yes" if in_work_truth(pid) else "no"))
    rows += [(39, "do not contact", "no"), (40, "do not contact", "")]
    reply(engine, tmp_path, rows)
    with engine.begin() as conn:
        # Even an answer stored against a "do not contact" reply (by hand) is never used.
        conn.execute(update(Invitation.__table__).where(Invitation.patient_id == 40).values(in_work=True))

    before_fit = eligible_ids(engine, run_id)
    was, fitted = fit_weights(engine, run_id, fitted_by="trial manager")
    assert was is None and fitted.version == 1 and fitted.fitted_by == "trial manager"
    assert fitted.replies_used == 38  # 39 and 40 asked not to be contacted
    weights = {w.item: w for w in fitted.items}
    assert weights["no_recent_status"].weight > weights["not_fit_note_3_months"].weight
    assert weights["no_recent_status"].learned and not weights["out_of_work_benefit"].learned
    text = format_fit(was, fitted)
    assert "rule file" in text and "95% interval" in text and "not fit note 3 months" in text

    # Eligibility is untouched: the same people, in another order.
    after_fit = eligible_ids(engine, run_id)
    assert sorted(after_fit) == sorted(before_fit) == list(range(41, 71))
    assert after_fit[:15] == list(range(42, 71, 2))

    second = write_letters(engine, run_id, tmp_path / "wave2", limit=10, study_file=STUDY_FILE, workers=1)
    wave2 = set(invited(engine, second.batch_id))
    assert wave2 == set(range(42, 61, 2))  # the ten strongest by the fitted weights
    assert not wave2 & wave1 and not wave2 & {71, 72}
    # A second fit is a new version; declined and "do not contact" people still never get a letter.
    _, refit = fit_weights(engine, run_id, fitted_by="trial manager")
    assert refit.version == 2
    third = write_letters(engine, run_id, tmp_path / "wave3", study_file=STUDY_FILE, workers=1)
    wave3 = set(invited(engine, third.batch_id))
    assert wave3 == set(range(41, 71)) - wave2
    everyone = invited(engine)
    assert {71, 72}.isdisjoint(everyone)
    assert sum(1 for inv in everyone.values() if inv["patient_id"] in (39, 40)) == 2  # wave 1 only

    with engine.connect() as conn:
        waves = wave_rankings(conn, run_id)
    assert [w["ranked_by"] for w in waves] == [
        "rule file",
        "weights fitted to replies, version 1",
        "weights fitted to replies, version 2",
    ]
    assert waves[1]["weights"]["no_recent_status"] == pytest.approx(
        weights["no_recent_status"].weight, abs=1e-3
    )
    assert waves[0]["weights"]["unemployed_or_sick_status"] == 3
    report = build_report(engine, [run_id], Rule())
    html = render_html(report)
    assert "Which weights put each wave of letters in order" in html
    assert "weights fitted to replies, version 1" in html and "no recent status" in html
    for p in world.people.values():
        assert p.nhs_number not in html
    assert "Example" not in html  # every test patient's family name
    assert report.data()["runs"][0]["wave_rankings"][2]["weights"]


# --- whatever the weights, the order is a permutation: nobody added, nobody dropped --------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    masks=st.lists(st.integers(0, (1 << len(SCORE_IDS)) - 1), min_size=1, max_size=25),
    weights=st.lists(st.floats(-5, 5, allow_nan=False), min_size=len(SCORE_IDS), max_size=len(SCORE_IDS)),
)
def test_any_fitted_weights_only_reorder_the_people_given(sqlite_engine, masks, weights):
    world = build(sqlite_engine, [Person(i + 1) for i in range(len(masks))])
    with sqlite_engine.begin() as conn:
        conn.execute(
            update(SearchRun.__table__).where(SearchRun.id == world.run_id).values(rule_set_text=INSTEP)
        )
        for pid, mask in enumerate(masks, start=1):
            conn.execute(
                update(SearchResult.__table__)
                .where(SearchResult.run_id == world.run_id, SearchResult.patient_id == pid)
                .values(score_items=mask)
            )
        items = [c["id"] for c in yaml.safe_load(INSTEP)["score"]]
        conn.execute(
            insert(WEIGHTS).values(
                run_id=world.run_id,
                version=1,
                weights={item: {"weight": w} for item, w in zip(items, weights, strict=True)},
                replies_used=30,
                in_work=15,
                out_of_work=15,
                fitted_at=dt.datetime.now(dt.UTC),
            )
        )
        people = [Candidate(pid) for pid in range(1, len(masks) + 1)]
        ordered, ranking = order_wave(conn, world.run_id, people)
    assert sorted(c.patient_id for c in ordered) == [c.patient_id for c in people]
    learned = [sum(w for j, w in enumerate(weights) if masks[c.patient_id - 1] >> j & 1) for c in ordered]
    assert learned == sorted(learned, reverse=True)
    assert ranking["by"] == "fitted" and ranking["version"] == 1


@dataclass(frozen=True)
class Candidate:
    patient_id: int
