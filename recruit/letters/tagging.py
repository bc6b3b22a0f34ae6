"""Tagged PDF for each letter's own file: the structure tree WeasyPrint writes, carried over.

WeasyPrint tags the pack and the patient's details (pdf_tags: headings, paragraphs, pictures
with their text, in reading order, with the document's language and title). The stamper
(recruit.letters.pdf) then builds each letter's pages from those two PDFs, the pack drawn as a
form XObject; this module copies the structure of the letter's pages into the new file, so a
screen reader still reads the letter in order:

- the pack's elements, their marked content now inside the form XObject (marked-content
  references with /Stm, PDF 1.7 section 14.7.4.3);
- the patient's name and address and "Dear ...", after the letterhead and date;
- the study numbers recruit prints, as paragraphs of their own, after the letterhead and date
  and after the reply slip's heading.

Only a file holding one letter is tagged: letters.pdf, the print file, draws one XObject for
every letter of a pack, and one piece of content cannot belong to the structure of many letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import DictionaryObject

# Keys of a structure element copied as they are (attributes and texts a reader uses).
_KEPT = ("/A", "/Alt", "/ActualText", "/E", "/Lang", "/T", "/C")


@dataclass
class StructureBuilder:
    """The structure of one target file, built while its letter's pages are added."""

    writer: PdfWriter
    # The structure tree is a graph of pypdf objects read from WeasyPrint's PDF and walked by key,
    # whose kinds pypdf cannot know: Any for its nodes.
    root: Any = None
    document: Any = None
    document_ref: Any = None
    nums: list[Any] = field(default_factory=list)
    next_key: int = 0

    def start(self, lang: str | None, title: str | None) -> None:
        from pypdf.generic import (
            ArrayObject,
            BooleanObject,
            DictionaryObject,
            NameObject,
            NumberObject,
            TextStringObject,
        )

        w = self.writer
        parent_tree = DictionaryObject({NameObject("/Nums"): ArrayObject()})
        self.root = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/StructTreeRoot"),
                NameObject("/ParentTree"): w._add_object(parent_tree),
                NameObject("/ParentTreeNextKey"): NumberObject(0),
            }
        )
        root_ref = w._add_object(self.root)
        self.document = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/StructElem"),
                NameObject("/S"): NameObject("/Document"),
                NameObject("/P"): root_ref,
                NameObject("/K"): ArrayObject(),
            }
        )
        self.document_ref = w._add_object(self.document)
        self.root[NameObject("/K")] = ArrayObject([self.document_ref])
        catalog = w.root_object
        catalog[NameObject("/StructTreeRoot")] = root_ref
        catalog[NameObject("/MarkInfo")] = DictionaryObject({NameObject("/Marked"): BooleanObject(True)})
        catalog[NameObject("/ViewerPreferences")] = DictionaryObject(
            {NameObject("/DisplayDocTitle"): BooleanObject(True)}
        )
        if lang:
            catalog[NameObject("/Lang")] = TextStringObject(lang)
        if title:
            w.add_metadata({"/Title": title})

    def new_key(self, owner: Any) -> tuple[int, list[Any]]:
        """A parent-tree key for a page or XObject, and the list (by MCID) to fill for it."""
        from pypdf.generic import NameObject, NumberObject

        key = self.next_key
        self.next_key += 1
        owner[NameObject("/StructParents")] = NumberObject(key)
        parents: list[Any] = []
        self.nums.append((key, parents))
        return key, parents

    def finish(self) -> None:
        from pypdf.generic import ArrayObject, NameObject, NullObject, NumberObject

        nums = ArrayObject()
        for key, parents in self.nums:
            nums.append(NumberObject(key))
            nums.append(ArrayObject(p if p is not None else NullObject() for p in parents))
        self.root["/ParentTree"].get_object()[NameObject("/Nums")] = nums
        self.root[NameObject("/ParentTreeNextKey")] = NumberObject(self.next_key)


def as_dictionary(obj: object) -> DictionaryObject:
    """A PDF dictionary that WeasyPrint always writes (the catalogue, page resources), resolved."""
    from pypdf.generic import DictionaryObject, IndirectObject

    if isinstance(obj, IndirectObject):
        obj = obj.get_object()
    if not isinstance(obj, DictionaryObject):
        raise ValueError(f"expected a PDF dictionary, found {type(obj).__name__}")
    return obj


def source_structure(reader: PdfReader) -> tuple[list[Any], dict[int, int], str | None, str | None]:
    """A tagged PDF's top-level elements, its pages' object numbers -> index, /Lang and title."""
    root = as_dictionary(reader.trailer["/Root"])
    tree = root.get("/StructTreeRoot")
    if tree is None:
        return [], {}, None, None
    document = tree.get_object()["/K"]
    document = document[0] if isinstance(document, list) else document
    document = document.get_object()
    kids = document.get("/K", [])
    tops = [k.get_object() for k in (kids if isinstance(kids, list) else [kids])]
    # A page read from a file always has its reference (only a page built in memory has none).
    pages = {ref.idnum: i for i, page in enumerate(reader.pages) if (ref := page.indirect_reference)}
    lang = root.get("/Lang")
    metadata = reader.metadata
    title = metadata.get("/Title") if metadata else None
    return tops, pages, (str(lang) if lang else None), (str(title) if title else None)


