"""FHIR XML (R4 and STU3) read into the JSON-shaped dicts fhir.py takes, so XML and JSON share
every rule, quarantine and count.

FHIR XML says nothing of cardinality or primitive types (a single <identifier> is a list in
JSON; value="true" is a boolean, value="1.5" a number). Both come from fhir.resources' own
models: each model's fields say whether they hold a list and of what type. A resource is read
with the STU3 models when its meta.profile (or its Bundle's) is an STU3 profile, as GP Connect's
are; otherwise with the R4B models (R4 input).

Why not fhir.resources' own XML reader (model_validate_xml): it needs lxml, validates the whole
resource (about 1,000 to 6,000 resources a second per core, the cost --strict pays) and refuses
a resource for any flaw, without naming a field recruit could quarantine; recruit reads a few
fields and quarantines only what it cannot read.

Parsing is safe with the standard library's expat: FHIR XML never has a DTD, so a document
declaring one (<!DOCTYPE ...>), or any entity, is refused before anything is expanded or
fetched (no external entities, no entity expansion bombs).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from functools import cache
from typing import Any, NoReturn
from xml.parsers import expat

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
STU3_PROFILE_MARK = "/STU3/"

# kinds of field
BOOL, INT, DEC, STR, RES, CX, XHTML = "bool", "int", "dec", "str", "res", "cx", "xhtml"
_INT_META = {"Integer", "UnsignedInt", "PositiveInt"}
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_DEC_TEXT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


class XmlRefused(Exception):
    """The whole file cannot be read (not well-formed, a DTD, not FHIR)."""


class Node:
    """One XML element: its local name, attributes, child elements and line."""

    __slots__ = ("name", "attrs", "children", "line", "fhir")

    def __init__(self, name: str, attrs: dict[str, str], line: int, fhir: bool) -> None:
        self.name = name
        self.attrs = attrs
        self.children: list[Node] = []
        self.line = line
        self.fhir = fhir


def parse(raw: bytes) -> Node:
    """The element tree of an XML document (text, comments and the narrative's XHTML dropped)."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[Node] = []
    root: list[Node] = []
    skip = [0]  # depth inside a non-FHIR element (the narrative's <div>)

    def refuse_dtd(*_: object) -> NoReturn:
        raise XmlRefused(
            "the file declares a DTD (<!DOCTYPE>), which FHIR XML never has; it was not read, "
            "since a DTD can make a reader fetch or expand other content"
        )

    def start(name: str, attrs: dict[str, str]) -> None:
        if skip[0]:
            skip[0] += 1
            return
        ns, _, local = name.rpartition(" ")
        if ns and ns != FHIR_NS:
            if stack:
                skip[0] = 1
                return
            raise XmlRefused(f"the root element <{local}> is not in the FHIR namespace ({FHIR_NS})")
        node = Node(local, attrs, parser.CurrentLineNumber, True)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)

    def end(_: str) -> None:
        if skip[0]:
            skip[0] -= 1
            return
        stack.pop()

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.ExternalEntityRefHandler = refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(raw, True)
    except expat.ExpatError as exc:
        what = expat.ErrorString(exc.code) if exc.code else str(exc)
        raise XmlRefused(f"not well-formed XML (line {exc.lineno}: {what})") from None
    if not root:
        raise XmlRefused("the file holds no XML element")
    return root[0]


# --- field kinds from fhir.resources' models ------------------------------------------------


def _kind(annotation: Any) -> tuple[bool, str, Any]:
    """(holds a list, kind, model type for a complex field) from a model field's annotation."""
    a, many = annotation, False
    while True:
        origin = typing.get_origin(a)
        if origin in (typing.Union, types.UnionType):
            args = [x for x in typing.get_args(a) if x is not type(None)]
            if len(args) != 1:
                return many, STR, None
            a = args[0]
        elif origin is list:
            many, a = True, typing.get_args(a)[0]
        elif origin is typing.Annotated:
            base, *meta = typing.get_args(a)
            names = {type(m).__name__ for m in meta}
            if "Xhtml" in names:
                return many, XHTML, None
            if names & _INT_META:
                return many, INT, None
            if "Decimal" in names:
                return many, DEC, None
            return many, (BOOL if base is bool else STR), None
        elif a is bool:
            return many, BOOL, None
        else:
            klass = getattr(a, "_model_klass", None)
            if isinstance(klass, str):
                if klass.endswith(".resource.Resource"):
                    return many, RES, None
                return many, CX, a
            return many, STR, None


