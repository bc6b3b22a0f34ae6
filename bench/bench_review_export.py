"""Benchmark: `recruit review export` over a region, one workbook per practice, at two sizes.

Makes made-up regions with synthetic_ehr (by default 10 and 20 practices of 2,000 patients each),
loads each into SQLite and runs the InSTEP search, then in a fresh process per measurement times
the per-practice export (export_review_by_practice) and reads its peak memory (VmHWM from
/proc/self/status: the process's own high-water mark). If the export streams practice by
practice, the peak stays that of one practice as the region doubles. For comparison it also
writes the whole region into one (streamed) workbook, the layout the per-practice export replaced.

    python bench/bench_review_export.py [--practices 10 20] [--per-practice 2000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
INDEX_DATE = dt.date(2026, 11, 1)


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(folder: Path, practices: int, per_practice: int) -> tuple[str, int]:
    """A region's database, loaded and searched: (database URL, search run)."""
    import synthetic_ehr
    from recruit.load import load_extract
    from recruit.query.run import run_search
    from tests.search_helpers import fresh_engine

    db = folder / "region.db"
    url = f"sqlite:///{db}"
    marker = folder / "run.txt"
    if marker.is_file():
        return url, int(marker.read_text())
    extract = folder / "extract"
    synthetic_ehr.generate(
        extract,
        practices=practices,
        patients=practices * per_practice,
        seed=3,
        formats=("ndjson",),
        workers=1,
    )
    engine = fresh_engine(url)
    load_extract(engine, [extract / "fhir"])
    run_id = run_search(engine, ROOT / "rules" / "instep.yaml", index_date=INDEX_DATE)
    engine.dispose()
    marker.write_text(str(run_id))
    return url, run_id


def measure(mode: str, url: str, run_id: int, out: Path) -> None:
    """In its own process: one export, then its time and peak memory as JSON on stdout."""
    from recruit.db import make_engine
    from recruit.review import _export_one, export_review_by_practice

    engine = make_engine(url)
    before = peak_mb()
    start = time.perf_counter()
    if mode == "per-practice":
        summaries = export_review_by_practice(engine, run_id, out / "review.xlsx")
    else:  # the whole region in one workbook (a bench-only path: the export refuses this now)
        summaries = [_export_one(engine, run_id, out / "region.xlsx", None, dt.date.today())]
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": peak_mb(),
                "peak_before_mb": before,
                "files": len(summaries),
                "rows": sum(s.rows for s in summaries),
                "largest": max(s.rows for s in summaries),
                "mb_written": sum(s.path.stat().st_size for s in summaries) / 1e6,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--practices", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--per-practice", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the made-up regions here")
    parser.add_argument("--measure", nargs=3, metavar=("MODE", "URL", "RUN"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        mode, url, run = args.measure
        measure(mode, url, int(run), args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        for n in args.practices:
            folder = work / f"region-{n}x{args.per_practice}"
            folder.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            url, run_id = build(folder, n, args.per_practice)
            print(
                f"{n} practices x {args.per_practice:,} patients: built in {time.perf_counter() - t0:.0f} s"
            )
            for mode in ("per-practice", "one-file"):
                out = Path(tempfile.mkdtemp(dir=tmp))
                done = subprocess.run(
                    [sys.executable, __file__, "--measure", mode, url, str(run_id), "--out", str(out)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"  {mode:12} {r['files']:>3} file(s), {r['rows']:,} rows (largest {r['largest']:,}): "
                    f"{r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB "
                    f"(after imports {r['peak_before_mb']:.0f} MB), "
                    f"{r['mb_written']:.1f} MB written"
                )


if __name__ == "__main__":
    main()
