"""Callbacks that show and measure training progress: grids, files, the metric, the log, the bar and the report."""

import logging
import time
from functools import partial
from pathlib import Path
from typing import Annotated

import pytorch_lightning as pl
import torch
from pydantic import Field, Strict
from pytorch_lightning.callbacks import ModelSummary, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from dcgan.checkpoints import plain_state_dict
from dcgan.files import write_atomically
from dcgan.kinds import Count, Flag, Folder, Seed
from dcgan.metrics import NUM_DIGITS, Classifier, Samples, quality_and_floor
from dcgan.reports import write_curves, write_progress_gif
from dcgan.sampling import grid_columns, sample, save_sample_grid

log = logging.getLogger(__name__)


class SampleGrid(pl.Callback):
    """Every `every_n_steps` training steps and every `every_n_epochs` epochs (either null: off), `rows` rows of
    digits from seed `seed`'s latent points (the reference script's fixed noise), as generate.py draws them: 8 to a
    row, or a column per digit. To `<dirpath>/step_<step>_epoch_<epoch>.png` (names sort by step; epoch counts from
    1) and, with a TensorBoard logger, to its IMAGES tab as `samples`."""

    def __init__(
        self, dirpath: Folder, every_n_steps: Count | None, every_n_epochs: Count | None, rows: Count, seed: Seed
    ):
        self.dirpath = Path(dirpath)
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.rows, self.seed = rows, seed
        self._last_step = -1  # a step that ends both a 200-step interval and an epoch gets one grid

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every_n_steps and pl_module.step % self.every_n_steps == 0:
            self.write_grid(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.write_grid(trainer, pl_module)

    @rank_zero_only
    def write_grid(self, trainer, pl_module) -> None:
        step = pl_module.step
        if step == self._last_step:
            return
        self._last_step = step
        generator, name = pl_module.digit_generator(), f"step_{step:07d}_epoch_{trainer.current_epoch + 1:03d}.png"
        self.dirpath.mkdir(parents=True, exist_ok=True)
        picture = save_sample_grid(generator, self.rows * grid_columns(generator), self.seed, self.dirpath / name)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", picture, global_step=step)


class ReferenceScriptFiles(pl.Callback):
    """The reference script's files, by its names, for code that expects them: every `weights_every_n_epochs`
    epochs `generator_epoch_X.pth` and `discriminator_epoch_X.pth` (plain state_dicts), every
    `image_every_n_epochs` epochs `image_at_epoch_XXXX.png` (SampleGrid's digits); X is the epoch counted from 1,
    XXXX the same in 4 digits. The generator saved is the one the image and generate.py draw with: the moving
    average once it has started. Off unless `enabled` (experiment=reference_script); either interval can be null."""

    def __init__(
        self,
        dirpath: Folder,
        enabled: Flag,
        weights_every_n_epochs: Count | None,
        image_every_n_epochs: Count | None,
        rows: Count,
        seed: Seed,
    ):
        self.dirpath, self.enabled = Path(dirpath), enabled
        self.weights_every_n_epochs, self.image_every_n_epochs = weights_every_n_epochs, image_every_n_epochs
        self.rows, self.seed = rows, seed

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        weights_due = self.weights_every_n_epochs and epoch % self.weights_every_n_epochs == 0
        image_due = self.image_every_n_epochs and epoch % self.image_every_n_epochs == 0
        if not self.enabled or not (weights_due or image_due):
            return
        generator = pl_module.digit_generator()  # a copy: made only in an epoch that writes
        if weights_due:
            for name, net in (("generator", generator.generator), ("discriminator", pl_module.discriminator)):
                write_atomically(self.dirpath / f"{name}_epoch_{epoch}.pth", partial(torch.save, plain_state_dict(net)))
        if image_due:
            self.dirpath.mkdir(parents=True, exist_ok=True)  # when no weights were written this epoch
            n = self.rows * grid_columns(generator)
            save_sample_grid(generator, n, self.seed, self.dirpath / f"image_at_epoch_{epoch:04d}.png")


class QualityMetrics(pl.Callback):
    """At the end of every `every_n_epochs` epochs (null: none) and of the last, score `num_samples` generated digits
    (see dcgan.metrics) and log `metric/<figure>` and the `digits/<d>` shares; once, those of as many real digits, the
    floor, as `floor/<figure>`. Always from seed 0's latent points (as evaluate.py), so changes come from the model,
    not the draw; without evaluate.py's copying check, which needs the training digits' features (some seconds)."""

    def __init__(self, classifier_path: Classifier, num_samples: Samples, every_n_epochs: Count | None):
        self.classifier_path, self.num_samples, self.every_n_epochs = classifier_path, num_samples, every_n_epochs
        self.quality = None  # built on first use: it loads (or trains) the classifier
        self.scored_epoch: int | None = None  # the last epoch scored, counted from 1 (ProgressLog's epoch lines)

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        due = self.every_n_epochs and epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs  # and the end
        if not due:
            return
        self.scored_epoch = epoch
        floor = {}
        if self.quality is None:
            root, device = trainer.datamodule.root, str(pl_module.device)
            self.quality, real = quality_and_floor(self.classifier_path, root, self.num_samples, 0, False, device)
            floor = {f"floor/{name}": value for name, value in real.items() if not name.startswith("digit_")}
        scores = self.quality.score(*sample(pl_module.digit_generator(), self.num_samples, seed=0))
        metrics = {f"metric/{name}": value for name, value in scores.items() if not name.startswith("digit_")}
        metrics |= {f"digits/{d}": scores[f"digit_{d}_share"] for d in range(10)}
        pl_module.log_dict(metrics | floor, rank_zero_only=True)


class RunReport(pl.Callback):
    """When training ends, write progress.gif and curves.png into the run folder (see dcgan.reports)."""

    def __init__(self, run_dir: Folder):
        self.run_dir = Path(run_dir)

    @rank_zero_only
    def on_train_end(self, trainer, pl_module):
        for logger in trainer.loggers:
            logger.save()  # TensorBoard's flushes its event file, which write_curves reads back
        write_progress_gif(self.run_dir)
        write_curves(self.run_dir)


class ProgressLog(pl.Callback):
    """The run in train.log and on the console as the reference script printed it, also when stdout is no terminal:
    every `trainer.log_every_n_steps` steps the losses and D's mean outputs (read then only: each read waits for the
    device), at each epoch end its metric, and at the end where the outputs are and the commands that go on."""

    def __init__(self, run_dir: Folder):
        self.run_dir = Path(run_dir)
        self.started = self.epoch_started = time.monotonic()
        self.first_step, self.last_step, self.last_step_ended = 0, 0, None
        self.epoch_ends = 0.0  # seconds from an epoch's last step to the next epoch (the metric, grids, checkpoints)
        self.final_metrics = {}  # timing/: the run's seconds, its epoch ends', its steps per second without them

    def on_train_start(self, trainer, pl_module):
        self.started, self.first_step, self.last_step = time.monotonic(), pl_module.step, pl_module.step

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_started = time.monotonic()
        self.count_epoch_end()

    def count_epoch_end(self) -> None:
        if self.last_step_ended is not None:
            self.epoch_ends += time.monotonic() - self.last_step_ended
            self.last_step_ended = None

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last_step, self.last_step_ended = pl_module.step, time.monotonic()
        if not pl_module.logging_step:
            return
        values = [trainer.callback_metrics[key] for key in ("loss/d", "loss/g", "d/real", "d/fake")]
        line = "step %d, epoch %d: loss_D %.4f  loss_G %.4f  D(x) %.4f  D(G(z)) %.4f"
        log.info(line, pl_module.step, trainer.current_epoch + 1, *values)

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        line = f"epoch {epoch}/{trainer.max_epochs} ended at step {pl_module.step}, {time.monotonic() - self.epoch_started:.0f} s"
        scored = any(isinstance(c, QualityMetrics) and c.scored_epoch == epoch for c in trainer.callbacks)
        log.info("%s%s", line, self.quality(trainer) if scored else "")  # not an earlier epoch's figures

    @rank_zero_only
    def on_train_end(self, trainer, pl_module):
        self.count_epoch_end()
        elapsed = time.monotonic() - self.started
        stepping, steps = elapsed - self.epoch_ends, self.last_step - self.first_step
        rate = steps / stepping if steps and stepping > 0 else None
        self.final_metrics = {
            "timing/seconds": elapsed,
            "timing/epoch_ends_seconds": self.epoch_ends,
            "timing/steps_per_second": rate,
        }
        minutes, seconds = divmod(round(elapsed), 60)
        pace = f" ({rate:.1f} steps/s, epoch ends {self.epoch_ends:.0f} s)" if rate else ""
        lines = [
            f"Training ended at step {pl_module.step} after {minutes} min {seconds:02d} s{pace}{self.quality(trainer)}.",
            f"  sample grids: {self.run_dir / 'samples'} (progress.gif and curves.png beside them)",
        ]
        checkpoints = trainer.checkpoint_callback
        if checkpoints and checkpoints.save_last:  # EpochCheckpoints writes it just after this: Lightning runs it last
            last = Path(checkpoints.dirpath) / "last.ckpt"
            lines += [
                f"  checkpoint:   {last}",
                f"  resume:       python train.py ckpt_path={last} <this run's overrides>",
                f"  evaluate:     python evaluate.py ckpt_path={last}",
            ]
        log.info("\n".join(lines))

    @staticmethod
    def quality(trainer) -> str:
        m = trainer.callback_metrics
        if "metric/fid" not in m:
            return ""
        shares = [float(m[f"digits/{d}"]) for d in range(NUM_DIGITS)]
        rarest = min(range(NUM_DIGITS), key=shares.__getitem__)
        floor = f" (real digits: {float(m['floor/fid']):.1f})" if "floor/fid" in m else ""
        return (
            f": FID {float(m['metric/fid']):.1f}{floor}, precision {float(m['metric/precision']):.2f}, recall "
            f"{float(m['metric/recall']):.2f}, rarest digit {rarest} at {shares[rarest]:.1%}"
        )


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar with the training step's scalars (loss/*, d/*), redrawn only at logging steps and
    epoch ends: Lightning's own bar reads its values after every step, and on a GPU each read waits for it."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.logging_step or batch_idx + 1 == self.total_train_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer, pl_module):
        scalars = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("loss/", "d/"))}
        return super().get_metrics(trainer, pl_module) | scalars


