"""A small made-up world of practices and people, the Bulk FHIR extracts it produces over time, and
a plain-Python model of who may be written to and from where (issue 14's invariant).

The world is a set of dated facts (registrations, names, addresses, deaths, coded records). A
practice's extract at date D shows what that practice knew on D. Facts are never retracted, so
everything a loaded extract said about a person stays true: the model may take the union of
every loaded extract for death and opt-outs, and the newest extract of each practice for who is
registered where and at which name and address.

The model is one-sided: it says who MAY get a letter; the library may be stricter. A letter
(invitation) written for search run R to patient row X with NHS number N, from practice P, is
allowed only when, at the moment it is written:
- the GP approved row X in run R, and the row showed NHS number N when the GP screened it;
- no record of N in any loaded extract (any practice, a quarantined duplicate, a record with an
  unreadable death date or a deceasedBoolean written as text) says N has died;
- among every practice's newest loaded extract (by extract date) the record of N with the latest
  registration start is at P and its registration has not ended;
- N has not opted out: any Type 1 dissent with an unreadable date (none, after its extract's
  date, before birth) counts; otherwise the latest dated dissent or withdrawal decides, dissent
  winning on the same day;
- N never asked (in any study) not to be contacted, and was never invited to the study before;
- N's true age on the run's index date is 18 to 64 (the extract may give only a year or month);
- the letter's name and address are the current ones (by FHIR use and period) of that record.
Loads the library refused teach the model nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from synthetic_ehr.nhs_number import nhs_number_for_index

NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
SCT = "http://snomed.info/sct"
DMD = "https://dmd.nhs.uk"
REGISTRATION_EXT = (
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-RegistrationDetails-1"
)
UK_CORE_PATIENT = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"

CHRONIC_PAIN = ("82423001", "Chronic pain")
DISSENT = ("827241000000103", "Dissent from secondary use of general practitioner patient identifiable data")
WITHDRAWN = (
    "827261000000102",
    "Withdrawal of dissent from secondary use of general practitioner patient identifiable data",
)
CODEINE = ("322341003", "Co-codamol 30mg/500mg tablets")

PRACTICES: tuple[tuple[str, str], ...] = (
    ("A81001", "Riverside Surgery"),
    ("B82002", "Hillview Medical Centre"),
    ("C83003", "Parkside Health Centre"),
)
GIVEN = ("Ann", "Bob", "Cara", "Dev", "Esme", "Finn", "Gita", "Hal", "Isla", "Jon", "Kay", "Lou")
FAMILY = ("Archer", "Baker", "Carter", "Dyer", "Evans", "Fisher", "Glover", "Hunter", "Irwin", "Jones")
STREETS = ("Mill Lane", "Church Road", "Station Road", "Park Avenue", "Victoria Street", "Green Close")
TOWNS = (("Leeds", "LS6"), ("York", "YO1"), ("Hull", "HU5"), ("Otley", "LS21"))

WORLD_START = dt.date(2024, 1, 1)
FAR_FUTURE_DAYS = 3000  # a "future" date stays after every extract date of a run

# How a record's date is written: good, or unreadable in one of three ways.
DATE_STYLES = ("good", "none", "future", "before_birth")
# How a death is written: readable, or in a form that must still hold the person back.
DEATH_STYLES = ("datetime", "boolean", "boolean_as_text", "future_date", "on_duplicate")


def iso(day: dt.date) -> str:
    return day.isoformat()


# --- the world ----------------------------------------------------------------------------------


@dataclass
class Address:
    lines: tuple[str, ...]
    postcode: str
    since: dt.date
    known: bool = True  # False: moved, new address not yet known (only the old ones are listed)


@dataclass
class Name:
    given: str
    family: str
    since: dt.date


@dataclass
class Registration:
    practice: str
    source_id: str
    start: dt.date
    end: dt.date | None = None  # left on this day
    known_end: dt.date | None = None  # the practice's system shows the leaving from this day
    gp2gp: bool = True  # the record went to the new practice, so the old one may stop listing it
    duplicate_id: str | None = None  # a second record of the same person in this practice
    duplicate_since: dt.date | None = None
    reused_from: dt.date | None = None  # from this day the source id names someone else


@dataclass
class Event:
    eid: str
    kind: str  # pain, dissent, withdrawn, med
    day: dt.date  # when it happened (and was recorded)
    style: str = "good"
    on_duplicate: bool = False


@dataclass
class Person:
    index: int
    nhs: str
    birth: dt.date
    birth_format: str  # full, month, year
    sex: str
    names: list[Name] = field(default_factory=list)
    addresses: list[Address] = field(default_factory=list)
    registrations: list[Registration] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    death: dt.date | None = None
    death_style: str = "datetime"

    def name_on(self, day: dt.date) -> Name:
        return [n for n in self.names if n.since <= day][-1]

    def address_on(self, day: dt.date) -> Address | None:
        known = [a for a in self.addresses if a.since <= day]
        return known[-1] if known else None

    def registration_on(self, day: dt.date) -> Registration | None:
        """The registration in force on a day (the latest started)."""
        live = [r for r in self.registrations if r.start <= day and (r.end is None or r.end > day)]
        return live[-1] if live else None

    def birth_text(self) -> str:
        if self.birth_format == "year":
            return f"{self.birth.year:04d}"
        if self.birth_format == "month":
            return f"{self.birth.year:04d}-{self.birth.month:02d}"
        return iso(self.birth)


@dataclass
class World:
    """Practices and people; `today` moves forward as the history goes on."""

    practices: list[tuple[str, str]]
    today: dt.date = WORLD_START
    people: list[Person] = field(default_factory=list)
    counter: int = 0

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def new_person(
        self, practice: str, *, age_years: int = 40, birth_format: str = "full", birth_shift: int = 0
    ) -> Person:
        i = len(self.people)
        birth = self.today - dt.timedelta(days=int(age_years * 365.25) + birth_shift)
        person = Person(
            index=i,
            nhs=nhs_number_for_index(i),
            birth=birth,
            birth_format=birth_format,
            sex=("female", "male")[i % 2],
        )
        person.names.append(Name(GIVEN[i % len(GIVEN)], FAMILY[i % len(FAMILY)], birth))
        person.addresses.append(self._address(i, 0, birth))
        self.people.append(person)
        self.register(person, practice, self.next_id("pat"))
        return person

    def _address(self, i: int, n: int, since: dt.date) -> Address:
        town, district = TOWNS[(i + n) % len(TOWNS)]
        return Address(
            (f"{10 * n + i + 1} {STREETS[(i + 2 * n) % len(STREETS)]}", town),
            f"{district} {n + 1}{'ABDEFGHJ'[i % 8]}{'LNPQRSTU'[n % 8]}",
            since,
        )

    def register(self, person: Person, practice: str, source_id: str) -> Registration:
        reg = Registration(practice, source_id, self.today)
        person.registrations.append(reg)
        return reg

    def add_event(self, person: Person, kind: str, style: str = "good", on_duplicate: bool = False) -> Event:
        event = Event(self.next_id("ev"), kind, self.today, style, on_duplicate)
        person.events.append(event)
        return event

    def move_house(self, person: Person, known: bool) -> None:
        n = len(person.addresses)
        address = self._address(person.index, n, self.today)
        address.known = known
        person.addresses.append(address)

    def change_name(self, person: Person) -> None:
        old = person.names[-1]
        person.names.append(
            Name(old.given, f"{old.family}-{FAMILY[(person.index + 3) % len(FAMILY)]}", self.today)
        )

    def move_practice(self, person: Person, to: str, lag_days: int, gp2gp: bool) -> Registration | None:
        """The person leaves their practice and registers at another from today."""
        current = person.registration_on(self.today)
        if current is None or current.practice == to:
            return None
        current.end = self.today
        current.known_end = self.today + dt.timedelta(days=lag_days)
        current.gp2gp = gp2gp
        return self.register(person, to, self.next_id("pat"))

    def reuse_id(self, leaver: Person, newcomer_practice_to: str) -> Person | None:
        """The leaver moves on (their old practice knows at once) and a new person registers at
        the old practice under the leaver's old id."""
        current = leaver.registration_on(self.today)
        if current is None:
            return None
        old_practice, old_id = current.practice, current.source_id
        if self.move_practice(leaver, newcomer_practice_to, 0, True) is None:
            return None
        current.reused_from = self.today
        self.today += dt.timedelta(days=1)
        newcomer = self.new_person(old_practice, age_years=35 + len(self.people) % 20)
        newcomer.registrations[-1].source_id = old_id
        self.add_event(newcomer, "pain")
        return newcomer

    def add_duplicate(self, person: Person) -> Registration | None:
        reg = person.registration_on(self.today)
        if reg is None or reg.duplicate_id is not None:
            return None
        reg.duplicate_id = self.next_id("dup")
        reg.duplicate_since = self.today
        return reg


