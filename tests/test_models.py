"""The networks (dcgan/models.py): shapes, widths, DCGAN's init, and their one conditioning path, a cluster that z
picks [among a digit's]. The GAN that trains them is tests/test_module.py's."""

import pytest
import torch

from dcgan.models import ClusterPrior, DigitGenerator, Discriminator, Generator, Project
from tests.helpers import dcgan


def test_generator_maps_latents_to_28x28_images_in_tanh_range():
    g = Generator(latent_dim=100, width=16, num_clusters=None)
    images = g(torch.randn(5, 100) * 10)  # large inputs saturate tanh but never leave [-1, 1]
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1


def test_the_projection_is_the_transposed_convolution_of_a_1x1_input_that_it_replaces():
    project = Project(features=12, channels=5, size=7)
    as_conv = project.weight.T.reshape(12, 5, 7, 7)  # ConvTranspose2d's (in, out, 7, 7): the same numbers
    z = torch.randn(3, 12)
    expected = torch.nn.functional.conv_transpose2d(z.view(3, 12, 1, 1), as_conv)
    torch.testing.assert_close(project(z), expected)
    assert project(z).shape == (3, 5, 7, 7)


def test_discriminator_gives_one_logit_per_image():
    d = Discriminator(width=16, dropout=0.3, num_clusters=None)
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


def test_a_generator_draws_the_cluster_it_is_given_and_d_projects_it():
    g = Generator(latent_dim=16, width=8, num_clusters=10).eval()
    assert g.net[0].in_features == 16 + 10  # z, then the cluster as a one-hot vector
    z = torch.randn(1, 16).repeat(2, 1)
    with torch.no_grad():
        three, seven = g(z, torch.tensor([3, 7]))
    assert (three - seven).abs().max() > 1e-3  # the same z, another cluster
    d = Discriminator(width=8, dropout=0.0, num_clusters=10).eval()
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        plain = d.head(d.features(x)).view(-1)  # the logit without the projection
        features = d.features(x).flatten(1)
        projected = plain + (d.cluster_projection(torch.tensor([3, 7])) * features).sum(dim=1)
        torch.testing.assert_close(d(x, torch.tensor([3, 7])), projected)


def test_z_picks_each_cluster_as_often_as_its_share_and_switches_the_image_at_its_cuts():
    prior, g = ClusterPrior(num_clusters=4, num_digits=None), Generator(latent_dim=16, width=8, num_clusters=4).eval()
    shares = torch.tensor([0.1, 0.2, 0.3, 0.4])
    prior.set_shares(shares)
    z = torch.randn(200_000, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.bincount(prior(z), minlength=4) / len(z), shares, atol=0.005, rtol=0)
    # z's first entry picks the cluster: the cut between clusters 2 and 3 lies at the normal quantile of 0.6.
    z = torch.randn(1, 16).repeat(3, 1)
    z[:, 0] = torch.tensor([0.21, 0.23, 0.27])  # 2, 2, 3 (the cut is at 0.253)
    assert prior(z).tolist() == [2, 2, 3]
    with torch.no_grad():
        images = DigitGenerator(g, prior)(z)  # what sampling draws with: G given the cluster z picks
        inputs = torch.cat([z, torch.eye(4)[[2, 2, 3]]], dim=1)  # z, then its cluster as a one-hot vector
        torch.testing.assert_close(images, g.net(inputs))
    within, across = (images[1] - images[0]).abs().max(), (images[2] - images[1]).abs().max()
    assert across > 10 * within  # another cluster is another input, not a nearby one


def test_with_digits_z_picks_among_the_given_digits_clusters_by_their_shares():
    """Each digit has clusters/digits clusters (digit d's are d*per_digit on), and z picks among the asked digit's,
    as often as each holds of that digit's training images."""
    prior = ClusterPrior(num_clusters=6, num_digits=2)
    prior.set_shares(torch.tensor([0.05, 0.15, 0.3, 0.1, 0.1, 0.3]))  # digit 0: 0.1/0.3/0.6 of its own
    z = torch.randn(200_000, 16, generator=torch.Generator().manual_seed(0))
    for digit, expected in ((0, [0.1, 0.3, 0.6]), (1, [0.2, 0.2, 0.6])):
        clusters = prior(z, torch.full((len(z),), digit))
        shares = torch.bincount(clusters - 3 * digit, minlength=3) / len(z)
        assert clusters.min() >= 3 * digit and clusters.max() < 3 * (digit + 1)
        torch.testing.assert_close(shares, torch.tensor(expected), atol=0.005, rtol=0)
    g = Generator(latent_dim=16, width=8, num_clusters=6).eval()
    z = torch.randn(1, 16).repeat(2, 1)
    with torch.no_grad():
        zero, one = DigitGenerator(g, prior)(z, torch.tensor([0, 1]))
        inputs = torch.cat([z, torch.eye(6)[prior(z, torch.tensor([0, 1]))]], dim=1)
        torch.testing.assert_close(torch.stack([zero, one]), g.net(inputs))
