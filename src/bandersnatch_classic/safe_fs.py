"""Link-safe steps below a mirror directory: directories opened one by one without following
a link, temporaries created exclusively, and a walk that never leaves through a link.

Others may be able to write below the mirror directory (docs/security.md), so
:class:`~bandersnatch_classic.storage.FilesystemStorage` writes, deletes and lists only
through these: a link where a directory should be is refused as
:class:`~bandersnatch_classic.errors.PlantedLink`, named.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from typing import TypeVar

from .errors import LocalIOError, PlantedLink

T = TypeVar("T")

#: A directory below the mirror directory is opened this way: never through a link.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A temporary is a new file: never an existing one, never through a link.
TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Tries at creating a temporary whose name is taken (a leftover, or a name planted again at once).
TEMP_TRIES = 3


def _is_link(name: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_step(parent: int | None, name: str, shown: str, action: str, create: bool, known: bool = False) -> int:
    """Open the directory ``name`` in ``parent`` without following a link.

    ``create``: make it when it is missing; unless it is ``known`` to exist, by trying to
    make it first (a new directory costs two calls, a known one only the open). ``shown``
    is its absolute path, for the error.
    """
    if create and not known:
        _make_dir(parent, name)
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not (create and known):
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, parent):
            raise PlantedLink.at(shown, action) from None
        raise
    return open_step(parent, name, shown, action, create)  # known, but removed since


def _make_dir(parent: int | None, name: str) -> None:
    try:
        if parent is None:  # the first directory below the mirror's: make the mirror's too
            os.makedirs(name, exist_ok=True)
        else:
            os.mkdir(name, dir_fd=parent)
    except FileExistsError:
        pass  # also a link in its place: the open refuses it


def open_dir(root: str, rel_dir: str, action: str, create: bool, known: set[str]) -> int:
    """A descriptor of the directory ``rel_dir`` of ``root`` ("" for ``root`` itself, which
    may be a link), each directory below ``root`` opened in its parent without following a link.

    ``create``: make the missing ones; ``known`` holds the directories made or opened for a
    write so far (they are opened without trying to make them first) and gains the new
    ones. Raises :class:`PlantedLink` for a link on the way (``action`` says what was
    refused), FileNotFoundError for a missing directory, and OSError for the rest.
    """
    if not rel_dir:
        if create:
            os.makedirs(root, exist_ok=True)
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    first, *rest = rel_dir.split("/")
    shown = f"{root}/{first}"
    fd = open_step(None, shown, shown, action, create, shown in known)
    try:
        for part in rest:
            if create:
                known.add(shown)
            shown = f"{shown}/{part}"
            sub = open_step(fd, part, shown, action, create, shown in known)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    if create:
        known.add(shown)
    return fd


def create_temp(name: str, dir_fd: int, create: Callable[[], T]) -> T:
    """Make the temporary ``name`` in ``dir_fd`` with ``create``, which fails when the name is
    taken (``O_CREAT|O_EXCL|O_NOFOLLOW``, or ``symlink``) and so follows no link.

    Its name is predictable on purpose: a run killed outright leaves at most one temporary
    per path, and the next write of that path removes it. Whatever holds the name (that
    leftover, or a link someone planted there) is unlinked, which removes the name and never
    touches what a link points at.
    """
    for attempt in range(1, TEMP_TRIES + 1):
        try:
            return create()
        except FileExistsError:
            if attempt == TEMP_TRIES:
                raise
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
    raise AssertionError("unreachable")


def files_in(dir_fd: int, root: str, rel: str) -> Iterator[tuple[str, int]]:
    """``(path, size)`` of every file below the open directory ``rel`` of ``root``, a link
    counted as a file; a link to a directory is refused (:class:`PlantedLink`)."""
    try:
        with os.scandir(dir_fd) as it:
            entries = list(it)
    except OSError as exc:
        raise LocalIOError.of(f"{root}/{rel}", exc) from exc
    for entry in entries:
        path = f"{rel}/{entry.name}"
        sub = None
        try:
            if entry.is_dir(follow_symlinks=False):
                sub = open_step(dir_fd, entry.name, f"{root}/{path}", "list files", create=False)
            elif entry.is_symlink() and entry.is_dir():
                raise PlantedLink.at(f"{root}/{path}", "list files")
            else:
                size = entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise LocalIOError.of(f"{root}/{path}", exc) from exc
        if sub is None:
            yield path, size
            continue
        try:
            yield from files_in(sub, root, path)
        finally:
            os.close(sub)


def remove_tree(name: str, dir_fd: int) -> None:
    """Remove the directory ``name`` in ``dir_fd`` and everything in it, deepest first,
    working from directory descriptors: a link inside is removed, never followed.

    (What ``shutil.rmtree(name, dir_fd=...)`` does from Python 3.11 on; the oldest Python
    this tool supports has no ``dir_fd`` there.)
    """
    for _path, dirs, files, fd in os.fwalk(name, topdown=False, follow_symlinks=False, dir_fd=dir_fd):
        for entry in files:
            os.unlink(entry, dir_fd=fd)
        for entry in dirs:  # a link to a directory is listed here, and not walked into
            if _is_link(entry, fd):
                os.unlink(entry, dir_fd=fd)
            else:
                os.rmdir(entry, dir_fd=fd)
    os.rmdir(name, dir_fd=dir_fd)
