"""HTML to PDF (WeasyPrint), and the two layers of each letter stamped into one page (pypdf).

Each pack (letter and reply slip, without patient details) is laid out once; each letter's
details are laid out in documents of a few dozen letters (WeasyPrint's time per page grows with
the size of the document); then every page of a letter is written as the pack's page, drawn as a
PDF form XObject, with the letter's details on top. Splitting the details into chunks also lets
them be laid out in several processes at once.

WeasyPrint is given a URL fetcher that fetches nothing, so no text in a record can make it read
a file or the network (shared/reference/letters-and-review.md 5.2).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from recruit.errors import RecruitError
from recruit.letters import tagging
from recruit.letters.tagging import StructureBuilder
from recruit.private_files import PRIVATE_UMASK

if TYPE_CHECKING:  # pypdf is imported where it is used, so that `import recruit` stays quick
    from pypdf import PageObject, PdfReader, PdfWriter
    from pypdf.generic import IndirectObject, StreamObject

_T = TypeVar("_T")


SLIP_ANCHOR = "reply-slip"
# Positions in WeasyPrint are CSS pixels; allow a rounding error when comparing them.
_SLACK = 0.5


@dataclass(frozen=True)
class RenderedDoc:
    """A laid-out HTML document: its PDF and, for each page, the ids on it with their positions."""

    pdf: bytes
    anchors: tuple[dict[str, tuple[float, ...]], ...]

    @property
    def page_count(self) -> int:
        return len(self.anchors)

    def page_of(self, anchor: str) -> int | None:
        return next((i for i, page in enumerate(self.anchors) if anchor in page), None)

    def position(self, anchor: str) -> tuple[int, float] | None:
        """(page, y) of an id."""
        for i, page in enumerate(self.anchors):
            if anchor in page:
                return i, page[anchor][1]
        return None


def _fetch_nothing(url: str, *args: object, **kwargs: object) -> NoReturn:
    # Letters need no images, fonts or stylesheets from anywhere: refuse every URL.
    raise ValueError(f"letters load nothing from outside the document (asked for {url[:80]!r})")


def weasyprint_html() -> Any:
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:  # OSError: the Pango system libraries are missing
        detail = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise RecruitError(
            "Printing letters needs WeasyPrint and the Pango libraries (Debian or Ubuntu: "
            "apt install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0; see README.md). "
            f"The problem was: {detail}"
        ) from None
    return HTML


def render_html(html: str) -> RenderedDoc:
    """Lay out one HTML document and write its PDF."""
    document = weasyprint_html()(string=html, base_url=None, url_fetcher=_fetch_nothing).render()
    # Each id's position: (x, y, ...) in CSS pixels from the page's top left corner.
    anchors = tuple(
        {name: tuple(float(v) for v in point) for name, point in page.anchors.items()}
        for page in document.pages
    )
    # Tagged (structure tree, language from <html lang>, title from <title>), so each letter's
    # own PDF can be read aloud in order (recruit.letters.tagging).
    return RenderedDoc(document.write_pdf(pdf_tags=True), anchors)


Mapper = Callable[..., Iterator[Any]]


def process_pool(workers: int) -> ProcessPoolExecutor | None:
    """A pool of `workers` printing processes, or None for one (the work stays in this process).

    The processes are started fresh (spawn), never forked: a forked child would share the
    parent's database connections."""
    if workers <= 1:
        return None
    return _spawn_pool(workers)


def _spawn_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_private_files
    )


def _private_files() -> None:
    """In each printing process: the letters it writes are readable by their owner only."""
    os.umask(PRIVATE_UMASK)


def mapper(pool: ProcessPoolExecutor | None) -> Mapper:
    """map() over the pool, in order, results as they come; plain map without one."""
    return map if pool is None else pool.map


def render_many(htmls: Sequence[str], workers: int = 1) -> list[RenderedDoc]:
    """Lay out documents, in `workers` processes when there is more than one document."""
    if workers <= 1 or len(htmls) <= 1:
        return [render_html(html) for html in htmls]
    with _spawn_pool(min(workers, len(htmls))) as pool:
        return list(pool.map(render_html, htmls))


