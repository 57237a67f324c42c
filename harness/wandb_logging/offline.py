"""Read offline W&B runs back from disk (tests, checks before `wandb sync`).

wandb 0.31 writes an offline run as `offline-run-<time>-<id>/run-<id>.wandb`: a LevelDB-style log
(7-byte file header ":W&B" + 0xBEE1 + version, then 32 KiB blocks of records with a 7-byte header
crc32/length/type, a record possibly split FIRST/MIDDLE/LAST across blocks) whose payloads are
`wandb.proto.wandb_internal_pb2.Record` messages. wandb no longer ships a Python reader (the
datastore moved into wandb-core), and offline runs get no config.yaml or wandb-summary.json, so
this module decodes the log with wandb's own protobuf classes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_MAGIC = b":W&B"
_FILE_HEADER = 7
_RECORD_HEADER = 7
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What one offline run holds: identity, config, summary, history rows and its files."""

    path: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    exited: bool = False


def iter_records(path: str | Path) -> Iterator[bytes]:
    """The record payloads of a .wandb file, reassembled across blocks (checksums are not checked)."""
    data = Path(path).read_bytes()
    if data[:4] != _MAGIC:
        raise ValueError(f"{path}: not a W&B run file")
    pos, pending = _FILE_HEADER, b""
    while pos + _RECORD_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD_HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _RECORD_HEADER])
        if kind == 0 and length == 0:  # zero padding up to the block end
            pos += left
            continue
        payload = data[pos + _RECORD_HEADER:pos + _RECORD_HEADER + length]
        pos += _RECORD_HEADER + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            yield pending + payload
            pending = b""


def _item_key(item: Any) -> str:
    """The key of a config/summary/history item (`key`, or its `nested_key` parts joined by '.')."""
    return item.key or ".".join(item.nested_key)


def _set_nested(target: dict[str, Any], item: Any) -> None:
    """target[key] = value for one item; a nested key fills nested dicts."""
    value = json.loads(item.value_json)
    keys = [item.key] if item.key else list(item.nested_key)
    for part in keys[:-1]:
        target = target.setdefault(part, {})
    target[keys[-1]] = value


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """Decode the run in an `offline-run-*` folder (or a .wandb file) into an OfflineRun."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(run_dir)
    files = sorted(path.glob("run-*.wandb")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {path}")
    run = OfflineRun(path=path)
    for raw in iter_records(files[0]):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.group, run.job_type = r.run_id, r.project, r.run_group, r.job_type
            run.name = r.display_name
            for item in r.config.update:
                run.config[_item_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_item_key(item)] = json.loads(item.value_json)
            for item in record.config.remove:
                run.config.pop(_item_key(item), None)
        elif kind == "summary":
            for item in record.summary.update:
                _set_nested(run.summary, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set_nested(row, item)
            run.history.append(row)
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
        elif kind == "exit":
            run.exited = True
    run.config.pop("_wandb", None)
    return run


def offline_runs(directory: str | Path) -> list[OfflineRun]:
    """Every offline run under `directory` (an experiment's wandb folder or wandb's own wandb/ below it)."""
    root = Path(directory)
    return [read_offline_run(p) for p in sorted(root.glob("**/offline-run-*")) if p.is_dir()]
