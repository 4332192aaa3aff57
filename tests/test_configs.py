"""Every option of every config group composes, and the composed configs instantiate; the presets train."""

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
    assert isinstance(instantiate(cfg.data), MNISTDataModule)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert any(isinstance(c, SampleGrid) for c in callbacks)
    assert any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    logger = instantiate(cfg.logger)
    if cfg.trainer.accelerator in ("cpu", "auto"):  # a gpu trainer cannot be built on a machine without one
        pick_precision(cfg.trainer)  # as train.py does: `auto` becomes a precision Lightning knows
        trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
        assert isinstance(trainer, pl.Trainer)


def test_every_group_has_options():
    for group in GROUPS:
        assert group_options(group), f"conf/{group}/ is empty"


def test_accelerator_gpu_override_reaches_the_trainer():
    cfg = compose_config("trainer.accelerator=gpu")
    assert cfg.trainer.accelerator == "gpu"
    trainer_factory = instantiate(cfg.trainer, _partial_=True)
    assert trainer_factory.func is pl.Trainer
    assert trainer_factory.keywords["accelerator"] == "gpu"


def test_gpu_trainer_uses_bf16_and_cpu_trainer_uses_cpu():
    assert compose_config("trainer=gpu").trainer.precision == "bf16-mixed"
    assert compose_config("trainer=gpu").trainer.accelerator == "gpu"
    assert compose_config("trainer=cpu").trainer.accelerator == "cpu"
    assert compose_config("trainer=cpu").trainer.precision == "bf16-mixed"
    assert compose_config("trainer=ddp").trainer.strategy._target_ == "dcgan.distributed.GANDDPStrategy"


def test_seed_repro_is_the_reference_setup():
    cfg = compose_config("experiment=seed_repro")
    assert cfg.trainer.max_epochs == 150
    assert cfg.callbacks.checkpoint.every_n_epochs == 5
    assert cfg.callbacks.sample_grid.every_n_epochs == 10
    assert cfg.model.lr == 2e-4 and cfg.data.batch_size == 128
    reference = {
        "g_width": 64,
        "d_width": 64,
        "latent_dim": 100,
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "betas": [0.5, 0.999],
        "d_dropout": 0.3,
        "label_smoothing": [0.8, 1.0],
        "instance_noise_std": 0.1,
        "ema_decay": None,
        "d_minibatch_std": False,
        "d_pack": 1,
        "clusters": None,
        "info_codes": None,
    }
    # Written out in the preset itself, so that no change of conf/model/dcgan.yaml can move it.
    preset = OmegaConf.load(CONF / "experiment" / "seed_repro.yaml")
    assert {key: preset.model[key] for key in reference} == reference
    assert {key: cfg.model[key] for key in reference} == reference


@pytest.mark.parametrize("preset", [None, *group_options("experiment")])
def test_each_preset_trains_briefly_with_its_own_model(preset, mnist_root, tmp_path):
    """The default and every experiment=... preset: a few real steps, a checkpoint with the preset's
    model settings, and the metric."""
    chosen = [f"experiment={preset}"] if preset else []
    short = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.max_time=null",
        "callbacks.checkpoint.every_n_epochs=1",
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


def test_cpu_fast_preset_trains_a_conditional_gan_in_bf16(mnist_root, classifier_path, tmp_path):
    cfg = compose_config("experiment=cpu_fast")
    assert (cfg.trainer.accelerator, cfg.trainer.precision, cfg.model.num_classes) == ("cpu", "bf16-mixed", 10)
    assert cfg.trainer.max_time  # a wall-clock cap, whatever the machine
    # With an EMA generator too, to check that it trains and is saved under bf16.
    run_train(
        "experiment=cpu_fast",
        "model.ema_decay=0.9",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=6",
        "callbacks.quality.num_samples=500",
        "callbacks.sample_grid.every_n_steps=3",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
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