# --- what an extract says -----------------------------------------------------------------------


@dataclass(frozen=True)
class RecordView:
    """One Patient resource as written into an extract, as the model reads it."""

    source_id: str
    nhs: str
    duplicate: bool
    reg_start: dt.date
    reg_end: dt.date | None
    dead: bool  # any sign of death, readable or not
    name: tuple[str, str]
    address: tuple[tuple[str, ...], str] | None


@dataclass(frozen=True)
class EventView:
    nhs: str
    kind: str
    day: dt.date | None  # None: unreadable (no date, after the extract date, before birth)


@dataclass
class ExtractView:
    practice: str
    date: dt.date
    kinds: frozenset[str]
    records: list[RecordView]
    events: list[EventView]
    label: str = ""


@dataclass(frozen=True)
class Options:
    """How one extract is written (drawn by the test)."""

    leave_out: str | None = None  # Observation, Condition or MedicationRequest: a partial extract
    manifest_lists_missing: bool = True  # the manifest still names the file left out
    drop_left: bool = False  # patients who left are not listed (else listed with an end date)
    other_org: str | None = None  # another practice's Organization also in the files
    name_order: int = 0  # where older names go in the list
    address_order: int = 0
    old_address_style: str = "old"  # old (use old) or ended (use home, period ended)
    current_address_use: bool = True  # the current address says use home
    maiden_style: str = "maiden"  # maiden or old


