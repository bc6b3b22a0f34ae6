"""What the GP record shows, drawn from the truth with realistic gaps.

Invariants (tested): nothing is dated before birth or after the patient's `end` (death,
deregistration, moving away, or the extract date); prescriptions and fit notes fall inside the
registration; a death is only coded if it happened.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .codes import EMPLOYMENT_FALLBACK, Code, CodeSet, OpioidProduct, pick_system
from .params import Params
from .people import Person, Practice
from .truth import IN_WORK, Truth
from .util import Weighted, age_on, band_of, poisson, years

STRONG = frozenset({"morphine", "oxycodone", "buprenorphine", "fentanyl"})


@dataclass(slots=True)
class Event:
    date: int
    code: Code
    kind: str  # pain, cancer, dementia, palliative_care, noise:<x>, employment:<cat>, ...


@dataclass(slots=True)
class Issue:
    date: int
    code: Code
    course: str  # acute / continuous
    course_id: str
    group: str  # opioid drug name, or the noise group
    quantity: int
    unit: str
    dosage: str
    active: bool = False


@dataclass
class Record:
    conditions: list[Event] = field(default_factory=list)
    observations: list[Event] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    pain_coded: bool = False
    employment_coded: bool = False
    opioid_long_term: bool = False


class RecordModel:
    """Per-run precomputation: weighted pickers for drugs and products."""

    def __init__(self, params: Params, codes: CodeSet) -> None:
        self.params = params
        self.codes = codes
        mix = {d: w for d, w in params.opioids.drug_mix.items() if codes.opioids.get(d)}
        self.acute_drugs = Weighted(
            [d for d in mix if any(not p.patch for p in codes.opioids[d])],
            [
                w * (params.opioids.acute_strong_factor if d in STRONG else 1.0)
                for d, w in mix.items()
                if any(not p.patch for p in codes.opioids[d])
            ],
        )
        boost = params.opioids.long_term_strong_boost
        self.lt_drugs = Weighted(list(mix), [w * (boost if d in STRONG else 1) for d, w in mix.items()])
        self._products: dict[tuple[str, bool], Weighted] = {}

    def product(self, rng: random.Random, drug: str, acute: bool) -> OpioidProduct:
        key = (drug, acute)
        w = self._products.get(key)
        if w is None:
            prods = [p for p in self.codes.opioids[drug] if not (acute and p.patch)]
            # GPs prescribe generically ("Co-codamol 30mg/500mg tablets"): keep generic names
            # when the list has any (brands such as OTC codeine combinations otherwise swamp
            # the choice), and prefer plain over modified-release or combination products.
            generic = [p for p in prods if p.code.term.lower().startswith(drug)]
            prods = generic or prods
            weights = [
                0.3 if (" / " in p.code.term or "modified-release" in p.code.term) else 1.0 for p in prods
            ]
            w = Weighted(prods, weights)
            self._products[key] = w
        return w.pick(rng)


def _opioid_sig(product: OpioidProduct, course: str) -> tuple[int, str, str]:
    term = product.code.term.lower()
    if product.patch:
        if "fentanyl" in term:
            return 10, "patch", "APPLY ONE PATCH EVERY 72 HOURS"
        return 4, "patch", "APPLY ONE PATCH EVERY 7 DAYS"
    unit = "capsule" if "capsule" in term else "tablet"
    if "modified-release" in term:
        return 56, unit, "ONE TO BE TAKEN TWICE A DAY"
    if course == "acute":
        return 30, unit, "ONE OR TWO TO BE TAKEN UP TO FOUR TIMES A DAY WHEN REQUIRED FOR PAIN"
    return 112, unit, "ONE OR TWO TO BE TAKEN FOUR TIMES A DAY"


def _choose(rng: random.Random, codes: list[Code]) -> Code:
    return codes[rng.randrange(len(codes))]


def _by_date(
    rng: random.Random,
    by_system: dict[str, list[Code]] | None,
    practice: Practice,
    date: int,
    switch: int,
) -> Code | None:
    if not by_system:
        return None
    codes = pick_system(by_system, practice.legacy_system, date < switch)
    return _choose(rng, codes) if codes else None


def make_record(
    rng: random.Random,
    person: Person,
    practice: Practice,
    truth: Truth,
    model: RecordModel,
    extract: int,
) -> Record:
    p = model.params
    cs = model.codes
    rec = Record()
    rp = p.recording
    switch = rp.snomed_switch_date.toordinal()
    lo, hi = person.birth, person.end
    age = person.age
    adult16 = person.birth + years(16)
    adult18 = person.birth + years(18)

    def within(day: int) -> bool:
        return lo <= day <= hi

    def add_cond(day: int, by_system: dict[str, list[Code]] | None, kind: str) -> bool:
        day = min(day, hi)
        if not within(day):
            return False
        code = _by_date(rng, by_system, practice, day, switch)
        if code is None:
            return False
        rec.conditions.append(Event(day, code, kind))
        return True

    def add_obs(day: int, by_system: dict[str, list[Code]] | None, kind: str) -> bool:
        if not within(day):
            return False
        code = _by_date(rng, by_system, practice, day, switch)
        if code is None:
            return False
        rec.observations.append(Event(day, code, kind))
        return True

    # --- chronic pain codes -------------------------------------------------------------
    if age >= 16:
        if truth.pain and truth.pain_onset is not None:
            prob = rp.pain_coded_base
            if truth.pain_high:
                prob *= rp.pain_coded_high_interference_mult
            if age >= 65:
                prob *= rp.pain_coded_age65_mult
            prob += (practice.deprivation - 3) * rp.pain_coded_deprivation_step
            if rng.random() < min(prob, 0.95):
                day = truth.pain_onset + years(rng.expovariate(1 / rp.pain_code_delay_years_mean))
                store = cs.pain_explicit if rng.random() < rp.pain_code_explicit_share else cs.pain_other
                rec.pain_coded = add_cond(max(day, truth.pain_onset), store, "pain")
        elif rng.random() < rp.pain_false_positive:
            start = max(adult16, extract - years(10))
            if start < hi:
                day = rng.randint(start, hi)
                store = cs.pain_other if rng.random() < rp.pain_code_explicit_share else cs.pain_explicit
                rec.pain_coded = add_cond(day, store, "pain")

    # --- exclusions and background conditions -------------------------------------------
    share = rp.exclusion_coded_share
    for kind, diagnosed in (
        ("cancer", truth.cancer),
        ("dementia", truth.dementia),
        ("palliative_care", truth.palliative),
    ):
        if diagnosed is not None and rng.random() < share:
            add_cond(diagnosed, cs.exclusions.get(kind), kind)
    for name, day in truth.noise.items():
        if rng.random() < rp.noise_condition_coded_share:
            add_cond(day, {"snomedct": cs.noise_conditions.get(name, [])}, f"noise:{name}")

    # --- employment, benefits, fit notes ------------------------------------------------
    if truth.spells and 16 <= age <= 64 and rng.random() < practice.employment_coding_rate:
        if rng.random() < rp.employment_stale_share:
            day = extract - rng.randrange(years(2), years(rp.employment_history_years))
        else:
            day = extract - rng.randrange(0, years(2))
        day = max(day, truth.spells[0].start)
        state = truth.state_on(day)
        if state is not None:
            for cat in EMPLOYMENT_FALLBACK.get(state, (state,)):
                if cs.employment.get(cat):
                    rec.employment_coded = add_obs(day, cs.employment[cat], f"employment:{state}")
                    break

    if truth.spells and age >= 16:
        cur = truth.spells[-1]
        if cur.state in ("unemployed", "long_term_sick") and rng.random() < rp.benefit_coded_out_of_work:
            add_obs(
                rng.randint(cur.start, extract), cs.benefits.get("out_of_work_benefit"), "benefit:out_of_work"
            )
        if cur.state == "long_term_sick" and rng.random() < rp.benefit_coded_disability:
            add_obs(
                rng.randint(cur.start, extract), cs.benefits.get("disability_benefit"), "benefit:disability"
            )

    window_start = max(extract - years(p.opioids.lookback_years), person.reg_start)
    if truth.spells and age >= 16:
        rates = p.other.fit_notes_per_year
        shape = p.other.fit_note_frailty_shape
        frailty = rng.gammavariate(shape, 1 / shape) if shape > 0 else 1.0
        for y in range(p.opioids.lookback_years):
            y_end = extract - years(y)
            y_start = y_end - 365
            mid = (y_start + y_end) // 2
            if age_on(person.birth, mid) > 64 or mid < adult16:
                continue
            state = truth.state_on(mid)
            if state in IN_WORK:
                has_pain = truth.pain and truth.pain_onset is not None and truth.pain_onset <= mid
                lam = rates["employed_pain" if has_pain else "employed_no_pain"]
            else:
                lam = rates.get(state or "other", rates["other"])
            for _ in range(poisson(rng, lam * frailty)):
                day = rng.randint(y_start, y_end)
                if day < window_start or day > hi:
                    continue
                cat = (
                    "may_be_fit_for_work"
                    if rng.random() < p.other.fit_note_may_be_fit_share
                    else "not_fit_for_work"
                )
                add_obs(day, cs.fit_note.get(cat) or cs.fit_note.get("fit_note_issued"), f"fit_note:{cat}")

    # --- research opt-out and accessible information -------------------------------------
    if truth.opt_out is not None:
        add_obs(min(truth.opt_out, hi), cs.opt_out, "opt_out")
    if truth.access_need is not None and rng.random() < rp.accessible_need_coded_share:
        add_obs(
            min(truth.access_since or hi, hi),
            cs.accessible.get(truth.access_need),
            f"accessible:{truth.access_need}",
        )

    # --- prescribing ----------------------------------------------------------------------
    rx_start = max(window_start, adult18)
    if rx_start <= hi:
        _opioids(rng, person, practice, truth, model, rec, rx_start, hi, extract)
        _noise_meds(rng, person, truth, model, rec, rx_start, hi, extract)
    rec.conditions.sort(key=lambda e: (e.date, e.kind, e.code.code))
    rec.observations.sort(key=lambda e: (e.date, e.kind, e.code.code))
    rec.issues.sort(key=lambda i: (i.date, i.course_id))
    return rec


def _opioids(
    rng: random.Random,
    person: Person,
    practice: Practice,
    truth: Truth,
    model: RecordModel,
    rec: Record,
    start: int,
    end: int,
    extract: int,
) -> None:
    op = model.params.opioids
    if not model.codes.opioids:
        return
    age = person.age
    if truth.pain:
        prob = op.long_term_prob_pain_high if truth.pain_high else op.long_term_prob_pain_low
        acute_p = op.acute_year_prob_pain
    else:
        prob = op.long_term_prob_no_pain
        acute_p = op.acute_year_prob_no_pain
    prob *= op.long_term_age_or[band_of(age, list(op.long_term_age_or))]
    prob *= 1 + (practice.deprivation - 1) / 4 * (op.long_term_deprivation_or - 1)
    n_course = 0
    if rng.random() < prob:
        duration = max(28, int(op.episode_median_days * math.exp(op.episode_sigma * rng.gauss(0, 1))))
        first = rng.randint(start - 365, max(start - 365, end - 28))
        if truth.pain and truth.pain_onset is not None:
            first = max(first, truth.pain_onset)
        last = min(first + duration, end)
        drug = model.lt_drugs.pick(rng)
        product = model.product(rng, drug, acute=False)
        qty, unit, sig = _opioid_sig(product, "continuous")
        course_id = f"{person.id}-rx{n_course}"
        n_course += 1
        day = first
        while day <= last:
            if day >= start:
                rec.issues.append(Issue(day, product.code, "continuous", course_id, drug, qty, unit, sig))
                rec.opioid_long_term = True
            day += op.issue_interval_days + rng.randint(-3, 3)
        if rec.issues and last >= extract - op.issue_interval_days and end == extract:
            rec.issues[-1].active = True
    for y in range(op.lookback_years):
        y_end = extract - years(y)
        y_start = max(y_end - 365, start)
        if y_start > min(y_end, end) or rng.random() >= acute_p:
            continue
        for _ in range(2 if rng.random() < op.acute_second_issue_share else 1):
            day = rng.randint(y_start, min(y_end, end))
            drug = model.acute_drugs.pick(rng)
            product = model.product(rng, drug, acute=True)
            qty, unit, sig = _opioid_sig(product, "acute")
            rec.issues.append(
                Issue(day, product.code, "acute", f"{person.id}-rx{n_course}", drug, qty, unit, sig)
            )
            n_course += 1


_NOISE_SIG = {
    "hypertension": (28, "tablet", "ONE TO BE TAKEN EACH DAY"),
    "type2_diabetes": (56, "tablet", "ONE TO BE TAKEN TWICE A DAY WITH FOOD"),
    "asthma": (1, "inhaler", "TWO PUFFS WHEN REQUIRED"),
    "depression": (28, "tablet", "ONE TO BE TAKEN EACH DAY"),
    "ppi": (28, "capsule", "ONE TO BE TAKEN EACH DAY"),
    "nsaid": (24, "tablet", "ONE TO BE TAKEN THREE TIMES A DAY WITH FOOD WHEN REQUIRED"),
}


def _noise_meds(
    rng: random.Random,
    person: Person,
    truth: Truth,
    model: RecordModel,
    rec: Record,
    start: int,
    end: int,
    extract: int,
) -> None:
    """Background repeats in the last year (56-day issues) and acute NSAIDs in the window."""
    oth = model.params.other
    meds = model.codes.noise_medicines
    repeat_groups = [g for g, day in truth.noise.items() if rng.random() < oth.noise_treated_share.get(g, 0)]
    if rng.random() < oth.ppi_repeat:
        repeat_groups.append("ppi")
    n = 0
    for group in repeat_groups:
        codes = meds.get(group)
        if not codes:
            continue
        code = codes[rng.randrange(len(codes))]
        qty, unit, sig = _NOISE_SIG[group]
        day = max(start, extract - 365 + rng.randrange(56), truth.noise.get(group, start))
        course_id = f"{person.id}-bg{n}"
        n += 1
        while day <= end:
            rec.issues.append(Issue(day, code, "continuous", course_id, group, qty, unit, sig))
            day += 56
        if end == extract and rec.issues and rec.issues[-1].course_id == course_id:
            rec.issues[-1].active = True
    nsaid_p = oth.nsaid_acute_year_pain if truth.pain else oth.nsaid_acute_year_no_pain
    codes = meds.get("nsaid")
    if not codes:
        return
    for y in range(model.params.opioids.lookback_years):
        y_end = extract - years(y)
        y_start = max(y_end - 365, start)
        if y_start > min(y_end, end) or rng.random() >= nsaid_p:
            continue
        qty, unit, sig = _NOISE_SIG["nsaid"]
        rec.issues.append(
            Issue(
                rng.randint(y_start, min(y_end, end)),
                codes[rng.randrange(len(codes))],
                "acute",
                f"{person.id}-bg{n}",
                "nsaid",
                qty,
                unit,
                sig,
            )
        )
        n += 1
