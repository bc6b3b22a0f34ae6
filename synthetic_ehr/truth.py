"""The hidden truth about a patient: chronic pain, work history and the conditions a search
must exclude. Nothing here is in the record; record.py decides what gets coded."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .params import Params
from .people import Person, Practice
from .util import Weighted, age_on, band_of, years

IN_WORK = frozenset({"employed_full_time", "employed_part_time", "self_employed"})
OUT_OF_WORK_IPS = frozenset({"unemployed", "long_term_sick", "carer_or_home"})
STATES = (
    "employed_full_time",
    "employed_part_time",
    "self_employed",
    "unemployed",
    "long_term_sick",
    "retired",
    "student",
    "carer_or_home",
    "other",
)


@dataclass(slots=True)
class Spell:
    start: int
    end: int  # inclusive last day; the current spell ends on the extract date
    state: str


@dataclass(slots=True)
class Truth:
    pain: bool = False
    pain_onset: int | None = None
    pain_high: bool = False  # high-interference (grade III/IV)
    spells: list[Spell] = field(default_factory=list)  # oldest first
    cancer: int | None = None  # diagnosis date
    dementia: int | None = None
    palliative: int | None = None
    opt_out: int | None = None
    access_need: str | None = None
    access_since: int | None = None
    noise: dict[str, int] = field(default_factory=dict)  # condition -> onset

    def state_on(self, day: int) -> str | None:
        for s in reversed(self.spells):
            if s.start <= day <= s.end:
                return s.state
        return None


class EmploymentModel:
    """State probabilities by age band, pain and severity (cached per combination)."""

    def __init__(self, params: Params) -> None:
        self.p = params.employment
        self.bands = list(self.p.employed_by_age)
        self._cache: dict[tuple[str, int], Weighted] = {}

    def dist(self, age: int, pain_level: int) -> Weighted:
        """pain_level: 0 none, 1 low-interference, 2 high-interference."""
        band = band_of(age, self.bands)
        key = (band, pain_level)
        if key in self._cache:
            return self._cache[key]
        p = self.p
        emp = p.employed_by_age[band]
        unemp = p.unemployed_by_age.get(band, 0.0)
        if pain_level:
            emp *= p.pain_employment_ratio_high if pain_level == 2 else p.pain_employment_ratio_low
            unemp *= p.pain_unemployment_ratio
        inactive = max(0.02, 1.0 - emp - unemp)
        split = dict(p.inactive_split_by_age.get(band, {"other": 1.0}))
        if pain_level and "long_term_sick" in split:
            split["long_term_sick"] *= p.pain_long_term_sick_weight
        ssum = sum(split.values())
        employees = emp * (1 - p.self_employed_share)
        weights = {
            "employed_full_time": employees * (1 - p.part_time_share),
            "employed_part_time": employees * p.part_time_share,
            "self_employed": emp * p.self_employed_share,
            "unemployed": unemp,
        }
        for k, v in split.items():
            weights[k] = weights.get(k, 0.0) + inactive * v / ssum
        dist = Weighted(list(weights), list(weights.values()))
        self._cache[key] = dist
        return dist


def _prob_by_age(table: dict[str, float], age: int) -> float:
    return table[band_of(age, list(table))]


def make_truth(
    rng: random.Random,
    person: Person,
    practice: Practice,
    params: Params,
    emp_model: EmploymentModel,
    extract: int,
) -> Truth:
    t = Truth()
    age = person.age
    pp = params.pain
    adult_from = person.birth + years(16)

    if age >= 16:
        band = band_of(age, list(pp.prevalence_by_age_sex))
        prev = pp.prevalence_by_age_sex[band][person.sex]
        prev *= 1 + (practice.deprivation - 3) * pp.deprivation_multiplier_step
        if rng.random() < prev:
            t.pain = True
            back = min(rng.expovariate(1 / pp.onset_years_mean), max(age - 16, 0) + 0.5)
            t.pain_onset = max(adult_from, min(extract - years(back), person.end - 1))
            t.pain_high = rng.random() < _prob_by_age(pp.high_interference_by_age, age)

        # Employment spells, walking back from the extract date.
        level = (2 if t.pain_high else 1) if t.pain else 0
        window_start = max(adult_from, extract - years(params.recording.employment_history_years))
        end = person.death if person.death is not None else extract  # no work after death
        state = emp_model.dist(age, level).pick(rng)
        spells: list[Spell] = []
        while end >= window_start:
            mean = params.employment.spell_years_mean.get(state, 3.0)
            start = max(window_start, end - max(30, years(rng.expovariate(1 / mean))))
            # Pain with onset inside this spell: the earlier part had no pain effect.
            spells.append(Spell(start, end, state))
            end = start - 1
            if end < window_start:
                break
            prev_age = age_on(person.birth, end)
            prev_level = level if (t.pain and t.pain_onset is not None and end >= t.pain_onset) else 0
            dist = emp_model.dist(prev_age, prev_level)
            for _ in range(4):
                new = dist.pick(rng)
                if new != state and not (new == "retired" and state != "retired" and prev_age < 75):
                    break
            state = new if new != state else "other"
        spells.reverse()
        t.spells = spells

        oth = params.other
        if age >= 18:
            if rng.random() < _prob_by_age(oth.cancer_by_age, age):
                t.cancer = max(adult_from, extract - rng.randrange(30, years(10)))
            if rng.random() < _prob_by_age(oth.dementia_by_age, age):
                t.dementia = max(adult_from, extract - rng.randrange(30, years(5)))
            for name, prev_n in oth.noise_condition_prevalence.items():
                if rng.random() < prev_n:
                    t.noise[name] = max(adult_from, extract - rng.randrange(30, years(15)))
        if person.death is not None and rng.random() < oth.palliative_if_died:
            t.palliative = max(person.reg_start, person.death - rng.randrange(7, 180))
        elif age >= 75 and rng.random() < oth.palliative_living_75:
            t.palliative = max(person.reg_start, extract - rng.randrange(7, 365))

    oth = params.other
    if rng.random() < oth.research_opt_out:
        t.opt_out = max(person.reg_start, extract - rng.randrange(1, years(8)))
    if rng.random() < oth.accessible_need:
        mix = oth.accessible_need_mix
        t.access_need = Weighted(list(mix), list(mix.values())).pick(rng)
        t.access_since = max(person.reg_start, extract - rng.randrange(1, years(8)))
    return t


def in_work(state: str | None) -> bool:
    return state in IN_WORK


def current_spell(t: Truth) -> Spell | None:
    return t.spells[-1] if t.spells else None


def eligible_ips(person: Person, t: Truth, extract: int, strict: bool = False) -> bool:
    """Trial eligibility in truth: adult 18-64, chronic pain, out of work, registered, alive.

    strict also requires out of work >= 3 months in an IPS-relevant state (unemployed,
    long-term sick, carer/at home: not retired or student), no exclusion condition, no opt-out,
    and a real (not ghost) registration.
    """
    spell = current_spell(t)
    if not (18 <= person.age <= 64 and t.pain and spell is not None):
        return False
    if person.death is not None or person.dereg is not None:
        return False
    if spell.state in IN_WORK:
        return False
    if not strict:
        return True
    return (
        spell.state in OUT_OF_WORK_IPS
        and extract - spell.start >= 91
        and person.ghost_since is None
        and t.cancer is None
        and t.dementia is None
        and t.palliative is None
        and t.opt_out is None
    )
