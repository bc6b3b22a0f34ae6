"""Benchmark: load a synthetic NDJSON extract into SQLite and PostgreSQL.

Reports resources per second, peak memory, and the time plain orjson parsing of the same files
takes (the floor any loader stands on). Target (issue 4): the default load within 3x of plain
parsing, memory under 500 MB whatever the extract size.

    python bench/bench_load.py --patients 100000 [--postgres URL] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

import synthetic_ehr


def plain_parse(folder: Path) -> tuple[int, float]:
    start = time.perf_counter()
    n = 0
    for path in sorted(folder.glob("*.ndjson")):
        with path.open("rb") as f:
            for line in f:
                orjson.loads(line)
                n += 1
    return n, time.perf_counter() - start


def load_in_child(folder: Path, url: str) -> tuple[float, float, str]:
    """Load in a fresh process so its peak memory is the load's own."""
    code = f"""
import resource, time, sys
from pathlib import Path
from recruit.db import make_engine
from recruit.migrate import upgrade
from recruit.load import load_extract
engine = make_engine({url!r}, create_folder=True)
upgrade(engine)
start = time.perf_counter()
s = load_extract(engine, [Path({str(folder)!r})])
elapsed = time.perf_counter() - start
worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, worker, s.read, s.quarantined)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    elapsed, rss, worker, read, quarantined = out.split()
    return (
        float(elapsed),
        float(rss),
        f"largest reader process {float(worker):,.0f} MB; {read} records, {quarantined} quarantined",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--postgres", help="e.g. postgresql+psycopg://root@127.0.0.1:5432/test")
    ap.add_argument("--keep", type=Path, help="reuse or keep the extract in this folder")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-load-"))
    fhir = work / "fhir"
    if not (fhir / "Patient.ndjson").exists():
        synthetic_ehr.generate(work, patients=args.patients, practices=10, seed=1, formats=("ndjson",))
    n, parse_s = plain_parse(fhir)
    size = sum(p.stat().st_size for p in fhir.glob("*.ndjson")) / 1e6
    print(f"extract: {args.patients:,} patients, {n:,} resources, {size:,.0f} MB")
    print(f"plain orjson parse: {parse_s:.1f} s ({n / parse_s:,.0f} resources/s)")

    targets = [("SQLite", f"sqlite:///{work / 'bench.db'}")]
    if args.postgres:
        engine_url = args.postgres
        from sqlalchemy import create_engine, text

        admin = create_engine(engine_url)
        with admin.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS bench_load CASCADE; CREATE SCHEMA bench_load"))
        targets.append(("PostgreSQL", f"{engine_url}?options=-csearch_path%3Dbench_load"))
    for name, url in targets:
        (work / "bench.db").unlink(missing_ok=True)
        elapsed, rss, what = load_in_child(fhir, url)
        print(
            f"{name}: {elapsed:.1f} s, {n / elapsed:,.0f} resources/s, {elapsed / parse_s:.1f}x plain parse, "
            f"peak memory {rss:,.0f} MB ({what})"
        )
    if not args.keep:
        shutil.rmtree(work)
    print(
        f"benchmark process peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB"
    )


if __name__ == "__main__":
    main()
