"""Registration from EpisodeOfCare (issue 16 item 1).

Shape, modelled on CareConnect-EpisodeOfCare-1 / UK Core EpisodeOfCare: `status`, `type` (the
CareConnect RegistrationType code system: R is a regular, GMS, registration; T temporary...),
`patient`, `managingOrganization` (by reference or ODS identifier) and `period`. Some GP feeds
put the registration type in an extension instead of `type`.

Precedence: the Patient's registration-details extension, then the PDS generalPractitioner
period, then an EpisodeOfCare, then generalPractitioner + active (start unknown). Every episode
is used, quarantined with a reason, or counted as not used, saying why.
"""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from sqlalchemy import select

from recruit.load import load_extract
from recruit.load.fhir import FhirReader, NotUsed
from recruit.load.loader import EPISODE_NOT_USED
from recruit.load.values import DateReader
from recruit.models import Patient, Quarantine
from tests.integration.load import fhir_samples as fx

EXTRACT_DATE = dt.date(2026, 11, 1)
REG_TYPE = "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-RegistrationType-1"
EOC_TYPE = "http://terminology.hl7.org/CodeSystem/episodeofcare-type"
GPC_REG = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-RegistrationDetails-1"
# Synthetic NHS numbers in the 999 range with valid Modulus 11 check digits.
MORE_NHS = ["9990000069", "9990000077", "9990000085", "9990000093", "9990000107"]
NHS = fx.NHS_NUMBERS + MORE_NHS


def episode(
    rid: str,
    patient_ref: str,
    start: str | None = None,
    end: str | None = None,
    *,
    reg_type: str | None = "R",
    org: dict | None = None,
    status: str = "active",
    **extra,
) -> dict:
    res: dict = {
        "resourceType": "EpisodeOfCare",
        "id": rid,
        "meta": {"profile": ["https://fhir.hl7.org.uk/STU3/StructureDefinition/CareConnect-EpisodeOfCare-1"]},
        "status": status,
        "patient": {"reference": patient_ref},
        "managingOrganization": org if org is not None else {"reference": "Organization/org1"},
    }
    if reg_type is not None:
        res["type"] = [{"coding": [{"system": REG_TYPE, "code": reg_type}]}]
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        res["period"] = period
    res.update(extra)
    return res


def plain(rid: str, n: int, **extra) -> dict:
    """A Patient with no registration details: generalPractitioner and active only."""
    return fx.patient(rid, NHS[n], active=True, **extra)


def read(res):
    return FhirReader(DateReader(EXTRACT_DATE)).read(res)


def test_reader_shapes():
    e = read(
        episode("e", "Patient/p1", "2015-03-04", org={"identifier": {"system": fx.ODS, "value": "zz9001"}})
    )
    assert e.episodes[0][:5] == ("Patient/p1", "ods:ZZ9001", True, "2015-03-04", None)
    # No type: kept for the loader to decide by practice.
    assert read(episode("e", "Patient/p1", reg_type=None)).episodes[0].registration is None
    # The type in an extension, as some GP feeds send it.
    ext = [
        {
            "url": "http://example.org/fhir/extension/registration-type",
            "valueCoding": {"system": REG_TYPE, "code": "R"},
        }
    ]
    assert read(episode("e", "Patient/p1", reg_type=None, extension=ext)).episodes[0].registration is True
    # Finished, no end given: not registered on the extract date.
    assert (
        read(episode("e", "Patient/p1", "2001-01-01", status="finished")).episodes[0].period_end
        == "2026-10-31"
    )
    # A planned end after the extract date: still registered.
    assert read(episode("e", "Patient/p1", "2001-01-01", "2027-01-31")).episodes[0].period_end is None
    for res, words in (
        (episode("e", "Patient/p1", reg_type="T"), "not a GMS registration"),
        (
            episode(
                "e", "Patient/p1", reg_type=None, type=[{"coding": [{"system": EOC_TYPE, "code": "hacc"}]}]
            ),
            "not a GMS registration",
        ),
        (episode("e", "Patient/p1", status="entered-in-error"), "entered-in-error"),
        (episode("e", "Patient/p1", status="planned"), "not yet begun"),
    ):
        with pytest.raises(NotUsed) as err:
            read(res)
        assert words in err.value.what


