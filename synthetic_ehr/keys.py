"""The keys each extract shape gives a synthetic person, so every shape names the same person.

FHIR uses the person's id (ODS-0000001). Tabular extracts key rows by their system's own id:
EMIS a GUID in braces (PatientGuid), SystmOne an integer (IDPatient), and the pseudonymised
shapes (CPRD patid, OpenSAFELY patient_id, OMOP person_id) an integer that carries no identity.
truth.csv gives the pseudonym beside the NHS number, so a search on pseudonymised data can be
judged against the truth.
"""

from __future__ import annotations

import uuid

# A fixed namespace, so the same person has the same GUID in every run with the same seed.
_EMIS_NAMESPACE = uuid.UUID("6f1d1c2e-5b1a-4f4e-9a53-2f0d3c8b7a10")


def pseudonym(index: int) -> int:
    """The integer key of the person with this global index (Person.index)."""
    return 100_000_001 + index


def emis_guid(person_id: str) -> str:
    """An EMIS-style GUID for the person: upper case, in braces."""
    return "{" + str(uuid.uuid5(_EMIS_NAMESPACE, person_id)).upper() + "}"
