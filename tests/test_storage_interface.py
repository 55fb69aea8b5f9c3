"""Storage is the whole interface: the engine, verify and delete run on a backend that has no files.

``MemoryStorage`` keeps the mirror in dictionaries, as an object store would keep it under
keys: if anything outside the filesystem backend still opened, walked or unlinked a local
path, these runs would fail or leave the mirror short.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import stat
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from bandersnatch_classic import config as configuration
from bandersnatch_classic.filters import FilterSet
from bandersnatch_classic.storage import check_relative
from bandersnatch_classic.sync import Mirror
from bandersnatch_classic.upstream import Upstream
from bandersnatch_classic.verify import delete_projects, verify

from .conftest import FAST_RETRY, MirrorHarness


class MemoryStorage:
    """A mirror in memory: blobs and links by key, no directories."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.mtimes: dict[str, float] = {}
        self.links: dict[str, str] = {}

    def _resolve(self, rel: str) -> str:
        check_relative(rel)
        target = self.links.get(rel)
        return posixpath.normpath(f"{posixpath.dirname(rel)}/{target}") if target is not None else rel

    def display(self, rel: str) -> str:
        return f"memory:{rel}"

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        yield io.BytesIO(self.read_bytes(rel))

    @contextlib.contextmanager
    def writer(self, rel: str, mtime: datetime | None = None) -> Iterator[BinaryIO]:
        check_relative(rel)
        buffer = io.BytesIO()
        yield buffer
        self.links.pop(rel, None)
        self.blobs[rel] = buffer.getvalue()
        self.mtimes[rel] = mtime.timestamp() if mtime is not None else time.time()

    def write_bytes(self, rel: str, data: bytes, mtime: datetime | None = None) -> None:
        with self.writer(rel, mtime) as fh:
            fh.write(data)

    def write_if_changed(self, rel: str, data: bytes) -> bool:
        if self.blobs.get(self._resolve(rel)) == data:
            return False
        self.write_bytes(rel, data)
        return True

    def read_bytes(self, rel: str) -> bytes:
        key = self._resolve(rel)
        if key not in self.blobs:
            raise FileNotFoundError(rel)
        return self.blobs[key]

    def read_text(self, rel: str) -> str | None:
        key = self._resolve(rel)
        return self.blobs[key].decode() if key in self.blobs else None

    def sha256(self, rel: str) -> str | None:
        key = self._resolve(rel)
        return hashlib.sha256(self.blobs[key]).hexdigest() if key in self.blobs else None

    def read_sha256(self, rel: str) -> str | None:
        return self.sha256(rel)

    def stat(self, rel: str) -> os.stat_result | None:
        key = self._resolve(rel)
        if key not in self.blobs:
            return None
        mtime = self.mtimes[key]
        return os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, len(self.blobs[key]), mtime, mtime, mtime))

    def exists(self, rel: str) -> bool:
        if self._resolve(rel) in self.blobs:
            return True
        prefix = f"{rel}/"
        return any(key.startswith(prefix) for key in [*self.blobs, *self.links])

    def delete(self, rel: str) -> bool:
        check_relative(rel)
        found = self.links.pop(rel, None) is not None or self.blobs.pop(rel, None) is not None
        self.mtimes.pop(rel, None)
        return found

    def delete_tree(self, rel: str) -> bool:
        prefix = f"{check_relative(rel)}/"
        keys = [key for key in [*self.blobs, *self.links] if key.startswith(prefix)]
        for key in keys:
            self.delete(key)
        return bool(keys)

    def symlink(self, rel: str, target_name: str) -> None:
        check_relative(rel)
        self.blobs.pop(rel, None)
        self.links[rel] = target_name

    def is_link(self, rel: str) -> bool:
        return check_relative(rel) in self.links

    def files(self, rel: str) -> Iterator[tuple[str, int]]:
        prefix = f"{check_relative(rel)}/"
        for key in sorted([*self.blobs, *self.links]):
            if key.startswith(prefix):
                yield key, len(self.blobs[key]) if key in self.blobs else len(self.links[key])

    def remove_empty_dirs(self, rel: str, keep_top: bool = False) -> None:
        check_relative(rel)  # keys need no directories