def tops_on_page(tops: list[Any], pages: dict[int, int], page: int) -> list[Any]:
    """The top-level elements WeasyPrint made for one page (it makes them page by page)."""
    return [t for t in tops if "/Pg" in t and pages.get(t.raw_get("/Pg").idnum) == page]


def mcid_count(reader: PdfReader, page: int) -> int:
    """How many marked-content ids a tagged page uses (new ones on it start after them)."""
    tree = as_dictionary(reader.trailer["/Root"]).get("/StructTreeRoot")
    key = reader.pages[page].get("/StructParents")
    if tree is None or key is None:
        return 0
    nums = tree.get_object()["/ParentTree"].get_object().get("/Nums", [])
    for i in range(0, len(nums), 2):
        if nums[i] == key:
            return len(nums[i + 1].get_object())
    return 0


def copy_elements(
    builder: StructureBuilder,
    elements: list[Any],
    parent_ref: Any,
    page_ref: Any,
    parents: list[Any],
    stm: Any = None,
) -> list[Any]:
    """Copy structure elements of one source page; their marked content is now on page_ref
    (inside the form XObject stm when given). Returns the new elements' references."""
    from pypdf.generic import ArrayObject, DictionaryObject, NameObject, NumberObject

    w = builder.writer
    out = []
    for element in elements:
        new = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/StructElem"),
                NameObject("/S"): element["/S"],
                NameObject("/P"): parent_ref,
                NameObject("/Pg"): page_ref,
            }
        )
        for key in _KEPT:
            if key in element:
                new[NameObject(key)] = (
                    element[key].clone(w) if hasattr(element[key], "clone") else element[key]
                )
        ref = w._add_object(new)
        kids = element.get("/K", [])
        kids = kids if isinstance(kids, list) else [kids]
        new_kids = ArrayObject()
        for kid in kids:
            if isinstance(kid, int):
                mcid = int(kid)
                while len(parents) <= mcid:
                    parents.append(None)
                parents[mcid] = ref
                if stm is None:
                    new_kids.append(NumberObject(mcid))
                else:
                    new_kids.append(
                        DictionaryObject(
                            {
                                NameObject("/Type"): NameObject("/MCR"),
                                NameObject("/Pg"): page_ref,
                                NameObject("/Stm"): stm,
                                NameObject("/MCID"): NumberObject(mcid),
                            }
                        )
                    )
                continue
            child = kid.get_object()
            if isinstance(child, DictionaryObject) and "/S" in child:
                new_kids.extend(copy_elements(builder, [child], ref, page_ref, parents, stm))
            # Annotation references (/OBJR) are left out: letters carry no links or forms.
        new[NameObject("/K")] = new_kids
        out.append(ref)
    return out


def new_paragraph(
    builder: StructureBuilder, parent_ref: Any, page_ref: Any, mcid: int, parents: list[Any]
) -> Any:
    """A paragraph element for text recruit prints on the page itself (the study number)."""
    from pypdf.generic import ArrayObject, DictionaryObject, NameObject, NumberObject

    element = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/StructElem"),
            NameObject("/S"): NameObject("/P"),
            NameObject("/P"): parent_ref,
            NameObject("/Pg"): page_ref,
            NameObject("/K"): ArrayObject([NumberObject(mcid)]),
        }
    )
    ref = builder.writer._add_object(element)
    while len(parents) <= mcid:
        parents.append(None)
    parents[mcid] = ref
    return ref


def elements(kids: Any) -> list[Any]:
    """The structure elements among an element's kids (not marked-content ids or references)."""
    kids = kids if isinstance(kids, list) else [kids]
    return [k for k in kids if hasattr(k, "get_object") and "/S" in k.get_object()]


def first_of(refs: list[Any], kind: str) -> Any:
    """The reference of the first element of a type (depth first) among elements' references."""
    for ref in refs:
        element = ref.get_object()
        if element["/S"] == kind:
            return ref
        kids = element.get("/K")
        if isinstance(kids, list):
            found = first_of(elements(kids), kind)
            if found is not None:
                return found
    return None


def insert_after_first_kid(element_ref: Any, new: list[Any]) -> None:
    """Put new elements after an element's first child (in reading order)."""
    from pypdf.generic import NameObject

    for ref in new:
        ref.get_object()[NameObject("/P")] = element_ref
    element_ref.get_object()["/K"][1:1] = new


# A marked-content sequence as WeasyPrint writes it: /Tag <</MCID n>> BDC (text is written as
# hexadecimal glyph ids, so this pattern cannot occur inside text).
_MARKED = re.compile(rb"/[A-Za-z]+\s*<<\s*/MCID\s+(\d+)\s*>>\s*BDC")


def unlinked_as_artifacts(content: bytes, linked: set[int]) -> bytes:
    """Mark content that is in no structure element (WeasyPrint's page footers) as an artifact,
    which is what a reader skips, rather than leave it tagged but nowhere in the tree."""
    return _MARKED.sub(lambda m: m.group(0) if int(m.group(1)) in linked else b"/Artifact BMC", content)
