"""The mirror's on-disk layout: every path it serves, and the rules that tie them together.

The layout is the reference tool's (docs/design.md, The on-disk contract), so a web server
configured for one serves the other, and one tool can take over the other's mirror.
Every command asks this module where a project's pages, JSON documents and files live,
which files a project's pages reference, and how a project is removed, so that ``mirror``,
``sync``, ``verify``, ``delete`` and ``serve`` cannot disagree about any of it. Paths are
relative to the mirror directory; :class:`~bandersnatch_classic.storage.Storage` checks
that they stay in it.
"""

from __future__ import annotations

import json
import re
from html import unescape
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from .errors import UnsafePath
from .storage import Storage, check_relative

if TYPE_CHECKING:
    from .models import Project, ReleaseFile

WEB = "web"
PACKAGES = "web/packages"
SIMPLE = "web/simple"
#: The root index, as HTML (also under the PEP 691 name) and as PEP 691 JSON.
ROOT_HTML = ("web/simple/index.html", "web/simple/index.v1_html")
ROOT_JSON = "web/simple/index.v1_json"
LAST_MODIFIED = "web/last-modified"
#: Directories a run writes into.
WEB_DIRS = (WEB, SIMPLE, PACKAGES, "web/json", "web/pypi")
#: The files of a project's page directory, by the format they hold.
PAGE_HTML, PAGE_V1_HTML, PAGE_V1_JSON = "index.html", "index.v1_html", "index.v1_json"
#: ``keep_index_versions``: the earlier pages, beside which ``index.html`` is a link.
VERSIONS = "versions"
METADATA_SUFFIX = ".metadata"

#: What a project's files are expected to be: path -> (sha256 or None, size or None).
Expected = dict[str, tuple["str | None", "int | None"]]

_LINK = re.compile(r'<a href="([^"]+)"([^>]*)>')
_CORE = re.compile(r'data-(?:core|dist-info)-metadata="sha256=([0-9a-f]{64})"')


def pages_dir(canonical: str, hash_index: bool) -> str:
    """A project's page directory below ``web/`` (``hash-index`` adds the first letter)."""
    return f"simple/{canonical[0]}/{canonical}" if hash_index else f"simple/{canonical}"


def simple_dir(canonical: str, hash_index: bool) -> str:
    """A project's page directory below the mirror directory."""
    return f"{WEB}/{pages_dir(canonical, hash_index)}"


def json_path(canonical: str) -> str:
    """The project's stored JSON API document."""
    return f"web/json/{canonical}"


def pypi_dir(canonical: str) -> str:
    """The directory that serves ``/pypi/<name>/json``; it holds only :func:`pypi_json_link`."""
    return f"web/pypi/{canonical}"


def pypi_json_link(canonical: str) -> str:
    """``/pypi/<name>/json``: a link to :func:`json_path`."""
    return f"{pypi_dir(canonical)}/json"


def pypi_json_target(canonical: str) -> str:
    """Where :func:`pypi_json_link` points, relative to its directory."""
    return f"../../json/{canonical}"


def release_path(url: str) -> str:
    """The local path (``web/packages/...``) of an upstream file URL: its path from the first
    ``/packages/`` segment on, which is where the public index's paths begin, and a mirror's
    below a path prefix (``https://host/pypi/packages/...``, or a ``root_uri`` with a path).

    Raises :class:`UnsafePath` for anything that could land outside ``web/packages``.
    """
    path = unquote(urlsplit(url).path)
    path = path[path.find("/packages/"):] if "/packages/" in path else ""
    if path.count("/") < 3:
        raise UnsafePath(f"file URL {url!r} is not below /packages/")
    try:
        return check_relative(f"{WEB}{path}")
    except UnsafePath:
        raise UnsafePath(f"file URL {url!r} has an unsafe path") from None


def file_path(file: ReleaseFile) -> str:
    """Where a release file lives in the mirror."""
    return release_path(file.url)


def served_path(path: str) -> str:
    """``path`` as the web server sees it: relative to ``web/``."""
    return path[len(WEB) + 1 :] if path.startswith(f"{WEB}/") else path


def metadata_path(path: str) -> str:
    """The PEP 658 ``.metadata`` sidecar of the release file at ``path``."""
    return f"{path}{METADATA_SUFFIX}"


def linked_path(href: str) -> str | None:
    """The local path a page's file link points at, or None when it points elsewhere."""
    marker = href.find("/packages/")
    if marker < 0:
        return None
    return WEB + unquote(href[marker:].split("#", 1)[0])


