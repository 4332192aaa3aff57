"""One training run from a composed config: what train.py, the tests and the benchmarks call."""

import logging
import warnings

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import TensorBoardLogger

from dcgan.data import ensure_mnist
from dcgan.machine import keep_freed_memory, pick_precision
from dcgan.reports import log_hparams
from dcgan.sweeps import objective, write_final_metrics

log = logging.getLogger(__name__)


class DropLightningTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


# One instance: Logger.addFilter skips a filter it already has, so train() may run many times in one process.
DROP_LIGHTNING_TIP = DropLightningTip()

# Warnings a user can do nothing about, each matched by its own message (a regular expression, as
# warnings.filterwarnings takes it); tests/conftest.py gives pytest the same list.
UNACTIONABLE_WARNINGS = (
    # Lightning's own code calls its deprecated pytree API (a FutureWarning from inside the package).
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # The summary counts parameter bytes at 32 bits for bf16-mixed and 16-mixed, which is right: the weights stay fp32.
    "Precision (bf)?16-mixed is not supported by the model summary",
    # A mid-epoch resume is exact here: the data module records its position and EpochBatches resumes from it.
    "You're resuming from a checkpoint that ended before the epoch ended",
)


def quiet_lightning() -> None:
    """Keep the console to the run: Lightning's advertising tip, and the warnings a user can do nothing about
    (other warnings still show). Calling it again adds nothing."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(DROP_LIGHTNING_TIP)
    for message in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)  # an equal filter replaces the one before it


def train(cfg: DictConfig) -> float:
    """Train as `cfg` (checked, its paths absolute) says; return the objective, or raise a UserFacingError:
    MNIST that cannot be downloaded, a diverged run or a stop by signal."""
    keep_freed_memory()
    quiet_lightning()
    ensure_mnist(cfg.data.root)  # downloaded now if it must be, or a clear error before anything is built
    pick_precision(cfg.trainer, cfg.data.cache_dir)
    pl.seed_everything(cfg.seed, workers=True)
    # Plain lists, not OmegaConf ones, in the hyperparameters: checkpoints then load with weights_only=True.
    model = instantiate(cfg.model, _convert_="all")
    datamodule = instantiate(cfg.data, num_clusters=cfg.model.num_clusters, num_digits=cfg.model.num_digits)
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
