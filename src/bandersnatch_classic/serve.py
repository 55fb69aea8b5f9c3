"""``bandersnatch serve``: the mirror's ``web/`` over HTTP, with PEP 691 content negotiation.

Meant for small sites, tests and trying a mirror out; a big site puts a web server in front
(docs/serving.md has an nginx configuration doing the same negotiation). Read-only: GET
and HEAD, nothing outside ``web/``, no directory listings. Standard library only.
"""

from __future__ import annotations

import email.utils
import logging
import os
import socket
import sys
from datetime import timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, Callable
from urllib.parse import unquote, urlsplit

from .errors import LocalIOError, UnsafePath
from .layout import PAGE_HTML, PAGE_V1_HTML, PAGE_V1_JSON, WEB, pages_dir
from .models import check_project_name
from .pages import JSON_CONTENT_TYPE as SIMPLE_JSON
from .storage import Storage

logger = logging.getLogger(__name__)

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
_SERVER_ORDER = (TEXT_HTML, SIMPLE_HTML, SIMPLE_JSON)
#: Content types of the other files, by their first path segment or their suffix.
_SUFFIX_TYPES = {
    ".v1_json": SIMPLE_JSON,
    ".v1_html": SIMPLE_HTML,
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
}
#: An idle keep-alive connection is closed after this many seconds.
IDLE_TIMEOUT = 60
#: How much of an object a bucket-backed server reads and sends at a time.
STREAM_CHUNK = 1 << 20
#: The longest file name (in bytes) of the file systems a mirror lives on.
NAME_MAX = 255


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
    for rank, media in enumerate(_SERVER_ORDER):
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


def _request_path(target: str) -> list[str] | None:
    """The decoded, normalised segments of a request target; None when it is not a safe path.

    Refused: anything but an origin-form (or absolute-form) path, ``.`` and ``..`` segments
    (also percent-encoded), backslashes, NUL, and segments longer than a file name can be
    (nothing in the mirror has one). Empty segments (``//``) are dropped.
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


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a request line must not forge log lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class MirrorRequestHandler(BaseHTTPRequestHandler):
    """Serves one mirror's ``web/`` directory; :func:`make_server` sets ``web`` and ``hash_index``."""

    server_version = "bandersnatch-classic"
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    web: Path
    hash_index: bool = False

    #: What the current answer was (content type, byte count), for the request's log line.
    _served_type = "-"
    _served_size: int | str = "-"

    # -- logging: one line per request, through ``logging`` ----------------------------
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, HTTPStatus):
            code = code.value
        logger.info(
            '%s "%s" %s %s %s',
            self.address_string(), _printable(self.requestline), code, self._served_size, self._served_type,
        )

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), _printable(format % args))  # log_request follows

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.info("%s %s", self.address_string(), _printable(format % args))

    # -- methods -------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, allow=True)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # Every method but GET and HEAD (POST, PUT, OPTIONS, ... and made-up ones) is a 405.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    # -- answers -----------------------------------------------------------------------
    def _error(self, status: HTTPStatus, explain: str = "", allow: bool = False) -> None:
        body = f"{status.value} {status.phrase}\n{explain + chr(10) if explain else ''}".encode()
        self._served_type, self._served_size = "text/plain", len(body)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Errors http.server raises itself (bad request line, 414, ...): same format, then close.
        self.close_connection = True
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self._error(status, explain or message or "")

    def _redirect(self, location: str) -> None:
        self._served_type, self._served_size = f"-> {location}", 0
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # -- routing -----------------------------------------------------------------------
    def _serve(self, body: bool) -> None:
        self._served_type, self._served_size = "-", "-"
        parts = _request_path(self.path)
        if parts is None:
            return self._error(HTTPStatus.NOT_FOUND)
        if parts[:1] == ["simple"] and len(parts) <= 2:
            return self._simple(parts[1] if len(parts) == 2 else None, body)
        target = self._locate("/".join(parts))
        if target is None:
            return self._error(HTTPStatus.NOT_FOUND)
        self._file(target, self._content_type(parts), body)

    @staticmethod
    def _content_type(parts: list[str]) -> str:
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

    def _locate(self, rel: str) -> Any:
        """The file at ``rel`` (relative to ``web/``, already checked safe), or None, also when
        the file system cannot look it up (a path too long, a loop of links): a 404."""
        target = self._inside(Path(self.web, rel))
        try:
            return target if target is not None and target.is_file() else None
        except (OSError, ValueError):
            return None

    def _inside(self, path: Path) -> Path | None:
        """``path`` with symlinks resolved, or None when that is not inside ``web/``."""
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        return resolved if resolved.is_relative_to(self.web) else None

    def _simple(self, name: str | None, body: bool) -> None:
        if name is None:
            directory = "simple"
            if not self.path.split("?", 1)[0].endswith("/"):
                return self._redirect("/simple/")
        else:
            try:
                canonical = check_project_name(name)
            except UnsafePath:
                return self._error(HTTPStatus.NOT_FOUND)
            # PEP 503: a non-normalised name redirects; and the pages' links are relative to
            # the directory, so ``/simple/<name>`` redirects to ``/simple/<name>/`` too.
            if canonical != name or not self.path.split("?", 1)[0].endswith("/"):
                return self._redirect(f"/simple/{canonical}/")
            directory = pages_dir(canonical, self.hash_index)
        sources: dict[str, Any] = {}
        for media, filenames in SOURCES.items():
            for filename in filenames:
                candidate = self._locate(f"{directory}/{filename}")
                if candidate is not None:
                    sources[media] = candidate
                    break
        if not sources:
            return self._error(HTTPStatus.NOT_FOUND)
        media = negotiate(", ".join(self.headers.get_all("Accept") or []), set(sources))
        if media is None:
            return self._error(
                HTTPStatus.NOT_ACCEPTABLE, f"Available: {', '.join(m for m in _SERVER_ORDER if m in sources)}"
            )
        ctype = "text/html; charset=utf-8" if media == TEXT_HTML else media
        self._file(sources[media], ctype, body, vary=True)

    def _file(self, path: Path, ctype: str, body: bool, vary: bool = False) -> None:
        try:
            fh = open(path, "rb")
        except OSError:
            return self._error(HTTPStatus.NOT_FOUND)
        with fh:
            stat = os.fstat(fh.fileno())
            if self._headers(ctype, stat.st_size, stat.st_mtime, vary) and body:
                self._send_body(fh, stat.st_size)

    def _headers(self, ctype: str, size: int, mtime: float, vary: bool) -> bool:
        """Send a 304 or a 200 with the file's headers; say whether its body follows."""
        self._served_type = ctype
        if self._not_modified(mtime):
            self._served_size = 0
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("Last-Modified", email.utils.formatdate(mtime, usegmt=True))
            if vary:
                self.send_header("Vary", "Accept")
            self.end_headers()
            return False
        self._served_size = size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(size))
        self.send_header("Last-Modified", email.utils.formatdate(mtime, usegmt=True))
        if vary:
            self.send_header("Vary", "Accept")
        self.end_headers()
        return True

    def _not_modified(self, mtime: float) -> bool:
        since = self.headers.get("If-Modified-Since")
        if not since or self.headers.get("If-None-Match"):
            return False
        try:
            when = email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError, IndexError):
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return int(mtime) <= when.timestamp()

    def _send_body(self, fh: BinaryIO, size: int) -> None:
        """Stream the file: ``sendfile`` where the platform has it, chunks otherwise."""
        self.wfile.flush()
        sent = self.connection.sendfile(fh, 0, size)  # falls back to send() by itself
        if sent < size:  # the file shrank under us: the client must not wait for the rest
            self.close_connection = True


