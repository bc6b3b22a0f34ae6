"""End to end on a synthetic practice: made-up extract -> load -> search -> GP decisions -> letters,
on SQLite and PostgreSQL; and names that look like markup, template code or formulas, or are
written right to left, print literally in the PDF, the HTML and the mail-merge files."""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from sqlalchemy import insert, select, update

import synthetic_ehr
from recruit.letters.batch import write_letters
from recruit.letters.check import marked_nodes
from recruit.letters.render import GPView, Letter, LetterTemplates, PackKey, PatientView, PracticeView
from recruit.load import load_extract
from recruit.models import Invitation, LetterBatch, Patient, Practitioner, ReviewDecision, SearchResult
from recruit.query.run import run_search
from recruit.safe_text import FORMULA_STARTS
from tests.helpers import run_cli
from tests.integration.letters.builders import ROOT, STUDY_FILE, Person, build, invited, pdf_pages, squash
from tests.search_helpers import fresh_engine

INDEX = dt.date(2026, 6, 1)


def _merge_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "mail-merge.csv", encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _xlsx_rows(folder: Path) -> list[dict[str, object]]:
    sheet = load_workbook(folder / "mail-merge.xlsx").active
    header = [c.value for c in sheet[1]]
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            assert cell.data_type != "f", f"formula in {cell.coordinate}"
    return [dict(zip(header, (c.value for c in row), strict=True)) for row in sheet.iter_rows(min_row=2)]


