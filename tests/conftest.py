import os
from pathlib import Path

import pytest

from dcgan.data import ensure_mnist
from dcgan.metrics import load_classifier
from dcgan.training import UNACTIONABLE_WARNINGS
from tests.helpers import TINY, compose_config, only_child, run_train

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # pytest resets the warning filters for each test, so quiet_lightning()'s reach only the tests that call
    # train(), and only from then on: the tests that build a Trainer themselves get the same list here.
    for message in UNACTIONABLE_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}")


@pytest.fixture(scope="session")
def mnist_root() -> str:
    """The folder holding MNIST/raw: $MNIST_ROOT, else ../shared/data beside the repo.

    When the files are not there yet they are downloaded (or the clear offline error is raised).
    """
    root = os.environ.get("MNIST_ROOT", str(REPO.parent / "shared" / "data"))
    ensure_mnist(root)
    return str(Path(root).resolve())


@pytest.fixture(scope="session")
def classifier_path(mnist_root, tmp_path_factory) -> str:
    """The quality metric's classifier, trained from scratch once per test session, as on a fresh machine; for
    the tests that score (all marked slow). The train.py and evaluate.py processes they start find it through
    $DCGAN_CLASSIFIER. $REUSE_CLASSIFIER=<path> reuses one trained before, to save that minute locally."""
    path = os.environ.get("REUSE_CLASSIFIER") or tmp_path_factory.mktemp("classifier") / "mnist_classifier.pt"
    load_classifier(path, mnist_root)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DCGAN_CLASSIFIER", str(path))
        yield str(path)


def smoke_train(tmp_path_factory, *overrides: str) -> Path:
    """A real `train.py experiment=smoke` run (2 epochs of 10 small steps); returns its run folder."""
    out = tmp_path_factory.mktemp("smoke")
    run_train("experiment=smoke", *overrides, f"output_root={out}")
    return only_child(out / "runs")


@pytest.fixture(scope="session")
def smoke_run(mnist_root, classifier_path, tmp_path_factory) -> Path:
    return smoke_train(tmp_path_factory, f"data.root={mnist_root}", f"classifier_path={classifier_path}")


@pytest.fixture(scope="session")
def cgan_smoke_run(mnist_root, classifier_path, tmp_path_factory) -> Path:
    return smoke_train(tmp_path_factory, "model=cgan", f"data.root={mnist_root}", f"classifier_path={classifier_path}")


def pytest_collection_modifyitems(config, items):
    # The fast tier (`-m "not slow"`) must run without the metric's classifier, which takes a minute to train.
    for item in items:
        if "classifier_path" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("slow"):
            raise pytest.UsageError(f"{item.nodeid} needs the metric's classifier: mark it @pytest.mark.slow")


@pytest.fixture(scope="session")
def tiny_run(mnist_root, tmp_path_factory) -> Path:
    """A real run in this process, small enough for the fast tier: 2 epochs of 2 steps of networks 8 wide, with
    a checkpoint at each epoch end and no metric."""
    from dcgan.training import train

    folder = tmp_path_factory.mktemp("tiny")
    train(compose_config(*TINY, f"data.root={mnist_root}", output_dir=str(folder)))
    return folder


@pytest.fixture(scope="session")
def tiny_cgan_run(mnist_root, tmp_path_factory) -> Path:
    """tiny_run's conditional GAN (model=cgan), with 2 clusters of each digit."""
    from dcgan.training import train

    folder = tmp_path_factory.mktemp("tiny_cgan")
    train(
        compose_config(*TINY, "model=cgan", "model.num_clusters=20", f"data.root={mnist_root}", output_dir=str(folder))
    )
    return folder


@pytest.fixture(autouse=True)
def the_classifier_only_in_the_slow_tier(request, monkeypatch):
    """A slow test has the metric's classifier (its train.py processes find it through $DCGAN_CLASSIFIER); in the
    fast tier loading it fails, so that no test there trains it unnoticed."""
    if request.node.get_closest_marker("slow"):
        request.getfixturevalue("classifier_path")
        return

    def refuse(*args, **kwargs):
        raise AssertionError("this test scores with the metric's classifier: mark it @pytest.mark.slow")

    monkeypatch.setattr("dcgan.metrics.load_classifier", refuse)  # quality_and_floor loads it from there
