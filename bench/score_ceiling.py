"""How close does the out-of-work score bring the first wave of letters to the best the records allow?

    python bench/score_ceiling.py [--patients 5000] [--seeds 1,2,3,4,5] [--rates 0.05,0.15,0.30]
        [--rules rules/instep.yaml] [--workdir DIR]

For every employment-coding rate and seed: a synthetic_ehr population (cached in --workdir,
default /work/benchdata/ceiling, never inside the repository), loaded into a fresh SQLite
database, searched with the rule file, then judged by `recruit evaluate`. Printed for the first
wave (the top 10% of the ranked letters), as the share of letters reaching truly eligible people:

- first wave: the run's own figure;
- in-sample ceiling: `recruit evaluate`'s "best possible", the candidates grouped by what their
  records hold (rules/ceiling_features.yaml and the run's score) and the groups ranked by their
  share eligible among these very people. An upper bound, but it flatters: with ~450
  candidates most groups are small, and a group of one is 0% or 100% eligible by chance;
- pooled ceiling: the same groups ranked instead by their share eligible in the OTHER populations
  of the same coding rate (4 x 5,000 patients; a pattern never seen there counts at their
  overall share, shrunk by 2 people), counted with this population's real shares. This is the
  ranking an oracle who knew how often people with each record pattern are eligible would make,
  without the luck of the draw: the target the score is measured against.

Then per rate and over all runs: mean and range. The employment-coding rate is the mean share of
working-age patients with an employment-status code (synthetic_ehr
`practice.employment_coding_mean`); its spread between practices is made small here
(`employment_coding_concentration` 400) so that each population has about the rate named.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INDEX_DATE = dt.date(2026, 11, 1)  # synthetic_ehr's default extract date
PRIOR = 2.0  # people at the overall share given to each pattern's pooled rate


def make_extract(folder: Path, patients: int, seed: int, rate: float) -> None:
    import synthetic_ehr
    from synthetic_ehr.params import load_params

    if (folder / "fhir" / "manifest.json").exists():
        return
    params = load_params(practice={"employment_coding_mean": rate, "employment_coding_concentration": 400.0})
    synthetic_ehr.generate(
        folder, practices=1, patients=patients, seed=seed, formats=("ndjson",), workers=1, params=params
    )


def evaluate(folder: Path, rules: Path, eligibility: str = "eligible_ips") -> Any:
    from recruit.db import make_engine
    from recruit.evaluation import evaluate_run
    from recruit.load import load_extract
    from recruit.migrate import upgrade
    from recruit.query.run import run_search

    db = folder / "bench.db"
    db.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    load_extract(engine, [folder / "fhir"])
    run_id = run_search(engine, rules, INDEX_DATE)
    ev = evaluate_run(engine, run_id, folder / "truth", eligibility=eligibility)
    engine.dispose()
    db.unlink()
    return ev


def pooled_ceiling(ev: Any, others: list[Any]) -> float:
    """The first wave's precision when groups are ranked by their rate in the other populations."""
    from recruit.evaluation.ceiling import top_precision

    pooled: dict[tuple[Any, ...], list[int]] = {}
    for other in others:
        for n, e, key in other.ceiling_by_features:
            got = pooled.setdefault(tuple(key), [0, 0])
            got[0] += n
            got[1] += e
    people = sum(n for n, _ in pooled.values())
    overall = sum(e for _, e in pooled.values()) / people
    ranked = []
    for n, e, key in ev.ceiling_by_features:
        pn, pe = pooled.get(tuple(key), (0, 0))
        ranked.append(((pe + PRIOR * overall) / (pn + PRIOR), e / n, n))
    ranked.sort(reverse=True)
    return top_precision([(share, n) for _, share, n in ranked], ev.waves[0].invited)


def describe(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--rates", default="0.05,0.15,0.30")
    parser.add_argument("--rules", type=Path, default=ROOT / "rules" / "instep.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/work/benchdata/ceiling"))
    parser.add_argument("--strict", action="store_true", help="judge by eligible_ips_strict")
    args = parser.parse_args()
    eligibility = "eligible_ips_strict" if args.strict else "eligible_ips"
    seeds = [int(s) for s in args.seeds.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    started = time.perf_counter()
    print(
        f"rules {args.rules}, {args.patients:,} patients per population, truly eligible = {eligibility}; "
        "first wave = top 10%",
        flush=True,
    )
    evaluations: dict[float, list[Any]] = {}
    for rate in rates:
        for seed in seeds:
            folder = args.workdir / f"p{args.patients}_r{rate:g}_s{seed}"
            make_extract(folder, args.patients, seed, rate)
            evaluations.setdefault(rate, []).append(evaluate(folder, args.rules, eligibility))
            print(".", end="", flush=True)
    print()
    print(
        "rate  seed  letters  first wave  in-sample ceiling  pooled ceiling  gap to pooled  pooled, all rates"
    )
    table: dict[float, list[tuple[float, float, float, float]]] = {}
    for rate, evs in evaluations.items():
        for i, (seed, ev) in enumerate(zip(seeds, evs, strict=True)):
            first = ev.waves[0]
            pooled = pooled_ceiling(ev, evs[:i] + evs[i + 1 :]) if len(evs) > 1 else float("nan")
            everyone_else = [o for r, others in evaluations.items() for o in others if o is not ev]
            pooled_all = pooled_ceiling(ev, everyone_else) if everyone_else else float("nan")
            row = (first.precision or 0.0, first.ceiling or 0.0, pooled, pooled_all)
            table.setdefault(rate, []).append(row)
            print(
                f"{rate:4.0%}  {seed:4d}  {first.invited:7d}  {row[0]:10.3f}  {row[1]:17.3f}  {row[2]:14.3f}"
                f"  {row[2] - row[0]:+13.3f}  {row[3]:17.3f}"
            )
    print(
        "\nmean (range)      first wave           in-sample ceiling    pooled ceiling       gap to pooled"
        "        pooled, all rates    gap to it"
    )
    everything = [r for rows in table.values() for r in rows]
    for label, rows in [*((f"rate {rate:.0%}", rows) for rate, rows in table.items()), ("all", everything)]:
        cols = [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[2] - r[0] for r in rows]]
        cols += [[r[3] for r in rows], [r[3] - r[0] for r in rows]]
        print(f"{label:16s}  " + "  ".join(f"{describe(c):19s}" for c in cols))
    print(f"\n{len(everything)} runs in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
