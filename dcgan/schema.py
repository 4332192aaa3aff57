"""What each entry point's config may hold, checked before anything is built, written or downloaded.

A section that Hydra builds from its `_target_` (the model, the data, each callback) may hold what that class's
constructor takes: the constructor's annotated signature is its schema (`arguments`), so a setting is declared
once, where it is used, with its kind (dcgan/kinds.py). Declared here: the entry points' own keys, the arguments
of Lightning's Trainer and logger that conf/ sets (any other Trainer argument, added with +, is checked against
the Trainer's own signature), Hydra's plugins, and the rules across keys. dcgan/cli.py's `check` turns the first
problem into one paragraph that names the key, what it must be and an example.
"""

import inspect
import re
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from hydra.utils import get_class
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, WrapValidator, create_model, model_validator

from dcgan.checkpoints import Checkpoint, Runs, read_checkpoint
from dcgan.data import MNIST_LAYOUT, TRAINING_DIGITS
from dcgan.errors import BadInput, did_you_mean, shown
from dcgan.kinds import Count, Flag, Folder, Seed, Steps, Text, attempt, checked, output_file, whole
from dcgan.machine import Accelerator, Device, available_memory, gpus
from dcgan.metrics import MIN_SAMPLES, Classifier, Samples
from dcgan.module import ARCHITECTURE

ClassPath = checked(
    lambda v: callable(attempt(get_class, v)), "it must be the import path of a class", "dcgan.module.DCGAN", str
)  # fmt: skip


class Section(BaseModel):
    """A part of a config: every key declared, none extra."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)


class Target(Section):
    """A part that Hydra instantiates: its class, and its arguments."""

    target: ClassPath = Field(alias="_target_")


class Instance(Target):
    """A part with any arguments (a Lightning plugin, a DDP strategy)."""

    model_config = ConfigDict(extra="allow")


@cache
def arguments(target: str, passed: tuple[str, ...] = ()) -> type[Target]:
    """The schema of a section that builds `target`: its constructor's parameters, with their annotations (any
    value where there is none), required where they have no default, but for those the code passes (`passed`);
    any key where the constructor takes **kwargs or Python cannot read its signature (a builtin)."""
    cls = get_class(target)
    try:
        parameters = inspect.signature(cls).parameters.values()
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
    except (TypeError, ValueError):
        return Instance
    fields = {
        p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in passed
    }
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    return create_model(cls.__name__, __base__=Instance if takes_any else Target, **fields)


@dataclass(frozen=True)
class Built:
    """In a section's annotation: Hydra builds it, so `arguments` of its `_target_` is its schema."""

    passed: tuple[str, ...]


def built(*passed: str):
    """A section Hydra builds, whose constructor also takes `passed` from the code."""

    def validate(section, handler):
        target = {"_target_": section["_target_"]} if isinstance(section, dict) and "_target_" in section else {}
        Target.model_validate(target if isinstance(section, dict) else section)
        return arguments(section["_target_"], passed).model_validate(section)

    return Annotated[dict, WrapValidator(validate), Built(passed)]


class Trainer(Instance):
    """Lightning's Trainer: the arguments conf/trainer/ sets; any other one a user adds (+trainer.profiler=simple)
    must be an argument of the Trainer's, and is Lightning's to check."""

    accelerator: Accelerator
    devices: checked(lambda v: v == "auto" or whole(v) and v >= 1, 'it must be a whole number >= 1, or "auto"', "2")
    num_nodes: Count
    precision: Annotated[
        Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"] | None,
        Field(examples=["bf16-mixed"]),
    ]
    max_epochs: Count
    max_time: checked(
        lambda v: v is None or re.fullmatch(r"\d+:\d\d:\d\d:\d\d", str(v)), 'it must be null (no limit) or "DD:HH:MM:SS"',
        "00:00:30:00"
    )  # fmt: skip
    max_steps: checked(
        lambda v: v == -1 or whole(v) and v >= 2 and v % 2 == 0, "it must be -1 (no limit) or an even number >= 2 "
        "(Lightning counts 2 optimizer steps per training step)", "1000"
    )  # fmt: skip
    limit_train_batches: checked(
        lambda v: v is None or whole(v) and v >= 1 or isinstance(v, float) and 0 < v <= 1, "it must be null (every "
        "batch), a fraction of each epoch's batches above 0 and up to 1, or a whole number of batches >= 1", "0.25"
    )  # fmt: skip
    log_every_n_steps: Count
    default_root_dir: Folder
    deterministic: Flag
    enable_model_summary: Flag
    plugins: Annotated[
        list[Instance],
        Field(description="Lightning plugins, each {_target_: <class>}"),
        Field(examples=["[{_target_:dcgan.checkpoints.AtomicCheckpointIO}]"]),
    ]
    strategy: Instance | None = None  # trainer=ddp
    sync_batchnorm: Flag = False  # trainer=ddp

    @model_validator(mode="after")
    def lightning_takes_the_added_ones(self):
        takes = inspect.signature(get_class(self.target).__init__).parameters
        for name in self.model_extra or {}:
            if name not in takes:
                raise BadInput(
                    f"trainer.{name} is not an argument of {self.target}{did_you_mean(name, takes, 'trainer')}. Add "
                    "only the arguments it takes, e.g. +trainer.profiler=simple."
                )
        return self


