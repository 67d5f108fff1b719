"""Keeping a checkpoint's files without copying them: hard-link a file or a directory tree
file by file, copy what cannot be linked, and tell whether the files were rewritten since.

A hard link is a second name of the same data: once a saved checkpoint has one under Tracer's
storage, a framework's rotation (`save_total_limit`, `save_top_k`, `total_limit`) deleting its
own name frees nothing, and no byte was copied. A link is impossible across filesystems
(EXDEV) and where the kernel forbids linking another user's file (EPERM under
`fs.protected_hardlinks`); those files are left for `copy_tree`, which the caller runs off the
training thread. A link shares the file's data, so a file the framework later rewrites in
place (a plain loop saving to one path; Lightning's `last.ckpt`) changes under the link too:
`Fingerprint` notices, so such a checkpoint is never kept as the healthy one.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import NamedTuple

logger = logging.getLogger(__name__)

# Errors that mean "this file cannot be linked here, copy it": another filesystem, a kernel
# or filesystem that refuses hard links (of another user's file, or on FAT/some FUSE mounts),
# too many links to one inode.
UNLINKABLE = frozenset(
    {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
)


class Fingerprint(NamedTuple):
    """What a tree's files looked like: (relative path, size, mtime in ns) of each."""

    files: tuple[tuple[str, int, int], ...]


@dataclass
class LinkedTree:
    """What `link_tree` did: the files now linked under the destination, and those it could
    not link (relative paths), left to `copy_tree`."""

    linked: list[str] = field(default_factory=list)
    unlinked: list[str] = field(default_factory=list)


def _walk(source: str) -> list[str]:
    """Relative paths of the files of `source` (itself, when it is a file), sorted."""
    if not os.path.isdir(source):
        return [""]
    found = []
    for directory, subdirectories, files in os.walk(source):
        subdirectories.sort()
        relative = os.path.relpath(directory, source)
        for name in sorted(files):
            found.append(os.path.normpath(os.path.join(relative, name)))
    return found


def _join(root: str, relative: str) -> str:
    return os.path.join(root, relative) if relative else root


def link_tree(source: str, destination: str) -> LinkedTree:
    """Hard-link `source` (a file, or a directory's files, recursively) at `destination`,
    which must not exist. Symbolic links are recreated as links; files that cannot be linked
    (`UNLINKABLE`) are listed in `unlinked`. Raises OSError when `source` is missing."""
    if not os.path.lexists(source):
        raise FileNotFoundError(errno.ENOENT, "no checkpoint at this path", source)
    result = LinkedTree()
    for relative in _walk(source):
        target = _join(destination, relative)
        origin = _join(source, relative)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        try:
            if os.path.islink(origin):
                os.symlink(os.readlink(origin), target)
            else:
                os.link(origin, target)
        except OSError as error:
            if error.errno not in UNLINKABLE:
                raise
            result.unlinked.append(relative)
            continue
        result.linked.append(relative)
    if os.path.isdir(source):
        os.makedirs(destination, exist_ok=True)  # an empty checkpoint directory stays one
    return result


def copy_tree(source: str, destination: str, only: list[str]) -> None:
    """Copy the files `only` (relative paths, as `LinkedTree.unlinked`) of `source` into
    `destination`, contents and times. Slow: never on the training thread."""
    for relative in only:
        target = _join(destination, relative)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        shutil.copy2(_join(source, relative), target, follow_symlinks=False)


def fingerprint(path: str, files: list[str]) -> Fingerprint:
    """Size and modification time of each of `files` (relative to `path`), not following
    links; a missing file is (-1, -1)."""
    stats = []
    for relative in sorted(files):
        try:
            status = os.lstat(_join(path, relative))
            stats.append((relative, status.st_size, status.st_mtime_ns))
        except FileNotFoundError:
            stats.append((relative, -1, -1))
    return Fingerprint(tuple(stats))


def remove_tree(path: str) -> None:
    """Remove a file or a directory tree; nothing there is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=False)
    elif os.path.lexists(path):
        os.unlink(path)


def same_file(first: str, second: str) -> bool:
    """Whether the two names are links to one file (same device and inode)."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False
