"""Shared test set-up: single-threaded torch (two 2-thread torch processes thrash each other),
deterministic seeds, and a fresh temporary results store per test."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RS_PROFILE", "smoke")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def results_root(tmp_path, monkeypatch):
    root = tmp_path / "results"
    monkeypatch.setenv("RS_RESULTS", str(root))
    return root
