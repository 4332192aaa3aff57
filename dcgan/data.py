"""MNIST as a LightningDataModule: the digits in memory, scaled to [-1, 1] on the device, each with its digit or
cluster; the order of each epoch's batches a function of (seed, epoch, rank) alone, so that a resumed run sees
the same batches as one that never stopped.
"""

import hashlib
import logging
import socket
from pathlib import Path
from typing import Annotated

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from torchvision.datasets import MNIST

from dcgan.errors import BadInput, UserFacingError
from dcgan.files import write_atomically
from dcgan.kinds import Count, Folder, Seed, writing_problem

log = logging.getLogger(__name__)

# What torchvision.datasets.MNIST reads, under <root>/MNIST/raw/:
# name -> (magic number, header bytes, items, bytes per item) of each idx file.
MNIST_LAYOUT = {
    "train-images-idx3-ubyte": (2051, 16, 60_000, 28 * 28),
    "train-labels-idx1-ubyte": (2049, 8, 60_000, 1),
    "t10k-images-idx3-ubyte": (2051, 16, 10_000, 28 * 28),
    "t10k-labels-idx1-ubyte": (2049, 8, 10_000, 1),
}
MNIST_FILES = tuple(MNIST_LAYOUT)
TRAINING_DIGITS = MNIST_LAYOUT["train-images-idx3-ubyte"][2]
DOWNLOAD_TIMEOUT_S = 15  # per connection; an offline machine should fail in seconds, not hang


class MNISTNotFoundError(UserFacingError):
    """MNIST is neither on disk nor downloadable. The message says what to do."""


def mnist_file_problem(root: str | Path) -> str | None:
    """What is wrong with the MNIST files already under `root`/MNIST/raw (a wrong magic number, a wrong
    length), in one paragraph with the fix; None when each is right or missing (missing ones get downloaded)."""
    for name, (magic, header, items, item_bytes) in MNIST_LAYOUT.items():
        path = Path(root) / "MNIST" / "raw" / name
        if not path.is_file():
            continue
        with open(path, "rb") as f:
            found = int.from_bytes(f.read(4), "big")
        size, expected = path.stat().st_size, header + items * item_bytes
        if found != magic:
            problem = f"is not the MNIST file of that name: it starts with magic number {found}, not {magic}"
        elif size != expected:
            problem = f"is truncated or padded: {size} bytes instead of {expected} ({items} items)"
        else:
            continue
        fix = "Replace it with the original (uncompressed) file, or delete it so that it is downloaded again."
        return f"{path} {problem}. {fix}"
    return None


def mnist_root(value: str) -> str:
    """A folder holding MNIST/raw/ with the right files, or where they can be downloaded."""
    if problem := mnist_file_problem(value):
        raise BadInput(problem)
    raw = Path(value) / "MNIST" / "raw"
    if not all((raw / name).is_file() for name in MNIST_LAYOUT) and (problem := writing_problem(raw)):
        raise ValueError(
            f"it holds no MNIST files and they cannot be downloaded there ({problem}). Point {{key}} at the folder "
            "that holds MNIST/raw/, e.g. {key}=../shared/data, or at one you can write"
        )
    return value


MnistRoot = Annotated[str, AfterValidator(mnist_root), Field(examples=["../shared/data"])]


