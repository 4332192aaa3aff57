"""Every option of every config group composes, and the composed configs instantiate."""

import json

import pytest
import pytorch_lightning as pl
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


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({"avx512_bf16"}, "bf16-mixed"),
        ({"amx_bf16"}, "bf16-mixed"),
        ({"avx512f", "avx2"}, "32-true"),
        (set(), "32-true"),
    ],
)
def test_default_precision_is_bf16_only_on_cpus_with_bf16_instructions(flags, expected, monkeypatch):
    monkeypatch.setattr("dcgan.machine.cpu_flags", lambda: flags)
    trainer_cfg = compose_config("trainer.accelerator=cpu").trainer
    assert trainer_cfg.precision == "auto"
    pick_precision(trainer_cfg)
    assert trainer_cfg.precision == expected
    explicit = compose_config("trainer.accelerator=cpu", "trainer.precision=32-true").trainer
    pick_precision(explicit)
    assert explicit.precision == "32-true"  # a precision the user gave stays as given


def test_lr_sets_both_learning_rates_unless_each_is_given():
    assert instantiate(compose_config("model.lr=1e-3").model).learning_rates() == (1e-3, 1e-3)
    cfg = compose_config("model.lr=1e-3", "model.lr_d=4e-4")
    opt_g, opt_d = instantiate(cfg.model).configure_optimizers()
    assert opt_g.param_groups[0]["lr"] == 1e-3 and opt_d.param_groups[0]["lr"] == 4e-4
    assert opt_g.param_groups[0]["betas"] == tuple(cfg.model.betas)


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
