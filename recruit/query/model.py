"""The query model: one frozen class per criterion kind, and the rule set as a tree of them.

A rule file writes a criterion as a one-key mapping (`has_code: {codelist: ...}`, `all: [...]`,
`ref: name`); here each kind is a class of its own, told apart by that key (a pydantic
discriminated union), so every engine (the SQL compiler, the plain-Python reference evaluator,
review's explanations) can dispatch on the class through one table (`KindTable`) and a kind an
engine forgot is an error when the engine is imported, not a silent fall-through.

Adding a kind: write its class here (subclass `Kind`, give it a `key` and add it to `KINDS`),
then one function per engine, registered in that engine's table.

The rule-file reader (line numbers in errors, JSON Schema) is recruit.rules.model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from recruit.errors import RecruitError
from recruit.load.status import EVENT_STATUSES, MEDICATION_STATUSES

MAX_STEPS = 62  # bit i of a signed 64-bit step_mask is step i

# The record statuses the loader stores (clinical_event.status, medication_issue.status), named
# once in recruit.load.status. A rule may count only some of them; a record loaded before
# statuses were kept (NULL) counts as a plain `recorded` event or an `unknown` issue.
EventStatus = Literal[EVENT_STATUSES]  # type: ignore[valid-type]
IssueStatus = Literal[MEDICATION_STATUSES]  # type: ignore[valid-type]
ISSUE_STATUSES = MEDICATION_STATUSES


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


class StatusSource(_Strict):
    """Codes (a codelist, optionally some categories) that mean one status."""

    codelist: str
    categories: list[str] | None = Field(default=None, min_length=1)
    status: str = Field(min_length=1)


# --- criteria --------------------------------------------------------------------------------


class Kind(_Strict):
    """A criterion kind. In a rule file it is the one-key mapping `{key: settings}`; the class
    holds the settings. `key` names the kind in files, flow tables and error messages."""

    key: ClassVar[str]
    # The records the kind reads ("events", "medications"): search warnings name them when an
    # extract carries none.
    reads: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, value: Any) -> Any:
        if isinstance(value, dict) and list(value) == [cls.key]:
            return cls._settings(value[cls.key])
        return value

    @classmethod
    def _settings(cls, inner: Any) -> Any:
        # `alive:` with nothing after it reads as null; it means "with default settings".
        return {} if inner is None else inner

    def file_form(self, mode: str = "python", exclude_none: bool = False) -> dict[str, Any]:
        """The criterion as a rule file writes it: `{key: settings}` (what dumps and keys use)."""
        return {self.key: self._dumped(self.model_dump(mode=mode, exclude_none=exclude_none))}

    def file_json(self) -> str:
        """Canonical JSON of the file form: equal criteria, equal text (engines key on it)."""
        return json.dumps(self.file_form("json", exclude_none=True), sort_keys=True, separators=(",", ":"))

    def _dumped(self, settings: Any) -> Any:
        return settings

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The file's form: an object with the kind's key and its settings under it."""
        settings = handler(schema)
        return {
            "type": "object",
            "title": cls.__name__,
            "description": (cls.__doc__ or "").strip(),
            "properties": {cls.key: cls._settings_schema(settings)},
            "required": [cls.key],
            "additionalProperties": False,
        }

    @classmethod
    def _settings_schema(cls, settings: JsonSchemaValue) -> JsonSchemaValue:
        if settings.get("required"):
            return settings
        return {"anyOf": [settings, {"type": "null"}]}  # `alive:` with nothing after it

    def children(self) -> tuple[Criterion, ...]:
        """The criteria this one combines (all / any / not); none for the rest."""
        return ()

    def codelist_refs(self) -> Iterator[tuple[str, tuple[str | int, ...]]]:
        """(codelist name, path of the field naming it, relative to this criterion)."""
        return iter(())

    def category_groups(self) -> Iterator[tuple[tuple[str, ...], list[str] | None, tuple[str | int, ...]]]:
        """(codelist names, categories asked for, path of the categories field)."""
        return iter(())


