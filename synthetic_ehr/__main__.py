"""`python -m synthetic_ehr --practices 3 --patients 10000 --seed 1 --out DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_support import run_with_progress, summary_lines
from .generate import ALL_FORMATS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synthetic_ehr", description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--practices", type=int, default=1)
    ap.add_argument("--patients", type=int, default=1000, help="total across practices")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", type=Path, default=None, help="YAML/JSON parameter overrides")
    ap.add_argument("--formats", default=",".join(ALL_FORMATS))
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    summary = run_with_progress(
        args.out,
        practices=args.practices,
        patients=args.patients,
        seed=args.seed,
        config=args.config,
        formats=[f for f in args.formats.split(",") if f],
        workers=args.workers,
    )
    print("\n".join(summary_lines(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
