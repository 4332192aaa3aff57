"""Checkpoints and the files made from them: read_checkpoint, the one reader, so that every entry point refuses a
bad file with the same message and every older format is upgraded in one place; and writes never half done.

Lightning's TorchCheckpointIO moves a temporary file from $TMPDIR over the target: across file systems (local /tmp,
shared outputs) that move is a copy, which a kill -9 leaves truncated, and nothing is fsynced, so a crash of the
machine can leave an empty file. AtomicCheckpointIO writes with dcgan.files.write_atomically instead.
"""

from pathlib import Path

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from dcgan.errors import UserFacingError, first_line
from dcgan.files import write_atomically

# checkpoint["dcgan_format"]: format 1 up to commit c218713, 2 up to fb79f5b, 3 up to 532c631, 4 since.
CHECKPOINT_FORMAT = 4
# Format 1's switches of experiments that lost (docs/recipe.md has each result), with their value when off. A
# checkpoint that used one cannot be drawn from as it was trained; the commit that last held their code can.
REMOVED_SWITCHES = {
    "info_codes": (None, "InfoGAN's categorical code"),
    "d_pack": (1, "PacGAN's packing of images into one input of D"),
    "d_minibatch_std": (False, "the minibatch standard deviation channel of D"),
    "sample_bn": ("running", "sampling with each batch's BatchNorm statistics"),
}
LAST_COMMIT_WITH_REMOVED_SWITCHES = "c218713"
# Format 2 could condition on the digit labels alone (num_classes without clusters), a mode no config shipped.
LAST_COMMIT_WITH_LABELS_ALONE = "fb79f5b"
# Keys a format-1 checkpoint may lack, with what the model did before each existed.
FORMAT_1_DEFAULTS = dict(
    num_classes=None, clusters=None, ema_decay=None, ema_start_step=0, channels_last=False, fused_adam=False
)
# Keys no model reads any more: format 1's learning rates per network (a resume takes its rate from the config), the
# grids' fixed noise (now their own seed) and InfoGAN's weight; format 2's torch.compile switch (only the speed).
DROPPED = ("lr_g", "lr_d", "num_fixed_samples", "fixed_noise_seed", "info_weight", "compile")


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
    """Bring `checkpoint` (a dict as torch.load returns it) to CHECKPOINT_FORMAT, in place, and return it; refuse
    one whose model this version cannot draw from as it was trained, naming the commit that can."""
    if checkpoint.get("dcgan_format", 1) >= CHECKPOINT_FORMAT:
        return checkpoint
    if checkpoint.get("dcgan_format", 1) < 3:
        upgrade_to_format_3(checkpoint)
    # G's first layer is a Linear since format 4: ConvTranspose2d's weight (in, out, 7, 7) as (out * 49, in), the
    # same numbers; Adam's moments of it (G's optimizer, its first parameter) too.
    state = checkpoint["state_dict"]
    for key in ("generator.net.0.weight", "generator_ema.module.net.0.weight"):
        if key in state:
            state[key] = as_linear(state[key])
    for optimizer in checkpoint.get("optimizer_states", [])[:1]:
        moments = optimizer["state"].get(0, {})
        for name in ("exp_avg", "exp_avg_sq"):
            if name in moments:
                moments[name] = as_linear(moments[name])
    checkpoint["dcgan_format"] = CHECKPOINT_FORMAT
    return checkpoint


def as_linear(weight: torch.Tensor) -> torch.Tensor:
    return weight.flatten(1).T.contiguous()


def upgrade_to_format_3(checkpoint: dict) -> None:
    hparams, state = checkpoint["hyper_parameters"], checkpoint["state_dict"]
    used = [
        f"model.{key}={hparams[key]} ({what})"
        for key, (off, what) in REMOVED_SWITCHES.items()
        if hparams.get(key, off) != off
    ]
    if used:
        refuse(
            f"it was trained with {' and '.join(used)}, an experiment that lost and was removed from the project "
            "(docs/recipe.md has its result)",
            LAST_COMMIT_WITH_REMOVED_SWITCHES,
        )
    if hparams.get("num_classes") and not hparams.get("clusters"):
        refuse(
            f"it is a conditional GAN on the digit labels alone (model.num_classes={hparams['num_classes']} without "
            "model.clusters), a mode that no config shipped and that was removed (model=cgan conditions on clusters "
            "within each digit)",
            LAST_COMMIT_WITH_LABELS_ALONE,
        )
    for key in (*REMOVED_SWITCHES, *DROPPED):
        hparams.pop(key, None)
    for key, value in FORMAT_1_DEFAULTS.items():
        hparams.setdefault(key, value)
    for key in ("fixed_noise", "fixed_labels", "generator_ema.module.cluster_cuts"):
        state.pop(key, None)
    for key in [key for key in state if key.startswith("discriminator.label_projection.")]:
        state[key.replace(".label_projection.", ".class_projection.")] = state.pop(key)
    if "generator.cluster_cuts" in state:  # G's rule for picking its cluster is its own module since format 3
        cuts = state.pop("generator.cluster_cuts")
        state["cluster_prior.cuts"] = cuts.view(-1, cuts.shape[-1])


def refuse(why: str, commit: str) -> None:
    raise CheckpointError(
        f"{why}. This version would draw other digits from it than it was trained to, so it refuses it. The commit "
        f"that last had it reads it: `git checkout {commit}` (and its requirements.txt), then run the same command there."
    )


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
