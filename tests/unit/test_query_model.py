"""The query model: every criterion kind is a class, and every engine has a function for each.

A kind added to recruit/query/model.py without its function in an engine fails the engine's
import (KindTable.complete) and the test below that walks every kind and every table.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recruit.errors import RecruitError
from recruit.query import compiler, reference
from recruit.query.model import KIND_BY_KEY, KINDS, Criterion, Kind, KindTable, RuleSet, parse_criterion
from recruit.rules.model import kinds_markdown, parse_rule_set
from tests.generative.strategies import LEAF_KINDS, criteria, leaves
from tests.unit.test_rules_model import GOOD

ENGINE_TABLES = [compiler.CONDITION, compiler.EVIDENCE, reference.EVALUATE]


@pytest.mark.parametrize("table", ENGINE_TABLES, ids=lambda t: t.engine)
def test_every_engine_has_a_function_for_every_kind(table):
    assert table.missing() == []


def test_the_union_holds_every_kind_once():
    members = typing.get_args(typing.get_args(Criterion)[0])
    assert [typing.get_args(m)[0] for m in members] == list(KINDS)
    assert len(KIND_BY_KEY) == len(KINDS)


def test_a_table_missing_a_kind_fails_and_names_it():
    table: KindTable[bool] = KindTable("A test engine")
    table.register(*(k for k in KINDS if k.key != "code_on_days"))(lambda c: True)
    assert table.missing() == ["code_on_days"]
    with pytest.raises(RecruitError, match="A test engine has no function for: code_on_days"):
        table.complete()
    with pytest.raises(RecruitError, match="cannot handle a 'code_on_days' criterion"):
        table(parse_criterion({"code_on_days": {"codelist": "x", "min_days": 2}}))
    with pytest.raises(RecruitError, match="two functions"):
        table.register(KINDS[0])(lambda c: False)


def test_the_generative_strategies_draw_every_kind():
    """The engine-against-reference tests build rule sets from these: every leaf kind is there."""
    assert sorted(LEAF_KINDS) == sorted(k.key for k in KINDS if k.key not in ("all", "any", "not", "ref"))


@settings(max_examples=200, deadline=None)
@given(st.one_of(leaves(), criteria(["d1"])))
def test_file_form_round_trips(data):
    parsed = parse_criterion(data)
    assert isinstance(parsed, Kind)
    again = parse_criterion(parsed.file_form())
    assert again == parsed
    assert again.file_json() == parsed.file_json()
    assert parse_criterion(parsed.file_form("json")) == parsed


def test_stored_runs_keep_their_rule_fingerprints():
    """The fingerprint a run stored before the query model (issue 20) still matches its file."""
    assert (
        parse_rule_set(GOOD).fingerprint()
        == "dab9041cd8394b19d711460580593635291f806e740ab06e7e31f45af7ffb085"
    )


def test_kinds_with_the_same_settings_are_told_apart():
    settings_ = {"codelist": "x"}
    a = parse_criterion({"has_code": settings_})
    b = parse_criterion({"code_on_days": {**settings_, "min_days": 1}})
    assert a.file_json() != b.file_json()
    assert a.key == "has_code" and b.key == "code_on_days"


def test_a_rule_set_resolves_references_through_chains():
    rules = RuleSet.model_validate(
        {
            "name": "t",
            "version": "1",
            "definitions": {"a": {"alive": None}, "b": {"ref": "a"}},
            "steps": [{"id": "s", "kind": "include", "reason": "r", "criterion": {"ref": "b"}}],
        }
    )
    assert rules.resolve(rules.steps[0].criterion).key == "alive"


def test_the_readme_lists_every_kind():
    """README's table of criterion kinds is the one the classes' docstrings make."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- criterion-kinds -->\n", 1)[1].split("<!-- /criterion-kinds -->", 1)[0]
    assert block == kinds_markdown(), "regenerate with recruit.rules.model.kinds_markdown()"
