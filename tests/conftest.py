"""Shared fixtures: the real ETTh1 data (FSNET_DATA_DIR, default ../shared/data) prepared once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from data import PreparedData, prepare_data

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("FSNET_DATA_DIR", str(DEFAULT_DATA_DIR))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def etth1() -> PreparedData:
    """ETTh1, features S, seq_len 48, pred_len 12."""
    return prepare_data("ETTh1", "S")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one torch thread (the machine is shared), restoring the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs one test process per core: each gets one torch thread, or the cores are oversubscribed
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put every integration test (they start Ray, or run long streams) in one xdist group, so that under
    `pytest -n N --dist loadgroup` one worker runs them one after another and no two Ray instances compete."""
    for item in items:
        if item.get_closest_marker("integration") is not None:
            item.add_marker(pytest.mark.xdist_group("integration"))
