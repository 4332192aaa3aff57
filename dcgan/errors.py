"""The failures a user can act on (UserFacingError; BadInput for what they gave), and the pieces of their messages.

train.py, generate.py, evaluate.py, export.py and app.py print such a failure's
message as one paragraph, without a traceback, and exit with its code; any
other exception is a bug and keeps its traceback.
"""

import difflib


class UserFacingError(Exception):
    """A failure whose message says what went wrong and what to do about it."""

    exit_code = 1

    def __reduce__(self):
        # Sweep launchers (joblib, submitit) pickle a failed job's exception. Subclasses take other arguments
        # than the message, so it is rebuilt from the message and exit code alone.
        return rebuild, (type(self), str(self), self.exit_code)


def rebuild(cls: type[UserFacingError], message: str, exit_code: int) -> UserFacingError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.exit_code = exit_code
    return err


def first_line(err: Exception) -> str:
    """The first line of err's message without its closing full stop (its type's name if it has no message): what
    went wrong, to quote inside a sentence of ours."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")


def did_you_mean(name: str, choices, section: str) -> str:
    """' (did you mean section.choice?)' for the choice closest to a mistyped `name`, or '' if none is close."""
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {section + '.' if section else ''}{close[0]}?)" if close else ""


class BadInput(UserFacingError):
    """Something the user gave (a config value, a file) cannot work. The message says what to do instead. (Not a
    ValueError: raised inside a schema's validator, it passes pydantic as it is, a whole paragraph.)"""


def shown(value) -> str:
    """A value as the command line writes it."""
    if value is None or isinstance(value, bool):
        return str(value).lower().replace("none", "null")
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(shown, value)) + "]"
    return str(value)
