"""How every entry point (train.py, generate.py, evaluate.py, export.py, app.py) starts and fails.

`run(main)` calls an entry point's Hydra main. Every failure a user can act on, a UserFacingError or a config
that Hydra or OmegaConf cannot compose (an unknown key or option, an override it cannot parse, a value that
refers to nothing), ends as one paragraph on stderr, `Error: ...`, and a non-zero exit, with no traceback; any
other exception is a bug and keeps its traceback. Each entry point checks its config against its schema first
(`check`, dcgan/schema.py), so a wrong value is refused before anything is built or written.
"""

import argparse
import os
import re
import sys
from collections.abc import Callable

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pytorch_lightning.utilities import rank_zero_only

from dcgan.errors import BadInput, UserFacingError, did_you_mean, first_line, shown
from dcgan.kinds import attempt, writing_problem
from dcgan.schema import Built, HydraSettings, Target, arguments


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


def check(cfg: DictConfig, schema: type[BaseModel]) -> BaseModel:
    """`cfg` as `schema` validates it (the rules across keys last), or BadInput for the first problem."""
    try:
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        key = err.full_key
        raise BadInput(
            f"{key} is required: give it, e.g. {key}={example(schema, key, OmegaConf.to_container(cfg))}."
        ) from None
    except OmegaConfBaseException as err:
        raw, reason = at(OmegaConf.to_container(cfg), err.full_key), first_line(err)
        raise BadInput(
            f"{err.full_key}={raw} cannot be read: {reason}. A ${{...}} value must name another key of the config "
            "(e.g. ${output_dir}) or a resolver (e.g. ${oc.env:HOME})."
        ) from None
    return check_values(values, schema)


def check_values(values: dict, schema: type[BaseModel]) -> BaseModel:
    """`values`, a resolved config as plain Python, as `schema` validates it, or BadInput."""
    try:
        return schema.model_validate(values)
    except ValidationError as err:
        raise BadInput(paragraph(err.errors()[0], values, schema)) from None


def paragraph(error: dict, values: dict, schema: type[BaseModel]) -> str:
    parts = [str(p) for p in error["loc"]]
    if new := RENAMED.get(".".join(parts)):
        return f"{'.'.join(parts)} was renamed: write {new} instead."
    if error["type"] == "extra_forbidden":  # added with +, where the section takes no more
        section, _, leaf = ".".join(parts).rpartition(".")
        guess = did_you_mean(leaf, set(at(values, section) or {}) - {leaf}, section)
        return (
            f"{'.'.join(parts)} is not a key of this config{guess}, and this part of it takes no other. "
            f"`python {os.path.basename(sys.argv[0])} --cfg job` lists every key."
        )
    if error["type"] == "missing" and parts[-1].isdigit():  # a list shorter than its kind
        key = ".".join(parts[:-1])
        return f"{key}={shown(at(values, key))} has too few values. Use e.g. {key}={example(schema, key, values)}."
    if error["type"] == "missing":  # deleted with ~
        key = ".".join(parts)
        return f"{key} is required: give it, e.g. {key}={example(schema, key, values)}."
    while parts and at(values, ".".join(parts), missing=KeyError) is KeyError:  # pydantic's own parts of a loc
        parts.pop()
    key = ".".join(parts)
    reason = re.sub(r"^\w+ should ", "it must ", re.sub(r"^Value error, ", "", error["msg"]))
    if "{key}" in reason:  # a probe's whole paragraph: what is wrong there and the fix
        return f"{key}={shown(at(values, key))} cannot be used: {reason.replace('{key}', key)}."
    reason = reason if reason.startswith("it must") else f"it must be {reason}"
    why, fix = field(schema, key, values).description, example(schema, key, values)
    return f"{key}={shown(at(values, key))} cannot work: {reason}{f' ({why})' if why else ''}. Use e.g. {key}={fix}."


def at(tree: dict, key: str, missing=None):
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return missing
        tree = tree[part]
    return tree