Schema = dict[str, tuple[bool, str, Any]]


@cache
def _schema(model: Any) -> Schema:
    out: Schema = {}
    for name, field in model.model_fields.items():
        if name.endswith("__ext") or name == "fhir_comments":
            continue
        out[field.alias or name] = _kind(field.annotation)
    return out


@cache
def _resource_schema(rtype: str, stu3: bool) -> Schema | None:
    """The fields of a resource type, from the STU3 or the R4B models (the other when only it
    has the type); None when neither knows it."""
    from fhir.resources.R4B import get_fhir_model_class as r4b
    from fhir.resources.STU3 import get_fhir_model_class as stu3_class

    for get in (stu3_class, r4b) if stu3 else (r4b, stu3_class):
        try:
            return _schema(get(rtype))
        except (KeyError, ValueError, LookupError, ImportError):
            continue
    return None


def _sub_schema(target: Any) -> Schema | None:
    try:
        return _schema(target.get_model_klass())
    except (ImportError, AttributeError):
        return None


# --- conversion -------------------------------------------------------------------------------


class Problem(Exception):
    def __init__(self, reason: str, field: str) -> None:
        super().__init__(reason)
        self.reason, self.field = reason, field


class _Conv:
    """Converts one resource; the first malformed element is kept as its problem, the rest of
    the resource is still converted (so a quarantined Patient still names who it was)."""

    def __init__(self, stu3: bool) -> None:
        self.stu3 = stu3
        self.problem: Problem | None = None

    def flaw(self, reason: str, field: str) -> None:
        if self.problem is None:
            self.problem = Problem(reason, field)

    def resource(self, node: Node) -> dict[str, Any]:
        out: dict[str, Any] = {"resourceType": node.name}
        self.fill(out, node, _resource_schema(node.name, self.stu3), node.name)
        return out

    def fill(self, out: dict[str, Any], node: Node, schema: Schema | None, path: str) -> None:
        for key in ("id", "url"):
            if key in node.attrs:
                out[key] = node.attrs[key]
        groups: dict[str, list[Node]] = {}
        for child in node.children:
            groups.setdefault(child.name, []).append(child)
        for name, nodes in groups.items():
            where = f"{path}.{name}"
            spec = schema.get(name) if schema is not None else None
            if spec is None:
                many, kind, target = (
                    name in ("extension", "modifierExtension") or len(nodes) > 1,
                    STR if _primitive_like(nodes[0]) else CX,
                    None,
                )
            else:
                many, kind, target = spec
            if kind == XHTML:
                continue
            if not many and len(nodes) > 1:
                self.flaw(
                    f"{where} appears {len(nodes)} times (lines {nodes[0].line} and "
                    f"{nodes[1].line}) but holds one value",
                    where,
                )
                nodes = nodes[:1]
            if kind == RES:
                values: list[Any] = [self.contained(n, where) for n in nodes]
                values = [v for v in values if v is not None]
                if values:
                    out[name] = values if many else values[0]
            elif kind == CX:
                sub = _sub_schema(target) if target is not None else None
                items = []
                for n in nodes:
                    item: dict[str, Any] = {}
                    self.fill(item, n, sub, where)
                    items.append(item)
                out[name] = items if many else items[0]
            else:
                self.primitives(out, name, nodes, kind, many, where)

    def contained(self, node: Node, where: str) -> dict[str, Any] | None:
        inner = [c for c in node.children if c.fhir]
        if len(inner) != 1:
            self.flaw(f"{where} (line {node.line}) should hold one resource", where)
            return None
        return self.resource(inner[0])

    def primitives(
        self, out: dict[str, Any], name: str, nodes: list[Node], kind: str, many: bool, where: str
    ) -> None:
        values: list[Any] = []
        extras: list[dict[str, Any] | None] = []
        for n in nodes:
            text = n.attrs.get("value")
            values.append(None if text is None else self.typed(text, kind, where, n.line))
            extra: dict[str, Any] = {}
            if "id" in n.attrs:
                extra["id"] = n.attrs["id"]
            exts = [c for c in n.children if c.name == "extension"]
            if exts:
                ext_schema = _resource_schema("Extension", self.stu3)
                items = []
                for e in exts:
                    item: dict[str, Any] = {}
                    self.fill(item, e, ext_schema, f"{where}.extension")
                    items.append(item)
                extra["extension"] = items
            if len(exts) != len(n.children):
                self.flaw(f"{where} (line {n.line}) is a single value but holds other elements", where)
            extras.append(extra or None)
        if many:
            if any(v is not None for v in values):
                out[name] = values
            if any(extras):
                out["_" + name] = extras
        else:
            if values[0] is not None:
                out[name] = values[0]
            if extras[0]:
                out["_" + name] = extras[0]

    def typed(self, text: str, kind: str, where: str, line: int) -> Any:
        if kind == BOOL:
            if text in ("true", "false"):
                return text == "true"
            self.flaw(f"{where} (line {line}) should be true or false", where)
            return None
        if kind == INT:
            if _INT_TEXT.fullmatch(text):
                return int(text)
            self.flaw(f"{where} (line {line}) should be a whole number", where)
            return None
        if kind == DEC:
            if _DEC_TEXT.fullmatch(text):
                # as JSON reads the same digits: 5 an integer, 5.0 a number with a point
                return int(text) if _INT_TEXT.fullmatch(text) else float(text)
            self.flaw(f"{where} (line {line}) should be a number", where)
            return None
        return text


