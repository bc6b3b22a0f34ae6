"""Names and addresses are data: they must never run as spreadsheet formulas.

OWASP's CSV-injection rule: a cell starting with = + - @ (or a tab or carriage return) is
prefixed with a single quote so spreadsheet programs show it as text
(shared/reference/letters-and-review.md section 4.1).
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def spreadsheet_safe(value: Any) -> Any:
    """The value as a spreadsheet will show it literally; numbers and None pass unchanged."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
