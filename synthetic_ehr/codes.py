"""The codes the generator writes, read from the project's codelists (rules/codelists/).

Read straight from the CSVs with the csv module (no dependency on the project's loader). The
project's files carry a `category` column (and `drug`/`patch` for opioids); the older shared
reference lists carry other columns (`status`, `fit_note_type`, ...) and one combined
`exclusions.csv`. Both shapes are accepted so the generator works while the lists evolve.

Background-noise codes (hypertension, asthma, ...) are not in the project's lists; they come
from the small sourced file data/noise_codes.csv.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
ENV_CODELISTS = "SYNTHETIC_EHR_CODELISTS"

SYSTEM_URI = {
    "snomedct": "http://snomed.info/sct",
    "readv2": "http://read.info/readv2",
    "ctv3": "http://read.info/ctv3",
}


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    system: str  # snomedct / readv2 / ctv3 / dmd
    term: str


@dataclass(slots=True)
class OpioidProduct:
    code: Code
    drug: str
    patch: bool


@dataclass
class CodeSet:
    """Codes by purpose, each list sorted by (system, code) so choices are reproducible."""

    pain_explicit: dict[str, list[Code]] = field(default_factory=dict)  # by system
    pain_other: dict[str, list[Code]] = field(default_factory=dict)
    opioids: dict[str, list[OpioidProduct]] = field(default_factory=dict)  # by drug
    employment: dict[str, dict[str, list[Code]]] = field(default_factory=dict)  # cat -> sys -> codes
    fit_note: dict[str, dict[str, list[Code]]] = field(default_factory=dict)
    benefits: dict[str, dict[str, list[Code]]] = field(default_factory=dict)
    exclusions: dict[str, dict[str, list[Code]]] = field(default_factory=dict)  # palliative/...
    opt_out: dict[str, list[Code]] = field(default_factory=dict)
    accessible: dict[str, dict[str, list[Code]]] = field(default_factory=dict)
    noise_conditions: dict[str, list[Code]] = field(default_factory=dict)
    noise_medicines: dict[str, list[Code]] = field(default_factory=dict)
    source_dir: str = ""


def find_codelists_dir(override: str | Path | None = None) -> Path:
    """Override, then $SYNTHETIC_EHR_CODELISTS, then ./rules/codelists, then recruit's own."""
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    if os.environ.get(ENV_CODELISTS):
        candidates.append(Path(os.environ[ENV_CODELISTS]))
    # ./rules/codelists, then the copy recruit comes with (shipped in the same wheel).
    from recruit.resources import rules_dirs

    candidates.extend(base / "codelists" for base in rules_dirs())
    for cand in candidates:
        if (cand / "chronic_pain.csv").is_file() and (cand / "opioids.csv").is_file():
            return cand
    raise FileNotFoundError(
        "No codelists found (need chronic_pain.csv and opioids.csv); looked in: "
        + ", ".join(str(c) for c in candidates)
        + f". Pass codelists_dir in the config or set {ENV_CODELISTS}."
    )


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return [r for r in csv.DictReader(fh) if r.get("code") and r.get("system")]


def _code(r: dict[str, str]) -> Code:
    return Code(r["code"].strip(), r["system"].strip(), (r.get("term") or "").strip())


def _add(store: dict, key: str, code: Code) -> None:
    store.setdefault(key, {}).setdefault(code.system, []).append(code)


def _sorted_nested(store: dict) -> dict:
    return {
        k: {s: sorted(set(v), key=lambda c: (c.system, c.code)) for s, v in sorted(d.items())}
        for k, d in sorted(store.items())
    }


_EXPLICIT_PAIN = re.compile(
    r"chronic.*pain|persistent.*pain|intractable pain|pain syndrome|fibromyalg|widespread pain|"
    r"pain management|pain clinic|neuropathic pain|chronic low back|chronic back",
    re.I,
)
_DRUG_PATTERNS = [
    ("co-codamol", re.compile(r"co-codamol|codeine.*paracetamol|paracetamol.*codeine", re.I)),
    ("co-dydramol", re.compile(r"co-dydramol|dihydrocodeine.*paracetamol", re.I)),
    ("dihydrocodeine", re.compile(r"dihydrocodeine", re.I)),
    ("codeine", re.compile(r"^codeine|codeine phosphate", re.I)),
    ("tramadol", re.compile(r"tramadol", re.I)),
    ("tapentadol", re.compile(r"tapentadol", re.I)),
    ("morphine", re.compile(r"\bmorphine", re.I)),
    ("oxycodone", re.compile(r"oxycodone", re.I)),
    ("buprenorphine", re.compile(r"buprenorphine", re.I)),
    ("fentanyl", re.compile(r"fentanyl", re.I)),
]
# Presentations a GP would plausibly issue in primary care for chronic pain.
_USABLE_FORM = re.compile(r"tablets|capsules|caplets|patches|transdermal", re.I)
_UNUSABLE = re.compile(
    r"injection|infusion|suppositor|lozenge|special order|oral solution|oral suspension|"
    r"linctus|lyophilisate|buvidal|espranor|subutex|suboxone|prolonged-release injection|"
    r"effervescent|dispersible|buccal|sublingual|nasal|spray|lollipop|granules|\(.*\)",
    re.I,
)


