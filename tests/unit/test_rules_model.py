"""The rule-set file format: what parses, and broken files failing with file, line and field."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recruit.query.dates import age_on, months_before, window_bounds, years_before
from recruit.query.model import Window
from recruit.rules.model import (
    RuleSetError,
    load_rule_set,
    parse_rule_set,
    rule_set_json_schema_text,
)

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name: example
version: "1"
study: instep
definitions:
  pain:
    has_code: {codelist: chronic_pain, window: ever}
steps:
  - id: registered
    kind: include
    reason: Registered on the index date
    criterion:
      registered:
  - id: pain
    kind: include
    reason: Chronic pain
    criterion:
      any:
        - ref: pain
        - medication_count:
            codelists: [opioids]
            window: {last_months: 12}
            min_issues: 3
            min_distinct_months: 3
  - id: invited
    kind: exclude
    reason: Already invited
    criterion: {already_invited: }
score:
  - id: fit_note
    weight: 2
    why: A recent not-fit-for-work note is direct evidence of being out of work.
    criterion: {has_code: {codelist: fit_note, categories: [not_fit_for_work], window: {last_days: 90}}}
"""


def errors_of(text: str, known: set[str] | None = None) -> str:
    with pytest.raises(RuleSetError) as info:
        parse_rule_set(text, "rules/x.yaml", (lambda _rs: known) if known is not None else None)
    return str(info.value)


def test_a_good_file_parses():
    rule_set = parse_rule_set(GOOD, "x.yaml", lambda _rs: {"chronic_pain", "opioids", "fit_note"})
    assert [s.id for s in rule_set.steps] == ["registered", "pain", "invited"]
    assert rule_set.steps[0].criterion.key == "registered"
    assert rule_set.steps[1].criterion.items[0].name == "pain"
    assert rule_set.codelist_names() == ["chronic_pain", "opioids", "fit_note"]
    assert rule_set.score[0].weight == 2
    assert len(rule_set.fingerprint()) == 64


def test_fingerprint_ignores_layout():
    reformatted = GOOD.replace(
        "    criterion: {already_invited: }", "    criterion:\n      already_invited: {}"
    )
    assert parse_rule_set(GOOD).fingerprint() == parse_rule_set(reformatted).fingerprint()


def test_misspelt_field_names_file_line_and_field():
    text = GOOD.replace("min_distinct_months: 3", "min_distinct_month: 3")
    message = errors_of(text)
    assert "rules/x.yaml:23:" in message
    assert "steps[1].criterion.any[1].medication_count.min_distinct_month" in message
    assert "unknown field" in message


def test_unknown_codelist_names_line_and_field():
    message = errors_of(GOOD, known={"chronic_pain", "fit_note"})
    assert message == (
        "rules/x.yaml:20: steps[1].criterion.any[1].medication_count.codelists[0]: unknown codelist 'opioids'"
    )


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ("{last_months: 0}", "greater than or equal to 1"),
        ("{last_months: 3, last_days: 4}", "exactly one of"),
        ("yesterday", "unknown window 'yesterday'"),
        ("{start: 2024-05-01, end: 2024-01-01}", "after its end"),
        ("{last_weeks: 2}", "unknown field"),
    ],
)
def test_bad_window(window, expected):
    text = GOOD.replace("window: {last_months: 12}", f"window: {window}")
    message = errors_of(text)
    assert message.startswith("rules/x.yaml:2")
    assert "steps[1].criterion.any[1].medication_count.window" in message
    assert expected in message


def test_criterion_needs_exactly_one_kind():
    text = GOOD.replace("criterion: {already_invited: }", "criterion: {already_invited: , alive: }")
    message = errors_of(text)
    assert "rules/x.yaml:27: steps[2].criterion: a criterion needs exactly one of" in message


def test_unknown_definition_and_loops():
    assert "no definition named 'pains'" in errors_of(GOOD.replace("ref: pain", "ref: pains"))
    looped = GOOD.replace("definitions:\n", "definitions:\n  a: {ref: b}\n  b: {not: {ref: a}}\n")
    assert "refer to each other in a loop: a -> b -> a" in errors_of(looped)


def test_duplicate_step_ids_and_bad_kind():
    assert "rules/x.yaml:7: steps: id 'pain' is used twice" in errors_of(
        GOOD.replace("id: invited", "id: pain")
    )
    assert "definition name 'Pain'" in errors_of(
        GOOD.replace("  pain:\n", "  Pain:\n").replace("ref: pain", "ref: Pain")
    )
    message = errors_of(GOOD.replace("kind: exclude", "kind: exclusion"))
    assert "rules/x.yaml:25: steps[2].kind:" in message


def test_missing_field_points_at_its_parent():
    message = errors_of(GOOD.replace("    reason: Chronic pain\n", ""))
    assert "rules/x.yaml:13: steps[1].reason: Field required" in message


def test_invalid_yaml_and_wrong_types():
    assert errors_of("name: [unclosed\n").startswith("rules/x.yaml:2: not valid YAML")
    assert "rules/x.yaml:1: a rule file is a mapping" in errors_of("- a\n- b\n")
    assert "rules/x.yaml:2: version: Input should be a valid string" in errors_of(GOOD.replace('"1"', "1.0"))


def test_already_invited_needs_a_study():
    assert "needs a study" in errors_of(GOOD.replace("study: instep\n", ""))


def test_load_rule_set_reads_a_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(GOOD.replace("weight: 2", "wieght: 2"))
    with pytest.raises(RuleSetError, match=rf"{path}:30: score\[0\].wieght: unknown field"):
        load_rule_set(path)
    with pytest.raises(RuleSetError, match="cannot read"):
        load_rule_set(tmp_path / "missing.yaml")


def test_published_json_schema_is_current():
    committed = (ROOT / "rules" / "rule-set.schema.json").read_text()
    assert committed == rule_set_json_schema_text(), (
        "rules/rule-set.schema.json is out of date: run "
        "python -c 'from recruit.rules.model import write_json_schema; write_json_schema()'"
    )
    schema = json.loads(committed)
    assert schema["additionalProperties"] is False
    assert {"name", "version", "steps"} <= set(schema["required"])


# --- dates -------------------------------------------------------------------------------------


def test_months_before_clamps_to_month_end():
    assert months_before(dt.date(2025, 3, 31), 1) == dt.date(2025, 2, 28)
    assert months_before(dt.date(2024, 3, 31), 1) == dt.date(2024, 2, 29)
    assert months_before(dt.date(2025, 1, 15), 13) == dt.date(2023, 12, 15)
    assert years_before(dt.date(2024, 2, 29), 1) == dt.date(2023, 2, 28)


def test_window_bounds_never_pass_the_index_date():
    index = dt.date(2025, 6, 30)
    assert window_bounds(Window(ever=True), index) == (None, index)
    assert window_bounds(Window(last_days=30), index) == (dt.date(2025, 5, 31), index)
    assert window_bounds(Window(start=dt.date(2025, 1, 1), end=dt.date(2026, 1, 1)), index) == (
        dt.date(2025, 1, 1),
        index,
    )


dates = st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31))


@given(dob=dates, day=dates, years=st.integers(0, 130))
def test_age_cutoff_dates_agree_with_age_in_years(dob, day, years):
    # The SQL compares date_of_birth with years_before(index, n); that must mean age >= n.
    assert (dob <= years_before(day, years)) == (age_on(dob, day) >= years)