class _CodelistKind(Kind):
    """One or more codelists, optionally narrowed to some values of their `category` column."""

    codelist: str | None = Field(default=None, description="One codelist name (or use codelists).")
    codelists: list[str] | None = Field(default=None, min_length=1)
    categories: list[str] | None = Field(
        default=None, min_length=1, description="Only rows whose category column is one of these."
    )

    @model_validator(mode="after")
    def _one_of(self) -> _CodelistKind:
        if (self.codelist is None) == (self.codelists is None):
            raise ValueError("give either codelist: NAME or codelists: [NAME, ...]")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return (self.codelist,) if self.codelist is not None else tuple(self.codelists or ())

    def codelist_refs(self) -> Iterator[tuple[str, tuple[str | int, ...]]]:
        if self.codelist is not None:
            yield self.codelist, (self.key, "codelist")
        for i, name in enumerate(self.codelists or ()):
            yield name, (self.key, "codelists", i)

    def category_groups(self) -> Iterator[tuple[tuple[str, ...], list[str] | None, tuple[str | int, ...]]]:
        yield self.names, self.categories, (self.key, "categories")


class _StatusKind(Kind):
    """Kinds whose codes come as status sources (latest_code_among, likely_in_work)."""

    sources_field: ClassVar[str]

    def status_sources(self) -> list[StatusSource]:
        return list(getattr(self, self.sources_field))

    def codelist_refs(self) -> Iterator[tuple[str, tuple[str | int, ...]]]:
        for i, source in enumerate(self.status_sources()):
            yield source.codelist, (self.key, self.sources_field, i, "codelist")

    def category_groups(self) -> Iterator[tuple[tuple[str, ...], list[str] | None, tuple[str | int, ...]]]:
        for i, source in enumerate(self.status_sources()):
            yield (source.codelist,), source.categories, (self.key, self.sources_field, i, "categories")


class Registered(Kind):
    """Registered at the practice on the index date (and for at least N months before it).

    Many extracts say a patient is registered (a practice named in `generalPractitioner`, an
    active record) but not since when: the registration start is unknown. `unknown_start` says
    how such a registration counts: `counts` takes it as begun long enough before the index
    date; `does_not_count` (the default, as before) leaves the person out. A registration that
    has ended before the index date never counts.
    """

    key: ClassVar[str] = "registered"
    for_at_least_months: int = Field(default=0, ge=0, le=1200)
    unknown_start: Literal["counts", "does_not_count"] = "does_not_count"


class Alive(Kind):
    """No date of death on or before the index date."""

    key: ClassVar[str] = "alive"


class NhsNumberVerified(Kind):
    """The record carries an NHS number that passes its check digit and is not marked unverified
    (untraced). Without one, opt-outs and earlier invitations cannot be matched and no letter can
    be written, so searches leave such patients out at a step of their own and say so."""

    key: ClassVar[str] = "nhs_number_verified"


class AgeBetween(Kind):
    """Age in whole years on the index date, both ends included.

    A partial birth date (a year, or a year and month) is decided in the safe direction: the
    person must be at least `min` even if born on the last possible day, and at most `max` even
    if born on the first, so nobody can be too young or too old on any reading of the record.
    """

    key: ClassVar[str] = "age_between"
    min: int = Field(ge=0, le=130)
    max: int = Field(ge=0, le=130)

    @model_validator(mode="after")
    def _ordered(self) -> AgeBetween:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class HasCode(_CodelistKind):
    """A clinical event with a code from the codelist(s) in the window.

    occurrence `any` (default): any such event; `first`: the patient's first ever such event
    falls in the window (new onset); `last`: their most recent one does.
    """

    key: ClassVar[str] = "has_code"
    reads: ClassVar[tuple[str, ...]] = ("events",)
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


