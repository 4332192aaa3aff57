import os
from pathlib import Path

import pytest

from dcgan.data import ensure_mnist

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_root() -> str:
    """The folder holding MNIST/raw: $MNIST_ROOT, else ../shared/data beside the repo.

    When the files are not there yet they are downloaded (or the clear offline error is raised).
    """
    root = os.environ.get("MNIST_ROOT", str(REPO.parent / "shared" / "data"))
    ensure_mnist(root)
    return str(Path(root).resolve())
