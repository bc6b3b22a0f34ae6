"""Which record a reference inside a Bundle means: one of that Bundle's own, else the extract's.

A folder of Bundles is many small worlds: two EPS messages, two GP Connect records or two UK Core
examples may each hold a `Patient/1` that are different people, and a prescription in one must
never attach to the patient of another (issue 16). So a reference made inside a self-contained
Bundle (collection, document, message, transaction, batch and their responses) is first looked up
among that Bundle's own entries; only a reference to nothing in the Bundle falls back to records
that stand outside any Bundle (NDJSON lines, single-resource files, searchset pages, which share
their server's namespace). Keys by NHS number or ODS code name a person or a practice anywhere
and are never scoped.

A whole Bundle is always read by one process (a JSON or XML file, or one NDJSON line), so its own
keys are known before any of its records is staged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from recruit.load.fhir import Parsed
from recruit.load.rows import HoldRow, MedicationRow, MedicineRow, OrgRow, PatientRow, PractitionerRow

# Bundles whose entries are pages of one server's results: references mean that server's records.
SHARED_BUNDLE_TYPES = frozenset({"searchset", "history"})
GLOBAL_PREFIXES = ("nhs:", "ods:", "#")


@dataclass(frozen=True, slots=True)
class Scope:
    """One self-contained Bundle: its name (unique in the load) and the keys of its own entries."""

    name: str
    own: frozenset[str]

    def own_key(self, key: str) -> str:
        """A key a record of this Bundle is known by."""
        return key if key.startswith(GLOBAL_PREFIXES) else f"{self.name}|{key}"

    @overload
    def reference(self, key: str) -> str: ...
    @overload
    def reference(self, key: None) -> None: ...
    @overload
    def reference(self, key: str | None) -> str | None: ...

    def reference(self, key: str | None) -> str | None:
        """The key a reference made in this Bundle resolves by: its own entry's, else the shared
        record's (unscoped)."""
        if key is None or key not in self.own:
            return key
        return f"{self.name}|{key}"


def bundle_scope(
    bundle_type: Any, file_no: int, line: int | None, entries: Iterable[tuple[Any, str | None]]
) -> Scope | None:
    """The scope of a Bundle's records, from (resource, fullUrl) of its entries; None for a
    Bundle whose references mean its server's records (searchset, history)."""
    if bundle_type in SHARED_BUNDLE_TYPES:
        return None
    from recruit.load.fhir import own_keys

    own: set[str] = set()
    for res, full_url in entries:
        if isinstance(res, dict) and isinstance(res.get("resourceType"), str):
            rid = res.get("id")
            if rid is not None and not isinstance(rid, str):
                rid = None
            own.update(own_keys({"resourceType": res["resourceType"], "id": rid}, full_url))
    return Scope(f"b{file_no}:{line or 0}", frozenset(own))


def scope_rows(scope: Scope, parsed: Parsed) -> None:
    """Rewrite, in place, the keys the rows of one parsed record (recruit.load.fhir.Parsed)
    carry to those of its Bundle."""
    ref, own = scope.reference, scope.own_key
    patients: list[PatientRow] = parsed.patients
    for i, p in enumerate(patients):
        patients[i] = p._replace(
            keys=[own(k) for k in p.keys], practice_ref=ref(p.practice_ref), gp_ref=ref(p.gp_ref)
        )
    for i, e in enumerate(parsed.events):
        parsed.events[i] = e._replace(patient_ref=ref(e.patient_ref))
    meds: list[MedicationRow] = parsed.medications
    for i, m in enumerate(meds):
        meds[i] = m._replace(patient_ref=ref(m.patient_ref), medication_ref=ref(m.medication_ref))
    medicines: list[MedicineRow] = parsed.medicines
    for i, med in enumerate(medicines):
        medicines[i] = med._replace(key=own(med.key))
    orgs: list[OrgRow] = parsed.orgs
    for i, o in enumerate(orgs):
        orgs[i] = o._replace(keys=[own(k) for k in o.keys])
    practitioners: list[PractitionerRow] = parsed.practitioners
    for i, prac in enumerate(practitioners):
        practitioners[i] = prac._replace(keys=[own(k) for k in prac.keys])
    for i, ep in enumerate(parsed.episodes):
        parsed.episodes[i] = ep._replace(patient_ref=ref(ep.patient_ref), practice_ref=ref(ep.practice_ref))


def scope_holds(scope: Scope, holds: list[HoldRow]) -> list[HoldRow]:
    return [h._replace(patient_ref=scope.reference(h.patient_ref)) for h in holds]
