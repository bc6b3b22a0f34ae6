"""Reply slips back into recruit, so that every later search and letter run honours them.

A reply slip carries only its study number (the invitation's opaque id). The practice or the
research team types the slips into a CSV or Excel table with three columns: study number, reply
and date. Headers are read forgivingly (any case, punctuation or a small misspelling); values
strictly, because a misread reply could mean writing to someone who said no.

Each reply is recorded on its invitation (reply, replied_at, status). An optional fourth column,
"in paid work", holds the slip's question "Are you in paid work at the moment?" (yes, no, or
blank when not answered; "now in paid work" as the reply means yes). It is stored as
invitation.in_work, which `recruit waves fit` learns from; the answer of someone who asked not
to be contacted is not kept. Nobody with an invitation
to a study is invited to it again: the search's already_invited step excludes them whatever their
reply, and its do_not_contact step keeps anyone who asked not to be contacted out of every
study's searches. So a decline, "do not contact" and "now in paid work" all stop further letters.

The whole file is refused, recording nothing, when any row is wrong (unknown study number, a
reply that is not one of the four, a date that is missing, in the future or before the letter
was written, or that conflicts with what is recorded), with the file's row numbers, so a file can
be corrected and imported again. Importing the same file twice changes nothing. A later reply
replaces an earlier one, except that "do not contact" is never undone from a file.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from sqlalchemy import Engine, Row, bindparam, func, select, update

from recruit.errors import RecruitError
from recruit.tables import INVITATION
from recruit.workbook import CellValue, match_headers, normalise_header, parse_day, read_table

MAX_LISTED = 40

# The reply slip's four answers: stored code -> the words people write.
REPLIES: Mapping[str, str] = MappingProxyType(
    {
        "interested": "interested",
        "not_interested": "not interested",
        "do_not_contact": "do not contact",
        "now_in_work": "now in paid work",
    }
)
# The code spellings are accepted too (not_interested, now_in_work ...).
_REPLY_BY_WORDS = {
    **{words: code for code, words in REPLIES.items()},
    **{code.replace("_", " "): code for code in REPLIES},
}
# The invitation's status after each reply (the search reads status and reply).
STATUS_AFTER: Mapping[str, str] = MappingProxyType(
    {
        "interested": "replied",
        "not_interested": "declined",
        "do_not_contact": "do_not_contact",
        "now_in_work": "declined",
    }
)
HEADERS = {
    "study_number": [
        "study number",
        "study no",
        "study id",
        "study ref",
        "study reference",
        "invitation number",
    ],
    "reply": ["reply", "response", "answer", "outcome"],
    "date": [
        "date",
        "reply date",
        "date replied",
        "date of reply",
        "replied on",
        "date received",
        "received",
    ],
}

# The optional column for the slip's question "Are you in paid work at the moment?".
IN_WORK_HEADERS = (
    "in paid work",
    "in work",
    "paid work",
    "working",
    "in paid work now",
    "are you in paid work",
    "are you in paid work at the moment",
)
_IN_WORK_WORDS: Mapping[str, bool | None] = MappingProxyType(
    {
        "yes": True,
        "y": True,
        "in paid work": True,
        "in work": True,
        "no": False,
        "n": False,
        "not in paid work": False,
        "not in work": False,
        "": None,
        "not answered": None,
        "prefer not to say": None,
        "rather not say": None,
    }
)


def _in_work_column(header: list[CellValue]) -> int | None:
    """The in-paid-work column, if the file has one (matched exactly: it is optional, so a near
    miss must not capture another column)."""
    names = {normalise_header(h) for h in IN_WORK_HEADERS}
    hits = [i for i, h in enumerate(header) if normalise_header(h) in names]
    if len(hits) > 1:
        raise RecruitError("More than one column could be the 'in paid work' column.")
    return hits[0] if hits else None


class RepliesFileError(RecruitError):
    """The replies file has rows recruit cannot record; nothing was recorded."""


@dataclass(frozen=True)
class _Reply:
    number: int
    study_number: str
    reply: str
    day: dt.date
    in_work: bool | None = None


@dataclass
class RepliesSummary:
    rows: int = 0
    recorded: Counter[str] = field(default_factory=Counter)  # reply -> newly recorded
    changed: int = 0
    unchanged: int = 0
    in_work_answers: Counter[bool] = field(default_factory=Counter)  # newly recorded answers
    in_work_set_aside: int = 0  # answers of people who asked not to be contacted: not kept


def _study_number(value: CellValue) -> str:
    """The study number as typed, without the spaces people put in ('INSTEP-7KQ3 M9XPA')."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # Excel turned 1234 into 1234.0
    return "".join(str(value if value is not None else "").split())


