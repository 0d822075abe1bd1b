"""Shared fixtures: the real Fashion-MNIST splits, loaded once per session, and a LeNet-300-100
trained briefly on them."""

import os

import optax
import pytest

# Tests see one CPU device unless a test spawns its own process with more.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from zylax import data, nets, train  # noqa: E402


@pytest.fixture(scope="session")
def fmnist_train():
    return data.load("fashion_mnist", "train")


@pytest.fixture(scope="session")
def fmnist_test():
    return data.load("fashion_mnist", "test")


@pytest.fixture(scope="session")
def lenet300_trained(fmnist_train):
    """``(model, variables, (images, labels), preprocess)``: LeNet-300-100 after 2 epochs of
    Adam on the first 3,000 training images."""
    images, labels = fmnist_train[0][:3000], fmnist_train[1][:3000]
    model = nets.LeNet300100(num_classes=10)
    prep = data.preprocessing("fashion_mnist")
    result = train.fit(model, optax.adam(1e-3), (images, labels), epochs=2, batch_size=100,
                       preprocess=prep, progress=False)
    return model, result.variables, (images, labels), prep


LONGEST_FIRST = (
    "tests/test_cli.py", "tests/test_budget.py", "tests/test_architectures.py",
    "tests/test_methods_end_to_end.py", "notebooks/05_detection_segmentation.ipynb",
    "tests/test_methods.py", "notebooks/04_your_own_model.ipynb", "tests/test_tasks.py",
    "tests/test_fuzz_archive.py", "tests/test_kept_models.py", "tests/test_dense_heads.py",
    "tests/test_readme.py")
"""The files that take longest (about a minute or more each on 2 cores), longest first."""


def pytest_collection_modifyitems(items):
    """Runs ``LONGEST_FIRST`` before every other file, in that order (the rest keep theirs):
    ``scripts/test.sh``'s two workers take whole files in collection order, so a long file
    left to the end would keep one worker busy while the other waits."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
