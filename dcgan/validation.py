"""Checks of what a user hands train.py, run before any training starts.

Each problem raises BadInput with one paragraph that names the bad value and
the fix; train.py prints it without a traceback. Nothing here writes a file,
so a rejected run leaves earlier runs and their checkpoints as they were.
docs/robustness.md lists every bad input the tests try and the message it gets.
"""

import inspect
import os
import sys
from pathlib import Path

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import AcceleratorRegistry

from dcgan.checkpoints import read_checkpoint
from dcgan.data import mnist_file_problem
from dcgan.errors import UserFacingError
from dcgan.module import ARCHITECTURE, COMPILE_MODES, DCGAN, SAMPLE_BN


class BadInput(UserFacingError, ValueError):
    """Something the user gave (a config value, a file) cannot work. The message says what to do instead."""


def whole(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def number(value, low: float, high: float = float("inf")) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value < high


def pair(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(number(v, 0, 1.0001) for v in value)


# model.<key>: whether a value is allowed, what it must be, an example of one that is.
MODEL_RANGES = {
    "latent_dim": (lambda v: whole(v, 1), "a whole number >= 1", "100"),
    "g_width": (lambda v: whole(v, 1), "a whole number >= 1 (G's channels)", "64"),
    "d_width": (lambda v: whole(v, 1), "a whole number >= 1 (D's channels)", "64"),
    "d_dropout": (lambda v: number(v, 0, 1), "a probability from 0 up to (not including) 1", "0.3"),
    "betas": (lambda v: pair(v) and max(v) < 1, "two numbers from 0 up to 1, Adam's (beta1, beta2)", "[0.5,0.999]"),
    "label_smoothing": (
        lambda v: v is None or (pair(v) and v[0] <= v[1]),
        "null or [low, high] with 0 <= low <= high <= 1",
        "[0.8,1.0]",
    ),
    "instance_noise_std": (lambda v: number(v, 0), "a number >= 0 (0 turns the noise off)", "0.1"),
    "instance_noise_anneal_steps": (lambda v: whole(v, 0), "a whole number of steps >= 0", "2000"),
    "ema_decay": (lambda v: v is None or number(v, 0, 1), "null (off) or a number from 0 up to 1", "0.999"),
    "ema_start_step": (lambda v: whole(v, 0), "a whole number of steps >= 0", "500"),
    "num_fixed_samples": (lambda v: whole(v, 1), "a whole number >= 1 (the grids' images)", "64"),
    "info_weight": (lambda v: number(v, 0), "a number >= 0", "1.0"),
    "clusters": (lambda v: v is None or whole(v, 2), "null (off) or a whole number >= 2", "40"),
    "compile": (lambda v: v in COMPILE_MODES, f"one of {', '.join(map(str, COMPILE_MODES))}", "reduce-overhead"),
}


def check_config(cfg: DictConfig) -> None:
    """The config's values, the machine it asks for, and the MNIST files when they are already there."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    for key, (allowed, what, example) in MODEL_RANGES.items():
        if key in model and not allowed(model[key]):
            raise BadInput(f"model.{key}={model[key]} cannot work: it must be {what}. Use e.g. model.{key}={example}.")
    for key in ("lr", "lr_g", "lr_d"):
        value = cfg.model.get(key)
        if key != "lr" and value is None:  # null: lr
            continue
        if not isinstance(value, (int, float)) or value <= 0:
            raise BadInput(
                f"model.{key} must be a positive number, got {value}. It is Adam's step size: use e.g. "
                f"model.lr=2e-4 (both networks) or model.lr_g=2e-4 model.lr_d=1e-4."
            )
    batch_size = cfg.data.batch_size
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise BadInput(
            f"data.batch_size must be a positive whole number, got {batch_size}. Use e.g. "
            f"data.batch_size=128 (images per device and step)."
        )
    sample_bn = cfg.model.sample_bn
    if sample_bn not in SAMPLE_BN:
        raise BadInput(
            f"model.sample_bn={sample_bn} is not a way to sample: use model.sample_bn=running (BatchNorm's running "
            f"statistics) or model.sample_bn=batch (the statistics of each batch of samples)."
        )
    pack, conditioned = cfg.model.d_pack, cfg.model.get("num_classes") or cfg.model.get("clusters")
    if not isinstance(pack, int) or pack < 1 or batch_size % pack or (pack > 1 and conditioned):
        raise BadInput(
            f"model.d_pack={pack} cannot pack data.batch_size={batch_size} images: D judges d_pack images at once, "
            f"so it must be a whole number >= 1 that divides the batch size, and 1 when D also sees each image's "
            f"label or cluster (model=cgan, model.clusters). Use e.g. model.d_pack=1."
        )
    codes, latent_dim = cfg.model.get("info_codes"), cfg.model.latent_dim
    if codes is not None and (not isinstance(codes, int) or isinstance(codes, bool) or not 2 <= codes <= latent_dim):
        raise BadInput(
            f"model.info_codes={codes} is not a number of categories z can pick: it must be a whole number from 2 "
            f"to model.latent_dim={latent_dim}, or null to turn InfoGAN's code off. Use e.g. model.info_codes=10 (one per digit)."
        )
    clusters = cfg.model.get("clusters")
    if clusters is not None and (cfg.model.get("num_classes") or cfg.model.get("info_codes")):
        raise BadInput(
            f"model.clusters={clusters} is for an unconditional model without InfoGAN's code: z picks one category "
            f"only. Use model.clusters=null with model=cgan or model.info_codes, or drop those."
        )
    check_accelerator(cfg.trainer)
    if problem := mnist_file_problem(cfg.data.root):
        raise BadInput(problem)


def check_accelerator(trainer: DictConfig) -> None:
    accelerator = str(trainer.accelerator)
    known = {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}
    if accelerator not in known:
        raise BadInput(
            f"trainer.accelerator={accelerator} is not an accelerator Lightning knows. Use one of "
            f"{', '.join(sorted(known))}, or trainer=cpu / trainer=gpu (auto takes a GPU when there is one)."
        )
    has_gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
    if accelerator in ("gpu", "cuda") and not has_gpu:
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


def check_checkpoint(path: str, hparams: dict) -> None:
    """`path` is a readable checkpoint of a model with this config's architecture (see ARCHITECTURE)."""
    checkpoint = read_checkpoint(path)
    # Checkpoints from before a key existed were written with its default.
    defaults = {name: p.default for name, p in inspect.signature(DCGAN).parameters.items() if name in ARCHITECTURE}
    saved = defaults | checkpoint["hyper_parameters"]
    differences = [
        f"{key}={saved.get(key, 'missing')} there but {hparams.get(key, 'missing')} here"
        for key in ARCHITECTURE
        if saved.get(key, "missing") != hparams.get(key, "missing")
    ]
    if differences:
        raise BadInput(
            f"ckpt_path={path} was written by a different model: {'; '.join(differences)}. Resume with the "
            f"model settings of the run that wrote it (its .hydra/overrides.yaml lists them), or train anew without ckpt_path."
        )


def output_folder_problem(folder: str) -> str | None:
    """Why runs cannot be written into `folder` (created if missing), or None when they can."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "is a file, not a folder" if not existing.is_dir() else "cannot be written"
        return (
            f"The run folder {folder} cannot be made: {existing} {what}. Point output_root at a folder "
            f"you can write, e.g. `python train.py output_root=$HOME/dcgan-outputs` (runs go to <output_root>/runs/)."
        )
    return None


class CheckOutputFolder(Callback):
    """A Hydra callback: refuse an output folder that cannot be written before Hydra makes it, which
    would otherwise fail with a traceback before train.py runs."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self.check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.check(config.hydra.sweep.dir)

    @staticmethod
    def check(folder: str) -> None:
        if problem := output_folder_problem(folder):
            print(f"Error: {problem}", file=sys.stderr)
            raise SystemExit(1)
