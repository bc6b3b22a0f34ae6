"""Checks on a generated directory: truth/record consistency and realised vs target rates.

Used by the tests and handy after a big run (`python -m synthetic_ehr.checks DIR`). These read
the ground truth, so they are for validating the generator, never for the search engine.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from .codes import load_codes
from .nhs_number import RESERVED_CAPACITY, in_reserved_test_range, is_valid
from .params import Params, load_params
from .postcode import is_valid_postcode
from .record import STRONG
from .util import band_of


def read_ndjson(path: Path) -> Iterator[dict]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def read_truth(out: Path) -> dict[str, dict[str, str]]:
    with (out / "truth" / "truth.csv").open(newline="", encoding="utf-8") as fh:
        return {r["patient_id"]: r for r in csv.DictReader(fh)}


def _d(s: str) -> dt.date | None:
    return dt.date.fromisoformat(s[:10]) if s else None


def _ref_id(ref: str) -> str:
    return ref.split("/", 1)[1]


def consistency_problems(out: Path, params: Params | None = None, limit: int = 50) -> list[str]:
    """Every way the FHIR record contradicts the truth (empty list when consistent)."""
    params = params or load_params()
    extract = params.extract_date
    truth = read_truth(out)
    problems: list[str] = []
    ends: dict[str, tuple[dt.date, dt.date, dt.date]] = {}  # birth, end, registration start
    seen_nhs: set[str] = set()
    fhir = out / "fhir"
    for pat in read_ndjson(fhir / "Patient.ndjson"):
        t = truth[pat["id"]]
        nhs = pat["identifier"][0]["value"]
        if not is_valid(nhs) or nhs in seen_nhs:
            problems.append(f"{pat['id']}: bad or duplicate NHS number {nhs}")
        seen_nhs.add(nhs)
        if len(truth) <= RESERVED_CAPACITY and not in_reserved_test_range(nhs):
            problems.append(f"{pat['id']}: NHS number {nhs} outside the reserved test range")
        if nhs != t["nhs_number"]:
            problems.append(f"{pat['id']}: NHS number differs from truth")
        if not is_valid_postcode(pat["address"][0]["postalCode"]):
            problems.append(f"{pat['id']}: bad postcode {pat['address'][0]['postalCode']}")
        if "deceasedDateTime" in pat and (
            t["alive"] == "true" or _d(pat["deceasedDateTime"]) != _d(t["death_date"])
        ):
            problems.append(f"{pat['id']}: coded death without matching true death")
        birth = _d(pat["birthDate"])
        if birth != _d(t["birth_date"]):
            problems.append(f"{pat['id']}: birth date differs from truth")
        cands = [extract] + [_d(t[k]) for k in ("death_date", "deregistration_date", "ghost_since") if t[k]]
        reg = _d(t["registration_start"])
        assert birth is not None and reg is not None
        if reg < birth:
            problems.append(f"{pat['id']}: registered before birth")
        ends[pat["id"]] = (birth, min(c for c in cands if c is not None), reg)

    def check(kind: str, rid: str, pid: str, day: dt.date) -> None:
        birth, end, _ = ends[pid]
        if day < birth:
            problems.append(f"{kind} {rid}: dated {day} before birth {birth}")
        if day > end:
            problems.append(f"{kind} {rid}: dated {day} after end of record {end}")

    for res in read_ndjson(fhir / "Condition.ndjson"):
        check("Condition", res["id"], _ref_id(res["subject"]["reference"]), _d(res["onsetDateTime"]))
    for res in read_ndjson(fhir / "Observation.ndjson"):
        check("Observation", res["id"], _ref_id(res["subject"]["reference"]), _d(res["effectiveDateTime"]))
    courses: dict[str, list[dt.date]] = defaultdict(list)
    for res in read_ndjson(fhir / "MedicationRequest.ndjson"):
        pid = _ref_id(res["subject"]["reference"])
        day = _d(res["authoredOn"])
        assert day is not None
        check("MedicationRequest", res["id"], pid, day)
        birth, _, reg = ends[pid]
        if day < reg:
            problems.append(f"MedicationRequest {res['id']}: issued before registration {reg}")
        if (day - birth).days < 18 * 365:
            problems.append(f"MedicationRequest {res['id']}: issued to a child")
        if res["courseOfTherapyType"]["coding"][0]["code"] == "continuous":
            courses[res["groupIdentifier"]["value"]].append(day)
    for cid, days in courses.items():
        days.sort()
        for a, b in zip(days, days[1:], strict=False):
            if (b - a).days < 20:
                problems.append(f"course {cid}: repeat issues {a} and {b} under 20 days apart")
                break
    return problems[:limit]


@dataclass
class Rate:
    name: str
    realised: float
    target: float
    n: int
    tolerance: float

    @property
    def ok(self) -> bool:
        return abs(self.realised - self.target) <= self.tolerance

    def __str__(self) -> str:
        flag = "ok " if self.ok else "OFF"
        return (
            f"{flag} {self.name:<48} realised {self.realised:7.4f}  target {self.target:7.4f}  "
            f"(n={self.n}, tol {self.tolerance:.4f})"
        )


def _tol(p: float, n: int, z: float = 4.0) -> float:
    """z binomial standard errors plus a small absolute allowance for model rounding."""
    return z * math.sqrt(max(p * (1 - p), 1e-6) / max(n, 1)) + 0.003


def _rate(name: str, hits: float, n: int, target: float, tol: float | None = None) -> Rate:
    realised = hits / n if n else 0.0
    return Rate(name, realised, target, n, tol if tol is not None else _tol(target, n))


def realised_rates(out: Path, params: Params | None = None) -> list[Rate]:
    """Rates realised in a run against the targets implied by the parameters.

    Targets are computed per patient from the same inputs the generator used (age band, sex,
    practice deprivation, ...), so a mismatch means the generator does not do what the
    parameters say. Calibration targets from the literature (e.g. 13% of adults on an opioid
    in a year) are reported with wide tolerances.
    """
    params = params or load_params()
    truth = read_truth(out)
    pracs: dict[str, dict[str, str]] = {}
    with (out / "truth" / "practices.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            pracs[r["practice_ods"]] = r
    rows = list(truth.values())
    rates: list[Rate] = []
    d = params.demography

    # Demography.
    n = len(rows)
    rates.append(_rate("female share", sum(r["sex"] == "female" for r in rows), n, d.female_share))
    exp_child = 0.0
    for r in rows:
        tilt = float(pracs[r["practice_ods"]]["old_age_tilt"])
        w_old = sum(v for k, v in d.adult_age_bands.items() if int(k.split("-")[0]) >= 70) / 100
        w_young = sum(v for k, v in d.adult_age_bands.items() if int(k.split("-")[0]) < 70) / 100
        adult = (1 - d.child_share) * (w_young + tilt * w_old)
        exp_child += d.child_share / (d.child_share + adult)
    rates.append(_rate("share aged 0-17", sum(int(r["age_at_extract"]) < 18 for r in rows), n, exp_child / n))
    exp_dead = sum(
        d.death_5y_by_age[band_of(int(r["age_at_extract"]), list(d.death_5y_by_age))] for r in rows
    )
    rates.append(
        _rate("died in 5 years before extract", sum(r["alive"] == "false" for r in rows), n, exp_dead / n)
    )
    dead = [r for r in rows if r["alive"] == "false"]
    rates.append(
        _rate("deaths coded", sum(r["death_coded"] == "true" for r in dead), len(dead), d.death_coded_share)
    )

    # Chronic pain prevalence by age band and sex, with the deprivation multiplier.
    pp = params.pain
    bands = list(pp.prevalence_by_age_sex)
    by: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for r in rows:
        age = int(r["age_at_extract"])
        if age < 16:
            continue
        b = band_of(age, bands)
        q = int(r["deprivation_quintile"])
        cell = by[(b, r["sex"])]
        cell[0] += r["chronic_pain"] == "true"
        cell[1] += 1
        cell[2] += pp.prevalence_by_age_sex[b][r["sex"]] * (1 + (q - 3) * pp.deprivation_multiplier_step)
    for (b, sex), (hits, cnt, exp) in sorted(by.items()):
        rates.append(_rate(f"chronic pain {sex} {b}", hits, cnt, exp / cnt))
    adults16 = [r for r in rows if int(r["age_at_extract"]) >= 16]
    rates.append(
        _rate(
            "chronic pain, all adults 16+ (HSE ~34%, s1)",
            sum(r["chronic_pain"] == "true" for r in adults16),
            len(adults16),
            0.34,
            tol=0.05,
        )
    )
    pain = [r for r in adults16 if r["chronic_pain"] == "true"]
    hi_bands = list(pp.high_interference_by_age)
    exp_hi = sum(pp.high_interference_by_age[band_of(int(r["age_at_extract"]), hi_bands)] for r in pain)
    rates.append(
        _rate(
            "high-interference among sufferers",
            sum(r["pain_severity"] == "high" for r in pain),
            len(pain),
            exp_hi / max(len(pain), 1),
        )
    )

    # Pain coding among sufferers.
    rp = params.recording
    exp_coded = 0.0
    for r in pain:
        prob = rp.pain_coded_base
        if r["pain_severity"] == "high":
            prob *= rp.pain_coded_high_interference_mult
        if int(r["age_at_extract"]) >= 65:
            prob *= rp.pain_coded_age65_mult
        prob += (int(r["deprivation_quintile"]) - 3) * rp.pain_coded_deprivation_step
        exp_coded += min(prob, 0.95)
    rates.append(
        _rate(
            "pain coded among sufferers",
            sum(r["pain_coded"] == "true" for r in pain),
            len(pain),
            exp_coded / max(len(pain), 1),
        )
    )
    no_pain = [r for r in adults16 if r["chronic_pain"] == "false"]
    rates.append(
        _rate(
            "pain coded among pain-free adults",
            sum(r["pain_coded"] == "true" for r in no_pain),
            len(no_pain),
            rp.pain_false_positive,
        )
    )
    rates.append(
        _rate(
            "adults with a coded chronic-pain code (s7.5: 17-19% incl. analgesics)",
            sum(r["pain_coded"] == "true" for r in adults16),
            len(adults16),
            0.15,
            tol=0.06,
        )
    )

    # Employment: in-work share of pain-free adults 35-49 who are alive at the extract.
    mid = [
        r
        for r in rows
        if 35 <= int(r["age_at_extract"]) <= 49 and r["alive"] == "true" and r["chronic_pain"] == "false"
    ]
    rates.append(
        _rate(
            "in work, no pain, 35-49",
            sum(r["in_work_at_extract"] == "true" for r in mid),
            len(mid),
            params.employment.employed_by_age["35-49"],
        )
    )
    wa = [r for r in rows if 16 <= int(r["age_at_extract"]) <= 64 and r["alive"] == "true"]
    wa_pain = [r for r in wa if r["chronic_pain"] == "true"]
    rates.append(
        _rate(
            "in work with chronic pain 16-64 (MSK proxy 52.3%, s3)",
            sum(r["in_work_at_extract"] == "true" for r in wa_pain),
            len(wa_pain),
            0.523,
            tol=0.08,
        )
    )
    # Employment coding where the record runs to the extract date.
    full = [r for r in wa if r["registered"] == "true" and not r["ghost_since"]]
    exp_emp = sum(float(pracs[r["practice_ods"]]["employment_coding_rate"]) for r in full)
    rates.append(
        _rate(
            "employment coded (working age, on list)",
            sum(r["employment_coded"] == "true" for r in full),
            len(full),
            exp_emp / max(len(full), 1),
        )
    )

    # Opioids: annual prevalence among adults on the list, a calibration target.
    adults_on = [
        r
        for r in rows
        if int(r["age_at_extract"]) >= 18 and r["registered"] == "true" and not r["ghost_since"]
    ]
    rates.append(
        _rate(
            "adults with an opioid issue in last 12 months (s2: 13%)",
            sum(r["opioid_issue_last_12m"] == "true" for r in adults_on),
            len(adults_on),
            0.13,
            tol=0.04,
        )
    )
    rates.append(
        _rate(
            "research opt-out",
            sum(bool(r["research_opt_out"]) for r in rows),
            n,
            params.other.research_opt_out,
        )
    )
    rates.append(
        _rate(
            "accessible-information need",
            sum(bool(r["accessible_need"]) for r in rows),
            n,
            params.other.accessible_need,
        )
    )

    # Fit notes per working-age person-year (CSV extract), a calibration target.
    ev_path = out / "csv" / "events.csv"
    if ev_path.is_file():
        codes = load_codes(params.codelists_dir)
        fit = {c.code for by_sys in codes.fit_note.values() for cs in by_sys.values() for c in cs}
        wa_nhs = {r["nhs_number"] for r in full}
        notes = 0
        with ev_path.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                if r["Code"] in fit and r["NHS Number"] in wa_nhs:
                    notes += 1
        years_ = len(wa_nhs) * params.opioids.lookback_years
        rates.append(
            Rate(
                "fit notes per working-age person-year (s4: ~0.28)",
                notes / max(years_, 1),
                0.28,
                years_,
                0.05,
            )
        )

    # Opioid drug mix of acute items (CSV extract), against the normalised acute mix.
    med_path = out / "csv" / "medications.csv"
    if med_path.is_file():
        codes = load_codes(params.codelists_dir)
        drug_of = {p.code.code: d for d, prods in codes.opioids.items() for p in prods}
        strong_f = params.opioids.acute_strong_factor
        mix = {
            k: v * (strong_f if k in STRONG else 1.0)
            for k, v in params.opioids.drug_mix.items()
            if codes.opioids.get(k) and any(not p.patch for p in codes.opioids[k])
        }
        total = sum(mix.values())
        counts: dict[str, int] = defaultdict(int)
        n_acute = 0
        with med_path.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                drug = drug_of.get(r["dm+d Code"])
                if drug is None or r["Issue Type"] != "Acute":
                    continue
                counts[drug] += 1
                n_acute += 1
        for drug, w in sorted(mix.items()):
            rates.append(_rate(f"acute opioid items: {drug}", counts[drug], n_acute, w / total))
        # All items (acute + repeat) against the s7.6 suggested mix, a calibration target.
        all_counts: dict[str, int] = defaultdict(int)
        with med_path.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                drug = drug_of.get(r["dm+d Code"])
                if drug is not None:
                    all_counts[drug] += 1
        n_all = sum(all_counts.values())
        full_mix = {k: v for k, v in params.opioids.drug_mix.items() if codes.opioids.get(k)}
        mix_total = sum(full_mix.values())
        for drug, w in sorted(full_mix.items()):
            rates.append(
                _rate(
                    f"all opioid items (s7.6 mix): {drug}", all_counts[drug], n_all, w / mix_total, tol=0.03
                )
            )
    return rates


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    for problem in consistency_problems(out):
        print("PROBLEM", problem)
    for rate in realised_rates(out):
        print(rate)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
