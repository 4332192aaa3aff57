"""Callbacks that show training progress: fixed-noise sample grids as PNG files and in TensorBoard."""

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image


class SampleGrid(pl.Callback):
    """Every `every_n_steps` training steps and every `every_n_epochs` epochs, draw G(fixed_noise).

    Each grid goes to `<dirpath>/step_<step>.png` (names sort by step) and, with a
    TensorBoard logger, to the IMAGES tab under `samples`. Either trigger can be
    turned off with null.
    """

    def __init__(self, dirpath: str, every_n_steps: int | None = 200, every_n_epochs: int | None = 1, nrow: int = 8):
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.nrow = nrow
        self._last_step = -1  # a step that ends both a 200-step interval and an epoch gets one grid

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every_n_steps and pl_module.step % self.every_n_steps == 0:
            self.write_grid(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.write_grid(trainer, pl_module)

    @torch.no_grad()
    def write_grid(self, trainer, pl_module) -> None:
        step = pl_module.step
        if step == self._last_step or not trainer.is_global_zero:
            return
        self._last_step = step
        # Eval mode: BatchNorm uses its running statistics, and drawing a grid
        # does not change them (which would make training depend on the grid schedule).
        was_training = pl_module.generator.training
        pl_module.generator.eval()
        images = pl_module.generator(pl_module.fixed_noise).float()
        pl_module.generator.train(was_training)
        grid = make_grid(images, nrow=self.nrow, normalize=True, value_range=(-1, 1), padding=2)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / f"step_{step:07d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, global_step=step)
