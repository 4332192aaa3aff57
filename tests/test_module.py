"""The GAN's LightningModule (dcgan/module.py): its training step, the stabilisation tricks (label smoothing,
instance noise, the moving average of G) and the clusters it conditions on."""

import pytest
import pytorch_lightning as pl
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dcgan.data import load_mnist_tensors, pixel_clusters
from dcgan.ema import MovingAverage
from dcgan.module import instance_noise_std
from dcgan.sampling import sample
from tests.helpers import data_module, dcgan, load_checkpoint, only_child, run_train


def quiet_trainer(steps: int, callbacks: tuple = ()) -> pl.Trainer:
    """A CPU trainer for `steps` training steps (two optimizer steps each) that writes and shows nothing."""
    return pl.Trainer(
        max_steps=2 * steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )


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
    trainer = quiet_trainer(steps=1, callbacks=[probe])
    trainer.fit(
        dcgan(g_width=16, d_width=16, num_clusters=10),
        datamodule=data_module(mnist_root, batch_size=16, num_clusters=10),
    )
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


def test_a_cluster_gan_trains_d_on_the_clusters_of_real_digits_and_g_draws_them_by_share(mnist_root):
    """model.num_clusters: no digits; D's real images carry their pixel clusters, and G picks a cluster from z."""
    model = dcgan(g_width=16, d_width=16, num_clusters=10)
    projection = model.discriminator.cluster_projection.weight.detach().clone()
    data = data_module(mnist_root, num_clusters=10)
    quiet_trainer(steps=3).fit(model, datamodule=data)
    clusters = data.train_set.tensors[1]
    assert torch.equal(clusters, pixel_clusters(load_mnist_tensors(mnist_root, train=True)[0], 10))
    assert not torch.equal(model.discriminator.cluster_projection.weight, projection)  # D learned from them
    shares = torch.bincount(clusters, minlength=10) / len(clusters)
    z = torch.randn(100_000, 100, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        torch.bincount(model.fake_clusters(z), minlength=10) / len(z), shares, atol=0.005, rtol=0
    )
    images, labels = sample(model.digit_generator(), 8, seed=0)  # unconditional to its users: z alone sets the digit
    assert images.shape == (8, 1, 28, 28) and labels is None


