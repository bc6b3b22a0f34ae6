"""recruit audit on a synthetic region: no identifiers, true figures, reproducible, two runs compared."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re

import pytest
import yaml
from sqlalchemy import func, insert, select

from recruit.audit import Rule, audit
from recruit.load import load_extract
from recruit.models import Invitation, Patient, Practice, ReviewDecision, SearchResult, StepCount
from recruit.query.run import run_search
from tests.audit_helpers import INDEX, RULES, synthetic_region
from tests.helpers import run_cli
from tests.integration.test_cli_search import ROOT
from tests.search_helpers import fresh_engine


@pytest.fixture
def region(db_url, tmp_path):
    return synthetic_region(db_url, tmp_path, practices=3, patients=600)


def outputs(paths) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in paths)


def test_the_report_csv_and_json_hold_no_patient_identifier(region, tmp_path):
    _, paths = audit(region.engine, [region.run_id], tmp_path / "out", Rule())
    assert {p.name for p in paths} >= {"audit.html", "audit.csv", "audit.json"}
    text = outputs(paths)
    with region.engine.connect() as conn:
        patients = conn.execute(select(Patient.__table__)).mappings().all()
        practice_names = " ".join(conn.execute(select(Practice.name)).scalars())
        notes = conn.execute(
            select(ReviewDecision.reason_text).where(ReviewDecision.reason_text.is_not(None))
        )
        free_text = {n for (n,) in notes}
    assert len(patients) > 500
    # Words the report may hold for reasons of its own: practice names, the rule file, its headings.
    vocabulary = set(re.findall(r"[A-Za-z']+", practice_names + RULES.read_text() + "Declined Replied"))
    words = set(re.findall(r"[A-Za-z'-]+", text))
    checked = 0
    for p in patients:
        if p["nhs_number"]:
            assert p["nhs_number"] not in text
            checked += 1
        dob = p["date_of_birth"]
        for form in (dob.isoformat(), dob.strftime("%d/%m/%Y"), dob.strftime("%d-%b-%Y")):
            assert form not in text, f"a date of birth ({form}) appears in the report"
        if p["postcode"]:
            assert p["postcode"] not in text and p["postcode"].replace(" ", "") not in text
        full = f"{p['given_name']} {p['family_name']}"
        assert full not in text
        for name in (p["given_name"], p["family_name"]):
            if name and name not in vocabulary:
                assert name not in words, f"a patient's name ({name}) appears in the report"
    assert checked > 500
    for note in free_text:  # the GP's own words stay in the practice
        assert note not in text


def test_without_suppression_the_figures_are_the_database_counts(region, tmp_path):
    report, _ = audit(region.engine, [region.run_id], tmp_path / "out", Rule(enabled=False))
    figures = {(f["column"], f["item"]): f["number"] for f in report.runs[0].records()}
    with region.engine.connect() as conn:
        counts = conn.execute(select(StepCount.__table__).where(StepCount.run_id == region.run_id)).all()
        candidates = conn.execute(
            select(func.count()).where(
                SearchResult.run_id == region.run_id, SearchResult.outcome == "candidate"
            )
        ).scalar()
        decisions = conn.execute(
            select(ReviewDecision.decision).where(ReviewDecision.run_id == region.run_id)
        )
        decided = [d for (d,) in decisions]
        invitations = conn.execute(select(Invitation.status, Invitation.reply)).all()
    for c in counts:
        assert figures[("all", f"step{c.step_index}.excluded")] == c.excluded
    assert figures[("all", "searched")] == counts[0].entering
    assert figures[("all", "candidates")] == candidates == counts[-1].kept
    assert figures[("all", "review.screened")] == len(decided)
    assert figures[("all", "review.approved")] == decided.count("invite")
    sent = [i for i in invitations if i.status != "drafted"]
    assert figures[("all", "letters.invited")] == len(sent)
    assert figures[("all", "letters.drafted")] == len(invitations) - len(sent)
    assert figures[("all", "replies.interested")] == sum(i.reply == "interested" for i in sent)
    assert figures[("all", "replies.now_in_work")] == sum(i.reply == "now_in_work" for i in sent)
    assert figures[("all", "replies.replied")] == sum(i.reply is not None for i in sent)
    assert figures[("all", "letters.refused.no_postal_address")] == 2
    practices = [c for c in {col for col, _ in figures} if c not in ("all",) and not c.startswith("extract")]
    assert len(practices) == 3
    assert sum(figures[(p, "searched")] for p in practices) == figures[("all", "searched")]


def test_rerunning_from_the_recorded_fingerprints_gives_identical_figures(db_url, tmp_path):
    region = synthetic_region(db_url, tmp_path, practices=3, patients=600, review=False)
    audit(region.engine, [region.run_id], tmp_path / "first", Rule())
    recorded = json.loads((tmp_path / "first" / "audit.json").read_text())["runs"][0]
    provenance = recorded["provenance"]
    rules = tmp_path / "first" / recorded["rules_file"]
    assert hashlib.sha256(rules.read_bytes()).hexdigest() == recorded["rule_set_text_sha256"]

    # Someone else: their own database, the same extract files (same fingerprint), the saved rules.
    # (Before any letters: the already-invited step reads the invitations a database holds.)
    engine = fresh_engine(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    load_extract(engine, [region.extract_dir / "fhir"], extract_date=INDEX)
    again = run_search(
        engine,
        rules,
        index_date=dt.date.fromisoformat(provenance["index_date"]),
        practice=provenance["practice_ods_code"],
    )
    audit(engine, [again], tmp_path / "second", Rule())
    rerun = json.loads((tmp_path / "second" / "audit.json").read_text())["runs"][0]
    for field in ("rule_set_fingerprint", "codelist_fingerprints", "extract_fingerprints", "index_date"):
        assert rerun["provenance"][field] == provenance[field]

    def search_figures(run):
        return {
            (f["column"], f["item"]): f["shown"]
            for f in run["figures"]
            if f["column"].startswith("extract")
            or f["item"] in ("searched", "excluded_by_rules", "candidates")
            or f["item"].startswith("step")
        }

    first, second = search_figures(recorded), search_figures(rerun)
    assert len(first) > 40
    assert first == second


def test_two_runs_side_by_side_with_differences_per_step(region, tmp_path):
    rules = yaml.safe_load(RULES.read_text())
    original_version = rules["version"]
    rules["version"] = "no-dementia-step"
    rules["steps"] = [s for s in rules["steps"] if s["id"] != "dementia"]
    changed = tmp_path / "instep-changed.yaml"
    changed.write_text(yaml.safe_dump(rules, sort_keys=False))
    with region.engine.begin() as conn:  # a reason code that is markup must stay text
        candidate = conn.execute(
            select(SearchResult.patient_id)
            .where(SearchResult.run_id == region.run_id, SearchResult.outcome == "candidate")
            .where(~SearchResult.patient_id.in_(select(ReviewDecision.patient_id)))
            .limit(1)
        ).scalar_one()
        conn.execute(
            insert(ReviewDecision.__table__).values(
                run_id=region.run_id,
                patient_id=candidate,
                decision="do_not_invite",
                reason_code="<b>odd</b>",
                reviewer="Dr Test",
            )
        )
    second = run_search(region.engine, changed, index_date=dt.date(2026, 11, 1))
    db = str(region.engine.url.render_as_string(hide_password=False))
    out = tmp_path / "cmp"
    result = run_cli("audit", str(region.run_id), str(second), "--out", str(out), "--db", db, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "audit.html" in result.stdout
    html = (out / "audit.html").read_text()
    assert "Two runs side by side" in html
    assert html.count("<svg") >= 4  # both runs' totals side by side, then each run's own
    assert "&lt;b&gt;odd&lt;/b&gt;" in html and "<b>odd</b>" not in html
    with (out / "audit-comparison.csv").open() as f:
        rows = {r["figure"]: r for r in csv.DictReader(f)}
    dementia = next(r for label, r in rows.items() if label.startswith("dementia:"))
    assert dementia[f"run {second}"] == "not in this run"
    searched = rows["Records searched"]
    assert searched[f"run {region.run_id}"] == searched[f"run {second}"] and searched["difference"] == "0"
    data = json.loads((out / "audit.json").read_text())
    assert [r["provenance"]["rule_set_version"] for r in data["runs"]] == [
        original_version,
        "no-dementia-step",
    ]
    assert len(data["comparison"]) == len(rows)


def test_a_missing_run_is_one_plain_line(tmp_path):
    assert run_cli("db", "upgrade", "--db", str(tmp_path / "r.db"), cwd=ROOT).returncode == 0
    result = run_cli(
        "audit", "42", "--out", str(tmp_path / "out"), "--db", f"sqlite:///{tmp_path / 'r.db'}", cwd=ROOT
    )
    assert result.returncode == 1
    assert "There is no search run 42" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("audit", "--threshold", "2", "--db", f"sqlite:///{tmp_path / 'r.db'}", cwd=ROOT)
    assert result.returncode == 1 and "--threshold 2 is too low" in result.stderr
