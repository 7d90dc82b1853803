"""Fixtures shared by the suite's folders."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    """The full MNIST files (the training split is not shipped in the repository): ``MNIST_DIR``, else the
    developers' and CI's copy in ``../shared/data/mnist`` beside the repository. A clone without either skips the
    tests that need them, naming what to set; under CI (``CI`` set) their absence fails instead."""
    candidates = [Path(os.environ["MNIST_DIR"])] if os.environ.get("MNIST_DIR") else []
    candidates += [ROOT.parent / "shared" / "data" / "mnist", ROOT.parents[1] / "shared" / "data" / "mnist"]
    for folder in candidates:
        if (folder / "train-images-idx3-ubyte.gz").is_file() and (folder / "README.md").is_file():
            return folder
    message = ("needs the full MNIST files: set MNIST_DIR to a folder holding the four MNIST .gz files and "
               "their README, or keep ../shared/data/mnist beside the repository (looked in "
               + ", ".join(str(c) for c in candidates) + ")")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
