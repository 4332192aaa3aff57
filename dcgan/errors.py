"""The one base class of the failures a user can act on.

train.py, generate.py, evaluate.py and export.py print such a failure's
message as one paragraph, without a traceback, and exit with its code; any
other exception is a bug and keeps its traceback.
"""


class UserFacingError(Exception):
    """A failure whose message says what went wrong and what to do about it."""

    exit_code = 1
