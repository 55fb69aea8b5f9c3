"""Where mirrored bytes go: the :class:`Storage` interface and its filesystem backend.

Every write goes to a temporary file in the destination directory and is renamed into
place, so a served path only ever holds a complete file; the temporary is removed when
anything fails. The temporary's name is derived from the target's (``.<name>.tmp``):
a run that is killed outright can leave one behind, and the next write of the same
path reuses and replaces it, so leftovers never pile up. Only one process writes a
mirror at a time (the run lock), and one task writes a given path at a time.
Paths are relative to the mirror directory and are checked to stay in it.

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
import hashlib
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from .errors import LocalIOError, UnsafePath

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


class FilesystemStorage:
    """A mirror directory on a local filesystem."""

    def __init__(self, root: Path, manage_permissions: bool = True) -> None:
        self.root = root
        self._root = os.fspath(root)
        #: New files get 0666 less the umask. A web server runs as another user, so when
        #: the umask would hide files from "other" and we manage permissions, they get 0644.
        self.file_mode = 0o644 if manage_permissions and _current_umask() & 0o004 else None
        self._made_dirs: set[str] = set()

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

    def _ensure_dir(self, directory: str) -> None:
        """Create ``directory`` and its parents: one system call when only the leaf is new."""
        if directory in self._made_dirs:
            return
        try:
            try:
                os.mkdir(directory)
            except FileExistsError:
                pass
            except FileNotFoundError:
                os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise LocalIOError.of(directory, exc) from exc
        self._made_dirs.add(directory)

    @contextlib.contextmanager
    def writer(self, rel: str, mtime: datetime | None = None) -> Iterator[BinaryIO]:
        """Yield a file to write ``rel``'s new content to; it replaces ``rel`` only on success."""
        target = self._fspath(rel)
        directory, name = target.rsplit("/", 1)
        self._ensure_dir(directory)
        temp = f"{directory}/.{name}{TEMP_SUFFIX}"
        try:
            fh = open(temp, "wb")
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc
        try:
            yield _LocalFile(fh, target)  # type: ignore[misc]  # write() is all a writer needs
            try:
                if self.file_mode is not None:
                    os.fchmod(fh.fileno(), self.file_mode)
                fh.close()  # flushes: a full disk can show here
                if mtime is not None:
                    stamp = mtime.timestamp()
                    os.utime(temp, (stamp, stamp))
                os.replace(temp, target)
            except OSError as exc:
                raise LocalIOError.of(target, exc) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                fh.close()
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

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
        """Remove a file; say whether there was one."""
        target = self._fspath(rel)
        try:
            os.unlink(target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise LocalIOError.of(target, exc) from exc
        return True

    def delete_tree(self, rel: str) -> bool:
        """Remove a directory and everything in it; say whether there was one."""
        target = self._fspath(rel)
        if not os.path.isdir(target):
            return False
        try:
            shutil.rmtree(target)
        except OSError as exc:
            raise LocalIOError.of(exc.filename or target, exc) from exc
        self._made_dirs = {d for d in self._made_dirs if d != target and not d.startswith(f"{target}/")}
        return True

    def symlink(self, rel: str, target_name: str) -> None:
        """Point ``rel`` at ``target_name`` (relative to ``rel``'s directory) atomically."""
        link = self._fspath(rel)
        directory, name = link.rsplit("/", 1)
        self._ensure_dir(directory)
        temp = f"{directory}/.{name}{TEMP_SUFFIX}"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            os.symlink(target_name, temp)
            os.replace(temp, link)
        except OSError as exc:
            raise LocalIOError.of(link, exc) from exc

    def is_link(self, rel: str) -> bool:
        """Whether ``rel`` is a symbolic link (also one whose target is gone)."""
        return os.path.islink(self._fspath(rel))

    def files(self, rel: str) -> Iterator[tuple[str, int]]:
        """``(path, size)`` of every file below the directory ``rel`` (links not followed)."""
        base = self._fspath(rel)
        cut = len(self._root) + 1
        for directory, _dirs, names in os.walk(base):
            for name in names:
                full = f"{directory}/{name}"
                try:
                    size = os.lstat(full).st_size
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise LocalIOError.of(full, exc) from exc
                yield full[cut:], size

    def remove_empty_dirs(self, rel: str, keep_top: bool = False) -> None:
        """Remove every empty directory below ``rel`` (deepest first), and ``rel`` itself
        when it is left empty, unless ``keep_top``."""
        base = self._fspath(rel)
        for directory, _dirs, _files in os.walk(base, topdown=False):
            if keep_top and directory == base:
                continue
            try:
                os.rmdir(directory)
            except OSError:
                continue  # not empty
            self._made_dirs.discard(directory)
