"""Benchmark: letters for N GP-approved patients (default 1,000), printed end to end.

Builds a made-up practice straight into a fresh SQLite database (N approved candidates of a
finished search run, a mix of standard, large-print and easy-read needs, three usual GPs), then
times `write_letters`: the letter-time checks, laying out and stamping the combined PDF, one PDF
per letter, the mail-merge files and the records. Reports seconds, pages per second, and the CPU
time of this process and its printing workers (the machine may be shared: CPU seconds show the
work, wall seconds what a person waits). Target: under 30 s for 1,000 letters.

    python bench/bench_letters.py --patients 1000 [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="printing processes (default: up to 2)")
    args = parser.parse_args()

    from recruit.letters.batch import write_letters
    from tests.integration.letters.builders import STUDY_FILE, Person, build
    from tests.search_helpers import fresh_engine

    surnames = ["Smith", "Jones", "Khan", "Nowak", "O'Brien", "Okafor", "Evans", "Patel", "Łukasz", "Müller"]
    people = [
        Person(
            id=i + 1,
            given=["Amira", "Ben", "Chloé", "Dev", "Ewa"][i % 5],
            family=surnames[i % len(surnames)],
            title=["Mrs", None, "Mr", None, "Ms"][i % 5],
            address=f"{i + 1} {['Mill', 'Church', 'Station'][i % 3]} Road\nFlat {i % 9 + 1}\nSometown",
            postcode=f"LS{i % 20 + 1} {i % 9}AB",
            rank=i + 1,
            large_print=i % 25 == 3,
            easy_read=i % 40 == 7,
            usual_gp=1 + i % 2,
        )
        for i in range(args.patients)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        engine = fresh_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        build(engine, people)
        cpu0, wall0 = _cpu(), time.perf_counter()
        summary = write_letters(
            engine,
            1,
            Path(tmp) / "out",
            study_file=STUDY_FILE,
            letter_date=dt.date(2026, 11, 1),
            workers=args.workers,
        )
        wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
        size = (Path(tmp) / "out" / "letters.pdf").stat().st_size
        singles = len(list((Path(tmp) / "out" / "letters").glob("*.pdf")))
    print(f"letters: {summary.letters_written:,} ({summary.formats}), pages: {summary.pages:,}")
    print(f"combined PDF: {size / 1e6:.1f} MB; single-letter PDFs: {singles:,}")
    rate = f"{summary.pages / wall:.0f} pages/s, {summary.letters_written / wall:.1f} letters/s"
    print(f"wall: {wall:.1f} s ({rate})")
    print(f"cpu (this process and its workers): {cpu:.1f} s")
    print(f"load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
