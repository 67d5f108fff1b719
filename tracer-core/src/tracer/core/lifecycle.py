"""Process-level safety nets, so no run stays "running" after its process ends.

Installed once, when the first run starts (never at import):
- an `atexit` handler finishes every run still open ("finished", or "failed" after an
  uncaught exception);
- a `sys.excepthook` wrapper marks open runs "failed" with the error (KeyboardInterrupt:
  "killed"), then calls the hook that was there before;
- a SIGTERM handler (main thread only) marks open runs "killed", then hands the signal to the
  handler that was there before, or re-raises it with the default action. A SIGTERM that
  lands while the main thread holds a writer's flush lock (`async_writes=False`) is handled
  as soon as that lock is released: finishing the runs needs the lock.
- an `os.register_at_fork` handler: a child forked from a process with open runs (a
  `multiprocessing` worker with the fork start method, a pre-fork server, a bare `os.fork()`)
  inherits none of them. Each becomes inert in the child (`TrainingTracer.forked_away`), the
  child's exit handlers no longer know them, and it exits at once; the parent's runs go on
  untouched. A child that calls `tracer.init()` gets a run of its own.
A SIGKILL cannot be caught: readers see such a run as "crashed" through its heartbeat and pid.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Optional, Protocol, Union

logger = logging.getLogger(__name__)


class OpenRun(Protocol):
    """What this module needs of a run (`TrainingTracer`, which imports this module)."""

    run_id: str
    status_at_exit: str
    error_at_exit: Optional[str]

    def finish(self, status: str = ..., error: Optional[str] = ...) -> None: ...

    def forked_away(self) -> None: ...


_open_runs: dict[int, OpenRun] = {}
_lock = threading.Lock()
_installed = False
_previous_excepthook: Callable[..., Any] = sys.excepthook
_previous_sigterm: Union[Callable[[int, Optional[FrameType]], Any], int, None] = None
_MAIN_THREAD_ID = threading.main_thread().ident
_main_thread_in_flush = 0  # DeferringLocks the main thread holds or waits for
_deferred_sigterm: Optional[int] = None


class DeferringLock:
    """A writer's flush lock. Python runs signal handlers in the main thread, between any two
    bytecodes: a SIGTERM handler that finished the runs while the main thread held this lock
    (a synchronous write) would wait for it forever. Such a signal is held back instead, and
    handled as soon as the main thread releases the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        global _main_thread_in_flush
        if threading.get_ident() != _MAIN_THREAD_ID:
            self._lock.acquire()
            return
        _main_thread_in_flush += 1  # before acquiring: a signal may land right after
        try:
            self._lock.acquire()
        except BaseException:  # KeyboardInterrupt while waiting
            _main_thread_in_flush -= 1
            raise

    def __exit__(self, *exc_info: object) -> None:
        global _main_thread_in_flush, _deferred_sigterm
        self._lock.release()
        if threading.get_ident() != _MAIN_THREAD_ID:
            return
        _main_thread_in_flush -= 1
        if _main_thread_in_flush == 0 and _deferred_sigterm is not None:
            signum, _deferred_sigterm = _deferred_sigterm, None
            _on_sigterm(signum, None)


def register(run: OpenRun) -> None:
    global _installed
    with _lock:
        _open_runs[id(run)] = run
        if not _installed:
            _install()
            _installed = True


def unregister(run: OpenRun) -> None:
    with _lock:
        _open_runs.pop(id(run), None)


def _end_all(status: str, error: Optional[str]) -> None:
    with _lock:
        runs = list(_open_runs.values())
    for run in runs:
        try:
            run.finish(status=status, error=error)
        except Exception:
            logger.exception("Tracer could not finish run %s at exit.", run.run_id)


def keep_forever(obj: object) -> None:
    """Never free `obj` in this process: for a storage connection inherited across fork,
    whose finalizer (at interpreter exit too) would close the parent's file from the child."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))  # a reference nothing ever drops


def _after_fork_in_child() -> None:
    """The first thing a forked child runs: forget the parent's runs (see the docstring).
    Locks another thread of the parent held at the fork stay held forever in the child, so
    this module's lock is replaced, not taken."""
    global _lock, _main_thread_in_flush, _deferred_sigterm, _MAIN_THREAD_ID
    _lock = threading.Lock()
    runs = list(_open_runs.values())
    _open_runs.clear()
    _main_thread_in_flush = 0
    _deferred_sigterm = None
    _MAIN_THREAD_ID = threading.get_ident()  # the forking thread is the child's only one
    for run in runs:
        try:
            run.forked_away()
        except Exception:  # never let the child's start fail because of Tracer
            logger.exception("Tracer could not detach run %s in a forked child.", run.run_id)


def _install() -> None:
    global _previous_excepthook, _previous_sigterm
    atexit.register(_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    if threading.current_thread() is threading.main_thread():
        try:
            _previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # embedded interpreters may refuse
            logger.debug("Tracer could not install its SIGTERM handler.", exc_info=True)


def _at_exit() -> None:
    with _lock:
        runs = list(_open_runs.values())
    for run in runs:  # each run says how a forgotten finish should read (adapters: failed)
        try:
            run.finish(status=run.status_at_exit, error=run.error_at_exit)
        except Exception:
            logger.exception("Tracer could not finish run %s at exit.", run.run_id)


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: Optional[TracebackType]
) -> None:
    status = "killed" if issubclass(exc_type, KeyboardInterrupt) else "failed"
    summary = "".join(traceback.format_exception_only(exc_type, exc)).strip()
    _end_all(status, summary)
    _previous_excepthook(exc_type, exc, tb)


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    global _deferred_sigterm
    if _main_thread_in_flush:
        _deferred_sigterm = signum  # handled when the flush releases its lock
        return
    _end_all("killed", "SIGTERM")
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