def _order(current: Any, older: list[Any], position: int) -> list[Any]:
    at = position % (len(older) + 1)
    return [*older[:at], current, *older[at:]]


def patient_resource(
    person: Person, reg: Registration, source_id: str, day: dt.date, opt: Options, dead: str | None
) -> tuple[dict[str, Any], tuple[str, str], tuple[tuple[str, ...], str] | None]:
    """The Patient resource, and the current name and address it carries."""
    name = person.name_on(day)
    older_names = [n for n in person.names if n.since <= day and n is not name]
    names = _order(
        {
            "use": "official",
            "family": name.family,
            "given": [name.given],
            "period": {"start": iso(name.since)},
        },
        [
            {
                "use": opt.maiden_style,
                "family": n.family,
                "given": [n.given],
                "period": {"end": iso(name.since)},
            }
            for n in older_names
        ],
        opt.name_order,
    )
    current = person.address_on(day)
    known = [a for a in person.addresses if a.since <= day]
    shown_current = current if current is not None and current.known else None
    older = [a for a in known if a is not current]
    if current is not None and not current.known:
        older = known[:-1]
    addresses: list[dict[str, Any]] = []
    for a in older:
        nxt = person.addresses[person.addresses.index(a) + 1]
        entry = {"line": list(a.lines[:1]), "city": a.lines[1], "postalCode": a.postcode}
        entry["period"] = {"start": iso(a.since), "end": iso(nxt.since)}
        entry["use"] = "old" if opt.old_address_style == "old" else "home"
        addresses.append(entry)
    if shown_current is not None:
        entry = {
            "line": list(shown_current.lines[:1]),
            "city": shown_current.lines[1],
            "postalCode": shown_current.postcode,
            "period": {"start": iso(shown_current.since)},
        }
        if opt.current_address_use:
            entry["use"] = "home"
        addresses = _order(entry, addresses, opt.address_order)
    period: dict[str, str] = {"start": iso(reg.start)}
    if reg.known_end is not None and reg.known_end <= day and reg.end is not None:
        period["end"] = iso(reg.end)
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": source_id,
        "meta": {"profile": [UK_CORE_PATIENT]},
        "identifier": [{"system": NHS, "value": person.nhs}],
        "name": names,
        "gender": person.sex,
        "birthDate": person.birth_text(),
        "address": addresses,
        "generalPractitioner": [
            {"type": "Organization", "identifier": {"system": ODS, "value": reg.practice}},
            {"reference": f"Practitioner/gp-{reg.practice}"},
        ],
        "extension": [
            {"url": REGISTRATION_EXT, "extension": [{"url": "registrationPeriod", "valuePeriod": period}]}
        ],
    }
    if dead == "datetime":
        res["deceasedDateTime"] = iso(person.death or day)
    elif dead == "boolean":
        res["deceasedBoolean"] = True
    elif dead == "boolean_as_text":
        res["deceasedBoolean"] = "true"
    elif dead == "future_date":
        res["deceasedDateTime"] = iso(day + dt.timedelta(days=FAR_FUTURE_DAYS))
    current_address = (shown_current.lines, shown_current.postcode) if shown_current else None
    return res, (name.given, name.family), current_address


