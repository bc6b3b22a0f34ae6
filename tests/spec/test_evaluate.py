"""recruit evaluate: a run compared with the made-up truth, by NHS number.

A hand-built case whose every figure is known, then a small synthetic population run through
the InSTEP rules, whose figures must add up and agree with the truth file read directly.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select

import synthetic_ehr
from recruit.cli_render import evaluation_summary, render_evaluation
from recruit.errors import RecruitError
from recruit.evaluation.ceiling import CeilingFeatures, ceiling_by_wave, load_ceiling_features
from recruit.evaluation.judge import NOT_IN_RECORDS, evaluate_run, write_json
from recruit.load import load_extract
from recruit.models import Patient, SearchResult
from recruit.query.run import run_search
from synthetic_ehr.truth_columns import TRUTH_HEADER
from tests.search_helpers import (
    Population,
    fresh_engine,
    make_codelist,
    rule_set,
    run_engine,
)

ROOT = Path(__file__).resolve().parents[2]
INDEX = dt.date(2025, 6, 30)
D = dt.date


def write_truth(path: Path, rows: list[dict[str, str]], extract_date: dt.date | None = None) -> Path:
    """A truth.csv in the generator's layout (unnamed columns left empty)."""
    path.mkdir(parents=True, exist_ok=True)
    with (path / "truth.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, TRUTH_HEADER, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({"practice_ods": "A00001", **row})
    if extract_date is not None:
        (path / "params.json").write_text(json.dumps({"params": {"extract_date": extract_date.isoformat()}}))
    return path / "truth.csv"


def person(nhs: str, eligible: bool, in_work: bool, **more: str) -> dict[str, str]:
    flag = {True: "true", False: "false"}
    return {
        "nhs_number": nhs,
        "eligible_ips": flag[eligible],
        "in_work_at_extract": flag[in_work],
        "employment_at_extract": "employed_full_time" if in_work else "unemployed",
        **more,
    }


CODELISTS = {
    "pain": make_codelist("pain", [("snomedct", "82423001")]),
    "work": make_codelist(
        "work", [("snomedct", "224363007", "employed"), ("snomedct", "73438004", "unemployed")]
    ),
}
RULES = rule_set(
    [
        {"id": "registered", "kind": "include", "reason": "registered", "criterion": {"registered": None}},
        {"id": "pain", "kind": "include", "reason": "pain", "criterion": {"has_code": {"codelist": "pain"}}},
        {
            "id": "in_work",
            "kind": "exclude",
            "reason": "in work",
            "criterion": {"has_code": {"codelist": "work", "categories": ["employed"]}},
        },
    ],
    score=[
        {
            "id": "unemployed",
            "weight": 2,
            "why": "unemployed code",
            "criterion": {"has_code": {"codelist": "work", "categories": ["unemployed"]}},
        }
    ],
)


def hand_built() -> tuple[Population, list[dict[str, str]]]:
    pop = Population()
    nhs = {pid: f"94000000{pid:02d}" for pid in range(1, 11)}
    for pid in range(1, 8):
        pop.add_patient(pid, nhs_number=nhs[pid])
    pop.add_patient(10, nhs_number=None)  # no NHS number: cannot be matched
    for pid in (1, 2, 3, 5, 6, 7, 10):
        pop.add_event(pid, D(2024, 1, 1), "snomedct", "82423001")
    pop.add_event(1, D(2025, 1, 1), "snomedct", "73438004")  # 1: unemployed code, top of the list
    pop.add_event(5, D(2023, 1, 1), "snomedct", "224363007")  # 5: employed code, out of date
    pop.add_event(6, D(2025, 1, 1), "snomedct", "224363007")  # 6: employed code, true
    pop.patients[6]["registration_end"] = D(2024, 1, 1)  # 7: left the practice
    truth = [
        person(nhs[1], eligible=True, in_work=False),  # invited, eligible
        person(nhs[2], eligible=False, in_work=True),  # invited, in work
        person(
            nhs[3], eligible=False, in_work=False, employment_at_extract="retired"
        ),  # invited, not eligible
        person(nhs[4], eligible=True, in_work=False),  # missed at pain (never coded)
        person(nhs[5], eligible=True, in_work=False),  # missed at in_work
        person(nhs[6], eligible=False, in_work=True),  # rightly left out at in_work
        person(nhs[7], eligible=False, in_work=True),  # left out at registered
        person(nhs[8], eligible=True, in_work=False),  # eligible, not in the records at all
        person(nhs[9], eligible=True, in_work=False, registration_start="2026-01-01"),  # joined later
        person("9400000099", eligible=True, in_work=False, practice_ods="B00002"),  # another practice
    ]
    return pop, truth


def test_a_hand_built_case_gives_exactly_the_known_figures(engine, tmp_path):
    pop, truth = hand_built()
    run = run_engine(engine, pop, RULES, CODELISTS, INDEX, practice="A00001")
    path = write_truth(tmp_path / "truth", truth, extract_date=INDEX)

    ev = evaluate_run(engine, run.run_id, path)

    assert (ev.invited, ev.invited_in_work, ev.invited_not_in_work, ev.invited_unknown) == (3, 1, 2, 0)
    assert ev.invited_eligible == 1 and ev.precision == pytest.approx(1 / 3)
    assert (ev.eligible_total, ev.eligible_missed, ev.eligible_not_in_records) == (4, 3, 1)
    assert ev.recall == pytest.approx(1 / 4)
    assert ev.missed_by_step() == {NOT_IN_RECORDS: 1, "pain": 1, "in_work": 1}
    assert ev.invited_by_state == {"unemployed": 1, "employed_full_time": 1, "retired": 1}
    assert ev.people == 7 and ev.people_without_truth == 0 and ev.records_without_nhs_number == 1
    steps = {s.step_id: s for s in ev.steps}
    assert [(s.excluded, s.eligible_excluded, s.in_work_excluded) for s in ev.steps] == [
        (1, 0, 1),
        (1, 1, 0),
        (2, 1, 1),
    ]
    assert (steps["in_work"].eligible_cost, steps["in_work"].in_work_cost) == (1, 1)
    assert (steps["pain"].eligible_failing_alone, steps["pain"].eligible_cost) == (1, 1)
    # Ranked: 1 (score 2) first, then 2 and 3 tied (2 first, by NHS number).
    waves = {w.label: (w.invited, w.in_work, w.eligible, w.precision, w.recall) for w in ev.waves}
    assert waves == {
        "top 10%": (1, 0, 1, 1.0, 0.25),
        "top 25%": (1, 0, 1, 1.0, 0.25),
        "top 50%": (2, 1, 1, 0.5, 0.25),
        "all": (3, 1, 1, pytest.approx(1 / 3), 0.25),
    }
    assert [w.lowest_score for w in ev.waves] == [2.0, 2.0, 0.0, 0.0]
    notes = " ".join(ev.notes)
    assert "1 people eligible on the extract date were not registered" in notes
    assert "no NHS number" in notes and "practice A00001" in notes


def test_figures_are_written_as_json_and_said_in_words(sqlite_url, tmp_path):
    engine = fresh_engine(sqlite_url)
    pop, truth = hand_built()
    run = run_engine(engine, pop, RULES, CODELISTS, INDEX)
    path = write_truth(tmp_path / "truth", truth, extract_date=D(2025, 7, 31))
    ev = evaluate_run(engine, run.run_id, tmp_path / "truth")  # the folder will do
    write_json(ev, tmp_path / "ev.json")
    data = json.loads((tmp_path / "ev.json").read_text())
    assert data["invited"]["total"] == 3 and data["invited"]["in_work"] == 1
    # Without a practice filter the other practice's eligible person counts as not in the records.
    assert data["eligible"]["total"] == 5 and data["eligible"]["missed_by_step"][NOT_IN_RECORDS] == 2
    assert [w["label"] for w in data["waves"]] == ["top 10%", "top 25%", "top 50%", "all"]
    assert data["truth"]["extract_date"] == "2025-07-31"
    assert str(path) == data["truth"]["file"]
    text = "\n".join(evaluation_summary(ev))
    assert "3 people would be invited" in text and "1 of them are in paid work (33%)" in text
    assert "misses 4" in text and "2 not in the loaded records" in text
    assert any("describes people on 2025-07-31" in n for n in ev.notes)
    assert len(render_evaluation(ev)) >= 3
    engine.dispose()


def test_a_wrong_truth_file_or_run_is_one_plain_message(engine, tmp_path):
    pop, _ = hand_built()
    run = run_engine(engine, pop, RULES, CODELISTS, INDEX)
    other = write_truth(tmp_path / "other", [person("9999999999", eligible=True, in_work=False)])
    with pytest.raises(RecruitError, match="None of the NHS numbers in search run"):
        evaluate_run(engine, run.run_id, other)
    with pytest.raises(RecruitError, match="There is no search run 999"):
        evaluate_run(engine, 999, other)
    with pytest.raises(RecruitError, match="No truth file"):
        evaluate_run(engine, run.run_id, tmp_path / "nowhere")
    bad = tmp_path / "bad.csv"
    bad.write_text("nhs_number,eligible\n9400000001,true\n")
    with pytest.raises(RecruitError, match="has no column eligible_ips, in_work_at_extract"):
        evaluate_run(engine, run.run_id, bad)
    twice = write_truth(
        tmp_path / "twice", [person("9400000001", True, False), person("9400000001", True, False)]
    )
    with pytest.raises(RecruitError, match="names an NHS number more than once"):
        evaluate_run(engine, run.run_id, twice)
    _, truth = hand_built()
    assert evaluate_run(engine, run.run_id, write_truth(tmp_path / "good", truth)).invited == 3


# --- the ceiling: the best ranking the records allow, on a case worked out by hand -------------

FIT_NOTE = make_codelist("fit", [("snomedct", "1331000000103", "not_fit_for_work")])
CEILING = CeilingFeatures(
    rule_set(
        [{"id": "everyone", "kind": "include", "reason": "everyone", "criterion": {"alive": None}}],
        score=[
            {
                "id": "unemployed_code",
                "weight": 1,
                "why": "same as the run's score",
                "criterion": {"has_code": {"codelist": "work", "categories": ["unemployed"]}},
            },
            {
                "id": "fit_note",
                "weight": 1,
                "why": "a fit note",
                "criterion": {"has_code": {"codelist": "fit"}},
            },
        ],
    ),
    {"work": CODELISTS["work"], "fit": FIT_NOTE},
)


def test_the_ceiling_on_ten_candidates_in_three_groups_is_known_by_hand(engine, tmp_path):
    """10 candidates, 5 truly eligible, in 3 groups by their records:
    A: an unemployed code (the run's score 2), 2 people, 1 eligible (rate 1/2);
    B: a fit note (score 0), 3 people, 3 eligible (rate 1);
    C: neither (score 0), 5 people, 1 eligible (rate 1/5).
    The run ranks A first (the score knows nothing of fit notes), then B and C tied, by NHS
    number: A's ineligible person first. The best ranking is B, A, C: waves of 1, 3, 5 and 10
    letters reach 1/1, 3/3, (3 + 2 x 1/2)/5 = 0.8 and 5/10 eligible people."""
    pop = Population()
    eligible = {
        1: False,
        2: True,
        3: True,
        4: True,
        5: True,
        6: True,
        7: False,
        8: False,
        9: False,
        10: False,
    }
    nhs = {pid: f"95000000{pid:02d}" for pid in eligible}
    for pid in eligible:
        pop.add_patient(pid, nhs_number=nhs[pid])
        pop.add_event(pid, D(2024, 1, 1), "snomedct", "82423001")  # pain: everyone is a candidate
    for pid in (1, 2):  # A
        pop.add_event(pid, D(2025, 1, 1), "snomedct", "73438004")
    for pid in (3, 4, 5):  # B
        pop.add_event(pid, D(2025, 2, 1), "snomedct", "1331000000103")
    truth = [person(nhs[pid], eligible=e, in_work=not e) for pid, e in eligible.items()]
    run = run_engine(engine, pop, RULES, {**CODELISTS, "fit": FIT_NOTE}, INDEX)
    path = write_truth(tmp_path / "truth", truth, extract_date=INDEX)

    ev = evaluate_run(engine, run.run_id, path, ceiling=CEILING)

    assert ev.invited == 10 and ev.invited_eligible == 5
    assert [w.invited for w in ev.waves] == [1, 3, 5, 10]
    # The run: 1 (A, not eligible), then 2 (A), then 3, 4, 5 (B), 6 (C), ... by NHS number.
    assert [w.precision for w in ev.waves] == [0.0, pytest.approx(2 / 3), 0.8, 0.5]
    assert [w.ceiling for w in ev.waves] == [1.0, 1.0, pytest.approx(0.8), pytest.approx(0.5)]
    assert ev.ceiling_groups == 3
    assert ev.ceiling_features == ["the run's score", "unemployed_code", "fit_note"]
    data = ev.to_json()
    assert [w["ceiling"] for w in data["waves"]] == [1.0, 1.0, 0.8, 0.5]
    assert data["ceiling"]["groups"] == 3 and data["ceiling"]["people_in_small_groups"] == 10
    assert sorted((n, e) for n, e, _ in ev.ceiling_by_features) == [(2, 1), (3, 3), (5, 1)]
    assert any("10 of the 10 people invited are in groups of fewer than 10" in n for n in ev.notes)
    assert "best possible" in "\n".join(evaluation_summary(ev))


def test_the_ceiling_can_rank_groups_by_a_shrunk_rate_and_counts_their_real_one():
    """Groups (people, eligible): a lucky group of one, 8 of 10, 0 of 10; overall 9/21.
    By raw share (the default) the group of one comes first; shrunk by 10 people at 9/21 it scores
    (1 + 90/21)/11 = 0.48, below (8 + 90/21)/20 = 0.61, so the 8-of-10 group leads."""
    groups = [(1, 1), (10, 8), (10, 0)]
    assert ceiling_by_wave(groups, [1, 2, 11, 21]) == [1.0, 0.9, pytest.approx(9 / 11), 9 / 21]
    assert ceiling_by_wave(groups, [1, 2, 11, 21], prior=10) == [0.8, 0.8, pytest.approx(9 / 11), 9 / 21]
    assert ceiling_by_wave([], [0]) == [None]


def test_the_default_ceiling_features_load_with_their_codelists():
    features = load_ceiling_features()
    assert "latest_status_out_of_work_12_months" in features.names and "chronic_pain_coded" in features.names
    assert {"employment_status", "fit_note", "benefits", "opioids", "chronic_pain"} <= set(features.codelists)


# --- a small synthetic population through the InSTEP rules ------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthetic_ehr.generate(out, practices=2, patients=3000, seed=5, formats=("ndjson",), workers=1)
    return out


def read_truth(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {r["nhs_number"]: r for r in csv.DictReader(fh)}


def test_instep_on_a_synthetic_population_adds_up_and_agrees_with_the_truth(db_url, synthetic):
    engine = fresh_engine(db_url)
    load_extract(engine, [synthetic / "fhir"])
    run_id = run_search(engine, ROOT / "rules" / "instep.yaml", dt.date(2026, 11, 1))
    ev = evaluate_run(engine, run_id, synthetic / "truth" / "truth.csv")

    truth = read_truth(synthetic / "truth" / "truth.csv")
    with engine.connect() as conn:
        rows = conn.execute(
            select(Patient.nhs_number, SearchResult.outcome)
            .join(Patient, Patient.id == SearchResult.patient_id)
            .where(SearchResult.run_id == run_id)
        ).all()
    candidates = [nhs for nhs, outcome in rows if outcome == "candidate"]

    # Against the truth file read directly.
    assert [n for n in ev.notes if "best possible" not in n] == []  # only the note on small groups
    assert ev.people == len(truth) == len(rows)
    assert ev.invited == len(candidates) > 0
    assert ev.invited_in_work == sum(truth[n]["in_work_at_extract"] == "true" for n in candidates)
    assert ev.invited_eligible == sum(truth[n]["eligible_ips"] == "true" for n in candidates)
    assert ev.eligible_total == sum(r["eligible_ips"] == "true" for r in truth.values())
    # The figures add up.
    assert ev.invited_in_work + ev.invited_not_in_work == ev.invited and ev.invited_unknown == 0
    assert ev.invited_eligible + ev.eligible_missed == ev.eligible_total
    assert sum(ev.missed_by_step().values()) == ev.eligible_missed
    assert sum(s.excluded for s in ev.steps) + ev.invited == ev.people
    assert sum(ev.invited_by_state.values()) == ev.invited
    for s in ev.steps:
        assert s.eligible_excluded + s.in_work_excluded <= s.excluded  # nobody both in work and eligible
        assert s.eligible_excluded <= s.eligible_failing_alone
    # Waves grow, and the last is the whole candidate list.
    for before, after in zip(ev.waves, ev.waves[1:], strict=False):
        assert before.invited <= after.invited
        assert before.in_work <= after.in_work and before.eligible <= after.eligible
    last = ev.waves[-1]
    assert (last.label, last.invited, last.in_work, last.eligible) == (
        "all",
        ev.invited,
        ev.invited_in_work,
        ev.invited_eligible,
    )
    assert last.precision == ev.precision and last.recall == ev.recall
    # The ceiling re-orders the same people: the whole list's is the run's own precision, and
    # it never falls as waves shrink (the best groups come first).
    assert last.ceiling == pytest.approx(ev.precision)
    ceilings = [w.ceiling for w in ev.waves]
    assert all(a >= b - 1e-9 for a, b in zip(ceilings, ceilings[1:], strict=False))
    assert sum(n for n, _, _ in ev.ceiling_by_features) == ev.invited
    engine.dispose()


def test_a_person_with_two_records_counts_once_where_they_got_furthest(engine, tmp_path):
    pop, truth = hand_built()
    # Patient 7 left the practice; the same person (same NHS number) is now on the list again
    # under another record, with no pain code: they count once, at the pain step.
    pop.add_patient(11, nhs_number=pop.patients[6]["nhs_number"], source_id="p7-new")
    run = run_engine(engine, pop, RULES, CODELISTS, INDEX, practice="A00001")
    ev = evaluate_run(engine, run.run_id, write_truth(tmp_path / "truth", truth, extract_date=INDEX))
    assert ev.people == 7
    assert [(s.step_id, s.excluded, s.in_work_excluded) for s in ev.steps] == [
        ("registered", 0, 0),
        ("pain", 2, 1),
        ("in_work", 2, 1),
    ]
    assert (ev.invited, ev.eligible_total, ev.eligible_missed) == (3, 4, 3)