def _extract(folder, patients, episodes, *, bundle_episodes=None):
    files = [
        fx.write_ndjson(
            folder / "Organization.ndjson", [fx.organization(), fx.organization("ZZ9002", "org2")]
        ),
        fx.write_ndjson(folder / "Patient.ndjson", patients),
        fx.write_ndjson(folder / "EpisodeOfCare.ndjson", episodes),
    ]
    if bundle_episodes:
        path = folder / "bundle.json"
        path.write_bytes(orjson.dumps(bundle_episodes))
        files.append(path)
    return files


def test_episodes_give_registration_in_order_of_precedence(engine, tmp_path):
    ext = [
        {"url": GPC_REG, "extension": [{"url": "registrationPeriod", "valuePeriod": {"start": "2011-04-05"}}]}
    ]
    pds = [
        {
            "type": "Organization",
            "identifier": {"system": fx.ODS, "value": "ZZ9001", "period": {"start": "2020-01-01"}},
        }
    ]
    patients = [
        plain("a", 0),  # typed episode, practice by reference
        fx.patient("b", NHS[1], extension=ext),  # extension wins
        fx.patient("c", NHS[2], generalPractitioner=pds),  # PDS period wins
        plain("d", 3),  # untyped episode managed by the practice (by ODS identifier): used
        plain("e", 4),  # untyped episode of another practice: not used, start unknown
        plain("f", 5),  # registration with another practice: not used
        plain("g", 6),  # two episodes: the later one is used
        plain("h", 7),  # finished episode without an end: left the day before the extract
        fx.patient(
            "i", NHS[8], active=False
        ),  # inactive: the episode gives the start, not a current registration
        plain("j", 9),  # no episode at all: start unknown
    ]
    by_ods = {"identifier": {"system": fx.ODS, "value": "ZZ9001"}}
    episodes = [
        episode("ea", "Patient/a", "2015-03-04"),
        episode("eb", "Patient/b", "2019-01-01"),
        episode("ec", "Patient/c", "2019-01-01"),
        episode("ed", "Patient/d", "2016-06-07", reg_type=None, org=by_ods),
        episode("ee", "Patient/e", "2016-06-07", reg_type=None, org={"reference": "Organization/org2"}),
        episode("ef", "Patient/f", "2017-01-01", org={"identifier": {"system": fx.ODS, "value": "ZZ9002"}}),
        episode("eg1", "Patient/g", "2012-02-02"),
        episode("eg0", "Patient/g", "2001-01-01", "2009-12-31", status="finished"),
        episode("eh", "Patient/h", "2005-05-05", status="finished"),
        episode("ei", "Patient/i", "2010-10-10"),
        episode("e-nobody", "Patient/nobody", "2010-10-10"),
        episode("e-temp", "Patient/j", "2024-01-01", reg_type="T"),  # temporary: not a GMS registration
        episode("e-bad", "Patient/j", "2019-13-45"),  # an unreadable start: quarantined
    ]
    summary = load_extract(engine, _extract(tmp_path / "x", patients, episodes), extract_date=EXTRACT_DATE)
    with engine.connect() as conn:
        stored = {
            r.source_id: (r.registration_start, r.registration_end)
            for r in conn.execute(
                select(Patient.source_id, Patient.registration_start, Patient.registration_end)
            )
        }
        quarantined = conn.execute(
            select(Quarantine.resource_type, Quarantine.resource_id, Quarantine.reason_code, Quarantine.field)
        ).all()
    d = dt.date
    assert stored == {
        "a": (d(2015, 3, 4), None),
        "b": (d(2011, 4, 5), None),
        "c": (d(2020, 1, 1), None),
        "d": (d(2016, 6, 7), None),
        "e": (None, None),
        "f": (None, None),
        "g": (d(2012, 2, 2), None),
        "h": (d(2005, 5, 5), d(2026, 10, 31)),
        "i": (d(2010, 10, 10), d(2026, 10, 31)),
        "j": (None, None),
    }
    assert [tuple(q) for q in quarantined] == [("EpisodeOfCare", "e-bad", "date_invalid", "period.start")]
    assert summary.not_used[EPISODE_NOT_USED["stated"]] == 2
    assert summary.not_used[EPISODE_NOT_USED["untyped"]] == 1
    assert summary.not_used[EPISODE_NOT_USED["other_practice"]] == 1
    assert summary.not_used[EPISODE_NOT_USED["earlier"]] == 1
    assert summary.not_used[EPISODE_NOT_USED["no_patient"]] == 1
    assert (
        summary.not_used["EpisodeOfCare of another kind of care or registration, not a GMS registration"] == 1
    )
    kinds = summary.by_kind["EpisodeOfCare"]
    assert (kinds.read, kinds.stored, kinds.quarantined) == (6, 5, 1)  # ea ed eg1 eh ei used; e-bad
    assert summary.read == summary.loaded + summary.quarantined
    assert summary.read == 1 + 10 + 6  # ZZ9002's Organization is counted as not used
    # Start unknown and still registered: e, f, j (h and i have left).
    assert summary.registration_start_unknown == 3