class Logger(Instance):
    save_dir: Folder
    name: Text
    version: Annotated[str | int, Field(examples=["v1"])]
    default_hp_metric: Flag


class FixedNoise(Section):
    rows: Count
    seed: Seed


class Train(Section):
    seed: Seed
    ckpt_path: Checkpoint | None
    output_root: Folder
    output_dir: Folder
    classifier_path: Classifier
    fixed_noise: FixedNoise
    model: built()
    data: built("num_clusters", "num_digits")  # the model's: dcgan/training.py passes them
    trainer: Trainer
    callbacks: dict[str, built() | None]
    logger: Logger

    # The rules across keys: values that are each allowed alone, but together leave nothing to do.
    @model_validator(mode="after")
    def clusters_within_digits(self):
        digits, clusters = getattr(self.model, "num_digits", None), getattr(self.model, "num_clusters", None)
        if digits and not clusters:
            raise BadInput(
                f"model.num_digits={digits} needs model.num_clusters: the conditional GAN draws clusters found within "
                "each digit (model=cgan sets both). Use e.g. model.num_clusters=200, or model.num_digits=null."
            )
        if digits and clusters % digits:
            raise BadInput(
                f"model.num_clusters={clusters} cannot work with model.num_digits={digits}: a conditional GAN finds "
                f"as many clusters within every digit, so model.num_clusters must be a multiple of {digits}. Use "
                f"e.g. model.num_clusters={max(clusters // 10, 1) * 10}."
            )
        return self

    @model_validator(mode="after")
    def devices_exist(self):
        trainer = self.trainer
        if trainer.accelerator in ("gpu", "cuda") and trainer.devices != "auto" and trainer.devices > gpus():
            raise BadInput(
                f"trainer.devices={trainer.devices} asks for more GPUs than this machine has ({gpus()}). Use "
                f"trainer.devices={gpus()}, or trainer.devices=auto for all of them."
            )
        if trainer.sync_batchnorm and not gpus():
            raise BadInput(
                "trainer.sync_batchnorm=true needs CUDA GPUs: PyTorch's SyncBatchNorm does not run on the CPU. Leave "
                "it false there (each process then normalises with its own batch's statistics)."
            )
        return self

    @model_validator(mode="after")
    def batches_per_rank(self):
        trainer, batch_size = self.trainer, self.data.batch_size
        ranks = (trainer.devices if trainer.devices != "auto" else max(gpus(), 1)) * trainer.num_nodes
        per_rank = TRAINING_DIGITS // ranks
        batches, limit = per_rank // batch_size, trainer.limit_train_batches
        if isinstance(limit, int) and limit > batches > 0:
            raise BadInput(
                f"trainer.limit_train_batches={limit} asks for more batches than an epoch has: each of the {ranks} "
                f"rank(s) has {batches} batches of {batch_size}. Use at most trainer.limit_train_batches={batches}, "
                "or a fraction, e.g. 0.5."
            )
        trained = batches if limit is None else min(limit, batches) if isinstance(limit, int) else int(batches * limit)
        if trained < 1:
            raise BadInput(
                f"data.batch_size={batch_size} leaves no batch to train on: each of the {ranks} rank(s) has {per_rank} "
                f"training digits, {batches} full batch(es)"
                + ("" if limit is None else f", and trainer.limit_train_batches={limit} keeps {trained} of them")
                + f". Use a batch of at most {per_rank} (e.g. data.batch_size=128) or a larger limit."
            )
        return self

    @model_validator(mode="after")
    def resumed_model_matches(self):
        """A checkpoint to resume has this config's architecture: the hyperparameters that shape its weights."""
        if not self.ckpt_path:
            return self
        saved, here = read_checkpoint(self.ckpt_path)["hyper_parameters"], self.model.model_dump()
        differences = [
            f"{key}={shown(saved.get(key))} there but {shown(here.get(key))} here"
            for key in ARCHITECTURE
            if saved.get(key) != here.get(key)
        ]
        if differences:
            raise BadInput(
                f"ckpt_path={self.ckpt_path} was written by a different model: {'; '.join(differences)}. Resume with "
                "the model settings of the run that wrote it (its .hydra/overrides.yaml lists them), or train anew "
                "without ckpt_path."
            )
        return self


Digits = Annotated[list[Annotated[int, Strict(), Field(ge=0, le=9)]], Field(min_length=1, examples=["[7]"])]


