"""MNIST as a LightningDataModule: images scaled to [-1, 1], with their digit labels."""

import socket
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST

# What torchvision.datasets.MNIST reads, under <root>/MNIST/raw/.
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DOWNLOAD_TIMEOUT_S = 15  # per connection; an offline machine should fail in seconds, not hang


class MNISTNotFoundError(RuntimeError):
    """MNIST is neither on disk nor downloadable. The message says what to do."""


def mnist_present(root: str | Path) -> bool:
    raw = Path(root) / "MNIST" / "raw"
    return all((raw / name).is_file() for name in MNIST_FILES)


def ensure_mnist(root: str | Path) -> None:
    """Make sure the four MNIST files are under `root`/MNIST/raw, downloading them if needed.

    When they are already there nothing touches the network. When the download
    fails, raise MNISTNotFoundError with a message that says how to fix it.
    """
    if mnist_present(root):
        return
    root = Path(root).resolve()
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        for train in (True, False):
            MNIST(root, train=train, download=True)
    except Exception as err:  # urllib, socket and torchvision all raise their own kinds
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise MNISTNotFoundError(
            f"MNIST is not in {root / 'MNIST' / 'raw'} and could not be downloaded ({reason}). "
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


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) in [0, 255] -> float (N, 1, 28, 28) in [-1, 1], the range of the GAN's data."""
    return images.unsqueeze(1).float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """The inverse: float (N, 1, 28, 28) in [-1, 1] -> uint8 (N, 28, 28), 0 = background, 255 = ink, as MNIST stores digits."""
    return ((images.squeeze(1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


class MNISTDataModule(pl.LightningDataModule):
    """The 60k training digits for training; the 10k test digits (`test_dataloader`) for evaluation."""

    def __init__(self, root: str = "data", batch_size: int = 128, num_workers: int = 2):
        super().__init__()
        self.save_hyperparameters()
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        # ToTensor gives [0, 1]; (x - 0.5) / 0.5 gives the [-1, 1] range of the generator's tanh.
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    def prepare_data(self) -> None:
        ensure_mnist(self.root)

    def setup(self, stage: str | None = None) -> None:
        self.train_set = MNIST(self.root, train=True, transform=self.transform)
        self.test_set = MNIST(self.root, train=False, transform=self.transform)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,  # full batches for training keep BatchNorm statistics comparable
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