def referenced_files(storage: Storage, canonical: str, hash_index: bool, project: Project | None = None) -> Expected:
    """What a project's pages reference: release files and ``.metadata`` sidecars.

    ``project`` is the project as its stored document describes it, when there is one;
    otherwise its pages are read (PEP 691 JSON, else HTML), so that mirrors made by the
    reference tool answer too.
    """
    out: Expected = {}
    if project is not None:
        for f in project.files():
            path = file_path(f)
            out[path] = (f.sha256, f.size or None)
            if f.metadata_sha256:
                out[metadata_path(path)] = (f.metadata_sha256, None)
        return out
    directory = simple_dir(canonical, hash_index)
    page = storage.read_text(f"{directory}/{PAGE_V1_JSON}")
    if page is not None:
        for entry in json.loads(page).get("files", []):
            path = linked_path(entry["url"])
            if path:
                out[path] = (entry.get("hashes", {}).get("sha256"), entry.get("size"))
                core = entry.get("core-metadata") or entry.get("dist-info-metadata")
                if isinstance(core, dict) and core.get("sha256"):
                    out[metadata_path(path)] = (core["sha256"], None)
        return out
    html = storage.read_text(f"{directory}/{PAGE_HTML}") or ""
    for href, attrs in _LINK.findall(html):
        href = unescape(href)
        path = linked_path(href)
        if path:
            digest = href.split("#sha256=", 1)[1] if "#sha256=" in href else None
            out[path] = (digest, None)
            core = _CORE.search(attrs)
            if core:
                out[metadata_path(path)] = (core.group(1), None)
    return out


#: A valid project name (the core metadata specification): the only display names
#: ``cleanup`` turns into directory names.
_PROJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def legacy_dirs(display: str, hash_index: bool) -> list[str]:
    """The page directories bandersnatch before 4.0 kept beside the normalized one
    (``cleanup = true``): the name as the upstream spells it (``Foo.Bar``) and its
    setuptools "safe name" (runs of anything but letters, digits and ``.`` as one ``-``,
    lower-cased: ``foo.bar``). A name that is normalized is some project's current
    directory and never one of these."""
    if not _PROJECT_NAME.fullmatch(display):
        return []
    names = dict.fromkeys((display, re.sub(r"[^A-Za-z0-9.]+", "-", display).lower()))
    return [
        f"{SIMPLE}/{name[0]}/{name}" if hash_index else f"{SIMPLE}/{name}"
        for name in names
        if canonicalize_name(name) != name
    ]


def is_mirrored(storage: Storage, canonical: str, hash_index: bool) -> bool:
    """Whether the mirror holds pages for the project (recorded or not)."""
    return storage.exists(simple_dir(canonical, hash_index))


def remove_project(
    storage: Storage,
    canonical: str,
    hash_index: bool,
    files: bool,
    project: Project | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Remove a project from the mirror: its pages, its JSON document and ``/pypi`` link, and
    with ``files`` the release files and ``.metadata`` sidecars its pages reference.

    ``web/pypi/<name>/`` holds nothing but the ``json`` link this tool and the reference
    tool write, so the link is removed, then the directory when nothing else is left in it
    (something an operator put there stays). With ``files``, directories of
    ``web/packages`` left empty are removed too. Returns the removed (``dry_run``: the
    removable) paths. ``project``: as for :func:`referenced_files`. The caller forgets the
    project's records.
    """
    removed: list[str] = []
    if files:
        for path in list(referenced_files(storage, canonical, hash_index, project)):
            candidates = [path] if path.endswith(METADATA_SUFFIX) else [path, metadata_path(path)]
            for candidate in candidates:
                if candidate not in removed and storage.exists(candidate):
                    removed.append(candidate)
                    if not dry_run:
                        storage.delete(candidate)
    directory = simple_dir(canonical, hash_index)
    if storage.exists(directory):
        removed.append(directory)
        if not dry_run:
            storage.delete_tree(directory)
    for path in (json_path(canonical), pypi_json_link(canonical)):
        if storage.exists(path) or storage.is_link(path):
            removed.append(path)
            if not dry_run:
                storage.delete(path)
    if not dry_run:
        storage.remove_empty_dirs(pypi_dir(canonical))
        if files:
            storage.remove_empty_dirs(PACKAGES, keep_top=True)
    return removed