def _opioid_drug(r: dict[str, str]) -> str | None:
    drug = (r.get("drug") or "").strip().lower()
    if drug:
        return drug
    term = r.get("term") or ""
    for name, pat in _DRUG_PATTERNS:
        if pat.search(term):
            return name
    return None


def _employment_category(r: dict[str, str]) -> str | None:
    cat = (r.get("category") or "").strip()
    if cat:
        return cat
    status, detail = r.get("status", ""), r.get("status_detail", "")
    if detail == "long_term_sick":
        return "long_term_sick"
    if detail == "carer":
        return "carer_or_home"
    if status in {"employed", "unemployed", "retired", "student"} and detail != "on_sick_leave_from_work":
        return status
    if detail == "not_in_labour_force":
        return "other"
    return None


def _fit_note_category(r: dict[str, str]) -> str | None:
    cat = (r.get("category") or "").strip()
    if cat:
        return cat
    t = r.get("fit_note_type", "")
    if t in {"not_fit_for_work", "may_be_fit_for_work"}:
        return t
    if t == "med3_or_medical_certificate":
        return "fit_note_issued"
    return None


def _benefit_category(r: dict[str, str]) -> str | None:
    cat = (r.get("category") or "").strip()
    if cat:
        return cat
    t = r.get("benefit_type", "")
    if t in {"unemployment_benefit", "sickness_invalidity_benefit", "low_income_benefit"}:
        return "out_of_work_benefit"
    if t.startswith("disability"):
        return "disability_benefit"
    return "other"


def _ais_category(r: dict[str, str]) -> str | None:
    cat = (r.get("category") or "").strip()
    if cat:
        return cat
    g = r.get("ais_group", "")
    mapping = {
        "large_print": "large_print",
        "easy_read_or_accessible_format": "easy_read",
        "braille_or_moon": "braille",
        "spoken_language_interpreter": "interpreter",
        "sign_language_interpreter": "interpreter",
    }
    if g in mapping:
        return mapping[g]
    if g in {"main_spoken_language", "language_read"} or "|" in g:
        return None  # a language is not a need in itself
    return "other"


