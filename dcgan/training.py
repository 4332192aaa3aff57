"""One training run from a composed config: what train.py, the tests and the benchmarks call."""

import logging

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import TensorBoardLogger

from dcgan import cli
from dcgan.data import ensure_mnist
from dcgan.machine import keep_freed_memory, pick_precision
from dcgan.reports import log_hparams
from dcgan.sweeps import objective, write_final_metrics

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float:
    """Train as `cfg` (checked, its paths absolute) says; return the objective, or raise a UserFacingError:
    MNIST that cannot be downloaded, a diverged run or a stop by signal."""
    keep_freed_memory()
    cli.quiet_lightning()
    ensure_mnist(cfg.data.root)  # downloaded now if it must be, or a clear error before anything is built
    pick_precision(cfg.trainer)
    pl.seed_everything(cfg.seed, workers=True)
    # Plain lists, not OmegaConf ones, in the hyperparameters: checkpoints then load with weights_only=True.
    model = instantiate(cfg.model, _convert_="all")
    datamodule = instantiate(cfg.data, clusters=cfg.model.clusters, num_classes=cfg.model.num_classes)
    logger = instantiate(cfg.logger)
    callbacks = [instantiate(callback) for callback in cfg.callbacks.values() if callback is not None]
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
        log_hparams(logger, cfg)

    log.info("Run folder: %s", cfg.output_dir)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    value = objective(trainer.callback_metrics)
    if trainer.is_global_zero:
        write_final_metrics(trainer, cfg.output_dir, value)
    return value
