"""Rule sets: the published, versioned file format a search is written in (see model.py)."""

from recruit.rules.model import (
    Criterion,
    RuleSet,
    RuleSetError,
    Step,
    load_rule_set,
    parse_rule_set,
    rule_set_json_schema,
)

__all__ = [
    "Criterion",
    "RuleSet",
    "RuleSetError",
    "Step",
    "load_rule_set",
    "parse_rule_set",
    "rule_set_json_schema",
]
