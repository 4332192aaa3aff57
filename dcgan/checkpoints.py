"""Checkpoints and the files made from them: read_checkpoint, the one reader, so that every entry point refuses a
bad file with the same message and every older format is upgraded in one place; and writes never half done.

Lightning's TorchCheckpointIO moves a temporary file from $TMPDIR over the target: across file systems (local /tmp,
shared outputs) that move is a copy, which a kill -9 leaves truncated, and nothing is fsynced, so a crash of the
machine can leave an empty file. AtomicCheckpointIO writes with dcgan.files.write_atomically instead.
"""

from pathlib import Path
from typing import Annotated

import torch
from pydantic import AfterValidator, Field, Strict
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from dcgan.errors import UserFacingError, first_line
from dcgan.files import write_atomically
from dcgan.kinds import Count, Flag, Folder, Text

# checkpoint["dcgan_format"]: 3 up to commit 532c631, 4 up to 5de41c9, 5 since. 532c631 is the last commit to read
# (and upgrade) formats 1 and 2; format 3 still loads, so that the checkpoints of 532c631 do.
CHECKPOINT_FORMAT = 5
OLDEST_FORMAT = 3
READS_OLDER_FORMATS = "532c631"
# Format 5's names (issue 31): a count of clusters and of digits, and D's embedding of an image's cluster.
RENAMED_IN_5 = {"clusters": "num_clusters", "num_classes": "num_digits"}


class CheckpointError(UserFacingError):
    """A checkpoint that is missing or cannot be read. The message says what to do."""


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint train.py wrote at `path`, read safely (weights_only: tensors and plain values, no code) and
    upgraded to this format."""
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
        reason = first_line(err).split(". ")[0].rstrip(".")
        raise CheckpointError(
            f"ckpt_path={path} is not a readable checkpoint ({reason}): it is truncated or corrupt, or not written "
            "by this project's train.py. Give another one, e.g. the run's checkpoints/last.ckpt or an earlier "
            "checkpoints/epoch_NNN.ckpt beside it."
        ) from None
    try:
        return upgrade(checkpoint)
    except CheckpointError as err:
        raise CheckpointError(f"ckpt_path={path} cannot be used: {err}") from None


def upgrade(checkpoint: dict) -> dict:
    """Bring `checkpoint` (a dict as torch.load returns it) to CHECKPOINT_FORMAT, in place, and return it; refuse a
    format older than OLDEST_FORMAT, naming the commit that reads it."""
    found = checkpoint.get("dcgan_format", 1)
    if found >= CHECKPOINT_FORMAT:
        return checkpoint
    if found < OLDEST_FORMAT:
        raise CheckpointError(
            f"it is a checkpoint of format {found}, which this version no longer reads (it reads formats "
            f"{OLDEST_FORMAT} to {CHECKPOINT_FORMAT}); commit {READS_OLDER_FORMATS} reads and upgrades it: "
            f"`git checkout {READS_OLDER_FORMATS}` (and its requirements.txt), then run the same command there."
        )
    state = checkpoint["state_dict"]
    if found == 3:
        # G's first layer is a Linear since format 4: ConvTranspose2d's weight (in, out, 7, 7) as (out * 49, in),
        # the same numbers; Adam's moments of it (G's optimizer, its first parameter) too.
        for key in ("generator.net.0.weight", "generator_ema.module.net.0.weight"):
            if key in state:
                state[key] = as_linear(state[key])
        for optimizer in checkpoint.get("optimizer_states", [])[:1]:
            moments = optimizer["state"].get(0, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in moments:
                    moments[name] = as_linear(moments[name])
    for section in ("hyper_parameters", "datamodule_hyper_parameters"):
        if section in checkpoint:
            hparams = checkpoint[section]
            checkpoint[section] = {RENAMED_IN_5.get(key, key): value for key, value in hparams.items()}
    if "discriminator.class_projection.weight" in state:
        state["discriminator.cluster_projection.weight"] = state.pop("discriminator.class_projection.weight")
    checkpoint["dcgan_format"] = CHECKPOINT_FORMAT
    return checkpoint


def as_linear(weight: torch.Tensor) -> torch.Tensor:
    return weight.flatten(1).T.contiguous()


def saved_at(checkpoint: dict, path: str | Path) -> dict:
    """Where and when in training `checkpoint`, read from `path`, was saved."""
    # Two optimizer steps per training step (DCGAN.step). The epoch its last step belongs to, counted from 1 as in
    # train.log, is the number of epochs started: "epoch" would count a save at the end of training one too far.
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    started = progress.get("current", {}).get("started")
    return {"path": str(path), "step": checkpoint["global_step"] // 2, "epoch": started or checkpoint["epoch"] + 1}


def checkpoints_in(folder: str | Path) -> list[Path]:
    """The last.ckpt of every run in `folder`: a run's folder, a sweep's, or a whole output_root."""
    return sorted(Path(folder).rglob("checkpoints/last.ckpt"), key=str)


def readable_checkpoint(value: str) -> str:
    read_checkpoint(Path(value).expanduser())  # its own paragraph (CheckpointError), also for an old format
    return value


def checkpoints_or_runs(value: str | list[str]) -> str | list[str]:
    """evaluate.py's: a checkpoint, a list of them, or folders whose runs' last.ckpt are scored."""
    for path in value if isinstance(value, list) else [value]:
        if not Path(path).is_dir():
            readable_checkpoint(path)
        elif not checkpoints_in(path):
            raise ValueError(
                f"{path} is a folder without runs: there is no checkpoints/last.ckpt in it or below it. Give a run's "
                "or a sweep's folder, or checkpoints, e.g. {key}=[a.ckpt,b.ckpt]"
            )
    return value


Checkpoint = Annotated[
    str, AfterValidator(readable_checkpoint), Field(examples=["outputs/runs/<run>/checkpoints/last.ckpt"])
]
Runs = Annotated[str | list[str], AfterValidator(checkpoints_or_runs), Field(examples=["[a.ckpt]"])]


def run_folder(path: str | Path) -> Path:
    """The run folder a checkpoint belongs to: the folder holding checkpoints/, else the checkpoint's own folder."""
    path = Path(path)
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def plain_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """`net`'s weights and buffers as contiguous CPU tensors (channels_last training leaves them strided),
    which safetensors requires and any loader takes."""
    return {key: value.detach().cpu().contiguous() for key, value in net.state_dict().items()}


