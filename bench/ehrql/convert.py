"""Convert recruit's benchmark SQLite db into the table layout ehrQL's SQLite
query engine reads when run without a backend (DefaultSQLBackend: one table per
ehrQL table, named as the table, columns named as the ehrQL columns, joined on
`patient_id`).

DDL is generated from ehrQL's own table schemas (ehrql.tables.core) with the
same helper ehrQL's test-suite uses to build its SQLite fixtures
(tests/lib/orm_utils.orm_class_from_schema): patient-level tables get
`patient_id INTEGER PRIMARY KEY`; event-level tables get `patient_id INTEGER NOT
NULL` plus a synthetic `row_id INTEGER PRIMARY KEY`. ehrQL creates no indexes on
source tables, so none are added here (only the PKs above).

Source is opened read-only (file:...?mode=ro). Usage (EHRQL_SRC: an ehrQL source checkout):
    EHRQL_SRC=... venv/bin/python convert.py SRC_DB DEST_DB [--by-system]

--by-system (variant B): clinical_events instead gets the layout of the user-defined
ehrQL table in recruit_ehrql_tables.py: date, code_system, code,
numeric_value (plain str columns), so codes can be matched per coding system as
recruit does. All other tables are identical.
"""

import os
import sys
import time
from pathlib import Path

import sqlalchemy
from sqlalchemy.orm import declarative_base

sys.path.insert(0, os.environ.get("EHRQL_SRC", str(Path(__file__).parent / "ehrql-src")))
from ehrql.query_model.nodes import has_one_row_per_patient  # noqa: E402
from ehrql.tables import core  # noqa: E402
from tests.lib.orm_utils import orm_class_from_schema  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from recruit_ehrql_tables import clinical_events  # noqa: E402

src, dest = sys.argv[1], Path(sys.argv[2])
by_system = "--by-system" in sys.argv[3:]


if dest.exists():
    dest.unlink()

Base = declarative_base()
events = clinical_events if by_system else core.clinical_events
for t in [core.patients, core.practice_registrations, events, core.medications]:
    node = t._qm_node
    orm_class_from_schema(Base, node.name, node.schema, has_one_row_per_patient(node))
engine = sqlalchemy.create_engine(f"sqlite:///{dest}")
Base.metadata.create_all(engine)
engine.dispose()

import sqlite3  # noqa: E402

con = sqlite3.connect(str(dest))
con.execute("PRAGMA journal_mode=OFF")
con.execute("PRAGMA synchronous=OFF")
con.execute("PRAGMA cache_size=-1000000")
con.execute("ATTACH DATABASE ? AS src", (f"file:{src}?mode=ro",))

steps = {
    "patients": """INSERT INTO patients (patient_id, date_of_birth, sex, date_of_death)
        SELECT id, date_of_birth, sex, date_of_death FROM src.patient ORDER BY id""",
    # recruit holds one registration per patient on the patient row
    "practice_registrations": """INSERT INTO practice_registrations
        (patient_id, row_id, start_date, end_date, practice_pseudo_id)
        SELECT id, id, registration_start, registration_end, practice_id
        FROM src.patient WHERE registration_start IS NOT NULL ORDER BY id""",
    # core.clinical_events has only snomedct_code: every event row is kept and its
    # code (whatever its system: snomedct / readv2 / ctv3) goes into snomedct_code
    "clinical_events": """INSERT INTO clinical_events
        (patient_id, row_id, date, snomedct_code, numeric_value)
        SELECT patient_id, id, event_date, code, value FROM src.clinical_event ORDER BY id"""
    if not by_system
    else """INSERT INTO clinical_events
        (patient_id, row_id, date, code_system, code, numeric_value)
        SELECT patient_id, id, event_date, code_system, code, value
        FROM src.clinical_event ORDER BY id""",
    "medications": """INSERT INTO medications (patient_id, row_id, date, dmd_code)
        SELECT patient_id, id, issue_date, code FROM src.medication_issue ORDER BY id""",
}
t_all = time.monotonic()
for table, sql in steps.items():
    t0 = time.monotonic()
    con.execute(sql)
    con.commit()
    n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    print(f"{table:24} {n:>11,} rows  {time.monotonic() - t0:7.1f} s", flush=True)
con.execute("DETACH DATABASE src")
con.close()
print(f"total {time.monotonic() - t_all:.1f} s; {dest.stat().st_size / 2**30:.2f} GiB")
