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
from hydra.types import RunMode
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from dcgan.callbacks import quiet_lightning
from dcgan.distributed import ddp_job_scope, ddp_rank_argv, remember_job_argv
from dcgan.errors import UserFacingError
from dcgan.machine import keep_freed_memory, pick_precision
from dcgan.reports import log_hparams
from dcgan.sweeps import objective, write_final_metrics
from dcgan.validation import check_checkpoint, check_config

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    # Hydra may change the working directory (hydra.job.chdir); paths given by the user
    # are relative to where they launched the command.
    cfg.data.root = to_absolute_path(cfg.data.root)
    if cfg.ckpt_path:
        cfg.ckpt_path = to_absolute_path(cfg.ckpt_path)
    hydra_cfg = HydraConfig.get()
    with ddp_job_scope():
        remember_job_argv(list(hydra_cfg.overrides.task), cfg.output_dir)
        try:
            return train(cfg)
        except UserFacingError as err:
            if hydra_cfg.mode == RunMode.MULTIRUN and err.exit_code == 1:
                raise  # Hydra records this job as failed and goes on with the sweep
            # One paragraph, no traceback. Under DDP only rank 0 reports; the other ranks exit
            # quietly, so that Lightning does not kill rank 0 for a failed child while it reports.
            if rank_zero_only.rank == 0:
                print(f"Error: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code if rank_zero_only.rank == 0 else 0) from None


def train(cfg: DictConfig) -> float:
    """Train as `cfg` says (its paths absolute); return the objective, or raise a UserFacingError:
    bad input (before anything is written), missing MNIST, a diverged run or a stop by signal."""
    keep_freed_memory()
    quiet_lightning()
    check_config(cfg)
    pick_precision(cfg.trainer)
    pl.seed_everything(cfg.seed, workers=True)
    # Plain lists, not OmegaConf ones, in the hyperparameters: checkpoints then load with weights_only=True.
    model = instantiate(cfg.model, _convert_="all")
    if cfg.ckpt_path:
        check_checkpoint(cfg.ckpt_path, model.hparams)

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
    main()
