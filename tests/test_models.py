"""The networks, the GAN's training step and its stabilisation tricks."""

import pytest
import pytorch_lightning as pl
import torch

from dcgan.data import MNISTDataModule
from dcgan.models import Discriminator, Generator
from dcgan.module import DCGAN, instance_noise_std


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
    small, large = DCGAN(g_width=8, d_width=8), DCGAN(g_width=32, d_width=32)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(small.generator) < count(large.generator)
    assert count(small.discriminator) < count(large.discriminator)


def test_dcgan_init_draws_conv_weights_from_n0_002():
    w = DCGAN(g_width=64).generator.net[3].weight  # 128 -> 64 transposed conv: 131k weights
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.05)


def test_label_smoothing_targets_lie_in_the_configured_range():
    targets = DCGAN(label_smoothing=(0.7, 0.9)).real_targets(10_000)
    assert targets.min() >= 0.7 and targets.max() <= 0.9
    assert targets.min() < 0.72 and targets.max() > 0.88  # drawn per sample across the range
    assert torch.equal(DCGAN(label_smoothing=None).real_targets(10), torch.ones(10))


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
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[probe],
    )
    trainer.fit(DCGAN(g_width=16, d_width=16), datamodule=MNISTDataModule(mnist_root, batch_size=16))
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
    assert all(p.requires_grad for p in trainer.lightning_module.parameters())


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bf16: what it sees under trainer=cpu
def test_byte_dropout_drops_p_rounded_to_256ths_and_rescales_the_rest(memory_format, dtype):
    from dcgan.models import ByteDropout

    torch.manual_seed(0)
    dropout = ByteDropout(0.3)
    x = torch.rand(64, 32, 14, 14).add_(1).to(dtype).contiguous(memory_format=memory_format).requires_grad_()
    y = dropout(x)
    assert y.dtype == dtype
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 77 / 256) < 0.003  # 0.3 rounded to 77/256; 400k draws: std 0.0007
    assert y.is_contiguous(memory_format=memory_format)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * (256 / 179))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.to(dtype) * (256 / 179))
    # A new mask each call; none in eval mode.
    assert not torch.equal(dropout(x) != 0, kept)
    assert torch.equal(dropout.eval()(x), x)
