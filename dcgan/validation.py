"""What no schema can say: the file system's and this machine's answers about a value, and the few rules across
keys that leave nothing to do. dcgan/schema.py's kinds ask the probes; dcgan/cli.py's `check` applies RULES after
the schema. The file system is asked by trying (a permission bit is no proof for root), and what a probe makes it
removes again, so a refused run leaves earlier ones as they were."""

import os
import re
import uuid
from pathlib import Path

import torch
from pytorch_lightning.accelerators import AcceleratorRegistry

from dcgan.checkpoints import checkpoints_in, read_checkpoint
from dcgan.data import MNIST_LAYOUT, mnist_file_problem
from dcgan.errors import UserFacingError
from dcgan.module import ARCHITECTURE


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


def attempt(function, *args):
    """function(*args), or None where it raises: Hydra and importlib raise their own kinds for a missing class."""
    try:
        return function(*args)
    except Exception:
        return None


# The file system's answers, as pydantic validators: the value back, or ValueError with a whole paragraph.
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


def writable_folder(value: str) -> str:
    if problem := writing_problem(value):
        raise ValueError(f"{problem}. Point {{key}} at a folder you can write, e.g. {{key}}=$HOME/dcgan-outputs")
    return value


def writable_file(value: str) -> str:
    if problem := writing_problem(Path(value).expanduser().absolute().parent):
        raise ValueError(f"{problem}. Give a file in a folder you can write, e.g. {{key}}=$HOME/{Path(value).name}")
    return value


def readable_checkpoint(value: str) -> str:
    read_checkpoint(Path(value).expanduser())  # its own paragraph (CheckpointError), also for an old format
    return value


def classifier_file(value: str) -> str:
    """The metric's classifier: a readable file, or where one can be cached on first use."""
    path = Path(value).expanduser()
    if path.exists() and (not path.is_file() or not os.access(path, os.R_OK)):
        raise ValueError(
            "it is not a readable file. It is where the metric's MNIST classifier is cached: give a file path, e.g. "
            "{key}=~/.cache/dcgan-mnist/mnist_classifier.pt (trained there on first use)"
        )
    return value if path.exists() else writable_file(value)


def mnist_root(value: str) -> str:
    """A folder holding MNIST/raw/ with the right files, or where they can be downloaded."""
    if problem := mnist_file_problem(value):
        raise BadInput(problem)
    raw = Path(value) / "MNIST" / "raw"
    if not all((raw / name).is_file() for name in MNIST_LAYOUT) and (problem := writing_problem(raw)):
        raise ValueError(
            f"it holds no MNIST files and they cannot be downloaded there ({problem}). Point {{key}} at the folder "
            "that holds MNIST/raw/, e.g. {key}=../shared/data, or at one you can write"
        )
    return value


def run_folder(value: str) -> str:
    if not Path(value).is_dir():
        raise ValueError(
            "it is not a folder. Give a training run's folder (the one holding checkpoints/ and samples/, e.g. "
            "outputs/runs/<run>), or leave {key} out for the checkpoint's own"
        )
    return value


def checkpoints_or_runs(value: str | list[str]) -> str | list[str]:
    """evaluate.py: a checkpoint, a list of them, or folders whose runs' last.ckpt are scored."""
    for path in value if isinstance(value, list) else [value]:
        if not Path(path).is_dir():
            readable_checkpoint(path)
        elif not checkpoints_in(path):
            raise ValueError(
                f"{path} is a folder without runs: there is no checkpoints/last.ckpt in it or below it. Give a run's "
                "or a sweep's folder, or checkpoints, e.g. {key}=[a.ckpt,b.ckpt]"
            )
    return value


# What this machine has: a value within its domain that it cannot do is refused now, not after minutes.
def gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def available_device(value: str) -> str:
    """generate.py's and evaluate.py's device: auto, cpu, cuda or cuda:<n>, on this machine."""
    found = re.fullmatch(r"auto|cpu|cuda(?::(\d+))?", value)
    if not found:
        raise ValueError("it must be auto (the GPU when there is one), cpu, cuda or cuda:<n>. Use e.g. {key}=cpu")
    if value.startswith("cuda") and int(found[1] or 0) >= gpus():
        raise ValueError(
            f"it asks for GPU {int(found[1] or 0)}, and PyTorch finds {gpus()} GPU(s) on this machine. Use "
            "{key}=cpu, or {key}=auto, which takes a GPU only when there is one"
        )
    return value


def available_accelerator(value: str) -> str:
    names = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    if value not in names:
        raise ValueError(f"it must be one of {', '.join(names)}. Use e.g. {{key}}=auto")
    if value != "auto" and not AcceleratorRegistry.get("cuda" if value == "gpu" else value).is_available():
        raise ValueError(
            "this machine has none: PyTorch finds no such device here. Train on the CPU with trainer=cpu, or use "
            "{key}=auto, which takes a GPU only when there is one"
        )
    return value


