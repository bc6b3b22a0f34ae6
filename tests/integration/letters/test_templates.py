"""The letter templates: reading age, required elements (recruit letters check), study settings,
study numbers, and the templates shipping in the wheel."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from recruit.letters.check import (
    SAMPLE_GP,
    SAMPLE_PRACTICE,
    find_problems,
    readable_text,
    sample_settings,
)
from recruit.letters.numbers import (
    ALPHABET,
    _check_character,
    is_valid_study_number,
    new_study_number,
)
from recruit.letters.render import FORMATS, LetterTemplates, PackKey, study_variables, templates_dir
from recruit.letters.study import StudySettingsError, load_study_settings, parse_study_settings
from tests.helpers import run_cli
from tests.integration.letters.builders import ROOT, STUDY_FILE

# --- reading age ---------------------------------------------------------------------------------

# NHS service manual ("How we write") and the Patient Information Forum: aim for a reading age of
# 9 to 11. Flesch-Kincaid grade is a US school grade; UK reading age is about the grade plus 5,
# so grade 6 or below is a reading age of 11 or below, and Flesch reading ease 80 or more is
# "easy" (shared/reference/letters-and-review.md section 3.2). Measured with textstat 0.7.8,
# which works offline. The band's top is the limit: a letter that reads younger than 9 (ours
# measure about 7 to 8) is easier for everyone, so there is no lower bound.
MAX_GRADE = 6.0
MIN_EASE = 80.0


def _pack_text(letter_format: str) -> tuple[str, str]:
    """(letter text, reply slip text) as a reader sees them, without addresses and small print."""
    templates = LetterTemplates()
    html = templates.pack_html(
        PackKey(letter_format, SAMPLE_PRACTICE, SAMPLE_GP), study_variables(sample_settings()), "1 May 2026"
    )
    letter, _, slip = html.partition('id="reply-slip"')
    return readable_text(letter), readable_text("<div " + slip)


@pytest.mark.parametrize("letter_format", list(FORMATS))
@pytest.mark.parametrize("part", ["letter", "reply slip"])
def test_every_template_reads_at_age_11_or_below(letter_format, part, record_property):
    textstat = pytest.importorskip("textstat")
    letter, slip = _pack_text(letter_format)
    text = letter if part == "letter" else slip
    assert len(text.split()) > (150 if part == "letter" else 40)
    grade = textstat.flesch_kincaid_grade(text)
    ease = textstat.flesch_reading_ease(text)
    record_property("reading_age", round(grade + 5, 1))
    print(f"{FORMATS[letter_format]} {part}: FK grade {grade:.1f} (age {grade + 5:.1f}), ease {ease:.1f}")
    assert grade <= MAX_GRADE, f"{letter_format} {part}: Flesch-Kincaid grade {grade}"
    assert ease >= MIN_EASE, f"{letter_format} {part}: Flesch reading ease {ease}"


@pytest.mark.parametrize("letter_format", list(FORMATS))
def test_no_sentence_is_longer_than_20_words(letter_format):
    letter, slip = _pack_text(letter_format)
    for sentence in re.split(r"(?<=[.?!])\s+", f"{letter} {slip}"):
        assert len(sentence.split()) <= 20, sentence


def test_the_easy_read_letter_is_the_easiest():
    textstat = pytest.importorskip("textstat")
    grades = {f: textstat.flesch_kincaid_grade(_pack_text(f)[0]) for f in FORMATS}
    assert grades["easy_read"] < grades["standard"]


def test_the_seed_barriers_are_answered_in_every_letter():
    """What clients, practices and support workers said (InSTEP stakeholder study) is in each letter."""
    for letter_format in FORMATS:
        letter, slip = _pack_text(letter_format)
        low = letter.lower()
        assert "up to you" in low or "your choice" in low  # voluntary, not compulsory
        assert "jobcentre" in low and "benefits" in low  # not from the Jobcentre
        assert "nobody will make you" in low  # not forced into work
        assert "paid work" in low and "paid work" in slip.lower()  # letters reach people now in work
        assert "no forms to fill in" in low  # no extra paperwork
        assert "pain" in low and "work" in low  # support with pain and work


# --- recruit letters check -------------------------------------------------------------------------


def test_the_shipped_templates_pass_the_check():
    assert find_problems(LetterTemplates()) == []


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    shutil.copytree(templates_dir(), folder)
    return folder


def _edit(folder: Path, name: str, old: str, new: str) -> None:
    path = folder / name
    text = path.read_text()
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new))


BREAKAGES = [
    # (file, text to replace, replacement, template named, words in the message)
    (
        "invitation_text.html.j2",
        'data-required="voluntary"',
        "",
        "invitation.html.j2",
        "voluntary",
    ),
    (
        "invitation_easy_read.html.j2",
        '<p data-required="decline">If you do not want to take part, you do not need to do anything.</p>',
        "",
        "invitation_easy_read.html.j2",
        "how to decline",
    ),
    (
        "invitation_text.html.j2",
        "{{ study.contact.telephone }}",
        "our office",
        "invitation.html.j2",
        "contact details does not show telephone",
    ),
    ("signature.html.j2", "{{ gp.name }}", "Your GP", "invitation.html.j2", "GP signature block"),
    (
        "references.html.j2",
        "{{ study.iras_reference }}",
        "",
        "invitation_large_print.html.j2",
        "study reference does not show iras reference",
    ),
    (
        "invitation_text.html.j2",
        '<p data-required="other_formats">',
        '<p data-required="other_formats" style="display: none">',
        "invitation.html.j2",
        "other formats is not printed",
    ),
    (
        "invitation_text.html.j2",
        '<li data-required="opt_out">',
        '<li data-required="opt_out" hidden>',
        "invitation.html.j2",
        "opt out of further contact is not printed",
    ),
    (
        "reply_slip.html.j2",
        "Please tick one box.",
        "Please tick one box, {{ patient.full_name }}.",
        "invitation.html.j2",
        "patient details belong only in patient_slots.html.j2",
    ),
    (
        "patient_slots.html.j2",
        "{{ line }}",
        "{{ line|safe }}",
        "patient_slots.html.j2",
        "as markup",
    ),
    (
        "reply_slip.html.j2",
        'id="slip-number-place"',
        'id="somewhere-else"',
        "invitation.html.j2",
        "study number",
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "template", "words"), BREAKAGES)
def test_a_template_lacking_a_required_element_fails_the_check_naming_both(
    tmp_path, name, old, new, template, words
):
    folder = _copy(tmp_path)
    _edit(folder, name, old, new)
    problems = find_problems(LetterTemplates(folder))
    assert any(p.template == template and words in p.message for p in problems), problems


def test_letters_check_on_the_command_line(tmp_path):
    good = run_cli("letters", "check", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "every required element" in good.stdout
    folder = _copy(tmp_path)
    _edit(folder, "invitation_text.html.j2", 'data-required="voluntary"', "")
    bad = run_cli("letters", "check", "--templates", str(folder), cwd=tmp_path)
    assert bad.returncode == 1
    assert "invitation.html.j2" in bad.stderr and "voluntary" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = run_cli("letters", "check", "--templates", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


# --- study settings ----------------------------------------------------------------------------------


def test_the_instep_settings_load_and_are_marked_draft():
    settings = load_study_settings(STUDY_FILE)
    assert settings.code == "instep" and settings.status == "draft"
    assert settings.number_prefix == "INSTEP"


def test_a_broken_settings_file_names_line_and_field(tmp_path):
    text = STUDY_FILE.read_text().replace("email: instep-study@example.org", "email: not-an-email")
    text = text.replace("short_title: InSTEP", "short_titel: InSTEP")
    with pytest.raises(StudySettingsError) as info:
        parse_study_settings(text, "instep.yaml")
    message = str(info.value)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "not-an-email" in t)
    assert f"instep.yaml:{line}: contact.email: " in message
    assert "short_titel: unknown field" in message
    assert "short_title: Field required" in message


def test_a_signing_gp_needs_a_practice_code(tmp_path):
    text = STUDY_FILE.read_text().replace("signing_gps: {}", "signing_gps: {'a81001': {name: Dr A Patel}}")
    with pytest.raises(StudySettingsError, match="not an ODS practice code"):
        parse_study_settings(text, "x.yaml")


# --- study numbers -----------------------------------------------------------------------------------


def test_study_numbers_look_right_and_are_distinct():
    numbers = {new_study_number("INSTEP") for _ in range(2000)}
    assert len(numbers) == 2000
    for number in list(numbers)[:50]:
        assert re.fullmatch(rf"INSTEP-[{ALPHABET}]{{4}}-[{ALPHABET}]{{5}}", number)
        assert is_valid_study_number(number, "INSTEP")
        assert is_valid_study_number(number.lower().replace("-", " - "), "INSTEP")


@given(st.text(ALPHABET, min_size=8, max_size=8), st.data())
def test_a_study_number_copied_wrongly_is_caught(body, data):
    """The body is drawn (not taken from the secure generator) so a failure replays exactly."""
    code = list(body + _check_character(body))
    assert is_valid_study_number("".join(code))
    kind = data.draw(st.sampled_from(["change", "swap"]))
    if kind == "change":
        i = data.draw(st.integers(0, len(code) - 1))
        code[i] = data.draw(st.sampled_from([c for c in ALPHABET if c != code[i]]))
    else:
        i = data.draw(st.integers(0, len(code) - 2))
        assume(code[i] != code[i + 1])
        code[i], code[i + 1] = code[i + 1], code[i]
    assert not is_valid_study_number("".join(code))


def test_swapping_0_and_z_is_caught():
    """The pair Luhn mod 32 cannot tell apart."""
    for body in ("6VS70ZVZ", "0Z000000", "ABCDEFZ0"):
        code = body + _check_character(body)
        i = code.index("0Z") if "0Z" in code else code.index("Z0")
        swapped = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
        assert is_valid_study_number(code)
        assert not is_valid_study_number(swapped)


# --- packaging ---------------------------------------------------------------------------------------


def test_every_template_file_ships_in_the_wheel():
    """pyproject maps letter_templates/ to the package recruit.letter_templates and its package
    data globs cover every file there, so `pip install .` outside the repository finds them."""
    import fnmatch
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "recruit.letter_templates" in config["packages"]
    assert config["package-dir"]["recruit.letter_templates"] == "letter_templates"
    globs = config["package-data"]["recruit.letter_templates"]
    files = [p.name for p in (ROOT / "letter_templates").iterdir() if p.is_file()]
    assert {*FORMATS.values(), "patient_slots.html.j2", "letters.css", "README.md"} <= set(files)
    for name in files:
        # "**/*.j2" matches at the top too (tests/acceptance/test_wheel.py checks the built wheel itself).
        assert any(fnmatch.fnmatch(name, g.removeprefix("**/")) for g in globs), f"{name} not in the wheel"
