"""The database tables as SQLAlchemy Core tables, named once for the set-based queries of the
search, review, letters and audit (the ORM classes in recruit.models define them)."""

from recruit.models import (
    ClinicalEvent,
    CodelistCode,
    Extract,
    Invitation,
    LetterBatch,
    MedicationIssue,
    Patient,
    PersonHold,
    Practice,
    Practitioner,
    Quarantine,
    ReviewDecision,
    ReviewSheet,
    ScoreWeights,
    SearchResult,
    SearchRun,
    StepCount,
    Study,
    StudyNumber,
    WorkFolder,
)
from recruit.models import Codelist as CodelistRow

BATCH = LetterBatch.__table__
CODELIST = CodelistRow.__table__
CODES = CodelistCode.__table__
DECISION = ReviewDecision.__table__
EVENT = ClinicalEvent.__table__
EXTRACT = Extract.__table__
INVITATION = Invitation.__table__
MEDICATION = MedicationIssue.__table__
PATIENT = Patient.__table__
HOLD = PersonHold.__table__
PRACTICE = Practice.__table__
PRACTITIONER = Practitioner.__table__
QUARANTINE = Quarantine.__table__
RESULT = SearchResult.__table__
RUN = SearchRun.__table__
STEP_COUNT = StepCount.__table__
REVIEW_SHEET = ReviewSheet.__table__
STUDY = Study.__table__
STUDY_NUMBER = StudyNumber.__table__
WORK_FOLDER = WorkFolder.__table__
WEIGHTS = ScoreWeights.__table__
