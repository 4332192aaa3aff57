"""The GAN as a LightningModule: both networks, their optimizers, and the alternating D/G updates."""

from contextlib import contextmanager, nullcontext

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dcgan.models import Discriminator, Generator, init_dcgan_weights


def instance_noise_std(step: int, initial_std: float, anneal_steps: int) -> float:
    """Std of the Gaussian noise added to D's inputs: `initial_std` at step 0, linearly down to 0 at `anneal_steps`.

    Instance noise (Sonderby et al., 2016) blurs the real and fake distributions
    early on, so that D cannot separate them perfectly and G still gets gradients.
    """
    if anneal_steps <= 0:
        return 0.0
    return initial_std * max(0.0, 1.0 - step / anneal_steps)


def balanced_labels(n: int, num_classes: int, device=None) -> torch.Tensor:
    """0, 1, ..., num_classes-1, 0, 1, ...: n labels with every class equally often (up to one)."""
    return torch.arange(n, device=device) % num_classes


SAMPLE_BN = ("running", "batch")
# model.compile: false, true (torch.compile's default mode) or one of its modes; reduce-overhead also replays
# each compiled network's kernels as CUDA graphs on a GPU (docs/benchmarks.md, "On a GPU").
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# The hyperparameters that shape the weights and buffers in a checkpoint. The others (learning rates,
# the tricks) may change when resuming, e.g. a lower learning rate after a divergence.
ARCHITECTURE = (
    "latent_dim",
    "g_width",
    "d_width",
    "num_classes",
    "num_fixed_samples",
    "d_minibatch_std",
    "d_pack",
    "info_codes",
    "clusters",
)


