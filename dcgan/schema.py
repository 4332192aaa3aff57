"""What every key of every entry point's config may be: its type, its range or its choices, declared once.

conf/ holds the values, this file what they may be: each entry point checks its composed config against its
schema (Train, Generate, Evaluate, Export, App) before anything is built or written (dcgan/validation.py), and a
value out of its domain ends as one paragraph that names the key, what it must be and an example. The kinds of
value (Count, Seed, Folder...) carry that example, and a value out of their domain that tests/test_validation.py
tries. A key that is not here is refused by Hydra itself, with a "did you mean"; keys a user adds with `+` to the
Trainer, the logger or the callbacks are theirs (the sections that allow them say so).
"""

import inspect
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from hydra.utils import get_class
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, model_validator

from dcgan import validation as probe
from dcgan.data import MNIST_LAYOUT
from dcgan.errors import did_you_mean
from dcgan.metrics import MIN_SAMPLES

TRAINING_DIGITS = MNIST_LAYOUT["train-images-idx3-ubyte"][2]


@dataclass(frozen=True)
class Example:
    """In a schema's annotation: a value of that kind, and one out of its domain, as the command line writes them."""

    good: str
    bad: str


def rule(check, message: str):
    """A validator that refuses a value for which `check` is false, saying `message` ("it must be ...")."""

    def validate(value):
        if not check(value):
            raise ValueError(message)
        return value

    return AfterValidator(validate)


def checked(check, message: str, good: str, bad: str, base=object):
    """A kind of value that `check` decides (any value of `base`), refused with `message` ("it must be ...")."""
    return Annotated[base, rule(check, message), Example(good, bad)]


def whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


Count = Annotated[int, Strict(), Field(ge=1), Example("8", "0")]
Steps = Annotated[int, Strict(), Field(ge=0), Example("2000", "-1")]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1), Example("42", "-1")]
Flag = Annotated[bool, Strict(), Field(description="true or false"), Example("true", "maybe")]
Fraction = Annotated[float, Field(ge=0, lt=1), Example("0.3", "1.5")]
Positive = Annotated[float, Field(gt=0), Example("2e-4", "0")]
NonNegative = Annotated[float, Field(ge=0), Example("0.1", "-1")]
Text = Annotated[str, Field(min_length=1), Example("name", "''")]
Samples = Annotated[int, Strict(), Field(ge=MIN_SAMPLES, le=TRAINING_DIGITS), Example("5000", "60001")]
Samples = Annotated[Samples, Field(description="the metric scores as many real training digits too")]
ClassPath = checked(
    lambda v: callable(probe.attempt(get_class, v)), "it must be the import path of a class", "dcgan.module.DCGAN",
    "nowhere.Nothing", str
)  # fmt: skip
Smoothing = checked(
    lambda v: 0 <= v[0] <= v[1] <= 1, "it must be null (off) or [low, high] with 0 <= low <= high <= 1", "[0.8,1.0]",
    "[1.0,0.8]", tuple[float, float]
)  # fmt: skip
Betas = Annotated[tuple[Fraction, Fraction], Example("[0.5,0.999]", "[0.5,1.5]")]
Port = Annotated[int, Strict(), Field(ge=1, le=65535), Example("7860", "0")]
# The file system's answers: dcgan/validation.py tries each path.
Folder = Annotated[str, AfterValidator(probe.writable_folder), Example("$HOME/dcgan-outputs", "/proc/dcgan")]
Checkpoint = Annotated[
    str, AfterValidator(probe.readable_checkpoint), Example("outputs/runs/<run>/checkpoints/last.ckpt", "/nowhere.ckpt")
]
Classifier = Annotated[
    str, AfterValidator(probe.classifier_file), Example("~/.cache/dcgan-mnist/mnist_classifier.pt", "/proc/c.pt")
]
MnistRoot = Annotated[str, AfterValidator(probe.mnist_root), Example("../shared/data", "/proc/mnist")]
Device = Annotated[str, AfterValidator(probe.available_device), Example("cpu", "gpu0")]
Runs = Annotated[str | list[str], AfterValidator(probe.checkpoints_or_runs), Example("[a.ckpt]", "/nowhere.ckpt")]
Digits = Annotated[list[Annotated[int, Strict(), Field(ge=0, le=9)]], Field(min_length=1), Example("[7]", "[12]")]


