"""Practices and the demographics of their patients (no health or work state here)."""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from functools import lru_cache

from .codes import DATA_DIR
from .nhs_number import nhs_number_for_index
from .params import Params
from .postcode import make_postcode
from .util import Weighted, band_of, stream, years

PRACTICE_WORDS = ("Health Centre", "Medical Practice", "Surgery", "Family Practice", "Medical Centre")


@dataclass(frozen=True)
class GP:
    id: str
    given: str
    family: str


@dataclass
class Practice:
    index: int
    ods: str
    name: str
    line: str
    town: str
    area: str
    postcode: str
    phone: str
    deprivation: int  # IMD quintile, 1 least deprived .. 5 most
    employment_coding_rate: float
    legacy_system: str  # readv2 or ctv3
    old_age_tilt: float
    districts: list[int]
    n_patients: int = 0
    offset: int = 0  # global index of this practice's first patient
    gps: list[GP] = field(default_factory=list)


@dataclass(slots=True)
class Person:
    """Demographics and registration; dates are proleptic Gregorian ordinals."""

    id: str
    index: int
    nhs_number: str
    sex: str  # 'male' / 'female'
    given: str
    family: str
    birth: int
    age: int  # completed years at the extract date
    address_line: str
    town: str
    postcode: str
    gp: GP
    reg_start: int
    dereg: int | None
    death: int | None
    death_coded: bool
    ghost_since: int | None
    end: int  # last day anything can be recorded: min(extract, death, deregistration, ghost)


@dataclass(frozen=True)
class NameData:
    male: list[str]
    female: list[str]
    surnames: list[str]
    areas: list[tuple[str, str]]
    street_stems: list[str]
    street_suffixes: list[str]


@lru_cache(maxsize=1)
def name_data() -> NameData:
    def rows(name: str) -> list[dict[str, str]]:
        with (DATA_DIR / name).open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    fn = rows("forenames.csv")
    words = rows("street_words.csv")
    return NameData(
        male=[r["name"] for r in fn if r["sex"] == "male"],
        female=[r["name"] for r in fn if r["sex"] == "female"],
        surnames=[r["name"] for r in rows("surnames.csv")],
        areas=[(r["area"], r["town"]) for r in rows("postcode_areas.csv")],
        street_stems=[r["word"] for r in words if r["kind"] == "stem"],
        street_suffixes=[r["word"] for r in words if r["kind"] == "suffix"],
    )


def split_patients(total: int, practices: int, seed: int, sigma: float) -> list[int]:
    """Split `total` patients unevenly across practices.

    Rule: practice p gets a weight exp(sigma * z_p) with z_p standard normal from the practice's
    own stream; counts are floor(total * w_p / sum w) and the remainder goes one each to the
    largest fractional parts (ties to the lower index). Every practice gets at least one patient
    when total >= practices.
    """
    if practices < 1:
        raise ValueError("practices must be >= 1")
    weights = [math.exp(sigma * stream(seed, "practice-size", p).gauss(0, 1)) for p in range(practices)]
    wsum = sum(weights)
    raw = [total * w / wsum for w in weights]
    counts = [int(x) for x in raw]
    order = sorted(range(practices), key=lambda p: (-(raw[p] - counts[p]), p))
    for p in order[: total - sum(counts)]:
        counts[p] += 1
    if total >= practices:
        for p in range(practices):
            while counts[p] == 0:
                donor = max(range(practices), key=lambda q: (counts[q], -q))
                counts[donor] -= 1
                counts[p] += 1
    return counts


