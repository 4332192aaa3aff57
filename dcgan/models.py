"""The two networks, sized for 28x28x1 MNIST digits, optionally conditioned on the digit label.

The layouts follow the DCGAN paper (Radford et al., 2015) scaled down to
MNIST: the generator upsamples 1x1 -> 7x7 -> 14x14 -> 28x28 with transposed
convolutions, the discriminator mirrors it with strided convolutions.
With `num_classes` set they become a conditional GAN: G reads the label as a
one-hot vector next to z (Mirza & Osindero, 2014), and D is a projection
discriminator (Miyato & Koyama, 2018) that adds <embed(y), features(x)> to its logit.
Two switches in D aim at mode coverage without labels: a minibatch standard
deviation channel (Karras et al., 2018) and packing several images into one
D input (PacGAN, Lin et al., 2018). A third needs no labels either: with
`info_codes` D also has a head that guesses which of that many categories G was
given (InfoGAN, Chen et al., 2016), so that G learns to draw distinct kinds of image.
With `clusters`, z picks one of that many clusters of the training images (found from their pixels, not
their labels) and both networks see it as a conditional GAN sees the digit: G draws within a cluster,
not between two (cluster-conditioned GANs: Sage et al., 2018; Liu et al., 2020).
"""

import torch
from torch import nn

from dcgan.dropout import ByteDropout


class Generator(nn.Module):
    """Maps latents z (N, latent_dim) [and labels (N,)] to images in [-1, 1] of shape (N, 1, 28, 28).

    With `info_codes`, z also picks a category: the argmax of its first `info_codes` entries, uniform
    over the categories for Gaussian z. G reads it as a one-hot vector, so z alone still sets the image.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        width: int = 64,
        num_classes: int | None = None,
        info_codes: int | None = None,
        clusters: int | None = None,
    ):
        super().__init__()
        if info_codes is not None and not 2 <= info_codes <= latent_dim:
            raise ValueError(f"info_codes={info_codes} must be between 2 and latent_dim={latent_dim}")
        if clusters and (info_codes or num_classes):
            raise ValueError("clusters is for unconditional models without info_codes: z picks one category only")
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.info_codes = info_codes
        self.clusters = clusters
        if clusters:
            # z's first entry picks the cluster: cut at the normal quantiles of the clusters' cumulative shares,
            # each comes as often as in the data (set_cluster_shares; equally often until then).
            self.register_buffer("cluster_cuts", torch.special.ndtri(torch.arange(1, clusters) / clusters))
        in_channels = latent_dim + (num_classes or 0) + (info_codes or 0) + (clusters or 0)
        self.net = nn.Sequential(
            # z, seen as a 1x1 image -> (2*width) x 7 x 7
            nn.ConvTranspose2d(in_channels, 2 * width, kernel_size=7, stride=1, padding=0, bias=False),
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

    def code(self, z: torch.Tensor) -> torch.Tensor:
        """The category (N,) that z picks when `info_codes` or `clusters` is set."""
        if self.clusters:
            return (z[:, :1] > self.cluster_cuts).sum(dim=1)
        return z[:, : self.info_codes].argmax(dim=1)

    def set_cluster_shares(self, shares: torch.Tensor) -> None:
        """Draw each cluster as often as `shares` (clusters,) says: its share of the training digits."""
        self.cluster_cuts.copy_(torch.special.ndtri(shares.cumsum(0)[:-1].clamp(1e-6, 1 - 1e-6)))

    @staticmethod
    def one_hot(index: torch.Tensor, classes: int, like: torch.Tensor) -> torch.Tensor:
        """F.one_hot without its check that every index is in range, which waits for the GPU (tests/test_syncs.py)."""
        return (index.unsqueeze(1) == torch.arange(classes, device=index.device)).to(like.dtype)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        inputs = [z]
        if self.num_classes:
            inputs.append(self.one_hot(labels, self.num_classes, z))
        if self.info_codes or self.clusters:
            inputs.append(self.one_hot(self.code(z), self.info_codes or self.clusters, z))
        return self.net(torch.cat(inputs, dim=1).view(z.size(0), -1, 1, 1))


class MinibatchStd(nn.Module):
    """Appends one channel: the standard deviation of each feature across a group of `group_size` samples,
    averaged to one number per group. A collapsed G makes near-identical samples, so D can see it and
    G is pushed to vary (Karras et al., 2018)."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = self.group_size if n % self.group_size == 0 else n  # a ragged last batch: one group
        std = x.float().reshape(group, n // group, c, h, w).var(dim=0, unbiased=False).add(1e-8).sqrt()
        per_group = std.mean(dim=(1, 2, 3)).to(x.dtype)  # (n // group,)
        return torch.cat([x, per_group.repeat(group).view(n, 1, 1, 1).expand(n, 1, h, w)], dim=1)


class Discriminator(nn.Module):
    """Maps images (N, 1, 28, 28) [and labels (N,)] to one real-vs-fake logit each, shape (N,),
    or with `pack` > 1 to one logit per `pack` consecutive images, shape (N / pack,)."""

    def __init__(
        self,
        width: int = 64,
        dropout: float = 0.3,
        num_classes: int | None = None,
        minibatch_std: bool = False,
        pack: int = 1,
        info_codes: int | None = None,
    ):
        super().__init__()
        if pack > 1 and num_classes:
            raise ValueError("pack > 1 is for unconditional models: one label per packed input is not defined")
        self.pack = pack
        self.features = nn.Sequential(
            # No BatchNorm on the input layer (as in the DCGAN paper). PacGAN: `pack` images as channels.
            # -> width x 14 x 14
            nn.Conv2d(pack, width, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            ByteDropout(dropout),
            # -> (2*width) x 7 x 7
            nn.Conv2d(width, 2 * width, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            ByteDropout(dropout),
        )
        self.minibatch_std = MinibatchStd() if minibatch_std else nn.Identity()
        # -> 1 x 1 x 1: a logit, no sigmoid (the loss is BCE-with-logits)
        self.head = nn.Conv2d(2 * width + int(minibatch_std), 1, kernel_size=7, stride=1, padding=0)
        # Projection: one learned vector per class, dotted with the flattened features.
        self.label_projection = nn.Embedding(num_classes, 2 * width * 7 * 7) if num_classes else None
        # InfoGAN's Q: for each of the `pack` images, logits over the categorical code G was given.
        self.info_codes = info_codes
        self.code_head = nn.Conv2d(2 * width, pack * info_codes, kernel_size=7) if info_codes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, with_codes: bool = False):
        """The real-vs-fake logits; with `with_codes`, also the code logits (N, info_codes) of each image."""
        if self.pack > 1:
            x = x.reshape(x.size(0) // self.pack, self.pack, *x.shape[2:])
        h = self.features(x)
        logits = self.head(self.minibatch_std(h)).view(-1)
        if self.label_projection is not None:
            logits = logits + (self.label_projection(labels) * h.flatten(1)).sum(dim=1)
        if with_codes:
            return logits, self.code_head(h).reshape(-1, self.info_codes)
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
