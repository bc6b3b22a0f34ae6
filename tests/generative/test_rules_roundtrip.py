"""Rule files on generated rule sets: YAML round trips, and any misspelt field is reported at
its own line, whatever the rule set and wherever the field."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from recruit.rules import model as rules_model
from recruit.rules.model import RuleSetError, parse_rule_set
from tests.generative.strategies import rule_sets


def _field_names() -> set[str]:
    names: set[str] = set()
    for value in vars(rules_model).values():
        if isinstance(value, type) and issubclass(value, BaseModel):
            names |= {f.alias or name for name, f in value.model_fields.items()}
    return names


FIELDS = _field_names()
KEY = re.compile(r"^(\s*(?:- )?)([a-z_]+):")


def dump(rule_set) -> str:
    data = rule_set.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(rule_set=rule_sets())
def test_yaml_round_trip(rule_set):
    assert parse_rule_set(dump(rule_set)).fingerprint() == rule_set.fingerprint()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(rule_set=rule_sets(), data=st.data())
def test_a_misspelt_field_is_reported_at_its_line(rule_set, data):
    lines = dump(rule_set).splitlines()
    candidates = [i for i, line in enumerate(lines) if (m := KEY.match(line)) and m.group(2) in FIELDS]
    assume(candidates)
    i = data.draw(st.sampled_from(candidates))
    lines[i] = KEY.sub(lambda m: f"{m.group(1)}{m.group(2)}x:", lines[i], count=1)
    with pytest.raises(RuleSetError) as info:
        parse_rule_set("\n".join(lines) + "\n", "gen.yaml")
    misspelt = KEY.match(lines[i]).group(2)
    assert re.search(rf"^gen\.yaml:{i + 1}: \S*{misspelt}: unknown field", str(info.value), re.M), str(
        info.value
    )
