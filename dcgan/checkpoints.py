"""Checkpoints and the files made from them: one reader for them all, and writes that are never half done.

read_checkpoint is the one place a checkpoint is read, so every entry point
(train.py's resume, generate.py, evaluate.py, export.py) refuses a bad file
with the same one-paragraph message.

Lightning's TorchCheckpointIO writes through an fsspec transaction: the bytes go
to a temporary file in $TMPDIR, then move over the target. When $TMPDIR is on
another file system than the run folder (common on clusters: local /tmp,
shared outputs) the move is a copy into the target, and a kill -9 during it
leaves a truncated last.ckpt; nothing is fsynced either, so a crash of the
machine can leave an empty one. AtomicCheckpointIO writes next to the target,
fsyncs, and renames: the target is always either the old or the new file.
write_atomically does the same for any file.
"""

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from dcgan.errors import UserFacingError
from dcgan.module import DCGAN


class CheckpointError(UserFacingError):
    """A checkpoint that is missing or cannot be read. The message says what to do."""


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint train.py wrote at `path`, read safely (weights_only: tensors and plain values, no code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"ckpt_path={path} does not exist. Training runs save their checkpoints as "
            "outputs/runs/<run>/checkpoints/last.ckpt and epoch_NNN.ckpt; give one of those."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or not {"hyper_parameters", "state_dict"} <= checkpoint.keys():
            raise ValueError("it has no hyper_parameters or state_dict")
    except Exception as err:  # zip, pickle and EOF errors all mean the same thing here
        # torch's own message goes on for several sentences; its first says what is wrong
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0].rstrip(".")
        raise CheckpointError(
            f"ckpt_path={path} is not a readable checkpoint ({reason}): it is truncated or corrupt, or not written "
            "by this project's train.py. Give another one, e.g. the run's checkpoints/last.ckpt or an earlier "
            "checkpoints/epoch_NNN.ckpt beside it."
        ) from None
    return checkpoint


def saved_at(checkpoint: dict, path: str | Path) -> dict:
    """Where and when in training `checkpoint`, read from `path`, was saved."""
    # Two optimizer steps per training step (DCGAN.step). The epoch its last step belongs to, counted from 1 as in
    # train.log, is the number of epochs started: "epoch" would count a save at the end of training one too far.
    started = (
        checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {}).get("started")
    )
    return {"path": str(path), "step": checkpoint["global_step"] // 2, "epoch": started or checkpoint["epoch"] + 1}


def run_folder(path: str | Path) -> Path:
    """The run folder a checkpoint belongs to: the folder holding checkpoints/, else the checkpoint's own folder."""
    path = Path(path)
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def gan_from(checkpoint: dict) -> DCGAN:
    """The GAN saved in `checkpoint` (as read_checkpoint returns it), with its weights, on the CPU."""
    gan = DCGAN(**checkpoint["hyper_parameters"])
    gan.on_load_checkpoint(checkpoint)  # an average G the checkpoint lacks, or one this model does not keep
    gan.load_state_dict(checkpoint["state_dict"])
    return gan


def load_gan(path: str | Path, map_location: str | torch.device = "cpu") -> DCGAN:
    """The GAN saved in the checkpoint at `path`, with its weights, on `map_location`."""
    return gan_from(read_checkpoint(path)).to(map_location)


def plain_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """`net`'s weights and buffers as contiguous CPU tensors (channels_last training leaves them strided),
    which safetensors requires and any loader takes."""
    return {key: value.detach().cpu().contiguous() for key, value in net.state_dict().items()}


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(f)` on a new file beside `path`, fsync it, and rename it over `path`: readers, a kill and
    a crash see the old file or the new one, never part of one; writers at the same time each rename a whole file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A new name in the same folder: os.replace within one file system is atomic.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class EpochCheckpoints(ModelCheckpoint):
    """ModelCheckpoint that also writes last.ckpt when training ends: on its schedule alone, a 6-epoch run
    with checkpoints every 5 epochs would end with last.ckpt at epoch 5, and a 3-epoch run with none."""

    def on_train_end(self, trainer, pl_module):
        if self.save_last and self.dirpath:
            self.last_model_path = str(Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}")
            # As ModelCheckpoint's own saves do; unset, Lightning prints that it picked False.
            trainer.save_checkpoint(self.last_model_path, weights_only=self.save_weights_only)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic on the local file system: temp file, fsync, rename."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a save that was killed
            stale.unlink(missing_ok=True)
        write_atomically(path, lambda f: torch.save(checkpoint, f))
