"""The GAN as a LightningModule: both networks, their optimizers, and the alternating D/G updates."""

import copy
from typing import Annotated, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pydantic import Field, Strict

from dcgan.checkpoints import CHECKPOINT_FORMAT, upgrade
from dcgan.data import TRAINING_DIGITS
from dcgan.ema import MovingAverage
from dcgan.kinds import Betas, Count, Flag, Fraction, NonNegative, Positive, Smoothing, Steps
from dcgan.models import ClusterPrior, DigitGenerator, Discriminator, Generator, init_dcgan_weights

# The hyperparameters that shape the weights and buffers in a checkpoint. The others (the learning rate,
# the tricks) may change when resuming, e.g. a lower learning rate after a divergence.
ARCHITECTURE = ("latent_dim", "g_width", "d_width", "num_digits", "num_clusters")


def instance_noise_std(step: int, initial_std: float, anneal_steps: int) -> float:
    """Std of the Gaussian noise added to D's inputs: `initial_std` at step 0, linearly down to 0 at `anneal_steps`.

    Instance noise (Sonderby et al., 2016) blurs the real and fake distributions
    early on, so that D cannot separate them perfectly and G still gets gradients.
    """
    if anneal_steps <= 0:
        return 0.0
    return initial_std * max(0.0, 1.0 - step / anneal_steps)