@contextmanager
def batch_statistics(net: nn.Module):
    """Inside, `net`'s BatchNorm layers normalise with each batch's own statistics and leave their
    running statistics untouched (no update, as if in eval mode)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.train()
        m.track_running_stats = False  # BatchNorm then passes no running buffers to F.batch_norm
    try:
        yield
    finally:
        for m, (training, track) in zip(norms, modes, strict=True):
            m.train(training)
            m.track_running_stats = track


class MovingAverage(AveragedModel):
    """torch's AveragedModel with exponential averaging of the weights and buffers (the same state and the same
    arithmetic), whose update never reads `n_averaged` back from the device: torch's own does, twice per call,
    and each read waits for the GPU. Whether the average has started is kept on the host."""

    def __init__(self, net: nn.Module, decay: float):
        super().__init__(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.requires_grad_(False)
        self.started = False

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.started = bool(self.n_averaged)  # one read per load instead of two per step

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averages, current = [*self.module.parameters(), *self.module.buffers()], [*model.parameters(), *model.buffers()]
        if not self.started:
            torch._foreach_copy_(averages, current)  # the first update copies
        else:  # floats by lerp, BatchNorm's step counters by their own rule: grouped by kind as torch does
            for floats in (True, False):
                pairs = [(a, c) for a, c in zip(averages, current, strict=True) if a.is_floating_point() == floats]
                if pairs:
                    self.multi_avg_fn(*map(list, zip(*pairs, strict=True)), None)
        self.n_averaged += 1
        self.started = True


class DCGAN(pl.LightningModule):
    """DCGAN with the stabilisation tricks of the reference script, each switchable.

    One training step is one batch: one discriminator update on real vs detached
    fake images, then one generator update with the non-saturating loss
    -log D(G(z)). Lightning's `global_step` counts optimizer steps, so it
    advances by 2 per training step; `self.step` counts training steps.
    With `num_classes` set it is a conditional GAN: both networks see the digit
    label, real images with their own and fakes with labels drawn uniformly.
    With `clusters` set it needs no labels: the data module clusters the training
    images by their pixels, and D sees real images with their cluster and fakes
    with the cluster z picked (Generator.code), each as often as in the data.

    Speed switches (docs/benchmarks.md has what each is worth): `channels_last`
    memory format, `compile` (torch.compile of both networks: True or one of
    its modes, see COMPILE_MODES), `fused_adam`.
    With `ema_decay` set, an exponential moving average of G's weights (and
    BatchNorm statistics) is kept from training step `ema_start_step` on, and is
    what grids, metrics and `generate` use. `sample_bn` says how G's BatchNorm
    normalises when sampling: "running" (its running statistics, eval mode) or
    "batch" (the statistics of the batch being drawn, as in training).
    """

    # Values come from conf/model/*.yaml, where each default lives. The keys added after the first checkpoints
    # have a default here only so that those checkpoints still load: what the model did before the key existed.
    def __init__(
        self,
        latent_dim: int,
        g_width: int,
        d_width: int,
        d_dropout: float,
        lr: float,
        betas: tuple[float, float],
        label_smoothing: tuple[float, float] | None,
        instance_noise_std: float,
        instance_noise_anneal_steps: int,
        num_fixed_samples: int,
        fixed_noise_seed: int,
        lr_g: float | None = None,  # None: lr, here and in checkpoints saved before it was set
        lr_d: float | None = None,
        num_classes: int | None = None,
        ema_decay: float | None = None,
        ema_start_step: int = 0,
        sample_bn: str = "running",
        d_minibatch_std: bool = False,
        d_pack: int = 1,
        info_codes: int | None = None,
        info_weight: float = 1.0,
        clusters: int | None = None,
        channels_last: bool = False,
        compile: bool | str = False,
        fused_adam: bool = False,
    ):
        super().__init__()
        if sample_bn not in SAMPLE_BN:
            raise ValueError(f"sample_bn={sample_bn!r} is not one of {', '.join(SAMPLE_BN)}")
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile={compile!r} is not one of {', '.join(map(str, COMPILE_MODES))}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.num_classes = num_classes
        self.generator = Generator(latent_dim, g_width, num_classes, info_codes, clusters)
        self.discriminator = Discriminator(
            d_width, d_dropout, num_classes or clusters, d_minibatch_std, d_pack, info_codes
        )
        self.generator.apply(init_dcgan_weights)
        self.discriminator.apply(init_dcgan_weights)
        if channels_last:
            self.to(memory_format=torch.channels_last)  # the layout oneDNN and cuDNN convolutions prefer
        # The average follows G's weights after each G step; it never trains itself (and DDP must not wrap it).
        self.generator_ema = MovingAverage(self.generator, ema_decay) if ema_decay is not None else None
        if compile:
            # In place (nn.Module.compile): the state_dict keys, and so checkpoints, stay those of the plain networks.
            mode = None if compile is True else compile
            self.generator.compile(mode=mode)
            self.discriminator.compile(mode=mode)
        # The same latent points every time, so that sample grids show progress rather than new draws.
        # Buffers, so they are saved in (and restored from) checkpoints.
        fixed = torch.randn(num_fixed_samples, latent_dim, generator=torch.Generator().manual_seed(fixed_noise_seed))
        self.register_buffer("fixed_noise", fixed)
        # Conditional: contiguous blocks of equal labels, so that a grid of 8 columns has one row per digit.
        fixed_labels = torch.arange(num_fixed_samples) * num_classes // num_fixed_samples if num_classes else None
        self.register_buffer("fixed_labels", fixed_labels)

    @property
    def step(self) -> int:
        """Training steps done: each is one D update plus one G update."""
        return self.global_step // 2

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels)

    @property
    def logging_step(self) -> bool:
        """Whether the step just done is one Lightning logs at (every trainer.log_every_n_steps). Only these steps,
        grid steps and epoch ends read values back from the device, which waits for it (tests/test_syncs.py)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and self.step % every == 0

    @property
    def sampling_generator(self) -> Generator:
        """The generator that draws samples: the averaged G once averaging has started, else G itself."""
        averaging = self.generator_ema is not None and self.generator_ema.started  # not before ema_start_step
        return self.generator_ema.module if averaging else self.generator

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(z) for showing or scoring (the averaged G once it has started). Drawing samples changes nothing
        in the model: BatchNorm uses its running statistics or, with sample_bn="batch", those of `z`'s batch."""
        generator = self.sampling_generator
        was_training = generator.training
        generator.eval()
        with batch_statistics(generator) if self.hparams.sample_bn == "batch" else nullcontext():
            images = generator(z, labels).float()
        generator.train(was_training)
        return images

    @torch.no_grad()
    def sample(
        self, num_samples: int, seed: int = 0, labels: torch.Tensor | None = None, batch_size: int = 500
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`num_samples` digits (in [-1, 1]) from seeded noise, and the labels they were asked for:
        `labels` if given, else, for a conditional model, every digit equally often (None otherwise)."""
        z = torch.randn(num_samples, self.hparams.latent_dim, generator=torch.Generator().manual_seed(seed))
        z = z.to(self.device)
        if self.num_classes and labels is None:
            labels = balanced_labels(num_samples, self.num_classes)
        labels = labels.to(self.device) if self.num_classes else None
        images = torch.cat(
            [
                self.generate(z[i : i + batch_size], None if labels is None else labels[i : i + batch_size])
                for i in range(0, num_samples, batch_size)
            ]
        )
        return images, labels

    def real_targets(self, n: int) -> torch.Tensor:
        """Targets for real images: one-sided label smoothing draws each from U(low, high); off, they are all 1."""
        if self.hparams.label_smoothing is None:
            return torch.ones(n, device=self.device)
        low, high = self.hparams.label_smoothing
        return torch.empty(n, device=self.device).uniform_(low, high)

    def with_instance_noise(self, images: torch.Tensor) -> torch.Tensor:
        std = instance_noise_std(self.step, self.hparams.instance_noise_std, self.hparams.instance_noise_anneal_steps)
        return images + std * torch.randn_like(images) if std > 0 else images

    def code(self, z: torch.Tensor) -> torch.Tensor:
        """The category z picks (InfoGAN's code or the cluster), by G's rule: under DDP (dcgan/distributed.py)
        the training step sees G in its wrapper, which passes on forward() only."""
        generator = self.generator.module if isinstance(self.generator, DistributedDataParallel) else self.generator
        return generator.code(z)

    def judge_fake(self, fake: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None):
        """D's logits for the fakes, and InfoGAN's loss: how badly D's code head guesses the category z picked
        (0 without `info_codes`). Both players lower it: D's head learns to read the category, G to show it."""
        fake = self.with_instance_noise(fake)
        if not self.hparams.info_codes:
            return self.discriminator(fake, labels), 0.0
        logits, code_logits = self.discriminator(fake, labels, with_codes=True)
        return logits, self.hparams.info_weight * F.cross_entropy(code_logits.float(), self.code(z))

    def training_step(self, batch, batch_idx):
        if self.hparams.compile:
            torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs may reuse the last step's outputs' memory
        real, real_labels = batch
        n = real.size(0)
        opt_g, opt_d = self.optimizers()
        if self.num_classes:
            fake_labels = torch.randint(0, self.num_classes, (n,), device=self.device)
        z = torch.randn(n, self.hparams.latent_dim, device=self.device)
        if self.hparams.clusters:  # the batch holds each real digit's cluster; z picks each fake's
            fake_labels = self.code(z)
        elif not self.num_classes:
            real_labels = fake_labels = None
        fake = self.generator(z, fake_labels)

        # Discriminator: push D(x) towards the (smoothed) real targets and D(G(z)) towards 0.
        # G's output is detached, so this step computes no gradients for G.
        with self.toggled_optimizer(opt_d):
            logits_real = self.discriminator(self.with_instance_noise(real), real_labels)
            logits_fake, info_loss = self.judge_fake(fake.detach(), z, fake_labels)
            loss_d = (
                F.binary_cross_entropy_with_logits(
                    logits_real,
                    self.real_targets(logits_real.numel()),  # N / d_pack logits with packing
                )
                + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
                + info_loss
            )
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()

        # Generator: non-saturating loss, i.e. make D call the fakes real (target 1).
        # toggled_optimizer turns off requires_grad on D's weights, so D gets no gradients here.
        with self.toggled_optimizer(opt_g):
            logits_gen, info_loss = self.judge_fake(fake, z, fake_labels)
            loss_g = F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen)) + info_loss
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()
        if self.generator_ema is not None and self.step >= self.hparams.ema_start_step:
            self.generator_ema.update_parameters(self.generator)  # its first update copies G

        # Only at the steps Lightning writes: computing the values costs kernel launches. Not prog_bar=True: Lightning
        # would turn them into numbers after every step, waiting for the GPU (dcgan.callbacks.ProgressBar shows them).
        if self.logging_step:
            self.log_dict(
                {
                    "loss/d": loss_d.detach(),
                    "loss/g": loss_g.detach(),
                    "d/real": torch.sigmoid(logits_real.detach()).mean(),
                    "d/fake": torch.sigmoid(logits_fake.detach()).mean(),
                }
            )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resume across a change of `ema_decay`: a checkpoint without an average starts one from its G
        (n_averaged = 0: the next update copies G), and an average this model does not keep is dropped."""
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

    def learning_rates(self) -> tuple[float, float]:
        """(G's, D's): `lr_g` and `lr_d`, each `lr` when not given."""
        hp = self.hparams
        return (hp.lr if hp.lr_g is None else hp.lr_g), (hp.lr if hp.lr_d is None else hp.lr_d)

    def configure_optimizers(self):
        lr_g, lr_d = self.learning_rates()
        betas, fused = tuple(self.hparams.betas), self.hparams.fused_adam or None
        # fused: one kernel for all of a network's parameters instead of several per tensor.
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr_g, betas=betas, fused=fused)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr_d, betas=betas, fused=fused)
        return opt_g, opt_d

    def setup(self, stage: str) -> None:
        if self.hparams.clusters and stage == "fit":  # the data module's clusters, and how often G draws each
            shares = self.trainer.datamodule.label_with_clusters(self.hparams.clusters)
            self.generator.set_cluster_shares(shares)
            if self.generator_ema is not None:
                self.generator_ema.module.set_cluster_shares(shares)

    def on_train_start(self) -> None:
        # A resumed run's Adam states come back with the learning rates and betas they were saved with:
        # the config's win, so that a resume can change them (a lower lr after a divergence, say).
        for optimizer, lr in zip(self.optimizers(), self.learning_rates(), strict=True):
            for group in optimizer.optimizer.param_groups:
                group["lr"], group["betas"] = lr, tuple(self.hparams.betas)


def resolve_device(name: str) -> torch.device:
    """ "auto" -> the GPU when there is one, else the CPU; any other name as torch reads it ("cpu", "cuda:1")."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
