"""Benchmark: the whole InSTEP search over a million patients on SQLite, PostgreSQL and DuckDB.

    python bench/bench_search.py [--patients 1000000] [--postgres URL] [--workdir DIR]
        [--engines sqlite,postgres,duckdb] [--repeat 2] [--pad-to ROWS] [--statements]

Steps, each cached in --workdir (default /work/benchdata/search; never inside the repository):

1. a synthetic_ehr population (NDJSON), made once per (patients, practices, seed);
2. `recruit load` of it into SQLite (timed once, when the database is made);
3. optionally (--pad-to), background coded events and prescriptions (codes no search uses, dated
   over the last 10 years) added in SQLite until events + prescriptions reach ROWS, for
   comparison with figures quoted for bigger extracts (ehrQL's 31.4 million rows);
4. `recruit db copy` of that database into PostgreSQL (schema bench_search) and DuckDB;
5. run_search(rules/instep.yaml) on each engine, in a fresh process each time, --repeat times:
   flow counts, exclusion reasons with evidence, step masks and scores included, exactly as
   `recruit search` stores them. Earlier runs are deleted before each timing (not timed).

Reported per engine: seconds (best and all), and peak memory (max RSS) of the searching process;
for PostgreSQL the server does the work, so its backend's peak RSS is shown too when readable
(/proc; it counts the shared buffers that backend touched). The flow counts of all engines must
agree, or the benchmark says so. --statements prints the slowest statements of the last run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RULES = ROOT / "rules" / "instep.yaml"
INDEX_DATE = "2026-11-01"  # synthetic_ehr's default extract date: the population's "today"
PG_SCHEMA = "bench_search"


def log(message: str) -> None:
    print(message, flush=True)


def mib(kib: float) -> float:
    return kib / 1024  # ru_maxrss is KiB on Linux


# --- data --------------------------------------------------------------------------------------


def make_extract(folder: Path, patients: int, practices: int, seed: int) -> None:
    if (folder / "fhir" / "manifest.json").exists():
        return
    import synthetic_ehr

    log(f"generating {patients:,} patients in {practices} practices into {folder} ...")
    start = time.perf_counter()
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    synthetic_ehr.generate(tmp, patients=patients, practices=practices, seed=seed, formats=("ndjson",))
    tmp.rename(folder)
    log(f"  generated in {time.perf_counter() - start:,.0f} s")


def load_sqlite(extract: Path, db: Path) -> None:
    if db.exists():
        return
    log(f"recruit load into SQLite {db} ...")
    partial = db.with_name(db.name + ".partial")
    for leftover in partial.parent.glob(partial.name + "*"):
        leftover.unlink()
    code = f"""
import resource, time
from pathlib import Path
from recruit.db import make_engine
from recruit.load import load_extract
from recruit.migrate import upgrade
engine = make_engine({f"sqlite:///{partial}"!r})
upgrade(engine)
start = time.perf_counter()
s = load_extract(engine, [Path({str(extract / "fhir")!r})])
print(f"  loaded {{s.loaded:,}} records ({{s.quarantined:,}} quarantined) in "
      f"{{time.perf_counter() - start:,.0f}} s, peak RSS "
      f"{{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f}} MiB")
engine.dispose()
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    _checkpoint(partial)
    partial.rename(db)


def _checkpoint(db: Path) -> None:
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")


