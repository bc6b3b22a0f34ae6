"""Rule sets: the published, versioned file format a search is written in (model.py reads it;
the classes it is read into are recruit.query.model's)."""

from recruit.query.model import Criterion, RuleSet, Step
from recruit.rules.model import RuleSetError, load_rule_set, parse_rule_set, rule_set_json_schema

__all__ = [
    "Criterion",
    "RuleSet",
    "RuleSetError",
    "Step",
    "load_rule_set",
    "parse_rule_set",
    "rule_set_json_schema",
]
