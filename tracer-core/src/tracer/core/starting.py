"""Starting a run: a new one with a free name, or a stored one resumed from its last step."""

from __future__ import annotations

import difflib
import logging
import os
import time
from typing import NamedTuple, Optional

from tracer.config import TracerConfig
from tracer.core.naming import free_name, new_run_id, random_run_name
from tracer.detection.runner import detection_settings
from tracer.distributed import rank_and_world_size
from tracer.exceptions import DuplicateRunError, RunNotFoundError, TracerError
from tracer.records import RunRecord
from tracer.storage.base import StorageBackend
from tracer.storage.liveness import process_is_alive, this_host

logger = logging.getLogger(__name__)

_NAME_ATTEMPTS = 5


class StartedRun(NamedTuple):
    run_id: str
    run_name: str
    step: int  # the step to continue from: 0 for a new run, the stored count when resumed
    resumed: Optional[RunRecord] = None  # a resumed run as it was stored before


def start_or_resume(storage: StorageBackend, config: TracerConfig) -> StartedRun:
    """Store a new run, or mark `config.resume` running again; refuses a live run."""
    rank, world_size = rank_and_world_size()
    if config.resume is not None:
        record = _find_run(storage, config, config.resume)
        if (
            record["status"] == "running"
            and record["pid"] != os.getpid()
            and record["host"] == this_host()
            and record["pid"] is not None
            and process_is_alive(record["pid"])
        ):
            raise TracerError(
                f"run {record['run_id']} ({record['run_name']!r}) is still running in"
                f" process {record['pid']}; resume it after that process ends"
            )
        storage.update_run(
            record["run_id"],
            status="running",
            end_time=None,
            error=None,
            heartbeat=time.time(),
            pid=os.getpid(),
            host=this_host(),
            rank=rank,
            world_size=world_size,
        )
        logger.info(
            "Tracer resumed run %s (%r) at step %d.",
            record["run_id"],
            record["run_name"],
            record["total_steps"],
        )
        return StartedRun(record["run_id"], record["run_name"], record["total_steps"], record)
    if config.run_id is not None and storage.get_run(config.run_id) is not None:
        raise DuplicateRunError(
            f"a run with id {config.run_id!r} exists; pass resume={config.run_id!r} to continue it"
        )
    for _ in range(_NAME_ATTEMPTS):
        name = _choose_name(storage, config)
        run_id = config.run_id or new_run_id()
        try:
            storage.create_run(
                run_id,
                config.project_name,
                name,
                time.time(),
                config.config,
                tags=config.tags,
                notes=config.notes,
                host=this_host(),
                pid=os.getpid(),
                rank=rank,
                world_size=world_size,
                heartbeat_interval=config.heartbeat_interval,
                settings=detection_settings(config),
            )
        except DuplicateRunError:
            continue  # another process took the name between our check and insert
        return StartedRun(run_id, name, 0)
    raise TracerError(f"could not find a free run name in project {config.project_name!r}")


def _choose_name(storage: StorageBackend, config: TracerConfig) -> str:
    wanted = config.run_name
    if wanted is None:
        return random_run_name()
    taken = {run["run_name"] for run in storage.list_runs(config.project_name)}
    name = free_name(wanted, taken)
    if name != wanted:
        logger.warning(
            "Run name %r is taken in project %r; this run is %r. Pass resume=%r to continue"
            " the earlier run instead.",
            wanted,
            config.project_name,
            name,
            wanted,
        )
    return name


def _find_run(storage: StorageBackend, config: TracerConfig, id_or_name: str) -> RunRecord:
    record = storage.get_run(id_or_name)
    if record is not None and record["project_name"] == config.project_name:
        return record
    runs = storage.list_runs(config.project_name)
    for run in runs:
        if run["run_name"] == id_or_name:
            return run
    candidates = [run["run_name"] for run in runs] + [run["run_id"] for run in runs]
    near = difflib.get_close_matches(id_or_name, candidates, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
    raise RunNotFoundError(
        f"no run {id_or_name!r} in project {config.project_name!r} to resume{hint}"
    )
