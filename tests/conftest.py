import os
from pathlib import Path

import pytest

from dcgan.callbacks import UNACTIONABLE_WARNINGS
from dcgan.data import ensure_mnist
from dcgan.metrics import load_classifier
from tests.helpers import only_child, run_train

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


@pytest.fixture(scope="session", autouse=True)
def classifier_path(mnist_root, tmp_path_factory) -> str:
    """The quality metric's classifier, trained from scratch once per test session, as on a fresh machine.

    The train.py and evaluate.py processes that tests start find it through $DCGAN_CLASSIFIER.
    $REUSE_CLASSIFIER=<path> reuses one trained before, to save that minute while iterating locally.
    """
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
