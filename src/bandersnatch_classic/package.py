"""One project's sync: its files to fetch, then its pages and JSON documents.

The work is split so the engine can run the downloads of one project in parallel:
:func:`plan_downloads` says which files are missing or stale, and :func:`publish` writes
the pages once every file is in place. Nothing here touches the network except through
the :class:`~bandersnatch_classic.upstream.Upstream` it is given.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from . import layout, pages
from .config import MirrorConfig
from .errors import UnusableEntry
from .models import Project, ReleaseFile
from .storage import TEMP_SUFFIX, Storage
from .upstream import Upstream

logger = logging.getLogger(__name__)

#: The longest path segment an upstream entry may give (a project name, a file name): a file
#: system holds 255 bytes per name, and the mirror adds a file's ``.metadata`` suffix and the
#: temporary's ``.`` and ``.tmp`` to it. Checked before anything is written, so a name too
#: long fails its project as the upstream's entry, never as a local I/O error.
MAX_SEGMENT_BYTES = 255 - len(layout.METADATA_SUFFIX) - len("." + TEMP_SUFFIX)


def check_name_fits(name: str) -> None:
    """Refuse a project name no file system can hold as a directory name (:class:`UnusableEntry`)."""
    _check_segment(name, "project name", name)


def _check_segment(segment: str, what: str, entry: str) -> None:
    size = len(segment.encode("utf-8", "surrogateescape"))
    if size > MAX_SEGMENT_BYTES:
        raise UnusableEntry(
            f"the upstream's entry {_shorten(entry)} is a {what} of {size} bytes, longer than a file name "
            f"can be ({MAX_SEGMENT_BYTES} bytes with the mirror's suffixes); it cannot be mirrored"
        )


def _shorten(text: str, keep: int = 40) -> str:
    return repr(text) if len(text) <= keep else repr(text[:keep]) + "..."


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
    leave ``web/packages``, :class:`~bandersnatch_classic.errors.UnusableEntry` for one
    with a name longer than a file system holds.
    """
    downloads = []
    for file in project.files():
        path = layout.file_path(file)  # refuses an unsafe path before any byte is fetched
        for segment in path.split("/"):
            _check_segment(segment, "file name" if segment == file.filename else "file URL path segment", segment)
        if config.release_files and not is_current(storage, path, file, config.compare_method):
            downloads.append(Download(file.url, path, file.sha256, file.upload_time))
        if config.core_metadata and file.metadata_sha256:
            meta_path = layout.metadata_path(path)
            if not storage.sha256(meta_path) == file.metadata_sha256:
                downloads.append(Download(layout.metadata_path(file.url), meta_path, file.metadata_sha256, sidecar=True))
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
        meta_path = layout.metadata_path(layout.file_path(file))
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


def publish(project: Project, config: MirrorConfig, storage: Storage) -> list[str]:
    """Write the project's pages and JSON documents; return the paths that changed.

    The caller records the project (in the main process: see :class:`~bandersnatch_classic.sync.Mirror`).
    """
    written: list[str] = []
    simple_dir = layout.simple_dir(project.canonical, config.hash_index)
    keep = config.keep_index_versions
    if config.write_html:
        html = pages.project_html(project, config.root_uri, config.digest_name, config.links_upstream).encode()
        if keep:
            written += _write_versioned_page(storage, simple_dir, html, project.serial, HTML_VERSION)
        else:
            for name in (layout.PAGE_HTML, layout.PAGE_V1_HTML):
                if storage.write_if_changed(f"{simple_dir}/{name}", html):
                    written.append(f"{simple_dir}/{name}")
    if config.write_json:
        page_json = pages.project_json(project, config.root_uri, config.links_upstream).encode()
        if keep:
            written += _write_versioned_page(storage, simple_dir, page_json, project.serial, JSON_VERSION)
        elif storage.write_if_changed(f"{simple_dir}/{layout.PAGE_V1_JSON}", page_json):
            written.append(f"{simple_dir}/{layout.PAGE_V1_JSON}")
    if keep and written:  # a new version: the oldest beyond ``keep`` go
        _prune_versions(storage, simple_dir, keep, config.write_html, config.write_json)
    if config.json:
        document = json.dumps(pages.json_document(project, config.root_uri, config.links_upstream)).encode()
        if storage.write_if_changed(layout.json_path(project.canonical), document):
            written.append(layout.json_path(project.canonical))
        link = layout.pypi_json_link(project.canonical)
        if not storage.is_link(link):
            storage.symlink(link, layout.pypi_json_target(project.canonical))
    return written


#: ``keep_index_versions``: the suffix of a kept page version, and the page files that link it.
HTML_VERSION = ("html", (layout.PAGE_HTML, layout.PAGE_V1_HTML))
JSON_VERSION = ("v1_json", (layout.PAGE_V1_JSON,))
#: ``versions/index_<serial>_<time>.<suffix>``; ``v1_html`` only the reference tool writes.
_VERSION_NAME = re.compile(r"index_(\d*)_(.+)\.(html|v1_html|v1_json)")


def _write_versioned_page(storage: Storage, simple_dir: str, page: bytes, serial: int, kind: tuple[str, tuple[str, ...]]) -> list[str]:
    """``keep_index_versions``: write ``page`` as a new version, its page files linking it.

    A safeguard the reference tool offers against an upstream that suddenly serves an
    empty project: the previous pages stay on disk to go back to. Both HTML page files
    (``index.html``, ``index.v1_html``) link the one HTML version; ``index.v1_json`` links
    a JSON version. Nothing is written when the links already show ``page``.
    """
    suffix, names = kind
    links = [f"{simple_dir}/{name}" for name in names]
    if all(storage.is_link(link) for link in links) and _read(storage, links[0]) == page:
        return []
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    name = f"index_{serial}_{stamp}.{suffix}"
    version = f"{simple_dir}/{layout.VERSIONS}/{name}"
    storage.write_bytes(version, page)
    for link in links:
        storage.symlink(link, f"{layout.VERSIONS}/{name}")
    return [version, *links]


def _prune_versions(storage: Storage, simple_dir: str, keep: int, html: bool, json_pages: bool) -> None:
    """Keep the newest ``keep`` versions of each format written; drop the reference tool's
    ``.v1_html`` versions once ``index.v1_html`` links an HTML version instead."""
    found: dict[str, list[tuple[tuple[int, str], str]]] = {}
    for path, _ in storage.files(f"{simple_dir}/{layout.VERSIONS}"):
        match = _VERSION_NAME.fullmatch(path.rsplit("/", 1)[-1])
        if match:
            order = (int(match.group(1) or 0), match.group(2))
            found.setdefault(match.group(3), []).append((order, path))
    stale: list[str] = []
    for suffix, written in (("html", html), ("v1_json", json_pages)):
        if written:
            stale += [path for _, path in sorted(found.get(suffix, []))[:-keep]]
    if html:
        stale += [path for _, path in found.get("v1_html", [])]
    for path in stale:
        storage.delete(path)


def _read(storage: Storage, rel: str) -> bytes | None:
    try:
        return storage.read_bytes(rel)
    except FileNotFoundError:
        return None
