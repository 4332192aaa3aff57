"""Guards on training health: no NaN or Inf ever reaches the weights and a run that makes one stops; a warning when
D has won completely. Neither waits for the device in an ordinary step (tests/test_syncs.py)."""

import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from dcgan.errors import UserFacingError

LOSSES = {"generator": "loss/g", "discriminator": "loss/d"}


class NonFiniteLossError(UserFacingError):
    """A loss or a gradient was NaN or Inf; training stopped, and no weight was updated with it."""

    def __init__(self, what: str, trainer: pl.Trainer):
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        kept = f"the last good checkpoint, {last}, is kept as it was" if last else "this run had written no checkpoint yet"
        super().__init__(
            f"Training stopped: {what}. No weight was updated with it, and {kept}. The run diverged: lower the "
            "learning rates (model.lr), or resume from that checkpoint with other settings."
        )


def network_of(pl_module: pl.LightningModule, param: torch.Tensor) -> str:
    return next(name for name, child in pl_module.named_children() if any(p is param for p in child.parameters()))


class FiniteLosses(pl.Callback):
    """Skip every update whose gradients hold a NaN or Inf (a non-finite loss makes them so), and stop the run at
    the next check with NonFiniteLossError, naming the loss and the step.

    The skip is decided on the device, without waiting for it: fused Adam takes the flag as `found_inf`, as
    under torch's GradScaler, and leaves the weights, its moments and its step count as they were. Other
    optimizers cannot skip on the device, so with them every update waits for the check. The checks read the
    flags every `trainer.log_every_n_steps` steps, at epoch ends and before any checkpoint is written, so no
    checkpoint holds a skipped update. Under DDP the gradients are averaged before the check, so all ranks
    skip alike, and the ranks agree on stopping.
    """

    def __init__(self):
        self.first_bad: torch.Tensor | None = None  # on the device, per optimizer: the first step it skipped, or 0
        self.checked_at = -1  # the global step of the last check

    def on_train_start(self, trainer, pl_module):
        self.first_bad = torch.zeros(len(trainer.optimizers), dtype=torch.long, device=pl_module.device)
        self.checked_at = -1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        # A NaN or Inf anywhere makes the total norm non-finite: one fused reduction instead of one per tensor.
        bad = torch.nn.utils.get_total_norm(grads).isfinite().logical_not()
        first = self.first_bad[trainer.optimizers.index(optimizer)]
        first.masked_fill_(bad & first.eq(0), pl_module.step + 1)
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.found_inf = bad.float()  # read by the fused kernel: 1 skips the whole update
        else:
            self.check(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.logging_step:
            self.check(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self.check(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.check(trainer, pl_module)

    def check(self, trainer, pl_module) -> None:
        """Raise NonFiniteLossError on every rank when any rank skipped an update: the one read of the flags."""
        if self.first_bad is None or self.checked_at == trainer.global_step:
            return
        self.checked_at = trainer.global_step
        steps = self.first_bad.tolist()
        if not trainer.strategy.reduce_boolean_decision(any(steps), all=False):
            return
        found = [(step, network_of(pl_module, optimizer.param_groups[0]["params"][0]))
                 for step, optimizer in zip(steps, trainer.optimizers, strict=True) if step]
        if not found:
            raise NonFiniteLossError(f"a loss was NaN or Inf on another rank by step {pl_module.step}", trainer)
        step, network = min(found)
        later = f", found at the check after step {pl_module.step}" if pl_module.step > step else ""
        raise NonFiniteLossError(f"{LOSSES.get(network, network)} or its gradients were NaN or Inf at step {step}{later}",
                                 trainer)


class CollapseWarning(pl.Callback):
    """Warn once per episode when D wins completely: at every logging step over `patience` steps or more,
    D(G(z)) < `d_fake_below` and loss/g > `loss_g_above`. G then gets almost no gradient and rarely recovers.
    The values are read at logging steps only (trainer.log_every_n_steps): each read waits for the device."""

    def __init__(self, d_fake_below: float = 0.01, loss_g_above: float = -math.log(0.01), patience: int = 200):
        self.d_fake_below = d_fake_below
        self.loss_g_above = loss_g_above
        self.patience = patience
        self.streak = 0  # steps since the first of the logging steps in a row that showed it

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not pl_module.logging_step:
            return
        metrics = trainer.callback_metrics  # even the property converts the progress bar's values (Lightning)
        if "d/fake" not in metrics or "loss/g" not in metrics:
            return
        d_fake, loss_g = float(metrics["d/fake"]), float(metrics["loss/g"])
        every = trainer.log_every_n_steps
        self.streak = self.streak + every if d_fake < self.d_fake_below and loss_g > self.loss_g_above else 0
        if self.streak >= self.patience > self.streak - every:
            rank_zero_warn(
                f"Possible collapse at step {pl_module.step}: at every logged step of the last {self.streak}, the "
                f"discriminator has rejected every fake (D(G(z)) = {d_fake:.2g} < {self.d_fake_below}) and loss/g = "
                f"{loss_g:.3g} > {self.loss_g_above:.3g}, so the generator learns almost nothing. Try a lower "
                "model.lr_d, a higher model.instance_noise_std, or model.label_smoothing=[0.7,0.9].",
                category=UserWarning,
            )
