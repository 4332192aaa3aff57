"""Drawing digits from a generator (dcgan.models.DigitGenerator, as DCGAN.digit_generator and load_generator give
it): seeded samples, walks through latent space, and grids as PNG files. Training's grids and metric, generate.py,
evaluate.py, export.py and app.py all draw here: the same seed, the same digits."""

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from dcgan.errors import UserFacingError
from dcgan.files import write_atomically
from dcgan.models import DigitGenerator


class BadDigits(UserFacingError, ValueError):
    """Digits asked of a model that cannot draw them. The message says what to do instead."""


def latents(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """n standard normal latent points (n, latent_dim) from their own generator: the same for the same seed,
    whatever else has drawn from torch's global one."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def requested_digits(generator: DigitGenerator, digits, n: int) -> torch.Tensor | None:
    """The digit each of n samples is drawn as: `digits` in turn for a conditional model (None: 0-9 in turn, every
    digit equally often), None for an unconditional one, which cannot be asked for digits."""
    if not generator.num_digits:
        if digits:
            raise BadDigits(
                f"digits={list(digits)} needs a conditional GAN (trained with model=cgan), and this checkpoint's "
                "is unconditional: z alone picks its digits. Leave digits out."
            )
        return None
    digits = torch.tensor(list(digits) if digits else range(generator.num_digits))
    return digits[torch.arange(n) % len(digits)]


@torch.no_grad()
def sample(
    generator: DigitGenerator, n: int, seed: int, digits: torch.Tensor | None = None, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n digits (in [-1, 1], on the CPU) from seed `seed`'s latent points, and the digit each was drawn as:
    `digits` if given, else a conditional model's every digit equally often (None for an unconditional one)."""
    device = next(generator.parameters()).device
    z = latents(n, generator.latent_dim, seed).to(device).split(batch_size)
    digits = requested_digits(generator, None, n) if digits is None else digits
    digits_of = [None] * len(z) if digits is None else digits.to(device).split(batch_size)
    images = torch.cat([generator(*batch).float().cpu() for batch in zip(z, digits_of, strict=True)])
    return images, None if digits is None else digits.cpu()


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents z0 and z1 (D,) at fractions t (T,): (T, D). Gaussian latents
    concentrate near a sphere: walking along it, not through its inside, keeps every point typical of G's inputs."""
    omega = torch.arccos(torch.dot(z0 / z0.norm(), z1 / z1.norm()).clamp(-1, 1))
    if omega.abs() < 1e-4:  # (nearly) the same direction: the straight line is the arc
        return torch.lerp(z0, z1, t[:, None])
    return (torch.sin((1 - t) * omega)[:, None] * z0 + torch.sin(t * omega)[:, None] * z1) / torch.sin(omega)


@torch.no_grad()
def walk(
    generator: DigitGenerator, ends: torch.Tensor, steps: int, digits=None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`steps` images along the great circle between each pair of latent points in `ends` (W, 2, D), walk after walk,
    and the digit of each: a conditional model draws one digit per walk (`digits` in turn, as requested_digits gives)."""
    device, t = next(generator.parameters()).device, torch.linspace(0, 1, steps)
    z = torch.cat([slerp(a, b, t) for a, b in ends]).to(device)
    of_walks = requested_digits(generator, digits, len(ends))
    of_images = None if of_walks is None else of_walks.repeat_interleave(steps)
    return generator(z, None if of_images is None else of_images.to(device)).float().cpu(), of_images


def walks(
    generator: DigitGenerator, count: int, steps: int, seed: int, digits=None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`count` walks of `steps` images each, between pairs of seed `seed`'s latent points, and their digits."""
    return walk(generator, latents(2 * count, generator.latent_dim, seed).view(count, 2, -1), steps, digits)


def grid_columns(generator: DigitGenerator) -> int:
    """Digits per grid row: 10 for a conditional model (a column per digit, as requested_digits cycles them), else 8."""
    return 10 if generator.num_digits else 8


def grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """Images in [-1, 1] as one grid image in [0, 1], `columns` to a row, 2 pixels apart."""
    return make_grid(images, nrow=columns, normalize=True, value_range=(-1, 1), padding=2)


def save_grid(images: torch.Tensor, path: str | Path, columns: int) -> torch.Tensor:
    """The grid of `images` as a PNG file at `path`, written whole (the page's requests at once may write the same
    file while another reads it); returns the grid."""
    picture = grid(images, columns)
    write_atomically(path, lambda f: save_image(picture, f, format="png"))
    return picture


def save_sample_grid(
    generator: DigitGenerator, n: int, seed: int, path: str | Path, columns: int | None = None, digits=None
) -> torch.Tensor:
    """n digits from seed `seed` (a conditional model's: `digits` in turn, or 0-9) as a grid, `columns` to a row
    (grid_columns' by default), in a PNG file at `path`; returns the grid. The fixed noise's grids of training, the
    page's grids, the export's samples.png and generate.py's."""
    images, _ = sample(generator, n, seed, requested_digits(generator, digits, n))
    return save_grid(images, path, columns or grid_columns(generator))
