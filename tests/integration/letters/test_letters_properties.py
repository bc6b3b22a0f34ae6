"""Never the wrong person: properties of who gets a letter, on SQLite and PostgreSQL.

Hypothesis draws small practices: patients found or left out by the search, approved, refused
or not yet screened by a GP, and then (after the search) dying, leaving, opting out of
research, telling another study not to contact them, or already invited. Whatever it draws:

- the letter-time classification lets through exactly the people a plain-Python reading of the
  same facts allows, and counts every other one once, with a reason;
- a full letters run (printing included) writes only to allowed people, records one invitation
  per person, puts nobody in the mail-merge file who was not allowed, and a second run writes to
  nobody twice.

One schema per database serves the whole module (tables are emptied between examples).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, update

from recruit.letters.batch import NobodyApproved, _letter_codelists, write_letters
from recruit.letters.select import REFUSALS, classify
from recruit.letters.study import load_study_settings
from recruit.models import ClinicalEvent, Invitation, Patient, Study
from recruit.query.run import store_codelists
from tests.integration.letters.builders import OPT_OUT, STUDY_FILE, Person, build, invited

AFTER = dt.date(2026, 3, 1)  # after the search
EXAMPLES = int(os.environ.get("RECRUIT_GENERATIVE_EXAMPLES", "40"))
COMMON = dict(
    deadline=None,
    # Each example prints letters, so shrinking a failure is slow: RECRUIT_NO_SHRINK=1 skips it.
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("RECRUIT_NO_SHRINK")
    else list(Phase),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def _person(i: int, draw_flags: dict) -> Person:
    return Person(id=i + 1, **draw_flags)


# Most people are unremarkable: each after-the-search event is drawn rarely.
rare = st.sampled_from([False, False, False, True])
people = st.lists(
    st.fixed_dictionaries(
        {
            "outcome": st.sampled_from(["candidate", "candidate", "candidate", "excluded"]),
            "decision": st.sampled_from(["invite", "invite", "invite", "do_not_invite", None]),
            "died": rare,
            "left": rare,
            "opt_out": rare,
            "do_not_contact_elsewhere": rare,
            "invited_before": rare,
            "rank": st.integers(1, 5),
        }
    ),
    min_size=1,
    max_size=12,
).map(lambda rows: [_person(i, row) for i, row in enumerate(rows)])


@settings(max_examples=EXAMPLES, **COMMON)
@given(crowd=people)
def test_classification_lets_through_exactly_the_allowed(engine, crowd):
    world = build(engine, crowd)
    study_settings = load_study_settings(STUDY_FILE)
    opt_out, accessible = _letter_codelists(study_settings, STUDY_FILE)
    with engine.begin() as conn:
        ids = store_codelists(conn, {"o": opt_out, "a": accessible})
        study_id = conn.execute(select(Study.id).where(Study.code == "instep")).scalar_one()
        found = classify(conn, world.run_id, study_id, [ids["o"]], [ids["a"]])
    eligible = [c.patient_id for c in found.eligible]
    assert set(eligible) == world.allowed()
    assert len(eligible) == len(set(eligible))
    # Every person the run found or the GP screened is either eligible or refused once, with a reason.
    assert len(eligible) + sum(found.refusals.values()) == len(crowd) - sum(
        1 for p in crowd if p.outcome == "excluded" and p.decision is None
    )
    assert set(found.refusals) <= set(REFUSALS)
    # Highest-ranked first (lowest rank number), so a wave takes the best evidence first.
    ranks = [world.people[i].rank for i in eligible]
    assert ranks == sorted(ranks)


after_search = st.lists(
    st.tuples(st.integers(0, 9), st.sampled_from(["died", "left", "opt_out", "do_not_contact", "invited"])),
    max_size=4,
)


@settings(max_examples=max(3, EXAMPLES // 8), **COMMON)
@given(crowd=people, events=after_search, limit=st.sampled_from([None, 1, 3]))
def test_a_letters_run_writes_only_to_allowed_people_and_nobody_twice(
    engine, tmp_path_factory, crowd, events, limit
):
    # The search and the GP's review happen with everyone alive and registered ...
    clean = [Person(id=p.id, outcome=p.outcome, decision=p.decision, rank=p.rank, nhs=p.nhs) for p in crowd]
    world = build(engine, clean)
    # ... then, before the letters, the latest data says some died, left, opted out, and so on.
    with engine.begin() as conn:
        other = conn.execute(select(Study.id).where(Study.code == "other")).scalar_one()
        study_id = conn.execute(select(Study.id).where(Study.code == "instep")).scalar_one()
        for index, event in events:
            if index >= len(clean):
                continue
            person = world.people[clean[index].id]
            if event == "died":
                conn.execute(update(Patient).where(Patient.id == person.id).values(date_of_death=AFTER))
                person.died = True
            elif event == "left":
                conn.execute(update(Patient).where(Patient.id == person.id).values(registration_end=AFTER))
                person.left = True
            elif event == "opt_out":
                conn.execute(
                    insert(ClinicalEvent).values(
                        patient_id=person.id,
                        practice_id=1,
                        event_date=AFTER,
                        code_system=OPT_OUT[0],
                        code=OPT_OUT[1],
                    )
                )
                person.opt_out = True
            elif not person.do_not_contact_elsewhere and not person.invited_before:
                is_dnc = event == "do_not_contact"
                conn.execute(
                    insert(Invitation).values(
                        study_id=other if is_dnc else study_id,
                        patient_id=person.id,
                        nhs_number=person.nhs_number,
                        study_number=f"X-{uuid.uuid4().hex[:10]}",
                        status="do_not_contact" if is_dnc else "sent",
                    )
                )
                person.do_not_contact_elsewhere = is_dnc
                person.invited_before = not is_dnc
    allowed = world.allowed()
    folder = tmp_path_factory.mktemp("wave")
    if not any(p.outcome == "candidate" and p.decision == "invite" for p in clean):
        # Nobody approved: nothing is written, and the run says what to do (issue 15 case 6).
        with pytest.raises(NobodyApproved):
            write_letters(engine, world.run_id, folder / "one", limit=limit, study_file=STUDY_FILE, workers=1)
        assert not (folder / "one").exists() and invited(engine) == {}
        return
    first = write_letters(engine, world.run_id, folder / "one", limit=limit, study_file=STUDY_FILE, workers=1)
    got = invited(engine, first.batch_id)
    assert set(got) <= allowed
    if limit is None:
        assert set(got) == allowed
    else:
        assert len(got) == min(limit, len(allowed))
    merged = _merge_numbers(folder / "one")
    assert merged == {row["study_number"] for row in got.values()}
    assert first.letters_written == len(merged)
    # The next wave takes the rest, and nobody is written to twice.
    second = write_letters(engine, world.run_id, folder / "two", study_file=STUDY_FILE, workers=1)
    again = invited(engine, second.batch_id)
    assert not set(again) & set(got)
    assert set(got) | set(again) == allowed
    with engine.connect() as conn:
        numbers = (
            conn.execute(select(Invitation.nhs_number).where(Invitation.study_id == study_id)).scalars().all()
        )
    assert len(numbers) == len(set(numbers))


def _merge_numbers(folder: Path) -> set[str]:
    with open(folder / "mail-merge.csv", encoding="utf-8-sig", newline="") as handle:
        return {row["StudyNumber"] for row in csv.DictReader(handle)}
