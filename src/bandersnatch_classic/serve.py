"""``bandersnatch serve``: the mirror's ``web/`` over HTTP, with PEP 691 content negotiation.

Meant for small sites, tests, trying a mirror out, and as the upstream of other mirrors: the
JSON API (``/pypi/<name>/json``, ``/pypi/<name>/<version>/json``) answers any spelling of a
name as the public index does, and every API answer carries ``X-PyPI-Last-Serial``. A big
site puts a web server in front (docs/serving.md has an nginx configuration doing the same
negotiation). Read-only: GET and HEAD, nothing outside ``web/``, no directory listings.

Everything is read through the mirror's :class:`~.storage.Storage` (a directory or a
bucket), by the paths :func:`~.routing.request_path` lets through and the storage checks
again (:func:`~.storage.check_relative`); a directory is read through a
:class:`~.storage.FilesystemStorage` whose reads never follow a link out of ``web/``.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import re
import socket
import stat as stat_module
import sys
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, Callable
from urllib.parse import quote, urljoin

from . import jsonapi
from .errors import EXIT_OK, EXIT_USAGE, LocalIOError, UnsafePath
from .layout import WEB, pages_dir, release_path, served_path
from .models import check_project_name
from .routing import (
    SERVER_ORDER,
    SIMPLE_HTML,
    SIMPLE_JSON,
    SOURCES,
    TEXT_HTML,
    content_etag,
    content_type,
    file_etag,
    negotiate,
    not_modified,
    origin,
    printable,
    request_path,
)
from .storage import FilesystemStorage, Storage

logger = logging.getLogger(__name__)

#: An idle keep-alive connection is closed after this many seconds.
IDLE_TIMEOUT = 60
#: How much of a stream (an object in a bucket) is read and sent at a time.
STREAM_CHUNK = 1 << 20
#: The serial of a page: ``_last-serial`` near the start of a PEP 691 page (the root's is a
#: number, a project's a string), ``<!--SERIAL N-->`` at the end of an HTML page.
_JSON_SERIAL = re.compile(rb'"_last-serial": "?(\d+)')
_HTML_SERIAL = re.compile(rb"<!--SERIAL (\d+)-->")
#: How much of a page's head or tail holds its serial.
_SERIAL_SPAN = 256


@dataclass(frozen=True)
class Found:
    """A file to serve: its path in the storage and what a stat (a HEAD) said of it."""

    rel: str
    stat: os.stat_result


def _local_stat(fh: BinaryIO) -> os.stat_result | None:
    """The stat of an opened local file (the file served, even when replaced since it was
    located); None for a stream (an object's body)."""
    try:
        opened = os.fstat(fh.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return opened if stat_module.S_ISREG(opened.st_mode) else None


class MirrorRequestHandler(BaseHTTPRequestHandler):
    """Serves the ``web`` directory of a mirror's ``storage``; :func:`make_storage_server`
    sets ``storage``, ``web`` and ``hash_index``."""

    server_version = "bandersnatch-classic"
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    #: The headers and the body go out in separate writes: with Nagle's algorithm the body's
    #: last segment would wait for the client's delayed ACK (40 ms per answer on keep-alive).
    disable_nagle_algorithm = True
    storage: Storage
    web: str = WEB
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
            self.address_string(), printable(self.requestline), code, self._served_size, self._served_type,
        )

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), printable(format % args))  # log_request follows

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.info("%s %s", self.address_string(), printable(format % args))

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

    def _headers(
        self, ctype: str, size: int, mtime: float, vary: bool, serial: int | None = None, etag: str | None = None
    ) -> bool:
        """Send a 304 or a 200 with the answer's headers; say whether its body follows."""
        self._served_type = ctype
        etag = etag or file_etag(size, mtime, ctype)
        fresh = not_modified(self.headers, mtime, etag)
        self._served_size = 0 if fresh else size
        self.send_response(HTTPStatus.NOT_MODIFIED if fresh else HTTPStatus.OK)
        if not fresh:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
        self.send_header("Last-Modified", email.utils.formatdate(mtime, usegmt=True))
        self.send_header("ETag", etag)
        if serial is not None:
            self.send_header("X-PyPI-Last-Serial", str(serial))
        if vary:
            self.send_header("Vary", "Accept")
        self.end_headers()
        return not fresh

    # -- routing -----------------------------------------------------------------------
    def _serve(self, body: bool) -> None:
        self._served_type, self._served_size = "-", "-"
        parts = request_path(self.path)
        if parts is None:
            return self._error(HTTPStatus.NOT_FOUND)
        if parts[:1] == ["simple"] and len(parts) <= 2:
            return self._simple(parts[1] if len(parts) == 2 else None, body)
        if parts[:1] == ["pypi"] and parts[-1] == "json" and len(parts) in (3, 4):
            return self._json_api(parts[1], parts[2] if len(parts) == 4 else None, body)
        found = self._locate("/".join(parts))
        if found is None:
            return self._error(HTTPStatus.NOT_FOUND)
        self._file(found, content_type(parts), body)

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
        sources: dict[str, Found] = {}
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
                HTTPStatus.NOT_ACCEPTABLE, f"Available: {', '.join(m for m in SERVER_ORDER if m in sources)}"
            )
        ctype = "text/html; charset=utf-8" if media == TEXT_HTML else media
        self._file(sources[media], ctype, body, vary=True, serial=self._page_serial(sources))

    def _page_serial(self, sources: dict[str, Found]) -> int | None:
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
        found = self._locate(f"pypi/{canonical}/json")
        doc = self._document(found, canonical) if found is not None else None
        if found is None or doc is None:
            return self._error(HTTPStatus.NOT_FOUND)
        own_name = jsonapi.own_name(doc, canonical)
        own_version = jsonapi.own_version(version, doc["releases"]) if version is not None else None
        if version is not None and own_version is None:
            return self._error(HTTPStatus.NOT_FOUND)
        if name != own_name or version != own_version:
            return self._redirect(jsonapi.api_path(own_name, own_version))
        answer = doc if own_version is None else jsonapi.release_document(doc, own_name, own_version)
        self._answer_urls(answer, jsonapi.api_path(own_name, own_version))
        serial = doc.get("last_serial")
        payload = json.dumps(answer).encode()
        serial = serial if isinstance(serial, int) else None
        if self._headers("application/json", len(payload), found.stat.st_mtime, False, serial, content_etag(payload)) and body:
            self.wfile.write(payload)

    def _answer_urls(self, doc: dict[str, Any], path: str) -> None:
        """Every file URL of a JSON API answer made absolute and on this server, in place.

        Stored relative URLs resolve against the answer's URL (``path`` on this server). An
        absolute one (``root_uri``, or the upstream's in a document an earlier version or the
        reference tool stored) is answered on this server too when the mirror holds the file
        at the path the layout gives it, so a downstream mirror never reaches around this one;
        otherwise it stays.
        """
        here = origin(self.headers, self.server.server_address)
        base = f"{here}{path}"
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
                    entry["url"] = f"{here}/{quote(local)}"

    def _document(self, found: Found, canonical: str) -> dict[str, Any] | None:
        """A stored JSON API document, parsed; None (logged) when it is not one."""
        try:
            doc = json.loads(self.storage.read_bytes(found.rel))
        except (OSError, LocalIOError, ValueError) as exc:
            logger.warning("The stored JSON document of %s is unreadable: %s", canonical, exc)
            return None
        if not isinstance(doc, dict) or not isinstance(doc.setdefault("releases", {}), dict):
            logger.warning("The stored JSON document of %s is not a JSON API document", canonical)
            return None
        return doc

    # -- reading what is served, through the storage ---------------------------------------
    def _locate(self, rel: str) -> Found | None:
        """The file at ``rel`` (relative to ``web/``) by one stat, or None: also for a path the
        storage refuses or cannot look up (too long, a loop of links, a link out): a 404."""
        path = f"{self.web}/{rel}"
        try:
            stat = self.storage.stat(path)
        except (UnsafePath, LocalIOError):
            return None
        return Found(path, stat) if stat is not None and stat_module.S_ISREG(stat.st_mode) else None

    def _peek(self, found: Found, head: bool) -> bytes:
        """The first or last few hundred bytes of a file (where a page keeps its serial)."""
        try:
            with self.storage.open(found.rel) as fh:
                if head:
                    return fh.read(_SERIAL_SPAN)
                local = _local_stat(fh)
                if local is not None:
                    fh.seek(max(0, local.st_size - _SERIAL_SPAN))
                return fh.read()[-_SERIAL_SPAN:]
        except (OSError, LocalIOError):
            return b""

    def _file(self, found: Found, ctype: str, body: bool, vary: bool = False, serial: int | None = None) -> None:
        """Answer with a file: a HEAD or a 304 from the stat alone; else the file is opened
        and, when local, its own stat gives the headers (it may have been replaced since)."""
        size, mtime = found.stat.st_size, found.stat.st_mtime
        if not body or not_modified(self.headers, mtime, file_etag(size, mtime, ctype)):
            self._headers(ctype, size, mtime, vary, serial)
            return
        with contextlib.ExitStack() as stack:
            try:
                fh = stack.enter_context(self.storage.open(found.rel))
            except FileNotFoundError:  # gone since it was located
                return self._error(HTTPStatus.NOT_FOUND)
            except LocalIOError as exc:  # unreadable, or the storage server failed
                logger.warning("%s", exc)
                return self._error(HTTPStatus.NOT_FOUND)
            local = _local_stat(fh)
            if local is not None:
                size, mtime = local.st_size, local.st_mtime
            if self._headers(ctype, size, mtime, vary, serial):
                self._send_body(fh, size, found, local is not None)

    def _send_body(self, fh: BinaryIO, size: int, found: Found, local: bool) -> None:
        """Stream the file: a local one by ``sendfile`` (the kernel copies it), a stream in chunks."""
        if local:
            self.wfile.flush()
            sent = self.connection.sendfile(fh, 0, size)  # falls back to send() by itself
        else:
            sent = 0
            try:
                while sent < size and (chunk := fh.read(min(STREAM_CHUNK, size - sent))):
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except LocalIOError as exc:
                logger.warning("%s: %s", self.storage.display(found.rel), exc)
        if sent < size:  # it shrank, or was replaced or gone under us: the client must not wait for the rest
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