def test_synthetic_practice_search_review_letters_and_a_second_wave(db_url, tmp_path):
    engine = fresh_engine(db_url)
    synthetic_ehr.generate(tmp_path / "extract", practices=1, patients=800, seed=11, formats=("ndjson",))
    load_extract(engine, [tmp_path / "extract" / "fhir"], extract_date=INDEX)
    run_id = run_search(engine, ROOT / "rules" / "instep.yaml", index_date=INDEX)
    with engine.begin() as conn:
        candidates = (
            conn.execute(
                select(SearchResult.patient_id)
                .where(SearchResult.run_id == run_id, SearchResult.outcome == "candidate")
                .order_by(SearchResult.rank, SearchResult.patient_id)
            )
            .scalars()
            .all()
        )
        assert len(candidates) >= 12
        # The GP says no to every fifth; everyone else is approved.
        refused = set(candidates[::5])
        conn.execute(
            insert(ReviewDecision),
            [
                {
                    "run_id": run_id,
                    "patient_id": pid,
                    "decision": "do_not_invite" if pid in refused else "invite",
                    "reviewer": "Dr Reviewer",
                }
                for pid in candidates
            ],
        )
    first = write_letters(
        engine, run_id, tmp_path / "wave1", limit=6, study_file=STUDY_FILE, letter_date=INDEX
    )
    wave1 = invited(engine, first.batch_id)
    assert 0 < len(wave1) <= 6 and not set(wave1) & refused
    assert first.left_for_later + len(wave1) + sum(first.refusals.values()) == len(candidates)

    # The PDFs: the right name, address and GP on each letter, and only that patient's details.
    rows = _merge_rows(tmp_path / "wave1")
    assert len(rows) == first.letters_written
    combined = pdf_pages(tmp_path / "wave1" / "letters.pdf")
    assert len(combined) == first.pages == sum(int(r["StreamPages1"]) for r in rows)
    with engine.connect() as conn:
        details = {
            r.study_number: r
            for r in conn.execute(
                select(
                    Invitation.study_number,
                    Patient.given_name,
                    Patient.family_name,
                    Patient.address,
                    Patient.postcode,
                    Practitioner.given_name.label("gp_given"),
                    Practitioner.family_name.label("gp_family"),
                )
                .join(Patient, Patient.id == Invitation.patient_id)
                .join(Practitioner, Practitioner.id == Patient.usual_gp_id)
                .where(Invitation.batch_id == first.batch_id)
            )
        }
    names = {n: squash(f"{d.given_name} {d.family_name}") for n, d in details.items()}
    for row in rows:
        d = details[row["StudyNumber"]]
        pages = pdf_pages(tmp_path / "wave1" / row["PdfFile"])
        assert len(pages) == int(row["StreamPages1"])
        start = int(row["FirstPage"]) - 1
        assert [squash(p) for p in pages] == [squash(p) for p in combined[start : start + len(pages)]]
        first_page, slip = squash(pages[0]), squash(pages[-1])
        assert names[row["StudyNumber"]] in first_page
        for line in d.address.splitlines():
            assert squash(line) in first_page
        assert squash(d.postcode) in first_page
        assert squash(f"Dr {d.gp_given} {d.gp_family}") in squash("".join(pages))
        assert row["StudyNumber"] in first_page and row["StudyNumber"] in slip
        assert names[row["StudyNumber"]] not in slip  # the reply slip carries the study number only
        others = [n for k, n in names.items() if k != row["StudyNumber"]]
        assert not any(n in squash("".join(pages)) for n in others)
        assert row["GPName"] == f"Dr {d.gp_given} {d.gp_family}"
    assert [r["StudyNumber"] for r in _xlsx_rows(tmp_path / "wave1")] == [r["StudyNumber"] for r in rows]

    # After the search: one approved patient not yet written to dies, one leaves, one opts out.
    rest = [pid for pid in candidates if pid not in refused and pid not in wave1]
    died, left, opted = rest[0], rest[1], rest[2]
    with engine.begin() as conn:
        conn.execute(update(Patient).where(Patient.id == died).values(date_of_death=INDEX))
        conn.execute(update(Patient).where(Patient.id == left).values(registration_end=INDEX))
        from recruit.models import ClinicalEvent

        practice = conn.execute(select(Patient.practice_id).where(Patient.id == opted)).scalar_one()
        conn.execute(
            insert(ClinicalEvent).values(
                patient_id=opted, practice_id=practice, event_date=INDEX, code_system="readv2", code="9Nu0."
            )
        )
    second = write_letters(engine, run_id, tmp_path / "wave2", study_file=STUDY_FILE, letter_date=INDEX)
    wave2 = invited(engine, second.batch_id)
    assert not set(wave2) & set(wave1)
    assert not set(wave2) & {died, left, opted} and not set(wave2) & refused
    assert set(wave1) | set(wave2) | {died, left, opted} <= set(candidates) - refused
    assert len(wave2) + sum(second.refusals.values()) == len(candidates)
    # (>=: a search counts someone registered or alive on its index date, even if the record
    # already says they leave or died later that day; the letters never go to them.)
    assert second.refusals["died"] >= 1 and second.refusals["no_longer_registered"] >= 1
    assert second.refusals["research_opt_out"] >= 1
    assert second.refusals["already_invited"] == len(wave1)
    assert second.refusals["gp_said_do_not_invite"] == len(refused)
    with engine.connect() as conn:
        stored = conn.execute(
            select(LetterBatch.refusals).where(LetterBatch.id == second.batch_id)
        ).scalar_one()
        numbers = conn.execute(select(Invitation.nhs_number)).scalars().all()
    assert stored == second.refusals
    assert len(numbers) == len(set(numbers))
    # A third run finds nobody left to write to.
    third = write_letters(engine, run_id, tmp_path / "wave3", study_file=STUDY_FILE, letter_date=INDEX)
    assert third.letters_written == 0 and not invited(engine, third.batch_id)


