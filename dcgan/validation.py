"""Every key of every entry point's config, with the values it may take, checked before anything is built.

DOMAINS declares, per entry point (train.py, generate.py, evaluate.py, export.py, app.py), each key of its
composed config and its domain: counts that must be positive, modes from a list, ports in range, paths that
must be readable or that can be created. `check(cfg, entry)` checks each key that is present, then the
combinations that are each allowed alone but leave no work (a batch larger than a rank's share of the data, no
sample to score). A problem raises BadInput with one paragraph that names the key, its value and the fix;
dcgan/cli.py prints it without a traceback. Checking writes nothing it does not remove again, so a refused run
leaves earlier runs and their checkpoints as they were. tests/test_validation.py walks every key with a value
out of its domain, and writes docs/robustness.md from the messages.
"""

import math
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.accelerators import AcceleratorRegistry

from dcgan.checkpoints import read_checkpoint
from dcgan.cli import Abort
from dcgan.data import MNIST_LAYOUT, mnist_file_problem
from dcgan.errors import UserFacingError
from dcgan.metrics import MIN_SAMPLES
from dcgan.module import ARCHITECTURE


class BadInput(UserFacingError, ValueError):
    """Something the user gave (a config value, a file) cannot work. The message says what to do instead."""


# What the values look like on the command line (Hydra's grammar).
def shown(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(shown, value)) + "]"
    return str(value)


@dataclass(frozen=True)
class Domain:
    """The values a key may take: `what` they are, an `example` that is allowed and a `bad` one that is not
    (as the command line writes them; the tests try `bad`). `problem(value)` says why a value is out, or None;
    `fix` what to do instead ({key} stands for the key)."""

    what: str
    example: str
    bad: str
    allows: Callable[[object], bool] | None = None
    fix: str = "Use e.g. {key}={example}."

    def problem(self, value) -> str | None:
        return None if self.allows(value) else f"it must be {self.what}"


def is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(low: int, high: int | None = None, example=None, null: str | None = None, what: str = "") -> Domain:
    """A whole number from `low` (to `high`); `null` says what null means, when null is allowed."""
    span = f">= {low}" if high is None else f"from {low} to {high}"
    return Domain(
        f"{'null (' + null + ') or ' if null else ''}a whole number {span}{what}",
        shown(low if example is None else example),
        str(low - 1),
        lambda v: (null is not None and v is None) or (is_whole(v) and low <= v and (high is None or v <= high)),
    )


def number(low: float, high: float | None, example, closed_high: bool = False, null: str | None = None) -> Domain:
    """A number from `low` up to (not including, unless `closed_high`) `high`."""
    span = (
        f">= {low}"
        if high is None
        else f"from {low} up to {'and including' if closed_high else 'not including'} {high}"
    )

    def allows(v) -> bool:
        if v is None:
            return null is not None
        return is_number(v) and v >= low and (high is None or v < high or (closed_high and v == high))

    return Domain(f"{'null (' + null + ') or ' if null else ''}a number {span}", shown(example), str(low - 1), allows)


def one_of(*choices, example=None) -> Domain:
    return Domain(
        f"one of {', '.join(map(shown, choices))}",
        shown(choices[0] if example is None else example),
        "nonsense",
        lambda v: any(v == c and type(v) is type(c) for c in choices),
    )


FLAG = Domain("true or false", "true", "maybe", lambda v: isinstance(v, bool))
TEXT = Domain("a text", "name", "[1,2]", lambda v: isinstance(v, str) and v != "")
SEED = whole(0, 2**32 - 1, example=42)
EVERY = whole(1, null="never")
COUNT = whole(1)


def class_path() -> Domain:
    def allows(v) -> bool:
        try:
            return isinstance(v, str) and callable(get_class(v))
        except Exception:  # Hydra raises its own kinds for a module or a name that is not there
            return False

    return Domain(
        "the import path of a class",
        "dcgan.module.DCGAN",
        "nowhere.Nothing",
        allows,
        fix="Leave {key} as conf/ sets it, or give the import path of a class of your own.",
    )


