"""The quality metric: its classifier, and that it tells real digits from noise and from a collapsed generator."""

import pytest
import torch

from dcgan.data import load_mnist_tensors, to_model_range, to_uint8
from dcgan.metrics import SampleQuality, load_classifier, train_classifier


@pytest.fixture(scope="module")
def quality(classifier_path, mnist_root) -> SampleQuality:
    return SampleQuality(load_classifier(classifier_path, mnist_root), mnist_root)


@pytest.fixture(scope="module")
def train_digits(mnist_root) -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist_tensors(mnist_root, train=True)


def test_classifier_is_trained_to_99_percent_and_cached(classifier_path):
    saved = torch.load(classifier_path, weights_only=True)
    assert saved["test_accuracy"] >= 0.99
    assert set(saved["state_dict"]) >= {"features.7.weight", "head.1.weight"}


def test_classifier_training_is_reproducible(mnist_root):
    first, _ = train_classifier(mnist_root, epochs=1, num_train=2048)
    second, _ = train_classifier(mnist_root, epochs=1, num_train=2048)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_real_digits_score_at_the_floor(quality, train_digits):
    images, _ = train_digits
    scores = quality.score(to_model_range(images[:10_000]))
    assert scores["fid"] < 5.0  # measured: 3.3 (the train and test splits differ a little)
    assert scores["confidence"] > 0.98
    assert scores["min_digit_share"] > 0.08  # every digit is 9-11% of MNIST
    assert sum(scores[f"digit_{d}_share"] for d in range(10)) == pytest.approx(1.0)


def test_noise_scores_far_from_the_floor(quality):
    noise = torch.rand(5000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert quality.score(noise)["fid"] > 100


def test_a_single_repeated_digit_scores_far_from_the_floor(quality, train_digits):
    images, labels = train_digits
    three = to_model_range(images[labels == 3][:1]).repeat(5000, 1, 1, 1)  # a generator collapsed onto one digit
    scores = quality.score(three)
    assert scores["fid"] > 50
    assert scores["digit_3_share"] == 1.0 and scores["min_digit_share"] == 0.0


def test_label_accuracy_counts_digits_read_as_requested(quality, train_digits):
    images, labels = train_digits
    real = to_model_range(images[:2000])
    assert quality.score(real, labels[:2000])["label_accuracy"] > 0.99
    assert quality.score(real, (labels[:2000] + 1) % 10)["label_accuracy"] < 0.02


def test_uint8_conversion_keeps_mnist_polarity(train_digits):
    images, _ = train_digits
    assert torch.equal(to_uint8(to_model_range(images[:1000])), images[:1000])  # exact round trip
    assert to_uint8(torch.full((1, 1, 28, 28), -1.0)).max() == 0  # the generator's -1 is MNIST's black background
    assert to_uint8(torch.ones(1, 1, 28, 28)).min() == 255  # and +1 is full ink