# --- stamping the two layers together --------------------------------------------------------


NUMBER_PLACES = ("number-place", "slip-number-place")
_NUMBER_FONT = "/RecruitNumberFont"
_PX_TO_PT = 0.75  # CSS pixels (1/96 inch) to PDF points (1/72 inch)


@dataclass(frozen=True)
class LetterPages:
    """Where one letter's pages come from: its pack, and the page of its details."""

    pack: RenderedDoc
    pack_id: int
    details: RenderedDoc
    details_id: int
    first_page: int
    study_number: str


def number_places(pack: RenderedDoc) -> dict[int, tuple[float, ...]]:
    """Page -> the box (x1, y1, x2, y2 in CSS pixels) the pack leaves for the study number."""
    places = {}
    for anchor in NUMBER_PLACES:
        found = next(((i, page[anchor]) for i, page in enumerate(pack.anchors) if anchor in page), None)
        if found is None or len(found[1]) < 4:
            where = "letterhead.html.j2" if anchor == "number-place" else "reply_slip.html.j2"
            raise RecruitError(
                f"The letter template {where} lost the box with the id {anchor} where recruit prints "
                "the study number; put it back."
            )
        places[found[0]] = found[1]
    return places


# Advance widths of Helvetica Bold (Adobe's AFM, units of 1/1000 em) for the characters of a
# study number; anything else is taken as wide as a capital.
_BOLD_WIDTHS = {
    **dict.fromkeys("0123456789", 556),
    **dict(
        zip(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            (
                722,
                722,
                722,
                722,
                667,
                611,
                778,
                722,
                278,
                556,
                722,
                611,
                833,
                722,
                778,
                667,
                778,
                722,
                667,
                611,
                722,
                667,
                944,
                667,
                667,
                611,
            ),
            strict=True,
        )
    ),
    "-": 333,
}


def number_size_and_place(
    study_number: str, box: tuple[float, ...], page_height: float
) -> tuple[float, float, float]:
    """(font size, left, baseline) in PDF points for a study number in its box: sized to the
    box's height (at most 18 pt), smaller only when the number would not fit the box's width."""
    x1, y1, x2, y2 = (v * _PX_TO_PT for v in box[:4])
    height = y2 - y1
    size = max(6.0, min(18.0, height * 0.62))
    inset = max(0.0, (height - size * 0.72) / 2)  # capitals are about 0.72 em tall
    margin = inset if height > 20 else 0.0  # a box with a border gets a margin inside it
    ems = sum(_BOLD_WIDTHS.get(c, 722) for c in study_number) / 1000
    if ems and size * ems > (x2 - x1) - 2 * margin:
        size = max(6.0, ((x2 - x1) - 2 * margin) / ems)
    baseline = page_height - y2 + max(0.0, (height - size * 0.72) / 2)
    return size, x1 + margin, baseline


def _number_text(
    study_number: str, box: tuple[float, ...], page_height: float, mcid: int | None = None
) -> bytes:
    """PDF operators printing the study number inside a box (Helvetica Bold, one of the fonts
    every PDF reader has). Study numbers are capital letters, digits and hyphens only."""
    if not all(c.isascii() and (c.isalnum() or c == "-") for c in study_number):
        raise RecruitError(f"A study number may hold only letters, digits and hyphens: {study_number!r}")
    size, left, baseline = number_size_and_place(study_number, box, page_height)
    text = f"q BT {_NUMBER_FONT} {size:.2f} Tf {left:.2f} {baseline:.2f} Td ({study_number}) Tj ET Q"
    if mcid is not None:  # tagged: a paragraph of its own in the structure tree
        text = f"/P <</MCID {mcid}>> BDC {text} EMC"
    return f"{text}\n".encode()


def _stream(obj: object) -> StreamObject:
    """A PDF stream (here: a page's form XObject that recruit itself wrote), resolved."""
    from pypdf.generic import IndirectObject, StreamObject

    if isinstance(obj, IndirectObject):
        obj = obj.get_object()
    if not isinstance(obj, StreamObject):
        raise ValueError(f"expected a PDF stream, found {type(obj).__name__}")
    return obj


