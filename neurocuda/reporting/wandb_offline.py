"""Read the metrics of an offline W&B run directory without W&B's servers or an account.

W&B (>= 0.19, Go core) no longer ships a Python reader for its ``run-*.wandb`` transaction log, and
offline runs only get a summary file after ``wandb sync``. The log is LevelDB's record format
(32 KiB blocks; 7-byte record headers: crc32c, length, type) holding protobuf ``Record`` messages,
which W&B's own ``wandb_internal_pb2`` parses; this module only does the framing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> list[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log (missing ':W&B' header)")
    records, parts, pos = [], [], _HEADER
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block trailer padding
            pos += left_in_block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        payload = data[pos + _HEADER : pos + _HEADER + length]
        if len(payload) < length:  # a killed process's last, half-written record
            break
        pos += _HEADER + length
        if kind == _FULL:
            records.append(payload)
        elif kind == _FIRST:
            parts = [payload]
        elif kind == _MIDDLE:
            parts.append(payload)
        elif kind == _LAST:
            records.append(b"".join([*parts, payload]))
        elif kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += left_in_block - _HEADER
    return records


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"history": [row, ...], "config": {...}, "artifacts": [name, ...], "exit_code": int}``
    of one run dir (``exit_code`` None while the run has not finished)."""
    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    history, config, artifacts, exit_code = [], {}, [], None
    for payload in _payloads(files[0].read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "config":
            config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "artifact":
            artifacts.append(record.artifact.name)
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return {"history": history, "config": config, "artifacts": artifacts, "exit_code": exit_code}


def _key(item: object) -> str:
    return item.key or "/".join(item.nested_key)


def last_values(history: list[dict]) -> dict[str, object]:
    """The last logged value of every key in a history."""
    values: dict[str, object] = {}
    for row in history:
        values.update(row)
    return values
