"""A diverging run stops with the step named and its last good checkpoint untouched; a won game is reported."""

import warnings

import pytest
import torch

from tests.helpers import compose_config, load_checkpoint
from dcgan.errors import UserFacingError
from train import train

# 3 epochs of 4 steps, a checkpoint at each epoch end.
SHORT = (
    "experiment=smoke", "trainer.max_epochs=3", "trainer.limit_train_batches=4", "data.batch_size=16",
    "model.g_width=16", "model.d_width=16", "callbacks.sample_grid.every_n_steps=null",
    "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
)


def test_a_nan_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(mnist_root, tmp_path):
    with pytest.raises(UserFacingError) as info:
        # From step 6 on, learning rates of 1e20: the D update of step 6 blows D up, and G's loss is NaN.
        train(compose_config(*SHORT, f"data.root={mnist_root}", "+callbacks.diverge._target_=tests.probes.DivergeAt",
                             "+callbacks.diverge.step=6", output_dir=str(tmp_path)))
    message = str(info.value)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert "loss/g is nan at step 6" in message and str(last) in message and "\n" not in message
    # Nothing was written after step 4's epoch end: last.ckpt is that one, with finite weights.
    assert {p.name for p in last.parent.iterdir()} == {"epoch_000.ckpt", "last.ckpt"}
    saved = load_checkpoint(last)
    assert saved["global_step"] == 2 * 4
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())
    assert not (tmp_path / "final_metrics.json").exists()


def collapse_warnings(*overrides: str, output_dir: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # (not the FutureWarnings Lightning emits every step)
        train(compose_config(*SHORT, "trainer.max_epochs=1", "trainer.limit_train_batches=20",
                             "callbacks.collapse_warning.patience=5", *overrides, output_dir=output_dir))
    return [str(w.message) for w in caught if "Possible collapse" in str(w.message)]


def test_collapse_warning_fires_when_the_discriminator_wins_and_not_otherwise(mnist_root, tmp_path):
    # G barely learns, D learns fast with no help for G: D soon rejects every fake.
    d_wins = ("model.lr_g=1e-12", "model.lr_d=2e-3", "model.label_smoothing=null", "model.instance_noise_std=0",
              "model.d_dropout=0")
    (warning,) = collapse_warnings(f"data.root={mnist_root}", *d_wins, output_dir=str(tmp_path / "won"))
    assert "for 5 steps the discriminator has rejected every fake" in warning and "model.lr_d" in warning
    assert collapse_warnings(f"data.root={mnist_root}", output_dir=str(tmp_path / "healthy")) == []