def event_resource(event: Event, person: Person, subject: str, day: dt.date) -> tuple[str, dict[str, Any]]:
    """(resource type, resource) for one coded record as an extract taken on `day` shows it."""
    written = event.day
    if event.style == "future":
        written = day + dt.timedelta(days=FAR_FUTURE_DAYS)
    elif event.style == "before_birth":
        written = person.birth - dt.timedelta(days=400)
    ref = {"reference": f"Patient/{subject}"}
    if event.kind == "pain":
        return "Condition", {
            "resourceType": "Condition",
            "id": event.eid,
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "code": {"coding": [{"system": SCT, "code": CHRONIC_PAIN[0], "display": CHRONIC_PAIN[1]}]},
            "subject": ref,
            "onsetDateTime": iso(written),
            "recordedDate": iso(event.day),
        }
    if event.kind == "med":
        return "MedicationRequest", {
            "resourceType": "MedicationRequest",
            "id": event.eid,
            "status": "completed",
            "intent": "order",
            "subject": ref,
            "medicationCodeableConcept": {
                "coding": [{"system": DMD, "code": CODEINE[0], "display": CODEINE[1]}]
            },
            "authoredOn": iso(written),
            "courseOfTherapyType": {"coding": [{"code": "continuous"}]},
            "dispenseRequest": {"quantity": {"value": 100}},
        }
    code = DISSENT if event.kind == "dissent" else WITHDRAWN
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": event.eid,
        "status": "final",
        "code": {"coding": [{"system": SCT, "code": code[0], "display": code[1]}]},
        "subject": ref,
    }
    if event.style != "none":
        res["effectiveDateTime"] = iso(written)
    return "Observation", res


def event_view(event: Event, person: Person, extract_day: dt.date) -> EventView:
    readable = event.style == "good" and person.birth <= event.day <= extract_day
    return EventView(person.nhs, event.kind, event.day if readable else None)


