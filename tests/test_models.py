"""The networks (dcgan/models.py): shapes, widths, DCGAN's init, the minibatch standard deviation, packing and
InfoGAN's code. The GAN that trains them is tests/test_module.py's."""

import pytest
import torch

from dcgan.models import Discriminator, Generator
from tests.helpers import dcgan


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


def test_clusters_come_as_often_as_their_shares_and_switch_the_image_at_their_cuts():
    g = Generator(latent_dim=16, width=8, clusters=4).eval()
    shares = torch.tensor([0.1, 0.2, 0.3, 0.4])
    g.set_cluster_shares(shares)
    z = torch.randn(200_000, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.bincount(g.code(z), minlength=4) / len(z), shares, atol=0.005, rtol=0)
    # z's first entry picks the cluster: the cut between clusters 2 and 3 lies at the normal quantile of 0.6.
    z = torch.randn(1, 16).repeat(3, 1)
    z[:, 0] = torch.tensor([0.21, 0.23, 0.27])  # 2, 2, 3 (the cut is at 0.253)
    assert g.code(z).tolist() == [2, 2, 3]
    with torch.no_grad():
        images = g(z)
    within, across = (images[1] - images[0]).abs().max(), (images[2] - images[1]).abs().max()
    assert across > 10 * within  # another cluster is another input, not a nearby one
    with pytest.raises(ValueError, match="one category only"):
        Generator(latent_dim=16, clusters=4, info_codes=4)
