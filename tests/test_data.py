"""The MNIST data module on the real files, and its behaviour when they are missing and offline."""

import itertools
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torchvision import transforms
from torchvision.datasets import MNIST

from dcgan.data import (
    MNIST_FILES,
    EpochBatches,
    MNISTNotFoundError,
    deskewed,
    ensure_mnist,
    found_clusters,
    load_mnist_tensors,
    pixel_clusters,
)
from tests.helpers import data_module

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, connections are refused


def read_first_raw_image(root: str) -> np.ndarray:
    raw = (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    assert int.from_bytes(raw[:4], "big") == 2051  # the idx3 magic number
    return np.frombuffer(raw, dtype=np.uint8, count=28 * 28, offset=16).reshape(28, 28)


def test_in_memory_batches_are_torchvision_mnist_for_the_same_indices(mnist_root):
    dm = data_module(mnist_root, batch_size=128, seed=7)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 60_000
    loader = dm.train_dataloader()
    indices = next(iter(loader.sampler))
    images, labels = dm.on_after_batch_transfer(next(iter(loader)), 0)
    assert images.shape == (128, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (128,) and labels.dtype == torch.int64
    # The classic path: PIL image -> ToTensor -> Normalize, one digit at a time.
    classic = MNIST(
        mnist_root,
        train=True,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]),
    )
    expected = [classic[i] for i in indices.tolist()]
    torch.testing.assert_close(images, torch.stack([image for image, _ in expected]))
    assert labels.tolist() == [label for _, label in expected]
    assert images.min() == -1 and images.max() == 1  # black background, full ink
    # And the first training digit is exactly the first image of the raw file.
    assert torch.equal(dm.train_set[0][0], torch.from_numpy(read_first_raw_image(mnist_root).copy()))
    assert dm.train_set[0][1] == 5  # MNIST's first training label


def test_each_epoch_is_a_new_permutation_of_every_digit(mnist_root):
    dm = data_module(mnist_root, batch_size=100, seed=0)
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    first = torch.cat(list(sampler))
    sampler.set_epoch(1)
    second = torch.cat(list(sampler))
    assert len(sampler) == 600 and torch.equal(first.sort().values, torch.arange(60_000))
    assert torch.equal(second.sort().values, torch.arange(60_000)) and not torch.equal(first, second)