def make_storage_server(
    storage: Storage, bind: str = "127.0.0.1", port: int = 8080, hash_index: bool = False, web: str = WEB
) -> MirrorServer:
    """A server for the directory ``web`` of the mirror in ``storage``, bound to ``bind:port``
    (port 0: any free port), not yet serving."""
    attributes = {"storage": storage, "web": web, "hash_index": hash_index}
    return MirrorServer((bind, port), type("Handler", (MirrorRequestHandler,), attributes))


def make_server(
    web_dir: Path | str, bind: str = "127.0.0.1", port: int = 8080, hash_index: bool = False
) -> MirrorServer:
    """A server for the directory ``web_dir`` (a mirror's ``web/``), not yet serving."""
    web = Path(web_dir).resolve()
    storage = FilesystemStorage(web.parent, manage_permissions=False, reads_below=web.name)
    return make_storage_server(storage, bind, port, hash_index, web.name)


def serve(storage: Storage, bind: str, port: int, hash_index: bool = False, web: str = WEB) -> int:
    """Serve the ``web`` directory of the mirror in ``storage`` until interrupted; the exit
    status for the CLI. A directory mirror's storage should read only below ``web``
    (:func:`~.storage.storage_from_config` with ``reads_below``)."""
    shown = storage.display(web)
    if not storage.exists(f"{web}/simple"):
        logger.error("%s has no simple index yet: run `bandersnatch mirror` first", shown)
        return EXIT_USAGE
    try:
        server = make_storage_server(storage, bind, port, hash_index, web)
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
