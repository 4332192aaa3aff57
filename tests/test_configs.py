"""Every option of every config group composes, and the composed configs instantiate; the presets train and are
what they say they are."""

import json

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dcgan.callbacks import SampleGrid
from dcgan.data import MNISTDataModule
from dcgan.machine import pick_precision
from dcgan.module import DCGAN
from tests.helpers import CONF, compose_config, load_checkpoint, only_child, run_train

GROUPS = ("trainer", "model", "data", "callbacks", "logger", "experiment")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(group, option) for group in GROUPS for option in group_options(group)])
def test_every_group_option_composes_and_instantiates(group, option, tmp_path):
    cfg = compose_config(f"{group}={option}", output_dir=str(tmp_path))
    assert isinstance(instantiate(cfg.model), DCGAN)
    assert isinstance(
        instantiate(cfg.data, num_clusters=cfg.model.num_clusters, num_digits=cfg.model.num_digits), MNISTDataModule
    )
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert any(isinstance(c, SampleGrid) for c in callbacks)
    assert any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    logger = instantiate(cfg.logger)
    if cfg.trainer.accelerator in ("cpu", "auto"):  # a gpu trainer cannot be built on a machine without one
        pick_precision(cfg.trainer, cfg.data.cache_dir)  # as train.py does: `auto` becomes a precision Lightning knows
        trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
        assert isinstance(trainer, pl.Trainer)


# The reference script users copy (dcgan_mnist.py): what experiment=reference_script must train, whatever the defaults.
REFERENCE_SCRIPT = {
    "model.latent_dim": 100,
    "model.g_width": 64,
    "model.d_width": 64,
    "model.lr": 2e-4,
    "model.betas": [0.5, 0.999],
    "model.d_dropout": 0.3,
    "model.label_smoothing": [0.8, 1.0],
    "model.instance_noise_std": 0.1,
    "model.num_digits": None,
    "model.num_clusters": None,
    "model.ema_decay": None,
    "data.batch_size": 128,
    "trainer.max_epochs": 150,
    "callbacks.checkpoint.every_n_epochs": 5,
    "callbacks.sample_grid.every_n_epochs": 10,
    "callbacks.sample_grid.every_n_steps": None,
    "callbacks.sample_grid.rows": 8,
    "callbacks.reference_files.enabled": True,
}
# The paper's DCGAN (Radford et al., 2015): experiment=dcgan_paper.
PAPER = {
    "model.lr": 2e-4,
    "model.betas": [0.5, 0.999],
    "model.d_dropout": 0.0,
    "model.label_smoothing": None,
    "model.instance_noise_std": 0.0,
    "model.num_digits": None,
    "model.num_clusters": None,
    "model.ema_decay": None,
    "data.batch_size": 128,
}


@pytest.mark.parametrize("preset, spec", [("reference_script", REFERENCE_SCRIPT), ("dcgan_paper", PAPER)])
def test_the_reference_presets_train_what_they_reproduce(preset, spec):
    cfg = compose_config(f"experiment={preset}")
    assert {key: OmegaConf.select(cfg, key) for key in spec} == spec


@pytest.mark.slow
@pytest.mark.parametrize("preset", [None, *group_options("experiment")])
def test_each_preset_trains_briefly_with_its_own_model(preset, mnist_root, classifier_path, tmp_path):
    """The default and every experiment=... preset: a few real steps, a checkpoint with the preset's
    model settings, and the metric."""
    chosen = [f"experiment={preset}"] if preset else []
    short = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.max_time=null",
        "callbacks.quality.num_samples=500",
        f"data.root={mnist_root}",
        f"output_root={tmp_path}",
    ]
    run_train(*chosen, *short)
    run = only_child(tmp_path / "runs")
    saved = load_checkpoint(run / "checkpoints" / "last.ckpt")["hyper_parameters"]
    model = OmegaConf.to_container(compose_config(*chosen).model, resolve=True)
    assert {key: saved[key] for key in model if key != "_target_"} == {
        k: v for k, v in model.items() if k != "_target_"
    }
    metrics = json.loads((run / "final_metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["metric/fid"] > 0


@pytest.mark.slow
def test_the_conditional_gan_trains_in_bf16_with_an_average(mnist_root, classifier_path, tmp_path):
    run_train(
        "model=cgan",
        "trainer.accelerator=cpu",
        "trainer.precision=bf16-mixed",
        "model.ema_decay=0.9",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=6",
        "callbacks.quality.num_samples=500",
        "callbacks.sample_grid.every_n_steps=3",
        f"data.root={mnist_root}",
        f"output_root={tmp_path}",
    )
    run = only_child(tmp_path / "runs")
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["hyper_parameters"]["ema_decay"] == 0.9
    ema = checkpoint["state_dict"]["generator_ema.module.net.0.weight"]
    assert not torch.equal(ema, checkpoint["state_dict"]["generator.net.0.weight"])
    assert ema.dtype == torch.float32  # bf16 autocast computes in bf16 but keeps the weights in fp32
    metrics = json.loads((run / "final_metrics.json").read_text())
    assert {"metric/fid", "metric/label_accuracy", "metric/min_digit_share"} <= metrics.keys()
    assert len(list((run / "samples").glob("step_*.png"))) == 2
