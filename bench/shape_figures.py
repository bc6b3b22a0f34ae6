"""Per-shape figures (issue 16 closing note): load each published-shape fixture folder into a
fresh SQLite database and print what became of its records.

For each folder under tests/integration/load/shapes/ (UK Core, CareConnect, HL7 R4, GP Connect STU3, PDS,
EPS messages, Synthea, Bulk NDJSON, batch, XML): files, records read, stored, quarantined (with
the commonest reasons), not used, and patients stored. read = stored + quarantined; records
recruit has no use for are counted apart as not used.

    python bench/shape_figures.py [--shapes DIR] [--extract-date YYYY-MM-DD] [--practice ODS]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

from sqlalchemy import func, select

from recruit.db import make_engine
from recruit.errors import RecruitError
from recruit.load import load_extract
from recruit.load.files import FHIR_SUFFIXES, find_files
from recruit.migrate import upgrade
from recruit.models import Patient

ROOT = Path(__file__).resolve().parents[1]
# The fixtures' extract date (several shapes, the HL7 examples among them, carry none).
EXTRACT_DATE = dt.date(2026, 11, 1)


def figures(folder: Path, workdir: Path, when: dt.date, practice: str | None = None) -> dict[str, object]:
    """Load one shape's folder into a new database; its counts, or the error that stopped it."""
    engine = make_engine(f"sqlite:///{workdir / (folder.name + '.db')}")
    upgrade(engine)
    try:
        files = len(find_files([folder], FHIR_SUFFIXES))
        s = load_extract(engine, [folder], extract_date=when, workers=1, practice=practice)
        with engine.connect() as conn:
            patients = conn.execute(select(func.count()).select_from(Patient)).scalar_one()
        reasons = ", ".join(f"{code} {n}" for code, n in s.quarantined_by_reason.most_common(3))
        return {
            "files": files,
            "read": s.read,
            "stored": s.loaded,
            "quarantined": s.quarantined,
            "reasons": reasons or "-",
            "not used": sum(s.not_used.values()),
            "patients": patients,
        }
    except RecruitError as exc:
        return {"error": str(exc)}
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=Path, default=ROOT / "tests" / "load" / "shapes")
    parser.add_argument("--extract-date", type=dt.date.fromisoformat, default=EXTRACT_DATE)
    parser.add_argument("--practice", help="ODS code for patients naming no practice (as recruit load)")
    args = parser.parse_args(argv)
    folders = sorted(p for p in args.shapes.iterdir() if p.is_dir())
    header = ("shape", "files", "read", "stored", "quarantined", "not used", "patients", "top reasons")
    rows = []
    with tempfile.TemporaryDirectory(prefix="shape-figures-") as tmp:
        for folder in folders:
            f = figures(folder, Path(tmp), args.extract_date, args.practice)
            if "error" in f:
                rows.append((folder.name, "-", "-", "-", "-", "-", "-", f"load refused: {f['error']}"))
                continue
            rows.append(
                (folder.name, *(str(f[k]) for k in header[1:7]), str(f["reasons"]))  # type: ignore[index]
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:], strict=True)]
        print("  ".join([*cells, row[-1]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