def match_key(number: str) -> str:
    """What a typed study number is matched on: case, spaces and hyphens do not matter, so
    'instep 7kq3 m9xpa' finds INSTEP-7KQ3-M9XPA."""
    return re.sub(r"[\s-]", "", number).upper()


def _reply_code(value: CellValue) -> str | None:
    words = " ".join(str(value or "").replace("_", " ").split()).lower()
    return _REPLY_BY_WORDS.get(words)


def read_replies(path: Path, today: dt.date) -> tuple[list[_Reply], list[tuple[int, str]]]:
    """The file's replies and the problems found without the database (row number, problem)."""
    header, rows = read_table(path)
    cols = match_headers(header, HEADERS, path.name)
    in_work_col = _in_work_column(header)
    replies: list[_Reply] = []
    problems: list[tuple[int, str]] = []
    first: dict[str, _Reply] = {}
    accepted = ", ".join(REPLIES.values())
    for row in rows:

        def value(name: str, values: tuple[CellValue, ...] = row.values) -> CellValue:
            i = cols[name]
            return values[i] if i < len(values) else None

        number = _study_number(value("study_number"))
        reply = _reply_code(value("reply"))
        day = parse_day(value("date"))
        wrong = []
        in_work: bool | None = None
        if in_work_col is not None:
            cell = row.values[in_work_col] if in_work_col < len(row.values) else None
            answer = " ".join(str(cell if cell is not None else "").replace("_", " ").split()).lower()
            if answer not in _IN_WORK_WORDS:
                wrong.append(f"'in paid work' must be yes, no or blank (not {answer!r})")
            in_work = _IN_WORK_WORDS.get(answer)
        if reply == "now_in_work":
            if in_work is False:
                wrong.append("the reply says now in paid work but 'in paid work' says no")
            in_work = True
        if reply == "do_not_contact":
            in_work = None  # not kept: they asked to be left alone
        if not number:
            wrong.append("no study number")
        if reply is None:
            raw = " ".join(str(value("reply") or "").split())
            wrong.append(f"the reply must be one of: {accepted} (not {raw!r})" if raw else "no reply")
        if day is None:
            raw = str(value("date") or "").strip()
            wrong.append(
                f"the date {raw!r} is not a date like 2025-07-01 or 01/07/2025" if raw else "no date"
            )
        elif day > today:
            wrong.append(f"the date {day.isoformat()} is in the future")
        if wrong:
            problems += [(row.number, w) for w in wrong]
            continue
        assert reply is not None and day is not None
        parsed = _Reply(row.number, number, reply, day, in_work)
        earlier = first.get(match_key(number))
        if earlier is not None:
            if (earlier.reply, earlier.in_work) != (reply, in_work):
                problems.append(
                    (row.number, f"study number {number} is also on row {earlier.number} with another reply")
                )
            continue
        first[match_key(number)] = parsed
        replies.append(parsed)
    return replies, problems