class Generate(Section):
    ckpt_path: Checkpoint
    mode: Annotated[Literal["sample", "interpolate"], Field(examples=["interpolate"])]
    num_samples: Count
    output: output_file(".png", ".npz")
    seed: Seed
    nrow: Count | None
    digits: Digits | None
    walks: Count
    steps: Annotated[int, Strict(), Field(ge=2, examples=["12"])]
    device: Device

    @model_validator(mode="after")
    def digits_fit_in_memory(self):
        """generate.py holds every digit it draws at once, as 4-byte floats, twice while it gathers the batches."""
        n = self.num_samples if self.mode == "sample" else self.walks * self.steps
        per_digit, have = 2 * MNIST_LAYOUT["train-images-idx3-ubyte"][3] * 4, available_memory()
        if n * per_digit > have:
            asked = f"num_samples={n}" if self.mode == "sample" else f"walks={self.walks} with steps={self.steps}"
            fewer = "e.g. num_samples=10000" if self.mode == "sample" else "fewer walks or steps"
            raise BadInput(
                f"{asked} draws {n:,} digits at once, about {n * per_digit / 2**30:,.1f} GiB, and this machine has "
                f"{have / 2**30:.1f} GiB available. Draw at most {have // per_digit:,} at a time ({fewer}), in "
                "several files with different seeds."
            )
        return self


class Evaluate(Section):
    ckpt_path: Runs | None
    real: Flag
    num_samples: Samples
    seed: Seed
    classifier_path: Classifier
    output: output_file(".json") | None
    device: Device
    data: built("num_clusters", "num_digits")  # evaluate.py reads data.root

    @model_validator(mode="after")
    def something_to_score(self):
        if not self.real and self.ckpt_path is None:
            raise BadInput(
                "evaluate.py needs something to score: give ckpt_path=<run>/checkpoints/last.ckpt (or several, or a "
                "sweep's folder) to score generators, or real=true to score real digits, the metric's floor."
            )
        if self.real and self.ckpt_path is not None:
            raise BadInput(f"real=true scores real digits, not ckpt_path={shown(self.ckpt_path)}: give one of the two.")
        return self


Format = Literal["safetensors", "torchscript", "onnx"]


class Export(Section):
    ckpt_path: Checkpoint
    formats: Annotated[list[Format] | Format, Field(min_length=1, examples=["[safetensors,onnx]"])]
    output_dir: Folder | None
    num_samples: checked(
        lambda v: v == 0 or whole(v) and MIN_SAMPLES <= v <= TRAINING_DIGITS, "it must be 0 (no metric) or a number "
        f"of digits to score from {MIN_SAMPLES} to {TRAINING_DIGITS}", "10000"
    )  # fmt: skip
    seed: Seed
    classifier_path: Classifier
    data: built("num_clusters", "num_digits")


def run_folder(value: str) -> str:
    if not Path(value).is_dir():
        raise ValueError(
            "it is not a folder. Give a training run's folder (the one holding checkpoints/ and samples/, e.g. "
            "outputs/runs/<run>), or leave {key} out for the checkpoint's own"
        )
    return value


class App(Section):
    ckpt_path: Checkpoint
    run_dir: Annotated[str, AfterValidator(run_folder), Field(examples=["outputs/runs/<run>"])] | None
    host: Text
    port: Annotated[int, Strict(), Field(ge=1, le=65535, examples=["7860"])]


class Launcher(Section):
    """Hydra's launcher plugins (basic, joblib, submitit): the amounts a user sets; the rest the plugin checks."""

    model_config = ConfigDict(extra="allow")
    n_jobs: checked(lambda v: v is None or v == -1 or whole(v) and v >= 1, "it must be -1 (a job per core) or >= 1",
                    "4") = None  # fmt: skip
    timeout: Annotated[float, Field(gt=0, examples=["600"])] | None = None
    timeout_min: Count | None = None
    nodes: Count | None = None
    tasks_per_node: Count | None = None
    gpus_per_node: Steps | None = None
    cpus_per_task: Count | None = None
    mem_gb: Count | None = None
    array_parallelism: Count | None = None


class Sweeper(Section):
    """Hydra's sweeper plugins (basic, Optuna): the amounts a user sets; the rest the plugin checks."""

    model_config = ConfigDict(extra="allow")
    n_trials: Count | None = None
    n_jobs: Count | None = None
    max_failure_rate: Annotated[float, Field(ge=0, le=1, examples=["0.5"])] | None = None
    max_batch_size: Count | None = None
    direction: Annotated[Literal["minimize", "maximize"], Field(examples=["minimize"])] | None = None


class HydraSettings(Section):
    model_config = ConfigDict(extra="allow")

    class Plugins(Section):
        launcher: Launcher
        sweeper: Sweeper

    hydra: Plugins
