"""Read an offline wandb run's `.wandb` file back, with wandb's own record schema.

wandb 0.31 ships no Python reader for its transaction log any more (the old
`wandb.sdk.internal.datastore` is gone; `wandb sync` only uploads). The file is the LevelDB
log format that wandb-core writes: a 7-byte header (`:W&B`, magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each with a 7-byte header (CRC-32C, length, type: full / first /
middle / last). Each reassembled record is a `wandb.proto.wandb_internal_pb2.Record`, decoded
here with wandb's own protobuf classes. Reading stops at the first torn or zero chunk, as
wandb's sync does with a crashed run's file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(data: bytes) -> Iterator[bytes]:
    ident, magic, _version = FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError("not a wandb transaction log")
    pos = FILE_HEADER.size
    pending = b""
    while True:
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER.size:
            pos += left_in_block  # block trailer: zero padding
            continue
        if pos + CHUNK_HEADER.size > len(data):
            return
        _crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        start = pos + CHUNK_HEADER.size
        if kind not in (FULL, FIRST, MIDDLE, LAST) or start + length > len(data):
            return  # torn tail (the process died mid-write) or unused space
        chunk = data[start : start + length]
        pos = start + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        else:
            yield pending + chunk
            pending = b""


def read_run(path: Path) -> dict[str, Any]:
    """History steps holding a `loss` value, and whether the run has an exit record."""
    from wandb.proto import wandb_internal_pb2

    steps: set[int] = set()
    exit_code: int | None = None
    for raw in raw_records(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(raw)
        except Exception:
            break
        kind = record.WhichOneof("record_type")
        if kind == "history":
            keys = {item.key or "/".join(item.nested_key): item for item in record.history.item}
            if "loss" in keys and "_step" in keys:
                steps.add(int(float(keys["_step"].value_json)))
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return {"steps": len(steps), "exit_code": exit_code}


def find_run_file(root: Path) -> Path | None:
    files = sorted(root.rglob("*.wandb"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None
