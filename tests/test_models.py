"""The networks, the GAN's training step and its stabilisation tricks."""

import pytest
import pytorch_lightning as pl
import torch

from dcgan.data import MNISTDataModule
from dcgan.models import Discriminator, Generator
from dcgan.module import instance_noise_std
from tests.helpers import dcgan


def quiet_trainer(steps: int) -> pl.Trainer:
    """A CPU trainer for `steps` training steps (two optimizer steps each) that writes and shows nothing."""
    return pl.Trainer(
        max_steps=2 * steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_generator_maps_latents_to_28x28_images_in_tanh_range():
    g = Generator(latent_dim=100, width=16)
    images = g(torch.randn(5, 100) * 10)  # large inputs saturate tanh but never leave [-1, 1]
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1


def test_discriminator_gives_one_logit_per_image():
    d = Discriminator(width=16, dropout=0.3)
    logits = d(torch.rand(7, 1, 28, 28) * 2 - 1)
    assert logits.shape == (7,)
    assert torch.isfinite(logits).all()


def test_widths_are_configurable():
    small, large = dcgan(g_width=8, d_width=8), dcgan(g_width=32, d_width=32)

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(small.generator) < count(large.generator)
    assert count(small.discriminator) < count(large.discriminator)


def test_dcgan_init_draws_conv_weights_from_n0_002():
    w = dcgan(g_width=64).generator.net[3].weight  # 128 -> 64 transposed conv: 131k weights
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.05)


def test_label_smoothing_targets_lie_in_the_configured_range():
    targets = dcgan(label_smoothing=(0.7, 0.9)).real_targets(10_000)
    assert targets.min() >= 0.7 and targets.max() <= 0.9
    assert targets.min() < 0.72 and targets.max() > 0.88  # drawn per sample across the range
    assert torch.equal(dcgan(label_smoothing=None).real_targets(10), torch.ones(10))


def test_instance_noise_std_anneals_linearly_to_zero():
    assert instance_noise_std(0, 0.1, 1000) == pytest.approx(0.1)
    assert instance_noise_std(250, 0.1, 1000) == pytest.approx(0.075)
    assert instance_noise_std(500, 0.1, 1000) == pytest.approx(0.05)
    assert instance_noise_std(1000, 0.1, 1000) == 0.0
    assert instance_noise_std(5000, 0.1, 1000) == 0.0
    assert instance_noise_std(0, 0.1, 0) == 0.0  # no annealing window: off


class ParameterProbe(pl.Callback):
    """Records, before each optimizer step, all weights and gradients; and all weights after each batch."""

    def __init__(self):
        self.snapshots, self.grads, self.stepped = [], [], []

    @staticmethod
    def weights(pl_module):
        return {name: p.detach().clone() for name, p in pl_module.named_parameters()}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        first_param = optimizer.param_groups[0]["params"][0]
        self.stepped.append("generator" if first_param is next(pl_module.generator.parameters()) else "discriminator")
        self.snapshots.append(self.weights(pl_module))
        self.grads.append({name: p.grad.clone() for name, p in pl_module.named_parameters() if p.grad is not None})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.snapshots.append(self.weights(pl_module))


def changed_networks(before: dict, after: dict) -> set[str]:
    return {name.split(".")[0] for name in before if not torch.equal(before[name], after[name])}


def test_d_step_changes_only_d_and_g_step_only_g(mnist_root):
    probe = ParameterProbe()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    trainer.fit(dcgan(g_width=16, d_width=16), datamodule=MNISTDataModule(mnist_root, batch_size=16))
    before_d, before_g, after_batch = probe.snapshots
    assert probe.stepped == ["discriminator", "generator"]
    grads_at_d_step, grads_at_g_step = probe.grads
    # The D step computes no gradients for G (its fakes are detached) ...
    assert {name.split(".")[0] for name in grads_at_d_step} == {"discriminator"}
    # ... and the G step adds none to D (D's weights are toggled off): D's gradients are still the D step's.
    for name, grad in grads_at_d_step.items():
        assert torch.equal(grads_at_g_step[name], grad), name
    assert any(name.startswith("generator") for name in grads_at_g_step)
    assert changed_networks(before_d, before_g) == {"discriminator"}
    assert changed_networks(before_g, after_batch) == {"generator"}
    assert trainer.global_step == 2  # Lightning counts both optimizer steps
    # toggled_optimizer restores requires_grad, so neither network is left frozen
    gan = trainer.lightning_module
    assert all(p.requires_grad for net in (gan.generator, gan.discriminator) for p in net.parameters())


