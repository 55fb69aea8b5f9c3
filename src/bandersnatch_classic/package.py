"""One project's sync: its files to fetch, then its pages and JSON documents.

The work is split so the engine can run the downloads of one project in parallel:
:func:`plan_downloads` says which files are missing or stale, and :func:`publish` writes
the pages once every file is in place. Nothing here touches the network except through
the :class:`~bandersnatch_classic.upstream.Upstream` it is given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import pages
from .config import MirrorConfig
from .models import Project, ReleaseFile
from .state import MirrorState
from .storage import Storage
from .upstream import Upstream

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Download:
    """One file to fetch into the mirror."""

    url: str
    path: str
    sha256: str
    mtime: datetime | None = None
    #: A ``.metadata`` sidecar: one the upstream cannot serve does not fail the project.
    sidecar: bool = False

    def fetch(self, upstream: Upstream, storage: Storage) -> int:
        return upstream.download(self.url, lambda: storage.writer(self.path, self.mtime), self.sha256)


def plan_downloads(project: Project, config: MirrorConfig, storage: Storage) -> list[Download]:
    """The release files and ``.metadata`` files of ``project`` the mirror lacks.

    Raises :class:`~bandersnatch_classic.errors.UnsafePath` for a file URL that would
    leave ``web/packages``.
    """
    downloads = []
    for file in project.files():
        path = f"web/{file.path}"
        storage.path(path)  # refuse unsafe paths before any byte is fetched
        if config.release_files and not is_current(storage, path, file, config.compare_method):
            downloads.append(Download(file.url, path, file.sha256, file.upload_time))
        if config.core_metadata and file.metadata_sha256:
            meta_path = f"{path}.metadata"
            if not storage.sha256(meta_path) == file.metadata_sha256:
                downloads.append(Download(f"{file.url}.metadata", meta_path, file.metadata_sha256, sidecar=True))
    return downloads


def unserved_metadata(
    project: Project, config: MirrorConfig, storage: Storage, failed: Iterable[str] = ()
) -> list[ReleaseFile]:
    """The files whose advertised core metadata the mirror does not serve.

    That is every one with ``core-metadata = false``; otherwise those whose ``.metadata``
    download failed in this sync (``failed``: paths below the mirror) or is not on disk.
    Their pages must not offer metadata (see :meth:`Project.drop_metadata`).
    """
    failed = set(failed)
    out = []
    for file in project.files():
        if not file.metadata_sha256:
            continue
        meta_path = f"web/{file.path}.metadata"
        if not config.core_metadata or meta_path in failed or not storage.exists(meta_path):
            out.append(file)
    return out


def is_current(storage: Storage, path: str, file: ReleaseFile, compare_method: str) -> bool:
    """Whether ``path`` already holds ``file``: size and sha256, or size and mtime (``stat``)."""
    stat = storage.stat(path)
    if stat is None or (file.size and stat.st_size != file.size):
        return False
    if compare_method == "stat":
        return file.upload_time is None or int(stat.st_mtime) == int(file.upload_time.timestamp())
    return storage.sha256(path) == file.sha256




def publish(project: Project, config: MirrorConfig, storage: Storage, state: MirrorState) -> list[str]:
    """Write the project's pages and JSON documents; return the paths that changed."""
    written = []
    simple_dir = state.simple_dir(project.canonical)
    if config.write_html:
        html = pages.project_html(project, config.root_uri, config.digest_name, config.links_upstream).encode()
        if config.keep_index_versions:
            written += _write_versioned_page(storage, simple_dir, html, project.serial, config.keep_index_versions)
        elif storage.write_if_changed(f"{simple_dir}/index.html", html):
            written.append(f"{simple_dir}/index.html")
        if storage.write_if_changed(f"{simple_dir}/index.v1_html", html):
            written.append(f"{simple_dir}/index.v1_html")
    if config.write_json:
        page = pages.project_json(project, config.root_uri, config.links_upstream).encode()
        if storage.write_if_changed(f"{simple_dir}/index.v1_json", page):
            written.append(f"{simple_dir}/index.v1_json")
    if config.json:
        document = json.dumps(project.document()).encode()
        if storage.write_if_changed(f"web/json/{project.canonical}", document):
            written.append(f"web/json/{project.canonical}")
        link = f"web/pypi/{project.canonical}/json"
        if not storage.path(link).is_symlink():
            storage.symlink(link, f"../../json/{project.canonical}")
    state.record(project.canonical, project.name, project.serial)
    return written


def _write_versioned_page(storage: Storage, simple_dir: str, html: bytes, serial: int, keep: int) -> list[str]:
    """``keep_index_versions``: keep the last ``keep`` pages in ``versions/``, index.html a link.

    A safeguard the reference tool offers against an upstream that suddenly serves an
    empty project: the previous pages stay on disk to go back to.
    """
    current = storage.path(f"{simple_dir}/index.html")
    if current.is_symlink() and current.exists() and current.read_bytes() == html:
        return []
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    name = f"index_{serial}_{stamp}.html"
    storage.write_bytes(f"{simple_dir}/versions/{name}", html)
    storage.symlink(f"{simple_dir}/index.html", f"versions/{name}")
    versions = sorted(storage.path(f"{simple_dir}/versions").glob("index_*.html"), key=_version_order)
    for old in versions[:-keep]:
        old.unlink()
    return [f"{simple_dir}/versions/{name}", f"{simple_dir}/index.html"]


def _version_order(path: Path) -> tuple[int, str]:
    _, serial, stamp = path.stem.split("_", 2)
    return (int(serial) if serial.isdigit() else 0, stamp)


def unpublish(canonical: str, config: MirrorConfig, storage: Storage, state: MirrorState) -> list[str]:
    """Remove a project from the served index (pages, JSON, record).

    Its release files stay unless ``delete_missing_packages`` is set; ``verify --delete``
    reclaims them later otherwise. Returns the removed paths.
    """
    removed = []
    if config.delete_missing_packages:
        for path in state.project_files(canonical):
            for candidate in (path, f"{path}.metadata"):
                if storage.delete(candidate):
                    removed.append(candidate)
    simple_dir = state.simple_dir(canonical)
    if storage.delete_tree(simple_dir):
        removed.append(simple_dir)
    for path in (f"web/json/{canonical}", f"web/pypi/{canonical}/json"):
        if storage.delete(path):
            removed.append(path)
    state.forget(canonical)
    return removed
