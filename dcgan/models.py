"""The two networks, sized for 28x28x1 MNIST digits, and the rule that picks the cluster G draws.

The layouts follow the DCGAN paper (Radford et al., 2015) scaled down to
MNIST: the generator projects z to 7x7 maps, then upsamples 7x7 -> 14x14 -> 28x28
with transposed convolutions; the discriminator mirrors it with strided convolutions.

The default (model=cluster_dcgan) conditions both on clusters of the training
images, found without labels: before training, k-means groups the training
digits by their deskewed pixels (dcgan/data.py). G reads its cluster as a
one-hot vector next to z (Mirza & Osindero, 2014); D judges each image with
its cluster by projection (Miyato & Koyama, 2018), adding
<embed(cluster), features(image)> to its logit; and each fake's cluster is
picked by z's first entry (ClusterPrior), as often as the cluster holds of the
training digits, so that z alone still sets the image. Why: given its cluster,
G no longer draws the in-between shapes at the seams between digits that an
unconditional GAN draws (docs/recipe.md). With each image's digit (model=cgan) the
clusters are found within each digit, and z picks among the asked digit's.
"""

import torch
from torch import nn

from dcgan.dropout import ByteDropout


def one_hot(index: torch.Tensor, classes: int, like: torch.Tensor) -> torch.Tensor:
    """F.one_hot in `like`'s dtype, without F.one_hot's check that every index is in range, which waits for the
    GPU (tests/test_syncs.py)."""
    return (index.unsqueeze(1) == torch.arange(classes, device=index.device)).to(like.dtype)


class Project(nn.Linear):
    """(N, features) -> (N, channels, size, size): the DCGAN paper's "project and reshape", a transposed convolution
    of a 1x1 input written as the one matrix product it is (CPU deconvolution kernels are several times slower)."""

    def __init__(self, features: int, channels: int, size: int):
        super().__init__(features, channels * size * size, bias=False)
        self.maps = (channels, size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).view(-1, *self.maps)


class Generator(nn.Module):
    """Maps latents z (N, latent_dim) [and their clusters (N,), of `num_clusters`] to images in [-1, 1], (N, 1, 28, 28)."""

    def __init__(self, latent_dim: int, width: int, num_clusters: int | None):
        super().__init__()
        self.latent_dim, self.num_clusters = latent_dim, num_clusters
        self.net = nn.Sequential(
            # z [and the cluster] -> (2*width) x 7 x 7
            Project(latent_dim + (num_clusters or 0), 2 * width, size=7),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            # -> width x 14 x 14
            nn.ConvTranspose2d(2 * width, width, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            # -> 1 x 28 x 28; tanh matches the data's [-1, 1] scaling
            nn.ConvTranspose2d(width, 1, kernel_size=4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, clusters: torch.Tensor | None = None) -> torch.Tensor:
        inputs = torch.cat([z, one_hot(clusters, self.num_clusters, z)], dim=1) if self.num_clusters else z
        return self.net(inputs)


class Discriminator(nn.Module):
    """Maps images (N, 1, 28, 28) [and their clusters (N,)] to one real-vs-fake logit each, shape (N,)."""

    def __init__(self, width: int, dropout: float, num_clusters: int | None):
        super().__init__()
        self.features = nn.Sequential(
            # No BatchNorm on the input layer (as in the DCGAN paper). -> width x 14 x 14
            nn.Conv2d(1, width, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            ByteDropout(dropout),
            # -> (2*width) x 7 x 7
            nn.Conv2d(width, 2 * width, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            ByteDropout(dropout),
        )
        # -> 1 x 1 x 1: a logit, no sigmoid (the loss is BCE-with-logits)
        self.head = nn.Conv2d(2 * width, 1, kernel_size=7)
        # Projection: one learned vector per cluster, dotted with the flattened features.
        self.cluster_projection = nn.Embedding(num_clusters, 2 * width * 7 * 7) if num_clusters else None

    def forward(self, x: torch.Tensor, clusters: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        logits = self.head(h).view(-1)
        if self.cluster_projection is not None:
            logits = logits + (self.cluster_projection(clusters) * h.flatten(1)).sum(dim=1)
        return logits


def quantile_cuts(shares: torch.Tensor) -> torch.Tensor:
    """(rows, k) shares, each row summing to 1 -> (rows, k - 1): the standard normal quantiles of each row's
    cumulative shares, where z's first entry passes from one cluster to the next."""
    return torch.special.ndtri(shares.cumsum(dim=1)[:, :-1].clamp(1e-6, 1 - 1e-6))


class ClusterPrior(nn.Module):
    """The cluster (N,) that each latent point z (N, latent_dim) draws: z's first entry, standard normal, cut at
    the quantiles of the clusters' shares, so that each comes as often as it holds of the training digits (equally
    often until `set_shares`). With `num_digits`, each digit has `num_clusters / num_digits` clusters, digit d's
    numbered from d * num_clusters / num_digits, and z picks among those of the digit it is given."""

    def __init__(self, num_clusters: int, num_digits: int | None):
        super().__init__()
        self.num_digits, self.per_digit = num_digits, num_clusters // (num_digits or 1)
        rows = num_digits or 1
        self.register_buffer("cuts", quantile_cuts(torch.full((rows, self.per_digit), 1 / self.per_digit)))

    def set_shares(self, shares: torch.Tensor) -> None:
        """`shares` (num_clusters,): each cluster's share of the training digits, as the data module counted them."""
        shares = shares.view(-1, self.per_digit)
        self.cuts.copy_(quantile_cuts(shares / shares.sum(dim=1, keepdim=True)))

    def forward(self, z: torch.Tensor, digits: torch.Tensor | None = None) -> torch.Tensor:
        if digits is None:
            return (z[:, :1] > self.cuts).sum(dim=1)
        return digits * self.per_digit + (z[:, :1] > self.cuts[digits]).sum(dim=1)


class DigitGenerator(nn.Module):
    """G and its ClusterPrior: images (N, 1, 28, 28) from z (N, latent_dim) alone [and the digits (N,) asked of a
    conditional GAN, each one of num_digits]. What sampling, the metric and the exported files draw with."""

    def __init__(self, generator: Generator, prior: ClusterPrior | None):
        super().__init__()
        self.generator = generator
        self.prior = prior
        self.latent_dim, self.num_digits = generator.latent_dim, prior.num_digits if prior else None

    @classmethod
    def build(cls, latent_dim: int, g_width: int, num_clusters: int | None, num_digits: int | None) -> "DigitGenerator":
        """A new one, of the shape of a DCGAN's with these hyperparameters (export.py's generator.json has them)."""
        prior = ClusterPrior(num_clusters, num_digits) if num_clusters else None
        return cls(Generator(latent_dim, g_width, num_clusters), prior)

    def forward(self, z: torch.Tensor, digits: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, None if self.prior is None else self.prior(z, digits))


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv, linear and embedding weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02), biases 0.

    Use as `net.apply(init_dcgan_weights)`.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