class DCGAN(pl.LightningModule):
    """The DCGAN networks, trained as a GAN, with the stabilisation tricks of the reference script.

    One training step is one batch: one discriminator update on real vs detached
    fake images, then one generator update with the non-saturating loss
    -log D(G(z)) (`update`). Lightning's `global_step` counts optimizer steps, so
    it advances by 2 per training step; `self.step` counts training steps.

    With `num_clusters`, both networks see each image's cluster (dcgan/models.py):
    real images come with their own (the data module finds them), and each fake
    with the one its z picks (`cluster_prior`), which the data module's shares of
    the clusters calibrate. With `num_digits` as well (a conditional GAN), the
    clusters are found within each digit, and each fake's digit is drawn uniformly.

    With `ema_decay` set, an exponential moving average of G's weights (and
    BatchNorm statistics) is kept from training step `ema_start_step` on, and is
    what grids, metrics and generation draw with. `channels_last` and
    `fused_adam` only change the speed (docs/benchmarks.md).
    """

    # Every value comes from conf/model/*.yaml. A key added later gets the default that turns it off here, so that
    # older checkpoints load without a format bump: the one exception to no defaults (docs/configs.md).
    def __init__(
        self,
        latent_dim: Count,
        g_width: Count,
        d_width: Count,
        d_dropout: Fraction,
        lr: Positive,
        betas: Betas,
        label_smoothing: Smoothing | None,
        instance_noise_std: NonNegative,
        instance_noise_anneal_steps: Steps,
        num_digits: Annotated[Literal[10], Field(examples=["10"])] | None,
        num_clusters: Annotated[int, Strict(), Field(ge=2, le=TRAINING_DIGITS, examples=["200"])] | None,
        ema_decay: Fraction | None,
        ema_start_step: Steps,
        channels_last: Flag,
        fused_adam: Flag,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.num_digits = num_digits
        self.generator = Generator(latent_dim, g_width, num_clusters)
        self.discriminator = Discriminator(d_width, d_dropout, num_clusters)
        self.cluster_prior = ClusterPrior(num_clusters, num_digits) if num_clusters else None
        self.generator.apply(init_dcgan_weights)
        self.discriminator.apply(init_dcgan_weights)
        if channels_last:
            self.to(memory_format=torch.channels_last)  # the layout oneDNN and cuDNN convolutions prefer
        # The average follows G's weights after each G step; it never trains itself (and DDP must not wrap it).
        self.generator_ema = MovingAverage(self.generator, ema_decay) if ema_decay is not None else None

    @property
    def step(self) -> int:
        """Training steps done: each is one D update plus one G update."""
        return self.global_step // 2

    @property
    def logging_step(self) -> bool:
        """Whether the step just done is one Lightning logs at (every trainer.log_every_n_steps). Only these steps,
        grid steps and epoch ends read values back from the device, which waits for it (tests/test_syncs.py)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and self.step % every == 0

    @property
    def averaging(self) -> bool:
        """Whether digits are drawn from the average of G: it has started (not before ema_start_step)."""
        return self.generator_ema is not None and self.generator_ema.started

    def digit_generator(self) -> DigitGenerator:
        """A copy of what draws the digits, in eval mode (BatchNorm's running statistics): the average of G once it
        has started, else G, with the cluster prior. Drawing from it changes nothing in the GAN."""
        generator = self.generator_ema.module if self.averaging else self.generator
        return copy.deepcopy(DigitGenerator(generator, self.cluster_prior)).eval()

    def real_targets(self, n: int) -> torch.Tensor:
        """Targets for real images: one-sided label smoothing draws each from U(low, high); off, they are all 1."""
        if self.hparams.label_smoothing is None:
            return torch.ones(n, device=self.device)
        low, high = self.hparams.label_smoothing
        return torch.empty(n, device=self.device).uniform_(low, high)

    def instance_noise(self) -> float | None:
        """This step's std of the noise on D's inputs; None when there is none (off, or annealed to 0)."""
        std = instance_noise_std(self.step, self.hparams.instance_noise_std, self.hparams.instance_noise_anneal_steps)
        return std if std > 0 else None

    @staticmethod
    def with_instance_noise(images: torch.Tensor, std: float | torch.Tensor | None) -> torch.Tensor:
        return images if std is None else images + std * torch.randn_like(images)

    def fake_clusters(self, z: torch.Tensor) -> torch.Tensor | None:
        """The cluster each fake is drawn from, as its z picks it (None without clusters): among all clusters, or
        in a conditional GAN among those of a digit drawn uniformly."""
        if self.cluster_prior is None:
            return None
        digits = torch.randint(0, self.num_digits, (len(z),), device=self.device) if self.num_digits else None
        return self.cluster_prior(z, digits)

    def training_step(self, batch, batch_idx):
        real, real_clusters = batch
        loss_d, loss_g, logits_real, logits_fake = self.update(real, real_clusters, self.instance_noise())
        if self.generator_ema is not None and self.step >= self.hparams.ema_start_step:
            self.generator_ema.update_parameters(self.generator)  # its first update copies G
        # Only at the steps Lightning writes: computing the values costs kernel launches. Not prog_bar=True: Lightning
        # would turn them into numbers after every step, waiting for the GPU (dcgan.callbacks.ProgressBar shows them).
        # Copies: under CUDA graphs (dcgan/graphs.py) the next step overwrites these tensors.
        if self.logging_step:
            self.log_dict(
                {
                    "loss/d": loss_d.detach().clone(),
                    "loss/g": loss_g.detach().clone(),
                    "d/real": torch.sigmoid(logits_real.detach()).mean(),
                    "d/fake": torch.sigmoid(logits_fake.detach()).mean(),
                }
            )

    def update(self, real: torch.Tensor, real_clusters: torch.Tensor, noise_std: float | torch.Tensor | None):
        """One D update, then one G update, on a batch of real images and their clusters (or digits, which an
        unconditional D does not see). Returns D's and G's losses and D's logits for the real and fake images.
        dcgan/graphs.py may run it as one CUDA graph: it reads no value back from the device."""
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.size(0), self.hparams.latent_dim, device=self.device)
        fake_clusters = self.fake_clusters(z)
        if fake_clusters is None:
            real_clusters = None
        fake = self.generator(z, fake_clusters)

        # Discriminator: push D(x) towards the (smoothed) real targets and D(G(z)) towards 0.
        # G's output is detached, so this step computes no gradients for G.
        with self.toggled_optimizer(opt_d):
            logits_real = self.discriminator(self.with_instance_noise(real, noise_std), real_clusters)
            logits_fake = self.discriminator(self.with_instance_noise(fake.detach(), noise_std), fake_clusters)
            loss_d = F.binary_cross_entropy_with_logits(
                logits_real, self.real_targets(logits_real.numel())
            ) + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()

        # Generator: non-saturating loss, i.e. make D call the fakes real (target 1).
        # toggled_optimizer turns off requires_grad on D's weights, so D gets no gradients here.
        with self.toggled_optimizer(opt_g):
            logits_gen = self.discriminator(self.with_instance_noise(fake, noise_std), fake_clusters)
            loss_g = F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen))
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()
        return loss_d, loss_g, logits_real, logits_fake

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dcgan_format"] = CHECKPOINT_FORMAT

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """An older checkpoint is upgraded first (dcgan/checkpoints.py). Then resume across a change of `ema_decay`:
        a checkpoint without an average starts one from its G (n_averaged = 0: the next update copies G), and an
        average this model does not keep is dropped."""
        upgrade(checkpoint)
        state = checkpoint["state_dict"]
        average_keys = [key for key in state if key.startswith("generator_ema.")]
        if self.generator_ema is None:
            for key in average_keys:
                del state[key]
        elif not average_keys:
            state.update(
                {
                    f"generator_ema.module.{key.removeprefix('generator.')}": value.clone()
                    for key, value in list(state.items())
                    if key.startswith("generator.")
                }
            )
            state["generator_ema.n_averaged"] = torch.tensor(0, dtype=torch.long)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "DCGAN":
        """The GAN saved in `checkpoint` (as dcgan.checkpoints.read_checkpoint returns it), with its weights."""
        gan = cls(**checkpoint["hyper_parameters"])
        gan.on_load_checkpoint(checkpoint)
        gan.load_state_dict(checkpoint["state_dict"])
        return gan

    def configure_optimizers(self):
        lr, betas, fused = self.hparams.lr, tuple(self.hparams.betas), self.hparams.fused_adam or None
        # fused: one kernel for all of a network's parameters instead of several per tensor.
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas, fused=fused)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas, fused=fused)
        return opt_g, opt_d

    def setup(self, stage: str) -> None:
        if self.cluster_prior is not None and stage == "fit":  # G draws each cluster as often as the data holds it
            self.cluster_prior.set_shares(self.trainer.datamodule.cluster_shares)

    def on_train_start(self) -> None:
        # A resumed run's Adam states come back with the options they were saved with: the config's win, so that a
        # resume can change them (a lower lr after a divergence, say); `capturable` is for a CUDA graph to turn on.
        for optimizer in self.optimizers():
            for group in optimizer.optimizer.param_groups:
                group.update(lr=self.hparams.lr, betas=tuple(self.hparams.betas), capturable=False)


def load_generator(checkpoint: dict) -> DigitGenerator:
    """What the GAN saved in `checkpoint` (as dcgan.checkpoints.read_checkpoint returns it) draws with
    (DCGAN.digit_generator), on the CPU."""
    return DCGAN.from_checkpoint(checkpoint).digit_generator()