def test_large_print_easy_read_and_practice_contact(sqlite_url, tmp_path):
    engine = fresh_engine(sqlite_url)
    build(
        engine,
        [
            Person(1, given="Lara", family="Large", large_print=True),
            Person(2, given="Eddie", family="Easy", easy_read=True),
            Person(3, given="Bram", family="Braille", braille=True),
            Person(4, given="Iris", family="Interpreter", interpreter=True),
            Person(5, given="Lena", family="Language", language="Polish"),
            Person(6, given="Sam", family="Standard"),
        ],
    )
    summary = write_letters(engine, 1, tmp_path / "out", study_file=STUDY_FILE, workers=2)
    assert summary.formats == {"large_print": 1, "easy_read": 1, "standard": 1}
    assert summary.practice_contact == {"braille": 1, "interpreter": 1, "language": 1}
    formats = {pid: row["letter_format"] for pid, row in invited(engine).items()}
    assert formats == {
        1: "large_print",
        2: "easy_read",
        3: "braille",
        4: "interpreter",
        5: "language",
        6: "standard",
    }
    with open(tmp_path / "out" / "contact-another-way.csv", encoding="utf-8-sig", newline="") as handle:
        listed = {row["Surname"]: row for row in csv.DictReader(handle)}
    assert set(listed) == {"Braille", "Interpreter", "Language"}
    assert "Polish" in listed["Language"]["WhatIsNeeded"]
    assert all(row["StudyNumber"] for row in listed.values())
    assert {r["Surname"] for r in _merge_rows(tmp_path / "out")} == {"Large", "Easy", "Standard"}
    # Nobody who needs another way is posted a letter, and the batch says so in counts only.
    batch = (tmp_path / "out" / "batch.json").read_text()
    assert "Large" not in batch and "9000000001" not in batch


