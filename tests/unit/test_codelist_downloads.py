"""OpenCodelists CSVs are read exactly as downloaded (OpenCodelists' published download formats:
``code,term`` for SNOMED CT, CTV3 and Read v2; ``code,term,dmd_id[,dmd_type,bnf_code]`` and the
older ``dmd_type,dmd_id,dmd_name,bnf_code`` for dm+d; CRLF line ends), with the coding system,
version and provenance taken from the manifest entry, a sidecar or the file name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recruit.codelists import CodelistError, CodeSystem, load_codelist

SNOMED = "code,term\r\n82423001,Chronic pain\r\n203082005,Fibromyalgia\r\n"
CTV3 = "code,term\r\nXSGKA,Chronic pain\r\nXE1Y2,Fibromyalgia\r\n"
DMD_CURRENT = (
    "code,term,dmd_id,dmd_type,bnf_code\r\n"
    "42010211000001106,Co-codamol 8mg/500mg tablets,42010211000001106,VMP,0402010ABAAAAAA\r\n"
    "660011000001106,Co-codamol 8mg/500mg tablets,660011000001106,AMP,0402010ABBBAAAA\r\n"
)
DMD_OLD = (
    "dmd_type,dmd_id,dmd_name,bnf_code\r\n"
    "VMP,42010211000001106,Co-codamol 8mg/500mg tablets,0402010ABAAAAAA\r\n"
)


def _folder(tmp_path: Path, files: dict[str, str], entry: str) -> Path:
    (tmp_path / "codelists.yaml").write_text(f"codelists:\n  - {entry}\n", encoding="utf-8")
    for name, body in files.items():
        (tmp_path / name).write_bytes(body.encode("utf-8"))
    return tmp_path


def test_snomed_download_named_as_downloaded(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {"user-someone-chronic-pain-snomed-2f6dc8a9.csv": SNOMED},
        "{name: pain, file: user-someone-chronic-pain-snomed-2f6dc8a9.csv}",
    )
    cl = load_codelist("pain", folder)
    assert {(c.system, c.code) for c in cl.codes} == {
        (CodeSystem.SNOMEDCT, "82423001"),
        (CodeSystem.SNOMEDCT, "203082005"),
    }
    assert cl.version == "2f6dc8a9"
    assert cl.codes[0].term == "Chronic pain"
    assert cl.codes[0].source  # every row cites where it came from
    assert (CodeSystem.SNOMEDCT, "82423001") in cl


def test_system_and_id_from_the_manifest_entry(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {"pain.csv": CTV3},
        "{name: pain, file: pain.csv, system: CTV3, opencodelists: user/someone/chronic-pain/1a2b3c4d}",
    )
    cl = load_codelist("pain", folder)
    assert cl.codes_for("ctv3") == {"XSGKA", "XE1Y2"}
    assert cl.version == "1a2b3c4d"
    assert "https://www.opencodelists.org/codelist/user/someone/chronic-pain/1a2b3c4d/" in cl.sources
    assert "OpenCodelists user/someone/chronic-pain/1a2b3c4d" in cl.codes[0].source


def test_opensafely_codelists_json_sidecar(tmp_path: Path) -> None:
    name = "user-anschaf-codeine-for-pain-dmd.csv"
    folder = _folder(tmp_path, {name: DMD_CURRENT}, f"{{name: codeine, file: {name}}}")
    sidecar = {
        "files": {
            name: {
                "id": "user/anschaf/codeine-for-pain-dmd/165e5574",
                "url": "https://www.opencodelists.org/codelist/user/anschaf/codeine-for-pain-dmd/165e5574/",
                "downloaded_at": "2024-02-16 17:04:36.485757Z",
                "sha": "4944a10864f355e33fd3c534d838c9fa4f428e2a",
            }
        }
    }
    (folder / "codelists.json").write_text(json.dumps(sidecar), encoding="utf-8")
    cl = load_codelist("codeine", folder)
    assert {c.system for c in cl.codes} == {CodeSystem.DMD}
    assert cl.version == "165e5574"
    assert any("downloaded 2024-02-16" in s for s in cl.sources)
    first = cl.codes[0]
    assert first.attrs["dmd_type"] == "VMP" and first.attrs["bnf_code"] == "0402010ABAAAAAA"
    assert "code" not in first.attrs and "term" not in first.attrs


def test_old_style_dmd_download_and_own_sidecar(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"opioids.csv": DMD_OLD}, "{name: opioids, file: opioids.csv}")
    (folder / "opioids.yaml").write_text(
        "version: '2020-04-15'\nurl: https://www.opencodelists.org/codelist/x/y/2020-04-15/\n",
        encoding="utf-8",
    )
    cl = load_codelist("opioids", folder)
    assert [(c.system, c.code, c.term) for c in cl.codes] == [
        (CodeSystem.DMD, "42010211000001106", "Co-codamol 8mg/500mg tablets")
    ]
    assert cl.version == "2020-04-15"  # from the sidecar; dm+d from its own dmd_id column
    assert "https://www.opencodelists.org/codelist/x/y/2020-04-15/" in cl.sources


def test_unknown_system_says_how_to_name_it(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"pain.csv": CTV3}, "{name: pain, file: pain.csv}")
    with pytest.raises(CodelistError, match="coding system is not known: add 'system: snomedct'"):
        load_codelist("pain", folder)


def test_bad_code_in_download_names_line_and_system(tmp_path: Path) -> None:
    body = "code,term\r\n82423001,Chronic pain\r\nXSGKA,Chronic pain\r\n"
    folder = _folder(tmp_path, {"pain.csv": body}, "{name: pain, file: pain.csv, system: snomedct}")
    with pytest.raises(CodelistError, match=r"pain\.csv:3: field 'code': 'XSGKA'.*snomedct"):
        load_codelist("pain", folder)


def test_other_columns_are_refused_plainly(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"pain.csv": "id,name\r\n1,x\r\n"}, "{name: pain, file: pain.csv}")
    with pytest.raises(CodelistError, match="OpenCodelists download"):
        load_codelist("pain", folder)


def test_own_format_is_unchanged(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {"t.csv": "code,system,term,source\nXSGKA,ctv3,Chronic pain,s\n"},
        "{name: t, file: t.csv, version: v1, sources: [s]}",
    )
    cl = load_codelist("t", folder)
    assert cl.version == "v1" and cl.sources == ("s",) and cl.codes[0].source == "s"


def test_a_search_run_stores_the_download_provenance(tmp_path: Path) -> None:
    from sqlalchemy import select

    from recruit.query.run import store_codelists
    from recruit.tables import CODELIST, CODES
    from tests.search_helpers import fresh_engine

    folder = _folder(
        tmp_path,
        {"opensafely-chronic-pain-snomed-2f6dc8a9.csv": SNOMED},
        "{name: pain, file: opensafely-chronic-pain-snomed-2f6dc8a9.csv, opencodelists: "
        "opensafely/chronic-pain-snomed/2f6dc8a9}",
    )
    engine = fresh_engine(f"sqlite:///{tmp_path / 'recruit.db'}")
    try:
        with engine.begin() as conn:
            ids = store_codelists(conn, {"pain": load_codelist("pain", folder)})
            stored = conn.execute(select(CODELIST).where(CODELIST.c.id == ids["pain"])).one()
            codes = set(conn.execute(select(CODES.c.code_system, CODES.c.code)).all())
    finally:
        engine.dispose()
    assert stored.version == "2f6dc8a9"
    assert "https://www.opencodelists.org/codelist/opensafely/chronic-pain-snomed/2f6dc8a9/" in stored.source
    assert codes == {("snomedct", "82423001"), ("snomedct", "203082005")}