def load_codes(codelists_dir: str | Path | None = None) -> CodeSet:
    """Load every list the generator needs; raises if the core lists are missing."""
    root = find_codelists_dir(codelists_dir)
    cs = CodeSet(source_dir=str(root))

    pain_exp: dict[str, list[Code]] = {}
    pain_oth: dict[str, list[Code]] = {}
    for r in _rows(root / "chronic_pain.csv"):
        c = _code(r)
        if c.system not in SYSTEM_URI:
            continue
        target = pain_exp if _EXPLICIT_PAIN.search(c.term) else pain_oth
        target.setdefault(c.system, []).append(c)
    cs.pain_explicit = {s: sorted(set(v), key=lambda c: c.code) for s, v in sorted(pain_exp.items())}
    cs.pain_other = {s: sorted(set(v), key=lambda c: c.code) for s, v in sorted(pain_oth.items())}

    ops: dict[str, list[OpioidProduct]] = {}
    for r in _rows(root / "opioids.csv"):
        c = _code(r)
        if c.system != "dmd":
            continue
        if (r.get("possible_substance_misuse_product") or "").strip().lower() == "yes":
            continue
        if (r.get("in_opioids_for_analgesia_list") or "yes").strip().lower() == "no":
            continue
        if (r.get("dmd_type") or "VMP").strip().upper() not in {"VMP", ""}:
            continue
        term = c.term
        form = (r.get("form") or "").strip().lower()
        if form and form not in {"tablet", "capsule", "patch"}:
            continue
        if not _USABLE_FORM.search(term) or _UNUSABLE.search(term):
            continue
        drug = _opioid_drug(r)
        if drug is None:
            continue
        patch_raw = (r.get("patch") or "").strip().lower()
        patch = patch_raw == "true" if patch_raw else bool(re.search(r"patch|transdermal", term, re.I))
        ops.setdefault(drug, []).append(OpioidProduct(c, drug, patch))
    cs.opioids = {
        d: sorted({p.code.code: p for p in v}.values(), key=lambda p: p.code.code)
        for d, v in sorted(ops.items())
    }

    def categorised(name: str, fn) -> dict[str, dict[str, list[Code]]]:
        store: dict = {}
        for r in _rows(root / name):
            cat = fn(r)
            if cat:
                _add(store, cat, _code(r))
        return _sorted_nested(store)

    cs.employment = categorised("employment_status.csv", _employment_category)
    cs.fit_note = categorised("fit_note.csv", _fit_note_category)
    cs.benefits = categorised("benefits.csv", _benefit_category)
    cs.accessible = categorised("accessible_information.csv", _ais_category)

    excl: dict = {}
    for cat, fname in (
        ("palliative_care", "palliative_care.csv"),
        ("dementia", "dementia.csv"),
        ("cancer", "cancer.csv"),
    ):
        for r in _rows(root / fname):
            if r["system"] in SYSTEM_URI:
                _add(excl, cat, _code(r))
    opt: dict = {}
    opt_rows = [r for r in _rows(root / "research_opt_out.csv") if r["system"] in SYSTEM_URI]
    type1 = [r for r in opt_rows if (r.get("category") or "") == "type1_dissent"]
    for r in type1 or opt_rows:  # prefer the type 1 opt-out codes when the list says which
        _add(opt, "opt_out", _code(r))
    # The shared reference layout keeps these in one exclusions.csv; use it only for gaps.
    legacy = {"palliative_end_of_life": "palliative_care", "dementia": "dementia", "cancer": "cancer"}
    legacy_rows = [r for r in _rows(root / "exclusions.csv") if r["system"] in SYSTEM_URI]
    for r in legacy_rows:
        legacy_cat = legacy.get(r.get("category", ""))
        if legacy_cat and legacy_cat not in excl:
            _add(fallback := excl.setdefault("_fallback", {}), legacy_cat, _code(r))
        if (
            "opt_out" not in opt
            and r.get("category") == "opt_out_dissent"
            and r.get("recommended_action") == "exclude"
        ):
            _add(opt.setdefault("_fallback", {}), "opt_out", _code(r))
    fallback = excl.pop("_fallback", {})
    for cat, by_sys in fallback.items():
        excl.setdefault(cat, by_sys)
    opt_fallback = opt.pop("_fallback", {})
    if "opt_out" not in opt and opt_fallback:
        opt["opt_out"] = opt_fallback["opt_out"]
    cs.exclusions = _sorted_nested(excl)
    cs.opt_out = _sorted_nested(opt).get("opt_out", {})

    noise_c: dict[str, list[Code]] = {}
    noise_m: dict[str, list[Code]] = {}
    for r in _rows(DATA_DIR / "noise_codes.csv"):
        target = noise_c if r["kind"] == "condition" else noise_m
        target.setdefault(r["group"], []).append(_code(r))
    cs.noise_conditions = dict(sorted(noise_c.items()))
    cs.noise_medicines = dict(sorted(noise_m.items()))
    return cs


EMPLOYMENT_FALLBACK = {
    "employed_full_time": ("employed_full_time", "employed"),
    "employed_part_time": ("employed_part_time", "employed"),
    "self_employed": ("self_employed", "employed"),
    "unemployed": ("unemployed",),
    "long_term_sick": ("long_term_sick",),
    "retired": ("retired",),
    "student": ("student",),
    "carer_or_home": ("carer_or_home",),
    "other": ("other",),
}


def pick_system(by_system: dict[str, list[Code]], legacy_system: str, legacy: bool) -> list[Code] | None:
    """The codes to use for an entry: legacy (Read v2/CTV3) before the switch, else SNOMED.

    Falls back to whichever system has codes, so a thin list still yields an entry.
    """
    order = [legacy_system, "snomedct"] if legacy else ["snomedct", legacy_system]
    for sys_name in (*order, "readv2", "ctv3"):
        codes = by_system.get(sys_name)
        if codes:
            return codes
    return None