def test_letters_on_the_command_line(tmp_path):
    db = f"sqlite:///{tmp_path / 'recruit.db'}"
    engine = fresh_engine(db)
    build(engine, [Person(1), Person(2, decision="do_not_invite"), Person(3, died=True)])
    result = run_cli("letters", "1", "--out", "out", "--study", str(STUDY_FILE), "--db", db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 letters" in result.stdout and "a GP decided not to invite them: 1" in result.stdout
    assert "has died" in result.stdout and "DRAFT" in result.stderr
    again = run_cli("letters", "1", "--out", "out", "--study", str(STUDY_FILE), "--db", db, cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    missing = run_cli("letters", "7", "--out", "x", "--study", str(STUDY_FILE), "--db", db, cwd=tmp_path)
    assert missing.returncode == 1 and "no search run 7" in missing.stderr


def test_no_signing_gp_is_a_plain_message_naming_the_practice(sqlite_url, tmp_path):
    engine = fresh_engine(sqlite_url)
    build(engine, [Person(1, usual_gp=None)])
    with engine.begin() as conn:
        conn.execute(update(Practitioner).values(given_name=None, family_name=None, title=None))
    from recruit.errors import RecruitError

    with pytest.raises(RecruitError, match="A00001.*signing_gps"):
        write_letters(engine, 1, tmp_path / "out", study_file=STUDY_FILE)
    assert not (tmp_path / "out").exists() and not invited(engine)


# --- names print literally -----------------------------------------------------------------------

HOSTILE = [
    "<b>Bold</b> & <script>alert(1)</script>",
    "{{ 7*7 }} {% if x %}y{% endif %}",
    '=HYPERLINK("http://x","y")',
    "+44 1234",
    "-1+1",
    "@SUM(A1)",
    "محمد علي",
    "שרה כהן",
    "Zoë Łukasz-Öztürk",
    "Ιωάννης Παπαδόπουλος",
    "Дмитрий",
]
# Letters from scripts the letters' font (DejaVu Sans) has, with markup and formula characters.
TEXT = st.text(
    alphabet=st.sampled_from(
        list("abcXYZ019 <>&\"'{}%#=+-@()/\\")
        + list("éøßŁżŞ")
        + list("αβγ")
        + list("жщ")
        + list("אב")
        + list("عمد")
    ),
    min_size=1,
    max_size=24,
).filter(lambda s: s.strip())


def _write_one(tmp_path: Path, given: str, family: str, line: str) -> tuple[Path, dict[str, str]]:
    engine = fresh_engine(f"sqlite:///{tmp_path / 'l.db'}")
    build(engine, [Person(1, given=given, family=family, address=f"{line}\nTown")])
    out = tmp_path / "out"
    summary = write_letters(engine, 1, out, study_file=STUDY_FILE, workers=1)
    assert summary.letters_written == 1, summary
    return out, _merge_rows(out)[0]


def _in_pdf(value: str, page: str) -> bool:
    """Printed literally: the same characters in the same order; right-to-left runs are extracted
    in visual order, so for them the same characters (and how many of each)."""
    value_s, page_s = squash(value), squash(page)
    if value_s in page_s:
        return True
    if any("\u0590" <= ch <= "\u06ff" for ch in value):
        # Brackets in a right-to-left run are shown mirrored ("{" as "}"): count a pair as one.
        fold = str.maketrans("{}()<>[]", "{{((<<[[")
        return not (Counter(value_s.translate(fold)) - Counter(page_s.translate(fold)))
    return False


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_print_literally_everywhere(tmp_path, name):
    out, row = _write_one(tmp_path, name, "Family", f"1 {name} Street")
    page = pdf_pages(out / "letters.pdf")[0]
    assert _in_pdf(name, page), page
    xlsx = _xlsx_rows(out)[0]
    assert xlsx["FirstName"] == name and xlsx["Address1"] == f"1 {name} Street"
    if name.startswith(FORMULA_STARTS):
        assert row["FirstName"] == "'" + name  # the CSV neutralises formulas with an apostrophe
    else:
        assert row["FirstName"] == name
    for value in row.values():
        assert not value.startswith(FORMULA_STARTS)


@settings(max_examples=40, deadline=None)
@given(given_name=TEXT, family=TEXT)
def test_any_name_is_escaped_in_the_html(given_name, family):
    templates = LetterTemplates()
    patient = PatientView(f"{given_name} {family}", family, (given_name, "Town"), "LS1 1AA")
    key = PackKey("standard", PracticeView("P", "A00001"), GPView("Dr G"))
    html = templates.slots_html(Letter(key, patient, "X-1"), "a")
    nodes = marked_nodes(html)
    window = "".join(nodes["address_window"]).replace("\u2068", "").replace("\u2069", "")
    assert squash(f"{given_name} {family}") in squash(window)
    assert squash(given_name) in squash(window)
    assert "<script" not in html.lower()


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(given_name="0", family="é}م{9")  # a bracket mirrored in a right-to-left run
@given(given_name=TEXT, family=TEXT)
def test_any_name_prints_literally_in_the_pdf_and_the_mail_merge(tmp_path_factory, given_name, family):
    tmp_path = tmp_path_factory.mktemp("name")
    out, row = _write_one(tmp_path, given_name, family, f"2 {family} Road")
    page = pdf_pages(out / "letters.pdf")[0]
    assert _in_pdf(f"{given_name} {family}", page)
    xlsx = _xlsx_rows(out)[0]
    assert (xlsx["FirstName"], xlsx["Surname"]) == (given_name, family)
    csv_first = row["FirstName"][1:] if given_name.startswith(FORMULA_STARTS) else row["FirstName"]
    assert csv_first == given_name


def test_the_address_sits_in_the_envelope_window(sqlite_url, tmp_path):
    """Name, address and postcode print inside the window: 20 mm from the left edge and 50 mm
    from the top of the page, 90 x 35 mm (DL and C5 window envelopes), and nothing else does."""
    from pypdf import PdfReader

    engine = fresh_engine(sqlite_url)
    build(engine, [Person(1, given="Wendy", family="Window", address="Flat 3\n12 Long Street\nSometown")])
    write_letters(engine, 1, tmp_path / "out", study_file=STUDY_FILE, workers=1)
    page = PdfReader(tmp_path / "out" / "letters.pdf").pages[0]
    height = float(page.mediabox.height)
    mm = 72 / 25.4
    inside, others = [], []

    def visit(text, cm, tm, font, size):
        if not text.strip():
            return
        x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
        in_window = 20 * mm - 1 <= x <= 110 * mm and height - 85 * mm <= y <= height - 50 * mm
        (inside if in_window else others).append(text.strip())

    page.extract_text(visitor_text=visit)
    assert squash("".join(inside)) == squash("Wendy Window Flat 3 12 Long Street Sometown LS1 1AA")
    # Elsewhere on the page the name is only in "Dear ...".
    assert [squash(t) for t in others if "Wendy" in t] == ["DearWendyWindow,"]
