"""Every rate the generator uses, with where it came from.

Each field's description ends with "Source: ..." naming the figure in
../shared/reference/epidemiology.md (section numbers refer to that file) or saying plainly
that the value is an ASSUMPTION or DERIVED. Override any field from a YAML or JSON file whose
nesting mirrors this model (see `load_params`); unknown keys are rejected so typos fail loudly.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

EPI = "epidemiology.md"


def P(default: Any, desc: str, source: str) -> Any:  # noqa: N802 - short helper used in tables
    """A pydantic Field whose description carries its source (shown in the README table)."""
    return Field(default, description=f"{desc} Source: {source}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PracticeParams(_Section):
    list_size_lognormal_sigma: float = P(
        0.6,
        "Spread of practice list sizes: patients are split across practices in proportion to "
        "lognormal(0, sigma) weights.",
        f"{EPI} s7.1 (right-skewed list sizes, mean ~10,100, 3% <2,000, 4% >20,000); "
        "sigma is an ASSUMPTION giving that shape.",
    )
    employment_coding_mean: float = P(
        0.12,
        "Mean share of working-age patients with any employment-status code (varies by practice).",
        f"{EPI} s7.8 (occupation coded for ~10-15%; beta with mean ~0.12); s4 audits 1-30%.",
    )
    employment_coding_concentration: float = P(
        6.0,
        "Beta concentration (a+b) for the per-practice employment coding rate; low values give "
        "practices from ~1% to ~30%.",
        f"ASSUMPTION chosen to span the 1%-30% range of the audits in {EPI} s4.",
    )
    patients_per_gp: int = P(
        1800,
        "Registered patients per GP (one Practitioner per this many, at least one, at most 12).",
        "ASSUMPTION.",
    )
    legacy_ctv3_share: float = P(
        0.35,
        "Share of practices whose pre-SNOMED entries are CTV3 (TPP-like); the rest use Read v2.",
        "ASSUMPTION (both systems exist in English primary care; split not in the reference).",
    )
    old_age_tilt_sd: float = P(
        0.35,
        "SD of a per-practice multiplier on the weight of ages 70+ (practices differ in age mix).",
        f"ASSUMPTION calibrated to {EPI} s6 (share 75+ per practice: mean 7.7%, 5th-95th centile 2.6-12.9%).",
    )


class DemographyParams(_Section):
    child_share: float = P(
        0.21,
        "Share of registered patients aged 0-17.",
        f"DERIVED from {EPI} s6 (practice mean 5.9% aged 0-4) x 18/5, assuming flat ages 0-17.",
    )
    adult_age_bands: dict[str, float] = P(
        {
            "18-19": 2.9,
            "20-29": 15.9,
            "30-39": 18.1,
            "40-49": 16.0,
            "50-59": 16.6,
            "60-69": 13.1,
            "70-79": 10.5,
            "80-99": 6.9,
        },
        "Adult registered population by age band (%), England 2019-21.",
        f"{EPI} s6, Table 2 of PMC10374277 (48.4 m adults).",
    )
    female_share: float = P(0.504, "Share female.", f"{EPI} s6 (female 50.4%).")
    years_registered_mean: float = P(
        12.0,
        "Mean years since registration at this practice (exponential, capped at age).",
        "ASSUMPTION.",
    )
    recent_joiner_share: float = P(
        0.08,
        "Share who joined in the 12 months before the extract date.",
        "ASSUMPTION.",
    )
    deregistered_share: float = P(
        0.04,
        "Share of extracted patients who left the practice in the 3 years before the extract.",
        "ASSUMPTION.",
    )
    ghost_share: float = P(
        0.04,
        "Share of 'ghost' registrations: still on the list, moved away, no activity since.",
        f"{EPI} s7.2 (3-5% list inflation; stated there as an assumption).",
    )
    death_5y_by_age: dict[str, float] = P(
        {"0-49": 0.004, "50-64": 0.02, "65-74": 0.05, "75-84": 0.13, "85-99": 0.35},
        "Probability that a patient (still on the extract) died in the 5 years before it, by age.",
        "ASSUMPTION (order of magnitude of English mortality; not in the reference).",
    )
    death_coded_share: float = P(
        0.97,
        "Share of true deaths whose date of death is in the record (never without a true death).",
        "ASSUMPTION.",
    )


class PainParams(_Section):
    prevalence_by_age_sex: dict[str, dict[str, float]] = P(
        {
            "16-34": {"male": 0.14, "female": 0.18},
            "35-54": {"male": 0.25, "female": 0.31},
            "55-74": {"male": 0.40, "female": 0.46},
            "75-99": {"male": 0.53, "female": 0.59},
        },
        "True chronic pain (>3 months) prevalence by age band and sex.",
        f"{EPI} s1 and s7.3 (HSE 2011; middle bands interpolated there).",
    )
    deprivation_multiplier_step: float = P(
        0.05,
        "Prevalence multiplier per IMD quintile step from the middle (q1 x0.90 ... q5 x1.10).",
        f"DERIVED from {EPI} s1/s7.3 (most vs least deprived IMD quintile ~1.16-1.24x).",
    )
    high_interference_by_age: dict[str, float] = P(
        {"16-34": 0.215, "35-54": 0.28, "55-74": 0.35, "75-99": 0.415},
        "Share of sufferers with high-interference (Von Korff grade III/IV) pain, by age.",
        f"{EPI} s1 and s7.4 (HSE 2011: 21-22% at 16-34, 39-44% at 75+; middle interpolated).",
    )
    onset_years_mean: float = P(
        8.0,
        "Mean years since onset (exponential, capped so onset is at age 16 or later).",
        "ASSUMPTION.",
    )


class RecordingParams(_Section):
    snomed_switch_date: dt.date = P(
        dt.date(2018, 1, 1),
        "Entries dated before this are coded in Read v2 or CTV3, after it in SNOMED CT.",
        "Issue brief ('Read v2 or CTV3 for entries before 2018, SNOMED CT after').",
    )
    pain_coded_base: float = P(
        0.45,
        "Probability that true chronic pain carries a chronic-pain code (before modifiers).",
        f"{EPI} s7.5 (about 0.5, range 0.3-0.6: 17-19% coded vs ~34% true).",
    )
    pain_coded_high_interference_mult: float = P(
        1.35,
        "Multiplier on pain_coded_base for high-interference pain.",
        f"{EPI} s7.5 (higher with severity); size ASSUMPTION.",
    )
    pain_coded_age65_mult: float = P(
        1.15, "Multiplier on pain_coded_base at age 65+.", f"{EPI} s7.5 (higher with age); size ASSUMPTION."
    )
    pain_coded_deprivation_step: float = P(
        0.04,
        "Additive change in coding probability per IMD quintile step above the middle.",
        f"{EPI} s7.5 (higher with deprivation); size ASSUMPTION.",
    )
    pain_code_explicit_share: float = P(
        0.7,
        "Share of true-pain codes taken from explicit chronic-pain terms (the rest from the "
        "list's other pain conditions); false positives use the reverse split.",
        "ASSUMPTION.",
    )
    pain_false_positive: float = P(
        0.03,
        "Share of pain-free adults who still carry a chronic-pain code.",
        f"{EPI} s7.5 (2-4%, stated there as an assumption).",
    )
    pain_code_delay_years_mean: float = P(
        1.0, "Mean delay from onset to the first pain code (exponential).", "ASSUMPTION."
    )
    employment_stale_share: float = P(
        0.3,
        "Share of employment codes recorded more than 2 years before the extract.",
        f"{EPI} s7.8 (20-40% stale, stated there as an assumption).",
    )
    employment_history_years: int = P(
        10, "Years of employment history simulated and eligible for coding.", "ASSUMPTION."
    )
    benefit_coded_out_of_work: float = P(
        0.06,
        "Probability that an unemployed or long-term-sick adult has an out-of-work benefit code.",
        f"ASSUMPTION ('thin' benefit coding: {EPI} s4 and codelists SOURCES.md section 5).",
    )
    benefit_coded_disability: float = P(
        0.04,
        "Probability that a long-term-sick adult has a disability-benefit code.",
        "ASSUMPTION.",
    )
    noise_condition_coded_share: float = P(
        0.9, "Probability that a background condition is coded.", "ASSUMPTION."
    )
    exclusion_coded_share: float = P(
        0.9,
        "Probability that a true cancer, dementia or palliative-care status is coded.",
        "ASSUMPTION (QOF registers make these well coded).",
    )
    accessible_need_coded_share: float = P(
        0.6, "Probability that a true accessible-information need is coded.", "ASSUMPTION."
    )


class EmploymentParams(_Section):
    employed_by_age: dict[str, float] = P(
        {"16-24": 0.504, "25-34": 0.82, "35-49": 0.851, "50-64": 0.709, "65-99": 0.10},
        "Share in work (employed or self-employed) by age band, general population.",
        f"{EPI} s3 (16-24 50.4%, 35-49 ~85.1% DERIVED, 50-64 70.9%); 25-34 and 65+ ASSUMPTION.",
    )
    unemployed_by_age: dict[str, float] = P(
        {"16-24": 0.085, "25-34": 0.035, "35-49": 0.03, "50-64": 0.025, "65-99": 0.0},
        "Share unemployed (ILO, of population) by age band.",
        f"{EPI} s3/s7.7 (16-24 14.5% of active -> ~8.5%; overall 3.4% of population).",
    )
    inactive_split_by_age: dict[str, dict[str, float]] = P(
        {
            "16-24": {"student": 0.75, "carer_or_home": 0.08, "long_term_sick": 0.07, "other": 0.10},
            "25-34": {"student": 0.15, "carer_or_home": 0.45, "long_term_sick": 0.30, "other": 0.10},
            "35-49": {"student": 0.04, "carer_or_home": 0.45, "long_term_sick": 0.41, "other": 0.10},
            "50-64": {"retired": 0.40, "carer_or_home": 0.20, "long_term_sick": 0.35, "other": 0.05},
            "65-99": {"retired": 0.97, "carer_or_home": 0.03},
        },
        "How the economically inactive divide, by age band.",
        "ASSUMPTION (shape of ONS inactivity reasons; figures not in the reference).",
    )
    self_employed_share: float = P(0.15, "Share of those in work who are self-employed.", "ASSUMPTION.")
    part_time_share: float = P(0.26, "Share of employees working part time.", "ASSUMPTION.")
    pain_employment_ratio_low: float = P(
        0.76,
        "Employment rate ratio (pain / general) for low-interference pain.",
        f"DERIVED so that the weighted ratio is ~0.70 = 52.3%/74.8% ({EPI} s3 MSK proxy).",
    )
    pain_employment_ratio_high: float = P(
        0.55,
        "Employment rate ratio (pain / general) for high-interference pain.",
        f"ASSUMPTION ({EPI} s7.7: 'make it worse with high-interference pain').",
    )
    pain_unemployment_ratio: float = P(
        2.3,
        "Unemployment (share of population) ratio for people with chronic pain.",
        f"DERIVED: 7.8% MSK / 3.4% general ({EPI} s3, s7.7).",
    )
    pain_long_term_sick_weight: float = P(
        2.5,
        "Extra weight on long-term sickness among the inactive with chronic pain.",
        f"ASSUMPTION (MSK inactivity 39.9% vs 19.1%, {EPI} s3).",
    )
    spell_years_mean: dict[str, float] = P(
        {
            "employed_full_time": 6.0,
            "employed_part_time": 4.0,
            "self_employed": 7.0,
            "unemployed": 1.0,
            "long_term_sick": 4.0,
            "retired": 40.0,
            "student": 3.0,
            "carer_or_home": 4.0,
            "other": 2.0,
        },
        "Mean length of an employment spell, by state (exponential).",
        "ASSUMPTION.",
    )


class OpioidParams(_Section):
    lookback_years: int = P(
        3,
        "Years before the extract in which prescriptions are generated.",
        "ASSUMPTION (keeps output bounded).",
    )
    acute_year_prob_pain: float = P(
        0.22,
        "Probability per year of at least one acute opioid issue, adults with chronic pain.",
        f"ASSUMPTION tuned with long-term use so the annual prevalence is ~13% ({EPI} s2, s7.6: "
        "~30% of sufferers vs ~5% of others).",
    )
    acute_year_prob_no_pain: float = P(
        0.045, "As acute_year_prob_pain, adults without chronic pain.", f"ASSUMPTION ({EPI} s7.6)."
    )
    long_term_prob_pain_low: float = P(
        0.08,
        "Probability of a long-term (repeat) opioid episode in the window, low-interference pain.",
        f"ASSUMPTION ({EPI} s2/s7.6: ~15% of new users become long-term; ~1.2% of adults 3y+).",
    )
    long_term_prob_pain_high: float = P(
        0.18, "As long_term_prob_pain_low, high-interference pain.", "ASSUMPTION."
    )
    long_term_prob_no_pain: float = P(
        0.008, "As long_term_prob_pain_low, adults without chronic pain.", "ASSUMPTION."
    )
    long_term_age_or: dict[str, float] = P(
        {"18-34": 0.6, "35-64": 1.0, "65-74": 1.4, "75-99": 1.6},
        "Multiplier on long-term probability by age.",
        f"{EPI} s2 (Jani 2020: OR 3.77 at 65-74, 4.59 at 75+ vs <35), damped: ASSUMPTION.",
    )
    long_term_deprivation_or: float = P(
        1.25,
        "Multiplier on long-term probability in the most deprived quintile (linear in between).",
        f"{EPI} s2 (Jani 2020 OR 1.56; PHE 1.6x), damped: ASSUMPTION.",
    )
    episode_median_days: float = P(
        230.0, "Median length of a long-term episode (lognormal).", f"{EPI} s2 (Bedson: median 231 days)."
    )
    episode_sigma: float = P(
        1.51,
        "Lognormal sigma of episode length.",
        f"DERIVED so that 38% of episodes exceed 1 year and ~22% exceed 2 years ({EPI} s2: 38.2%, 23.7%).",
    )
    acute_strong_factor: float = P(
        0.5,
        "Multiplier on strong opioids (morphine, oxycodone) in acute one-off issues.",
        f"ASSUMPTION, tuned so overall item shares match {EPI} s7.6 (morphine 8-10%, oxycodone 4-6%).",
    )
    acute_second_issue_share: float = P(
        0.25, "Share of acute opioid years with a second acute issue.", "ASSUMPTION."
    )
    issue_interval_days: int = P(28, "Days between repeat issues.", "ASSUMPTION (28-day supply).")
    drug_mix: dict[str, float] = P(
        {
            "co-codamol": 40.0,
            "codeine": 11.0,
            "tramadol": 13.5,
            "dihydrocodeine": 5.0,
            "co-dydramol": 3.0,
            "morphine": 9.0,
            "buprenorphine": 5.0,
            "oxycodone": 5.0,
            "fentanyl": 2.0,
        },
        "Relative share of opioid items by drug (patches only in long-term episodes).",
        f"{EPI} s7.6 (suggested item mix; only co-codamol dominance and oxycodone ~6% are sourced).",
    )
    long_term_strong_boost: float = P(
        2.0,
        "Multiplier on strong opioids (morphine, oxycodone, buprenorphine, fentanyl) in long-term episodes.",
        f"ASSUMPTION ({EPI} s2: long-acting strong opioids rising in long-term use).",
    )


class OtherParams(_Section):
    fit_notes_per_year: dict[str, float] = P(
        {
            "employed_pain": 0.45,
            "employed_no_pain": 0.14,
            "long_term_sick": 1.6,
            "unemployed": 0.35,
            "other": 0.04,
        },
        "Fit notes per person-year by true state (working-age adults).",
        f"ASSUMPTION tuned to ~0.28 notes per working-age patient-year ({EPI} s4/s7.8), "
        "concentrated in a minority.",
    )
    fit_note_frailty_shape: float = P(
        0.5,
        "Gamma shape of a per-person multiplier (mean 1) on the fit-note rate, so notes cluster "
        "in a minority of people.",
        f"ASSUMPTION ({EPI} s7.8: notes are 'concentrated in a minority of patients').",
    )
    fit_note_may_be_fit_share: float = P(
        0.069, "Share of fit notes that say 'may be fit for work'.", f"{EPI} s4 (6.9%, Apr-Dec 2018)."
    )
    cancer_by_age: dict[str, float] = P(
        {"18-49": 0.01, "50-64": 0.04, "65-74": 0.08, "75-99": 0.12},
        "Prevalence of (ever-diagnosed) cancer by age.",
        "ASSUMPTION (not in the reference).",
    )
    dementia_by_age: dict[str, float] = P(
        {"18-64": 0.001, "65-74": 0.02, "75-84": 0.06, "85-99": 0.18},
        "Prevalence of dementia by age.",
        "ASSUMPTION (not in the reference).",
    )
    palliative_if_died: float = P(
        0.35, "Share of patients who died who were on palliative care first.", "ASSUMPTION."
    )
    palliative_living_75: float = P(
        0.01, "Share of living patients aged 75+ on palliative care.", "ASSUMPTION."
    )
    research_opt_out: float = P(
        0.03, "Share with a research / type-1 opt-out code.", "ASSUMPTION (not in the reference)."
    )
    accessible_need: float = P(
        0.03, "Share with an accessible-information need.", "ASSUMPTION (not in the reference)."
    )
    accessible_need_mix: dict[str, float] = P(
        {"large_print": 0.35, "easy_read": 0.15, "braille": 0.05, "interpreter": 0.35, "other": 0.10},
        "Mix of accessible-information needs.",
        "ASSUMPTION.",
    )
    noise_condition_prevalence: dict[str, float] = P(
        {"hypertension": 0.14, "asthma": 0.065, "type2_diabetes": 0.07, "depression": 0.12},
        "Adult prevalence of background conditions (coded 90% of the time).",
        "ASSUMPTION (QOF-like orders of magnitude; not in the reference).",
    )
    noise_treated_share: dict[str, float] = P(
        {"hypertension": 0.7, "asthma": 0.85, "type2_diabetes": 0.75, "depression": 0.45},
        "Share of each background condition on a repeat medicine.",
        "ASSUMPTION.",
    )
    ppi_repeat: float = P(0.08, "Adults on a repeat proton-pump inhibitor.", "ASSUMPTION.")
    nsaid_acute_year_pain: float = P(
        0.25, "Annual probability of an acute NSAID issue with chronic pain.", "ASSUMPTION."
    )
    nsaid_acute_year_no_pain: float = P(
        0.06, "Annual probability of an acute NSAID issue without chronic pain.", "ASSUMPTION."
    )


class Params(_Section):
    """All generator parameters. Defaults are the documented baseline scenario."""

    extract_date: dt.date = P(
        dt.date(2026, 11, 1),
        "The fixed 'today' of the extract; nothing is dated after it (never the wall clock).",
        "Issue brief.",
    )
    chunk_size: int = P(
        2000, "Patients per work unit; output is identical for any value.", "Engineering choice."
    )
    codelists_dir: str | None = P(
        None,
        "Directory of codelist CSVs (default: rules/codelists under the cwd or the repo root).",
        "Issue brief.",
    )
    dmd_system: str = P(
        "https://dmd.nhs.uk",
        "Code-system URI written for dm+d medicines (EPS/GP Connect use http://snomed.info/sct).",
        "fhir-in-uk-primary-care.md s5 (UK Core uses https://dmd.nhs.uk).",
    )
    practice: PracticeParams = Field(default_factory=PracticeParams)
    demography: DemographyParams = Field(default_factory=DemographyParams)
    pain: PainParams = Field(default_factory=PainParams)
    recording: RecordingParams = Field(default_factory=RecordingParams)
    employment: EmploymentParams = Field(default_factory=EmploymentParams)
    opioids: OpioidParams = Field(default_factory=OpioidParams)
    other: OtherParams = Field(default_factory=OtherParams)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], val)
        else:
            out[key] = val
    return out


def load_params(config: Path | str | None = None, **overrides: Any) -> Params:
    """Defaults, then a YAML/JSON config file, then keyword overrides (all deep-merged).

    Dict-valued rates (e.g. `employment.employed_by_age`) merge key by key, so a config can
    change one age band without restating the others.
    """
    data: dict[str, Any] = Params().model_dump(mode="json")
    if config is not None:
        path = Path(config)
        text = path.read_text(encoding="utf-8")
        loaded = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: top level must be a mapping")
        data = _deep_merge(data, loaded or {})
    if overrides:
        data = _deep_merge(data, overrides)
    return Params.model_validate(data)


def iter_param_docs(model: type[BaseModel] = Params, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description-with-source) rows for the README table."""
    rows: list[tuple[str, str, str]] = []
    inst = model()
    for name, field in model.model_fields.items():
        value = getattr(inst, name)
        if isinstance(value, BaseModel):
            rows.extend(iter_param_docs(type(value), f"{prefix}{name}."))
            continue
        shown = json.dumps(value, default=str) if not isinstance(value, str) else value
        rows.append((f"{prefix}{name}", shown, field.description or ""))
    return rows