class CodeOnDays(_CodelistKind):
    """Codes from the codelist(s) recorded on at least N different days in the window.

    A condition coded at several consultations is an ongoing one: chronic pain coded on three
    separate days says more than one code entered once (and several codes entered at one visit
    still count as one day).
    """

    key: ClassVar[str] = "code_on_days"
    reads: ClassVar[tuple[str, ...]] = ("events",)
    window: Window = EVER
    min_days: int = Field(ge=1, le=10_000, description="The least number of different days.")
    statuses: list[EventStatus] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Only events with one of these statuses count (default: every status). An event "
            "loaded without a status counts as recorded."
        ),
    )


class MedicationCount(_CodelistKind):
    """Enough prescription issues in the window: repeat prescribing shows as several issues
    spread over several calendar months, which one acute prescription cannot fake."""

    key: ClassVar[str] = "medication_count"
    reads: ClassVar[tuple[str, ...]] = ("medications",)
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


class LatestCodeAmong(_StatusKind):
    """The most recent code among several codelists decides a status (status-like codes:
    a newer code replaces an older one). On one day, the source listed first wins."""

    key: ClassVar[str] = "latest_code_among"
    reads: ClassVar[tuple[str, ...]] = ("events",)
    sources_field: ClassVar[str] = "sources"
    sources: list[StatusSource] = Field(min_length=1)
    window: Window = EVER
    status_in: list[str] = Field(
        min_length=1, description="The criterion holds if the status is one of these."
    )
    when_none: bool = Field(default=False, description="Whether it holds when no code is in the window.")


class LikelyInWork(_StatusKind):
    """Dated evidence of work status: the most recent evidence inside the look-back decides.

    Holds (so an exclusion step excludes) when the deciding evidence has a status in
    `in_work_statuses`; with no evidence in the look-back it holds only if unknown is `exclude`.
    """

    key: ClassVar[str] = "likely_in_work"
    reads: ClassVar[tuple[str, ...]] = ("events",)
    sources_field: ClassVar[str] = "evidence"
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


class AlreadyInvited(Kind):
    """An invitation to the study exists (any status), matched by patient or NHS number."""

    key: ClassVar[str] = "already_invited"
    study: str | None = Field(default=None, description="Study code; defaults to the rule set's study.")


class DoNotContact(Kind):
    """The person asked not to be contacted (an invitation with status or reply do_not_contact)."""

    key: ClassVar[str] = "do_not_contact"
    any_study: bool = Field(default=True, description="Count such a request made in any study.")
    study: str | None = None


class _OneField(Kind):
    """A kind whose file form holds one value, not a mapping of settings (`all: [...]`,
    `not: {...}`, `ref: name`): the class keeps it in the field named by `inner`."""

    inner: ClassVar[str]

    @classmethod
    def _settings(cls, value: Any) -> Any:
        return {cls.inner: value}

    def _dumped(self, settings: Any) -> Any:
        return settings[self.inner]

    @classmethod
    def _settings_schema(cls, settings: JsonSchemaValue) -> JsonSchemaValue:
        return settings["properties"][cls.inner]


class _Combination(_OneField):
    """all / any: a list of criteria under the kind's key."""

    inner: ClassVar[str] = "items"
    items: list[Criterion] = Field(min_length=1)

    def children(self) -> tuple[Criterion, ...]:
        return tuple(self.items)


class AllOf(_Combination):
    """Every criterion in the list holds."""

    key: ClassVar[str] = "all"


class AnyOf(_Combination):
    """At least one criterion in the list holds."""

    key: ClassVar[str] = "any"


class Not(_OneField):
    """The criterion under it does not hold."""

    key: ClassVar[str] = "not"
    inner: ClassVar[str] = "item"
    item: Criterion

    def children(self) -> tuple[Criterion, ...]:
        return (self.item,)