def practice_snapshot(
    world: World, practice: str, day: dt.date, opt: Options
) -> tuple[dict[str, list[dict[str, Any]]], ExtractView]:
    """Every resource of the practice's extract taken on `day`, by file kind, and what it says."""
    files: dict[str, list[dict[str, Any]]] = {
        "Organization": [],
        "Practitioner": [],
        "Patient": [],
        "Condition": [],
        "Observation": [],
        "MedicationRequest": [],
    }
    names = dict(world.practices)
    for ods in [practice, *([opt.other_org] if opt.other_org else [])]:
        files["Organization"].append(
            {
                "resourceType": "Organization",
                "id": f"org-{ods}",
                "identifier": [{"system": ODS, "value": ods}],
                "name": names[ods],
                "address": [{"line": ["1 Surgery Road"], "city": "Leeds", "postalCode": "LS1 4AP"}],
                "telecom": [{"system": "phone", "value": "0113 496 0000"}],
            }
        )
    files["Practitioner"].append(
        {
            "resourceType": "Practitioner",
            "id": f"gp-{practice}",
            "name": [{"family": f"Doctor{practice[:1]}", "given": ["Sam"], "prefix": ["Dr"]}],
        }
    )
    view = ExtractView(practice, day, frozenset(), [], [])
    for person in world.people:
        for reg in person.registrations:
            if reg.practice != practice or reg.start > day:
                continue
            if reg.reused_from is not None and reg.reused_from <= day:
                continue  # the id now names someone else; this record is gone from the system
            left = reg.known_end is not None and reg.known_end <= day
            if left and opt.drop_left and reg.gp2gp:
                continue
            recorded_until = reg.end if left and reg.end is not None else day
            dead_known = person.death is not None and person.death <= day and not left
            style = person.death_style if dead_known else None
            subjects = [(reg.source_id, False)]
            if reg.duplicate_id and reg.duplicate_since is not None and reg.duplicate_since <= day:
                subjects.append((reg.duplicate_id, True))
            for sid, is_dup in subjects:
                # A death recorded only on the duplicate record: the kept record looks alive.
                dead = ("datetime" if is_dup else None) if style == "on_duplicate" else style
                res, name, address = patient_resource(person, reg, sid, day, opt, dead)
                files["Patient"].append(res)
                end = reg.end if "end" in res["extension"][0]["extension"][0]["valuePeriod"] else None
                view.records.append(
                    RecordView(sid, person.nhs, is_dup, reg.start, end, dead is not None, name, address)
                )
            dup = reg.duplicate_id if len(subjects) > 1 else None
            for event in person.events:
                if event.day > min(day, recorded_until):
                    continue
                subject = dup if (event.on_duplicate and dup) else reg.source_id
                kind, res = event_resource(event, person, subject, day)
                files[kind].append(res)
                view.events.append(event_view(event, person, day))
    if opt.leave_out:
        view.events = [
            e
            for e in view.events
            if {"pain": "Condition", "med": "MedicationRequest"}.get(e.kind, "Observation") != opt.leave_out
        ]
    view.kinds = frozenset(k for k in files if k != opt.leave_out)
    return files, view


