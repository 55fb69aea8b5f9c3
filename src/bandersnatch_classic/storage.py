"""Where mirrored bytes go: the :class:`Storage` interface and its filesystem backend.

Every write goes to a temporary file in the destination directory and is renamed into
place, so a served path only ever holds a complete file; the temporary is removed when
anything fails. The temporary's name is derived from the target's (``.<name>.tmp``):
a run that is killed outright can leave one behind, and the next write of the same
path unlinks it and creates a new one, so leftovers never pile up. Only one process
writes a mirror at a time (the run lock), and one task writes a given path at a time.
Paths are relative to the mirror directory and are checked to stay in it.

Others may be able to write below the mirror directory (docs/security.md), so nothing
below it is followed when writing or deleting: temporaries are created exclusively
(``O_CREAT|O_EXCL|O_NOFOLLOW``), directories are opened one by one without following
links, and a link where a directory should be stops the run, named.

Every error of a local system call (disk full, permission denied, read-only file system)
leaves this module as :class:`~bandersnatch_classic.errors.LocalIOError` naming the path,
so that the callers can tell it from a network error without looking at strings: the
file handed out by :meth:`FilesystemStorage.writer` converts its own write errors, and
leaves whatever else fails inside the caller's block (a socket, say) as it is.

This is the hot path of a full sync (one call per file), so paths are handled as
strings, not :class:`~pathlib.Path` objects, and each write makes as few system calls
as it can.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from .errors import LocalIOError, PlantedLink, UnsafePath

TEMP_SUFFIX = ".tmp"
T = TypeVar("T")
HASH_CHUNK = 1 << 20


def check_relative(rel: str) -> str:
    """Return ``rel``; raise :class:`UnsafePath` unless it is a plain path inside the mirror.

    The one path-safety check: every path a backend touches passes it, and so does every
    path :mod:`~bandersnatch_classic.layout` derives from what the upstream says.
    """
    if not rel or "\x00" in rel or "\\" in rel or rel[0] == "/" or rel[-1] == "/" or "//" in rel:
        raise UnsafePath(f"unsafe path {rel!r}")
    if "." in rel and any(part in (".", "..") for part in rel.split("/")):
        raise UnsafePath(f"unsafe path {rel!r}")
    return rel


class Storage(Protocol):
    """Everything the engine, ``verify`` and ``delete`` need from a place to keep a mirror.

    Paths are relative to the mirror (``web/simple/...``). This is the whole interface:
    nothing outside a backend opens, walks or unlinks a file by its local path, so a backend
    that keeps the mirror elsewhere (an object store) needs nothing else changed.
    """

    def display(self, rel: str) -> str: ...
    def open(self, rel: str) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def writer(self, rel: str, mtime: datetime | None = None) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def write_bytes(self, rel: str, data: bytes, mtime: datetime | None = None) -> None: ...
    def write_if_changed(self, rel: str, data: bytes) -> bool: ...
    def read_bytes(self, rel: str) -> bytes: ...
    def read_text(self, rel: str) -> str | None: ...
    def sha256(self, rel: str) -> str | None: ...
    def read_sha256(self, rel: str) -> str | None: ...
    def stat(self, rel: str) -> os.stat_result | None: ...
    def exists(self, rel: str) -> bool: ...
    def delete(self, rel: str) -> bool: ...
    def delete_tree(self, rel: str) -> bool: ...
    def symlink(self, rel: str, target_name: str) -> None: ...
    def is_link(self, rel: str) -> bool: ...
    def files(self, rel: str) -> Iterator[tuple[str, int]]: ...
    def remove_empty_dirs(self, rel: str, keep_top: bool = False) -> None: ...


class _LocalFile:
    """The file :meth:`FilesystemStorage.writer` yields: its write errors are local I/O errors."""

    __slots__ = ("_fh", "_path")

    def __init__(self, fh: BinaryIO, path: str) -> None:
        self._fh = fh
        self._path = path

    def write(self, data: bytes | memoryview) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            raise LocalIOError.of(self._path, exc) from exc


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: A directory below the mirror directory is opened this way: never through a link.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A temporary is a new file: never an existing one, never through a link.
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Tries at creating a temporary whose name is taken (a leftover, or a name planted again at once).
_TEMP_TRIES = 3


def _is_link(name: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_step(parent: int | None, name: str, shown: str, action: str, create: bool, known: bool = False) -> int:
    """Open the directory ``name`` in ``parent`` without following a link.

    ``create``: make it when it is missing; unless it is ``known`` to exist, by trying to
    make it first (a new directory costs two calls, a known one only the open). ``shown``
    is its absolute path, for the error.
    """
    if create and not known:
        _make_dir(parent, name)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not (create and known):
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, parent):
            raise PlantedLink.at(shown, action) from None
        raise
    return _open_step(parent, name, shown, action, create)  # known, but removed since


def _make_dir(parent: int | None, name: str) -> None:
    try:
        if parent is None:  # the first directory below the mirror's: make the mirror's too
            os.makedirs(name, exist_ok=True)
        else:
            os.mkdir(name, dir_fd=parent)
    except FileExistsError:
        pass  # also a link in its place: the open refuses it


def _create_temp(name: str, dir_fd: int, create: Callable[[], T]) -> T:
    """Make the temporary ``name`` in ``dir_fd`` with ``create``, which fails when the name is
    taken (``O_CREAT|O_EXCL|O_NOFOLLOW``, or ``symlink``) and so follows no link.

    Its name is predictable on purpose: a run killed outright leaves at most one temporary
    per path, and the next write of that path removes it. Whatever holds the name (that
    leftover, or a link someone planted there) is unlinked, which removes the name and never
    touches what a link points at.
    """
    for attempt in range(1, _TEMP_TRIES + 1):
        try:
            return create()
        except FileExistsError:
            if attempt == _TEMP_TRIES:
                raise
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
    raise AssertionError("unreachable")


class FilesystemStorage:
    """A mirror directory on a local filesystem.

    The mirror directory itself may be a symbolic link (operators put mirrors on other
    disks that way), but nothing below it is reached through one when writing or deleting:
    each directory on the way is opened relative to its parent with ``O_NOFOLLOW``, and the
    file is created, renamed or unlinked relative to that descriptor, so a link planted
    under ``web/`` (even one swapped in during the run) cannot send a write or a delete
    outside the mirror: :class:`~bandersnatch_classic.errors.PlantedLink` names it instead.
    Reads follow links.
    """

    def __init__(self, root: Path, manage_permissions: bool = True) -> None:
        self.root = root
        self._root = os.fspath(root)
        #: New files get 0666 less the umask. A web server runs as another user, so when
        #: the umask would hide files from "other" and we manage permissions, they get 0644.
        self.file_mode = 0o644 if manage_permissions and _current_umask() & 0o004 else None
        #: Directories made or opened for a write in this run: the next write opens them
        #: without trying to make them first.
        self._known_dirs: set[str] = set()

    def _fspath(self, rel: str) -> str:
        """The absolute path of ``rel``, refusing anything that leaves the mirror directory."""
        return f"{self._root}/{check_relative(rel)}"

    def display(self, rel: str) -> str:
        """How messages (and the diff file) name ``rel``: its absolute path."""
        return self._fspath(rel)

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        """``rel`` opened for reading; FileNotFoundError when it does not exist."""
        target = self._fspath(rel)
        try:
            fh = open(target, "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc
        with fh:
            yield fh

    def _open_dir(self, rel_dir: str, action: str, create: bool = False) -> int:
        """A descriptor of the directory ``rel_dir`` ("" for the mirror directory), each
        directory below the mirror's opened in its parent without following a link.

        ``create``: make the missing ones. Raises :class:`PlantedLink` for a link on the way
        (``action`` says what was refused), FileNotFoundError for a missing directory, and
        OSError for the rest.
        """
        if not rel_dir:
            if create:
                os.makedirs(self._root, exist_ok=True)
            return os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        known = self._known_dirs
        first, *rest = rel_dir.split("/")
        shown = f"{self._root}/{first}"
        fd = _open_step(None, shown, shown, action, create, shown in known)
        try:
            for part in rest:
                if create:
                    known.add(shown)
                shown = f"{shown}/{part}"
                sub = _open_step(fd, part, shown, action, create, shown in known)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        if create:
            known.add(shown)
        return fd

    @contextlib.contextmanager
    def _directory(self, rel_dir: str, action: str, create: bool = False) -> Iterator[int]:
        fd = self._open_dir(rel_dir, action, create)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def writer(self, rel: str, mtime: datetime | None = None) -> Iterator[BinaryIO]:
        """Yield a file to write ``rel``'s new content to; it replaces ``rel`` only on success."""
        target = self._fspath(rel)
        directory, _, name = rel.rpartition("/")
        temp = f".{name}{TEMP_SUFFIX}"
        try:
            dir_fd = self._open_dir(directory, "write", create=True)
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc
        try:
            try:
                fd = _create_temp(temp, dir_fd, lambda: os.open(temp, _TEMP_FLAGS, 0o666, dir_fd=dir_fd))
                fh = open(fd, "wb")
            except OSError as exc:
                raise LocalIOError.of(target, exc) from exc
            try:
                yield _LocalFile(fh, target)  # type: ignore[misc]  # write() is all a writer needs
                try:
                    fh.flush()  # a full disk can show here
                    if self.file_mode is not None:
                        os.fchmod(fh.fileno(), self.file_mode)
                    if mtime is not None:
                        stamp = mtime.timestamp()
                        os.utime(fh.fileno(), (stamp, stamp))
                    fh.close()
                    # A rename follows no link: one at the target's name is replaced.
                    os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except OSError as exc:
                    raise LocalIOError.of(target, exc) from exc
            except BaseException:
                with contextlib.suppress(OSError):
                    fh.close()
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=dir_fd)
                raise
        finally:
            os.close(dir_fd)

    def write_bytes(self, rel: str, data: bytes, mtime: datetime | None = None) -> None:
        with self.writer(rel, mtime) as fh:
            fh.write(data)

    def write_if_changed(self, rel: str, data: bytes) -> bool:
        """Write ``data`` unless ``rel`` already holds exactly it; say whether it wrote."""
        target = self._fspath(rel)
        try:
            with open(target, "rb") as fh:
                if fh.read() == data:
                    return False
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc
        self.write_bytes(rel, data)
        return True

    def read_bytes(self, rel: str) -> bytes:
        target = self._fspath(rel)
        try:
            with open(target, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc

    def read_text(self, rel: str) -> str | None:
        """The file's text, or None when it does not exist."""
        target = self._fspath(rel)
        try:
            with open(target, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc

    def sha256(self, rel: str) -> str | None:
        """The hex sha256 of a file, or None when it does not exist."""
        target = self._fspath(rel)
        digest = hashlib.sha256()
        try:
            with open(target, "rb") as fh:
                while chunk := fh.read(HASH_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc
        return digest.hexdigest()

    def read_sha256(self, rel: str) -> str | None:
        """The sha256 of the bytes, read whole: here the same as :meth:`sha256` (a backend
        that stores hashes beside its objects answers ``sha256`` from those)."""
        return self.sha256(rel)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self._fspath(rel))

    def stat(self, rel: str) -> os.stat_result | None:
        target = self._fspath(rel)
        try:
            return os.stat(target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc

    def delete(self, rel: str) -> bool:
        """Remove a file (a link itself, never what it points at); say whether there was one."""
        target = self._fspath(rel)
        directory, _, name = rel.rpartition("/")
        try:
            with self._directory(directory, "delete") as dir_fd:
                os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc
        return True

    def delete_tree(self, rel: str) -> bool:
        """Remove a directory and everything in it; say whether there was one.

        A link in its place is refused, as one on the way to it is; inside it, links are
        removed, never followed (:func:`shutil.rmtree` works from directory descriptors).
        """
        target = self._fspath(rel)
        directory, _, name = rel.rpartition("/")
        try:
            with self._directory(directory, "delete") as dir_fd:
                mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise PlantedLink.at(target, "delete")
                if not stat.S_ISDIR(mode):
                    return False
                shutil.rmtree(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            failed = exc.filename if isinstance(exc.filename, str) else name
            where = failed if failed.startswith("/") else f"{target.rsplit('/', 1)[0]}/{failed}"
            raise LocalIOError.of(where, exc) from exc
        return True

    def symlink(self, rel: str, target_name: str) -> None:
        """Point ``rel`` at ``target_name`` (relative to ``rel``'s directory) atomically: the
        link is made at a temporary name and renamed over ``rel``, which is never followed."""
        link = self._fspath(rel)
        directory, _, name = rel.rpartition("/")
        temp = f".{name}{TEMP_SUFFIX}"
        try:
            with self._directory(directory, "write", create=True) as dir_fd:
                _create_temp(temp, dir_fd, lambda: os.symlink(target_name, temp, dir_fd=dir_fd))
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            raise LocalIOError.of(link, exc) from exc

    def is_link(self, rel: str) -> bool:
        """Whether ``rel`` is a symbolic link (also one whose target is gone)."""
        return os.path.islink(self._fspath(rel))

    def files(self, rel: str) -> Iterator[tuple[str, int]]:
        """``(path, size)`` of every file below the directory ``rel``, a link counted as a file.

        A link to a directory is refused (:class:`PlantedLink`): what is listed here is what
        ``verify --delete`` may remove, and nothing this tool makes below the mirror is one.
        """
        base = self._fspath(rel)
        try:
            dir_fd = self._open_dir(rel, "list files")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LocalIOError.of(base, exc) from exc
        try:
            yield from self._files_in(dir_fd, rel)
        finally:
            os.close(dir_fd)

    def _files_in(self, dir_fd: int, rel: str) -> Iterator[tuple[str, int]]:
        try:
            with os.scandir(dir_fd) as it:
                entries = list(it)
        except OSError as exc:
            raise LocalIOError.of(f"{self._root}/{rel}", exc) from exc
        for entry in entries:
            path = f"{rel}/{entry.name}"
            sub = None
            try:
                if entry.is_dir(follow_symlinks=False):
                    sub = _open_step(dir_fd, entry.name, f"{self._root}/{path}", "list files", create=False)
                elif entry.is_symlink() and entry.is_dir():
                    raise PlantedLink.at(f"{self._root}/{path}", "list files")
                else:
                    size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise LocalIOError.of(f"{self._root}/{path}", exc) from exc
            if sub is None:
                yield path, size
                continue
            try:
                yield from self._files_in(sub, path)
            finally:
                os.close(sub)

    def remove_empty_dirs(self, rel: str, keep_top: bool = False) -> None:
        """Remove every empty directory below ``rel`` (deepest first), and ``rel`` itself
        when it is left empty, unless ``keep_top``. Links are neither followed nor removed."""
        self._fspath(rel)
        directory, _, name = rel.rpartition("/")
        try:
            with self._directory(directory, "delete") as dir_fd:
                if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    return
                for _path, subdirs, _files, fd in os.fwalk(name, topdown=False, dir_fd=dir_fd):
                    for sub in subdirs:
                        with contextlib.suppress(OSError):  # not empty, or a link
                            os.rmdir(sub, dir_fd=fd)
                if not keep_top:
                    with contextlib.suppress(OSError):
                        os.rmdir(name, dir_fd=dir_fd)
        except OSError:
            return  # gone, or unreadable: nothing here can be removed
