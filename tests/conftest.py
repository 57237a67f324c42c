"""Shared fixtures: the real ETTh1 data (FSNET_DATA_DIR, default ../shared/data) prepared once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from data import PreparedData, prepare_data

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("FSNET_DATA_DIR", str(DEFAULT_DATA_DIR))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def etth1() -> PreparedData:
    """ETTh1, features S, seq_len 48, pred_len 12."""
    return prepare_data("ETTh1", "S")