def write_extract(folder: Path, files: dict[str, list[dict[str, Any]]], day: dt.date, opt: Options) -> Path:
    """A Bulk Data export folder: one NDJSON file per kind and a manifest naming the date."""
    folder.mkdir(parents=True)
    output = []
    for kind, resources in files.items():
        if kind != opt.leave_out:
            (folder / f"{kind}.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
        if kind != opt.leave_out or opt.manifest_lists_missing:
            output.append({"type": kind, "url": f"https://export.example.org/{folder.name}/{kind}.ndjson"})
    manifest = {
        "transactionTime": f"{iso(day)}T06:00:00Z",
        "request": "https://export.example.org/$export",
        "requiresAccessToken": True,
        "output": output,
        "error": [],
    }
    (folder / "manifest.json").write_bytes(orjson.dumps(manifest))
    return folder


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str = ""
    name: tuple[str, str] | None = None
    address: tuple[tuple[str, ...], str] | None = None


@dataclass
class Model:
    """Who may be written to, from the extracts the library accepted and the workflow so far."""

    birth: dict[str, dt.date] = field(default_factory=dict)  # NHS number -> true birth date
    loaded: list[ExtractView] = field(default_factory=list)
    approvals: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)  # (run, patient) ->
    refused: set[tuple[int, int]] = field(default_factory=set)
    index_dates: dict[int, dt.date] = field(default_factory=dict)
    do_not_contact: set[str] = field(default_factory=set)
    invited: set[str] = field(default_factory=set)

    def newest(self) -> dict[str, ExtractView]:
        """Each practice's newest loaded extract (by extract date), for who is registered where."""
        out: dict[str, ExtractView] = {}
        for view in self.loaded:
            if "Patient" not in view.kinds:
                continue
            if view.practice not in out or view.date > out[view.practice].date:
                out[view.practice] = view
        return out

    def dead(self, nhs: str) -> bool:
        return any(r.dead for v in self.loaded for r in v.records if r.nhs == nhs)

    def opted_out(self, nhs: str) -> bool:
        """Any unreadable dissent counts; else the latest dated dissent or withdrawal decides
        (dissent wins on the same day)."""
        latest: tuple[dt.date, int] | None = None
        for view in self.loaded:
            for e in view.events:
                if e.nhs != nhs or e.kind not in ("dissent", "withdrawn"):
                    continue
                if e.day is None:
                    if e.kind == "dissent":
                        return True
                    continue
                key = (e.day, 1 if e.kind == "dissent" else 0)
                if latest is None or key > latest:
                    latest = key
        return latest is not None and latest[1] == 1

    def current_record(self, nhs: str) -> tuple[str, RecordView] | None:
        """(practice, record) of the latest-started registration across every practice's newest
        extract; None when nobody holds a current registration."""
        best: tuple[str, RecordView] | None = None
        for practice, view in self.newest().items():
            for r in view.records:
                if r.nhs != nhs or r.duplicate:
                    continue
                if best is None or r.reg_start > best[1].reg_start:
                    best = (practice, r)
        if best is None or best[1].reg_end is not None:
            return None
        return best

    def verdict(self, run_id: int, patient_id: int, nhs: str, practice: str, letter_day: dt.date) -> Verdict:
        approved = self.approvals.get((run_id, patient_id))
        if approved is None:
            return Verdict(False, "not approved by a GP for this record in this run")
        if approved[0] != nhs:
            return Verdict(False, f"the GP approved NHS number {approved[0]} for this record, not {nhs}")
        if self.dead(nhs):
            return Verdict(False, "dead by at least one record")
        current = self.current_record(nhs)
        if current is None:
            return Verdict(False, "not registered anywhere in the newest information")
        if current[0] != practice:
            return Verdict(False, f"registered now at {current[0]}, not at the writing practice {practice}")
        if self.opted_out(nhs):
            return Verdict(False, "opted out (type 1 dissent not withdrawn, or a dissent with a bad date)")
        if nhs in self.do_not_contact:
            return Verdict(False, "asked not to be contacted")
        if nhs in self.invited:
            return Verdict(False, "already invited to the study")
        birth, index = self.birth[nhs], self.index_dates[run_id]
        age = index.year - birth.year - ((index.month, index.day) < (birth.month, birth.day))
        if not 18 <= age <= 64:
            return Verdict(False, f"aged {age} on the search's index date")
        record = current[1]
        if record.address is None:
            return Verdict(False, "no current address")
        return Verdict(True, "", record.name, record.address)


# --- reading what the library did ------------------------------------------------------------------


def squash(value: str) -> str:
    return re.sub(r"[\s,]+", "", value).upper()


def mail_merge(folder: Path) -> dict[str, dict[str, str]]:
    """Study number -> the row of the letters' mail-merge file."""
    path = folder / "mail-merge.csv"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return {row["StudyNumber"]: row for row in csv.DictReader(handle)}


def letter_matches(row: dict[str, str], verdict: Verdict) -> str | None:
    """Why the letter's name or address is not the person's current one (None when it is)."""
    assert verdict.name is not None and verdict.address is not None
    given, family = verdict.name
    if (row.get("FirstName"), row.get("Surname")) != (given, family):
        return f"letter name {row.get('FirstName')!r} {row.get('Surname')!r}, current {given!r} {family!r}"
    lines, postcode = verdict.address
    printed = "".join(row.get(f"Address{i}", "") for i in range(1, 9))
    if squash(printed) != squash("".join(lines)) or squash(row.get("Postcode", "")) != squash(postcode):
        return f"letter address {printed!r} {row.get('Postcode')!r}, current {lines!r} {postcode!r}"
    return None


def describe(history: Iterable[str]) -> str:
    return "\n".join(f"  {i + 1}. {step}" for i, step in enumerate(history))