def field(schema: type[BaseModel], key: str, values: dict) -> FieldInfo:
    """The declaration of `key` in `schema`, or in the constructor of the class a section of `values` builds."""
    *parents, leaf = key.split(".")
    for depth, part in enumerate(parents):
        if part in schema.model_fields:  # else a key of a dict (callbacks.<name>), whose values share one annotation
            declared = schema.model_fields[part]
            inner = annotations(declared.annotation, declared.metadata)
        target = at(values, ".".join([*parents[: depth + 1], "_target_"]))
        if isinstance(target, str) and (built := next((a for a in inner if isinstance(a, Built)), None)):
            schema = attempt(arguments, target, built.passed) or Target  # Target: no such class
        else:
            schema = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), schema)
    return next(f for name, f in schema.model_fields.items() if leaf in (name, f.alias))


def example(schema: type[BaseModel], key: str, values: dict) -> str:
    """The example given with the kind `key` is declared with."""
    declared = field(schema, key, values)
    found = [declared, *annotations(declared.annotation, declared.metadata)]
    return next(m.examples[0] for m in found if isinstance(m, FieldInfo) and m.examples)


def annotations(annotation, metadata=()) -> list:
    """The metadata and the types inside an annotation, Annotated and unions unfolded."""
    found = [*metadata, annotation]
    for inner in [*getattr(annotation, "__metadata__", ()), *getattr(annotation, "__args__", ())]:
        found += annotations(inner)
    return found


def check_plugins(config: DictConfig) -> None:
    """Hydra's launcher and sweeper settings (in `config.hydra`) against HydraSettings; their enums as text."""
    plugins = {
        name: OmegaConf.to_container(config.hydra[name], resolve=True, enum_to_str=True)
        for name in ("launcher", "sweeper")
    }
    check_values({"hydra": plugins}, HydraSettings)


class CheckHydraSettings(Callback):
    """A Hydra callback of every entry point: before Hydra makes the run's (or sweep's) folder, refuse one that
    cannot be written, and before a sweep launches, launcher and sweeper settings out of their domains
    (dcgan.schema.HydraSettings), each in one paragraph; either would otherwise end in a traceback."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self.check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.check(config, "sweep")
        try:
            check_plugins(config)
        except (UserFacingError, OmegaConfBaseException) as err:
            raise Abort(err) from None  # past Hydra, which only warns when a callback raises an Exception

    @staticmethod
    def check(config: DictConfig, kind: str) -> None:
        try:
            folder = config.hydra[kind].dir  # reading it resolves ${output_root}, which may refer to nothing
            if problem := writing_problem(folder):
                raise BadInput(
                    f"The {kind} folder {folder} cannot be made: {problem}. Point output_root at a folder you can "
                    f"write, e.g. `python {os.path.basename(sys.argv[0])} output_root=$HOME/dcgan-outputs`."
                )
        except (UserFacingError, OmegaConfBaseException) as err:
            raise Abort(err) from None


class EndRunOnUserError(Callback):
    """A Hydra callback of every entry point (conf/hydra/callbacks/checks.yaml): a run whose job failed with an
    error a user can act on ends with it here, before Hydra reports the job in a line of its own; `run` then
    prints its paragraph. (In a sweep Hydra reports each failed job and goes on.) Any other
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


# Options and keys that were renamed so that a name means one thing (issue 31): the old name -> the new one.
RENAMED = {"experiment=seed_repro": "experiment=reference_script", "callbacks.seed_files": "callbacks.reference_files"}
RENAMED |= {"model.clusters": "model.num_clusters", "model.num_classes": "model.num_digits"}


def config_error_message(err: Exception, script: str) -> str:
    """One paragraph for an error Hydra or OmegaConf raised while composing or reading the config: the key or
    option it concerns, and what to write instead."""
    if isinstance(err, MissingConfigException) and (found := re.search(r"Could not find '(.+)/([^/']+)'", str(err))):
        group, option = found.groups()
        if new := RENAMED.get(f"{group}={option}"):
            return f"{group}={option} was renamed: write {new} instead."
        return (
            f"{group}={option} is not an option of the config group {group}: use one of "
            f"{', '.join(err.options or [])} (the files of conf/{group}/)."
        )
    cause = err.__cause__
    key = getattr(cause, "full_key", None) or getattr(err, "full_key", None)
    if key and (new := RENAMED.get(key)):
        return f"{key} was renamed: write {new} instead."
    if isinstance(err, ConfigCompositionException) and key and (found := re.search(r"use \+(\S+)", str(err))):
        appended = found[1]
        section, _, leaf = key.rpartition(".")
        guess = did_you_mean(leaf, keys_beside(cause), section)
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
