"""The rule-set file: a YAML search definition, validated with pydantic.

A rule set is read by people (GPs, ethics committees, the trial team) as well as run, so the
format is small and explicit: named `definitions`, ordered `steps` (each an inclusion or an
exclusion with an id and a reason a person can read), and an optional out-of-work evidence
`score`. Every model forbids unknown fields, so a misspelt field is an error rather than a rule
silently ignored, and every error names the file, line and field (PyYAML's node marks give the
line). The JSON Schema of the format is published at rules/rule-set.schema.json so editors can
check files as they are written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from recruit.errors import RecruitError
from recruit.query.model import (
    INNER_FIELDS,
    KIND_KEYS,
    KINDS,
    AlreadyInvited,
    Kind,
    Ref,
    RuleSet,
    codelist_refs,
    walk,
)

SCHEMA_PATH = Path("rules") / "rule-set.schema.json"

# Given the parsed rule set: the codelist names that exist, or a mapping of name -> the values of
# its category column (None when it has none), which also lets categories be checked.
KnownCodelists = Callable[["RuleSet"], "Collection[str] | Mapping[str, Collection[str] | None]"]


class RuleSetError(RecruitError):
    """A rule file is broken; the message names file, line and field for each problem."""


# --- loading ---------------------------------------------------------------------------------


def load_rule_set(path: str | Path, known_codelists: KnownCodelists | None = None) -> RuleSet:
    """Read and check a rule file; RuleSetError lists every problem with file, line and field.

    known_codelists, given the parsed rule set, returns the codelist names that exist, so that a
    reference to a missing codelist is reported at its line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleSetError(f"{path}: cannot read the rule file: {exc}") from None
    return parse_rule_set(text, str(path), known_codelists)


def parse_rule_set(
    text: str, filename: str = "<rules>", known_codelists: KnownCodelists | None = None
) -> RuleSet:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark is not None else filename
        problem = getattr(exc, "problem", None) or str(exc)
        raise RuleSetError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise RuleSetError(f"{filename}:1: a rule file is a mapping with name, version and steps")
    try:
        rule_set = RuleSet.model_validate(data)
    except ValidationError as exc:
        problems = [
            _located(filename, root, _file_path(err), _message(err)) for err in exc.errors(include_url=False)
        ]
        raise RuleSetError("\n".join(problems)) from None
    problems = _check_references(rule_set, filename, root, known_codelists)
    if problems:
        raise RuleSetError("\n".join(problems))
    return rule_set


def _file_path(err: ErrorDetails) -> tuple[Any, ...]:
    """Where an error is in the file: pydantic's location less the fields files do not write."""
    loc = tuple(err["loc"])
    path = [part for i, part in enumerate(loc) if not (i and INNER_FIELDS.get(str(loc[i - 1])) == part)]
    given = err.get("input")
    if err["type"] == "criterion" and isinstance(given, dict) and len(given) == 1:
        path.append(next(iter(given)))  # the misspelt kind's own line
    return tuple(path)


def _message(err: ErrorDetails) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field (misspelt?)"
    given = err.get("input")
    if err["type"] == "criterion" and isinstance(given, dict):
        if len(given) == 1:
            return f"unknown field (misspelt?): a criterion is one of {KIND_KEYS}"
        return f"{err['msg']} (found {len(given)})"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _check_references(
    rule_set: RuleSet, filename: str, root: yaml.Node | None, known_codelists: KnownCodelists | None
) -> list[str]:
    problems: list[str] = []
    known = known_codelists(rule_set) if known_codelists else None
    for path, criterion in rule_set.criteria():
        for sub_path, node in walk(criterion, path):
            if isinstance(node, Ref) and node.name not in rule_set.definitions:
                names = ", ".join(rule_set.definitions) or "none"
                problems.append(
                    _located(
                        filename, root, (*sub_path, "ref"), f"no definition named {node.name!r} ({names})"
                    )
                )
            if isinstance(node, AlreadyInvited) and not (node.study or rule_set.study):
                problems.append(
                    _located(
                        filename, root, (*sub_path, "already_invited"), "needs a study (or a top-level study)"
                    )
                )
        if known is not None:
            for name, ref_path in codelist_refs(criterion, path):
                if name not in known:
                    problems.append(_located(filename, root, ref_path, f"unknown codelist {name!r}"))
            if isinstance(known, Mapping):
                problems += _check_categories(criterion, path, known, filename, root)
    cycle = _definition_cycle(rule_set)
    if cycle:
        problems.append(
            _located(
                filename,
                root,
                ("definitions", cycle[0]),
                "definitions refer to each other in a loop: " + " -> ".join(cycle),
            )
        )
    return problems


