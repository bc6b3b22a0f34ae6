"""Each letter's own PDF is tagged: structure tree, language, title, and reading order.

Read back with pikepdf (a test dependency: it reads a PDF's objects and content streams as
qpdf parses them, independently of pypdf, which writes the letters)."""

from __future__ import annotations

import datetime as dt

import pytest

from recruit.letters.check import SAMPLE_GP, SAMPLE_PATIENT, SAMPLE_PRACTICE, sample_settings
from recruit.letters.pdf import DetailsTask, lay_out_details, render_html
from recruit.letters.render import FORMATS, Letter, LetterTemplates, PackKey, long_date, study_variables

pikepdf = pytest.importorskip("pikepdf")

NUMBER = "TEST-ABCD-EFGHJ"
TITLE = "INSTEP study: invitation letter"


@pytest.fixture(scope="module")
def letters(tmp_path_factory):
    """One letter's own PDF per format, written by the real printing path (lay_out_details)."""
    templates = LetterTemplates()
    study = study_variables(sample_settings())
    folder = tmp_path_factory.mktemp("tagged")
    out = {}
    for letter_format in FORMATS:
        key = PackKey(letter_format, SAMPLE_PRACTICE, SAMPLE_GP)
        pack_html = templates.pack_html(key, study, long_date(dt.date(2026, 3, 4)))
        # A draft pack carries a "DRAFT" mark on every page (position: fixed): tagged all the same.
        draft = letter_format == "easy_read"
        pack = render_html(templates.document([pack_html], draft=draft, title=TITLE))
        slots = templates.slots_html(Letter(key, SAMPLE_PATIENT, NUMBER), "a")
        html = templates.document([slots], draft=False, title=TITLE, slots=True)
        path = folder / f"{letter_format}.pdf"
        done = lay_out_details(DetailsTask(html, {0: pack}, (("a", 0, NUMBER, str(path)),)))
        assert done.placed == ((0, 0),)
        out[letter_format] = path
    return out


def _kids(element):
    kids = element.get("/K")
    if kids is None:
        return []
    return list(kids) if isinstance(kids, pikepdf.Array) else [kids]


def _walk(element):
    """Structure elements depth first (reading order)."""
    yield element
    for kid in _kids(element):
        if isinstance(kid, pikepdf.Dictionary) and "/S" in kid:
            yield from _walk(kid)


def _marked(owner):
    """(MCID, text shown with Tj inside it) for each marked-content sequence of a stream."""
    found, current = [], None
    for operands, op in pikepdf.parse_content_stream(owner):
        if str(op) == "BDC" and isinstance(operands[1], pikepdf.Dictionary) and "/MCID" in operands[1]:
            current = [int(operands[1].MCID), ""]
            found.append(current)
        elif str(op) == "Tj" and current is not None:
            current[1] += bytes(operands[0]).decode("latin-1")
        elif str(op) == "EMC":
            current = None
    return found


@pytest.mark.parametrize("letter_format", list(FORMATS))
def test_language_title_and_structure_tree(letters, letter_format):
    with pikepdf.open(letters[letter_format]) as pdf:
        assert str(pdf.Root.Lang) == "en-GB"
        assert str(pdf.docinfo.Title) == TITLE
        assert bool(pdf.Root.ViewerPreferences.DisplayDocTitle) is True
        assert bool(pdf.Root.MarkInfo.Marked) is True
        document = pdf.Root.StructTreeRoot.K[0]
        assert document.S == "/Document"
        kinds = [str(e.S) for e in _walk(document)]
        assert kinds.count("/H2") >= 4 and "/P" in kinds


@pytest.mark.parametrize("letter_format", list(FORMATS))
def test_all_content_is_in_the_tree_and_the_parent_tree_agrees(letters, letter_format):
    with pikepdf.open(letters[letter_format]) as pdf:
        nums = pdf.Root.StructTreeRoot.ParentTree.Nums
        parents = {int(nums[i]): nums[i + 1] for i in range(0, len(nums), 2)}
        in_tree = set()
        for element in _walk(pdf.Root.StructTreeRoot.K[0]):
            for kid in _kids(element):
                if isinstance(kid, int):
                    owner, mcid = element.Pg, kid
                elif isinstance(kid, pikepdf.Dictionary) and "/MCID" in kid:
                    owner, mcid = kid.Stm, int(kid.MCID)
                else:
                    continue
                assert parents[int(owner.StructParents)][mcid].objgen == element.objgen
                in_tree.add((owner.objgen, mcid))
        in_content = set()
        for page in pdf.pages:
            in_content |= {(page.obj.objgen, m) for m, _ in _marked(page)}
            for xobject in page.Resources.get("/XObject", {}).values():
                in_content |= {(xobject.objgen, m) for m, _ in _marked(xobject)}
        assert len(in_content) > 50
        assert in_content == in_tree


@pytest.mark.parametrize("letter_format", list(FORMATS))
def test_study_numbers_are_paragraphs_read_after_their_labels(letters, letter_format):
    with pikepdf.open(letters[letter_format]) as pdf:
        order = list(_walk(pdf.Root.StructTreeRoot.K[0]))
        numbered = []
        for page_no, page in enumerate(pdf.pages):
            for mcid, text in _marked(page):
                if text == NUMBER:
                    element = next(
                        e
                        for e in order
                        if e.get("/Pg") == page.obj and mcid in [k for k in _kids(e) if isinstance(k, int)]
                    )
                    assert element.S == "/P"
                    numbered.append((page_no, order.index(element)))
        assert [p for p, _ in numbered] == [0, len(pdf.pages) - 1]
        first, slip = (i for _, i in numbered)
        # Not at the very start: after the letterhead and date; and the slip's after its heading.
        assert 0 < first < next(i for i, e in enumerate(order) if e.S == "/H2")
        slip_heading = max(i for i, e in enumerate(order) if e.S == "/H2" and i < slip)
        # Between the slip's heading and its number only the "Study number:" label, no paragraph.
        assert "/P" not in [str(e.S) for e in order[slip_heading + 1 : slip]]


@pytest.mark.parametrize(
    ("letter_format", "smallest"), [("standard", 12), ("large_print", 16), ("easy_read", 16)]
)
def test_printed_study_numbers_are_large_enough(letters, letter_format, smallest):
    with pikepdf.open(letters[letter_format]) as pdf:
        sizes = [
            float(operands[1])
            for page in pdf.pages
            for operands, op in pikepdf.parse_content_stream(page)
            if str(op) == "Tf" and str(operands[0]) == "/RecruitNumberFont"
        ]
    assert len(sizes) == 2  # the letter and the reply slip
    assert min(sizes) >= smallest
