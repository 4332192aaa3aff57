"""Callbacks that show and measure training progress: sample grids, the quality metric, the run's report."""

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image

from dcgan.metrics import SampleQuality, load_classifier
from dcgan.reports import write_curves, write_progress_gif


class SampleGrid(pl.Callback):
    """Every `every_n_steps` training steps and every `every_n_epochs` epochs, draw G(fixed_noise).

    Each grid goes to `<dirpath>/step_<step>_epoch_<epoch>.png` (names sort by
    step; epoch counts from 1) and, with a TensorBoard logger, to the IMAGES tab
    under `samples`. Either trigger can be turned off with null.
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

    def write_grid(self, trainer, pl_module) -> None:
        step = pl_module.step
        if step == self._last_step or not trainer.is_global_zero:
            return
        self._last_step = step
        images = pl_module.generate(pl_module.fixed_noise, pl_module.fixed_labels)
        grid = make_grid(images, nrow=self.nrow, normalize=True, value_range=(-1, 1), padding=2)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / f"step_{step:07d}_epoch_{trainer.current_epoch + 1:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, global_step=step)


class QualityMetrics(pl.Callback):
    """At the end of every `every_n_epochs` epochs, score `num_samples` generated digits (see dcgan.metrics)
    and log them: `metric/fid`, `metric/confidence`, `metric/min_digit_share`, `digits/<d>` shares and,
    for a conditional GAN, `metric/label_accuracy`.

    The latent points are the same every time (seeded), so changes come from the model, not the draw.
    """

    def __init__(self, classifier_path: str, num_samples: int = 5000, every_n_epochs: int = 1, batch_size: int = 500):
        self.classifier_path = classifier_path
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.batch_size = batch_size
        self.quality = None  # built on first use: it loads (or trains) the classifier

    def on_train_epoch_end(self, trainer, pl_module):
        if not self.every_n_epochs or (trainer.current_epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        if self.quality is None:
            classifier = load_classifier(self.classifier_path, trainer.datamodule.root, device=str(pl_module.device))
            self.quality = SampleQuality(classifier, trainer.datamodule.root)
        images, labels = pl_module.sample(self.num_samples, seed=0, batch_size=self.batch_size)
        scores = self.quality.score(images, labels)
        metrics = {f"metric/{name}": value for name, value in scores.items() if not name.startswith("digit_")}
        metrics |= {f"digits/{d}": scores[f"digit_{d}_share"] for d in range(10)}
        pl_module.log_dict(metrics, rank_zero_only=True)


class RunReport(pl.Callback):
    """When training ends, write progress.gif and curves.png into the run folder (see dcgan.reports)."""

    def __init__(self, run_dir: str):
        self.run_dir = Path(run_dir)

    def on_train_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.save()  # flush the event file before reading it back
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.flush()
        write_progress_gif(self.run_dir)
        write_curves(self.run_dir)
