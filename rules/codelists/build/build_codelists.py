#!/usr/bin/env python3
"""Reproducible build of the project's codelists.

Reads the sourced lists in ``<repo>/../shared/reference/codelists`` (override with the
``RECRUIT_SHARED_CODELISTS`` environment variable or ``--shared``) and writes, into
``rules/codelists``:

* one CSV per codelist (``code,system,term,<extra columns>,source``), and
* ``codelists.yaml``, the manifest (sources, how rows were chosen, row counts).

Every row keeps the upstream source string given in the shared files. Rows added here
(employment status completion) carry their own citation. No code value is typed from
memory: additions are listed in ``EMPLOYMENT_ADDITIONS`` below together with the public
file they were read in.

Run from anywhere:  python rules/codelists/build/build_codelists.py
The output is deterministic (rows sorted by system then code), so re-running it on the
same inputs gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
OUT_DIR = REPO_ROOT / "rules" / "codelists"
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "reference" / "codelists"
VERSION = "2026-11-23"
SYSTEM_ORDER = {"snomedct": 0, "readv2": 1, "ctv3": 2, "dmd": 3}
SHARED_DOC = "shared/reference/codelists/SOURCES.md"

Row = dict[str, str]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def read_shared(shared: Path, name: str) -> list[Row]:
    with (shared / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def is_non_uk_snomed(row: Row) -> bool:
    """US/CA extension concepts never occur in UK GP data (EMIS-local IDs do, so keep those)."""
    ns = row.get("snomed_namespace", "")
    return ns.startswith("us_extension") or ns.startswith("ca_extension")


def write_csv(name: str, columns: list[str], rows: list[Row]) -> Path:
    header = ["code", "system", "term", *columns, "source"]
    seen: set[tuple[str, str]] = set()
    for row in rows:
        key = (row["code"], row["system"])
        if key in seen:
            raise SystemExit(f"{name}: duplicate (code, system) {key}")
        seen.add(key)
        for col in header:
            if not row.get(col, "").strip() and col not in ("strength",):
                raise SystemExit(f"{name}: empty {col!r} for {key}")
    rows = sorted(rows, key=lambda r: (SYSTEM_ORDER[r["system"]], r["code"]))
    path = OUT_DIR / f"{name}.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({col: row.get(col, "").strip() for col in header})
    return path


def counts_by_system(rows: Iterable[Row]) -> dict[str, int]:
    c = Counter(r["system"] for r in rows)
    return {s: c[s] for s in sorted(c, key=lambda s: SYSTEM_ORDER[s])}


def first_match(term: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, value in rules:
        if re.search(pattern, term, re.IGNORECASE):
            return value
    return None


# --------------------------------------------------------------------------------------
# chronic pain: deliberately narrowed
# --------------------------------------------------------------------------------------

# Checked first: anything acute or historical is not evidence of current chronic pain.
PAIN_DROP_FIRST: list[tuple[str, str]] = [
    (r"\bacute\b", "acute presentation"),
    (r"^h/o|history of", "history-of code"),
    (r"referral to back pain clinic", "back-pain clinic referral (not specific to persistent pain)"),
    (r"^pain management( \(specialty\))?$", "generic pain-management procedure/specialty"),
    (r"scarring due to herpes zoster", "scar, not pain"),
    (r"polyneuropathy in herpes zoster", "polyneuropathy, not a pain diagnosis"),
]

# Then: keep only named chronic/persistent pain diagnoses, reviews and pain-service referrals.
PAIN_KEEP: list[tuple[str, str]] = [
    (r"fibromyalg|myofascial pain syndrome", "fibromyalgia"),
    (
        r"complex regional pain|chronic regional pain|algoneurodystrophy|"
        r"reflex sympathetic dystrophy|causalgia",
        "crps",
    ),
    (r"phantom", "phantom_limb"),
    (r"post-?herpetic|postzoster|post-zoster", "post_herpetic"),
    (
        r"temporomandibular joint[- ]pain[- ]dysfunction|costen|"
        r"chronic orofacial pain due to temporomandibular",
        "tmj",
    ),
    (r"chronic low back pain", "chronic_back_pain"),
    (r"chronic headache|chronic tension-type headache|chronic post-traumatic headache", "chronic_headache"),
    (
        r"chronic painful diabetic neuropathy|diabetic peripheral neuropathic pain|"
        r"neuropathic pain|central post-stroke pain|trigeminal neuralgia|tic douloureux|"
        r"glossopharyngeal neuralgia",
        "neuropathic",
    ),
    (r"chronic pain review", "chronic_pain_review"),
    (
        r"refer.*pain clinic|referral to pain management|referred to pain management|"
        r"under care of pain management|pain management referral|pain management program",
        "pain_management_referral",
    ),
    (
        r"^\[?d?\]?chronic pain$|chronic intractable pain|other chronic pain|"
        r"somatoform pain disorder|chronic pain personality|persistent wound pain",
        "chronic_pain_explicit",
    ),
]

# A few rows from the broad list are named chronic pain conditions that the shared
# "explicit" keyword match missed; they are added back by exact term.
PAIN_BROAD_ADDITIONS = re.compile(
    r"^(chronic tension-type headache|chronic post-traumatic headache|somatoform pain disorder)$",
    re.IGNORECASE,
)


def build_chronic_pain(shared: Path) -> tuple[list[Row], dict[str, object]]:
    rows = read_shared(shared, "chronic_pain.csv")
    kept: list[Row] = []
    dropped: list[Row] = []
    added_broad = 0
    for r in rows:
        spec = r["specificity"]
        term = r["term"].strip()
        if spec == "broad_pain_related":
            if not PAIN_BROAD_ADDITIONS.match(term):
                continue
            added_broad += 1
        reason = first_match(term, PAIN_DROP_FIRST)
        category = None if reason else first_match(term, PAIN_KEEP)
        if category is None and reason is None:
            reason = (
                "not a named chronic/persistent pain diagnosis "
                "(symptom, neuropathy type, device or spinal code)"
            )
        if category and is_non_uk_snomed(r):
            category, reason = None, "US/Canadian SNOMED extension (never in UK GP data)"
        if category:
            kept.append({**r, "category": category})
        else:
            dropped.append({**r, "reason": reason or ""})
    # review log of every explicit/specific row that was dropped, for clinical checking
    log = OUT_DIR / "build" / "chronic_pain_dropped_rows.csv"
    with log.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(
            fh,
            fieldnames=["code", "system", "term", "specificity", "source_lists", "reason"],
            lineterminator="\n",
            extrasaction="ignore",
        )
        w.writeheader()
        for r in sorted(dropped, key=lambda r: (r["reason"], SYSTEM_ORDER[r["system"]], r["code"])):
            w.writerow(r)
    stats = {
        "input_rows": len(rows),
        "candidates_explicit_or_specific": sum(1 for r in rows if r["specificity"] != "broad_pain_related"),
        "added_from_broad_by_exact_term": added_broad,
        "kept": len(kept),
        "dropped_from_candidates": len(dropped),
        "dropped_by_reason": dict(Counter(r["reason"] for r in dropped).most_common()),
        "kept_by_category": dict(sorted(Counter(r["category"] for r in kept).items())),
    }
    return kept, stats


# --------------------------------------------------------------------------------------
# opioids (dm+d only)
# --------------------------------------------------------------------------------------

DRUG_KEYWORDS: list[tuple[str, str]] = [
    (r"co-codamol|codeine.*paracetamol|paracetamol.*codeine", "co-codamol"),
    (r"co-dydramol|dihydrocodeine.*paracetamol|paracetamol.*dihydrocodeine", "co-dydramol"),
    (r"dihydrocodeine", "dihydrocodeine"),
    (r"codeine", "codeine"),
    (r"tramadol", "tramadol"),
    (r"tapentadol", "tapentadol"),
    (r"oxycodone", "oxycodone"),
    (r"buprenorphine", "buprenorphine"),
    (r"fentanyl", "fentanyl"),
    (r"diamorphine", "other"),
    (r"morphine", "morphine"),
    (
        r"pethidine|methadone|diamorphine|hydromorphone|pentazocine|papaveretum|dipipanone|"
        r"meptazinol|nalbuphine|co-proxamol|dextropropoxyphene|dextromoramide|palfium",
        "other",
    ),
]
NON_ANALGESIC = re.compile(
    r"linctus|kaolin|remifentanil|alfentanil|sufentanil|pholcodine|cough|"
    r"diphenoxylate|loperamide",
    re.IGNORECASE,
)
INJECTABLE = re.compile(r"injection|infusion|for injection|ampoule|pre-filled syringe", re.IGNORECASE)
FORM_RULES: list[tuple[str, str]] = [
    (r"transdermal|patch", "patch"),
    (r"injection|infusion|ampoule|pre-filled syringe", "injection"),
    (r"capsule", "capsule"),
    (r"tablet|caplet", "tablet"),
    (
        r"oral solution|oral suspension|solution|suspension|syrup|elixir|linctus|mixture|"
        r"oral drops|liquid|granules",
        "liquid",
    ),
]
STRENGTH = re.compile(
    r"(\d+(?:\.\d+)?\s?(?:mg|micrograms?|microgram|g|ml|mmol|%)"
    r"(?:\s?/\s?\d*(?:\.\d+)?\s?(?:mg|micrograms?|microgram|g|ml|hour|hours|dose|actuation|%))*)",
    re.IGNORECASE,
)


def dependence_buprenorphine(term: str) -> bool:
    """Buprenorphine implants and 2 mg+ sublingual/lyophilisate forms are for dependence."""
    if not re.search(r"buprenorphine|subutex|suboxone|espranor|zubsolv|sixmo", term, re.IGNORECASE):
        return False
    if re.search(r"implant", term, re.IGNORECASE):
        return True
    if not re.search(r"sublingual|lyophilisate|buccal film", term, re.IGNORECASE):
        return False
    m = re.search(r"(\d+(?:\.\d+)?)\s?mg", term, re.IGNORECASE)
    return bool(m and float(m.group(1)) >= 2)


def build_opioids(shared: Path) -> tuple[list[Row], dict[str, object]]:
    rows = [r for r in read_shared(shared, "opioids.csv") if r["system"] == "dmd"]
    # Map BNF chemical (first 9 characters) and brand (first word) to a drug, learnt from
    # the core OpenSAFELY "opioids for analgesia" rows, so that AMP brand names resolve.
    chem_drug: dict[str, Counter[str]] = {}
    brand_drug: dict[str, Counter[str]] = {}
    for r in rows:
        if r["in_opioids_for_analgesia_list"] != "yes":
            continue
        drug = first_match(r["term"], DRUG_KEYWORDS)
        if not drug:
            continue
        chem_drug.setdefault(r["bnf_code"][:9], Counter())[drug] += 1
    for r in rows:
        if r["in_opioids_for_analgesia_list"] != "yes":
            continue
        drug = first_match(r["term"], DRUG_KEYWORDS) or _top(chem_drug.get(r["bnf_code"][:9]))
        if drug:
            brand_drug.setdefault(r["term"].split()[0].lower(), Counter())[drug] += 1

    # "VMP previous to <id>" rows are superseded VMPs: classify them by their successor's name
    name_by_code = {r["code"]: r["term"] for r in rows}

    def effective_term(term: str) -> str:
        m = re.fullmatch(r"VMP previous to (\d+)", term.strip())
        return name_by_code.get(m.group(1), term) if m else term

    kept: list[Row] = []
    reasons: Counter[str] = Counter()
    for r in rows:
        term = effective_term(r["term"])
        core = r["in_opioids_for_analgesia_list"] == "yes"
        gm_only = not core and not r["route_lists"] and not r["bnf_code"]
        if r["possible_substance_misuse_product"] == "yes" or dependence_buprenorphine(term):
            reasons["opioid-substitution / dependence product"] += 1
            continue
        if not (core or gm_only):
            reasons["opioid-containing non-analgesic (OpenSAFELY route lists only)"] += 1
            continue
        if NON_ANALGESIC.search(term):
            reasons["non-analgesic (linctus, kaolin, anaesthetic adjunct)"] += 1
            continue
        if INJECTABLE.search(term) or "parenteral" in r["route_lists"]:
            reasons["injectable (parenteral route or injection/infusion in term)"] += 1
            continue
        drug = (
            first_match(term, DRUG_KEYWORDS)
            or _top(chem_drug.get(r["bnf_code"][:9]))
            or _top(brand_drug.get(term.split()[0].lower()))
        )
        if drug is None:
            reasons["gm-sde-only AMP whose drug could not be resolved from its name"] += 1
            continue
        form = first_match(term, FORM_RULES) or "other"
        m = STRENGTH.search(term)
        kept.append(
            {
                **r,
                "drug": drug,
                "form": form,
                "patch": "true" if form == "patch" else "false",
                "strength": m.group(1).replace(" ", "") if m else "",
            }
        )
    stats = {
        "input_dmd_rows": len(rows),
        "kept": len(kept),
        "dropped_by_reason": dict(reasons.most_common()),
        "kept_by_drug": dict(sorted(Counter(r["drug"] for r in kept).items())),
        "kept_by_form": dict(sorted(Counter(r["form"] for r in kept).items())),
    }
    return kept, stats


def _top(counter: Counter[str] | None) -> str | None:
    if not counter:
        return None
    (value, n), *rest = counter.most_common()
    if rest and rest[0][1] == n:
        return None  # ambiguous
    return value


# --------------------------------------------------------------------------------------
# opioid dependence
# --------------------------------------------------------------------------------------


def build_opioid_dependence(shared: Path) -> list[Row]:
    out = []
    for r in read_shared(shared, "opioid_dependence.csv"):
        cat = first_match(
            r["term"],
            [
                (r"poison|overdose|toxic", "poisoning"),
                (r"dependen|addict|abuse|misuse|withdrawal|remission", "dependence_or_misuse"),
            ],
        )
        out.append({**r, "category": cat or "other_opioid_related"})
    return out


# --------------------------------------------------------------------------------------
# employment status
# --------------------------------------------------------------------------------------

SRC_MDHT = (
    "mdht/mdht-models@18e5fe6915867bb2ddcfbcfe6595a776ccc124cc:trunk/PublicHealthCaseReporting/"
    "generated/org.openhealthtools.mdht.uml.cda.phcr.flu/src/org/openhealthtools/mdht/uml/cda/"
    "phcr/flu/InfluenzaEmploymentStatusObservation.java (PHCR influenza employment-status value "
    "set, SNOMED codes only)"
)
SRC_OPENHIE = (
    "openhie/case-reporting-hiv-vn@7f7400db5331c4f15bd7593151e71ad9c6bdda92:input/fsh/ValueSet-occupation.fsh"
)
SRC_PHINVADS_UNEMPLOYED = (
    "https://phinvads.cdc.gov/vads/ViewValueSetConcept.action?id=D6317451-4B37-F011-81F2-005056ABE2F0 "
    "(CDC PHIN VADS, value set PHVS_EmploymentStatus_ODH v5: concept 73438004, code system concept name "
    "'Unemployed (finding)', published)"
)
SRC_SDOH = (
    "HL7/fhir-sdoh-clinicalcare@6604b7ac13b9f0cd80603428f99e5be0672966aa:"
    "input/fsh/instances/SDOHCC-ConditionUnemployedExample.fsh"
)
NOTE_TERM = (
    "term as displayed in public code read through the code-search index (excerpt ids {ids}; "
    "repository not named by the index); NOT checked against the UK SNOMED CT release"
)

# (code, term, category, source). Every code here was read in the cited file(s).
EMPLOYMENT_ADDITIONS: list[tuple[str, str, str, str]] = [
    (
        "160903007",
        "Full-time employment (finding)",
        "employed_full_time",
        NOTE_TERM.format(ids="62442172299, 68634960825, 56135092439, 6706150767"),
    ),
    (
        "160904001",
        "Part-time employment (finding)",
        "employed_part_time",
        NOTE_TERM.format(ids="62442172299, 68634960825, 56135092439, 6706150767"),
    ),
    (
        "160906004",
        "Self-employed (finding)",
        "self_employed",
        SRC_MDHT + " ; " + NOTE_TERM.format(ids="62442172299, 14339337351, 14022867414"),
    ),
    (
        "406156006",
        "In paid employment (finding)",
        "employed",
        SRC_MDHT + " ; " + NOTE_TERM.format(ids="62442172299"),
    ),
    (
        "105493001",
        "Retired, life event (finding)",
        "retired",
        SRC_MDHT + " ; " + NOTE_TERM.format(ids="30867820026, 6706150767, 14339337351, 61923740330"),
    ),
    (
        "65853000",
        "Student",
        "student",
        SRC_MDHT
        + " ; "
        + NOTE_TERM.format(ids="68883193330 (French display 'étudiant' in an employment value set)"),
    ),
    ("413327003", "Student full time education", "student", SRC_OPENHIE),
    (
        "440584001",
        "Permanently unable to perform work activities due to medical condition",
        "long_term_sick",
        NOTE_TERM.format(ids="14339337351, 14022867414"),
    ),
    (
        "440337002",
        "Temporarily unable to perform work activities due to medical condition",
        "long_term_sick",
        SRC_MDHT + " ; " + NOTE_TERM.format(ids="14339337351, 14022867414"),
    ),
    (
        "224456008",
        "On leave from work",
        "employed",
        NOTE_TERM.format(ids="14339337351, 14022867414"),
    ),
    ("224457004", "On maternity leave", "employed", NOTE_TERM.format(ids="14339337351, 14022867414")),
    ("224458009", "On paternity leave", "employed", NOTE_TERM.format(ids="14339337351, 14022867414")),
    (
        "224460006",
        "On compassionate leave",
        "employed",
        NOTE_TERM.format(ids="14339337351, 14022867414"),
    ),
    ("224461005", "On unpaid leave", "employed", NOTE_TERM.format(ids="14339337351, 14022867414")),
    ("224462003", "Suspended from work", "employed", NOTE_TERM.format(ids="14339337351, 14022867414")),
    (
        "307112004",
        "On secondment from work",
        "employed",
        NOTE_TERM.format(ids="14339337351, 14022867414"),
    ),
    (
        "224372004",
        "Does voluntary work",
        "other",
        SRC_MDHT + " ; " + NOTE_TERM.format(ids="14339337351, 14022867414"),
    ),
    ("160895006", "Stopped work", "other", NOTE_TERM.format(ids="14339337351, 6706150767")),
]

EMPLOYMENT_SHARED_CATEGORY = {
    ("224363007", "snomedct"): "employed",
    ("73438004", "snomedct"): "unemployed",
    ("741062008", "snomedct"): "other",  # not in labour force: out of work, reason unknown
    ("224459001", "snomedct"): "employed",  # on sick leave: still has a job
    ("Ua0Ur", "ctv3"): "employed",
    ("Y2854", "ctv3"): "long_term_sick",
    ("Ua0TB", "ctv3"): "employed",
    ("13JV.", "readv2"): "employed",
    ("13J7.", "ctv3"): "unemployed",
    ("13J7.", "readv2"): "unemployed",
}
# Carer rows that are about someone else caring for the patient, not the patient caring.
EMPLOYMENT_DROP = {("03Y4.", "readv2"), ("XaIfy", "ctv3"), ("13J..", "readv2"), ("13q..", "readv2")}


def build_employment(shared: Path) -> tuple[list[Row], dict[str, object]]:
    out: list[Row] = []
    dropped = []
    for r in read_shared(shared, "employment_status.csv"):
        key = (r["code"], r["system"])
        if key in EMPLOYMENT_DROP:
            dropped.append(f"{r['system']}:{r['code']} {r['term']}")
            continue
        if key in EMPLOYMENT_SHARED_CATEGORY:
            cat = EMPLOYMENT_SHARED_CATEGORY[key]
        elif r["status_detail"] == "carer":
            cat = "carer_or_home"
        else:
            raise SystemExit(f"employment_status: unmapped shared row {key}")
        source = r["source"]
        if key == ("73438004", "snomedct"):
            source += (
                " ; "
                + SRC_OPENHIE
                + " (display 'Out of work') ; "
                + SRC_SDOH
                + " ; "
                + SRC_PHINVADS_UNEMPLOYED
            )
        out.append({**r, "category": cat, "source": source})
    have = {(r["code"], r["system"]) for r in out}
    for code, term, cat, source in EMPLOYMENT_ADDITIONS:
        if (code, "snomedct") in have:
            raise SystemExit(f"employment addition already present: {code}")
        out.append({"code": code, "system": "snomedct", "term": term, "category": cat, "source": source})
    stats = {
        "dropped": dropped,
        "added_snomed": len(EMPLOYMENT_ADDITIONS),
        "by_category": dict(sorted(Counter(r["category"] for r in out).items())),
    }
    return out, stats


# --------------------------------------------------------------------------------------
# fit notes, benefits
# --------------------------------------------------------------------------------------

FIT_NOTE_MAP = {
    "not_fit_for_work": "not_fit_for_work",
    "may_be_fit_for_work": "may_be_fit_for_work",
    "med3_or_medical_certificate": "fit_note_issued",
    "med3_back_to_work": "back_to_work",
    "other_dwp_medical_statement": "other_dwp_statement",
    "self_certificate": "self_certificate",
    "sickness_absence": "sickness_absence",
    "certificate_duration": "certificate_duration",
    "other_sickness_certification": "other_sickness_certification",
}
# moved to benefits / employment status, or not about certification at all
FIT_NOTE_DROP = {
    ("160978002", "snomedct"),
    ("Y2854", "ctv3"),
    ("333311000000101", "snomedct"),
}


def build_fit_note(shared: Path) -> list[Row]:
    out = []
    for r in read_shared(shared, "fit_note.csv"):
        if (r["code"], r["system"]) in FIT_NOTE_DROP:
            continue
        out.append({**r, "category": FIT_NOTE_MAP[r["fit_note_type"]]})
    return out


BENEFIT_MAP = {
    "sickness_invalidity_benefit": "out_of_work_benefit",
    "unemployment_benefit": "out_of_work_benefit",
    "disability_benefit_examination": "disability_benefit",
    "sickness_payment_claim": "other",  # statutory sick pay is paid to employees
    "carers_allowance": "other",
    "low_income_benefit": "other",  # includes in-work benefits
}


def build_benefits(shared: Path) -> list[Row]:
    return [{**r, "category": BENEFIT_MAP[r["benefit_type"]]} for r in read_shared(shared, "benefits.csv")]


# --------------------------------------------------------------------------------------
# exclusions split: palliative care, dementia, cancer, research opt-out
# --------------------------------------------------------------------------------------

PALLIATIVE_DROP = re.compile(r"\(qualifier value\)|\(environment\)", re.IGNORECASE)
PALLIATIVE_DROP_CODES = {
    # Read v2 / CTV3 equivalents of the qualifier/environment concepts dropped above
    ("9b1B.", "readv2"),
    ("9b1C.", "readv2"),
    ("9b74.", "readv2"),
    ("9b740", "readv2"),
    ("9b9B.", "readv2"),
    ("XaIh7", "ctv3"),
    ("XaIh8", "ctv3"),
    ("XaIiW", "ctv3"),
    ("Xa2l6", "ctv3"),
    ("XabAa", "ctv3"),
}


def build_palliative(ex: list[Row]) -> list[Row]:
    out = []
    for r in ex:
        if "palliative_end_of_life" not in r["category"].split("|") or r["system"] == "dmd":
            continue
        if PALLIATIVE_DROP.search(r["term"]) or (r["code"], r["system"]) in PALLIATIVE_DROP_CODES:
            continue
        cat = "pcd_palcare_cod" if "PCD_PALCARE_COD" in r["subcategory"] else "gm_sde_palliative"
        out.append({**r, "category": cat})
    return out


DEMENTIA_DROP = re.compile(
    r"alcohol-induced psychosis|psychoactive substance abuse|post-?concuss|"
    r"\(organism\)|spongiform encephalopathy agent|tabes dorsalis",
    re.IGNORECASE,
)
DEMENTIA_ADMIN = re.compile(
    r"monitoring|annual review|medication review|excepted|exception reporting|"
    r"butterfly scheme|review done|invitation|invite",
    re.IGNORECASE,
)


def build_dementia(ex: list[Row]) -> list[Row]:
    out = []
    for r in ex:
        if "dementia" not in r["category"].split("|"):
            continue
        in_pcd = "PCD_DEM_COD" in r["subcategory"] or "opensafely_dementia" in r["subcategory"]
        if not in_pcd and DEMENTIA_DROP.search(r["term"]):
            continue
        cat = "admin_or_review" if DEMENTIA_ADMIN.search(r["term"]) else "diagnosis"
        out.append({**r, "category": cat})
    return out


CANCER_DROP = re.compile(
    r"\bbenign\b|in situ|uncertain|unknown behaviou?r|borderline|"
    r"gammopathy of uncertain|^h/o|history of",
    re.IGNORECASE,
)


def build_cancer(ex: list[Row]) -> tuple[list[Row], dict[str, int]]:
    out = []
    dropped = 0
    for r in ex:
        if "cancer" not in r["category"].split("|"):
            continue
        if CANCER_DROP.search(r["term"]):
            dropped += 1
            continue
        sub = r["subcategory"]
        if "haematological-cancer" in sub:
            cat = "haematological"
        elif "lung-cancer" in sub:
            cat = "lung"
        else:
            cat = "other_solid"
        out.append({**r, "category": cat})
    return out, {"dropped_benign_in_situ_uncertain_history": dropped}


# Categories follow `<kind>_dissent` / `<kind>_withdrawn`: for each kind, a person's latest
# dated record of that kind decides whether they are in dissent (on one day, dissent wins).
OPT_OUT_MAP = {
    "type1_opt_out_dissent_secondary_use": "type1_dissent",
    "type2_opt_out_dissent_disclosure_by_hscic": "type2_dissent",
    "dissent_national_audit": "national_audit_dissent",
}

TYPE1_PAGE = (
    "https://www.thegoodpractice.london/type-1-opt-out (practice page: type 1 objection is "
    "XaZ89 or 827241000000103; term as the CTV3 code's)"
)
TYPE1_CEGEDIM = (
    "https://knowledge.cegedim-healthcare.co.uk/national-data-opt-out-reminder-1 "
    "(Cegedim Healthcare, Nov 2018: type 1 opt-out recorded as 9Nu0.)"
)
TYPE2_PAGE = (
    "https://www.doncasterlmc.co.uk/guidance/national-patient-data-opt-out "
    "(Doncaster LMC: type 2 objection Read v2 9Nu4., CTV3 XaaVL, SNOMED CT 881561000000100)"
)

# Further published sources for rows the shared file already has, by (code, system).
OPT_OUT_EXTRA_SOURCES = {
    ("9Nu0.", "readv2"): TYPE1_CEGEDIM,
    ("XaZ89", "ctv3"): TYPE1_PAGE,
    ("9Nu4.", "readv2"): TYPE2_PAGE,
    ("XaaVL", "ctv3"): TYPE2_PAGE,
}

# (code, system, term, category, source): codes the shared file lacks, each read in the cited
# page. Withdrawal codes (type 1 'dissent withdrawn', type 2 withdrawal) and a SNOMED CT code for
# national audit dissent were searched for (OpenCodelists copies in public repositories, NHS
# England/NHS Digital and practice pages) and not found published with their meaning, so none is
# listed: until they are, a recorded dissent is never taken back by the search (the safe
# direction). DiscoveryQueryLibrary@7f8573df1bf4:Projects/BartsPancreasTissueBankPhase2/Queries/
# bp2_type1and2.sql extracts 9Nu1./XaZ8a with type 1 and 9Nu5./XaaVM with type 2 but gives no
# terms; a code wrongly taken for a withdrawal would re-include opted-out people, so they wait.
OPT_OUT_ADDITIONS = [
    (
        "827241000000103",
        "snomedct",
        "Dissent from secondary use of GP patient identifiable data",
        "type1_dissent",
        TYPE1_PAGE,
    ),
    (
        "881561000000100",
        "snomedct",
        "Dissent from disclosure of personal confidential data by Health and Social Care Information Centre",
        "type2_dissent",
        TYPE2_PAGE,
    ),
]


def build_opt_out(ex: list[Row]) -> list[Row]:
    out = []
    for r in ex:
        if r["category"] != "opt_out_dissent" or r["subcategory"] not in OPT_OUT_MAP:
            continue
        source = r["source"]
        extra = OPT_OUT_EXTRA_SOURCES.get((r["code"], r["system"]))
        if extra:
            source = f"{source} ; {extra}"
        out.append({**r, "category": OPT_OUT_MAP[r["subcategory"]], "source": source})
    for code, system, term, category, source in OPT_OUT_ADDITIONS:
        out.append({"code": code, "system": system, "term": term, "category": category, "source": source})
    return out


# --------------------------------------------------------------------------------------
# accessible information
# --------------------------------------------------------------------------------------


def accessible_category(r: Row) -> str:
    group = r["ais_group"]
    term = r["term"]
    if "large_print" in group:
        return "large_print"
    if "braille" in group:
        return "braille"
    if "easy_read" in group:
        return "easy_read"
    if "interpreter" in group:
        return "interpreter"
    if "main_spoken_language" in group:
        if re.search(r"\benglish\b", term, re.IGNORECASE) and not re.search(
            r"not english", term, re.IGNORECASE
        ):
            return "other"  # main language English: no interpreter need
        return "interpreter"
    if re.search(r"first language not english", term, re.IGNORECASE):
        return "interpreter"
    return "other"


# Two ids of the Reasonable Adjustments value set are printed with a last digit of 0, which fails
# SNOMED CT's Verhoeff check (a number rounded somewhere on its way): the loader of tabular
# extracts refuses such ids, so a codelist holding them could never match. 1082551000000105 is the
# id published SNOMED CT-derived code lists give; 1082661000000107 is the only valid id with its
# stem (not yet confirmed against a release).
CHECK_DIGIT_CORRECTIONS = {
    "1082551000000100": ("1082551000000105", "the id in published SNOMED CT-derived code lists"),
    "1082661000000100": (
        "1082661000000107",
        "the only valid id with that stem (not yet confirmed against a release)",
    ),
}


def _corrected(r: Row) -> Row:
    fix = CHECK_DIGIT_CORRECTIONS.get(r["code"])
    if fix is None:
        return r
    code, why = fix
    note = (
        f" ; check digit corrected: the source prints {r['code']} (fails the SNOMED CT Verhoeff check) "
        f"so {code} is {why}"
    )
    return {**r, "code": code, "source": r["source"] + note}


def build_accessible(shared: Path) -> list[Row]:
    return [
        {**_corrected(r), "category": accessible_category(r)}
        for r in read_shared(shared, "accessible_information.csv")
    ]


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def upstream_sources(rows: Iterable[Row]) -> list[str]:
    """Distinct upstream sources (split on ' ; ', bracketed notes kept)."""
    seen: dict[str, None] = {}
    for r in rows:
        for part in r["source"].split(" ; "):
            part = part.strip()
            if part.startswith("term as displayed in public code"):
                part = "public code read through the code-search index (see row sources)"
            seen.setdefault(part, None)
    return sorted(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path(os.environ.get("RECRUIT_SHARED_CODELISTS", DEFAULT_SHARED)),
        help="directory holding the shared sourced codelists",
    )
    args = parser.parse_args(argv)
    shared: Path = args.shared
    if not (shared / "SOURCES.md").is_file():
        print(f"shared codelists not found at {shared}", file=sys.stderr)
        return 2

    ex = read_shared(shared, "exclusions.csv")
    chronic, pain_stats = build_chronic_pain(shared)
    opioids, opioid_stats = build_opioids(shared)
    employment, emp_stats = build_employment(shared)
    cancer, cancer_stats = build_cancer(ex)

    lists: list[dict[str, object]] = []

    def emit(
        name: str,
        columns: list[str],
        rows: list[Row],
        description: str,
        derived: str,
        shared_file: str,
    ) -> None:
        write_csv(name, columns, rows)
        lists.append(
            {
                "name": name,
                "file": f"{name}.csv",
                "description": description,
                "version": VERSION,
                "columns": ["code", "system", "term", *columns, "source"],
                "match": "exact",
                "sources": [f"{SHARED_DOC} ({shared_file})", *upstream_sources(rows)],
                "derived": derived,
                "row_counts": counts_by_system(rows),
            }
        )

    emit(
        "chronic_pain",
        ["category"],
        chronic,
        "Deliberately narrow list of coded chronic/persistent pain diagnoses, chronic pain "
        "reviews and referrals to pain-management services.",
        "Started from the shared chronic_pain.csv (3,897 rows, ~60% prevalence). Kept only rows "
        "the shared file marks explicit_chronic_pain_term or specific_pain_condition_list "
        f"({pain_stats['candidates_explicit_or_specific']} rows), plus "
        f"{pain_stats['added_from_broad_by_exact_term']} broad-list rows named exactly 'Chronic "
        "tension-type headache', 'Chronic post-traumatic headache' or 'Somatoform pain disorder'. "
        "Each candidate was then checked by term: acute and history-of codes, back-pain clinic "
        "referral and generic 'Pain management' procedure/specialty were dropped; of the rest only "
        "named chronic pain conditions were kept (fibromyalgia/myofascial pain, CRPS, phantom "
        "limb, post-herpetic neuralgia, TMJ pain-dysfunction, chronic low back pain, chronic "
        "headache, named neuropathic pain syndromes incl. trigeminal neuralgia, chronic pain "
        "review, pain-clinic/pain-management referral, explicit chronic/intractable/persistent "
        "pain). Dropped: generic neuropathies and polyneuropathies, diabetic ulcers and Charcot "
        "joints, spondylosis/disc/radiculopathy/sciatica, device and procedure complications, "
        "symptom codes (burning, shooting, generalised pain), and US/CA SNOMED extension IDs. "
        f"Kept {pain_stats['kept']}, dropped {pain_stats['dropped_from_candidates']} candidates "
        "(each listed with its reason in build/chronic_pain_dropped_rows.csv).",
        "chronic_pain.csv",
    )
    emit(
        "opioids",
        ["drug", "form", "patch", "strength"],
        opioids,
        "dm+d products (VMP/AMP) of opioid analgesics for pain, as prescribed in primary care.",
        "dm+d rows of the shared opioids.csv only (Read v2/CTV3 drug codes not carried over). "
        "Kept the OpenSAFELY 'opioids for analgesia' rows and the gm-sde refset-only AMPs; "
        "dropped the opioid-containing non-analgesics that came only from the OpenSAFELY route "
        "lists (linctuses, kaolin and morphine, anaesthetic adjuncts), any remaining linctus/"
        "kaolin/remifentanil/alfentanil by name, rows flagged possible_substance_misuse_product "
        "and buprenorphine sublingual/lyophilisate products of 2 mg or more (opioid "
        "substitution), and all injectables (parenteral route list or injection/infusion/"
        "ampoule in the name). Methadone appears only as BNF 4.7.2 analgesic tablets (drug="
        "other). drug comes from the product name, else from the BNF chemical or brand name "
        "learnt from the core list; gm-sde AMPs whose drug could not be resolved were dropped. "
        "form/patch/strength are parsed from the dm+d name. "
        f"Counts: {opioid_stats['dropped_by_reason']}.",
        "opioids.csv",
    )
    emit(
        "opioid_dependence",
        ["category"],
        build_opioid_dependence(shared),
        "Diagnoses of opioid dependence, misuse or poisoning (to flag or exclude people "
        "treated for addiction).",
        "All rows of the shared opioid_dependence.csv; category from the term "
        "(poisoning / dependence_or_misuse / other_opioid_related).",
        "opioid_dependence.csv",
    )
    emit(
        "employment_status",
        ["category"],
        employment,
        "Codes recording whether a person is in work, out of work, retired, a student, "
        "long-term sick or a carer.",
        "Shared employment_status.csv recategorised (Read v2 headers 13J.. and 13q.. and the "
        "'Other regular care provider' rows dropped; carer rows -> carer_or_home), plus "
        f"{emp_stats['added_snomed']} SNOMED CT concepts read in public sources (see each row's "
        "source; several terms were seen only in code files whose repository the search index "
        "does not name and are flagged as not checked against the UK release). No Read v2 or "
        "CTV3 code for retired, student, self-employed, full/part-time or unable to work could "
        "be sourced with a term. 741062008 'Not in labor force' is category other.",
        "employment_status.csv",
    )
    emit(
        "fit_note",
        ["category"],
        build_fit_note(shared),
        "Fit notes (MED3/eMED3) and other sickness certification.",
        "Shared fit_note.csv with fit_note_type mapped to category (med3_or_medical_certificate "
        "-> fit_note_issued, med3_back_to_work -> back_to_work, MED4/5/6 -> "
        "other_dwp_statement). Moved out: 160978002 sickness/invalidity benefit (-> benefits), "
        "CTV3 Y2854 long-term sickness (-> employment_status); dropped 333311000000101 (public "
        "health classification, not a certificate).",
        "fit_note.csv",
    )
    emit(
        "benefits",
        ["category"],
        build_benefits(shared),
        "Benefit codes. out_of_work_benefit suggests not working; disability_benefit does not.",
        "All 11 rows of the shared benefits.csv (thin). Read v2 13O.. and 13R.. (and CTV3 "
        "XE0pm, 13R..) and SNOMED 160978002 -> out_of_work_benefit; 9EM.. and 9EN.. allowance "
        "examinations -> disability_benefit; sickness payment claim, carer's allowance and "
        "low-income benefits -> other. No ESA, Universal Credit, JSA, PIP or IB codes were "
        "found in any citable source. Header codes are matched exactly (children not listed).",
        "benefits.csv",
    )
    emit(
        "palliative_care",
        ["category"],
        build_palliative(ex),
        "Palliative / end-of-life care codes (exclude from invitation).",
        "Shared exclusions.csv rows with category palliative_end_of_life, excluding the 58 "
        "midazolam dm+d products (flag-only, not specific to palliative care) and the hospice/"
        "palliative-medicine qualifier-value and environment concepts and their Read/CTV3 "
        "equivalents. category = pcd_palcare_cod (NHS PCD PALCARE_COD refset) or "
        "gm_sde_palliative (gm-sde additions).",
        "exclusions.csv",
    )
    emit(
        "dementia",
        ["category"],
        build_dementia(ex),
        "Dementia diagnoses and dementia register/review codes (exclude from invitation).",
        "Shared exclusions.csv rows with category dementia. Kept every PCD DEM_COD and "
        "opensafely/dementia row; dropped gm-sde-only rows that are not dementia (alcohol-"
        "induced psychosis, psychoactive substance abuse, post-concussion syndrome, BSE agent "
        "organism, tabes dorsalis). category admin_or_review for monitoring/review/exception "
        "codes, else diagnosis.",
        "exclusions.csv",
    )
    emit(
        "cancer",
        ["category"],
        cancer,
        "Malignant cancer diagnoses (OpenSAFELY cancer lists).",
        "Shared exclusions.csv rows with category cancer (OpenSAFELY cancer-excluding-lung-"
        "and-haematological, lung-cancer and haematological-cancer lists, SNOMED and CTV3). "
        f"Dropped {cancer_stats['dropped_benign_in_situ_uncertain_history']} rows whose term "
        "says benign, in situ, uncertain/unknown behaviour, borderline or history-of. The "
        "source lists do NOT separate active from past cancer (only one history-of code was "
        "found): apply a recency window. category = haematological, lung or other_solid.",
        "exclusions.csv",
    )
    emit(
        "research_opt_out",
        ["category"],
        build_opt_out(ex),
        "Type 1 opt-out and other recorded dissent from use of the record, by kind.",
        "Shared exclusions.csv opt_out_dissent rows, plus SNOMED CT codes read in published "
        "pages. category <kind>_dissent or <kind>_withdrawn: type1_dissent (dissent from "
        "secondary use of GP patient identifiable data: Read v2 9Nu0., CTV3 XaZ89, SNOMED CT "
        "827241000000103); type2_dissent (dissent from disclosure by HSCIC, the old type 2 "
        "objection: 9Nu4., XaaVL, 881561000000100); national_audit_dissent (informed dissent "
        "for national audit: 9M1.., XaJrC). No withdrawal code (type 1 or type 2 'dissent "
        "withdrawn') and no SNOMED CT national audit dissent code could be found published, so "
        "none is listed and a recorded dissent is never taken back. Summary Care Record / "
        "record-sharing refusals and confidential-data flags were left out (not about research "
        "use); no 'declined research contact' code could be sourced.",
        "exclusions.csv",
    )
    emit(
        "accessible_information",
        ["category"],
        build_accessible(shared),
        "Accessible Information Standard and reasonable-adjustment needs for invitation letters.",
        "All rows of the shared accessible_information.csv; ais_group mapped to category: "
        "large_print, braille (incl. Moon), easy_read (incl. accessible format), interpreter "
        "(spoken/sign language interpreter needed, main spoken language other than English, "
        "first language not English); everything else (main language English, contact method, "
        "audio, communication support, other adjustments) -> other.",
        "accessible_information.csv",
    )

    manifest = {
        "version": VERSION,
        "generated_by": "rules/codelists/build/build_codelists.py",
        "input": "../shared/reference/codelists (see SOURCES.md there)",
        "csv_format": "UTF-8; header code,system,term,<extra columns>,source; one row per "
        "(code, system); system in snomedct, readv2, ctv3, dmd; Read v2 as 5-character "
        "concept codes (case-sensitive); all rows are exact-match (no prefix rows).",
        "codelists": lists,
    }
    with (OUT_DIR / "codelists.yaml").open("w", encoding="utf-8") as fh:
        fh.write("# Generated by rules/codelists/build/build_codelists.py - do not edit by hand.\n")
        yaml.safe_dump(manifest, fh, sort_keys=False, allow_unicode=True, width=100)

    for entry in lists:
        print(f"{entry['name']:24s} {entry['row_counts']}")
    print("chronic_pain:", pain_stats)
    print("opioids:", opioid_stats)
    print("employment:", emp_stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
