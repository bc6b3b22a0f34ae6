"""Does learning from replies make wave 2 better? Wave-2 precision with and without `recruit waves fit`.

    python bench/waves_learning.py [--seeds 1,2,3,4,5] [--patients 20000] [--wave 0.25]
        [--reply-rate 0.35] [--misjudged] [--workdir DIR]

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

--misjudged searches with weights that trust fit notes most (MISJUDGED below, like the rule
file before 0.2 counted a recent note twice), to see whether the replies correct a wrong judgement.

Reported: wave-2 precision (the share truly eligible: 18 to 64, chronic pain, not in paid work,
registered and alive) both ways, and the share in paid work (what the replies teach), per seed
and as mean and range over the seeds. Everything is kept in --workdir (default
/tmp/recruit-bench-waves; never inside the repository).
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

import yaml  # noqa: E402
from sqlalchemy import insert, select, update  # noqa: E402

import synthetic_ehr  # noqa: E402
from recruit.db import make_engine  # noqa: E402
from recruit.load import load_extract  # noqa: E402
from recruit.migrate import upgrade  # noqa: E402
from recruit.models import Invitation, Patient, SearchResult, SearchRun, Study  # noqa: E402
from recruit.query.run import load_search, run_rule_set  # noqa: E402
from recruit.rules.model import RuleSet  # noqa: E402
from recruit.waves import TooFewReplies, fit_weights, order_wave  # noqa: E402

RULES = ROOT / "rules" / "instep.yaml"
INDEX_DATE = dt.date(2026, 11, 1)
# A wrong judgement: fit notes first, direct status codes last.
MISJUDGED = {
    "not_fit_note_3_months": 6,
    "older_not_fit_note": 3,
    "unemployed_or_sick_status": 0.5,
    "out_of_work_status_2_years": 0.5,
    "out_of_work_benefit": 0.5,
}


def search(engine, misjudged: bool) -> int:  # type: ignore[no-untyped-def]
    rule_set, codelists, text = load_search(RULES)
    if misjudged:
        data = yaml.safe_load(text)
        for item in data["score"]:
            item["weight"] = MISJUDGED.get(item["id"], item["weight"])
        text = yaml.safe_dump(data, sort_keys=False)
        rule_set = RuleSet.model_validate(data)
    return run_rule_set(engine, rule_set, codelists, INDEX_DATE, None, text)


@dataclass(frozen=True)
class Candidate:
    patient_id: int
    nhs_number: str


def precision(people: list[Candidate], eligible: set[str]) -> float:
    return sum(c.nhs_number in eligible for c in people) / len(people) if people else float("nan")


def one_seed(
    seed: int, patients: int, wave: float, reply_rate: float, workdir: Path, misjudged: bool = False
) -> dict[str, object]:
    folder = workdir / f"seed-{seed}-{patients}"
    extract = folder / "extract"
    if not (extract / "truth" / "truth.csv").exists():  # the made-up practice is kept for reruns
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        synthetic_ehr.generate(extract, practices=1, patients=patients, seed=seed, workers=1)
    (folder / "recruit.db").unlink(missing_ok=True)
    with (extract / "truth" / "truth.csv").open(newline="", encoding="utf-8") as f:
        truth = {row["nhs_number"]: row for row in csv.DictReader(f)}
    eligible = {nhs for nhs, row in truth.items() if row["eligible_ips"] == "true"}
    working = {nhs for nhs, row in truth.items() if row["in_work_at_extract"] == "true"}
    engine = make_engine(f"sqlite:///{folder / 'recruit.db'}", create_folder=True)
    try:
        upgrade(engine)
        load_extract(engine, [extract / "fhir"])
        run_id = search(engine, misjudged)
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
        "plain_in_work": precision(second_plain, working),
        "learned_in_work": precision(second_learned, working),
        "weights": weights,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--patients", type=int, default=20000)
    parser.add_argument("--wave", type=float, default=0.25, help="share of the candidates per wave")
    parser.add_argument("--reply-rate", type=float, default=0.35)
    parser.add_argument("--penalty-c", type=float, default=None, help="try another penalty (scikit-learn C)")
    parser.add_argument("--misjudged", action="store_true", help="search with MISJUDGED weights")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recruit-bench-waves"))
    args = parser.parse_args()
    if args.penalty_c is not None:
        import recruit.waves

        recruit.waves.PENALTY_C = args.penalty_c
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        r = one_seed(seed, args.patients, args.wave, args.reply_rate, args.workdir, args.misjudged)
        results.append(r)
        print(
            f"seed {seed}: {r['candidates']} candidates, waves of {r['wave']}, {r['answered']} answered "
            f"replies; wave 1 precision {r['wave1']:.1%}; wave 2 precision without learning "
            f"{r['plain']:.1%}, with learning {r['learned']:.1%} (in paid work: {r['plain_in_work']:.1%} "
            f"and {r['learned_in_work']:.1%})",
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
    for key, label in (("plain_in_work", "without learning"), ("learned_in_work", "with learning")):
        values = [float(r[key]) for r in results]  # type: ignore[arg-type]
        print(f"wave-2 share in paid work {label}: mean {statistics.mean(values):.1%}")
    gains = [float(r["learned"]) - float(r["plain"]) for r in results]  # type: ignore[arg-type]
    print(
        f"difference (with - without): mean {statistics.mean(gains):+.1%} points, "
        f"range {min(gains):+.1%} to {max(gains):+.1%}"
    )


if __name__ == "__main__":
    main()