PAIR = Domain(
    "two numbers from 0 up to 1, Adam's (beta1, beta2)",
    "[0.5,0.999]",
    "[0.5,1.5]",
    lambda v: isinstance(v, list) and len(v) == 2 and all(is_number(b) and 0 <= b < 1 for b in v),
)
SMOOTHING = Domain(
    "null (off) or [low, high] with 0 <= low <= high <= 1",
    "[0.8,1.0]",
    "[1.0,0.8]",
    lambda v: v is None
    or (isinstance(v, list) and len(v) == 2 and all(is_number(b) for b in v) and 0 <= v[0] <= v[1] <= 1),
)
MAX_TIME = Domain(
    'null (no limit) or a duration "DD:HH:MM:SS"',
    "00:00:30:00",
    "30min",
    lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"\d+:\d{2}:\d{2}:\d{2}", v) is not None),
)
LIMIT_BATCHES = Domain(
    "null (every batch), a fraction of each epoch's batches above 0 and up to 1, or a whole number of batches >= 1",
    "0.1",
    "0",
    lambda v: v is None or (is_whole(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
)
MAX_STEPS = Domain(
    "-1 (no limit) or an even whole number >= 2 (Lightning counts 2 optimizer steps per training step)",
    "2000",
    "3",
    lambda v: v == -1 or (is_whole(v) and v >= 2 and v % 2 == 0),
)
DEVICES = Domain(
    'a whole number of devices >= 1, or "auto"',
    "2",
    "0",
    lambda v: v == "auto" or (is_whole(v) and v >= 1),
)
PLUGINS = Domain(
    "a list of Lightning plugins, each {_target_: <class>}",
    "[{_target_:dcgan.checkpoints.AtomicCheckpointIO}]",
    "[5]",
    lambda v: isinstance(v, list) and all(isinstance(p, dict) and class_path().allows(p.get("_target_")) for p in v),
)
DEVICE = Domain(
    "auto (the GPU when there is one), cpu, cuda or cuda:<n>",
    "cpu",
    "gpu0",
    lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
)


@dataclass(frozen=True)
class PathDomain(Domain):
    """A path (or, with `many`, a list of them), checked by what the file system says: `check(key, value)` raises
    BadInput with its own message. `null` says what null means, when null is allowed."""

    check: Callable[[str, object], None] = None
    null: str | None = None
    many: bool = False

    def problem(self, value) -> str | None:
        paths = value if self.many and isinstance(value, list) and value else [value]
        if (value is None and self.null is not None) or all(isinstance(p, str) and p for p in paths):
            return None
        return f"it must be {'null (' + self.null + ') or ' if self.null else ''}{self.what}"


def path_domain(what: str, example: str, bad: str, check, null: str | None = None, many: bool = False) -> PathDomain:
    return PathDomain(what, example, bad, check=check, null=null, many=many)


def writing_problem(folder: str | Path) -> str | None:
    """Why files cannot be written into `folder`, found by trying: create it (with the folders above it that are
    missing) or a probe file in it, then remove what the check made. A permission bit is no proof (root)."""
    folder = Path(folder).absolute()
    missing = []
    existing = folder
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    probe = folder / f".dcgan-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"{err.filename or folder} cannot be created ({err.strerror})"
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        return f"{folder} cannot be written ({err.strerror})"
    finally:
        for made in missing:  # deepest first
            try:
                made.rmdir()
            except OSError:
                pass
    return None


def check_folder(key: str, value: str) -> None:
    if problem := writing_problem(value):
        raise BadInput(
            f"{key}={value} cannot be used: {problem}. Point {key} at a folder you can write, e.g. "
            f"{key}=$HOME/dcgan-outputs."
        )


def check_run_folder(folder: str) -> None:
    """train.py's run (or sweep) folder, below output_root."""
    if problem := writing_problem(folder):
        raise BadInput(
            f"The run folder {folder} cannot be made: {problem}. Point output_root at a folder you can write, "
            f"e.g. `python train.py output_root=$HOME/dcgan-outputs` (runs go to <output_root>/runs/)."
        )


def check_output_file(key: str, value: str) -> None:
    if problem := writing_problem(Path(value).absolute().parent):
        raise BadInput(
            f"{key}={value} cannot be written: {problem}. Give a file in a folder you can write, e.g. "
            f"{key}=$HOME/{Path(value).name}."
        )


def check_existing_folder(key: str, value: str) -> None:
    if not Path(value).is_dir():
        raise BadInput(
            f"{key}={value} is not a folder. Give a training run's folder (the one holding checkpoints/ and samples/, "
            f"e.g. outputs/runs/<run>), or leave {key} out for the checkpoint's own."
        )


def check_classifier(key: str, value: str) -> None:
    """The classifier's cache: a file that is there (and readable), or one that can be written on first use."""
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_file() or not os.access(path, os.R_OK):
            raise BadInput(
                f"{key}={value} is not a readable file. It is where the metric's MNIST classifier is cached: give a "
                f"file path, e.g. {key}=~/.cache/dcgan-mnist/mnist_classifier.pt (trained there on first use)."
            )
        return
    check_output_file(key, str(path))


def check_checkpoint(key: str, value: str) -> None:
    read_checkpoint(value)  # its one-paragraph message, also for a checkpoint of a removed switch


def check_mnist_root(key: str, value: str) -> None:
    """A folder that holds MNIST/raw/ with the right files, or where they can be downloaded."""
    if problem := mnist_file_problem(value):
        raise BadInput(problem)
    raw = Path(value) / "MNIST" / "raw"
    if not all((raw / name).is_file() for name in MNIST_LAYOUT) and (problem := writing_problem(raw)):
        raise BadInput(
            f"{key}={value} holds no MNIST files and they cannot be downloaded there: {problem}. Point {key} at "
            f"the folder that holds MNIST/raw/, e.g. {key}=../shared/data, or at one you can write."
        )


def check_checkpoints(key: str, value) -> None:
    """evaluate.py: null, a checkpoint, a list of them, or a folder whose runs' last.ckpt are scored."""
    for path in value if isinstance(value, list) else [value]:
        if isinstance(path, str) and Path(path).is_dir():
            if not checkpoints_in(path):
                raise BadInput(
                    f"{key}={path} is a folder without runs: there is no checkpoints/last.ckpt in it or below it. "
                    f"Give a run's or a sweep's folder, or checkpoints, e.g. {key}=[a.ckpt,b.ckpt]."
                )
        else:
            check_checkpoint(key, path)


def checkpoints_in(folder: str | Path) -> list[Path]:
    """The last.ckpt of every run in `folder`: a run's folder, a sweep's, or a whole output_root."""
    return sorted(Path(folder).rglob("checkpoints/last.ckpt"), key=str)


FOLDER = path_domain("a folder that can be created or written", "$HOME/dcgan-outputs", "/proc/dcgan", check_folder)
CHECKPOINT = path_domain(
    "a checkpoint written by train.py",
    "outputs/runs/<run>/checkpoints/last.ckpt",
    "/nowhere/last.ckpt",
    check_checkpoint,
)
CLASSIFIER = path_domain(
    "a classifier file, or where one can be cached",
    "~/.cache/dcgan-mnist/mnist_classifier.pt",
    "/proc/c.pt",
    check_classifier,
)
MNIST_ROOT = path_domain("the folder that holds MNIST/raw/", "../shared/data", "/proc/mnist", check_mnist_root)


def output_file(*suffixes: str) -> PathDomain:
    def check(key: str, value: str) -> None:
        if Path(value).suffix not in suffixes:
            raise BadInput(f"{key}={value} must end in {' or '.join(suffixes)}. Use e.g. {key}=samples{suffixes[0]}.")
        check_output_file(key, value)

    return path_domain(
        f"a {'/'.join(suffixes)} file whose folder can be created", f"out{suffixes[0]}", "/proc/x" + suffixes[0], check
    )


# The keys each entry point's config has, with their domains. Shared parts first.
DATA = {
    "data._target_": class_path(),
    "data.root": MNIST_ROOT,
    "data.batch_size": whole(1, example=128, what=" (images per device and step)"),
    "data.seed": SEED,
}
MODEL = {
    "model._target_": class_path(),
    "model.latent_dim": whole(1, example=100),
    "model.g_width": whole(1, example=64, what=" (G's channels)"),
    "model.d_width": whole(1, example=64, what=" (D's channels)"),
    "model.lr": Domain("a number above 0 (Adam's step size)", "2e-4", "0", lambda v: is_number(v) and v > 0),
    "model.betas": PAIR,
    "model.d_dropout": number(0, 1, 0.3),
    "model.label_smoothing": SMOOTHING,
    "model.instance_noise_std": number(0, None, 0.1),
    "model.instance_noise_anneal_steps": whole(0, example=2000),
    "model.num_classes": one_of(None, 10, example=10),
    "model.clusters": whole(2, 60_000, example=200, null="off"),
    "model.ema_decay": number(0, 1, 0.999, null="off"),
    "model.ema_start_step": whole(0, example=500),
    "model.channels_last": FLAG,
    "model.fused_adam": FLAG,
}
TRAINER = {
    "trainer._target_": class_path(),
    "trainer.accelerator": one_of("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())),
    "trainer.devices": DEVICES,
    "trainer.num_nodes": COUNT,
    "trainer.precision": one_of("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", None),
    "trainer.max_epochs": whole(1, example=5),
    "trainer.max_time": MAX_TIME,
    "trainer.max_steps": MAX_STEPS,
    "trainer.limit_train_batches": LIMIT_BATCHES,
    "trainer.log_every_n_steps": whole(1, example=100),
    "trainer.default_root_dir": FOLDER,
    "trainer.deterministic": FLAG,
    "trainer.enable_model_summary": FLAG,
    "trainer.plugins": PLUGINS,
    "trainer.strategy._target_": class_path(),  # trainer=ddp
    "trainer.sync_batchnorm": FLAG,  # trainer=ddp
}
CALLBACKS = {
    **{
        f"callbacks.{name}._target_": class_path()
        for name in (
            "finite_losses",
            "cuda_graph",
            "sample_grid",
            "seed_files",
            "quality",
            "report",
            "progress_log",
            "checkpoint",
            "random_state",
            "stop_on_signal",
            "collapse_warning",
            "model_summary",
            "progress_bar",
        )
    },
    "callbacks.cuda_graph.enabled": FLAG,
    "callbacks.cuda_graph.warmup_steps": whole(1, example=3),
    "callbacks.sample_grid.dirpath": FOLDER,
    "callbacks.sample_grid.every_n_steps": EVERY,
    "callbacks.sample_grid.every_n_epochs": EVERY,
    "callbacks.sample_grid.rows": whole(1, example=8),
    "callbacks.sample_grid.seed": SEED,
    "callbacks.seed_files.dirpath": FOLDER,
    "callbacks.seed_files.enabled": FLAG,
    "callbacks.seed_files.weights_every_n_epochs": EVERY,
    "callbacks.seed_files.image_every_n_epochs": EVERY,
    "callbacks.seed_files.rows": whole(1, example=8),
    "callbacks.seed_files.seed": SEED,
    "callbacks.quality.classifier_path": CLASSIFIER,
    "callbacks.quality.num_samples": whole(MIN_SAMPLES, example=5000, what=" (digits to score)"),
    "callbacks.quality.every_n_epochs": whole(1),
    "callbacks.report.run_dir": FOLDER,
    "callbacks.progress_log.run_dir": FOLDER,
    "callbacks.checkpoint.dirpath": FOLDER,
    "callbacks.checkpoint.filename": TEXT,
    "callbacks.checkpoint.auto_insert_metric_name": FLAG,
    "callbacks.checkpoint.every_n_epochs": whole(1, example=5),
    "callbacks.checkpoint.save_top_k": whole(-1, example=-1, what=" (-1: keep all)"),
    "callbacks.checkpoint.save_last": FLAG,
    "callbacks.random_state.seed": SEED,
    "callbacks.collapse_warning.d_fake_below": number(0, 1, 0.01),
    "callbacks.collapse_warning.loss_g_above": number(0, None, 4.6),
    "callbacks.collapse_warning.patience": whole(1, example=200),
    "callbacks.model_summary.max_depth": whole(-1, example=1, what=" (-1: every layer)"),
}
LOGGER = {
    "logger._target_": class_path(),
    "logger.save_dir": FOLDER,
    "logger.name": TEXT,
    "logger.version": Domain("a text (may be empty)", "v1", "[1,2]", lambda v: isinstance(v, (str, int))),
    "logger.default_hp_metric": FLAG,
}
OPTIONAL_CHECKPOINT = path_domain(CHECKPOINT.what, CHECKPOINT.example, CHECKPOINT.bad, check_checkpoint, null="none")
TRAIN = {
    "seed": SEED,
    "ckpt_path": OPTIONAL_CHECKPOINT,
    "output_root": FOLDER,
    "output_dir": FOLDER,
    "classifier_path": CLASSIFIER,
    "fixed_noise.rows": whole(1, example=8),
    "fixed_noise.seed": SEED,
    **MODEL,
    **DATA,
    **TRAINER,
    **CALLBACKS,
    **LOGGER,
}
GENERATE = {
    "ckpt_path": CHECKPOINT,
    "mode": one_of("sample", "interpolate"),
    "num_samples": whole(1, example=64),
    "output": output_file(".png", ".npz"),
    "seed": SEED,
    "nrow": whole(1, example=8, null="8, or 10 for a conditional model"),
    "digits": Domain(
        "null (every digit in turn) or a non-empty list of digits 0-9",
        "[7]",
        "[12]",
        lambda v: v is None or (isinstance(v, list) and v != [] and all(is_whole(d) and 0 <= d <= 9 for d in v)),
    ),
    "walks": whole(1, example=8),
    "steps": whole(2, example=10),
    "device": DEVICE,
}
EVALUATE = {
    "ckpt_path": path_domain(
        "a checkpoint, a list of them, or a run's or sweep's folder",
        "[a.ckpt,b.ckpt]",
        "/nowhere/last.ckpt",
        check_checkpoints,
        null="with real=true",
        many=True,
    ),
    "real": FLAG,
    "num_samples": whole(MIN_SAMPLES, example=10000, what=" (digits to score)"),
    "seed": SEED,
    "classifier_path": CLASSIFIER,
    "output": path_domain(
        "a .json file whose folder can be created", "metrics.json", "/proc/m.json", check_output_file, null="none"
    ),
    "device": DEVICE,
    **DATA,
}
EXPORT_FORMATS = ("safetensors", "torchscript", "onnx")
EXPORT = {
    "ckpt_path": CHECKPOINT,
    "formats": Domain(
        f"a non-empty list of formats among {', '.join(EXPORT_FORMATS)}",
        "[safetensors,onnx]",
        "[onnx,tflite]",
        lambda v: (isinstance(v, list) and v != [] and all(f in EXPORT_FORMATS for f in v)) or v in EXPORT_FORMATS,
    ),
    "output_dir": path_domain(
        FOLDER.what, FOLDER.example, FOLDER.bad, check_folder, null="export/step_NNNNNNN beside checkpoints/"
    ),
    "num_samples": Domain(
        f"0 (no metric) or a whole number >= {MIN_SAMPLES} of digits to score",
        "10000",
        str(MIN_SAMPLES - 1),
        lambda v: is_whole(v) and (v == 0 or v >= MIN_SAMPLES),
    ),
    "seed": SEED,
    "classifier_path": CLASSIFIER,
    **DATA,
}
APP = {
    "ckpt_path": CHECKPOINT,
    "run_dir": path_domain(
        "a training run's folder", "outputs/runs/<run>", "/nowhere", check_existing_folder, null="the checkpoint's own"
    ),
    "host": TEXT,
    "port": whole(1, 65535, example=7860),
}


def check_no_work(cfg: DictConfig, entry: str) -> None:
    """The combinations each value of which is allowed alone, but that leave nothing to do or cannot be built."""
    if entry != "train":
        if entry == "evaluate" and not cfg.real and cfg.ckpt_path is None:
            raise BadInput(
                "evaluate.py needs something to score: give ckpt_path=<run>/checkpoints/last.ckpt (or several, or a "
                "sweep's folder) to score generators, or real=true to score real digits, the metric's floor."
            )
        if entry == "evaluate" and cfg.real and cfg.ckpt_path is not None:
            raise BadInput(f"real=true scores real digits, not ckpt_path={cfg.ckpt_path}: give one of the two.")
        return
    model, trainer, data = cfg.model, cfg.trainer, cfg.data
    if model.num_classes and model.clusters and model.clusters % model.num_classes:
        multiple = max(model.clusters // model.num_classes, 1) * model.num_classes
        raise BadInput(
            f"model.clusters={model.clusters} cannot work with model.num_classes={model.num_classes}: a conditional "
            "GAN finds its clusters within each digit, as many for every digit, so model.clusters must be a multiple "
            f"of {model.num_classes}. Use e.g. model.clusters={multiple}, or model.clusters=null."
        )
    check_accelerator(trainer)
    devices = trainer.devices if trainer.devices != "auto" else max(torch.cuda.device_count(), 1)
    ranks = devices * trainer.num_nodes
    per_rank = MNIST_LAYOUT["train-images-idx3-ubyte"][2] // ranks
    batches = per_rank // data.batch_size
    limit = trainer.limit_train_batches
    trained = batches if limit is None else min(batches, limit) if is_whole(limit) else int(batches * limit)
    if trained < 1:
        raise BadInput(
            f"data.batch_size={data.batch_size} leaves no batch to train on: each of the {ranks} rank(s) has "
            f"{per_rank} training digits, {batches} full batch(es)"
            + ("" if limit is None else f", and trainer.limit_train_batches={limit} keeps {trained} of them")
            + f". Use a batch of at most {per_rank} (e.g. data.batch_size=128) or a larger limit."
        )
    if cfg.ckpt_path:
        check_architecture(cfg.ckpt_path, OmegaConf.to_container(model, resolve=True))


def check_accelerator(trainer: DictConfig) -> None:
    """The machine has what trainer.accelerator asks for."""
    accelerator = str(trainer.accelerator)
    if accelerator in ("gpu", "cuda") and not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        raise BadInput(
            f"trainer.accelerator={accelerator} asks for a GPU, but PyTorch finds none on this machine "
            f"(torch.cuda.is_available() is False). Train on the CPU with trainer=cpu, or use "
            f"trainer.accelerator=auto, which takes a GPU only when there is one."
        )
    if trainer.get("sync_batchnorm") and (accelerator == "cpu" or not torch.cuda.is_available()):
        raise BadInput(
            "trainer.sync_batchnorm=true needs CUDA GPUs: PyTorch's SyncBatchNorm does not run on the CPU. "
            "Leave it false there (each process then normalises with its own batch's statistics)."
        )


def check_architecture(path: str, hparams: dict) -> None:
    """`path` is a checkpoint of a model with this config's architecture (see ARCHITECTURE), for resuming."""
    saved = read_checkpoint(path)["hyper_parameters"]
    differences = [
        f"{key}={shown(saved.get(key))} there but {shown(hparams.get(key))} here"
        for key in ARCHITECTURE
        if saved.get(key) != hparams.get(key)
    ]
    if differences:
        raise BadInput(
            f"ckpt_path={path} was written by a different model: {'; '.join(differences)}. Resume with the "
            f"model settings of the run that wrote it (its .hydra/overrides.yaml lists them), or train anew without ckpt_path."
        )


DOMAINS = {"train": TRAIN, "generate": GENERATE, "evaluate": EVALUATE, "export": EXPORT, "app": APP}


def value_of(cfg: DictConfig, key: str):
    """The value at `key` as plain Python (resolved), MISSING when it is required and not given, or BadInput when
    it refers to something that is not there."""
    if OmegaConf.is_missing(cfg, key):
        return MISSING
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException as err:
        parent, _, leaf = key.rpartition(".")
        raw = OmegaConf.to_container(OmegaConf.select(cfg, parent) if parent else cfg, resolve=False)[leaf]
        reason = (str(err).strip().splitlines() or [""])[0].rstrip(".")
        raise BadInput(
            f"{key}={raw} cannot be read: {reason}. A ${{...}} value must name another key of the config "
            f"(e.g. ${{output_dir}}) or a resolver (e.g. ${{oc.env:HOME}})."
        ) from None
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


MISSING = object()


def present(cfg: DictConfig, key: str) -> bool:
    """Whether `key` is in the config: a group left out (callbacks.quality=null) or an option without it
    (trainer.sync_batchnorm outside trainer=ddp) takes its keys with it."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, throw_on_resolution_failure=False) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node.keys()  # `in node` is False for a missing value (???)


def check(cfg: DictConfig, entry: str) -> None:
    """Check `cfg`, the composed config of `entry` ("train", "generate", ...), key by key, then as a whole."""
    for key, domain in DOMAINS[entry].items():
        if not present(cfg, key):
            continue
        value = value_of(cfg, key)
        if value is MISSING:
            raise BadInput(f"{key} is required: give it, e.g. {key}={domain.example}.")
        if problem := domain.problem(value):
            fix = domain.fix.format(key=key, example=domain.example)
            raise BadInput(f"{key}={shown(value)} cannot work: {problem}. {fix}")
        if isinstance(domain, PathDomain) and value is not None:
            domain.check(key, os.path.expanduser(value) if isinstance(value, str) else value)
    check_no_work(cfg, entry)


class CheckOutputFolder(Callback):
    """A Hydra callback of train.py: refuse an output folder that cannot be written before Hydra makes it,
    which would otherwise fail with a traceback before train.py's checks run."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self.check(config.hydra.run, "dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.check(config.hydra.sweep, "dir")

    @staticmethod
    def check(node: DictConfig, key: str) -> None:
        try:
            check_run_folder(node[key])  # reading it resolves ${output_root}, which may refer to nothing
        except (BadInput, OmegaConfBaseException) as err:
            raise Abort(err) from None  # past Hydra, which only warns when a callback raises an Exception
