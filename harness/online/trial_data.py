"""The data a trial config asks for: its key (dataset, features, target, seq_len, pred_len) and loading.

The key is built here only; the trial CLI, the ablation's data check and the Ray trainable's
per-worker cache all go through `data_key`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

from data import PreparedData, SplitWindows, prepare_data


class DataKey(NamedTuple):
    """What determines a prepared dataset (besides the file path)."""

    dataset: str
    features: str
    target: str
    seq_len: int
    pred_len: int


def data_key(config: Mapping[str, Any]) -> DataKey:
    """The data key of a resolved trial config."""
    return DataKey(config["dataset"], config["features"], config["target"], config["seq_len"], config["pred_len"])


def online_split(data: PreparedData, config: Mapping[str, Any]) -> SplitWindows:
    """The windows the online phase runs over: the test split, or the validation split when the
    `online_split` knob is "val" (for tuning hyperparameters without seeing the test stream)."""
    return data.val if config.get("online_split", "test") == "val" else data.test


def load_data(config: Mapping[str, Any], path: str | None) -> PreparedData:
    """The prepared dataset a config asks for (raises data.DataError when unusable)."""
    return prepare_data(*data_key(config), path)


@functools.lru_cache(maxsize=4)
def _cached(key: DataKey, path: str | None) -> PreparedData:
    return prepare_data(*key, path)


def cached_data(config: Mapping[str, Any], path: str | None) -> PreparedData:
    """load_data, prepared once per process and data key (Ray workers run trial after trial)."""
    return _cached(data_key(config), path)
