"""Guards on training health: no NaN or Inf ever reaches the weights and a run that makes one stops; a warning when
D has won completely. Neither waits for the device in an ordinary step (tests/test_syncs.py)."""

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from dcgan.errors import UserFacingError
from dcgan.kinds import Count, Fraction, NonNegative

LOSSES = {"generator": "loss/g", "discriminator": "loss/d"}


class NonFiniteLossError(UserFacingError):
    """A loss or a gradient was NaN or Inf; training stopped, and no weight was updated with it."""

    def __init__(self, what: str, trainer: pl.Trainer):
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        kept = (
            f"the last good checkpoint, {last}, is kept as it was" if last else "this run had written no checkpoint yet"
        )
        super().__init__(
            f"Training stopped: {what}. No weight was updated with it, and {kept}. The run diverged: lower the "
            "learning rates (model.lr), or resume from that checkpoint with other settings."
        )


class FiniteLosses(pl.Callback):
    """Skip every update whose gradients hold a NaN or Inf (a non-finite loss makes them so), and stop the run at
    the next check with NonFiniteLossError, naming the loss and the steps since the last check. Fused Adam skips on
    the device without waiting for it (the flag is its `found_inf`, as under torch's GradScaler); with other
    optimizers every update waits for a check. The checks read the skip counts at logging steps, epoch ends and
    before any checkpoint, so no checkpoint holds a skipped update; under DDP all ranks skip alike (the gradients
    are averaged first) and agree on stopping. Under fp16 mixed precision an Inf gradient is the loss scaler's
    routine overflow, which it skips itself: there the count is of non-finite losses, which no scale cures."""

    def __init__(self):
        self.skipped: torch.Tensor | None = None  # on the device: updates skipped per optimizer since the start
        self.checked_at = -1  # the global step of the last check
        self.clean = 0  # the training steps that checks found clean
        self.loss: torch.Tensor | None = None  # under fp16 loss scaling: the loss of the coming update

    def on_train_start(self, trainer, pl_module):
        self.skipped = torch.zeros(len(trainer.optimizers), device=pl_module.device)
        self.checked_at, self.clean = -1, pl_module.step

    def on_before_backward(self, trainer, pl_module, loss):
        if trainer.scaler is not None:
            self.loss = loss.detach()  # read at the update: a later hook may still change it in place

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        index = trainer.optimizers.index(optimizer)
        if trainer.scaler is not None:  # the scaler skips this update if need be; a non-finite loss stops the run
            self.skipped[index].add_(self.loss.mul(0).nan_to_num_(1.0))
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        # A NaN or Inf anywhere makes the total norm NaN or Inf, and 0 times that NaN: 1.0 then, else 0.0.
        # Two kernels, where isfinite and a conversion take five.
        found_inf = torch.nn.utils.get_total_norm(grads).mul(0).nan_to_num_(1.0)
        self.skipped[index].add_(found_inf)
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.found_inf = found_inf  # read by the fused kernel: 1.0 skips the whole update
        else:
            self.check(trainer, pl_module, during_step=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.logging_step:
            self.check(trainer, pl_module)

    def check(self, trainer, pl_module, *hook_args, during_step: bool = False) -> None:
        """Raise NonFiniteLossError on every rank when any rank skipped an update: the one read of the counts."""
        if self.skipped is None or self.checked_at == trainer.global_step:
            return
        self.checked_at = trainer.global_step
        counts = [round(n) for n in self.skipped.tolist()]
        if not trainer.strategy.reduce_boolean_decision(any(counts), all=False):
            self.clean = pl_module.step
            return
        now = pl_module.step + during_step
        one_step = now == self.clean + 1
        losses = {id(p): LOSSES.get(name, name) for name, net in pl_module.named_children() for p in net.parameters()}
        parts = []
        for n, optimizer in zip(counts, trainer.optimizers, strict=True):
            if n:
                loss, steps = losses[id(optimizer.param_groups[0]["params"][0])], f" in {n} step{'s' * (n > 1)}"
                parts.append(f"{loss} or its gradients were NaN or Inf{'' if one_step else steps}")
        span = f"at step {now}" if one_step else f"between step {self.clean + 1} and step {now}"
        raise NonFiniteLossError(f"{' and '.join(parts) or 'a loss was NaN or Inf on another rank'} {span}", trainer)

    on_train_epoch_end = on_save_checkpoint = check  # the hooks' other arguments go to hook_args


class CollapseWarning(pl.Callback):
    """Warn once per episode when D wins completely: at every logging step over `patience` steps or more,
    D(G(z)) < `d_fake_below` and loss/g > `loss_g_above`. G then gets almost no gradient and rarely recovers.
    The values are read at logging steps only (trainer.log_every_n_steps): each read waits for the device."""

    def __init__(self, d_fake_below: Fraction, loss_g_above: NonNegative, patience: Count):
        self.d_fake_below, self.loss_g_above, self.patience = d_fake_below, loss_g_above, patience
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
                f"{loss_g:.3g} > {self.loss_g_above:.3g}, so the generator learns almost nothing. Handicap D: "
                "a higher model.instance_noise_std (or a longer model.instance_noise_anneal_steps), "
                "model.label_smoothing=[0.7,0.9], or model.d_dropout=0.3.",
                category=UserWarning,
            )