@dataclass
class _Target:
    writer: PdfWriter
    xobjects: dict[tuple[int, int], IndirectObject] = field(default_factory=dict)
    font: IndirectObject | None = None
    # A file of one letter is tagged (recruit.letters.tagging); None for the print file.
    structure: StructureBuilder | None = None
    letters: int = 0


class Stamper:
    """Writes letters into PDFs: each page is the pack's page, with the letter's details and
    study number on top."""

    def __init__(self) -> None:
        from pypdf import PdfReader

        self._reader_cls = PdfReader
        self._readers: dict[tuple[str, int], PdfReader] = {}
        self._places: dict[int, dict[int, tuple[float, ...]]] = {}

    def _reader(self, kind: str, ident: int, doc: RenderedDoc) -> PdfReader:
        key = (kind, ident)
        if key not in self._readers:
            self._readers[key] = self._reader_cls(io.BytesIO(doc.pdf))
        return self._readers[key]

    @staticmethod
    def new_target(tagged: bool = False) -> _Target:
        """A new PDF; tagged for a file that will hold one letter (a patient's own copy)."""
        from pypdf import PdfWriter

        writer = PdfWriter()
        writer.add_metadata({"/Producer": "recruit", "/Title": "Invitation letters"})
        return _Target(writer, structure=StructureBuilder(writer) if tagged else None)

    def _font(self, target: _Target) -> IndirectObject:
        from pypdf.generic import DictionaryObject, NameObject

        if target.font is None:
            font = DictionaryObject()
            font[NameObject("/Type")] = NameObject("/Font")
            font[NameObject("/Subtype")] = NameObject("/Type1")
            font[NameObject("/BaseFont")] = NameObject("/Helvetica-Bold")
            font[NameObject("/Encoding")] = NameObject("/WinAnsiEncoding")
            target.font = target.writer._add_object(font)
        return target.font

    def _pack_xobject(self, target: _Target, letter: LetterPages, page_no: int) -> IndirectObject:
        from pypdf.generic import DecodedStreamObject, NameObject

        key = (letter.pack_id, page_no)
        if key not in target.xobjects:
            page = self._reader("pack", letter.pack_id, letter.pack).pages[page_no]
            form = DecodedStreamObject()
            form[NameObject("/Type")] = NameObject("/XObject")
            form[NameObject("/Subtype")] = NameObject("/Form")
            form[NameObject("/BBox")] = page.mediabox
            form[NameObject("/Resources")] = tagging.as_dictionary(page["/Resources"]).clone(target.writer)
            contents = page.get_contents()
            form.set_data(contents.get_data() if contents is not None else b"")
            target.xobjects[key] = target.writer._add_object(form.flate_encode())
        return target.xobjects[key]

    def add_letter(self, target: _Target, letter: LetterPages) -> int:
        """Append one letter's pages; the number of pages added."""
        from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject

        writer = target.writer
        tags = target.structure
        if tags is not None:
            if target.letters:
                raise ValueError("a tagged PDF holds one letter")
            pack_reader = self._reader("pack", letter.pack_id, letter.pack)
            pack_tops, pack_pages, lang, title = tagging.source_structure(pack_reader)
            details_tops, details_pages, _, _ = tagging.source_structure(
                self._reader("details", letter.details_id, letter.details)
            )
            tags.start(lang, title)
        elif not target.letters:
            # The print file is not tagged (see recruit.letters.tagging) but says its language.
            pack = self._reader("pack", letter.pack_id, letter.pack)
            lang = tagging.as_dictionary(pack.trailer["/Root"]).get("/Lang")
            if lang:
                writer.root_object[NameObject("/Lang")] = lang
        target.letters += 1
        if letter.pack_id not in self._places:
            self._places[letter.pack_id] = number_places(letter.pack)
        places = self._places[letter.pack_id]
        details = self._reader("details", letter.details_id, letter.details)
        mediabox = self._reader("pack", letter.pack_id, letter.pack).pages[0].mediabox
        for page_no in range(letter.pack.page_count):
            form = self._pack_xobject(target, letter, page_no)
            name = NameObject(f"/RecruitPack{page_no}")
            resources, xobjects, parts = DictionaryObject(), DictionaryObject(), []
            if page_no == 0:
                page = writer.add_page(details.pages[letter.first_page])
                for key, value in page.get("/Resources", DictionaryObject()).get_object().items():
                    resources[NameObject(key)] = value
                if "/XObject" in resources:
                    xobjects.update(tagging.as_dictionary(resources["/XObject"]))
                contents = page.get("/Contents")
                old = contents.get_object() if contents is not None else None
                parts = (
                    list(old)
                    if isinstance(old, ArrayObject)
                    else ([contents] if contents is not None else [])
                )
            else:
                page = writer.add_blank_page(width=mediabox.width, height=mediabox.height)
            xobjects[name] = form
            resources[NameObject("/XObject")] = xobjects
            stream = f"q {name} Do Q\n".encode()
            mcid = None
            if tags is not None:
                mcid = self._tag_page(
                    tags,
                    page,
                    page_no,
                    form,
                    letter,
                    (pack_tops, pack_pages, details_tops, details_pages),
                    page_no in places,
                )
            if page_no in places:
                fonts = DictionaryObject()
                if "/Font" in resources:
                    fonts.update(tagging.as_dictionary(resources["/Font"]))
                fonts[NameObject(_NUMBER_FONT)] = self._font(target)
                resources[NameObject("/Font")] = fonts
                stream += _number_text(
                    letter.study_number, places[page_no], float(mediabox.height), mcid if tags else None
                )
            page[NameObject("/Resources")] = resources
            under = DecodedStreamObject()
            under.set_data(stream)
            page[NameObject("/Contents")] = ArrayObject([writer._add_object(under), *parts])
        return letter.pack.page_count

    def _tag_page(
        self,
        tags: StructureBuilder,
        page: PageObject,
        page_no: int,
        form: IndirectObject,
        letter: LetterPages,
        sources: tuple[list[Any], dict[int, int], list[Any], dict[int, int]],
        has_number: bool,
    ) -> int | None:
        """Copy the structure of one of the letter's pages; the MCID for its study number."""
        pack_tops, pack_pages, details_tops, details_pages = sources
        page_ref = page.indirect_reference
        page_parents: list[Any] = []
        if page_no == 0 or has_number:
            _, page_parents = tags.new_key(page)
        before: list[Any] = []
        mcid = None
        if page_no == 0:
            details = tagging.tops_on_page(details_tops, details_pages, letter.first_page)
            before = tagging.copy_elements(tags, details, tags.document_ref, page_ref, page_parents)
            reader = self._reader("details", letter.details_id, letter.details)
            mcid = tagging.mcid_count(reader, letter.first_page)
        elif has_number:
            mcid = 0  # the page holds nothing else of its own: the pack is in the XObject
        _, form_parents = tags.new_key(form.get_object())
        tops = tagging.tops_on_page(pack_tops, pack_pages, page_no)
        refs = tagging.copy_elements(tags, tops, tags.document_ref, page_ref, form_parents, stm=form)
        linked = {i for i, parent in enumerate(form_parents) if parent is not None}
        xobject = _stream(form)
        xobject.set_data(tagging.unlinked_as_artifacts(xobject.get_data(), linked))
        if has_number and mcid is not None:
            before.insert(0, tagging.new_paragraph(tags, tags.document_ref, page_ref, mcid, page_parents))
        # Reading order: the number and the patient's details after the letterhead and date (the
        # letter section's first part), the slip's number after the reply slip's heading.
        section = tagging.first_of(refs, "/Sect")
        if section is not None and page_no > 0:
            kids = section.get_object().get("/K", [])
            section = next((k for k in tagging.elements(kids) if k.get_object()["/S"] == "/Div"), None)
        if before and section is not None and section.get_object().get("/K"):
            tagging.insert_after_first_kid(section, before)
            before = []
        tags.document["/K"].extend([*before, *refs])
        return mcid

    @staticmethod
    def write(target: _Target, path: Path) -> None:
        if target.structure is not None and target.structure.root is not None:
            target.structure.finish()
        with open(path, "wb") as handle:
            target.writer.write(handle)


