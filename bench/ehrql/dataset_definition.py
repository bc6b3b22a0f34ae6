# Variant A: ehrQL's core schema. Its clinical_events holds SNOMED CT codes only (ehrQL checks
# they look like SNOMED CT), so only the SNOMED CT rows of the clinical codelists are used.
from ehrql.tables.core import clinical_events
from population import codes_by_system, population_dataset


def in_codelist(events, name):
    return events.snomedct_code.is_in(codes_by_system(name).get("snomedct", []))


dataset = population_dataset(clinical_events, in_codelist)
