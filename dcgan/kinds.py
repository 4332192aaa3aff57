"""The kinds of value a setting may hold (Count, Fraction, Folder...), for the annotations of the constructors that
conf/ builds and of the entry points' schemas (dcgan/schema.py), which check a config against them before anything
is built. Each kind refuses a value out of its domain and gives an example in it, as the command line writes it,
which a refusal offers as the fix (tests/test_validation.py holds a value out of each). A folder's kind tries (a
permission bit is no proof for root), and removes what it made, so a refused run leaves earlier ones as they were.
"""

import uuid
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, Strict


def rule(check, message: str):
    """A validator that refuses a value for which `check` is false, saying `message` ("it must be ...")."""

    def validate(value):
        if not check(value):
            raise ValueError(message)
        return value

    return AfterValidator(validate)


def checked(check, message: str, example: str, base=object):
    """A kind of value that `check` decides (any value of `base`), refused with `message` ("it must be ...")."""
    return Annotated[base, rule(check, message), Field(examples=[example])]


def whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def attempt(function, *args):
    """function(*args), or None where it raises: Hydra and importlib raise their own kinds for a missing class."""
    try:
        return function(*args)
    except Exception:
        return None


Count = Annotated[int, Strict(), Field(ge=1, examples=["8"])]
Steps = Annotated[int, Strict(), Field(ge=0, examples=["2000"])]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1, examples=["42"])]
Flag = Annotated[bool, Strict(), Field(description="true or false", examples=["true"])]
Fraction = Annotated[float, Field(ge=0, lt=1, examples=["0.3"])]
Positive = Annotated[float, Field(gt=0, examples=["2e-4"])]
NonNegative = Annotated[float, Field(ge=0, examples=["0.1"])]
Text = Annotated[str, Field(min_length=1, examples=["name"])]
Betas = Annotated[tuple[Fraction, Fraction], Field(examples=["[0.5,0.999]"])]
Smoothing = checked(
    lambda v: 0 <= v[0] <= v[1] <= 1, "it must be null (off) or [low, high] with 0 <= low <= high <= 1", "[0.8,1.0]",
    tuple[float, float]
)  # fmt: skip


def writing_problem(folder: str | Path) -> str | None:
    """Why files cannot be written into `folder`, found by trying: create it (and the folders above it that are
    missing) or a probe file in it, then remove what the check made."""
    folder = Path(folder).expanduser().absolute()
    missing, existing = [], folder
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"{err.filename or folder} cannot be created ({err.strerror})"
    probe = folder / f".dcgan-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        return f"{folder} cannot be written ({err.strerror})"
    finally:
        for made in missing:  # deepest first
            attempt(made.rmdir)
    return None


# A probe's ValueError is a whole paragraph: what is wrong there and the fix, with {key} for the key it checks.
def writable_folder(value: str) -> str:
    if problem := writing_problem(value):
        raise ValueError(f"{problem}. Point {{key}} at a folder you can write, e.g. {{key}}=$HOME/dcgan-outputs")
    return value


def writable_file(value: str) -> str:
    if problem := writing_problem(Path(value).expanduser().absolute().parent):
        raise ValueError(f"{problem}. Give a file in a folder you can write, e.g. {{key}}=$HOME/{Path(value).name}")
    return value


Folder = Annotated[str, AfterValidator(writable_folder), Field(examples=["$HOME/dcgan-outputs"])]


def output_file(*suffixes: str):
    ends = rule(lambda v: v.endswith(suffixes), f"it must end in {' or '.join(suffixes)}")
    return Annotated[str, ends, AfterValidator(writable_file), Field(examples=[f"o{suffixes[0]}"])]
