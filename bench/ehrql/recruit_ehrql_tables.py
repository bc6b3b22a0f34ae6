"""ehrQL table over recruit's clinical events keeping the coding system (variant B).

Must be importable by ehrQL (put this folder on the venv's path with a .pth file): ehrQL
only deserializes tables defined in importable modules, like its own ehrql.tables.*.
"""

import datetime

from ehrql.tables import EventFrame, Series, table


@table
class clinical_events(EventFrame):
    date = Series(datetime.date)
    code_system = Series(str)  # snomedct | readv2 | ctv3
    code = Series(str)
    numeric_value = Series(float)
