"""How every entry point (train.py, generate.py, evaluate.py, export.py, app.py) starts and fails.

`run(main)` calls an entry point's Hydra main. Every failure a user can act on, a UserFacingError or a config
that Hydra or OmegaConf cannot compose (an unknown key or option, an override it cannot parse, a value that
refers to nothing), ends as one paragraph on stderr, `Error: ...`, and a non-zero exit, with no traceback; any
other exception is a bug and keeps its traceback. Each entry point checks its config against its declared
domains first (dcgan/validation.py), so a wrong value is refused before anything is built or written.
"""

import argparse
import difflib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable

import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.utilities import rank_zero_only

from dcgan.errors import UserFacingError


class Abort(BaseException):
    """Carries an error a user can act on past Hydra, which catches every Exception of a job (and goes on with a
    sweep's next one) and of a Hydra callback (and only warns), to `run`, which ends the command with it."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def run(main: Callable[[], object]) -> None:
    """Call `main` (decorated with @hydra.main) and end the process as described above."""
    # Hydra then raises its errors instead of printing them its own way (several lines, or a traceback).
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        try:
            main()
        except Abort as abort:
            raise abort.error from None
    except UserFacingError as err:
        fail(str(err), err.exit_code)
    except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as err:
        if getattr(err, "raised_by_a_job", False):
            raise  # the config was checked before the job ran: an OmegaConf error there is a bug of the code
        fail(config_error_message(err, os.path.basename(sys.argv[0])), 1)


class EndRunOnUserError(Callback):
    """A Hydra callback of every entry point (hydra.callbacks in conf/config.yaml and conf/script.yaml): a run
    whose job failed with an error a user can act on ends with it here, before Hydra reports the job in a line of
    its own; `run` then prints its paragraph. (In a sweep Hydra reports each failed job and goes on.) Any other
    failure of a job is marked as one, so that `run` shows its traceback."""

    def on_job_end(self, config, job_return: JobReturn, **kwargs) -> None:
        if job_return.status == JobStatus.FAILED:
            job_return._return_value.raised_by_a_job = True  # the public return_value writes Hydra's line

    def on_run_end(self, config, config_name, job_return: JobReturn, **kwargs) -> None:
        failure = job_return._return_value
        if job_return.status == JobStatus.FAILED and isinstance(failure, UserFacingError):
            raise Abort(failure)


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the tools that are not Hydra entry points (bench/, `python -m dcgan.reports`): a bad argument
    ends as one paragraph, `Error: ...`, with argparse's exit status 2, as a Hydra entry point's does. Run their
    main with `run` too, so that a UserFacingError (MNIST missing, say) ends the same way."""

    def error(self, message: str):
        fail(f"{self.prog}: {message}. `{self.prog} --help` lists the arguments.", 2)


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: a whole number from `low` (up to `high`)."""

    def parse(text: str) -> int:
        span = f">= {low}" if high is None else f"from {low} to {high}"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number {span}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not a whole number {span}")
        return value

    return parse


def fail(message: str, exit_code: int) -> None:
    """Print `message` as one paragraph and exit. Under DDP only rank 0 reports; the other ranks exit quietly, so
    that Lightning does not kill rank 0 for a failed child while it reports."""
    if rank_zero_only.rank == 0:
        print(f"Error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(exit_code if rank_zero_only.rank == 0 else 0)


def config_error_message(err: Exception, script: str) -> str:
    """One paragraph for an error Hydra or OmegaConf raised while composing or reading the config: the key or
    option it concerns, and what to write instead."""
    if isinstance(err, MissingConfigException) and (found := re.search(r"Could not find '(.+)/([^/']+)'", str(err))):
        group, option = found.groups()
        return (
            f"{group}={option} is not an option of the config group {group}: use one of "
            f"{', '.join(err.options or [])} (the files of conf/{group}/)."
        )
    cause = err.__cause__
    key = getattr(cause, "full_key", None) or getattr(err, "full_key", None)
    if isinstance(err, ConfigCompositionException) and key and (found := re.search(r"use \+(\S+)", str(err))):
        appended = found[1]
        close = difflib.get_close_matches(key.split(".")[-1], keys_beside(cause), n=1)
        guess = f" (did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}?)" if close else ""
        return (
            f"{key} is not a key of this config{guess}. `python {script} --cfg job` lists every key. To add a key "
            f"the config does not have (another Trainer argument, say), write +{appended}."
        )
    if isinstance(err, OverrideParseException):
        return (
            f"The command line cannot be read ({first_line(err)}). Write each setting as key=value, e.g. "
            "model.lr=2e-4; quote a value with spaces or brackets: key='a value'."
        )
    if isinstance(err, OmegaConfBaseException) and key:
        return f"{key} cannot be read: {first_line(err)}. `python {script} --cfg job` shows the whole config."
    return " ".join(str(err).split())


def keys_beside(error: Exception) -> list[str]:
    """The keys of the config node an OmegaConf key error was raised in (for 'did you mean')."""
    node = getattr(error, "parent_node", None) or getattr(error, "object", None)
    try:
        return [str(key) for key in node.keys()] if node is not None else []
    except Exception:  # a node that is not a mapping
        return []


def first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")


def resolve_device(name: str) -> torch.device:
    """`device=auto` -> the GPU when there is one, else the CPU; any other name as torch reads it ("cpu", "cuda:1")."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DropLightningTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


# One instance: Logger.addFilter skips a filter it already has, so train() may run many times in one process.
DROP_LIGHTNING_TIP = DropLightningTip()

# Warnings a user can do nothing about, each matched by its own message (a regular expression, as
# warnings.filterwarnings takes it); tests/conftest.py gives pytest the same list.
UNACTIONABLE_WARNINGS = (
    # Lightning's own code calls its deprecated pytree API (a FutureWarning from inside the package).
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # The summary counts parameter bytes at 32 bits for bf16-mixed and 16-mixed, which is right: the weights stay fp32.
    "Precision (bf)?16-mixed is not supported by the model summary",
    # A mid-epoch resume is exact here: the data module records its position and EpochBatches resumes from it.
    "You're resuming from a checkpoint that ended before the epoch ended",
)


def quiet_lightning() -> None:
    """Keep the console to the run: Lightning's advertising tip, and the warnings a user can do nothing about
    (other warnings still show). Calling it again adds nothing."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(DROP_LIGHTNING_TIP)
    for message in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)  # an equal filter replaces the one before it
