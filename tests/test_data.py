"""The MNIST data module on the real files, and its behaviour when they are missing and offline."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from dcgan.data import MNIST_FILES, MNISTDataModule, MNISTNotFoundError, ensure_mnist
from tests.helpers import run_train

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, connections are refused


def read_first_raw_image(root: str) -> np.ndarray:
    raw = (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    assert int.from_bytes(raw[:4], "big") == 2051  # the idx3 magic number
    return np.frombuffer(raw, dtype=np.uint8, count=28 * 28, offset=16).reshape(28, 28)


def test_train_batches_are_real_mnist_in_minus_one_one_with_labels(mnist_root):
    dm = MNISTDataModule(mnist_root, batch_size=128, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 60_000 and len(dm.test_set) == 10_000
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (128, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1  # black background, full ink
    assert labels.shape == (128,) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() <= 9
    # The first training digit is exactly the first image of the raw file, rescaled.
    first, label = dm.train_set[0]
    expected = torch.from_numpy(read_first_raw_image(mnist_root).astype(np.float32)) / 255 * 2 - 1
    torch.testing.assert_close(first[0], expected)
    assert label == 5  # MNIST's first training label


def test_test_split_is_available_for_evaluation(mnist_root):
    dm = MNISTDataModule(mnist_root, batch_size=500, num_workers=0)
    dm.setup("test")
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (500, 1, 28, 28)
    assert set(labels.tolist()) == set(range(10))


def test_present_files_need_no_network(mnist_root, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was used although the files are present")

    monkeypatch.setattr(MNIST, "download", no_network)
    ensure_mnist(mnist_root)


def test_missing_files_offline_fail_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", [UNREACHABLE])
    start = time.monotonic()
    with pytest.raises(MNISTNotFoundError) as info:
        MNISTDataModule(str(tmp_path / "empty")).prepare_data()
    assert time.monotonic() - start < 60
    message = str(info.value)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert all(name in message for name in MNIST_FILES)
    assert "data.root=" in message
    assert "\n" not in message  # one paragraph


def test_train_py_without_data_offline_prints_the_message_not_a_traceback(tmp_path):
    # urllib honours the proxy variables: pointing them at a closed port takes the network away.
    offline = {"http_proxy": UNREACHABLE, "https_proxy": UNREACHABLE, "HTTP_PROXY": UNREACHABLE, "HTTPS_PROXY": UNREACHABLE}
    result = run_train(
        f"data.root={tmp_path / 'nowhere'}", f"output_root={tmp_path / 'out'}", env=offline, check=False, timeout=120
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "MNIST is not in" in result.stderr and "data.root=" in result.stderr
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in result.stderr
