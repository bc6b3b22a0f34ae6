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

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from recruit.errors import RecruitError
from recruit.load.status import (
    EVENT_STATUSES,
    MEDICATION_STATUSES,
)

SCHEMA_PATH = Path("rules") / "rule-set.schema.json"
MAX_STEPS = 62  # bit i of a signed 64-bit step_mask is step i

# The record statuses the loader stores (clinical_event.status, medication_issue.status), named
# once in recruit.load.status. A rule may count only some of them; a record loaded before
# statuses were kept (NULL) counts as a plain `recorded` event or an `unknown` issue.
EventStatus = Literal[EVENT_STATUSES]  # type: ignore[valid-type]
IssueStatus = Literal[MEDICATION_STATUSES]  # type: ignore[valid-type]
ISSUE_STATUSES = MEDICATION_STATUSES


# Given the parsed rule set: the codelist names that exist, or a mapping of name -> the values of
# its category column (None when it has none), which also lets categories be checked.
KnownCodelists = Callable[["RuleSet"], "Collection[str] | Mapping[str, Collection[str] | None]"]


class RuleSetError(RecruitError):
    """A rule file is broken; the message names file, line and field for each problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- windows and codelist selections ----------------------------------------------------------


class Window(_Strict):
    """Which dates count. Records after the index date never count (they are in its future).

    Write `ever`, `{last_months: N}`, `{last_days: N}` (both ending on the index date, both ends
    included) or `{start: DATE, end: DATE}` (end defaults to the index date).
    """

    ever: bool | None = None
    last_months: int | None = Field(default=None, ge=1, le=1200)
    last_days: int | None = Field(default=None, ge=1, le=36600)
    start: dt.date | None = None
    end: dt.date | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if value == "ever":
            return {"ever": True}
        if isinstance(value, str):
            raise ValueError(
                f"unknown window {value!r}: write ever, {{last_months: N}}, {{last_days: N}} "
                "or {start: DATE, end: DATE}"
            )
        return value

    @model_validator(mode="after")
    def _one_form(self) -> Window:
        forms = [
            self.ever is True,
            self.last_months is not None,
            self.last_days is not None,
            self.start is not None or self.end is not None,
        ]
        if sum(forms) != 1:
            raise ValueError("give exactly one of ever, last_months, last_days or start/end")
        if self.ever is False:
            raise ValueError("ever must be true (leave it out and give another window instead)")
        if (self.start is None) != (self.end is None) and self.start is None:
            raise ValueError("a window with an end needs a start")
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"window start {self.start} is after its end {self.end}")
        return self


EVER = Window(ever=True)


class _Codelists(_Strict):
    """One or more codelists, optionally narrowed to some values of their `category` column."""

    codelist: str | None = Field(default=None, description="One codelist name (or use codelists).")
    codelists: list[str] | None = Field(default=None, min_length=1)
    categories: list[str] | None = Field(
        default=None, min_length=1, description="Only rows whose category column is one of these."
    )

    @model_validator(mode="after")
    def _one_of(self) -> _Codelists:
        if (self.codelist is None) == (self.codelists is None):
            raise ValueError("give either codelist: NAME or codelists: [NAME, ...]")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return (self.codelist,) if self.codelist is not None else tuple(self.codelists or ())


# --- criteria --------------------------------------------------------------------------------


class Registered(_Strict):
    """Registered at the practice on the index date (and for at least N months before it).

    Many extracts say a patient is registered (a practice named in `generalPractitioner`, an
    active record) but not since when: the registration start is unknown. `unknown_start` says
    how such a registration counts: `counts` takes it as begun long enough before the index
    date; `does_not_count` (the default, as before) leaves the person out. A registration that
    has ended before the index date never counts.
    """

    for_at_least_months: int = Field(default=0, ge=0, le=1200)
    unknown_start: Literal["counts", "does_not_count"] = "does_not_count"


class Alive(_Strict):
    """No date of death on or before the index date."""


class NhsNumberVerified(_Strict):
    """The record carries an NHS number that passes its check digit and is not marked unverified
    (untraced). Without one, opt-outs and earlier invitations cannot be matched and no letter can
    be written, so searches leave such patients out at a step of their own and say so."""


class AgeBetween(_Strict):
    """Age in whole years on the index date, both ends included.

    A partial birth date (a year, or a year and month) is decided in the safe direction: the
    person must be at least `min` even if born on the last possible day, and at most `max` even
    if born on the first, so nobody can be too young or too old on any reading of the record.
    """

    min: int = Field(ge=0, le=130)
    max: int = Field(ge=0, le=130)

    @model_validator(mode="after")
    def _ordered(self) -> AgeBetween:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class HasCode(_Codelists):
    """A clinical event with a code from the codelist(s) in the window.

    occurrence `any` (default): any such event; `first`: the patient's first ever such event
    falls in the window (new onset); `last`: their most recent one does.
    """

    window: Window = EVER
    occurrence: Literal["any", "first", "last"] = "any"
    statuses: list[EventStatus] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Only events with one of these statuses count (default: every status). An event "
            "loaded without a status counts as recorded."
        ),
    )


class MedicationCount(_Codelists):
    """Enough prescription issues in the window: repeat prescribing shows as several issues
    spread over several calendar months, which one acute prescription cannot fake."""

    window: Window
    min_issues: int = Field(default=1, ge=1)
    min_distinct_months: int | None = Field(default=None, ge=1)
    course: Literal["any", "repeat", "acute"] = "any"
    statuses: list[IssueStatus] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Only issues with one of these statuses count (default: every status). An issue "
            "loaded without a status counts as unknown."
        ),
    )


class StatusSource(_Strict):
    """Codes (a codelist, optionally some categories) that mean one status."""

    codelist: str
    categories: list[str] | None = Field(default=None, min_length=1)
    status: str = Field(min_length=1)


class LatestCodeAmong(_Strict):
    """The most recent code among several codelists decides a status (status-like codes:
    a newer code replaces an older one). On one day, the source listed first wins."""

    sources: list[StatusSource] = Field(min_length=1)
    window: Window = EVER
    status_in: list[str] = Field(
        min_length=1, description="The criterion holds if the status is one of these."
    )
    when_none: bool = Field(default=False, description="Whether it holds when no code is in the window.")


class LikelyInWork(_Strict):
    """Dated evidence of work status: the most recent evidence inside the look-back decides.

    Holds (so an exclusion step excludes) when the deciding evidence has a status in
    `in_work_statuses`; with no evidence in the look-back it holds only if unknown is `exclude`.
    """

    look_back_months: int = Field(default=12, ge=1, le=1200)
    evidence: list[StatusSource] = Field(min_length=1)
    in_work_statuses: list[str] = Field(default=["in_work"], min_length=1)
    unknown: Literal["keep", "exclude"] = "keep"

    def as_latest(self) -> LatestCodeAmong:
        return LatestCodeAmong(
            sources=self.evidence,
            window=Window(last_months=self.look_back_months),
            status_in=self.in_work_statuses,
            when_none=self.unknown == "exclude",
        )


class AlreadyInvited(_Strict):
    """An invitation to the study exists (any status), matched by patient or NHS number."""

    study: str | None = Field(default=None, description="Study code; defaults to the rule set's study.")


class DoNotContact(_Strict):
    """The person asked not to be contacted (an invitation with status or reply do_not_contact)."""

    any_study: bool = Field(default=True, description="Count such a request made in any study.")
    study: str | None = None


class Criterion(_Strict):
    """Exactly one of the keys below."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    registered: Registered | None = None
    alive: Alive | None = None
    nhs_number_verified: NhsNumberVerified | None = None
    age_between: AgeBetween | None = None
    has_code: HasCode | None = None
    medication_count: MedicationCount | None = None
    latest_code_among: LatestCodeAmong | None = None
    likely_in_work: LikelyInWork | None = None
    already_invited: AlreadyInvited | None = None
    do_not_contact: DoNotContact | None = None
    all_: list[Criterion] | None = Field(default=None, alias="all", min_length=1)
    any_: list[Criterion] | None = Field(default=None, alias="any", min_length=1)
    not_: Criterion | None = Field(default=None, alias="not")
    ref: str | None = Field(default=None, description="The name of a definition.")

    @model_validator(mode="before")
    @classmethod
    def _empty_bodies(cls, value: Any) -> Any:
        # `alive:` with nothing after it reads as null; it means "with default settings".
        if isinstance(value, dict):
            return {k: ({} if v is None and k in _EMPTY_OK else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Criterion:
        given = [name for name in _KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            keys = ", ".join(k.rstrip("_") for k in _KINDS)
            raise ValueError(f"a criterion needs exactly one of: {keys} (found {len(given)})")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in _KINDS if getattr(self, name) is not None)

    @property
    def body(self) -> Any:
        return getattr(self, self.kind)


_KINDS = [name for name in Criterion.model_fields]
_EMPTY_OK = {"registered", "alive", "nhs_number_verified", "already_invited", "do_not_contact"}


class Step(_Strict):
    """One inclusion or exclusion, applied in file order."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=100)
    kind: Literal["include", "exclude"]
    reason: str = Field(min_length=1, description="Why, in words for a GP: shown in the flow table.")
    criterion: Criterion


class ScoreComponent(_Strict):
    """A weighted piece of out-of-work evidence; a candidate's score is the sum of the weights
    of the components that hold for them."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=100)
    weight: float
    why: str = Field(min_length=1, description="The reasoning behind the weight.")
    criterion: Criterion


class RuleSet(_Strict):
    """A search: who is in, who is out and why, in order."""

    model_config = ConfigDict(title="recruit rule set")

    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=100)
    description: str | None = None
    study: str | None = Field(default=None, description="Study code (study.code) the search is for.")
    codelist_directory: str | None = Field(
        default=None, description="Folder of codelists, relative to this file; default codelists/."
    )
    definitions: dict[str, Criterion] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    score: list[ScoreComponent] = Field(default_factory=list)

    @field_validator("steps", "score")
    @classmethod
    def _unique_ids(cls, items: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for item in items:
            if item.id in seen:
                raise ValueError(f"id {item.id!r} is used twice")
            seen.add(item.id)
        return items

    @field_validator("definitions")
    @classmethod
    def _definition_names(cls, definitions: dict[str, Criterion]) -> dict[str, Criterion]:
        for name in definitions:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"definition name {name!r}: use lower-case letters, digits and _")
        return definitions

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON: equal rule sets share it whatever their layout.

        Fields added later and left unset (`statuses`) are left out, so a rule set written
        before they existed keeps its fingerprint and its stored runs still match it."""
        data = _without_unset(self.model_dump(mode="json", by_alias=True), _ADDED_FIELDS)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def codelist_names(self) -> list[str]:
        """Every codelist the rule set uses, in first-use order."""
        names: dict[str, None] = {}
        for _, criterion in self.criteria():
            for name, _path in _codelist_refs(criterion, ()):
                names.setdefault(name, None)
        return list(names)

    def criteria(self) -> Iterator[tuple[tuple[str | int, ...], Criterion]]:
        """Every top-level criterion with its location in the file."""
        for name, criterion in self.definitions.items():
            yield ("definitions", name), criterion
        for i, step in enumerate(self.steps):
            yield ("steps", i, "criterion"), step.criterion
        for i, component in enumerate(self.score):
            yield ("score", i, "criterion"), component.criterion


_ADDED_FIELDS = frozenset({"statuses"})


def _without_unset(node: Any, names: frozenset[str]) -> Any:
    if isinstance(node, dict):
        return {k: _without_unset(v, names) for k, v in node.items() if not (k in names and v is None)}
    if isinstance(node, list):
        return [_without_unset(v, names) for v in node]
    return node


def walk(
    criterion: Criterion, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], Criterion]]:
    """This criterion and every criterion nested in it, with their paths."""
    yield path, criterion
    kind = criterion.kind
    alias = kind.rstrip("_")
    if kind in ("all_", "any_"):
        for i, child in enumerate(criterion.body):
            yield from walk(child, (*path, alias, i))
    elif kind == "not_":
        yield from walk(criterion.body, (*path, alias))


def _codelist_refs(criterion: Criterion, path: tuple[str | int, ...]) -> Iterator[tuple[str, tuple]]:
    for sub_path, node in walk(criterion, path):
        body, kind = node.body, node.kind
        if kind in ("has_code", "medication_count"):
            if body.codelist is not None:
                yield body.codelist, (*sub_path, kind, "codelist")
            for i, name in enumerate(body.codelists or ()):
                yield name, (*sub_path, kind, "codelists", i)
        elif kind in ("latest_code_among", "likely_in_work"):
            field = "sources" if kind == "latest_code_among" else "evidence"
            for i, source in enumerate(getattr(body, field)):
                yield source.codelist, (*sub_path, kind, field, i, "codelist")


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
            _located(filename, root, tuple(err["loc"]), _message(err))
            for err in exc.errors(include_url=False)
        ]
        raise RuleSetError("\n".join(problems)) from None
    problems = _check_references(rule_set, filename, root, known_codelists)
    if problems:
        raise RuleSetError("\n".join(problems))
    return rule_set


def _message(err: ErrorDetails) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field (misspelt?)"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _check_references(
    rule_set: RuleSet, filename: str, root: yaml.Node, known_codelists: KnownCodelists | None
) -> list[str]:
    problems: list[str] = []
    known = known_codelists(rule_set) if known_codelists else None
    for path, criterion in rule_set.criteria():
        for sub_path, node in walk(criterion, path):
            if node.kind == "ref" and node.ref not in rule_set.definitions:
                names = ", ".join(rule_set.definitions) or "none"
                problems.append(
                    _located(
                        filename, root, (*sub_path, "ref"), f"no definition named {node.ref!r} ({names})"
                    )
                )
            if node.kind == "already_invited" and not (node.body.study or rule_set.study):
                problems.append(
                    _located(
                        filename, root, (*sub_path, "already_invited"), "needs a study (or a top-level study)"
                    )
                )
        if known is not None:
            for name, ref_path in _codelist_refs(criterion, path):
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
    criterion: Criterion,
    path: tuple[str | int, ...],
    known: Mapping[str, Collection[str] | None],
    filename: str,
    root: yaml.Node,
) -> list[str]:
    """A category no listed codelist has would silently match nothing: report it."""
    problems = []
    for sub_path, node in walk(criterion, path):
        body, kind = node.body, node.kind
        groups: list[tuple[tuple[str, ...], list[str] | None, tuple]] = []
        if kind in ("has_code", "medication_count"):
            groups.append((body.names, body.categories, (*sub_path, kind, "categories")))
        elif kind in ("latest_code_among", "likely_in_work"):
            field = "sources" if kind == "latest_code_among" else "evidence"
            for i, source in enumerate(getattr(body, field)):
                groups.append(
                    ((source.codelist,), source.categories, (*sub_path, kind, field, i, "categories"))
                )
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
    def refs(criterion: Criterion) -> list[str]:
        return [n.ref for _, n in walk(criterion, ()) if n.kind == "ref" and n.ref in rule_set.definitions]

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


def rule_set_json_schema_text() -> str:
    return json.dumps(rule_set_json_schema(), indent=2, sort_keys=True) + "\n"


def write_json_schema(path: str | Path = SCHEMA_PATH) -> Path:
    path = Path(path)
    path.write_text(rule_set_json_schema_text(), encoding="utf-8")
    return path
