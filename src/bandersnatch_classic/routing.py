"""What a request to ``bandersnatch serve`` asks for: its path, the media type it is answered
with (PEP 691 content negotiation), and whether the client's copy is still fresh.

Pure functions over the request's target and headers; :mod:`.serve` answers with them.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from datetime import timezone
from email.message import Message
from typing import Any
from urllib.parse import unquote, urlsplit

from .layout import PAGE_HTML, PAGE_V1_HTML, PAGE_V1_JSON
from .pages import JSON_CONTENT_TYPE as SIMPLE_JSON

SIMPLE_HTML = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
#: PEP 691's ``latest`` aliases: answered with the v1 type.
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": SIMPLE_JSON,
    "application/vnd.pypi.simple.latest+html": SIMPLE_HTML,
}
#: What a simple page can be served as: media type -> the files that may hold it, best first.
SOURCES: dict[str, tuple[str, ...]] = {
    SIMPLE_JSON: (PAGE_V1_JSON,),
    SIMPLE_HTML: (PAGE_V1_HTML, PAGE_HTML),
    TEXT_HTML: (PAGE_HTML, PAGE_V1_HTML),
}
#: The server's preference when the client's ranks tie (``*/*``, no header): HTML first.
SERVER_ORDER = (TEXT_HTML, SIMPLE_HTML, SIMPLE_JSON)
#: Content types of the other files, by their first path segment or their suffix.
_SUFFIX_TYPES = {
    ".v1_json": SIMPLE_JSON,
    ".v1_html": SIMPLE_HTML,
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
}
#: The longest file name (in bytes) of the file systems a mirror lives on.
NAME_MAX = 255
#: A ``Host`` header fit to build absolute URLs from.
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def _parse_accept(accept: str) -> list[tuple[str, float]]:
    """``(media range, q)`` pairs of an ``Accept`` header, in the header's order."""
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append((_ALIASES.get(media, media), q))
    return ranges


def negotiate(accept: str | None, available: set[str] | frozenset[str]) -> str | None:
    """The media type to answer with, from an ``Accept`` header; None when nothing fits (406).

    Each available type takes the q-value of the most specific range that matches it
    (``type/subtype`` over ``type/*`` over ``*/*``; ``q=0`` excludes). The highest q wins;
    on a tie the range listed first wins, then the server's order (HTML first), so no
    header or ``*/*`` gets HTML, as PEP 691 suggests.
    """
    ranges = _parse_accept(accept or "") or [("*/*", 1.0)]
    best: tuple[float, int, int] | None = None
    chosen = None
    for rank, media in enumerate(SERVER_ORDER):
        if media not in available:
            continue
        major = media.split("/", 1)[0]
        match: tuple[int, float, int] | None = None  # (specificity, q, position)
        for position, (media_range, q) in enumerate(ranges):
            if media_range == media:
                specificity = 3
            elif media_range == f"{major}/*":
                specificity = 2
            elif media_range == "*/*":
                specificity = 1
            else:
                continue
            if match is None or specificity > match[0] or (specificity == match[0] and q > match[1]):
                match = (specificity, q, position)
        if match is None or match[1] <= 0:
            continue
        key = (match[1], -match[2], -rank)
        if best is None or key > best:
            best, chosen = key, media
    return chosen


def request_path(target: str) -> list[str] | None:
    """The decoded, normalised segments of a request target; None when it is not a safe path.

    Refused: anything but an origin-form (or absolute-form) path, ``.`` and ``..`` segments
    (also percent-encoded), backslashes, NUL, and segments longer than a file name can be
    (nothing in the mirror has one). Empty segments (``//``) are dropped. What is left is a
    path :func:`~.storage.check_relative` accepts, and the storage checks it again.
    """
    if target.startswith(("http://", "https://")):
        target = urlsplit(target).path or "/"
    target = target.split("#", 1)[0].split("?", 1)[0]
    if not target.startswith("/"):
        return None
    try:
        path = unquote(target, errors="strict")
    except UnicodeDecodeError:
        return None
    if "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") or len(p.encode()) > NAME_MAX for p in parts):
        return None
    return parts


def content_type(parts: list[str]) -> str:
    """The content type of a file served at ``parts`` (not a simple page: those negotiate)."""
    if parts[0] == "json" or (parts[0] == "pypi" and parts[-1] == "json"):
        return "application/json"
    if parts[0] == "packages":
        return "application/octet-stream"  # also the PEP 658 ``.metadata`` files
    if parts == ["last-modified"]:
        return "text/plain; charset=utf-8"
    name = parts[-1]
    for suffix, ctype in _SUFFIX_TYPES.items():
        if name.endswith(suffix):
            return ctype
    return "application/octet-stream"


def file_etag(size: int, mtime: float, ctype: str) -> str:
    """The ``ETag`` of a file: its modification time, size and the type it is served as
    (a page's formats differ)."""
    return content_etag(f"{int(mtime * 1_000_000)}-{size}-{ctype}".encode())


def content_etag(payload: bytes) -> str:
    """The ``ETag`` of a generated answer, or of what makes a file's."""
    return f'"{hashlib.blake2b(payload, digest_size=12).hexdigest()}"'


def not_modified(headers: Message, mtime: float, etag: str) -> bool:
    """``If-None-Match`` (weak comparison, ``*``) when sent, else ``If-Modified-Since``."""
    match = headers.get("If-None-Match")
    if match:
        tags = {t.strip().removeprefix("W/") for t in match.split(",")}
        return "*" in tags or etag in tags
    since = headers.get("If-Modified-Since")
    if not since:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(mtime) <= when.timestamp()


def printable(text: str) -> str:
    """``text`` with control characters escaped: a request line must not forge log lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def origin(headers: Message, server_address: tuple[Any, ...]) -> str:
    """``http://<host>`` as the request reached the server (its ``Host``, when sane, else the
    address the server listens on); ``https://`` when a proxy in front says so
    (``X-Forwarded-Proto: https``)."""
    host = headers.get("Host") or ""
    if not _HOST.match(host):
        address, port = server_address[:2]
        host = f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"
    https = (headers.get("X-Forwarded-Proto") or "").strip().lower() == "https"
    return f"{'https' if https else 'http'}://{host}"