class EpochCheckpoints(ModelCheckpoint):
    """ModelCheckpoint that also writes last.ckpt at the end of every epoch, whatever the schedule of its periodic
    checkpoints, and when training ends part way through an epoch (trainer.max_time, max_steps), never twice at one
    step: a kill -9 loses at most the epoch in progress, and a finished run's last.ckpt is its final state."""

    # The global step of the last checkpoint written, and so of last.ckpt: Lightning writes it beside each periodic
    # checkpoint, StopOnSignal writes it alone. 0 at first: before the first step there is nothing to save.
    saved_step = 0

    def __init__(
        self,
        dirpath: Folder,
        filename: Text,
        auto_insert_metric_name: Flag,
        every_n_epochs: Count,
        save_top_k: Annotated[int, Strict(), Field(ge=-1, examples=["-1"])],  # -1: every one
        save_last: Flag,
    ):
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            auto_insert_metric_name=auto_insert_metric_name,
            every_n_epochs=every_n_epochs,
            save_top_k=save_top_k,
            save_last=save_last,
        )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)  # epoch_NNN.ckpt on its schedule
        self.write_last(trainer)

    def on_train_end(self, trainer, pl_module):
        self.write_last(trainer)

    def write_last(self, trainer) -> None:
        if self.save_last and self.saved_step != trainer.global_step:
            self.last_model_path = str(Path(self.dirpath) / "last.ckpt")  # set first: the checkpoint holds it
            trainer.save_checkpoint(self.last_model_path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic on the local file system: temp file, fsync, rename."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a save that was killed
            stale.unlink(missing_ok=True)
        write_atomically(path, lambda f: torch.save(checkpoint, f))
