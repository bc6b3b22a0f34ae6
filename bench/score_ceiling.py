"""How close does the out-of-work score bring the first wave of letters to the best the records allow?

    python bench/score_ceiling.py [--patients 5000] [--seeds 1,2,3,4,5] [--rates 0.05,0.15,0.30]
        [--rules rules/instep.yaml] [--workdir DIR]

For every employment-coding rate and seed: a synthetic_ehr population (cached in --workdir,
default /work/benchdata/ceiling, never inside the repository), loaded into a fresh SQLite
database, searched with the rule file, then `recruit evaluate`'s figures for the first wave
(top 10% of the ranked letters): the share reaching truly eligible people (precision), and the
ceiling, the best precision any ranking of the same people by what their records hold could
reach (see recruit.query.evaluate.ceiling_by_wave). Printed per run, then per rate and over all
runs: mean and range.

The employment-coding rate is the mean share of working-age patients with an employment-status
code (synthetic_ehr `practice.employment_coding_mean`). Its spread between practices is made
small here (`employment_coding_concentration` 400), so that each population has about the rate
named rather than a practice drawn anywhere from 1% to 30%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INDEX_DATE = "2026-11-01"  # synthetic_ehr's default extract date


def make_extract(folder: Path, patients: int, seed: int, rate: float) -> None:
    import synthetic_ehr
    from synthetic_ehr.params import load_params

    if (folder / "fhir" / "manifest.json").exists():
        return
    params = load_params(practice={"employment_coding_mean": rate, "employment_coding_concentration": 400.0})
    synthetic_ehr.generate(
        folder, practices=1, patients=patients, seed=seed, formats=("ndjson",), workers=1, params=params
    )


def one_run(folder: Path, rules: Path) -> tuple[float, float, float, float]:
    """(first-wave precision, its ceiling, whole-list precision, whole-list ceiling)."""
    import datetime as dt

    from recruit.db import make_engine
    from recruit.load import load_extract
    from recruit.migrate import upgrade
    from recruit.query.evaluate import evaluate_run
    from recruit.query.run import run_search

    db = folder / "bench.db"
    if db.exists():
        db.unlink()
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    load_extract(engine, [folder / "fhir"])
    run_id = run_search(engine, rules, dt.date.fromisoformat(INDEX_DATE))
    ev = evaluate_run(engine, run_id, folder / "truth")
    engine.dispose()
    db.unlink()
    first, whole = ev.waves[0], ev.waves[-1]
    return (
        first.precision or 0.0,
        first.ceiling if first.ceiling is not None else float("nan"),
        whole.precision or 0.0,
        whole.ceiling if whole.ceiling is not None else float("nan"),
    )


def describe(values: list[float]) -> str:
    return f"mean {statistics.fmean(values):.3f} (range {min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--rates", default="0.05,0.15,0.30")
    parser.add_argument("--rules", type=Path, default=ROOT / "rules" / "instep.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/work/benchdata/ceiling"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    started = time.perf_counter()
    rows: dict[float, list[tuple[float, float, float, float]]] = {}
    print(f"rules {args.rules}, {args.patients:,} patients per population", flush=True)
    print("rate  seed  first-wave  ceiling  gap    | whole list  ceiling", flush=True)
    for rate in rates:
        for seed in seeds:
            folder = args.workdir / f"p{args.patients}_r{rate:g}_s{seed}"
            make_extract(folder, args.patients, seed, rate)
            got = one_run(folder, args.rules)
            rows.setdefault(rate, []).append(got)
            print(
                f"{rate:4.0%}  {seed:4d}  {got[0]:10.3f}  {got[1]:7.3f}  {got[1] - got[0]:+.3f} "
                f"| {got[2]:10.3f}  {got[3]:7.3f}",
                flush=True,
            )
    print()
    everything = [r for runs in rows.values() for r in runs]
    for label, runs in [*((f"rate {rate:.0%}", runs) for rate, runs in rows.items()), ("all", everything)]:
        firsts, ceilings = [r[0] for r in runs], [r[1] for r in runs]
        print(f"{label:9s} first wave {describe(firsts)}; ceiling {describe(ceilings)}")
        print(f"{'':9s} gap (ceiling - first wave) {describe([r[1] - r[0] for r in runs])}")
        print(
            f"{'':9s} whole list {describe([r[2] for r in runs])}; ceiling {describe([r[3] for r in runs])}"
        )
    print(f"\n{len(everything)} runs in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