class ParameterSummary(ModelSummary):
    """Lightning's table of the networks and their parameters, in the log, without its FLOPs column and total:
    Lightning counts FLOPs by running the module's `example_input_array`, which this GAN has none of (the summary
    would pass it through the data module's hooks, made for MNIST batches), so every count read 0."""

    def __init__(self, max_depth: Annotated[int, Strict(), Field(ge=-1, examples=["1"])]):  # -1: every layer
        super().__init__(max_depth=max_depth)

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, **kwargs):
        columns = [[header, *cells] for header, cells in summary_data if header != "FLOPs"]
        widths = [max(map(len, column)) for column in columns]
        table = [" | ".join(map(str.ljust, row, widths)) for row in zip(*columns, strict=True)]
        rule = "-" * (sum(widths) + 3 * (len(widths) + 1))
        counts = {"Trainable": trainable_parameters, "Non-trainable": total_parameters - trainable_parameters}
        counts["Total"] = total_parameters
        lines = [table[0], rule, *table[1:], rule]
        lines += [f"{get_human_readable_count(n):<10}{name} params" for name, n in counts.items()]
        lines += [f"{get_formatted_model_size(model_size):<10}Total estimated model params size (MB)"]
        lines += [f"{total_training_modes[mode]:<10}Modules in {mode} mode" for mode in ("train", "eval")]
        log.info("\n%s", "\n".join(lines))
