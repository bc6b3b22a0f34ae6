"""Does learning from replies make wave 2 better? Wave-2 precision with and without `recruit waves fit`.

    python bench/waves_learning.py [--seeds 1,2,3,4,5] [--patients 6000] [--wave 0.25]
        [--reply-rate 0.35] [--workdir DIR]

For each seed, on made-up records (synthetic_ehr, whose hidden truth says who is in paid work
and who is truly eligible):

1. one practice of made-up patients is generated, loaded and searched with rules/instep.yaml;
2. every candidate is taken as approved by the GP (the review is not what is measured here);
3. wave 1: the first --wave share of the candidates in the rule file's order is written to
   (invitation rows, as `recruit letters` records them; no PDFs are printed);
4. replies are drawn from the truth: each person replies with probability --reply-rate; a reply
   answers "in paid work" from the truth; 1 in 50 of those written to asks not to be contacted
   (their answers are never used);
5. `fit_weights` fits the evidence weights to the answered replies (or refuses: too few);
6. wave 2: the next --wave share of the candidates not yet written to, once in the rule file's
   order and once in the fitted order (`order_wave`, as `recruit letters` orders it).

Reported: wave-2 precision (the share truly eligible: 18 to 64, chronic pain, not in paid work,
registered and alive) both ways, per seed and as mean and range over the seeds. Everything is
kept in --workdir (default /tmp/recruit-bench-waves; never inside the repository).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select, update  # noqa: E402

import synthetic_ehr  # noqa: E402
from recruit.db import make_engine  # noqa: E402
from recruit.load import load_extract  # noqa: E402
from recruit.migrate import upgrade  # noqa: E402
from recruit.models import Invitation, Patient, SearchResult, SearchRun, Study  # noqa: E402
from recruit.query.run import run_search  # noqa: E402
from recruit.waves import TooFewReplies, fit_weights, order_wave  # noqa: E402

RULES = ROOT / "rules" / "instep.yaml"
INDEX_DATE = dt.date(2026, 11, 1)


@dataclass(frozen=True)
class Candidate:
    patient_id: int
    nhs_number: str


def precision(people: list[Candidate], eligible: set[str]) -> float:
    return sum(c.nhs_number in eligible for c in people) / len(people) if people else float("nan")


def one_seed(seed: int, patients: int, wave: float, reply_rate: float, workdir: Path) -> dict[str, object]:
    folder = workdir / f"seed-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    extract = folder / "extract"
    synthetic_ehr.generate(extract, practices=1, patients=patients, seed=seed, workers=1)
    with (extract / "truth" / "truth.csv").open(newline="", encoding="utf-8") as f:
        truth = {row["nhs_number"]: row for row in csv.DictReader(f)}
    eligible = {nhs for nhs, row in truth.items() if row["eligible_ips"] == "true"}
    engine = make_engine(f"sqlite:///{folder / 'recruit.db'}", create_folder=True)
    try:
        upgrade(engine)
        load_extract(engine, [extract / "fhir"])
        run_id = run_search(engine, RULES, index_date=INDEX_DATE)
        with engine.begin() as conn:
            ranked = [
                Candidate(pid, nhs)
                for pid, nhs in conn.execute(
                    select(SearchResult.patient_id, Patient.nhs_number)
                    .join(Patient, Patient.id == SearchResult.patient_id)
                    .where(SearchResult.run_id == run_id, SearchResult.outcome == "candidate")
                    .order_by(SearchResult.rank, SearchResult.patient_id)
                )
            ]
            study_id = conn.execute(select(SearchRun.study_id).where(SearchRun.id == run_id)).scalar()
            if study_id is None:
                study_id = conn.execute(
                    insert(Study).values(code="instep", title="InSTEP").returning(Study.id)
                ).scalar_one()
            size = max(1, round(wave * len(ranked)))
            first = ranked[:size]
            rng = random.Random(seed)
            conn.execute(
                insert(Invitation),
                [
                    {
                        "study_id": study_id,
                        "patient_id": c.patient_id,
                        "nhs_number": c.nhs_number,
                        "run_id": run_id,
                        "study_number": f"B{seed}-{c.patient_id}",
                        "status": "sent",
                    }
                    for c in first
                ],
            )
            replies = 0
            for c in first:
                draw = rng.random()
                if draw < 0.02:
                    values = {"reply": "do_not_contact", "status": "do_not_contact", "in_work": None}
                elif draw < 0.02 + reply_rate:
                    in_work = truth.get(c.nhs_number, {}).get("in_work_at_extract") == "true"
                    values = {"reply": "interested", "status": "replied", "in_work": in_work}
                    replies += 1
                else:
                    continue
                conn.execute(update(Invitation).where(Invitation.patient_id == c.patient_id).values(**values))
        rest = ranked[size:]
        try:
            _, fitted = fit_weights(engine, run_id, fitted_by="bench")
            weights = {w.item: round(w.weight, 2) for w in fitted.items}
        except TooFewReplies:
            weights = None
        with engine.connect() as conn:
            learned, _ = order_wave(conn, run_id, rest)
        second_plain, second_learned = rest[:size], learned[:size]
    finally:
        engine.dispose()
    return {
        "seed": seed,
        "candidates": len(ranked),
        "wave": size,
        "answered": replies,
        "wave1": precision(first, eligible),
        "plain": precision(second_plain, eligible),
        "learned": precision(second_learned, eligible),
        "weights": weights,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--patients", type=int, default=6000)
    parser.add_argument("--wave", type=float, default=0.25, help="share of the candidates per wave")
    parser.add_argument("--reply-rate", type=float, default=0.35)
    parser.add_argument("--penalty-c", type=float, default=None, help="try another penalty (scikit-learn C)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recruit-bench-waves"))
    args = parser.parse_args()
    if args.penalty_c is not None:
        import recruit.waves

        recruit.waves.PENALTY_C = args.penalty_c
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        r = one_seed(seed, args.patients, args.wave, args.reply_rate, args.workdir)
        results.append(r)
        print(
            f"seed {seed}: {r['candidates']} candidates, waves of {r['wave']}, {r['answered']} answered "
            f"replies; wave 1 precision {r['wave1']:.1%}; wave 2 precision without learning "
            f"{r['plain']:.1%}, with learning {r['learned']:.1%}",
            flush=True,
        )
        print(
            f"  fitted weights: {r['weights'] if r['weights'] else 'refused (too few replies)'}", flush=True
        )
    for key, label in (("plain", "without learning"), ("learned", "with learning")):
        values = [float(r[key]) for r in results]  # type: ignore[arg-type]
        print(
            f"wave-2 precision {label}: mean {statistics.mean(values):.1%}, "
            f"range {min(values):.1%} to {max(values):.1%} over {len(values)} seeds"
        )
    gains = [float(r["learned"]) - float(r["plain"]) for r in results]  # type: ignore[arg-type]
    print(
        f"difference (with - without): mean {statistics.mean(gains):+.1%} points, "
        f"range {min(gains):+.1%} to {max(gains):+.1%}"
    )


if __name__ == "__main__":
    main()