def pad_sqlite(base: Path, padded: Path, total: int) -> None:
    """Copy of base with background events and prescriptions up to `total` rows in all."""
    if padded.exists():
        return
    import sqlite3

    log(f"padding {base.name} to {total:,} event and prescription rows into {padded} ...")
    start = time.perf_counter()
    partial = padded.with_name(padded.name + ".partial")
    shutil.copyfile(base, partial)
    noise = list(csv.DictReader((ROOT / "synthetic_ehr" / "data" / "noise_codes.csv").open()))
    conditions = [(r["system"], r["code"], r["term"]) for r in noise if r["kind"] == "condition"]
    medicines = [(r["system"], r["code"], r["term"]) for r in noise if r["kind"] == "medicine"]
    conn = sqlite3.connect(partial)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    patients, events, meds = (
        conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("patient", "clinical_event", "medication_issue")
    )
    missing = total - events - meds
    if missing <= 0:
        log("  nothing to add")
    else:
        # Three quarters events, one quarter prescriptions, spread evenly over patients.
        per_patient_events = round(missing * 0.75 / patients)
        per_patient_meds = round(missing * 0.25 / patients)
        for table, date_col, codes, per_patient, extra in (
            ("clinical_event", "event_date", conditions, per_patient_events, ""),
            ("medication_issue", "issue_date", medicines, per_patient_meds, ", course"),
        ):
            conn.execute("CREATE TEMP TABLE noise (k INTEGER PRIMARY KEY, system TEXT, code TEXT, term TEXT)")
            conn.executemany("INSERT INTO noise VALUES (?, ?, ?, ?)", [(i, *c) for i, c in enumerate(codes)])
            indexes = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name=? AND sql IS NOT NULL",
                (table,),
            ).fetchall()
            for name, _ in indexes:
                conn.execute(f"DROP INDEX {name}")
            conn.execute(
                f"""
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {per_patient})
                INSERT INTO {table} (patient_id, practice_id, {date_col}, code_system, code, term{extra})
                SELECT p.id, p.practice_id,
                       date('{INDEX_DATE}', '-' || ((p.id * 7919 + n.i * 104729) % 3650) || ' days'),
                       noise.system, noise.code, noise.term{", 'repeat'" if extra else ""}
                FROM patient p CROSS JOIN n
                JOIN noise ON noise.k = (p.id * 31 + n.i) % {len(codes)}
                ORDER BY p.id, n.i
                """
            )
            for _, sql in indexes:
                conn.execute(sql)
            conn.execute("DROP TABLE noise")
            conn.commit()
        conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    partial.rename(padded)
    log(f"  padded in {time.perf_counter() - start:,.0f} s")


def migrate(url: str) -> None:
    """Cached databases made by an older recruit are brought up to date first (not timed)."""
    from recruit.db import make_engine
    from recruit.migrate import current_revision, head_revision, upgrade

    engine = make_engine(url)
    if current_revision(engine) not in (None, head_revision()):
        log(f"recruit db upgrade of {url} ...")
        upgrade(engine)
    engine.dispose()


def pg_url(base: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={PG_SCHEMA}')}"


def fingerprint(url: str) -> tuple[int, int, int] | None:
    """Row counts that say whether a copy is of this population (None: no recruit tables)."""
    from sqlalchemy import text

    from recruit.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("patient", "clinical_event", "medication_issue")
            )
    except Exception:
        return None
    finally:
        engine.dispose()


def copy_into(source_url: str, target_url: str, name: str) -> None:
    from recruit.db import make_engine
    from recruit.dbcopy import copy_database

    if fingerprint(target_url) == fingerprint(source_url):
        return
    log(f"recruit db copy into {name} ...")
    start = time.perf_counter()
    source, target = make_engine(source_url), make_engine(target_url, create_folder=True)
    summary = copy_database(source, target, replace=True)
    source.dispose()
    target.dispose()  # a DuckDB file stays locked while any connection to it is open
    log(f"  copied {summary.total:,} rows in {time.perf_counter() - start:,.0f} s")