def ensure_mnist(root: str | Path) -> None:
    """Make sure the four MNIST files are under `root`/MNIST/raw, downloading them (only) when they are not; raise
    MNISTNotFoundError, saying how to fix it, when the download fails."""
    if all((Path(root) / "MNIST" / "raw" / name).is_file() for name in MNIST_FILES):
        return
    root = Path(root).resolve()
    missing = "does not exist" if not root.exists() else "holds no MNIST/raw/ with the four files"
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        for train in (True, False):
            MNIST(root, train=train, download=True)
    except Exception as err:  # urllib, socket and torchvision all raise their own kinds
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise MNISTNotFoundError(
            f"MNIST is not in {root / 'MNIST' / 'raw'} (data.root={root} {missing}) and could not be downloaded ({reason}). "
            f"Either run again with internet access, or put the four files {', '.join(MNIST_FILES)} "
            f"(uncompressed) into {root / 'MNIST' / 'raw'}, or point data.root at the folder that "
            f"already holds MNIST/raw/ with them, e.g. `python train.py data.root=../shared/data`."
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


def load_mnist_tensors(root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole MNIST split as tensors: images uint8 (N, 28, 28), 0 = background, 255 = ink; labels int64 (N,)."""
    dataset = MNIST(root, train=train)
    return dataset.data, dataset.targets


def deskewed(images: torch.Tensor) -> torch.Tensor:
    """uint8 digits (N, 28, 28) -> float (N, 28, 28) in [0, 1], each sheared so that its ink's principal axis is
    upright and moved so that its centre of mass is the image's centre: the classic moment-based deskewing of
    MNIST. Then a digit's shape, not its slant, decides which digits it lies near: a 4 leaning like a 9 is the
    commonest mistake of clusters of the raw pixels."""
    x = images.float() / 255
    n, h, w = x.shape
    rows = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    columns = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    mass = x.sum(dim=(1, 2)).clamp(min=1e-6)
    row_mean, column_mean = (x * rows).sum(dim=(1, 2)) / mass, (x * columns).sum(dim=(1, 2)) / mass
    dy, dx = rows - row_mean.view(n, 1, 1), columns - column_mean.view(n, 1, 1)
    shear = (x * dx * dy).sum(dim=(1, 2)) / (x * dy * dy).sum(dim=(1, 2)).clamp(min=1e-6)  # columns per row
    # Where each output pixel reads the input, in affine_grid's [-1, 1] coordinates (-1 and 1: the outer pixels).
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 1] = shear * (h - 1) / (w - 1)
    theta[:, 0, 2] = (column_mean - (w - 1) / 2) / ((w - 1) / 2)
    theta[:, 1, 2] = (row_mean - (h - 1) / 2) / ((h - 1) / 2)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=True)
    return F.grid_sample(x.unsqueeze(1), grid, align_corners=True).squeeze(1)


CLUSTERING = 1  # raise it when pixel_clusters or clusters_of_each_digit would find other clusters


def pixel_clusters(images: torch.Tensor, k: int, iterations: int = 25) -> torch.Tensor:
    """Each image's cluster (N,) among `k`: k-means on the deskewed pixels, from k seeded images, on the CPU so
    that every machine and DDP rank gets the same clusters. It reads pixels only, never the labels."""
    x = deskewed(images.cpu()).flatten(1)

    def nearest(centers: torch.Tensor) -> torch.Tensor:  # |x - c|^2 less |x|^2, the same for every center
        return (centers.square().sum(dim=1) - 2 * x @ centers.T).argmin(dim=1)

    centers = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:k]]
    for _ in range(iterations):
        assigned = nearest(centers)
        counts = torch.bincount(assigned, minlength=k).unsqueeze(1)
        sums = torch.zeros_like(centers).index_add_(0, assigned, x)
        centers = torch.where(counts > 0, sums / counts.clamp(min=1), centers)  # an empty cluster keeps its center
    return nearest(centers)


def clusters_of_each_digit(images: torch.Tensor, digits: torch.Tensor, k: int, num_digits: int) -> torch.Tensor:
    """Each image's cluster (N,) among `k`: `pixel_clusters` of each digit's images apart, k / num_digits
    clusters each, digit d's numbered from d * k / num_digits. For a conditional GAN, which knows each digit."""
    images, digits, per_digit = images.cpu(), digits.cpu(), k // num_digits
    found = torch.empty(len(digits), dtype=torch.int64)
    for digit in range(num_digits):
        mine = (digits == digit).nonzero().squeeze(1)
        found[mine] = pixel_clusters(images[mine], per_digit) + digit * per_digit
    return found


def found_clusters(images: torch.Tensor, digits: torch.Tensor, k: int, num_digits: int | None, cache: Path):
    """Each training image's cluster (N,) among `k`: `pixel_clusters`, or with `num_digits` `clusters_of_each_digit`.
    K-means takes seconds, so the answer is kept in the folder `cache`, named after what decides it (the images, k,
    num_digits and CLUSTERING): a later run, a sweep's next job or another DDP rank reads it instead."""
    images_digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]
    path = Path(cache).expanduser() / f"clusters_v{CLUSTERING}_{images_digest}_k{k}_digits{num_digits or 0}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    found = clusters_of_each_digit(images, digits, k, num_digits) if num_digits else pixel_clusters(images, k)
    try:
        write_atomically(path, lambda f: torch.save(found, f))
    except OSError as err:  # a cache that cannot be written costs the next run the seconds, nothing else
        log.warning("The clusters could not be kept in %s (%s): later runs will find them again.", path, err.strerror)
    return found


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) in [0, 255] -> float (N, 1, 28, 28) in [-1, 1], the range of the GAN's data."""
    return images.unsqueeze(1).float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """The inverse: float (N, 1, 28, 28) in [-1, 1] -> uint8 (N, 28, 28), 0 = background, 255 = ink, as MNIST stores digits."""
    return ((images.squeeze(1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


class EpochBatches(DistributedSampler):
    """This rank's shard of a permutation drawn from (seed, epoch), as DistributedSampler draws and shards it, in
    whole batches of indices (the dataset answers each with one indexing operation), less the first `skip_batches`:
    a run that resumes mid-epoch continues with the batch after the last it trained on. The batches are moved to
    `device`, the data's, once an epoch: indexing GPU tensors with CPU indices would copy them over and wait for the
    GPU at every batch. Lightning calls `set_epoch` before each epoch and keeps a DistributedSampler under DDP."""

    def __init__(
        self,
        size: int,
        num_replicas: int,
        rank: int,
        seed: int,
        batch_size: int,
        device: torch.device,
        epoch: int = 0,
        skip_batches: int = 0,
    ):
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size, self.device = batch_size, device
        # Lightning draws the first batch before its first set_epoch call: start at the right epoch already.
        self.epoch = epoch
        self.skip = skip_batches

    def __len__(self) -> int:
        return self.num_samples // self.batch_size  # full batches only: BatchNorm statistics stay comparable

    def __iter__(self):
        indices = torch.tensor(list(super().__iter__()))
        batches = indices[: len(self) * self.batch_size].view(-1, self.batch_size)[self.skip :].to(self.device)
        self.skip = 0  # only the epoch a run resumes in starts part way
        return iter(batches)


class MNISTDataModule(pl.LightningDataModule):
    """The 60k training digits, each with its digit or, with `num_clusters`, its cluster (which a conditional GAN,
    `num_digits`, finds within each digit). The metric reads the 10k test digits itself (dcgan/metrics.py).

    The digits are held as uint8 tensors on the device that trains; a batch is one indexing operation, scaled to
    [-1, 1] on the device. No per-image PIL conversion, no worker processes: on a 2-core CPU those cost more than
    the networks' own work (docs/benchmarks.md)."""

    def __init__(
        self,
        root: MnistRoot,
        batch_size: Annotated[Count, Field(le=TRAINING_DIGITS)],
        seed: Seed,
        num_clusters: int | None,  # the model's (dcgan/training.py passes them)
        num_digits: int | None,
        cache_dir: Folder,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.root, self.batch_size, self.seed = root, batch_size, seed
        self.num_clusters, self.num_digits, self.cache_dir = num_clusters, num_digits, cache_dir
        self.resume_position: tuple[int, int] | None = None  # (epoch, batches done in it), from a checkpoint

    def prepare_data(self) -> None:
        ensure_mnist(self.root)

    def setup(self, stage: str | None = None) -> None:
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        images, digits = load_mnist_tensors(self.root, train=True)
        condition = digits  # what D judges each image with: its cluster id where there are clusters
        if self.num_clusters:
            condition = found_clusters(images, digits, self.num_clusters, self.num_digits, self.cache_dir)
            # How often G should draw each cluster (dcgan.models.ClusterPrior).
            self.cluster_shares = torch.bincount(condition, minlength=self.num_clusters).float() / len(condition)
        self.train_set = TensorDataset(images.to(device), condition.to(device))

    def train_dataloader(self) -> DataLoader:
        # Our own DistributedSampler, so Lightning keeps it under DDP; one replica without.
        world_size, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        epoch, skip = self.resume_position or (self.trainer.current_epoch if self.trainer else 0, 0)
        self.resume_position = None
        device = self.train_set.tensors[0].device
        batches = EpochBatches(len(self.train_set), world_size, rank, self.seed, self.batch_size, device, epoch, skip)
        # batch_size=None: the sampler yields whole batches. Each new iterator draws a seed from
        # `generator`; giving it its own keeps that draw off the global stream the training step uses.
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, sampler=batches, batch_size=None, generator=generator)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 digits -> floats in [-1, 1], on the device, a batch at a time."""
        images, condition = batch
        return to_model_range(images), condition

    def state_dict(self) -> dict:
        """How far training is in the data, for checkpoints: the epoch, and the batches of it already trained on."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        epoch, done = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx + 1
        # Saved at an epoch's end (also one cut short by max_steps, which Lightning ends there): resume with the next.
        if trainer.fit_loop.epoch_progress.current.processed > epoch or done >= trainer.num_training_batches:
            epoch, done = epoch + 1, 0
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.resume_position = (state["epoch"], state["batches_done"])