def test_minibatch_std_channel_is_the_spread_within_each_group_of_four():
    d = Discriminator(width=8, dropout=0.0, minibatch_std=True)
    h = torch.randn(8, 16, 7, 7)
    out = d.minibatch_std(h)
    assert out.shape == (8, 17, 7, 7) and torch.equal(out[:, :16], h)
    # Groups are samples i, i+2, i+4, i+6 (ProGAN's layout): one value per group, the same at every pixel.
    expected = h.view(4, 2, 16, 7, 7).std(dim=0, unbiased=False).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out[:, 16, 0, 0], expected.repeat(4), rtol=1e-4, atol=1e-6)
    assert torch.equal(out[:, 16], out[:, 16, :1, :1].expand(8, 7, 7))
    identical = d.minibatch_std(torch.ones(8, 16, 7, 7))[:, 16]
    assert identical.max() < 1e-3  # a collapsed batch shows no spread
    assert d(torch.rand(6, 1, 28, 28) * 2 - 1).shape == (6,)  # a batch not divisible by 4 is one group


def test_packed_discriminator_judges_pack_images_per_logit():
    d = Discriminator(width=8, dropout=0.0, pack=2).eval()  # eval: BatchNorm must not mix the packs
    assert d.features[0].in_channels == 2
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    logits = d(x)
    assert logits.shape == (4,)
    swapped = x.clone()
    swapped[[0, 1]] = x[[2, 3]]  # the first pack now holds the second pack's images
    assert torch.equal(d(swapped)[0], logits[1])
    with pytest.raises(ValueError, match="unconditional"):
        Discriminator(width=8, pack=2, num_classes=10)


def test_infogan_code_is_the_argmax_of_zs_first_entries_and_changes_the_image():
    g = Generator(latent_dim=16, width=8, info_codes=4).eval()
    z = torch.randn(6, 16)
    z[:, :4] = torch.eye(4)[[0, 1, 2, 3, 0, 1]] * 5
    assert g.code(z).tolist() == [0, 1, 2, 3, 0, 1]
    assert g.net[0].in_channels == 16 + 4  # z, then the code as a one-hot vector
    other = z.clone()
    other[:, :4] = other[:, :4].roll(1, dims=1)  # the same numbers, another argmax
    assert not torch.allclose(g(z), g(other))
    with pytest.raises(ValueError, match="info_codes=20"):
        Generator(latent_dim=16, info_codes=20)


def test_infogan_head_gives_code_logits_per_image_also_when_packed():
    d = Discriminator(width=8, dropout=0.0, pack=2, info_codes=10).eval()
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    logits, code_logits = d(x, with_codes=True)
    assert logits.shape == (4,) and code_logits.shape == (8, 10)
    assert torch.equal(d(x), logits)  # the real-vs-fake logit does not depend on asking for codes
    swapped = x.clone()
    swapped[[0, 1]] = x[[2, 3]]  # the first pack now holds the second pack's images: so do its code rows
    torch.testing.assert_close(d(swapped, with_codes=True)[1][:2], code_logits[2:4])


def test_infogan_training_teaches_d_to_read_the_code_g_was_given(mnist_root):
    """Without labels: after 150 real steps D's code head guesses G's category far above chance (1 in 4)."""
    torch.manual_seed(0)
    model = dcgan(
        g_width=16, d_width=16, d_dropout=0.0, lr=1e-3, betas=(0.0, 0.99), label_smoothing=None, d_pack=2, info_codes=4
    )
    trainer = quiet_trainer(steps=150)
    trainer.fit(model, datamodule=MNISTDataModule(mnist_root, batch_size=32))
    z = torch.randn(512, 100)
    with torch.no_grad():
        _, code_logits = model.discriminator.eval()(model.generator.eval()(z), with_codes=True)
    accuracy = (code_logits.argmax(1) == model.generator.code(z)).float().mean().item()
    assert accuracy > 0.8


def test_sampling_with_batch_statistics_leaves_the_running_statistics_alone():
    torch.manual_seed(0)
    model = dcgan(g_width=8, d_width=8, sample_bn="batch")
    norm = model.generator.net[1]
    norm.running_mean.fill_(3.0)  # far from any batch's mean, so the two modes differ
    before = {name: buffer.clone() for name, buffer in model.generator.named_buffers()}
    z = torch.randn(16, 100)
    batch_mode = model.generate(z)
    assert all(torch.equal(before[name], buffer) for name, buffer in model.generator.named_buffers())
    assert model.generator.training and norm.track_running_stats  # restored
    model.generator.train()
    torch.testing.assert_close(batch_mode, model.generator(z))  # what training mode computes
    model.hparams.sample_bn = "running"
    assert not torch.allclose(model.generate(z), batch_mode, atol=1e-3)


def test_the_average_of_g_starts_at_ema_start_step(mnist_root):
    model = dcgan(g_width=8, d_width=8, ema_decay=0.5, ema_start_step=3)
    data = MNISTDataModule(mnist_root, batch_size=16)
    trainer = quiet_trainer(steps=2)
    trainer.fit(model, datamodule=data)  # 2 training steps: before the start
    assert model.generator_ema.n_averaged.item() == 0
    z = torch.randn(4, 100)
    model.generator.eval()
    torch.testing.assert_close(model.generate(z), model.generator(z))  # samples come from G until then
    trainer = quiet_trainer(steps=5)
    trainer.fit(model, datamodule=data)  # steps 3, 4, 5
    assert model.generator_ema.n_averaged.item() == 3