class Ref(_OneField):
    """The criterion of a named definition."""

    key: ClassVar[str] = "ref"
    inner: ClassVar[str] = "name"
    name: str = Field(description="The name of a definition.")


# Every kind, in the order files, flow tables and error messages list them.
KINDS: tuple[type[Kind], ...] = (
    Registered,
    Alive,
    NhsNumberVerified,
    AgeBetween,
    HasCode,
    CodeOnDays,
    MedicationCount,
    LatestCodeAmong,
    LikelyInWork,
    AlreadyInvited,
    DoNotContact,
    AllOf,
    AnyOf,
    Not,
    Ref,
)
KIND_BY_KEY: dict[str, type[Kind]] = {kind.key: kind for kind in KINDS}
KIND_KEYS = ", ".join(KIND_BY_KEY)
# The field each one-value kind keeps its value in (files do not write it: `all: [...]`).
INNER_FIELDS = {kind.key: kind.inner for kind in KINDS if issubclass(kind, _OneField)}


def _kind_key(value: Any) -> str | None:
    """The discriminator: a parsed criterion's key, or the one key of a mapping from a file."""
    if isinstance(value, Kind):
        return value.key
    if isinstance(value, dict) and len(value) == 1:
        (key,) = value
        return key if key in KIND_BY_KEY else None
    return None


Criterion = Annotated[
    Union[  # noqa: UP007 (a union of Annotated members needs the long form)
        Annotated[Registered, Tag("registered")],
        Annotated[Alive, Tag("alive")],
        Annotated[NhsNumberVerified, Tag("nhs_number_verified")],
        Annotated[AgeBetween, Tag("age_between")],
        Annotated[HasCode, Tag("has_code")],
        Annotated[CodeOnDays, Tag("code_on_days")],
        Annotated[MedicationCount, Tag("medication_count")],
        Annotated[LatestCodeAmong, Tag("latest_code_among")],
        Annotated[LikelyInWork, Tag("likely_in_work")],
        Annotated[AlreadyInvited, Tag("already_invited")],
        Annotated[DoNotContact, Tag("do_not_contact")],
        Annotated[AllOf, Tag("all")],
        Annotated[AnyOf, Tag("any")],
        Annotated[Not, Tag("not")],
        Annotated[Ref, Tag("ref")],
    ],
    Discriminator(
        _kind_key,
        custom_error_type="criterion",
        custom_error_message=f"a criterion needs exactly one of: {KIND_KEYS}",
    ),
    # Dumped in the file's form, by the criterion's own class (a union would try each member).
    PlainSerializer(
        lambda criterion, info: criterion.file_form(info.mode, info.exclude_none), return_type=dict
    ),
]
"""Any criterion kind: what a step, a score component or a definition holds."""

for _kind in KINDS:
    _kind.model_rebuild()

_CRITERION = TypeAdapter(Criterion)


def parse_criterion(data: Any) -> Kind:
    """A criterion from its file form (`{"has_code": {...}}`)."""
    return _CRITERION.validate_python(data)


# --- engines' dispatch -----------------------------------------------------------------------

R = TypeVar("R")


class KindTable(Generic[R]):
    """One engine's function for each criterion kind: the one place the engine dispatches on kind.

    `complete()`, called where the engine's module ends, fails the import when a kind has no
    function, so a kind added to the model cannot silently fall through an engine.
    """

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self._functions: dict[type[Kind], Callable[..., R]] = {}

    def register(self, *kinds: type[Kind]) -> Callable[[Callable[..., R]], Callable[..., R]]:
        def add(function: Callable[..., R]) -> Callable[..., R]:
            for kind in kinds:
                if kind in self._functions:
                    raise RecruitError(f"{self.engine}: two functions for the {kind.key!r} kind")
                self._functions[kind] = function
            return function

        return add

    def __call__(self, criterion: Kind, *args: Any, **kwargs: Any) -> R:
        function = self._functions.get(type(criterion))
        if function is None:
            raise RecruitError(f"{self.engine} cannot handle a {criterion.key!r} criterion")
        return function(criterion, *args, **kwargs)

    def missing(self) -> list[str]:
        return [kind.key for kind in KINDS if kind not in self._functions]

    def complete(self) -> KindTable[R]:
        if missing := self.missing():
            raise RecruitError(f"{self.engine} has no function for: {', '.join(missing)}")
        return self


