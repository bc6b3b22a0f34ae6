"""Benchmark the synthetic population generator: patients per second and peak memory.

    python bench/bench_synth.py --patients 1000000 [--practices 10] [--workers 2]
        [--formats ndjson] [--out DIR] [--keep]

Peak RSS is reported for this process and, separately, for the largest worker (both from
resource.getrusage), since generation runs in worker processes.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic_ehr import generate  # noqa: E402


def _mib(kib: int) -> float:
    return kib / 1024  # ru_maxrss is KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--practices", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--formats", default="ndjson", help="comma list of ndjson,bundles,csv")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the output directory")
    args = ap.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_synth_"))
    formats = tuple(f for f in args.formats.split(",") if f)
    done = 0
    last_print = time.perf_counter()
    start = last_print

    def progress(n: int) -> None:
        nonlocal done, last_print
        done += n
        now = time.perf_counter()
        if now - last_print > 10:
            print(f"  {done:>9,} patients  {done / (now - start):>8,.0f}/s", flush=True)
            last_print = now

    summary = generate(
        out,
        practices=args.practices,
        patients=args.patients,
        seed=args.seed,
        formats=formats,
        workers=args.workers,
        progress=progress,
    )
    elapsed = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    own = _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    kids = _mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(f"patients          {args.patients:,} in {args.practices} practices, formats {formats}")
    print(f"elapsed           {elapsed:,.1f} s")
    print(f"patients/second   {args.patients / elapsed:,.0f}")
    print(f"resources         {summary.counts}")
    print(f"output size       {size / 2**20:,.0f} MiB in {out}")
    print(f"peak RSS          main {own:,.0f} MiB; largest worker {kids:,.0f} MiB")
    if summary.nhs_numbers_outside_reserved_range:
        print("note              run exceeded the 999 test range; overflow prefixes used")
    if not args.keep and args.out is None:
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