def memory_mirror(harness: MirrorHarness, storage: MemoryStorage) -> Mirror:
    loaded = configuration.load(harness.conf)
    config = loaded.mirror
    return Mirror(config, Upstream.from_config(config, FAST_RETRY), storage, FilterSet.from_config(loaded.parser))


def on_disk(directory: Path) -> dict[str, bytes | str]:
    """Every file (bytes) and link (its target) of a mirror directory, by path."""
    out: dict[str, bytes | str] = {}
    for path in directory.rglob("*"):
        rel = path.relative_to(directory).as_posix()
        if path.is_symlink():
            out[rel] = os.readlink(path)
        elif path.is_file() and rel != ".lock":
            out[rel] = path.read_bytes()
    return out


def test_a_mirror_in_memory_is_the_mirror_on_disk(harness: MirrorHarness) -> None:
    storage = MemoryStorage()
    with memory_mirror(harness, storage) as mirror:
        assert mirror.run().exit_code == 0
    assert harness.run().exit_code == 0
    disk = on_disk(harness.dir)
    memory: dict[str, bytes | str] = {**storage.blobs, **storage.links}
    assert set(memory) == set(disk)
    volatile = {"web/last-modified", "upstream-method"}  # they hold the time of the run
    records = "projects.json"  # in the order the projects finished
    assert json.loads(memory.pop(records)) == json.loads(disk.pop(records))
    assert [path for path in memory if path not in volatile and memory[path] != disk[path]] == []


def test_kept_index_versions_in_memory(harness: MirrorHarness) -> None:
    harness.configure({"keep_index_versions": "2"})
    storage = MemoryStorage()
    for version in ("0.4", "0.5", "0.6"):
        harness.corpus.add_file("small", version, f"small-{version}.tar.gz")
        with memory_mirror(harness, storage) as mirror:
            assert mirror.run().exit_code == 0
    versions = [path for path, _ in storage.files("web/simple/small/versions") if path.endswith(".html")]
    assert len(versions) == 2 and storage.is_link("web/simple/small/index.html")
    assert len([path for path, _ in storage.files("web/simple/small/versions") if path.endswith(".v1_json")]) == 2
    page = storage.read_text("web/simple/small/index.html")
    assert page is not None and "small-0.6.tar.gz" in page
    assert page == storage.read_text(max(versions, key=lambda p: int(p.split("_")[1])))


def test_verify_and_delete_on_a_mirror_in_memory(harness: MirrorHarness) -> None:
    storage = MemoryStorage()
    with memory_mirror(harness, storage) as mirror:
        assert mirror.run().exit_code == 0
    wheel = next(key for key in storage.blobs if key.endswith(".whl"))
    storage.blobs[wheel] = b"corrupt"
    storage.blobs["web/packages/stray/file.tar.gz"] = b"nobody links me"
    with memory_mirror(harness, storage) as mirror:
        report = verify(mirror, delete=True)
    assert report.broken and report.fixed_files == 1 and "web/packages/stray/file.tar.gz" in report.unowned
    assert hashlib.sha256(storage.blobs[wheel]).hexdigest() != hashlib.sha256(b"corrupt").hexdigest()
    assert "web/packages/stray/file.tar.gz" not in storage.blobs
    with memory_mirror(harness, storage) as mirror:
        assert verify(mirror).exit_code == 0
        removed = delete_projects(mirror, ["Tiny_Lib"])
    assert removed and not [key for key in [*storage.blobs, *storage.links] if "tiny" in key.replace("_", "-")]
    assert "tiny-lib" not in storage.blobs["web/simple/index.html"].decode()
