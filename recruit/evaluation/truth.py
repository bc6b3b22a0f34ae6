"""Reading the truth `recruit synth` writes beside a made-up extract (DIR/truth/truth.csv).

One row per made-up person: whether they are in paid work and whether they are truly eligible
for InSTEP, with the NHS number and pseudonym that link them to the extract. The column names
come from synthetic_ehr.truth_columns, which the generator writes them from. Rows are streamed
(a file may hold a million), one tuple per person in the run's scope.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recruit.errors import RecruitError
from synthetic_ehr.truth_columns import (
    DEATH_DATE,
    DEREGISTRATION_DATE,
    ELIGIBLE_IPS,
    ELIGIBLE_IPS_STRICT,
    EMPLOYMENT_AT_EXTRACT,
    IN_WORK_AT_EXTRACT,
    NHS_NUMBER,
    PRACTICE_ODS,
    PSEUDONYM,
    REGISTRATION_START,
)

# Which truth column says "truly eligible", and what that means in words.
ELIGIBILITY = {
    ELIGIBLE_IPS: "aged 18 to 64, chronic pain, not in paid work, registered and alive",
    ELIGIBLE_IPS_STRICT: (
        "aged 18 to 64, chronic pain, out of work for 3 months or more as unemployed, long-term sick "
        "or caring (not retired or a student), really living in the area, and no cancer, dementia, "
        "palliative care or research opt-out"
    ),
}


def truth_csv(path: str | Path) -> Path:
    """The truth.csv for a path: the file itself, or inside a folder (DIR/truth or DIR)."""
    p = Path(path)
    for candidate in (p, p / "truth.csv", p / "truth" / "truth.csv"):
        if candidate.is_file():
            return candidate
    raise RecruitError(
        f"No truth file at {p}. Give the truth.csv that `recruit synth` wrote (in its truth folder)."
    )


def truth_extract_date(truth_file: Path) -> dt.date | None:
    """The date the truth describes, from the params.json `recruit synth` writes beside it."""
    params = truth_file.parent / "params.json"
    try:
        data = json.loads(params.read_text(encoding="utf-8"))
        return dt.date.fromisoformat(data["params"]["extract_date"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


_TRUE = frozenset({"true", "True", "TRUE", "1", "yes", "Yes", "y", "t"})


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value.strip()) if value.strip() else None
    except ValueError:
        return None


@dataclass
class TruthStats:
    """What reading the truth found, for the evaluation's notes."""

    rows: int = 0
    in_scope: int = 0
    eligible_flagged: int = 0
    eligible_not_on_index_date: int = 0  # eligible on the extract date, not on the list on the index date


PSEUDONYM_PREFIX = "pseudonym "  # the person key of a truth row with a pseudonym but no NHS number


def truth_rows(
    path: Path,
    eligibility: str,
    index_date: dt.date,
    practice: str | None,
    stats: TruthStats,
    pseudonyms: bool = False,
) -> Iterator[tuple[str, str | None, int, int, str]]:
    """(person key, pseudonym, eligible for this run, in work, employment state) for each
    in-scope person. The key is the NHS number; pseudonyms (a run on a pseudonymised extract):
    also the pseudonym, and a person with a pseudonym but no NHS number is keyed by it.

    A person flagged eligible in the truth is eligible for this run only if the truth also has
    them registered (and alive) on the run's index date: the search cannot be blamed for people
    who joined the practice after it, or had left or died before it. Rows are read with plain
    csv.reader and column positions (a million rows: DictReader would double the time).
    """
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        needed = [NHS_NUMBER, eligibility, IN_WORK_AT_EXTRACT]
        missing = [name for name in needed if name not in header]
        if missing:
            raise RecruitError(
                f"{path} is not a truth file from `recruit synth`: it has no column {', '.join(missing)}."
            )
        col = {name: i for i, name in enumerate(header)}
        i_nhs, i_eligible, i_work = (col[name] for name in needed)
        i_pseudonym = col.get(PSEUDONYM) if pseudonyms else None
        if pseudonyms and i_pseudonym is None:
            raise RecruitError(
                f"{path} has no pseudonym column, so the people of a pseudonymised extract cannot be "
                "matched to it: make the extract and its truth again with this version of `recruit synth`."
            )
        i_state = col.get(EMPLOYMENT_AT_EXTRACT)
        i_practice = col.get(PRACTICE_ODS) if practice is not None else None
        dates = [col.get(name) for name in (REGISTRATION_START, DEREGISTRATION_DATE, DEATH_DATE)]
        width = len(header)
        for row in reader:
            stats.rows += 1
            if len(row) < width:
                row += [""] * (width - len(row))
            nhs = row[i_nhs].replace(" ", "")
            pseudonym = row[i_pseudonym].strip() or None if i_pseudonym is not None else None
            key = nhs or (PSEUDONYM_PREFIX + pseudonym if pseudonym else "")
            if not key or (i_practice is not None and row[i_practice] not in ("", practice)):
                continue
            stats.in_scope += 1
            eligible = row[i_eligible] in _TRUE
            if eligible:
                stats.eligible_flagged += 1
                start, left, died = (None if i is None else _date(row[i]) for i in dates)
                on_index = (
                    (start is None or start <= index_date)
                    and (left is None or left > index_date)
                    and (died is None or died > index_date)
                )
                if not on_index:
                    stats.eligible_not_on_index_date += 1
                    eligible = False
            state = (row[i_state].strip() if i_state is not None else "") or "unknown"
            yield key, pseudonym, int(eligible), int(row[i_work] in _TRUE), state[:40]