def make_practices(total: int, practices: int, seed: int, params: Params) -> list[Practice]:
    """The practices of a run, their sizes and characteristics (deterministic in seed)."""
    nd = name_data()
    counts = split_patients(total, practices, seed, params.practice.list_size_lognormal_sigma)
    out: list[Practice] = []
    offset = 0
    pp = params.practice
    for p in range(practices):
        rng = stream(seed, "practice", p)
        area, town = nd.areas[rng.randrange(len(nd.areas))]
        districts = sorted(rng.sample(range(1, 30), 3))
        mean = pp.employment_coding_mean
        conc = pp.employment_coding_concentration
        rate = rng.betavariate(mean * conc, (1 - mean) * conc)
        street = f"{rng.choice(nd.street_stems)} {rng.choice(nd.street_suffixes)}"
        ods = f"ZZ{p + 1:04d}"  # not a real English GP practice code (letter + five digits)
        prac = Practice(
            index=p,
            ods=ods,
            name=f"{rng.choice(nd.street_stems)} {rng.choice(PRACTICE_WORDS)}",
            line=f"{rng.randint(1, 120)} {street}",
            town=town,
            area=area,
            postcode=make_postcode(rng, area, districts[0]),
            # 01632 960xxx: a range Ofcom keeps for drama, so never a real line.
            phone=f"01632 960{rng.randrange(1000):03d}",
            deprivation=rng.randint(1, 5),
            employment_coding_rate=rate,
            legacy_system="ctv3" if rng.random() < pp.legacy_ctv3_share else "readv2",
            old_age_tilt=max(0.3, min(2.0, 1.0 + pp.old_age_tilt_sd * rng.gauss(0, 1))),
            districts=districts,
            n_patients=counts[p],
            offset=offset,
        )
        n_gps = max(1, min(12, 1 + counts[p] // max(1, pp.patients_per_gp)))
        for g in range(n_gps):
            sex_names = nd.female if rng.random() < 0.55 else nd.male
            prac.gps.append(GP(f"{ods}-gp{g + 1}", rng.choice(sex_names), rng.choice(nd.surnames)))
        out.append(prac)
        offset += counts[p]
    return out


class AgeModel:
    """Age distribution for one practice: children, OpenSAFELY adult bands, old-age tilt."""

    def __init__(self, params: Params, practice: Practice) -> None:
        d = params.demography
        bands = []
        weights = []
        for label, pct in d.adult_age_bands.items():
            lo, hi = (int(x) for x in label.split("-"))
            w = pct / 100 * (1 - d.child_share)
            if lo >= 70:
                w *= practice.old_age_tilt
            bands.append((lo, hi))
            weights.append(w)
        bands.append((0, 17))
        weights.append(d.child_share)
        self.pick_band = Weighted(bands, weights)

    def draw(self, rng: random.Random) -> int:
        lo, hi = self.pick_band.pick(rng)
        if lo >= 80:  # fewer people at each older year
            return lo + int((hi - lo + 1) * rng.random() ** 1.8)
        return rng.randint(lo, hi)


def make_person(
    rng: random.Random, practice: Practice, local_index: int, params: Params, ages: AgeModel, extract: int
) -> Person:
    """Demographics and registration history for one patient."""
    nd = name_data()
    d = params.demography
    sex = "female" if rng.random() < d.female_share else "male"
    age = ages.draw(rng)
    # Birthday somewhere in the year before the age-th anniversary.
    birth = extract - years(age) - rng.randrange(365) - 1
    given = rng.choice(nd.female if sex == "female" else nd.male)
    family = rng.choice(nd.surnames)
    street = f"{rng.choice(nd.street_stems)} {rng.choice(nd.street_suffixes)}"
    line = f"{rng.randint(1, 199)} {street}"
    postcode = make_postcode(rng, practice.area, rng.choice(practice.districts))
    gp = practice.gps[rng.randrange(len(practice.gps))]

    if rng.random() < d.recent_joiner_share:
        reg_start = extract - rng.randrange(1, 366)
    else:
        reg_years = rng.expovariate(1 / d.years_registered_mean)
        reg_start = extract - 365 - years(reg_years)
    reg_start = max(reg_start, birth + rng.randrange(0, 60))
    if reg_start >= extract:
        reg_start = extract - 1

    death = None
    if rng.random() < d.death_5y_by_age[band_of(age, d.death_5y_by_age)]:
        death = extract - rng.randrange(0, years(5))
        death = max(death, reg_start + 1, birth + 1)
        if death > extract:
            death = None
    dereg = None
    ghost = None
    if death is None:
        r = rng.random()
        if r < d.deregistered_share:
            dereg = max(reg_start + 1, extract - rng.randrange(1, years(3)))
        elif r < d.deregistered_share + d.ghost_share and age >= 16:
            ghost = max(reg_start + 1, extract - rng.randrange(365, years(10)))
        if dereg is not None and dereg > extract:
            dereg = None
        if ghost is not None and ghost > extract:
            ghost = None
    end = min(x for x in (extract, death, dereg, ghost) if x is not None)
    global_index = practice.offset + local_index
    return Person(
        id=f"{practice.ods}-{local_index + 1:07d}",
        index=global_index,
        nhs_number=nhs_number_for_index(global_index),
        sex=sex,
        given=given,
        family=family,
        birth=birth,
        age=age,
        address_line=line,
        town=practice.town,
        postcode=postcode,
        gp=gp,
        reg_start=reg_start,
        dereg=dereg,
        death=death,
        death_coded=death is not None and rng.random() < d.death_coded_share,
        ghost_since=ghost,
        end=end,
    )
