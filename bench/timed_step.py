"""One timed step (a search or a load) by whichever recruit the running Python has installed.

    BEFORE/.venv/bin/python bench/timed_step.py search --db DB [--rules R] [--index-date D] [--log F]
    AFTER/.venv/bin/python  bench/timed_step.py load --extract DIR --db DB [--log F]

compare_versions.py hands out these commands for timing two versions side by side: the same
script run with each version's own Python, so each imports only its own recruit (the editable
install of its venv; this script puts nothing on sys.path). It refuses to run when recruit comes
from elsewhere than --expect-root, so a mixed-up venv cannot time the wrong code.

search: bench_search.py's method. Earlier runs are deleted first (plain sqlite3, the same SQL for
either version) so every run is a first search, then run_search(rules, index date) is timed.
load: bench_load.py's method. The database file is removed, created and migrated, then
load_extract(extract) is timed.

Prints one JSON line (the step's own seconds, CPU seconds, where recruit came from, and for a
search the flow counts) and appends it to --log when given, so the in-process figures of every
run can be summarised afterwards (compare_versions.py --summarise).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import resource
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

# The tables a search writes, children first: emptied before each timed search, as bench_search does.
SEARCH_TABLES = ("search_result", "step_count", "search_run", "codelist_code", "codelist")


def _function(spec: str) -> Any:
    """MODULE:NAME, so a version that moved the function can still be timed (--search-func)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _check_origin(expect_root: Path | None) -> str:
    import recruit

    origin = Path(recruit.__file__).resolve()
    if expect_root is not None and expect_root.resolve() not in origin.parents:
        sys.exit(f"recruit comes from {origin}, not {expect_root}: this Python's venv is another checkout's")
    return str(origin.parent)


def _forget_runs(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in SEARCH_TABLES:
            if table in present:
                conn.execute(f"DELETE FROM {table}")
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def time_search(args: argparse.Namespace) -> dict[str, Any]:
    if not args.db.is_file():
        sys.exit(f"no database {args.db}: compare_versions.py loads one per version")
    _forget_runs(args.db)
    from recruit.db import make_engine

    run_search = _function(args.search_func)
    engine = make_engine(f"sqlite:///{args.db}")
    start, cpu = time.perf_counter(), time.process_time()
    run_id = run_search(engine, args.rules, index_date=dt.date.fromisoformat(args.index_date))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    engine.dispose()
    with sqlite3.connect(args.db) as conn:
        flow = conn.execute(
            "SELECT step_id, entering, kept, excluded FROM step_count WHERE run_id = ? ORDER BY step_index",
            (run_id,),
        ).fetchall()
    return {"seconds": seconds, "cpu": cpu, "flow": flow}


def time_load(args: argparse.Namespace) -> dict[str, Any]:
    for leftover in (args.db, *(args.db.with_name(args.db.name + s) for s in ("-wal", "-shm", "-journal"))):
        leftover.unlink(missing_ok=True)
    from recruit.db import make_engine
    from recruit.migrate import upgrade

    load_extract = _function(args.load_func)
    engine = make_engine(f"sqlite:///{args.db}", create_folder=True)
    upgrade(engine)
    start, cpu = time.perf_counter(), time.process_time()
    summary = load_extract(engine, [args.extract])
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    engine.dispose()
    return {"seconds": seconds, "cpu": cpu, "loaded": summary.loaded, "quarantined": summary.quarantined}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=("search", "load"))
    ap.add_argument("--db", type=Path, required=True, help="a SQLite file")
    ap.add_argument("--extract", type=Path, help="load: the extract's fhir/ folder")
    ap.add_argument("--rules", type=Path, default=Path("rules/instep.yaml"))
    ap.add_argument("--index-date", default="2026-11-01", help="synthetic_ehr's extract date")
    ap.add_argument("--search-func", default="recruit.query.run:run_search")
    ap.add_argument("--load-func", default="recruit.load:load_extract")
    ap.add_argument("--expect-root", type=Path, help="refuse unless recruit is imported from here")
    ap.add_argument("--log", type=Path, help="append the JSON line here too")
    args = ap.parse_args()
    if args.step == "load" and args.extract is None:
        ap.error("load needs --extract")

    origin = _check_origin(args.expect_root)
    figures = time_search(args) if args.step == "search" else time_load(args)
    figures.update(
        step=args.step,
        recruit=origin,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    line = json.dumps(figures)
    print(line, flush=True)
    if args.log:
        with args.log.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
