"""How good are the generated digits (docs/metric.md; dcgan.reports writes the scores as text).

A small CNN trained on MNIST's training split supplies the feature space, since Inception features know nothing
about digits: the Frechet and kernel distances between its penultimate-layer features on generated digits and on
the 10k test digits (torchmetrics', with this network as `feature`), precision, recall, density and coverage, how
near the digits come to training digits, the share of each digit the classifier reads (mode coverage), its mean
confidence and, for a conditional GAN, how often it reads the digit that was asked for.
"""

import logging
import os
import warnings
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field, Strict
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from dcgan.data import TRAINING_DIGITS, load_mnist_tensors, to_model_range
from dcgan.files import write_atomically
from dcgan.kinds import writable_file

log = logging.getLogger(__name__)

NUM_DIGITS = 10
MIN_TEST_ACCURACY = 0.99  # below this the classifier's features would not be trusted
MIN_SAMPLES = 2  # the fewest digits a Frechet distance can be computed from (a covariance needs two)
Samples = Annotated[int, Strict(), Field(ge=MIN_SAMPLES, le=TRAINING_DIGITS, examples=["5000"])]
Samples = Annotated[Samples, Field(description="the metric scores as many real training digits too")]


def classifier_file(value: str) -> str:
    """The metric's classifier: a readable file, or where one can be cached on first use."""
    path = Path(value).expanduser()
    if path.exists() and (not path.is_file() or not os.access(path, os.R_OK)):
        raise ValueError(
            "it is not a readable file. It is where the metric's MNIST classifier is cached: give a file path, e.g. "
            "{key}=~/.cache/dcgan-mnist/mnist_classifier.pt (trained there on first use)"
        )
    return value if path.exists() else writable_file(value)