def test_a_conditional_gan_with_clusters_finds_them_within_each_digit_and_judges_fakes_with_the_asked_ones(
    mnist_root,
):
    """model=cgan with model.num_clusters=20: 2 clusters of each digit's training images, digit d's numbered 2d and
    2d+1; a fake asked for a digit is drawn, and judged by D, with one of that digit's clusters."""
    model = dcgan(g_width=16, d_width=16, num_digits=10, num_clusters=20)
    data = data_module(mnist_root, num_clusters=20, num_digits=10)
    quiet_trainer(steps=3).fit(model, datamodule=data)
    images, digits = load_mnist_tensors(mnist_root, train=True)
    clusters = data.train_set.tensors[1]
    assert torch.equal(clusters // 2, digits)
    sevens = digits == 7
    assert torch.equal(clusters[sevens], pixel_clusters(images[sevens], 2) + 14)
    z = torch.randn(10_000, 100, generator=torch.Generator().manual_seed(0))
    judged = model.fake_clusters(z)  # each of a digit drawn uniformly: every digit's clusters are judged
    assert set((judged // 2).tolist()) == set(range(10))
    shares = torch.bincount(clusters[sevens], minlength=20)[14:16] / sevens.sum()
    drawn = model.cluster_prior(z, torch.full((len(z),), 7))
    torch.testing.assert_close(torch.bincount(drawn - 14, minlength=2) / len(z), shares, atol=0.015, rtol=0)


class WeightsAfterEachStep(pl.Callback):
    def __init__(self):
        self.weights = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append({k: v.detach().clone() for k, v in pl_module.generator.state_dict().items()})


def test_the_average_moves_as_torchs_own_ema_and_keeps_gs_batchnorm_counters():
    g = dcgan(g_width=8, num_clusters=10).generator
    ours, torchs = MovingAverage(g, 0.9), AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):
        g(torch.randn(4, 100), torch.randint(0, 10, (4,))).sum().backward()  # new BatchNorm statistics and counts
        with torch.no_grad():
            for p in g.parameters():
                p.add_(p.grad)
        ours.update_parameters(g)
        torchs.update_parameters(g)
    for (name, a), b in zip(ours.module.state_dict().items(), torchs.module.state_dict().values(), strict=True):
        if a.is_floating_point():
            assert torch.equal(a, b), name  # bitwise
        else:
            assert torch.equal(a, g.state_dict()[name]), name  # G's step counts, which BatchNorm with momentum ignores
    assert ours.n_averaged.item() == torchs.n_averaged.item() == 3


def test_ema_generator_averages_the_weights_and_is_what_samples_come_from(mnist_root):
    probe = WeightsAfterEachStep()
    model = dcgan(g_width=16, d_width=16, num_clusters=10, ema_decay=0.75, ema_start_step=0)
    trainer = quiet_trainer(steps=3, callbacks=[probe])
    trainer.fit(model, datamodule=data_module(mnist_root, batch_size=16, num_clusters=10))
    first, second, third = (w["net.0.weight"] for w in probe.weights)
    # The first update copies G; each later one moves the average a quarter of the way to G.
    expected = 0.75 * (0.75 * first + 0.25 * second) + 0.25 * third
    torch.testing.assert_close(model.generator_ema.module.net[0].weight, expected)
    assert not torch.allclose(expected, third)
    # The BatchNorm statistics are averaged too, and the digits are drawn from the average, in eval mode.
    z, drawing = torch.randn(8, 100), model.digit_generator()
    model.generator_ema.module.eval()
    clusters = model.cluster_prior(z)
    with torch.no_grad():
        torch.testing.assert_close(drawing(z), model.generator_ema.module(z, clusters))
        assert not torch.allclose(drawing(z), model.generator.eval()(z, clusters))
    assert any(key.startswith("generator_ema.") for key in model.state_dict())  # so checkpoints keep it


def test_the_average_of_g_starts_at_ema_start_step(mnist_root):
    model = dcgan(g_width=8, d_width=8, num_clusters=10, ema_decay=0.5, ema_start_step=3)
    data = data_module(mnist_root, batch_size=16, num_clusters=10)
    trainer = quiet_trainer(steps=2)
    trainer.fit(model, datamodule=data)  # 2 training steps: before the start
    assert model.generator_ema.n_averaged.item() == 0
    z, drawing = torch.randn(4, 100), model.digit_generator()
    assert model.generator.training  # drawing leaves G training, in train mode
    model.generator.eval()
    with torch.no_grad():
        torch.testing.assert_close(drawing(z), model.generator(z, model.cluster_prior(z)))  # from G until then
    model.generator.train()
    trainer = quiet_trainer(steps=5)
    trainer.fit(model, datamodule=data)  # steps 3, 4, 5
    assert model.generator_ema.n_averaged.item() == 3


@pytest.mark.slow
def test_a_run_with_an_average_resumes_without_one_and_back(smoke_run, mnist_root, classifier_path, tmp_path):
    common = (
        "experiment=smoke",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
        "callbacks.quality=null",
    )
    averaged = smoke_run / "checkpoints" / "last.ckpt"  # the default keeps an average of G
    assert any(key.startswith("generator_ema.") for key in load_checkpoint(averaged)["state_dict"])
    run_train(
        *common,
        f"ckpt_path={averaged}",
        "model.ema_decay=null",
        "trainer.max_epochs=3",
        f"output_root={tmp_path / 'plain'}",
    )
    plain = only_child(tmp_path / "plain" / "runs") / "checkpoints" / "last.ckpt"
    assert not any(key.startswith("generator_ema.") for key in load_checkpoint(plain)["state_dict"])
    run_train(
        *common,
        f"ckpt_path={plain}",
        "model.ema_decay=0.9",
        "model.ema_start_step=0",
        "trainer.max_epochs=4",
        f"output_root={tmp_path / 'ema'}",
    )
    state = load_checkpoint(only_child(tmp_path / "ema" / "runs") / "checkpoints" / "last.ckpt")["state_dict"]
    assert state["generator_ema.n_averaged"] == 10  # started anew at the resume, then 10 steps averaged
