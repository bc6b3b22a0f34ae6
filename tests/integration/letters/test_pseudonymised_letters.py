"""No letter is ever written to a patient of a pseudonymised extract (no name or address): a run
on pseudonymised data is refused with a plain message, and in a mixed run they are left out with
a reason. The GP review export still works for such a run (names are blank, not a crash)."""

from __future__ import annotations

import datetime as dt

import pytest
from openpyxl import load_workbook

from recruit.errors import RecruitError
from recruit.letters.batch import write_letters
from recruit.letters.select import REFUSALS
from recruit.review import export_review
from tests.integration.letters.builders import Person, build, invited
from tests.integration.letters.test_never_wrong_person_letters import _classify, study_file  # noqa: F401 (fixture)


def pseudonymised(pid: int, **more: object) -> Person:
    return Person(pid, given="", family="", address=None, postcode=None, pseudonymised=True, **more)  # type: ignore[arg-type]


def test_letters_refuse_a_run_on_pseudonymised_data_plainly(engine, study_file, tmp_path):  # noqa: F811
    world = build(engine, [pseudonymised(1), pseudonymised(2), pseudonymised(3, decision=None)])
    out = tmp_path / "letters"
    with pytest.raises(RecruitError) as caught:
        write_letters(engine, world.run_id, out, study_file=study_file)
    said = str(caught.value)
    assert said.startswith("This search ran on pseudonymised data")
    assert "holds no names or addresses, so no letters can be written" in said
    assert "counts, evaluation and the audit report" in said
    assert not out.exists() and invited(engine) == {}


def test_a_mixed_run_leaves_pseudonymised_patients_out_with_a_reason(engine, study_file, tmp_path):  # noqa: F811
    world = build(engine, [Person(1), pseudonymised(2), Person(3), pseudonymised(4, decision=None)])
    allowed, reasons, counts = _classify(engine, world.run_id, study_file)
    assert allowed == world.allowed() == {1, 3}
    assert reasons == {2: "pseudonymised", 4: "not_reviewed"}
    summary = write_letters(engine, world.run_id, tmp_path / "letters", study_file=study_file, workers=0)
    assert summary.letters_written == 2 and set(invited(engine)) == {1, 3}
    assert summary.refusals.get("pseudonymised") == 1
    assert "pseudonymised extract" in REFUSALS["pseudonymised"]


def test_review_export_of_a_pseudonymised_run_works_without_names(engine, tmp_path):
    world = build(engine, [pseudonymised(1, decision=None), pseudonymised(2, decision=None)])
    out = tmp_path / "review.xlsx"
    summary = export_review(engine, world.run_id, out, today=dt.date(2026, 1, 2))
    assert summary.rows == 2
    book = load_workbook(out, read_only=True)
    assert book.sheetnames
