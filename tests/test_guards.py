"""A diverging run stops with the step named and its last good checkpoint untouched; a won game is reported."""

import warnings

import pytest
import pytorch_lightning as pl
import torch

from dcgan.errors import UserFacingError
from dcgan.training import train
from tests.helpers import SMALL, compose_config, load_checkpoint, run_train

# 3 epochs of 4 steps, a checkpoint at each epoch end.
SHORT = (*SMALL, "trainer.max_epochs=3")


@pytest.mark.parametrize("fused", [True, False], ids=["fused-adam", "adam"])
def test_a_nan_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(fused, mnist_root, tmp_path):
    with pytest.raises(UserFacingError) as info:
        # From step 6 on, learning rates of 1e20: the D update of step 6 blows D up, and G's loss is NaN.
        train(
            compose_config(
                *SHORT,
                f"data.root={mnist_root}",
                f"model.fused_adam={fused}",
                "+callbacks.diverge._target_=tests.probes.DivergeAt",
                "+callbacks.diverge.step=6",
                output_dir=str(tmp_path),
            )
        )
    message = str(info.value)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert str(last) in message and "\n" not in message
    if fused:  # skipped on the device, steps 6-8 (D's updates too once D is NaN), and found at the epoch end
        assert (
            "loss/g or its gradients were NaN or Inf in 3 steps and loss/d or its gradients were NaN or Inf in "
            "2 steps between step 6 and step 8"
        ) in message
    else:  # plain Adam cannot skip on the device: checked before the update
        assert "loss/g or its gradients were NaN or Inf at step 6." in message
    # Nothing was written after step 4's epoch end: last.ckpt is that one, with finite weights.
    assert {p.name for p in last.parent.iterdir()} == {"epoch_000.ckpt", "last.ckpt"}
    saved = load_checkpoint(last)
    assert saved["global_step"] == 2 * 4
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())
    assert not (tmp_path / "final_metrics.json").exists()


class NaNLossAt(pl.Callback):
    """Makes `network`'s loss NaN at training step `step` (1-based) on rank `rank`, and keeps every step's weights
    and Adam step counts in `NaNLossAt.after` (class-level, to be read after the run)."""

    after: list[dict] = []

    def __init__(self, step: int, network: str, rank: int = 0):
        self.step, self.network, self.rank = step, network, rank
        NaNLossAt.after = []

    def on_before_backward(self, trainer, pl_module, loss):
        d_step = any(p.requires_grad for p in pl_module.discriminator.parameters())  # toggled_optimizer's doing
        if pl_module.step + 1 == self.step and trainer.global_rank == self.rank and d_step == (self.network == "d"):
            loss.mul_(float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        steps = [next(iter(opt.state.values()))["step"].item() for opt in trainer.optimizers]
        NaNLossAt.after.append({"weights": {k: v.clone() for k, v in pl_module.state_dict().items()}, "adam": steps})


def stop_for_a_nan_g_loss_at_step_6(mnist_root, tmp_path, *overrides: str) -> str:
    """The message a SHORT run stops with when G's loss is NaN at step 6 only (NaNLossAt keeps each step)."""
    with pytest.raises(UserFacingError) as info:
        train(
            compose_config(
                *SHORT,
                *overrides,
                f"data.root={mnist_root}",
                "+callbacks.nan._target_=tests.test_guards.NaNLossAt",
                "+callbacks.nan.step=6",
                "+callbacks.nan.network=g",
                output_dir=str(tmp_path),
            )
        )
    return str(info.value)


def test_a_nan_gradient_is_skipped_on_the_device_and_the_next_check_stops_the_run(mnist_root, tmp_path):
    # The run goes on to the check at the epoch end, step 8.
    message = stop_for_a_nan_g_loss_at_step_6(mnist_root, tmp_path)
    assert "loss/g or its gradients were NaN or Inf in 1 step between step 6 and step 8" in message
    fifth, sixth, seventh = (NaNLossAt.after[i] for i in (4, 5, 6))
    generator = [k for k in fifth["weights"] if k.startswith("generator.")]
    discriminator = [k for k in fifth["weights"] if k.startswith("discriminator.") and "running" not in k]
    # Step 6 left G, its BatchNorm statistics aside, and G's Adam step count as they were; D trained on.
    assert all(
        torch.equal(fifth["weights"][k], sixth["weights"][k])
        for k in generator
        if "running" not in k and "num_batches" not in k
    )
    assert fifth["adam"][0] == sixth["adam"][0] == 5 and sixth["adam"][1] == 6
    assert not all(torch.equal(fifth["weights"][k], sixth["weights"][k]) for k in discriminator)
    # ... and G trained again at step 7.
    assert seventh["adam"][0] == 6 and not torch.equal(
        sixth["weights"]["generator.net.0.weight"], seventh["weights"]["generator.net.0.weight"]
    )


# fp16 mixed precision with torch's loss scaler, as on GPUs without bf16 (dcgan.machine.pick_precision). Lightning
# turns trainer.precision=16-mixed into bf16 on the CPU, so the tests hand it the plugin itself (in place of the
# atomic checkpoint writer, which these tests do not need).
FP16 = (
    "trainer.precision=null",
    "trainer.plugins=[{_target_:pytorch_lightning.plugins.precision.MixedPrecision,precision:16-mixed,device:cpu}]",
)


@pytest.mark.slow  # fp16 is emulated on a CPU, slowly
def test_fp16_loss_scaler_overflows_are_not_a_divergence(mnist_root, tmp_path):
    # The scaler starts at 2**16 and halves at each overflow, skipping that update: the guard used to stop here.
    train(compose_config(*SHORT, *FP16, f"data.root={mnist_root}", output_dir=str(tmp_path)))
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 2 * 12
    assert saved["MixedPrecision"]["scale"] < 2.0**16  # the scaler did skip updates on overflow
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())


