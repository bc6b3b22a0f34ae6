"""The mail-merge workbook: identifiers stay text, the sheet is readable, and its columns match
the Docmail address fields the code names (recruit.letters.mailmerge)."""

from __future__ import annotations

from openpyxl import load_workbook

from recruit.letters import mailmerge

# Synthetic only: 999 range, valid Modulus 11 (tests/integration/load/fhir_samples.py).
ROW = {
    "NHSNumber": "9990000018",
    "StudyNumber": "0012-ABC",
    "Postcode": "0AB 1CD",
    "PracticeODS": "00001",
    "FirstName": '=HYPERLINK("x")',
    "Surname": "Testpatient",
    "Address1": "1 A very long road name that goes on and on and on and on and on and on and on",
    "StreamPages1": 3,
}


def _sheet(tmp_path, columns):
    path = tmp_path / "m.xlsx"
    mailmerge.write_xlsx(path, columns, [ROW, {**ROW, "NHSNumber": 9990000026, "StudyNumber": 12}], "Letters")
    return load_workbook(path).active


def test_identifiers_are_text_cells_formatted_as_text(tmp_path):
    columns = ["NHSNumber", "StudyNumber", "Postcode", "PracticeODS", "StreamPages1"]
    ws = _sheet(tmp_path, columns)
    for row in (2, 3):
        for c in range(1, 5):
            cell = ws.cell(row=row, column=c)
            assert cell.data_type == "s", (columns[c - 1], cell.value)
            assert cell.number_format == "@", columns[c - 1]
    # Given as integers, identifiers are still written as text, digits kept exactly.
    assert ws["A3"].value == "9990000026" and ws["B3"].value == "12"
    assert ws["B2"].value == "0012-ABC" and ws["D2"].value == "00001"
    # A page count is a number Docmail adds up.
    assert ws["E2"].value == 3 and ws["E2"].data_type == "n"


def test_header_frozen_and_columns_wide_enough(tmp_path):
    columns = ["NHSNumber", "FirstName", "Surname", "Address1"]
    ws = _sheet(tmp_path, columns)
    assert ws.freeze_panes == "A2"
    assert ws["A1"].font.b
    widths = {c: ws.column_dimensions[c].width for c in "ABCD"}
    assert widths["A"] >= len("9990000018")
    assert widths["C"] >= len("Testpatient")
    assert widths["D"] <= 60  # capped, so one long line does not hide the rest
    assert ws["B2"].value.startswith("=") and ws["B2"].data_type == "s" and ws["B2"].quotePrefix


def test_mail_merge_columns_docmail_maps_are_docmail_fields():
    docmail = {f.lower() for f in mailmerge.DOCMAIL_FIELDS}
    assert "streampages1" in docmail
    for column in mailmerge.DOCMAIL_MAPPED:
        assert column in mailmerge.MAIL_MERGE_COLUMNS, column
        assert column.lower() in docmail, column
    # Everything a multiple address stream needs: name, address lines, pages per letter.
    assert {"Title", "FirstName", "Surname", "Address1", "StreamPages1"} <= set(mailmerge.DOCMAIL_MAPPED)
    assert "v2" in mailmerge.DOCMAIL_TEMPLATE_VERSION