# The rules across keys: values that are each allowed alone, but together leave nothing to do.
def clusters_within_digits(cfg) -> None:
    model = cfg.model
    if model.num_classes and not model.clusters:
        raise BadInput(
            f"model.num_classes={model.num_classes} needs model.clusters: the conditional GAN draws clusters found "
            "within each digit (model=cgan sets both). Use e.g. model.clusters=200, or model.num_classes=null."
        )
    if model.num_classes and model.clusters % model.num_classes:
        raise BadInput(
            f"model.clusters={model.clusters} cannot work with model.num_classes={model.num_classes}: a conditional "
            "GAN finds as many clusters within every digit, so model.clusters must be a multiple of "
            f"{model.num_classes}. Use e.g. model.clusters={max(model.clusters // 10, 1) * 10}."
        )


def devices_exist(cfg) -> None:
    trainer = cfg.trainer
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


def batches_per_rank(cfg) -> None:
    trainer, batch_size = cfg.trainer, cfg.data.batch_size
    ranks = (trainer.devices if trainer.devices != "auto" else max(gpus(), 1)) * trainer.num_nodes
    per_rank = MNIST_LAYOUT["train-images-idx3-ubyte"][2] // ranks
    batches, limit = per_rank // batch_size, trainer.limit_train_batches
    if isinstance(limit, int) and limit > batches > 0:
        raise BadInput(
            f"trainer.limit_train_batches={limit} asks for more batches than an epoch has: each of the {ranks} "
            f"rank(s) has {batches} batches of {batch_size}. Use at most trainer.limit_train_batches={batches}, or a "
            "fraction, e.g. 0.5."
        )
    trained = batches if limit is None else min(limit, batches) if isinstance(limit, int) else int(batches * limit)
    if trained < 1:
        raise BadInput(
            f"data.batch_size={batch_size} leaves no batch to train on: each of the {ranks} rank(s) has {per_rank} "
            f"training digits, {batches} full batch(es)"
            + ("" if limit is None else f", and trainer.limit_train_batches={limit} keeps {trained} of them")
            + f". Use a batch of at most {per_rank} (e.g. data.batch_size=128) or a larger limit."
        )


def resumed_model_matches(cfg) -> None:
    """A checkpoint to resume has this config's architecture: the hyperparameters that shape its weights."""
    if not cfg.ckpt_path:
        return
    saved = read_checkpoint(cfg.ckpt_path)["hyper_parameters"]
    here = cfg.model.model_dump()
    differences = [
        f"{key}={shown(saved.get(key))} there but {shown(here[key])} here"
        for key in ARCHITECTURE
        if saved.get(key) != here[key]
    ]
    if differences:
        raise BadInput(
            f"ckpt_path={cfg.ckpt_path} was written by a different model: {'; '.join(differences)}. Resume with the "
            "model settings of the run that wrote it (its .hydra/overrides.yaml lists them), or train anew without "
            "ckpt_path."
        )


def something_to_score(cfg) -> None:
    if not cfg.real and cfg.ckpt_path is None:
        raise BadInput(
            "evaluate.py needs something to score: give ckpt_path=<run>/checkpoints/last.ckpt (or several, or a "
            "sweep's folder) to score generators, or real=true to score real digits, the metric's floor."
        )
    if cfg.real and cfg.ckpt_path is not None:
        raise BadInput(f"real=true scores real digits, not ckpt_path={shown(cfg.ckpt_path)}: give one of the two.")


def available_memory() -> int:
    """The bytes a process can have now: Linux's MemAvailable, elsewhere the free pages."""
    try:
        return int(re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())[1]) * 1024
    except (OSError, TypeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def digits_fit_in_memory(cfg) -> None:
    """generate.py holds every digit it draws at once, as 4-byte floats, twice while it gathers the batches."""
    n = cfg.num_samples if cfg.mode == "sample" else cfg.walks * cfg.steps
    per_digit, have = 2 * MNIST_LAYOUT["train-images-idx3-ubyte"][3] * 4, available_memory()
    if n * per_digit > have:
        asked = f"num_samples={n}" if cfg.mode == "sample" else f"walks={cfg.walks} with steps={cfg.steps}"
        fewer = "e.g. num_samples=10000" if cfg.mode == "sample" else "fewer walks or steps"
        raise BadInput(
            f"{asked} draws {n:,} digits at once, about {n * per_digit / 2**30:,.1f} GiB, and this machine has "
            f"{have / 2**30:.1f} GiB available. Draw at most {have // per_digit:,} at a time ({fewer}), in several "
            "files with different seeds."
        )


RULES = {
    "Train": (clusters_within_digits, devices_exist, batches_per_rank, resumed_model_matches),
    "Generate": (digits_fit_in_memory,),
    "Evaluate": (something_to_score,),
}
