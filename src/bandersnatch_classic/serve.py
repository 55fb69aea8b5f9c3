"""``bandersnatch serve``: the mirror's ``web/`` over HTTP, with PEP 691 content negotiation.

Meant for small sites, tests and trying a mirror out; a big site puts a web server in front
(docs/serving.md has an nginx configuration doing the same negotiation). Read-only: GET
and HEAD, nothing outside ``web/``, no directory listings.
"""

from __future__ import annotations

import email.utils
import logging
import os
import shutil
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

logger = logging.getLogger(__name__)

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
SIMPLE_HTML = "application/vnd.pypi.simple.v1+html"
#: What a simple page can be served as: media type -> the file that holds it.
FORMATS = {SIMPLE_JSON: "index.v1_json", SIMPLE_HTML: "index.v1_html", "text/html": "index.html"}


def negotiate(accept: str, available: set[str]) -> str | None:
    """The media type to answer with, from an ``Accept`` header (q-values honoured).

    No header or ``*/*`` means HTML, as PEP 691 asks for clients that do not say.
    """
    if not accept.strip():
        accept = "text/html"
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        candidates = ["text/html", SIMPLE_HTML, SIMPLE_JSON] if media in ("*/*", "application/*", "text/*") else [media]
        if media == "text/*":
            candidates = ["text/html"]
        for candidate in candidates:
            if candidate in available:
                choices.append((q, -index, candidate))
                break
    return max(choices)[2] if choices else None


class MirrorRequestHandler(BaseHTTPRequestHandler):
    """Serves one mirror's ``web/`` directory; see :func:`make_server`."""

    server_version = "bandersnatch-classic"
    web: Path
    hash_index: bool

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.info("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _refuse(self) -> None:
        self.send_error(405)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815 - http.server's naming

    # -- routing -----------------------------------------------------------------------
    def _serve(self, body: bool) -> None:
        raw = unquote(urlsplit(self.path).path)
        if "\x00" in raw or "\\" in raw or not raw.startswith("/"):
            return self.send_error(404)
        parts = [p for p in raw.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return self.send_error(404)
        if parts[:1] == ["simple"] and len(parts) <= 2:
            if not raw.endswith("/"):  # the pages' links are relative to the directory
                return self._redirect(raw + "/")
            return self._simple(parts[1] if len(parts) == 2 else None, body)
        target = self._inside(Path(self.web, *parts))
        if target is None or not target.is_file():
            return self.send_error(404)
        if parts[:1] == ["json"] or (parts[:1] == ["pypi"] and parts[-1] == "json"):
            ctype = "application/json"
        else:
            ctype = "application/octet-stream"
        self._file(target, ctype, body)

    def _inside(self, path: Path) -> Path | None:
        """``path`` with symlinks resolved, or None when that leaves ``web/``."""
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):
            return None
        return resolved if resolved.is_relative_to(self.web) else None

    def _simple(self, name: str | None, body: bool) -> None:
        if name is None:
            directory = self.web / "simple"
        else:
            canonical = canonicalize_name(name)
            if canonical != name:
                return self._redirect(f"/simple/{canonical}/")
            directory = self.web / "simple" / (f"{canonical[0]}/{canonical}" if self.hash_index else canonical)
        available = {media for media, filename in FORMATS.items() if (directory / filename).is_file()}
        if "text/html" not in available and SIMPLE_HTML in available:
            available.add("text/html")  # an HTML-only layout from another tool
        if not available:
            return self.send_error(404)
        media = negotiate(self.headers.get("Accept", ""), available)
        if media is None:
            return self.send_error(406, "Not Acceptable", f"available: {', '.join(sorted(available))}")
        filename = FORMATS[media]
        if not (directory / filename).is_file():
            filename = FORMATS[SIMPLE_HTML if media == "text/html" else "text/html"]
        ctype = media + ("; charset=utf-8" if media == "text/html" else "")
        target = self._inside(directory / filename)
        if target is None:
            return self.send_error(404)
        logger.debug("%s served as %s", self.path, media)
        self._file(target, ctype, body, vary=True)

    def _redirect(self, location: str) -> None:
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _file(self, path: Path, ctype: str, body: bool, vary: bool = False) -> None:
        try:
            fh = open(path, "rb")
        except OSError:
            return self.send_error(404)
        with fh:
            stat = os.fstat(fh.fileno())
            since = self.headers.get("If-Modified-Since")
            if since:
                try:
                    if int(stat.st_mtime) <= email.utils.parsedate_to_datetime(since).timestamp():
                        self.send_response(304)
                        self.end_headers()
                        return
                except (TypeError, ValueError):
                    pass
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(stat.st_size))
            self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
            if vary:
                self.send_header("Vary", "Accept")
            self.end_headers()
            if body:
                shutil.copyfileobj(fh, self.wfile, 1 << 20)


def make_server(web_dir: Path | str, bind: str = "127.0.0.1", port: int = 8080, hash_index: bool = False) -> ThreadingHTTPServer:
    """A server for ``web_dir`` bound to ``bind:port`` (port 0: any free port), not started."""
    web = Path(web_dir).resolve()
    handler = type("Handler", (MirrorRequestHandler,), {"web": web, "hash_index": hash_index})
    server = ThreadingHTTPServer((bind, port), handler)
    server.daemon_threads = True
    return server


def serve(web_dir: Path | str, bind: str, port: int, hash_index: bool = False) -> int:
    """Serve until interrupted; the exit status for the CLI."""
    if not Path(web_dir, "simple").is_dir():
        logger.error("%s has no simple index yet: run `bandersnatch mirror` first", web_dir)
        return 2
    server = make_server(web_dir, bind, port, hash_index)
    host, bound = server.server_address[:2]
    logger.info("Serving %s at http://%s:%d/simple/ (Ctrl-C to stop)", web_dir, host, bound)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("Stopped")
    finally:
        server.server_close()
    return 0
