"""Errors a user can act on. The CLI prints their message as one line, never a traceback."""


class RecruitError(Exception):
    """Something went wrong that the person running recruit can understand and fix."""


class DatabaseUnavailable(RecruitError):
    """The database could not be opened, reached or written."""
