"""Train a DCGAN on MNIST.

    python train.py                              # defaults from conf/config.yaml
    python train.py trainer.accelerator=gpu      # any config key can be overridden
    python train.py -m model.lr=1e-4,2e-4,4e-4   # a sweep, one run folder per value

docs/training.md and docs/configs.md have the outputs and the configs.
"""

import logging
import sys

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig
from pytorch_lightning.loggers import TensorBoardLogger

from dcgan import cli
from dcgan.data import ensure_mnist
from dcgan.distributed import ddp_job_scope, ddp_rank_argv, remember_job_argv
from dcgan.machine import keep_freed_memory, pick_precision
from dcgan.reports import log_hparams
from dcgan.resume import TrainingStopped
from dcgan.sweeps import objective, write_final_metrics
from dcgan.validation import check

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    check(cfg, "train")  # every value, before anything is built or written
    # Hydra may change the working directory (hydra.job.chdir); paths given by the user
    # are relative to where they launched the command.
    cfg.data.root = to_absolute_path(cfg.data.root)
    if cfg.ckpt_path:
        cfg.ckpt_path = to_absolute_path(cfg.ckpt_path)
    with ddp_job_scope():
        remember_job_argv(list(HydraConfig.get().overrides.task), cfg.output_dir)
        try:
            return train(cfg)
        except TrainingStopped as stop:
            raise cli.Abort(stop) from None  # a signal stops the whole command, every job of a sweep


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
    datamodule = instantiate(cfg.data)
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


if __name__ == "__main__":
    sys.argv = ddp_rank_argv(sys.argv)  # a DDP rank > 0 of a sweep job runs that one job (dcgan/distributed.py)
    cli.run(main)
