"""Render simple-index pages (PEP 503/592/658/691/700/714). Pure: data in, text out.

The byte layout is the contract of docs/design.md, Pages, and matches the reference tool,
so that mirrors written by either tool look the same to clients and to each other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from html import escape
from json.encoder import encode_basestring_ascii
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .layout import file_path, served_path
from .models import Project, ReleaseFile

JSON_CONTENT_TYPE = "application/vnd.pypi.simple.v1+json"
API_VERSION = "1.1"

_PAGE_HEAD = """<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="{version}">
    <title>{title}</title>
  </head>
  <body>
"""
_PAGE_TAIL = """  </body>
</html>"""


def file_href(file: ReleaseFile, root_uri: str = "", upstream: bool = False) -> str:
    """The link to a file from a project page: relative (``../../packages/...``) or absolute;
    with ``upstream``, the upstream's own URL (a mirror without release files)."""
    return file.url if upstream else f"{root_uri or '../..'}/{served_path(file_path(file))}"


def json_document(project: Project, root_uri: str = "", upstream: bool = False) -> dict[str, Any]:
    """The JSON API document the mirror stores and serves (``web/json/<name>``).

    The upstream's document trimmed to what is mirrored (:meth:`Project.document`), with
    every file URL pointing at the mirror's own copy, as the pages do: relative to
    ``/pypi/<name>/json`` (``../../packages/...``), or below ``root_uri`` when it is set.
    A mirror downstream then asks this one for every byte, never the origin. With
    ``upstream`` (a mirror without release files) the upstream's URLs stay.
    """
    doc = project.document()
    if upstream:
        return doc
    hrefs = {file.filename: file_href(file, root_uri) for file in project.files()}

    def local(entries: list[Any]) -> list[Any]:
        return [{**entry, "url": hrefs.get(entry.get("filename"), entry.get("url"))} for entry in entries]

    doc["releases"] = {version: local(entries) for version, entries in doc["releases"].items()}
    doc["urls"] = local(doc["urls"])
    return doc


def _digest(file: ReleaseFile, digest_name: str) -> str:
    if digest_name == "sha256":
        return file.sha256
    return str((file.raw.get("digests") or {}).get(digest_name) or "")


def project_html(project: Project, root_uri: str = "", digest_name: str = "sha256", upstream: bool = False) -> str:
    """The PEP 503 page of one project, with the PEP 592/658/714 attributes."""
    name = escape(project.name)
    lines = [_PAGE_HEAD.format(title=f"Links for {name}", version=API_VERSION), f"    <h1>Links for {name}</h1>\n"]
    for file in project.files():
        attrs = [f'href="{escape(file_href(file, root_uri, upstream))}#{digest_name}={_digest(file, digest_name)}"']
        if file.requires_python:
            attrs.append(f'data-requires-python="{escape(file.requires_python)}"')
        if file.metadata_sha256:
            attrs.append(f'data-core-metadata="sha256={file.metadata_sha256}"')
            attrs.append(f'data-dist-info-metadata="sha256={file.metadata_sha256}"')
        if file.yanked:
            attrs.append(f'data-yanked="{escape(file.yanked_reason or "")}"')
        lines.append(f"    <a {' '.join(attrs)}>{escape(file.filename)}</a><br/>\n")
    lines.append(_PAGE_TAIL)
    lines.append(f"\n<!--SERIAL {project.serial}-->")
    return "".join(lines)