def test_episode_matched_by_urn_uuid_in_a_transaction_bundle(engine, tmp_path):
    """Synthea / transaction shape: the episode names its patient by the Patient entry's
    urn:uuid fullUrl, so it is matched through the same patient keys as other records."""
    pat = "urn:uuid:00000000-0000-4000-8000-0000000000a1"
    patient = fx.patient("tb1", NHS[0], active=True)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": pat, "resource": patient, "request": {"method": "POST", "url": "Patient"}},
            {
                "fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000a2",
                "resource": episode("tb-e", pat, "2018-08-08T09:30:00+01:00", reg_type=None)
                | {"managingOrganization": {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000a3"}},
                "request": {"method": "POST", "url": "EpisodeOfCare"},
            },
            {
                "fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000a3",
                "resource": fx.organization("ZZ9001", "org-tb"),
                "request": {"method": "POST", "url": "Organization"},
            },
        ],
    }
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(bundle))
    summary = load_extract(engine, [path], extract_date=EXTRACT_DATE)
    with engine.connect() as conn:
        start = conn.execute(select(Patient.registration_start)).scalar_one()
    assert start == dt.date(2018, 8, 8)
    assert summary.quarantined == 0 and not summary.not_used
    assert summary.by_kind["EpisodeOfCare"].stored == 1
    assert summary.registration_start_unknown == 0


def test_an_extract_without_episodes_is_unchanged(engine, tmp_path):
    folder = tmp_path / "x"
    summary = load_extract(engine, fx.base_extract(folder), extract_date=EXTRACT_DATE)
    assert "EpisodeOfCare" not in summary.by_kind
    assert summary.registration_start_unknown == 1


def test_episode_in_fhir_xml(engine, tmp_path):
    """UK Core also travels as XML: a lone <type> is still read as the list it is."""
    folder = tmp_path / "x"
    fx.write_ndjson(folder / "Organization.ndjson", [fx.organization()])
    fx.write_ndjson(folder / "Patient.ndjson", [plain("p1", 0)])
    (folder / "EpisodeOfCare.xml").write_text(
        f"""<EpisodeOfCare xmlns="http://hl7.org/fhir">
  <id value="x1"/>
  <status value="active"/>
  <type><coding><system value="{REG_TYPE}"/><code value="R"/></coding></type>
  <patient><reference value="Patient/p1"/></patient>
  <managingOrganization><reference value="Organization/org1"/></managingOrganization>
  <period><start value="2014-07-01"/></period>
</EpisodeOfCare>
"""
    )
    summary = load_extract(engine, [folder], extract_date=EXTRACT_DATE)
    with engine.connect() as conn:
        assert conn.execute(select(Patient.registration_start)).scalar_one() == dt.date(2014, 7, 1)
    assert summary.by_kind["EpisodeOfCare"].stored == 1 and summary.quarantined == 0