def _check_categories(
    criterion: Kind,
    path: tuple[str | int, ...],
    known: Mapping[str, Collection[str] | None],
    filename: str,
    root: yaml.Node | None,
) -> list[str]:
    """A category no listed codelist has would silently match nothing: report it."""
    problems = []
    for sub_path, node in walk(criterion, path):
        groups = [
            (names, categories, (*sub_path, *where)) for names, categories, where in node.category_groups()
        ]
        for names, categories, where in groups:
            have: set[str] = set()
            for name in names:
                have |= set(known.get(name) or ())
            for i, category in enumerate(categories or ()):
                if category not in have:
                    listed = ", ".join(sorted(have)) or "none: no category column"
                    problems.append(
                        _located(
                            filename,
                            root,
                            (*where, i),
                            f"no row of {', '.join(names)} has category {category!r} (categories: {listed})",
                        )
                    )
    return problems


def _definition_cycle(rule_set: RuleSet) -> list[str] | None:
    def refs(criterion: Kind) -> list[str]:
        return [
            n.name for _, n in walk(criterion, ()) if isinstance(n, Ref) and n.name in rule_set.definitions
        ]

    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if state.get(name) == 1:
            return [*trail[trail.index(name) :], name]
        if state.get(name) == 2:
            return None
        state[name] = 1
        for nxt in refs(rule_set.definitions[name]):
            found = visit(nxt, [*trail, name])
            if found:
                return found
        state[name] = 2
        return None

    for name in rule_set.definitions:
        found = visit(name, [])
        if found:
            return found
    return None


def _located(filename: str, root: yaml.Node | None, loc: tuple[Any, ...], message: str) -> str:
    """file:line: field.path: message, with the line of the deepest node the path reaches."""
    line = 1
    node = root
    shown: list[str] = []
    for part in loc:
        if isinstance(part, int):
            shown.append(f"[{part}]")
        else:
            shown.append(("." if shown else "") + str(part))
        if node is None:
            continue
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    # An unknown field's own line is more useful than its value's.
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                node = None
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            node = None
    field = "".join(shown) or "(top level)"
    return f"{filename}:{line}: {field}: {message}"


# --- JSON Schema -----------------------------------------------------------------------------


def rule_set_json_schema() -> dict[str, Any]:
    """The JSON Schema editors use to check rule files (published at rules/rule-set.schema.json)."""
    schema = RuleSet.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_allow_ever(schema)}


def _allow_ever(node: Any) -> Any:
    """`window: ever` is shorthand the validator accepts; say so in the schema too."""
    if isinstance(node, dict):
        if node.get("$ref") == "#/$defs/Window":
            return {"anyOf": [{"const": "ever"}, dict(node)]}
        return {k: _allow_ever(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_allow_ever(v) for v in node]
    return node


def kinds_markdown() -> str:
    """The README's table of criterion kinds, from the classes' own docstrings (a test keeps the
    README equal to it, so a new kind is documented where rule writers look)."""
    rows = ["| criterion | holds when |", "|---|---|"]
    for kind in KINDS:
        first = " ".join((kind.__doc__ or "").strip().split("\n\n")[0].split())
        rows.append(f"| `{kind.key}` | {first} |")
    return "\n".join(rows) + "\n"


def rule_set_json_schema_text() -> str:
    return json.dumps(rule_set_json_schema(), indent=2, sort_keys=True) + "\n"


def write_json_schema(path: str | Path = SCHEMA_PATH) -> Path:
    path = Path(path)
    path.write_text(rule_set_json_schema_text(), encoding="utf-8")
    return path
