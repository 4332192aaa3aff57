"""Train a DCGAN on MNIST.

    python train.py                              # defaults from conf/config.yaml
    python train.py trainer.accelerator=gpu      # any config key can be overridden
    python train.py -m model.lr=1e-4,2e-4,4e-4   # a sweep, one run folder per value

docs/training.md and docs/configs.md have the outputs and the configs.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from dcgan import cli
from dcgan.distributed import ddp_job_scope, ddp_rank_argv, remember_job_argv
from dcgan.resume import TrainingStopped
from dcgan.schema import Train
from dcgan.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    cli.check(cfg, Train)  # every value, before anything is built or written
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


if __name__ == "__main__":
    sys.argv = ddp_rank_argv(sys.argv)  # a DDP rank > 0 of a sweep job runs that one job (dcgan/distributed.py)
    cli.run(main)