def prepare_postgres(base: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
    admin.dispose()


# --- timing ------------------------------------------------------------------------------------

CHILD = r"""
import json, os, resource, sys, time, datetime as dt
from sqlalchemy import delete, event, text
from recruit.db import make_engine
from recruit.models import Codelist, CodelistCode, SearchResult, SearchRun, StepCount
from recruit.query.run import run_search


def proc_status(pid, field):
    # VmHWM is the peak RSS of this process image (ru_maxrss would carry the parent's across exec).
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None


def proc_cpu(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


url, rules, index_date, want_statements = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
engine = make_engine(url)
with engine.begin() as conn:  # earlier runs out of the way (not timed): a first search
    for model in (SearchResult, StepCount, SearchRun, CodelistCode, Codelist):
        conn.execute(delete(model))
if engine.dialect.name == "postgresql":  # and no dead rows left by that delete
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE search_result")
backend = None
with engine.connect() as conn:
    if engine.dialect.name == "duckdb":
        conn.exec_driver_sql("CHECKPOINT")
    if engine.dialect.name == "postgresql":
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar()
statements = {}
if want_statements:
    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, params, context, many):
        conn.info.setdefault("t0", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, params, context, many):
        took = time.perf_counter() - conn.info["t0"].pop()
        key = " ".join(statement.split())[:160]
        statements[key] = statements.get(key, 0.0) + took
server_cpu = proc_cpu(backend) if backend else None
usage = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
run_id = run_search(engine, rules, index_date=dt.date.fromisoformat(index_date))
elapsed = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
if backend:
    server_cpu = proc_cpu(backend) - server_cpu
with engine.connect() as conn:
    counts = [list(r) for r in conn.execute(text(
        "SELECT step_id, entering, kept, excluded, failing_alone FROM step_count "
        f"WHERE run_id = {run_id} ORDER BY step_index"))]
    if engine.dialect.name == "postgresql":
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == backend
print(json.dumps({
    "seconds": elapsed,
    "cpu": cpu,
    "rss_kib": proc_status("self", "VmHWM"),
    "server_rss_kib": proc_status(backend, "VmHWM") if backend else None,
    "server_cpu": server_cpu,
    "counts": counts,
    "statements": sorted(statements.items(), key=lambda kv: -kv[1])[:15],
}))
"""


def time_search(url: str, statements: bool) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(RULES), INDEX_DATE, "1" if statements else "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        sys.exit(f"the search failed on {url}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--practices", type=int, default=100, help="a region: ~10,000 patients each")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/work/benchdata/search"))
    ap.add_argument("--postgres", default=os.environ.get("RECRUIT_TEST_POSTGRES_URL"))
    ap.add_argument("--engines", default="sqlite,postgres,duckdb")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--pad-to", type=int, default=0, metavar="ROWS", help="e.g. 31400000")
    ap.add_argument("--statements", action="store_true", help="print the slowest statements")
    args = ap.parse_args()

    work = args.workdir.resolve()
    if ROOT in work.parents or work == ROOT:
        ap.error("--workdir must be outside the repository (generated data never goes into git)")
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{args.patients}-{args.practices}-{args.seed}"
    extract = work / f"extract-{tag}"
    make_extract(extract, args.patients, args.practices, args.seed)
    base = work / f"base-{tag}.db"
    load_sqlite(extract, base)
    migrate(f"sqlite:///{base}")
    if args.pad_to:
        tag = f"{tag}-pad{args.pad_to}"
        searched = work / f"padded-{tag}.db"
        pad_sqlite(base, searched, args.pad_to)
    else:
        searched = base
    # The search writes its run into the database: search a copy, keep the loaded one pristine.
    sqlite_db = work / f"search-{tag}.db"
    if not sqlite_db.exists() or sqlite_db.stat().st_mtime < searched.stat().st_mtime:
        shutil.copyfile(searched, sqlite_db)
    urls = {"sqlite": f"sqlite:///{sqlite_db}"}
    migrate(urls["sqlite"])
    source = f"sqlite:///{searched}"
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "postgres" in engines:
        if not args.postgres:
            ap.error("PostgreSQL needs --postgres URL (or RECRUIT_TEST_POSTGRES_URL)")
        prepare_postgres(args.postgres)
        urls["postgres"] = pg_url(args.postgres)
        migrate(urls["postgres"])
        copy_into(source, urls["postgres"], "PostgreSQL")
    if "duckdb" in engines:
        urls["duckdb"] = f"duckdb:///{work / f'search-{tag}.duckdb'}"
        migrate(urls["duckdb"])
        copy_into(source, urls["duckdb"], "DuckDB")

    rows = fingerprint(source)
    assert rows is not None
    log("")
    log(
        f"population: {rows[0]:,} patients; {rows[1]:,} clinical events + {rows[2]:,} prescriptions "
        f"= {rows[1] + rows[2]:,} rows; index date {INDEX_DATE}; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    results: dict[str, list[dict]] = {}
    for name in engines:
        url = urls[name]
        results[name] = [time_search(url, args.statements) for _ in range(args.repeat)]
        best = min(results[name], key=lambda r: r["seconds"])
        rss = max(mib(r["rss_kib"]) for r in results[name])
        server = [r["server_rss_kib"] for r in results[name] if r["server_rss_kib"]]
        extra = ""
        if server:
            extra = (
                f"; server backend CPU {best['server_cpu']:.2f} s, "
                f"peak RSS {mib(max(server)):,.0f} MiB (with the shared buffers it touched)"
            )
        runs = ", ".join(f"{r['seconds']:.2f}" for r in results[name])
        log(
            f"{name:9} best {best['seconds']:6.2f} s (CPU {best['cpu']:.2f} s)  (runs: {runs})  "
            f"peak RSS {rss:,.0f} MiB{extra}"
        )
        if args.statements:
            for statement, took in results[name][-1]["statements"]:
                log(f"      {took:6.2f} s  {statement}")
    flows = {name: runs[-1]["counts"] for name, runs in results.items()}
    first = next(iter(flows.values()))
    if all(f == first for f in flows.values()):
        log("flow counts agree on every engine:")
        for step_id, entering, kept, excluded, alone in first:
            log(
                f"  {step_id:17} entering {entering:>9,}  kept {kept:>9,}  excluded {excluded:>9,}  "
                f"fail alone {alone:>9,}"
            )
    else:
        log("FLOW COUNTS DIFFER between engines:")
        for name, flow in flows.items():
            log(f"  {name}: {flow}")
        return 1
    log(
        f"load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"this process peak RSS {mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss):,.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
