"""``bandersnatch serve``: the mirror's ``web/`` over HTTP, with PEP 691 content negotiation.

Meant for small sites, tests, trying a mirror out, and as the upstream of other mirrors: the
JSON API (``/pypi/<name>/json``, ``/pypi/<name>/<version>/json``) answers any spelling of a
name as the public index does, and every API answer carries ``X-PyPI-Last-Serial``. A big
site puts a web server in front (docs/serving.md has an nginx configuration doing the same
negotiation). Read-only: GET and HEAD, nothing outside ``web/``, no directory listings.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import re
import socket
import sys
from datetime import timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, Callable
from urllib.parse import quote, unquote, urljoin, urlsplit

from packaging.version import InvalidVersion, Version

from .errors import EXIT_OK, EXIT_USAGE, LocalIOError, UnsafePath
from .layout import PAGE_HTML, PAGE_V1_HTML, PAGE_V1_JSON, WEB, pages_dir, release_path, served_path
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
#: The serial of a page: ``_last-serial`` near the start of a PEP 691 page (the root's is a
#: number, a project's a string), ``<!--SERIAL N-->`` at the end of an HTML page.
_JSON_SERIAL = re.compile(rb'"_last-serial": "?(\d+)')
_HTML_SERIAL = re.compile(rb"<!--SERIAL (\d+)-->")
#: How much of a page's head or tail holds its serial.
_SERIAL_SPAN = 256
#: A ``Host`` header fit to build absolute URLs from.
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
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
        # The request's body (an XML-RPC call) is not read: the connection closes after the
        # answer, so the body is never taken for the next request.
        self.close_connection = True
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
        if self.close_connection:
            self.send_header("Connection", "close")
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
        if parts[:1] == ["pypi"] and parts[-1] == "json" and len(parts) in (3, 4):
            return self._json_api(parts[1], parts[2] if len(parts) == 4 else None, body)
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
        self._file(sources[media], ctype, body, vary=True, serial=self._page_serial(sources))

    def _page_serial(self, sources: dict[str, Any]) -> int | None:
        """The serial a simple page carries, for ``X-PyPI-Last-Serial``: the head of the PEP 691
        page (the root's and the projects'), else the ``<!--SERIAL N-->`` at the end of the HTML."""
        if SIMPLE_JSON in sources:
            match = _JSON_SERIAL.search(self._peek(sources[SIMPLE_JSON], head=True))
        else:
            html = sources.get(TEXT_HTML) or sources.get(SIMPLE_HTML)
            match = _HTML_SERIAL.search(self._peek(html, head=False)) if html is not None else None
        return int(match.group(1)) if match else None

    # -- the JSON API ----------------------------------------------------------------------
    def _json_api(self, name: str, version: str | None, body: bool) -> None:
        """``/pypi/<name>/json`` and ``/pypi/<name>/<version>/json``, from the stored document.

        As the public index answers: any spelling of the name but the project's own (its
        ``info.name``) is a 301 to the project's own, and so is a version spelt otherwise
        (``1.0.0`` for ``1.0``); the answer carries ``X-PyPI-Last-Serial`` from the
        document's ``last_serial``. The stored document's file URLs are relative to
        ``/pypi/<name>/json`` (or below ``root_uri``); they are answered absolute, resolved
        against this request's URL, since clients of the JSON API expect that.
        """
        try:
            canonical = check_project_name(name)
        except UnsafePath:
            return self._error(HTTPStatus.NOT_FOUND)
        located = self._locate(f"pypi/{canonical}/json")
        doc = self._document(located, canonical) if located is not None else None
        if doc is None:
            return self._error(HTTPStatus.NOT_FOUND)
        own_name = _own_name(doc, canonical)
        own_version = _own_version(version, doc["releases"]) if version is not None else None
        if version is not None and own_version is None:
            return self._error(HTTPStatus.NOT_FOUND)
        if name != own_name or version != own_version:
            return self._redirect(_api_path(own_name, own_version))
        answer = doc if own_version is None else _release_document(doc, own_name, own_version)
        self._answer_urls(answer, f"{self._origin()}{_api_path(own_name, own_version)}")
        serial = doc.get("last_serial")
        payload = json.dumps(answer).encode()
        etag = f'"{hashlib.blake2b(payload, digest_size=12).hexdigest()}"'
        mtime = self._mtime(located)
        if self._headers("application/json", len(payload), mtime, False, serial if isinstance(serial, int) else None, etag) and body:
            self.wfile.write(payload)

    def _answer_urls(self, doc: dict[str, Any], base: str) -> None:
        """Every file URL of a JSON API answer made absolute and on this server, in place.

        Stored relative URLs resolve against ``base``. An absolute one (``root_uri``, or the
        upstream's in a document an earlier version or the reference tool stored) is
        answered on this server too when the mirror holds the file at the path the layout
        gives it, so a downstream mirror never reaches around this one; otherwise it stays.
        """
        origin = self._origin()
        for entries in [doc.get("urls") or [], *(doc.get("releases") or {}).values()]:
            for entry in entries if isinstance(entries, list) else []:
                url = entry.get("url") if isinstance(entry, dict) else None
                if not isinstance(url, str):
                    continue
                if not url.startswith(("http://", "https://")):
                    entry["url"] = urljoin(base, url)
                    continue
                try:
                    local = served_path(release_path(url))
                except UnsafePath:
                    continue
                if self._locate(local) is not None:
                    entry["url"] = f"{origin}/{quote(local)}"

    def _document(self, located: Any, canonical: str) -> dict[str, Any] | None:
        """A stored JSON API document, parsed; None (logged) when it is not one."""
        try:
            doc = json.loads(self._read(located))
        except (OSError, LocalIOError, ValueError) as exc:
            logger.warning("The stored JSON document of %s is unreadable: %s", canonical, exc)
            return None
        if not isinstance(doc, dict) or not isinstance(doc.setdefault("releases", {}), dict):
            logger.warning("The stored JSON document of %s is not a JSON API document", canonical)
            return None
        return doc

    def _origin(self) -> str:
        """``http://<host>`` as this request reached the server (its ``Host``, when sane);
        ``https://`` when a proxy in front says so (``X-Forwarded-Proto: https``)."""
        host = self.headers.get("Host") or ""
        if not _HOST.match(host):
            address, port = self.server.server_address[:2]
            host = f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"
        https = (self.headers.get("X-Forwarded-Proto") or "").strip().lower() == "https"
        return f"{'https' if https else 'http'}://{host}"

    # -- reading what is served ---------------------------------------------------------
    def _read(self, path: Path) -> bytes:
        return path.read_bytes()

    def _peek(self, path: Path, head: bool) -> bytes:
        """The first or last few hundred bytes of a file (where a page keeps its serial)."""
        try:
            with open(path, "rb") as fh:
                if not head:
                    fh.seek(max(0, os.fstat(fh.fileno()).st_size - _SERIAL_SPAN))
                return fh.read(_SERIAL_SPAN)
        except OSError:
            return b""

    def _mtime(self, path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    def _file(self, path: Path, ctype: str, body: bool, vary: bool = False, serial: int | None = None) -> None:
        try:
            fh = open(path, "rb")
        except OSError:
            return self._error(HTTPStatus.NOT_FOUND)
        with fh:
            stat = os.fstat(fh.fileno())
            if self._headers(ctype, stat.st_size, stat.st_mtime, vary, serial) and body:
                self._send_body(fh, stat.st_size)

    def _headers(
        self, ctype: str, size: int, mtime: float, vary: bool, serial: int | None = None, etag: str | None = None
    ) -> bool:
        """Send a 304 or a 200 with the answer's headers; say whether its body follows.

        The ``ETag`` of a file is made of its modification time, size and the type it is
        served as (a page's formats differ); a generated answer brings its own.
        """
        self._served_type = ctype
        if etag is None:
            tag = f"{int(mtime * 1_000_000)}-{size}-{ctype}".encode()
            etag = f'"{hashlib.blake2b(tag, digest_size=12).hexdigest()}"'
        not_modified = self._not_modified(mtime, etag)
        self._served_size = 0 if not_modified else size
        self.send_response(HTTPStatus.NOT_MODIFIED if not_modified else HTTPStatus.OK)
        if not not_modified:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
        self.send_header("Last-Modified", email.utils.formatdate(mtime, usegmt=True))
        self.send_header("ETag", etag)
        if serial is not None:
            self.send_header("X-PyPI-Last-Serial", str(serial))
        if vary:
            self.send_header("Vary", "Accept")
        self.end_headers()
        return not not_modified

    def _not_modified(self, mtime: float, etag: str) -> bool:
        """``If-None-Match`` (weak comparison, ``*``) when sent, else ``If-Modified-Since``."""
        match = self.headers.get("If-None-Match")
        if match:
            tags = {t.strip().removeprefix("W/") for t in match.split(",")}
            return "*" in tags or etag in tags
        since = self.headers.get("If-Modified-Since")
        if not since:
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

    def _read(self, path: Any) -> bytes:
        return self.storage.read_bytes(f"{WEB}/{path[0]}")

    def _peek(self, path: Any, head: bool) -> bytes:
        try:
            with self.storage.open(f"{WEB}/{path[0]}") as fh:
                return fh.read(_SERIAL_SPAN) if head else fh.read()[-_SERIAL_SPAN:]
        except (FileNotFoundError, LocalIOError):
            return b""

    def _mtime(self, path: Any) -> float:
        return float(path[1].st_mtime)

    def _file(self, path: Any, ctype: str, body: bool, vary: bool = False, serial: int | None = None) -> None:
        rel, stat = path
        if not self._headers(ctype, stat.st_size, stat.st_mtime, vary, serial) or not body:
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


def _own_name(doc: dict[str, Any], canonical: str) -> str:
    """The project's own spelling of its name (``info.name``), when it is one of ``canonical``."""
    info = doc.get("info")
    name = info.get("name") if isinstance(info, dict) else None
    try:
        if isinstance(name, str) and check_project_name(name) == canonical:
            return name
    except UnsafePath:
        pass
    return canonical


def _own_version(version: str, releases: dict[str, Any]) -> str | None:
    """The release key ``version`` names: itself, or one equal to it as a PEP 440 version."""
    if version in releases:
        return version
    try:
        wanted = Version(version)
    except InvalidVersion:
        return None
    for key in releases:
        try:
            if Version(key) == wanted:
                return key
        except InvalidVersion:
            continue
    return None


def _api_path(name: str, version: str | None) -> str:
    return f"/pypi/{quote(name)}/json" if version is None else f"/pypi/{quote(name)}/{quote(version)}/json"


def _release_document(doc: dict[str, Any], name: str, version: str) -> dict[str, Any]:
    """``/pypi/<name>/<version>/json`` from the project's stored document.

    The mirror stores one document per project, whose ``info`` (and ``vulnerabilities``)
    describe its latest release: for that release they are given whole; for an earlier one
    ``info`` holds only what the document says of it (name, version, the files'
    ``requires_python`` and yanked state), nothing made up.
    """
    files = list(doc["releases"].get(version) or [])
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    answer: dict[str, Any]
    if info.get("version") == version:
        answer = {"info": info, "last_serial": doc.get("last_serial"), "urls": files}
        if "vulnerabilities" in doc:
            answer["vulnerabilities"] = doc["vulnerabilities"]
        return answer
    yanked = [f for f in files if f.get("yanked")]
    short = {
        "name": name,
        "version": version,
        "requires_python": next((f["requires_python"] for f in files if f.get("requires_python")), None),
        "yanked": bool(files) and len(yanked) == len(files),
        "yanked_reason": next((f["yanked_reason"] for f in yanked if f.get("yanked_reason")), None),
    }
    return {"info": short, "last_serial": doc.get("last_serial"), "urls": files}


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
        return EXIT_USAGE
    try:
        if storage is not None:
            server = make_storage_server(storage, bind, port, hash_index)
        else:
            server = make_server(web_dir, bind, port, hash_index)
    except OSError as exc:
        logger.error("Cannot listen on %s port %d: %s", bind, port, exc)
        return EXIT_USAGE
    logger.info("Serving %s at %s (hash-index %s; Ctrl-C to stop)", shown, server.url, "on" if hash_index else "off")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("Stopped serving")
    finally:
        server.server_close()
    return EXIT_OK
