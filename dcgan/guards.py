"""Guards on training health: stop before a NaN or Inf reaches the weights, warn when D has won completely."""

import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from dcgan.errors import UserFacingError


class NonFiniteLossError(UserFacingError):
    """A loss or a gradient was NaN or Inf; training stopped before any weight was updated with it."""

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
    """Raise NonFiniteLossError, naming the loss and the step, when a loss or a gradient is not finite.

    The loss is checked before its backward and the gradients before the
    optimizer step, so the weights (and so the next checkpoint) never take a
    NaN in; the checkpoints already written are left as they are. Under DDP
    the ranks agree, so that all of them stop together.
    """

    def on_before_backward(self, trainer, pl_module, loss):
        finite = bool(torch.isfinite(loss).all())
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        # toggled_optimizer leaves only the stepping network's weights trainable.
        name = "loss/d" if any(p.requires_grad for p in pl_module.discriminator.parameters()) else "loss/g"
        value = f"{loss.item()}" if not finite else "not finite on another rank"
        raise NonFiniteLossError(f"{name} is {value} at step {pl_module.step + 1}", trainer)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # A NaN or Inf anywhere makes the total norm non-finite: one fused reduction instead of one per tensor.
        # Gradients are already averaged over the ranks here, so every rank sees the same.
        if params and not torch.nn.utils.get_total_norm([p.grad for p in params]).isfinite():
            raise NonFiniteLossError(
                f"a gradient of the {network_of(pl_module, params[0])} is not finite at step {pl_module.step + 1}", trainer
            )


class CollapseWarning(pl.Callback):
    """Warn once per episode when D wins completely: D(G(z)) < `d_fake_below` and loss/g > `loss_g_above`
    for `patience` steps in a row. G then gets almost no gradient and rarely recovers."""

    def __init__(self, d_fake_below: float = 0.01, loss_g_above: float = -math.log(0.01), patience: int = 200):
        self.d_fake_below = d_fake_below
        self.loss_g_above = loss_g_above
        self.patience = patience
        self.streak = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        if "d/fake" not in metrics or "loss/g" not in metrics:
            return
        d_fake, loss_g = float(metrics["d/fake"]), float(metrics["loss/g"])
        self.streak = self.streak + 1 if d_fake < self.d_fake_below and loss_g > self.loss_g_above else 0
        if self.streak == self.patience:
            rank_zero_warn(
                f"Possible collapse at step {pl_module.step}: for {self.patience} steps the discriminator has "
                f"rejected every fake (D(G(z)) = {d_fake:.2g} < {self.d_fake_below}) and loss/g = {loss_g:.3g} "
                f"> {self.loss_g_above:.3g}, so the generator learns almost nothing. Try a lower model.lr_d, "
                "a higher model.instance_noise_std, or model.label_smoothing=[0.7,0.9].",
                category=UserWarning,
            )