class StorageRequestHandler(MirrorRequestHandler):
    """Serves ``web/`` of a mirror in any :class:`~.storage.Storage` (a bucket): a stat
    (a HEAD) per candidate, then the bytes streamed as the storage reads them."""

    storage: Storage

    def _locate(self, rel: str) -> Any:
        try:
            stat = self.storage.stat(f"{WEB}/{rel}")
        except (UnsafePath, LocalIOError):
            return None
        return (rel, stat) if stat is not None else None

    def _file(self, path: Any, ctype: str, body: bool, vary: bool = False) -> None:
        rel, stat = path
        if not self._headers(ctype, stat.st_size, stat.st_mtime, vary) or not body:
            return
        sent = 0
        try:
            with self.storage.open(f"{WEB}/{rel}") as fh:
                while sent < stat.st_size and (chunk := fh.read(STREAM_CHUNK)):
                    self.wfile.write(chunk)
                    sent += len(chunk)
        except (FileNotFoundError, LocalIOError) as exc:
            logger.warning("%s: %s", self.storage.display(f"{WEB}/{rel}"), exc)
        if sent < stat.st_size:  # replaced or gone under us: the client must not wait for the rest
            self.close_connection = True


class MirrorServer(ThreadingHTTPServer):
    """A threaded server whose errors go to the log, not to stderr."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[MirrorRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, socket.timeout, TimeoutError)):
            logger.debug("%s went away: %s", client_address[0], exc)
        else:
            logger.exception("Error while answering %s", client_address[0])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/simple/"


def make_server(
    web_dir: Path | str, bind: str = "127.0.0.1", port: int = 8080, hash_index: bool = False
) -> MirrorServer:
    """A server for ``web_dir`` bound to ``bind:port`` (port 0: any free port), not yet serving."""
    web = Path(web_dir).resolve()
    handler = type("Handler", (MirrorRequestHandler,), {"web": web, "hash_index": hash_index})
    return MirrorServer((bind, port), handler)


def make_storage_server(storage: Storage, bind: str = "127.0.0.1", port: int = 8080, hash_index: bool = False) -> MirrorServer:
    """A server for the ``web/`` of a mirror in ``storage`` (a bucket), not yet serving."""
    handler = type("Handler", (StorageRequestHandler,), {"storage": storage, "hash_index": hash_index})
    return MirrorServer((bind, port), handler)


def serve(web_dir: Path | str, bind: str, port: int, hash_index: bool = False, storage: Storage | None = None) -> int:
    """Serve ``web_dir`` (or, given ``storage``, its ``web/``) until interrupted; the exit status for the CLI."""
    shown = storage.display(WEB) if storage is not None else str(web_dir)
    if not (storage.exists(f"{WEB}/simple") if storage is not None else Path(web_dir, "simple").is_dir()):
        logger.error("%s has no simple index yet: run `bandersnatch mirror` first", shown)
        return 2
    try:
        if storage is not None:
            server = make_storage_server(storage, bind, port, hash_index)
        else:
            server = make_server(web_dir, bind, port, hash_index)
    except OSError as exc:
        logger.error("Cannot listen on %s port %d: %s", bind, port, exc)
        return 2
    logger.info("Serving %s at %s (hash-index %s; Ctrl-C to stop)", shown, server.url, "on" if hash_index else "off")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("Stopped serving")
    finally:
        server.server_close()
    return 0
