"""Render simple-index pages (PEP 503/592/658/691/700/714). Pure: data in, text out.

The byte layout is the contract of docs/design.md, Pages, and matches the reference tool,
so that mirrors written by either tool look the same to clients and to each other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
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
_ROOT_HTML_ENTRY = b'    <a href="'


def edit_root_json(
    page: bytes, recorded: Mapping[str, tuple[str, int]], removed: Iterable[str], serial: int, count: int | None
) -> tuple[bytearray, bool] | None:
    """The PEP 691 root index ``page`` (as :func:`root_json` renders it) brought up to date in
    place: the entries of the ``recorded`` projects (canonical name -> (display name,
    serial)) set or inserted, those of the ``removed`` ones taken out, its own serial set.
    Returns the page and whether a name was added, renamed or removed (the HTML root, which
    lists names only, then needs :func:`edit_root_html` too).

    Each entry is found by bisection (the entries are in canonical-name order), so ten
    changes in a root index of a million projects cost a few hundred comparisons and a few
    moves of the bytes, not a million rendered rows; a test pins the result to a whole
    render. None when the page is not as rendered here, does not list ``count`` projects
    (the records' number, when known), or holds a name this search does not read: the
    caller renders it whole.
    """
    head = _ROOT_JSON_HEAD.match(page)
    if head is None or not page.endswith(b"]}") or (count is not None and page.count(_ROOT_JSON_ENTRY) != count):
        return None
    buf = bytearray(page)
    buf[head.start(1):head.end(1)] = str(int(serial)).encode()
    first = head.end() - (head.end(1) - head.start(1)) + len(str(int(serial)))
    names_changed = False
    for canonical, (display, project_serial) in recorded.items():
        entry = f'{{"name": {encode_basestring_ascii(display)}, "_last-serial": {int(project_serial)}}}'.encode()
        found = _bisect(buf, first, len(buf) - 2, _ROOT_JSON_ENTRY, canonical, _json_key)
        if found is None:
            return None
        at, exists = found
        if exists:
            end = buf.index(b"}", at) + 1
            names_changed = names_changed or not buf.startswith(entry[: entry.index(b', "_last-serial"')], at)
            buf[at:end] = entry
        else:
            names_changed = True
            if at < len(buf) - 2:
                buf[at:at] = entry + b", "
            else:
                buf[at:at] = entry if buf[at - 1 : at] == b"[" else b", " + entry
    for canonical in removed:
        found = _bisect(buf, first, len(buf) - 2, _ROOT_JSON_ENTRY, canonical, _json_key)
        if found is None:
            return None
        at, exists = found
        if not exists:
            continue
        names_changed = True
        end = buf.index(b"}", at) + 1
        if buf[end : end + 2] == b", ":
            del buf[at : end + 2]
        elif buf[at - 2 : at] == b", ":
            del buf[at - 2 : end]
        else:
            del buf[at:end]
    return buf, names_changed


def edit_root_html(page: bytes, recorded: Mapping[str, tuple[str, int]], removed: Iterable[str]) -> bytearray | None:
    """The PEP 503 root index ``page`` (as :func:`root_html` renders it) with the lines of the
    ``recorded`` projects set or inserted and those of the ``removed`` ones taken out, found
    by bisection as in :func:`edit_root_json`; None when the page is not as rendered here."""
    head = _PAGE_HEAD.format(title="Simple Index", version=API_VERSION).encode()
    if not page.startswith(head) or not page.endswith(_PAGE_TAIL.encode()):
        return None
    buf = bytearray(page)
    for canonical, (display, _serial) in recorded.items():
        line = f'    <a href="{escape(canonical)}/">{escape(display)}</a><br/>\n'.encode()
        found = _bisect(buf, len(head), len(buf) - len(_PAGE_TAIL), _ROOT_HTML_ENTRY, canonical, _html_key)
        if found is None:
            return None
        at, exists = found
        buf[at : buf.index(b"\n", at) + 1 if exists else at] = line
    for canonical in removed:
        found = _bisect(buf, len(head), len(buf) - len(_PAGE_TAIL), _ROOT_HTML_ENTRY, canonical, _html_key)
        if found is None:
            return None
        at, exists = found
        if exists:
            del buf[at : buf.index(b"\n", at) + 1]
    return buf


def _json_key(buf: bytearray, at: int) -> str | None:
    """The canonical name of the root JSON entry at ``at`` (None: an escaped name, not read here)."""
    start = at + len(_ROOT_JSON_ENTRY)
    name = bytes(buf[start : buf.index(b'"', start)])
    return None if b"\\" in name else canonicalize_name(name.decode("ascii"))


def _html_key(buf: bytearray, at: int) -> str | None:
    """The canonical name of the root HTML line at ``at``: its link, ``<canonical>/``."""
    start = at + len(_ROOT_HTML_ENTRY)
    href = bytes(buf[start : buf.index(b'"', start)])
    return href[:-1].decode("ascii") if href.endswith(b"/") and b"&" not in href else None


def _bisect(
    buf: bytearray, low: int, high: int, marker: bytes, canonical: str, key: Callable[[bytearray, int], str | None]
) -> tuple[int, bool] | None:
    """Where the entry of ``canonical`` starts among the entries (each starting with
    ``marker``, in canonical-name order) that start in ``[low, high)``, and True; else where
    it would be inserted (the start of the first entry after it, or ``high``) and False.
    None when an entry's name cannot be read.

    The marker only ever starts an entry: a quote inside a name is escaped.
    """
    after = high  # no entry starts in [high, after)
    while low < high:
        middle = (low + high) // 2
        at = buf.find(marker, middle, high - 1 + len(marker))
        if at < 0:
            high = middle
            continue
        name = key(buf, at)
        if name is None:
            return None
        if name == canonical:
            return at, True
        if name < canonical:
            low = at + 1
        else:
            high = after = at
    return after, False
