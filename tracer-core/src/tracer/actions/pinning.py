"""Pinning the last healthy model checkpoint of a run (`pin_checkpoints=True`).

Why staging. A framework's rotation (HF `save_total_limit`, Lightning `save_top_k`,
Accelerate `total_limit`) deletes a checkpoint soon after the next save, and an anomaly is
found on the writer thread up to a flush later, after training went on. So each save is
hard-linked, as it is recorded (`stage`, on the training thread: links only, no byte copied),
into a slot of `<storage>/pinned/<run>/.staging/`; rotation then removes only the framework's
name. When an anomaly at or above `pin_on` opens (`pin`, on the writer thread), the slot of
the last save before its onset is renamed to `<storage>/pinned/<run>/<name>`: one rename,
instant. Files that could not be linked (another filesystem, a forbidden link) are copied
from the checkpoint's own path then, on this object's worker thread, into `<name>.partial`
renamed when whole; a rotation that deleted them first makes that pin fail, reported.

Which slots are kept. A slot is needed while an anomaly may still open with its onset after
that save and before the next one; once detection has gone past a later save
(`detected_through`, the writer's progress after it acted on each batch's anomalies), it is
released (removed on the worker thread: dropping the last link of a large file takes time).
So a healthy run holds about one rotated checkpoint's disk space beyond the framework's own.
At most `MAX_STAGED` slots are held when detection falls behind (storage failing).

A file rewritten in place after its save (one path saved again and again: a plain loop's
`model.pt`, Lightning's `last.ckpt`) changes under its link as well; the slot's fingerprint
(sizes and times at staging) shows it, and such a save is not pinned: it no longer holds the
healthy weights. Save each checkpoint to a new path to have it pinned.

The run records each outcome as an event through `submit_event`: "checkpoint_pinned" (the
saved path, the pinned path, the save's step, the anomaly) or "checkpoint_pin_failed".
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from tracer.actions.pins import (
    PARTIAL_SUFFIX,
    STAGING_DIRECTORY,
    pin_name,
    run_directory,
)
from tracer.actions.trees import (
    Fingerprint,
    copy_tree,
    fingerprint,
    link_tree,
    remove_tree,
)
from tracer.records import EventWrite

logger = logging.getLogger(__name__)

PINNED_EVENT = "checkpoint_pinned"
PIN_FAILED_EVENT = "checkpoint_pin_failed"
MAX_STAGED = 8  # slots held at most while detection lags (each may hold a rotated checkpoint)
MAX_REMEMBERED = 64  # saves remembered (without slots past MAX_STAGED) for a late anomaly
_STOP = object()


@dataclass
class _Save:
    """One recorded save: its own path (absolute; `recorded` as the run was given it), step,
    and the slot of links (None once released)."""

    sequence: int
    path: str
    step: int
    recorded: str
    slot: Optional[str] = None
    unlinked: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    fingerprint: Optional[Fingerprint] = None
    pinned_path: Optional[str] = None


class CheckpointPins:
    """The staging slots and pins of one run, on the process that writes it."""

    def __init__(
        self,
        storage_directory: str,
        run_id: str,
        submit_event: Callable[[EventWrite], None],
        detected_through: Callable[[], int],
    ) -> None:
        self.directory = run_directory(storage_directory, run_id)
        self._staging = os.path.join(self.directory, STAGING_DIRECTORY)
        self._submit_event = submit_event
        self._detected_through = detected_through
        self._saves: deque[_Save] = deque(maxlen=MAX_REMEMBERED)
        self._sequence = 0
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._worker: Optional[threading.Thread] = None
        self._warned: set[str] = set()
        self._closed = False
        if os.path.isdir(self._staging):  # left by a process of this run that was killed
            stale = f"{self._staging}.stale.{os.getpid()}"
            try:
                os.rename(self._staging, stale)
            except OSError as error:
                logger.warning("Tracer could not clear %s: %s", self._staging, error)
            else:
                self._run_later(functools.partial(remove_tree_quietly, stale))

    # -- training thread --------------------------------------------------------------------
    def stage(self, path: str, step: int) -> None:
        """A save was recorded: link its files into a new slot now (before any rotation can
        delete them), and release the slots detection no longer needs."""
        if self._closed:
            return
        self._sequence += 1
        save = _Save(self._sequence, os.path.abspath(path), step, path)
        slot = os.path.join(self._staging, f"{save.sequence}")
        try:
            linked = link_tree(save.path, slot)
        except OSError as error:
            self._warn_once(
                "stage",
                "Tracer could not keep the checkpoint saved at %s for pinning (%s); it can only"
                " be pinned while it is still there.",
                save.path,
                error,
            )
            remove_tree_quietly(slot)
        else:
            save.slot, save.linked, save.unlinked = slot, linked.linked, linked.unlinked
            save.fingerprint = fingerprint(slot, linked.linked)
            if linked.unlinked:
                self._warn_once(
                    "copy",
                    "Tracer could not hard-link %d file(s) of %s into %s (another filesystem?);"
                    " pinning copies them when an anomaly opens, if the framework has not"
                    " deleted them by then. A storage_path on the checkpoints' filesystem"
                    " avoids both the copy and the risk.",
                    len(linked.unlinked),
                    save.path,
                    self.directory,
                )
        with self._lock:
            self._saves.append(save)
            released = self._release_unneeded()
        for slot_path in released:
            self._run_later(functools.partial(remove_tree_quietly, slot_path))

    def _release_unneeded(self) -> list[str]:
        """Slots of saves detection has gone past (all but the newest of them), and the
        oldest beyond `MAX_STAGED`. Called under the lock."""
        watermark = self._detected_through()
        held = [save for save in self._saves if save.slot is not None]
        past = [save for save in held if save.step <= watermark]
        release = past[:-1]
        kept = [save for save in held if save not in release]
        if len(kept) > MAX_STAGED:
            self._warn_once(
                "lag",
                "Tracer releases staged checkpoints of run folder %s before detection has seen"
                " their steps (storage is behind); an anomaly found late may find none to pin.",
                self.directory,
            )
            release += kept[: len(kept) - MAX_STAGED]
        slots = []
        for save in release:
            assert save.slot is not None
            slots.append(save.slot)
            save.slot = None
        return slots

    # -- writer thread ----------------------------------------------------------------------
    def pin(self, onset_step: int, anomaly: dict[str, Any]) -> Optional[str]:
        """Pin the last save recorded before `onset_step`; returns its pinned path (written
        in full by now, or being copied on the worker thread), or None when there is no such
        save or it cannot be kept (told in the log and as an event)."""
        with self._lock:
            before = [save for save in self._saves if save.step < onset_step]
            if not before:
                return None
            save = max(before, key=lambda s: (s.step, s.sequence))
            if save.pinned_path is not None:
                return save.pinned_path
            return self._promote(save, anomaly)

    def _promote(self, save: _Save, anomaly: dict[str, Any]) -> Optional[str]:
        """Move the save's slot to its pinned name (linking the original again when the slot
        was released), then copy what was not linked, on the worker. Under the lock."""
        os.makedirs(self.directory, exist_ok=True)
        name = pin_name(self.directory, save.path, save.step)
        final = os.path.join(self.directory, name)
        partial = final + PARTIAL_SUFFIX
        try:
            if save.slot is None:  # released or never staged: what stands at the path now
                linked = link_tree(save.path, partial)
                now = fingerprint(partial, linked.linked)
                if save.fingerprint is not None and now != save.fingerprint:
                    raise _Rewritten(save.path)
                save.linked, save.unlinked = linked.linked, linked.unlinked
            else:
                if fingerprint(save.slot, save.linked) != save.fingerprint:
                    raise _Rewritten(save.path)
                os.rename(save.slot, partial)
                save.slot = None
        except (OSError, _Rewritten) as error:
            remove_tree_quietly(partial)
            self._failed(save, anomaly, str(error))
            return None
        save.pinned_path = final
        method = "copy" if save.unlinked and not save.linked else "hardlink"
        if save.unlinked and save.linked:
            method = "hardlink+copy"
        self._submit_event(
            {
                "step": save.step,
                "kind": PINNED_EVENT,
                "data": {
                    "path": save.recorded,  # as in its "model_saved" event
                    "pinned_path": final,
                    "method": method,
                    "anomaly_type": anomaly.get("anomaly_type"),
                    "anomaly_step": anomaly.get("step"),
                    "severity": anomaly.get("severity"),
                },
            }
        )
        if save.unlinked:
            self._run_later(lambda: self._finish_copy(save, partial, final, dict(anomaly)))
        else:
            os.rename(partial, final)
        logger.warning(
            "Tracer pinned the checkpoint saved at step %d (%s) as %s, before %s at step %s.",
            save.step,
            save.path,
            final,
            anomaly.get("anomaly_type"),
            anomaly.get("step"),
        )
        return final

    # -- worker thread ----------------------------------------------------------------------
    def _finish_copy(self, save: _Save, partial: str, final: str, anomaly: dict[str, Any]) -> None:
        try:
            copy_tree(save.path, partial, save.unlinked)
            os.rename(partial, final)
        except OSError as error:
            remove_tree_quietly(partial)
            self._failed(save, anomaly, f"copying from {save.path} failed: {error}")

    def _failed(self, save: _Save, anomaly: dict[str, Any], reason: str) -> None:
        logger.warning(
            "Tracer could not pin the checkpoint saved at step %d (%s): %s",
            save.step,
            save.path,
            reason,
        )
        self._submit_event(
            {
                "step": save.step,
                "kind": PIN_FAILED_EVENT,
                "data": {
                    "path": save.recorded,
                    "reason": reason,
                    "anomaly_type": anomaly.get("anomaly_type"),
                    "anomaly_step": anomaly.get("step"),
                },
            }
        )

    def _run_later(self, job: Callable[[], None]) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="tracer-pinning", daemon=True)
            self._worker.start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            try:
                job()
            except Exception:
                logger.exception("Tracer's checkpoint pinning hit an unexpected error.")

    # -- end --------------------------------------------------------------------------------
    def close(self, timeout: float) -> bool:
        """The run ends: finish the copies under way (up to `timeout` seconds), then drop the
        staging area. False when the copies did not finish in time."""
        self._closed = True
        self._run_later(lambda: remove_tree_quietly(self._staging))
        self._jobs.put(_STOP)
        assert self._worker is not None
        self._worker.join(timeout)
        if self._worker.is_alive():
            logger.warning(
                "Tracer is still copying a pinned checkpoint into %s after %.0f s; the run"
                " ends without waiting (the copy goes on while this process lives).",
                self.directory,
                timeout,
            )
            return False
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)  # nothing pinned: no empty folder left behind
        return True

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)


class _Rewritten(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} was written again after it was recorded (saved in place to one path), so"
            " it no longer holds the checkpoint of that step; save each checkpoint to a new"
            " path to have it pinned"
        )


def remove_tree_quietly(path: str) -> None:
    try:
        remove_tree(path)
    except OSError as error:
        logger.warning("Tracer could not remove %s: %s", path, error)