def upload_time(when: datetime) -> str:
    """PEP 700's ``upload-time`` format: ``yyyy-mm-ddThh:mm:ss.ffffffZ`` in UTC."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: PEP 700's ``upload-time`` as the upstream may give it: UTC, with or without fractions.
_UPLOAD_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z$")


def file_upload_time(file: ReleaseFile) -> str | None:
    """A file's ``upload-time``: the upstream's own text when it is in PEP 700's form
    (``...:47Z`` stays ``...:47Z``), else rendered from the parsed time."""
    given = file.raw.get("upload_time_iso_8601")
    if isinstance(given, str) and _UPLOAD_TIME.match(given):
        return given
    return upload_time(file.upload_time) if file.upload_time is not None else None


def version_order(versions: Iterable[str]) -> list[str]:
    """Versions in the order the upstream's simple pages list them: ascending by PEP 440,
    with strings that are not PEP 440 versions first, in text order."""

    def key(text: str) -> tuple[int, Any, str]:
        try:
            return (1, Version(text), text)
        except InvalidVersion:
            return (0, (), text)

    return sorted(versions, key=key)


def project_json(project: Project, root_uri: str = "", upstream: bool = False) -> str:
    """The PEP 691 JSON page of one project, with the PEP 700 fields."""
    files: list[dict[str, Any]] = []
    for file in project.files():
        entry: dict[str, Any] = {
            "filename": file.filename,
            "url": file_href(file, root_uri, upstream),
            "hashes": {"sha256": file.sha256},
        }
        if file.requires_python:
            entry["requires-python"] = file.requires_python
        entry["size"] = file.size
        uploaded = file_upload_time(file)
        if uploaded is not None:
            entry["upload-time"] = uploaded
        entry["yanked"] = (file.yanked_reason or True) if file.yanked else False
        if file.metadata_sha256:
            entry["core-metadata"] = {"sha256": file.metadata_sha256}
        files.append(entry)
    page = {
        "meta": {"api-version": API_VERSION, "_last-serial": str(project.serial)},
        "name": project.canonical,
        "versions": version_order(project.releases),
        "files": files,
    }
    return json.dumps(page)


def root_html(projects: Iterable[tuple[str, str, int]]) -> str:
    """The PEP 503 root index; ``projects`` are ``(canonical, display name, serial)`` in order."""
    lines = [_PAGE_HEAD.format(title="Simple Index", version=API_VERSION)]
    lines.extend([f'    <a href="{escape(c)}/">{escape(d)}</a><br/>\n' for c, d, _ in projects])
    lines.append(_PAGE_TAIL)
    return "".join(lines)


def root_json(projects: Iterable[tuple[str, str, int]], serial: int) -> str:
    """The PEP 691 root index; ``projects`` are ``(canonical, display name, serial)`` in order."""
    # Byte for byte what json.dumps gives for {"meta": ..., "projects": [{"name": n, "_last-serial": s}]},
    # three times faster: this page lists every project and is rewritten on every run that syncs one.
    meta = json.dumps({"api-version": API_VERSION, "_last-serial": serial})
    rows = ", ".join([f'{{"name": {encode_basestring_ascii(n)}, "_last-serial": {int(s)}}}' for _, n, s in projects])
    return f'{{"meta": {meta}, "projects": [{rows}]}}'


_ROOT_JSON_HEAD = re.compile(
    re.escape(f'{{"meta": {{"api-version": "{API_VERSION}", "_last-serial": '.encode()) + rb'(\d+)\}, "projects": \['
)
_ROOT_JSON_ENTRY = b'{"name": "'


def patch_root_json(
    page: bytes, changed: dict[str, tuple[str, int]], serial: int, count: int | None
) -> bytes | None:
    """The PEP 691 root index ``page`` (as :func:`root_json` renders it) with the serials of the
    ``changed`` projects (canonical name -> (display name, serial)) and its own serial set:
    what :func:`root_json` gives for the records, when no project was added, renamed or removed.

    Each entry is found by bisection (the entries are in canonical-name order), so ten
    changes in a root index of a million projects cost a few hundred comparisons, a count
    and one copy of the bytes, not a million rendered rows. None when the page is not as
    rendered here, does not list ``count`` projects (the records' number, when known), or an
    entry is not found with the same display name: the caller renders it whole.
    """
    head = _ROOT_JSON_HEAD.match(page)
    if head is None or not page.endswith(b"]}") or (count is not None and page.count(_ROOT_JSON_ENTRY) != count):
        return None
    edits = [(head.start(1), head.end(1), str(int(serial)).encode())]
    for canonical, (display, project_serial) in changed.items():
        at = _find_root_entry(page, head.end(), len(page) - 2, canonical)
        prefix = f'{{"name": {encode_basestring_ascii(display)}, "_last-serial": '.encode()
        if at is None or not page.startswith(prefix, at):
            return None
        start = at + len(prefix)
        end = page.find(b"}", start)
        if end < 0 or not page[start:end].isdigit():
            return None
        edits.append((start, end, str(int(project_serial)).encode()))
    edits.sort()
    view = memoryview(page)  # slices without copies: one copy of the page, in the join
    pieces: list[bytes | memoryview] = []
    done = 0
    for start, end, text in edits:
        pieces += [view[done:start], text]
        done = end
    pieces.append(view[done:])
    return b"".join(pieces)


def _find_root_entry(page: bytes, low: int, high: int, canonical: str) -> int | None:
    """Where the entry of ``canonical`` starts in the root JSON ``page``, searching entries that
    start in ``[low, high)``; None when there is none (or a name this search does not read).

    ``{"name": "`` only ever starts an entry: a quote inside a name is escaped.
    """
    while low < high:
        middle = (low + high) // 2
        at = page.find(_ROOT_JSON_ENTRY, middle, high - 1 + len(_ROOT_JSON_ENTRY))
        if at < 0:
            high = middle
            continue
        start = at + len(_ROOT_JSON_ENTRY)
        end = page.find(b'"', start)
        name = page[start:end]
        if end < 0 or b"\\" in name:
            return None
        key = canonicalize_name(name.decode("ascii"))
        if key == canonical:
            return at
        if key < canonical:
            low = at + 1
        else:
            high = at
    return None
