# Variant B: the same population, with clinical codes matched per coding system (snomedct,
# readv2, ctv3) as recruit does. ehrQL's core and TPP schemas cannot hold Read v2, so this uses
# a table of our own (recruit_ehrql_tables.py) over the same rows.
from functools import reduce
from operator import or_

from population import codes_by_system, population_dataset
from recruit_ehrql_tables import clinical_events


def in_codelist(events, name):
    return reduce(
        or_,
        [
            (events.code_system == system) & events.code.is_in(codes)
            for system, codes in sorted(codes_by_system(name).items())
        ],
    )


dataset = population_dataset(clinical_events, in_codelist)
