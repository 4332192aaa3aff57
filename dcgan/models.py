"""The two networks, sized for 28x28x1 MNIST digits, optionally conditioned on a class of digits.

The layouts follow the DCGAN paper (Radford et al., 2015) scaled down to
MNIST: the generator upsamples 1x1 -> 7x7 -> 14x14 -> 28x28 with transposed
convolutions, the discriminator mirrors it with strided convolutions.

Conditioning has one path. A class of digits is read by G as a one-hot vector
next to z (Mirza & Osindero, 2014) and by D as a projection (Miyato & Koyama,
2018): D adds <embed(class), features(image)> to its logit. The class is the
digit label in a conditional GAN (`num_classes`), or a cluster of the training
images (`clusters`), which z picks (cluster-conditioned GANs: Sage et al., 2018;
Liu et al., 2020): among all clusters in an unconditional GAN, so that z alone
still sets the image, and among the asked digit's clusters in a conditional one.
"""

import torch
from torch import nn

from dcgan.dropout import ByteDropout


def one_hot(index: torch.Tensor, classes: int, like: torch.Tensor) -> torch.Tensor:
    """F.one_hot in `like`'s dtype, without F.one_hot's check that every index is in range, which waits for the
    GPU (tests/test_syncs.py)."""
    return (index.unsqueeze(1) == torch.arange(classes, device=index.device)).to(like.dtype)


class Generator(nn.Module):
    """Maps latents z (N, latent_dim) [and digits (N,)] to images in [-1, 1] of shape (N, 1, 28, 28).

    `num_classes`: G draws the digit it is given. `clusters`: G draws one of that many clusters, which z's first
    entry picks (`cluster_of`); with both, each digit has `clusters / num_classes` of them, clusters
    d * per_digit to (d + 1) * per_digit - 1 for digit d, and z picks among the given digit's.
    """

    def __init__(self, latent_dim: int, width: int, num_classes: int | None, clusters: int | None):
        super().__init__()
        self.latent_dim = latent_dim
        self.clusters = clusters
        self.classes = clusters or num_classes
        if clusters:
            # z's first entry is cut at the normal quantiles of the clusters' cumulative shares (within the digit),
            # so that each comes as often as in the data (set_cluster_shares; equally often until then).
            self.per_digit = clusters // (num_classes or 1)
            cuts = torch.special.ndtri(torch.arange(1, self.per_digit) / self.per_digit)
            self.register_buffer("cluster_cuts", cuts.repeat(num_classes, 1) if num_classes else cuts)
        self.net = nn.Sequential(
            # z [and the class], seen as a 1x1 image -> (2*width) x 7 x 7
            nn.ConvTranspose2d(latent_dim + (self.classes or 0), 2 * width, kernel_size=7, bias=False),
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

    def cluster_of(self, z: torch.Tensor, digits: torch.Tensor | None = None) -> torch.Tensor:
        """The cluster (N,) that each z picks: of all clusters, or of the given digit's (N,)."""
        if digits is None:
            return (z[:, :1] > self.cluster_cuts).sum(dim=1)
        return digits * self.per_digit + (z[:, :1] > self.cluster_cuts[digits]).sum(dim=1)

    def set_cluster_shares(self, shares: torch.Tensor) -> None:
        """Draw each cluster as often as `shares` (clusters,) says: its share of the training digits (of its
        digit's, in a conditional GAN)."""
        shares = shares.view(-1, self.per_digit)
        shares = shares / shares.sum(dim=1, keepdim=True)
        cuts = torch.special.ndtri(shares.cumsum(dim=1)[:, :-1].clamp(1e-6, 1 - 1e-6))
        self.cluster_cuts.copy_(cuts.view_as(self.cluster_cuts))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        classes = self.cluster_of(z, labels) if self.clusters else labels  # labels: the digits asked for
        inputs = torch.cat([z, one_hot(classes, self.classes, z)], dim=1) if self.classes else z
        return self.net(inputs.view(z.size(0), -1, 1, 1))


class Discriminator(nn.Module):
    """Maps images (N, 1, 28, 28) [and classes (N,)] to one real-vs-fake logit each, shape (N,)."""

    def __init__(self, width: int, dropout: float, classes: int | None):
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
        # Projection: one learned vector per class, dotted with the flattened features.
        self.class_projection = nn.Embedding(classes, 2 * width * 7 * 7) if classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        logits = self.head(h).view(-1)
        if self.class_projection is not None:
            logits = logits + (self.class_projection(labels) * h.flatten(1)).sum(dim=1)
        return logits


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights and embeddings ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02), biases 0.

    Use as `net.apply(init_dcgan_weights)`.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
