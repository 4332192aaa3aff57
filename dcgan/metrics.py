"""How good are the generated digits.

A small CNN trained on MNIST's training split supplies the feature space: the
Frechet distance between its penultimate-layer features on generated digits
and on the 10k test digits (torchmetrics' FrechetInceptionDistance with this
network as `feature`, since Inception features know nothing about digits),
plus the share of each digit the classifier reads (mode coverage), its mean
confidence and, for a conditional GAN, how often it reads the digit that was asked for.
"""

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from dcgan.checkpoints import write_atomically
from dcgan.data import load_mnist_tensors, to_model_range

log = logging.getLogger(__name__)

NUM_DIGITS = 10
MIN_TEST_ACCURACY = 0.99  # below this the classifier's features would not be trusted
REAL_DIGITS_FID = 3.28  # the floor: 10k real training digits (`python evaluate.py real=true`, docs/metric.md)


class MNISTClassifier(nn.Module):
    """conv-pool-conv-pool-fc: about 99.2% test accuracy after 4 epochs. Inputs in [-1, 1], like the GAN's."""

    num_features = 128  # size of the penultimate layer, the feature space of the Frechet distance

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 32 x 14 x 14
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 64 x 7 x 7
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, self.num_features),
            nn.ReLU(),
        )
        self.features.num_features = self.num_features  # torchmetrics reads it from the feature module
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(self.num_features, NUM_DIGITS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def accuracy(classifier: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    classifier.eval()
    correct = sum(
        (classifier(x).argmax(1) == y).sum().item()
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)
    )
    return correct / len(labels)


def train_classifier(
    data_root: str, epochs: int = 4, seed: int = 0, device: str = "cpu", num_train: int | None = None
) -> tuple[MNISTClassifier, float]:
    """Train the classifier from scratch, reproducibly (fixed seed and data order). Returns it and its test accuracy.

    `num_train` trains on the first that many training digits only, for quick checks.
    """
    images, labels = load_mnist_tensors(data_root, train=True)
    images, labels = to_model_range(images[:num_train]).to(device), labels[:num_train].to(device)
    steps_per_epoch = len(labels) // 128
    shuffle = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # seeded here without disturbing the caller's random stream (a training run's)
        torch.manual_seed(seed)
        classifier = MNISTClassifier().to(device)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
        for epoch in range(epochs):
            classifier.train()
            order = torch.randperm(len(labels), generator=shuffle).to(device)
            for batch in order[: steps_per_epoch * 128].view(steps_per_epoch, 128):
                loss = F.cross_entropy(classifier(images[batch]), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            log.info("MNIST classifier: epoch %d/%d done", epoch + 1, epochs)
    test_images, test_labels = load_mnist_tensors(data_root, train=False)
    test_accuracy = accuracy(classifier, to_model_range(test_images).to(device), test_labels.to(device))
    return classifier.eval(), test_accuracy


def load_classifier(path: str | Path, data_root: str, device: str = "cpu") -> MNISTClassifier:
    """The cached classifier at `path`; trained (about a minute on a CPU) and cached there first if it is missing."""
    path = Path(path).expanduser()
    if not path.is_file():
        log.info("No MNIST classifier at %s: training one for the quality metric (once, then cached)", path)
        classifier, test_accuracy = train_classifier(data_root, device=device)
        if test_accuracy < MIN_TEST_ACCURACY:
            raise RuntimeError(f"The MNIST classifier reached only {test_accuracy:.2%} test accuracy (< 99%).")
        log.info("MNIST classifier: %.2f%% test accuracy, saved to %s", 100 * test_accuracy, path)
        cache = {"state_dict": classifier.state_dict(), "test_accuracy": test_accuracy}
        write_atomically(path, lambda f: torch.save(cache, f))  # a half-written cache is never picked up
    with torch.random.fork_rng():  # its random init (overwritten below) must not shift a training run's stream
        classifier = MNISTClassifier()
    classifier.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    return classifier.to(device).eval()


class SampleQuality:
    """Scores a set of generated digits against the MNIST test split.

    The test split's features are computed once; each `score` call then costs
    one classifier pass over the generated images.
    """

    def __init__(self, classifier: MNISTClassifier, data_root: str, batch_size: int = 500):
        self.classifier = classifier.eval()
        self.batch_size = batch_size
        device = next(classifier.parameters()).device
        # sync_on_compute=False: under DDP only rank 0 scores (all its samples), so there is nobody to sync with.
        self.fid = FrechetInceptionDistance(
            feature=classifier.features, reset_real_features=False, normalize=True, sync_on_compute=False
        )
        self.fid.to(device)
        test_images, _ = load_mnist_tensors(data_root, train=False)
        with torch.no_grad():
            for batch in to_model_range(test_images).to(device).split(batch_size):
                self.fid.update(batch, real=True)

    @torch.no_grad()
    def score(self, images: torch.Tensor, requested_labels: torch.Tensor | None = None) -> dict[str, float]:
        """images: (N, 1, 28, 28) in [-1, 1]. Returns fid, confidence, min_digit_share, digit_<d>_share
        and, given the labels the images were generated for, label_accuracy."""
        self.fid.reset()  # keeps the test split's features
        images = images.to(self.fid.device, torch.float32)
        probabilities = []
        for batch in images.split(self.batch_size):
            self.fid.update(batch, real=False)
            probabilities.append(F.softmax(self.classifier(batch), dim=1))
        probabilities = torch.cat(probabilities)
        predicted = probabilities.argmax(dim=1)
        shares = torch.bincount(predicted, minlength=NUM_DIGITS).float() / len(predicted)
        scores = {
            "fid": self.fid.compute().item(),
            "confidence": probabilities.max(dim=1).values.mean().item(),
            "min_digit_share": shares.min().item(),
            **{f"digit_{d}_share": shares[d].item() for d in range(NUM_DIGITS)},
        }
        if requested_labels is not None:
            scores["label_accuracy"] = (predicted.cpu() == requested_labels.cpu()).float().mean().item()
        return scores
