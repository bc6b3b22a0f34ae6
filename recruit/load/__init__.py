"""Loading practice extracts (FHIR R4 and CSV exports) into the database, with quarantine."""

from recruit.load.loader import LoadSummary, load_extract

__all__ = ["LoadSummary", "load_extract"]