def import_replies(engine: Engine, path: Path | str, today: dt.date | None = None) -> RepliesSummary:
    """Record the replies in a CSV or XLSX file on their invitations, all or nothing."""
    path = Path(path)
    today = today or dt.date.today()
    replies, problems = read_replies(path, today)
    summary = RepliesSummary(rows=len(replies))
    with engine.begin() as conn:
        wanted = sorted({match_key(r.study_number) for r in replies})
        invitations: dict[str, list[Row]] = {}
        stored_key = func.upper(func.replace(INVITATION.c.study_number, "-", ""))
        for i in range(0, len(wanted), 500):
            query = select(
                INVITATION.c.id,
                INVITATION.c.study_number,
                INVITATION.c.reply,
                INVITATION.c.replied_at,
                INVITATION.c.created_at,
                INVITATION.c.in_work,
            ).where(stored_key.in_(wanted[i : i + 500]))
            for row in conn.execute(query):
                invitations.setdefault(match_key(row.study_number), []).append(row)
        changes = []
        for r in replies:
            found = invitations.get(match_key(r.study_number), [])
            if not found:
                problems.append((r.number, f"study number {r.study_number} is not one recruit has issued"))
                continue
            if len(found) > 1:
                problems.append(
                    (r.number, f"study number {r.study_number} could be more than one: type its hyphens")
                )
                continue
            inv = found[0]
            problem = _conflict(inv, r)
            if problem:
                problems.append((r.number, problem))
                continue
            # A blank answer keeps one recorded before; "do not contact" clears it.
            in_work = (
                None if r.reply == "do_not_contact" else (r.in_work if r.in_work is not None else inv.in_work)
            )
            if inv.reply == r.reply and inv.in_work == in_work:
                summary.unchanged += 1
                continue
            if r.reply == "do_not_contact" and inv.in_work is not None:
                summary.in_work_set_aside += 1
            if inv.reply != r.reply:
                summary.changed += inv.reply is not None
                summary.recorded[r.reply] += 1
            if in_work is not None and in_work != inv.in_work:
                summary.in_work_answers[in_work] += 1
            changes.append(
                {
                    "b_id": inv.id,
                    "b_reply": r.reply,
                    "b_status": STATUS_AFTER[r.reply],
                    "b_at": dt.datetime.combine(r.day, dt.time(), tzinfo=dt.UTC),
                    "b_in_work": in_work,
                }
            )
        if problems:
            problems.sort()
            shown = [f"  row {n}: {what}" for n, what in problems[:MAX_LISTED]]
            if len(problems) > MAX_LISTED:
                shown.append(f"  ... and {len(problems) - MAX_LISTED} more")
            raise RepliesFileError(
                f"{path.name} was not imported (nothing was recorded): {len(problems)} problem(s).\n"
                + "\n".join(shown)
            )
        if changes:
            conn.execute(
                update(INVITATION)
                .where(INVITATION.c.id == bindparam("b_id"))
                .values(
                    reply=bindparam("b_reply"),
                    status=bindparam("b_status"),
                    replied_at=bindparam("b_at"),
                    in_work=bindparam("b_in_work"),
                ),
                changes,
            )
    return summary


def _day(value: dt.date | str | None) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite may hand back text
        value = dt.datetime.fromisoformat(value)
    return value.date() if isinstance(value, dt.datetime) else value


def _conflict(inv: Row, r: _Reply) -> str | None:
    """Why this reply cannot be recorded on this invitation, if it cannot."""
    written = _day(inv.created_at)
    if written is not None and r.day < written:
        return (
            f"the reply is dated {r.day.isoformat()}, before the letter was written ({written.isoformat()})"
        )
    if inv.reply is None or inv.reply == r.reply or r.reply == "do_not_contact":
        return None
    recorded = REPLIES.get(inv.reply, inv.reply)
    if inv.reply == "do_not_contact":
        return (
            f"study number {r.study_number} asked not to be contacted; recruit does not undo that from a file"
        )
    before = _day(inv.replied_at)
    if before is not None and r.day < before:
        return (
            f"study number {r.study_number} already has the later reply '{recorded}' "
            f"({before.isoformat()}); this row's reply is older"
        )
    return None
