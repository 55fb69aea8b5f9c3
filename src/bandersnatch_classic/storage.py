"""Where mirrored bytes go: the filesystem backend.

Every write goes to a temporary file in the destination directory and is renamed into
place, so a served path only ever holds a complete file; the temporary is removed when
anything fails. The temporary's name is derived from the target's (``.<name>.tmp``):
a run that is killed outright can leave one behind, and the next write of the same
path reuses and replaces it, so leftovers never pile up. Only one process writes a
mirror at a time (the run lock), and one task writes a given path at a time.
Paths are relative to the mirror directory and are checked to stay in it.
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

from .errors import UnsafePath

TEMP_SUFFIX = ".tmp"
HASH_CHUNK = 1 << 20


class Storage(Protocol):
    """What the sync engine needs from a place to keep a mirror."""

    root: Path

    def write_bytes(self, rel: str, data: bytes, mtime: datetime | None = None) -> None: ...
    def writer(self, rel: str, mtime: datetime | None = None) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def read_bytes(self, rel: str) -> bytes: ...
    def sha256(self, rel: str) -> str | None:
        """The hex sha256 of a file, or None when it does not exist."""
        digest = hashlib.sha256()
        try:
            with open(self.path(rel), "rb") as fh:
                while chunk := fh.read(HASH_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        return digest.hexdigest()

    def exists(self, rel: str) -> bool: ...
    def delete(self, rel: str) -> bool: ...


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class FilesystemStorage:
    """A mirror directory on a local filesystem."""

    def __init__(self, root: Path, manage_permissions: bool = True) -> None:
        self.root = root
        #: Make files readable as the umask allows, whatever the mode they were created with.
        self.file_mode = (0o666 & ~_current_umask()) if manage_permissions else None
        self._made_dirs: set[Path] = set()

    def path(self, rel: str) -> Path:
        """The absolute path of ``rel``, refusing anything that leaves the mirror directory."""
        if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
            raise UnsafePath(f"unsafe path {rel!r}")
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise UnsafePath(f"unsafe path {rel!r}")
        return self.root.joinpath(*parts)

    def _ensure_dir(self, directory: Path) -> None:
        if directory not in self._made_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(directory)

    @contextlib.contextmanager
    def writer(self, rel: str, mtime: datetime | None = None) -> Iterator[BinaryIO]:
        """Yield a file to write ``rel``'s new content to; it replaces ``rel`` only on success."""
        target = self.path(rel)
        self._ensure_dir(target.parent)
        temp = target.with_name(f".{target.name}{TEMP_SUFFIX}")
        try:
            with open(temp, "wb") as fh:
                yield fh
            if self.file_mode is not None:
                os.chmod(temp, self.file_mode)
            if mtime is not None:
                stamp = mtime.timestamp()
                os.utime(temp, (stamp, stamp))
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def write_bytes(self, rel: str, data: bytes, mtime: datetime | None = None) -> None:
        with self.writer(rel, mtime) as fh:
            fh.write(data)

    def write_if_changed(self, rel: str, data: bytes) -> bool:
        """Write ``data`` unless ``rel`` already holds exactly it; say whether it wrote."""
        try:
            if self.path(rel).read_bytes() == data:
                return False
        except FileNotFoundError:
            pass
        self.write_bytes(rel, data)
        return True

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def read_text(self, rel: str) -> str | None:
        """The file's text, or None when it does not exist."""
        try:
            return self.path(rel).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def sha256(self, rel: str) -> str | None:
        """The hex sha256 of a file, or None when it does not exist."""
        digest = hashlib.sha256()
        try:
            with open(self.path(rel), "rb") as fh:
                while chunk := fh.read(HASH_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        return digest.hexdigest()

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def stat(self, rel: str) -> os.stat_result | None:
        try:
            return self.path(rel).stat()
        except FileNotFoundError:
            return None

    def delete(self, rel: str) -> bool:
        """Remove a file; say whether there was one."""
        try:
            self.path(rel).unlink()
        except FileNotFoundError:
            return False
        return True

    def delete_tree(self, rel: str) -> bool:
        """Remove a directory and everything in it; say whether there was one."""
        target = self.path(rel)
        if not target.is_dir():
            return False
        shutil.rmtree(target)
        self._made_dirs = {d for d in self._made_dirs if not d.is_relative_to(target)}
        return True

    def symlink(self, rel: str, target_name: str) -> None:
        """Point ``rel`` at ``target_name`` (a sibling file) atomically."""
        link = self.path(rel)
        self._ensure_dir(link.parent)
        temp = link.with_name(f".{link.name}{TEMP_SUFFIX}")
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        os.symlink(target_name, temp)
        os.replace(temp, link)