# --- the rule set ------------------------------------------------------------------------------


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
    def _definition_names(cls, definitions: dict[str, Kind]) -> dict[str, Kind]:
        for name in definitions:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"definition name {name!r}: use lower-case letters, digits and _")
        return definitions

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON: equal rule sets share it whatever their layout.

        The JSON is the form rule sets had when runs were first stored (each criterion listing
        every kind of its day, unused ones null; fields added later and left unset omitted), so
        a stored run's fingerprint still matches its rule file."""
        data = _without_unset(self.model_dump(mode="json", by_alias=True), _ADDED_FIELDS)
        data["definitions"] = {k: _stored_form(v) for k, v in data["definitions"].items()}
        for item in (*data["steps"], *data["score"]):
            item["criterion"] = _stored_form(item["criterion"])
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def codelist_names(self) -> list[str]:
        """Every codelist the rule set uses, in first-use order."""
        names: dict[str, None] = {}
        for _, criterion in self.criteria():
            for name, _path in codelist_refs(criterion, ()):
                names.setdefault(name, None)
        return list(names)

    def criteria(self) -> Iterator[tuple[tuple[str | int, ...], Kind]]:
        """Every top-level criterion with its location in the file."""
        for name, criterion in self.definitions.items():
            yield ("definitions", name), criterion
        for i, step in enumerate(self.steps):
            yield ("steps", i, "criterion"), step.criterion
        for i, component in enumerate(self.score):
            yield ("score", i, "criterion"), component.criterion

    def resolve(self, criterion: Kind) -> Kind:
        """The criterion itself, or the one its reference names (through chains of names)."""
        seen = 0
        while isinstance(criterion, Ref) and seen <= len(self.definitions):
            criterion = self.definitions[criterion.name]
            seen += 1
        return criterion


_ADDED_FIELDS = frozenset({"statuses"})
# The keys a criterion had when stored runs' fingerprints were first taken (all of them listed,
# unused ones null); a kind added since appears only where it is used.
_STORED_KEYS = (
    "registered",
    "alive",
    "nhs_number_verified",
    "age_between",
    "has_code",
    "medication_count",
    "latest_code_among",
    "likely_in_work",
    "already_invited",
    "do_not_contact",
    "all",
    "any",
    "not",
    "ref",
)


def _stored_form(node: dict[str, Any]) -> dict[str, Any]:
    ((key, settings),) = node.items()
    if key in ("all", "any"):
        settings = [_stored_form(child) for child in settings]
    elif key == "not":
        settings = _stored_form(settings)
    return {**dict.fromkeys(_STORED_KEYS), key: settings}


def _without_unset(node: Any, names: frozenset[str]) -> Any:
    if isinstance(node, dict):
        return {k: _without_unset(v, names) for k, v in node.items() if not (k in names and v is None)}
    if isinstance(node, list):
        return [_without_unset(v, names) for v in node]
    return node


def walk(criterion: Kind, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Kind]]:
    """This criterion and every criterion nested in it, with their paths in the file."""
    yield path, criterion
    if isinstance(criterion, Not):
        yield from walk(criterion.item, (*path, criterion.key))
    else:
        for i, child in enumerate(criterion.children()):
            yield from walk(child, (*path, criterion.key, i))


def codelist_refs(
    criterion: Kind, path: tuple[str | int, ...]
) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    """Every codelist named in a criterion (not through references), with its path in the file."""
    for sub_path, node in walk(criterion, path):
        for name, where in node.codelist_refs():
            yield name, (*sub_path, *where)