Classifier = Annotated[
    str, AfterValidator(classifier_file), Field(examples=["~/.cache/dcgan-mnist/mnist_classifier.pt"])
]


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
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(self.num_features, NUM_DIGITS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(
    data_root: str, epochs: int = 4, seed: int = 0, device: str = "cpu", num_train: int | None = None
) -> tuple[MNISTClassifier, float]:
    """Train the classifier from scratch, reproducibly (fixed seed and data order). Returns it and its test accuracy.
    `num_train` trains on the first that many training digits only, for quick checks."""
    images, labels = load_mnist_tensors(data_root, train=True)
    # channels_last: the layout in which CPUs pool and convolve these fastest (docs/metric.md)
    images = to_model_range(images[:num_train]).to(device, memory_format=torch.channels_last)
    labels = labels[:num_train].to(device)
    steps_per_epoch = len(labels) // 128
    shuffle = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # seeded here without disturbing the caller's random stream (a training run's)
        torch.manual_seed(seed)
        classifier = MNISTClassifier().to(device, memory_format=torch.channels_last)
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
    classifier.eval()
    test_images, test_labels = load_mnist_tensors(data_root, train=False)
    with torch.no_grad():
        read = torch.cat([classifier(x.to(device)).argmax(1) for x in to_model_range(test_images).split(1000)])
    return classifier, (read.cpu() == test_labels).sum().item() / len(test_labels)


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


NEAREST_K = 3  # the k of precision, recall, density and coverage (Kynkaanniemi et al. use 3)
KID_SUBSET = 1000  # digits per subset of the kernel distance (torchmetrics' default)


class Features(nn.Identity):
    """torchmetrics' feature extractor for features already extracted: SampleQuality runs the classifier once
    per batch and hands the Frechet and kernel distances its features."""

    num_features = MNISTClassifier.num_features


def nearest_distances(x: torch.Tensor, y: torch.Tensor, k: int = 1, skip_self: bool = False, chunk: int = 2000):
    """The distance from each row of x to its k-th nearest row of y (Euclidean, in chunks of x to bound memory);
    with `skip_self`, x is y and a row's distance to itself (0) is left out."""
    found = []
    for start in range(0, len(x), chunk):
        distances = torch.cdist(x[start : start + chunk], y)
        if skip_self:
            rows = torch.arange(len(distances), device=x.device)
            distances[rows, rows + start] = float("inf")
        found.append(distances.topk(k, dim=1, largest=False).values[:, -1])  # topk: kthvalue is 10x slower here
    return torch.cat(found)


def precision_recall_density_coverage(real: torch.Tensor, fake: torch.Tensor, real_radii: torch.Tensor, k: int):
    """Kynkaanniemi et al. (2019)'s precision and recall and Naeem et al. (2020)'s density and coverage, as the
    authors' `prdc` package computes them: each set's manifold is the union of balls around its points reaching
    their k-th nearest neighbour. Precision: the share of fakes inside the real manifold; recall: the share of
    reals inside the fake manifold; density: fakes inside real balls, counted with multiplicity, over k; coverage:
    the share of real balls that hold a fake. `real_radii` are the reals' k-th neighbour distances."""
    fake_radii = nearest_distances(fake, fake, k, skip_self=True)
    inside_real, in_real_ball, covered, recalled = 0, 0.0, torch.zeros(len(real), dtype=torch.bool), []
    for start in range(0, len(fake), 2000):
        distances = torch.cdist(real, fake[start : start + 2000])  # (real, fake chunk)
        within = distances < real_radii[:, None]
        inside_real += within.any(dim=0).sum().item()
        in_real_ball += within.sum().item()
        covered |= within.any(dim=1).cpu()
        recalled.append((distances < fake_radii[None, start : start + 2000]).any(dim=1))
    return {
        "precision": inside_real / len(fake),
        "recall": torch.stack(recalled).any(dim=0).float().mean().item(),
        "density": in_real_ball / k / len(fake),
        "coverage": covered.float().mean().item(),
    }


class SampleQuality:
    """Scores a set of generated digits against the MNIST test split, in the classifier's features.

    The distances (precision, recall, density, coverage; copying) are between features scaled to unit length:
    their length says mostly how much ink a digit has, and with it, noise and blank images land in the
    neighbourhoods of faint real digits (precision 0.98 for uniform noise, against 0.35 on the unit sphere;
    docs/metric.md).

    The test split's features (and its k-th neighbour distances) are computed once, and with `copying` the
    training split's (60k digits: some seconds); each `score` call then costs one classifier pass over the
    generated digits, and their distances to those sets.
    """

    def __init__(self, classifier: MNISTClassifier, data_root: str, copying: bool, batch_size: int = 500):
        self.classifier, self.batch_size = classifier.eval(), batch_size
        self.device = next(classifier.parameters()).device
        # sync_on_compute=False: under DDP only rank 0 scores (all its samples), so there is nobody to sync with.
        options = {"reset_real_features": False, "sync_on_compute": False}
        self.fid = FrechetInceptionDistance(Features(), **options).to(self.device)
        with warnings.catch_warnings():  # that it keeps every feature: 10k and one set of samples, a few MB
            warnings.filterwarnings("ignore", "Metric `Kernel Inception Distance` will save all extracted features")
            self.kid = KernelInceptionDistance(Features(), **options).to(self.device)
        test = self.features(to_model_range(load_mnist_tensors(data_root, train=False)[0]))[0]
        for distance in (self.fid, self.kid):
            distance.update(test, real=True)
        self.test = F.normalize(test, dim=1)
        self.test_radii = nearest_distances(self.test, self.test, NEAREST_K, skip_self=True)
        if copying:
            train = self.features(to_model_range(load_mnist_tensors(data_root, train=True)[0]))[0]
            self.train = F.normalize(train, dim=1)
            self.test_to_train = nearest_distances(self.test, self.train)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's features (N, 128) and its probabilities (N, 10) of images (N, 1, 28, 28) in [-1, 1]."""
        batches = [self.classifier.features(b.to(self.device, torch.float32)) for b in images.split(self.batch_size)]
        probabilities = [F.softmax(self.classifier.head(features), dim=1) for features in batches]
        return torch.cat(batches), torch.cat(probabilities)

    @torch.no_grad()
    def score(
        self, images: torch.Tensor, requested_digits: torch.Tensor | None = None, training_digits: bool = False
    ) -> dict[str, float]:
        """images: (N, 1, 28, 28) in [-1, 1]. Returns fid; kid (its mean over subsets); precision, recall, density
        and coverage (k = NEAREST_K); confidence, min_digit_share and digit_<d>_share as the classifier reads them;
        given the digits the images were drawn as, label_accuracy; and with `copying`, copy_ratio, the median
        distance from a digit to its nearest training digit over the same median for the test digits, and
        copies, the share of digits nearer to a training digit than 99% of the test digits are.
        `training_digits`: the images are training digits (real=true, the floor), each then measured against the
        other training digits."""
        features, probabilities = self.features(images)
        for distance in (self.fid, self.kid):
            distance.reset()  # keeps the test split's features
            distance.update(features, real=False)
        self.kid.subset_size = min(KID_SUBSET, len(features))
        with torch.random.fork_rng(devices=[]):  # KID draws its subsets from torch's stream: not a training run's
            torch.manual_seed(0)
            kid = self.kid.compute()[0].item()
        predicted = probabilities.argmax(dim=1)
        shares = torch.bincount(predicted, minlength=NUM_DIGITS).float() / len(predicted)
        scores = {
            "fid": self.fid.compute().item(),
            "kid": kid,
            **precision_recall_density_coverage(self.test, F.normalize(features, dim=1), self.test_radii, NEAREST_K),
            "confidence": probabilities.max(dim=1).values.mean().item(),
            "min_digit_share": shares.min().item(),
            **{f"digit_{d}_share": shares[d].item() for d in range(NUM_DIGITS)},
        }
        if requested_digits is not None:
            scores["label_accuracy"] = (predicted.cpu() == requested_digits.cpu()).float().mean().item()
        if hasattr(self, "train"):
            to_train = nearest_distances(F.normalize(features, dim=1), self.train, k=2 if training_digits else 1)
            scores["copy_ratio"] = (to_train.median() / self.test_to_train.median()).item()
            scores["copies"] = (to_train < self.test_to_train.quantile(0.01)).float().mean().item()
        return scores


def quality_and_floor(
    classifier_path: str, data_root: str, num_samples: int, seed: int, copying: bool, device: str = "cpu"
) -> tuple[SampleQuality, dict[str, float]]:
    """The metric (its classifier loaded, or trained and cached first) and its floor: the scores of `num_samples`
    real training digits drawn with `seed`, what a perfect generator would score."""
    quality = SampleQuality(load_classifier(classifier_path, data_root, device=device), data_root, copying)
    return quality, quality.score(real_digits(data_root, num_samples, seed), training_digits=True)


def real_digits(data_root: str, num_samples: int, seed: int) -> torch.Tensor:
    """`num_samples` training digits drawn at random: what a perfect generator would produce."""
    images, _ = load_mnist_tensors(data_root, train=True)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:num_samples]
    return to_model_range(images[pick])
