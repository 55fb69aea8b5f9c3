"""Where mirrored bytes go: the :class:`Storage` interface, its filesystem backend, and
:func:`storage_from_config`, the one place a configured backend is built.

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
links, and a link where a directory should be stops the run, named (:mod:`.safe_fs`).

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
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from .errors import LocalIOError, PlantedLink, UnsafePath
from .safe_fs import TEMP_FLAGS, create_temp, files_in, open_dir, remove_tree

if TYPE_CHECKING:
    from .config import Config

TEMP_SUFFIX = ".tmp"
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

    Paths are relative to the mirror (``web/simple/...``). Nothing outside a backend opens,
    walks or unlinks a mirrored file by its local path (``serve`` included), so a backend
    that keeps the mirror elsewhere (an object store) needs nothing else changed. A backend
    may add its own run lock (``lock()``) and lease check (``lock_lost()``): the engine
    looks them up by name (the S3 backend has both).
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


class FilesystemStorage:
    """A mirror directory on a local filesystem.

    The mirror directory itself may be a symbolic link (operators put mirrors on other
    disks that way), but nothing below it is reached through one when writing or deleting:
    each directory on the way is opened relative to its parent with ``O_NOFOLLOW``, and the
    file is created, renamed or unlinked relative to that descriptor, so a link planted
    under ``web/`` (even one swapped in during the run) cannot send a write or a delete
    outside the mirror: :class:`~bandersnatch_classic.errors.PlantedLink` names it instead.
    Reads follow links; given ``reads_below`` (a directory of the mirror, "" for all of it:
    what ``serve`` reads through), only links that stay inside it, so a link planted there
    never serves what lies outside.
    """

    def __init__(self, root: Path, manage_permissions: bool = True, reads_below: str | None = None) -> None:
        self.root = root
        self._root = os.fspath(root)
        #: Where reads must stay (with a trailing slash), links resolved; None: anywhere.
        self._fence = None
        if reads_below is not None:
            below = self._fspath(reads_below) if reads_below else self._root
            self._fence = os.path.join(os.path.realpath(below), "")
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

    def _read_path(self, rel: str) -> str:
        """The absolute path of ``rel`` to read from; FileNotFoundError when links lead it
        out of the ``reads_below`` directory."""
        target = self._fspath(rel)
        if self._fence is not None and not os.path.realpath(target).startswith(self._fence):
            raise FileNotFoundError(errno.ENOENT, "a link leads it out of the directory read", target)
        return target

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        """``rel`` opened for reading; FileNotFoundError when it does not exist."""
        target = self._read_path(rel)
        try:
            fh = open(target, "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc
        with fh:
            yield fh

    @contextlib.contextmanager
    def _directory(self, rel_dir: str, action: str, create: bool = False) -> Iterator[int]:
        fd = open_dir(self._root, rel_dir, action, create, self._known_dirs)
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
            dir_fd = open_dir(self._root, directory, "write", True, self._known_dirs)
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc
        try:
            try:
                fd = create_temp(temp, dir_fd, lambda: os.open(temp, TEMP_FLAGS, 0o666, dir_fd=dir_fd))
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
        target = self._read_path(rel)
        try:
            with open(target, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc

    def read_text(self, rel: str) -> str | None:
        """The file's text, or None when it does not exist."""
        try:
            target = self._read_path(rel)
            with open(target, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc

    def sha256(self, rel: str) -> str | None:
        """The hex sha256 of a file, or None when it does not exist."""
        digest = hashlib.sha256()
        try:
            target = self._read_path(rel)
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
        try:
            return os.path.exists(self._read_path(rel))
        except FileNotFoundError:
            return False

    def stat(self, rel: str) -> os.stat_result | None:
        try:
            target = self._read_path(rel)
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
        removed, never followed (:func:`~.safe_fs.remove_tree` works from directory descriptors).
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
                remove_tree(name, dir_fd)
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
                create_temp(temp, dir_fd, lambda: os.symlink(target_name, temp, dir_fd=dir_fd))
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
            dir_fd = open_dir(self._root, rel, "list files", False, self._known_dirs)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LocalIOError.of(base, exc) from exc
        try:
            yield from files_in(dir_fd, self._root, rel)
        finally:
            os.close(dir_fd)

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


def storage_from_config(loaded: Config, reads_below: str | None = None) -> Storage:
    """The storage ``[mirror]`` (and ``[s3]``) describe: the one place a backend is built
    (:meth:`~.sync.Mirror.from_config` and ``serve`` use it). A bucket must answer a HEAD
    first. ``reads_below``: see :class:`FilesystemStorage` (a bucket has no links to follow).
    """
    config = loaded.mirror
    if config.storage_backend == "s3":
        from .s3 import S3Storage

        return S3Storage.from_config(config, loaded.parser)
    return FilesystemStorage(config.directory, config.storage_filesystem_manage_permissions, reads_below)