def output_file(*suffixes: str):
    ends = rule(lambda v: v.endswith(suffixes), f"it must end in {' or '.join(suffixes)}")
    return Annotated[
        str, ends, AfterValidator(probe.writable_file), Example(f"o{suffixes[0]}", f"/proc/x{suffixes[0]}")
    ]


class Section(BaseModel):
    """A part of a config: every key declared, none extra."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Built(Section):
    """A part that Hydra instantiates: its class, and its arguments."""

    target: ClassPath = Field(alias="_target_")


class Instance(Built):
    """A part with any arguments (a Lightning plugin, a DDP strategy, a user's own callback)."""

    model_config = ConfigDict(extra="allow")


class Model(Built):
    latent_dim: Annotated[Count, Field(examples=[100])]
    g_width: Annotated[Count, Field(examples=[64])]
    d_width: Annotated[Count, Field(examples=[64])]
    d_dropout: Fraction
    lr: Positive
    betas: Betas
    label_smoothing: Smoothing | None
    instance_noise_std: NonNegative
    instance_noise_anneal_steps: Steps
    clusters: Annotated[int, Strict(), Field(ge=2, le=TRAINING_DIGITS), Example("200", "1")] | None
    num_classes: Annotated[Literal[10], Example("10", "7")] | None
    ema_decay: Fraction | None
    ema_start_step: Steps
    channels_last: Flag
    fused_adam: Flag


class Data(Built):
    root: MnistRoot
    batch_size: Annotated[Count, Field(le=TRAINING_DIGITS, examples=[128])]
    seed: Seed
    cache_dir: Folder


class Trainer(Built):
    """Lightning's Trainer: the arguments conf/trainer/ sets; any other one a user adds (+trainer.profiler=simple)
    is Lightning's to check."""

    model_config = ConfigDict(extra="allow")
    accelerator: Annotated[str, AfterValidator(probe.available_accelerator), Example("auto", "nonsense")]
    devices: checked(
        lambda v: v == "auto" or whole(v) and v >= 1, 'it must be a whole number >= 1, or "auto"', "2", "0"
    )
    num_nodes: Count
    precision: Annotated[
        Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"] | None,
        Example("bf16-mixed", "nonsense"),
    ]
    max_epochs: Count
    max_time: checked(
        lambda v: v is None or re.fullmatch(r"\d+:\d\d:\d\d:\d\d", str(v)), 'it must be null (no limit) or "DD:HH:MM:SS"',
        "00:00:30:00", "30min"
    )  # fmt: skip
    max_steps: checked(
        lambda v: v == -1 or whole(v) and v >= 2 and v % 2 == 0, "it must be -1 (no limit) or an even number >= 2 "
        "(Lightning counts 2 optimizer steps per training step)", "2000", "3"
    )  # fmt: skip
    limit_train_batches: checked(
        lambda v: v is None or whole(v) and v >= 1 or isinstance(v, float) and 0 < v <= 1, "it must be null (every "
        "batch), a fraction of each epoch's batches above 0 and up to 1, or a whole number of batches >= 1", "0.1", "0"
    )  # fmt: skip
    log_every_n_steps: Count
    default_root_dir: Folder
    deterministic: Flag
    enable_model_summary: Flag
    plugins: Annotated[
        list[Instance],
        Field(description="Lightning plugins, each {_target_: <class>}"),
        Example("[{_target_:dcgan.checkpoints.AtomicCheckpointIO}]", "[5]"),
    ]
    strategy: Instance | None = None  # trainer=ddp
    sync_batchnorm: Flag = False  # trainer=ddp

    @model_validator(mode="after")
    def lightning_takes_the_added_ones(self):
        takes = inspect.signature(get_class(self.target).__init__).parameters
        for name in self.model_extra or {}:
            if name not in takes:
                raise probe.BadInput(
                    f"trainer.{name} is not an argument of {self.target}{did_you_mean(name, takes, 'trainer')}. Add "
                    "only the arguments it takes, e.g. +trainer.profiler=simple."
                )
        return self


class Callback(Built):
    """A callback of conf/callbacks/default.yaml (null drops one): its arguments, each with one domain whichever
    callback takes it. A user's own callback (+callbacks.mine._target_=...) may take others."""

    model_config = ConfigDict(extra="allow")
    enabled: Flag = None
    warmup_steps: Count = None
    strict: Flag = None
    dirpath: Folder = None
    run_dir: Folder = None
    every_n_steps: Count | None = None
    every_n_epochs: Count | None = None
    weights_every_n_epochs: Count | None = None
    image_every_n_epochs: Count | None = None
    rows: Count = None
    seed: Seed = None
    classifier_path: Classifier = None
    num_samples: Samples = None
    filename: Text = None
    auto_insert_metric_name: Flag = None
    save_top_k: Annotated[int, Strict(), Field(ge=-1), Example("-1", "-2")] = None
    save_last: Flag = None
    d_fake_below: Fraction = None
    loss_g_above: NonNegative = None
    patience: Count = None
    max_depth: Annotated[int, Strict(), Field(ge=-1), Example("1", "-2")] = None


class Logger(Built):
    model_config = ConfigDict(extra="allow")
    save_dir: Folder
    name: Text
    version: Annotated[str | int, Example("v1", "[1,2]")]
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
    model: Model
    data: Data
    trainer: Trainer
    callbacks: dict[str, Callback | None]
    logger: Logger


class Generate(Section):
    ckpt_path: Checkpoint
    mode: Annotated[Literal["sample", "interpolate"], Example("interpolate", "nonsense")]
    num_samples: Count
    output: output_file(".png", ".npz")
    seed: Seed
    nrow: Count | None
    digits: Digits | None
    walks: Count
    steps: Annotated[int, Strict(), Field(ge=2), Example("10", "1")]
    device: Device


class Evaluate(Section):
    ckpt_path: Runs | None
    real: Flag
    num_samples: Samples
    seed: Seed
    classifier_path: Classifier
    output: output_file(".json") | None
    device: Device
    data: Data  # evaluate.py reads data.root


Format = Literal["safetensors", "torchscript", "onnx"]


class Export(Section):
    ckpt_path: Checkpoint
    formats: Annotated[list[Format] | Format, Field(min_length=1), Example("[safetensors,onnx]", "[onnx,tflite]")]
    output_dir: Folder | None
    num_samples: checked(
        lambda v: v == 0 or whole(v) and MIN_SAMPLES <= v <= TRAINING_DIGITS, "it must be 0 (no metric) or a number "
        f"of digits to score from {MIN_SAMPLES} to {TRAINING_DIGITS}", "10000", "1"
    )  # fmt: skip
    seed: Seed
    classifier_path: Classifier
    data: Data


class App(Section):
    ckpt_path: Checkpoint
    run_dir: Annotated[str, AfterValidator(probe.run_folder), Example("outputs/runs/<run>", "/nowhere")] | None
    host: Text
    port: Port


class Launcher(Section):
    """Hydra's launcher plugins (basic, joblib, submitit): the amounts a user sets; the rest the plugin checks."""

    model_config = ConfigDict(extra="allow")
    n_jobs: checked(lambda v: v is None or v == -1 or whole(v) and v >= 1, "it must be -1 (a job per core) or >= 1",
                    "4", "0") = None  # fmt: skip
    timeout: Annotated[float, Field(gt=0), Example("600", "0")] | None = None
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
    max_failure_rate: Annotated[float, Field(ge=0, le=1), Example("0.5", "2")] | None = None
    max_batch_size: Count | None = None
    direction: Annotated[Literal["minimize", "maximize"], Example("minimize", "down")] | None = None


class HydraSettings(Section):
    model_config = ConfigDict(extra="allow")

    class Plugins(Section):
        launcher: Launcher
        sweeper: Sweeper

    hydra: Plugins
