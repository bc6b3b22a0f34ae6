"""The columns of truth.csv, named once: the generator writes them (truth_out.py) and recruit's
evaluation reads them (recruit/evaluation/truth.py), so a renamed column breaks both in one place.
"""

from __future__ import annotations

NHS_NUMBER = "nhs_number"
PSEUDONYM = "pseudonym"  # the key of the pseudonymised shapes (keys.py), beside the NHS number
PRACTICE_ODS = "practice_ods"
DEATH_DATE = "death_date"
REGISTRATION_START = "registration_start"
DEREGISTRATION_DATE = "deregistration_date"
EMPLOYMENT_AT_EXTRACT = "employment_at_extract"
IN_WORK_AT_EXTRACT = "in_work_at_extract"
ELIGIBLE_IPS = "eligible_ips"  # InSTEP's criteria in brief
ELIGIBLE_IPS_STRICT = "eligible_ips_strict"  # InSTEP's full criteria

TRUTH_HEADER = [
    "patient_id",
    NHS_NUMBER,
    PSEUDONYM,
    PRACTICE_ODS,
    "deprivation_quintile",
    "sex",
    "birth_date",
    "age_at_extract",
    "alive",
    DEATH_DATE,
    "death_coded",
    "registered",
    REGISTRATION_START,
    DEREGISTRATION_DATE,
    "ghost_since",
    "chronic_pain",
    "pain_onset",
    "pain_severity",
    "pain_coded",
    EMPLOYMENT_AT_EXTRACT,
    "employment_since",
    IN_WORK_AT_EXTRACT,
    "employment_coded",
    "cancer",
    "dementia",
    "palliative_care",
    "research_opt_out",
    "accessible_need",
    "opioid_long_term",
    "opioid_issue_last_12m",
    ELIGIBLE_IPS,
    ELIGIBLE_IPS_STRICT,
]
