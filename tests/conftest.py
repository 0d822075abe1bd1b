"""Shared fixtures: the real Fashion-MNIST splits, loaded once per session."""

import os

import pytest

# Tests see one CPU device unless a test spawns its own process with more.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from zylax import data  # noqa: E402


@pytest.fixture(scope="session")
def fmnist_train():
    return data.load("fashion_mnist", "train")


@pytest.fixture(scope="session")
def fmnist_test():
    return data.load("fashion_mnist", "test")