def test_ddp_ranks_train_on_disjoint_shards_of_the_same_permutation(mnist_root):
    dm = data_module(mnist_root, batch_size=64, seed=3)
    dm.setup("fit")
    shards = [
        torch.cat(list(EpochBatches(60_000, 3, rank, seed=3, batch_size=64, device=torch.device("cpu"), epoch=2)))
        for rank in range(3)
    ]
    assert all(len(shard) == 20_000 // 64 * 64 for shard in shards)  # full batches only
    everything = torch.cat(shards)
    assert len(everything.unique()) == len(everything)  # no digit on two ranks
    # Rank r takes every third digit of the one permutation that (seed, epoch) draws.
    single = torch.cat(list(EpochBatches(60_000, 1, 0, seed=3, batch_size=60_000, device=torch.device("cpu"), epoch=2)))
    assert torch.equal(shards[1], single[1::3][: len(shards[1])])


class IndexDevices(TorchDispatchMode):
    """The devices of the tensors of every indexing operation run under it, in `seen`."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.index, torch.ops.aten.index_select):
            leaves = tree_leaves((args, kwargs or {}))
            self.seen.append({leaf.device.type for leaf in leaves if isinstance(leaf, torch.Tensor)})
        return func(*args, **(kwargs or {}))


def test_a_batch_is_gathered_with_indices_already_on_the_datas_device(mnist_root):
    """Indexing a GPU's digits with CPU indices copies the indices over and waits for the GPU, at every batch. The
    meta device stands in for a GPU here: every index of an epoch's batches is already where the digits are."""
    dm = data_module(mnist_root, batch_size=32, seed=0)
    meta = SimpleNamespace(root_device=torch.device("meta"))
    dm.trainer = SimpleNamespace(strategy=meta, world_size=1, global_rank=0, current_epoch=0)
    dm.setup("fit")
    with IndexDevices() as indexing:
        for batch in itertools.islice(dm.train_dataloader(), 3):
            images, labels = dm.on_after_batch_transfer(batch, 0)
    assert images.device.type == labels.device.type == "meta"
    assert len(indexing.seen) == 6 and all(devices == {"meta"} for devices in indexing.seen)  # images and labels


def test_present_files_need_no_network(mnist_root, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was used although the files are present")

    monkeypatch.setattr(MNIST, "download", no_network)
    ensure_mnist(mnist_root)


def test_missing_files_offline_fail_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", [UNREACHABLE])
    start = time.monotonic()
    with pytest.raises(MNISTNotFoundError) as info:
        data_module(str(tmp_path / "empty")).prepare_data()
    assert time.monotonic() - start < 60
    message = str(info.value)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert all(name in message for name in MNIST_FILES)
    assert "data.root=" in message
    assert "\n" not in message  # one paragraph


def test_pixel_clusters_group_alike_digits_and_are_the_same_every_time(mnist_root):
    images, digits = (t[:10_000] for t in load_mnist_tensors(mnist_root, train=True))
    clusters = pixel_clusters(images, 40)
    assert torch.equal(clusters, pixel_clusters(images, 40))  # every DDP rank and every resume agree
    assert torch.bincount(clusters, minlength=40).min() > 0
    # Found from the pixels alone; the labels only check here that most of a cluster is one digit (1 in 10 by chance).
    purity = sum(torch.bincount(digits[clusters == k]).max().item() for k in range(40)) / len(digits)
    assert purity > 0.7


def test_deskewing_stands_a_slanted_stroke_upright_in_the_middle():
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    for row in range(4, 24):  # a stroke leaning right, 0.5 columns per row, left of the middle
        image[0, row, 5 + row // 2] = 255
    upright = deskewed(image)[0]
    columns = (upright * torch.arange(28.0)).sum(dim=1) / upright.sum(dim=1).clamp(min=1e-6)  # ink's column per row
    inked = upright.sum(dim=1) > 0.5
    assert columns[inked].max() - columns[inked].min() < 1.0  # upright: the same column in every row
    assert abs(columns[inked].mean() - 13.5) < 0.5  # in the middle


def test_deskewed_clusters_keep_the_4s_with_4s(mnist_root):
    """Clusters of the raw pixels file many 4s with 9s: of the first 20k digits in 100 clusters, 60% of the 4s are in
    clusters where 4s are the commonest digit (measured with the same k-means on the raw pixels); deskewed, 89%."""
    images, digits = (t[:20_000] for t in load_mnist_tensors(mnist_root, train=True))
    clusters = pixel_clusters(images, 100)
    # The labels only check the clusters here: which digit is the commonest of each cluster.
    commonest = torch.stack([torch.bincount(digits[clusters == c], minlength=10).argmax() for c in range(100)])
    fours = digits == 4
    assert ((commonest[clusters] == 4) & fours).sum() / fours.sum() > 0.85


def test_clusters_are_found_once_then_read_from_the_cache_and_found_anyway_without_one(
    mnist_root, tmp_path, monkeypatch
):
    images, labels = (t[:3000] for t in load_mnist_tensors(mnist_root, train=True))
    found = found_clusters(images, labels, 10, None, tmp_path / "cache")
    assert torch.equal(found, pixel_clusters(images, 10))
    assert torch.equal(found_clusters(images, labels, 20, 10, tmp_path / "cache") // 2, labels)  # within each digit
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one file per answer: k and the digits are in its name

    def k_means_again(*args):
        raise AssertionError("k-means ran again: the cache was not read")

    with monkeypatch.context() as patch:
        patch.setattr("dcgan.data.pixel_clusters", k_means_again)
        assert torch.equal(found_clusters(images, labels, 10, None, tmp_path / "cache"), found)
    (tmp_path / "a-file").write_text("not a folder")  # a cache that cannot be written costs time, not the run
    assert torch.equal(found_clusters(images, labels, 10, None, tmp_path / "a-file" / "cache"), found)
