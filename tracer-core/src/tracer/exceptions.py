"""Exceptions Tracer raises at the call site. Background failures are logged, never raised."""

from __future__ import annotations


class TracerError(Exception):
    """Base class of Tracer's own errors."""


class StorageError(TracerError):
    """The storage cannot be opened or used: a bad path, a corrupt or foreign database file."""


class RunNotFoundError(TracerError, LookupError):
    """A run id or name that matches no stored run; the message lists near matches."""


class DuplicateRunError(StorageError):
    """`create_run` with an id, or a (project, name), that is already stored."""