def _primitive_like(node: Node) -> bool:
    return "value" in node.attrs and all(c.name == "extension" for c in node.children)


def _is_stu3(node: Node) -> bool:
    for child in node.children:
        if child.name == "meta":
            for p in child.children:
                if p.name == "profile" and STU3_PROFILE_MARK in p.attrs.get("value", ""):
                    return True
    return False


# --- resources of a file ----------------------------------------------------------------------


class Item(typing.NamedTuple):
    """A resource read from XML, or why it could not be: (resource, fullUrl, entry, problem).

    With no resource: the entry's request, as JSON has it ({"method": ..., "url": ...}), or a
    Bundle with no entries; recruit.load.files decides what each is, for JSON and XML alike."""

    resource: dict[str, Any] | None
    full_url: str | None
    entry: int | None
    problem: Problem | None
    request: dict[str, Any] | None = None
    empty_bundle: bool = False


def items(raw: bytes) -> Iterator[Item]:
    """The resources of an XML file: one resource, or a Bundle's entries (Bundles inside a
    Bundle give their entries under the outer entry's number). Raises XmlRefused."""
    yield from document(raw)[1]


NOT_A_BUNDLE = object()


def document(raw: bytes) -> tuple[Any, Iterator[Item]]:
    """The file's Bundle type (NOT_A_BUNDLE for a single resource) and its resources, as
    items(); the type decides whether the Bundle's references stay within it. Raises XmlRefused."""
    root = parse(raw)
    kind: Any = NOT_A_BUNDLE
    if root.name == "Bundle":
        kind = next((c.attrs.get("value") for c in root.children if c.name == "type"), None)
    return kind, _items(root, _is_stu3(root), None)


def _items(root: Node, stu3: bool, outer: int | None) -> Iterator[Item]:
    if root.name != "Bundle":
        conv = _Conv(stu3 or _is_stu3(root))
        res = conv.resource(root)
        yield Item(res, None, outer, conv.problem)
        return
    entries = [c for c in root.children if c.name == "entry"]
    if not entries:
        yield Item(None, None, outer, None, empty_bundle=True)
        return
    for i, entry in enumerate(entries):
        number = i if outer is None else outer
        full_url = next((c.attrs.get("value") for c in entry.children if c.name == "fullUrl"), None)
        holders = [c for c in entry.children if c.name == "resource"]
        inner = [c for h in holders for c in h.children if c.fhir]
        if len(holders) > 1 or len(inner) > 1:
            where = "Bundle.entry.resource"
            problem = Problem(f"{where} (line {entry.line}) should hold one resource", where)
            yield Item(None, None, number, problem)
            continue
        if not inner:
            yield Item(None, None, number, None, request=_request(entry))
            continue
        res_node = inner[0]
        if res_node.name == "Bundle":
            yield from _items(res_node, stu3 or _is_stu3(res_node), number)
            continue
        conv = _Conv(stu3 or _is_stu3(res_node))
        res = conv.resource(res_node)
        yield Item(res, full_url, number, conv.problem)


def _request(entry: Node) -> dict[str, Any] | None:
    """An entry's request (method and url), as JSON carries it."""
    for child in entry.children:
        if child.name == "request":
            return {c.name: c.attrs.get("value") for c in child.children if c.name in ("method", "url")}
    return None