# Why a letter could not be printed (keys of recruit.letters.select.REFUSALS).
DOES_NOT_FIT = "details_do_not_fit_window"
LAYOUT_FAILED = "layout_failed"


@dataclass(frozen=True)
class DetailsTask:
    """One document of letters' details to lay out, and each letter's own PDF to write."""

    html: str
    packs: dict[int, RenderedDoc]
    # (anchor, pack id, study number, where to write the letter's own PDF)
    letters: tuple[tuple[str, int, str, str], ...]
    # Each letter's details as a document of its own, laid out only if the whole chunk fails.
    singles: tuple[str, ...] = ()
    # The process that asked: once it has gone (killed), no more letters are written.
    parent_pid: int | None = None


@dataclass(frozen=True)
class DetailsDone:
    docs: tuple[RenderedDoc, ...]
    # For each letter: (index in docs, first page), or why it could not be printed.
    placed: tuple[tuple[int, int] | str, ...]


def lay_out_details(task: DetailsTask) -> DetailsDone:
    """Lay out a chunk of letters' details and write each letter's own PDF (run in a worker).

    One letter's details that cannot be laid out never stop the others: if the chunk fails, each
    letter is laid out alone, and only the ones that fail alone are left out."""
    docs: list[RenderedDoc] = []
    doc_of: list[int | None] = []
    try:
        docs.append(render_html(task.html))
        doc_of = [0] * len(task.letters)
    except RecruitError:
        raise
    except Exception:
        for html in task.singles:
            try:
                docs.append(render_html(html))
                doc_of.append(len(docs) - 1)
            except RecruitError:
                raise
            except Exception:
                doc_of.append(None)
    stamper = Stamper()
    placed: list[tuple[int, int] | str] = []
    for (anchor, pack_id, number, path), index in zip(task.letters, doc_of, strict=True):
        if index is None:
            placed.append(LAYOUT_FAILED)
            continue
        doc = docs[index]
        if not (fits(doc, anchor, "window") and fits(doc, anchor, "salutation")):
            placed.append(DOES_NOT_FIT)
            continue
        first = doc.page_of(anchor)
        if first is None:
            raise RecruitError(
                "The letter template patient_slots.html.j2 lost the id that marks where each letter "
                'starts (id="{{ letter.anchor }}"); put it back.'
            )
        if task.parent_pid not in (None, os.getpid()) and os.getppid() != task.parent_pid:
            break  # the run was stopped: write nothing more
        try:
            pages = LetterPages(task.packs[pack_id], pack_id, doc, -1, first, number)
            try:
                target = stamper.new_target(tagged=True)
                stamper.add_letter(target, pages)
            except RecruitError:
                raise
            except Exception:  # tags that cannot be copied never cost a patient their letter
                target = stamper.new_target()
                stamper.add_letter(target, pages)
            stamper.write(target, Path(path))
        except RecruitError:
            raise
        except Exception:
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
            placed.append(LAYOUT_FAILED)
            continue
        placed.append((index, first))
    return DetailsDone(tuple(docs), tuple(placed))


def chunked(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def fits(details: RenderedDoc, anchor: str, part: str) -> bool:
    """Whether the text of a slot ends above its limit (both marked by ids in the slots template)."""
    end = details.position(f"{anchor}-{part}-end")
    limit = details.position(f"{anchor}-{part}-limit")
    if limit is not None and end is None and details.position(anchor) is not None:
        return False  # the text ran off the page, end marker and all
    if end is None or limit is None:
        raise RecruitError(
            f"The letter template patient_slots.html.j2 lost the id {anchor}-{part}-end or "
            f"{anchor}-{part}-limit that shows whether a name and address fit; put it back."
        )
    return end[0] == limit[0] and end[1] <= limit[1] + _SLACK


ProgressFn = Callable[[int], None]