@pytest.mark.slow
def test_fp16_a_nan_loss_still_stops_the_run(mnist_root, tmp_path):
    message = stop_for_a_nan_g_loss_at_step_6(mnist_root, tmp_path, *FP16)
    assert "loss/g or its gradients were NaN or Inf in 1 step between step 6 and step 8" in message
    sixth = NaNLossAt.after[5]["weights"]
    assert all(torch.isfinite(t).all() for t in sixth.values())
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 2 * 4


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_one_rank_makes_a_nan(mnist_root, tmp_path):
    # Rank 1's D loss is NaN at step 2; the first check is at the end of the first epoch (step 3), before its checkpoint.
    result = run_train(
        "experiment=smoke",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.limit_train_batches=3",
        "data.batch_size=16",
        "model.g_width=16",
        "model.d_width=16",
        "callbacks.quality=null",
        "+callbacks.nan._target_=tests.test_guards.NaNLossAt",
        "+callbacks.nan.step=2",
        "+callbacks.nan.network=d",
        "+callbacks.nan.rank=1",
        f"data.root={mnist_root}",
        f"output_root={tmp_path}",
        check=False,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        "Error: Training stopped: loss/d or its gradients were NaN or Inf in 1 step between step 1 and step 3"
        in result.stderr
        and "no checkpoint yet" in result.stderr
    )
    assert not list(tmp_path.glob("runs/*/checkpoints/*.ckpt"))


class FrozenGenerator(pl.Callback):
    """G learns nothing (a learning rate of 1e-12) while D learns at the configured rate: D soon wins."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # after DCGAN.on_train_start's rates
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = 1e-12


def collapse_warnings(*overrides: str, output_dir: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # (not the FutureWarnings Lightning emits every step)
        train(
            compose_config(
                *SHORT,
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=20",
                "callbacks.collapse_warning.patience=5",
                *overrides,
                output_dir=output_dir,
            )
        )
    return [str(w.message) for w in caught if "Possible collapse" in str(w.message)]


@pytest.mark.slow
def test_collapse_warning_fires_when_the_discriminator_wins_and_not_otherwise(mnist_root, tmp_path):
    # G barely learns, D learns fast with no help for G: D soon rejects every fake.
    d_wins = (
        "+callbacks.frozen_g._target_=tests.test_guards.FrozenGenerator",
        "model.lr=2e-3",
        "model.label_smoothing=null",
        "model.instance_noise_std=0",
        "model.d_dropout=0",
    )
    (warning,) = collapse_warnings(f"data.root={mnist_root}", *d_wins, output_dir=str(tmp_path / "won"))
    assert "at every logged step of the last 5, the discriminator has rejected every fake" in warning
    assert "model.instance_noise_std" in warning
    assert collapse_warnings(f"data.root={mnist_root}", output_dir=str(tmp_path / "healthy")) == []
