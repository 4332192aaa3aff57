"""Train a DCGAN on MNIST.

    python train.py                              # defaults from conf/config.yaml
    python train.py trainer.accelerator=gpu      # any config key can be overridden
    python train.py -m model.lr=1e-4,2e-4,4e-4   # a sweep, one run folder per value

See README.md for the configs and the outputs.
"""

import logging

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams

from dcgan.data import MNISTNotFoundError

log = logging.getLogger(__name__)

# The scalars that DCGAN.training_step logs; the HPARAMS tab shows them per run.
HPARAM_METRICS = ("loss/d", "loss/g", "d/real", "d/fake")


def flatten(cfg: dict, prefix: str = "") -> dict:
    """{"model": {"lr": 1e-4}} -> {"model.lr": 1e-4}; values TensorBoard cannot show become strings."""
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def log_hparams(logger: TensorBoardLogger, cfg: DictConfig) -> None:
    """Fill TensorBoard's HPARAMS tab: this run's model, data, trainer and seed settings as columns,
    next to the last value of each training scalar, so that sweep jobs can be compared in one table."""
    config = OmegaConf.to_container(cfg, resolve=True)
    shown = {key: config[key] for key in ("model", "data", "trainer", "seed")}
    writer = logger.experiment._get_file_writer()
    for summary in hparams(flatten(shown), dict.fromkeys(HPARAM_METRICS, 0.0)):
        writer.add_summary(summary)


def pick_gpu_precision(cfg: DictConfig) -> None:
    """bf16 mixed precision needs an Ampere or newer GPU; older GPUs get fp16 mixed precision instead."""
    if str(cfg.trainer.precision).startswith("bf16") and torch.cuda.is_available():
        if not torch.cuda.is_bf16_supported():
            log.warning("This GPU has no bf16 support: using precision=16-mixed instead of %s", cfg.trainer.precision)
            cfg.trainer.precision = "16-mixed"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    # Hydra may change the working directory (hydra.job.chdir); paths given by the user
    # are relative to where they launched the command.
    cfg.data.root = to_absolute_path(cfg.data.root)
    ckpt_path = to_absolute_path(cfg.ckpt_path) if cfg.ckpt_path else None
    pick_gpu_precision(cfg)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    # Plain lists, not OmegaConf ones, in the hyperparameters: checkpoints then load with weights_only=True.
    model = instantiate(cfg.model, _convert_="all")
    logger = instantiate(cfg.logger)
    callbacks = [instantiate(callback) for callback in cfg.callbacks.values() if callback is not None]
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
        log_hparams(logger, cfg)

    log.info("Run folder: %s", cfg.output_dir)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except MNISTNotFoundError as err:
        # A one-paragraph message, not a traceback: nothing is wrong with the code.
        raise SystemExit(f"Error: {err}") from None


if __name__ == "__main__":
    main()
