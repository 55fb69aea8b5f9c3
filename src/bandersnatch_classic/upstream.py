"""Where bytes come from: the upstream index over HTTP (XML-RPC, JSON API, simple API, files).

The transport is urllib3 -- the library requests itself is built on -- used directly: a
request through requests' Session costs about three times the CPU of the same request
through urllib3 (measured 720 us against 250 us on loopback), and a full mirror makes
hundreds of thousands of requests. One thread-safe PoolManager keeps up to ``workers``
connections alive per host.

File downloads, which are nearly all of a full sync's requests, skip urllib3 when no
proxy is in the way: each thread keeps its own keep-alive ``http.client`` connection per
host, which costs less than half the CPU per request (measured 125 us against 300 us for
a 20 KB file on loopback), and retries connection errors and 429/5xx itself, with the
same policy.

Retries come in two layers. urllib3's ``Retry`` retries what happens before a body
arrives: connection errors and 429/500/502/503/504, honouring ``Retry-After``. What it
cannot retry -- a body cut short, a connection reset mid-body, a file whose digest is
wrong, a page older than the serial we were promised -- is retried here, with the same
exponential backoff. A local write error while a download is stored (disk full, permission)
comes from the storage layer as ``LocalIOError``: it is not a network error, so it is
neither retried nor turned into an ``UpstreamError``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import json
import logging
import re
import ssl
import threading
import time
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from . import __version__
from .errors import HashMismatch, ProjectGone, StaleResponse, UpstreamError
from .models import Project
from .pages import JSON_CONTENT_TYPE as SIMPLE_JSON

logger = logging.getLogger(__name__)

USER_AGENT = f"bandersnatch-classic/{__version__} (urllib3/{urllib3.__version__})"
RETRY_STATUSES = (429, 500, 502, 503, 504)
_HTML_SERIAL = re.compile(rb"<!--SERIAL (\d+)-->")
CHUNK = 1 << 20
#: A hostile or confused upstream must not park us for hours with Retry-After.
MAX_RETRY_AFTER = 60.0
#: Errors of a body in flight (cut short, reset, stalled): urllib3 has already handed the
#: response over, so these are retried here.
BODY_ERRORS = (ProtocolError, ReadTimeoutError)


class MethodUnavailable(UpstreamError):
    """The upstream does not offer this discovery method (405, 404, or not JSON)."""


class _CappedRetry(Retry):
    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, MAX_RETRY_AFTER)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per request and the base of the exponential backoff."""

    attempts: int = 4
    backoff: float = 0.5

    def sleep(self, attempt: int) -> None:
        time.sleep(self.backoff * (2 ** attempt))


@dataclass
class Response:
    """What the callers need of an answer: status, headers, and (for API calls) the body."""

    status: int
    headers: Any
    body: bytes = b""

    def header(self, name: str) -> str:
        return str(self.headers.get(name) or "")


def _proxy_for(url: str, configured: str) -> str:
    """The proxy to use: the configured one, else the environment's (``https_proxy``...)."""
    if configured:
        return configured
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return ""
    return urllib.request.getproxies().get(parts.scheme, "")


class Upstream:
    """A package index that speaks the APIs of the public index."""

    def __init__(
        self,
        master: str,
        *,
        timeout: float = 10.0,
        global_timeout: float = 1800.0,
        proxy: str = "",
        download_mirror: str = "",
        download_mirror_no_fallback: bool = False,
        retry: RetryPolicy = RetryPolicy(),
        pool_size: int = 10,
    ) -> None:
        self.master = master.rstrip("/")
        self.timeout = timeout
        self.global_timeout = global_timeout
        self.download_mirror = download_mirror.rstrip("/")
        self.download_mirror_no_fallback = download_mirror_no_fallback
        self.retry = retry
        self._lock = threading.Lock()
        self.requests_made = 0
        retries = _CappedRetry(
            total=retry.attempts - 1,
            backoff_factor=retry.backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # our POSTs (XML-RPC reads) are safe to repeat
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        options: dict[str, Any] = {
            "maxsize": pool_size,
            "retries": retries,
            "timeout": urllib3.Timeout(connect=timeout, read=timeout),
            "headers": {"User-Agent": USER_AGENT},
        }
        proxy_url = _proxy_for(self.master, proxy)
        self._proxy = proxy
        self._proxied: dict[str, bool] = {}
        self._direct = threading.local()
        self._http: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy_url, **options) if proxy_url else urllib3.PoolManager(**options)
        )

    def close(self) -> None:
        """Close every pooled connection; the next request opens a new one.

        A forked worker process calls this first, so that it never shares a socket with
        its parent.
        """
        self._http.clear()
        self._direct = threading.local()

    # -- one request -----------------------------------------------------------------
    @contextlib.contextmanager
    def _response(self, method: str, url: str, **kwargs: Any) -> Iterator[urllib3.BaseHTTPResponse]:
        """A streaming response; connection-level retries have already happened."""
        with self._lock:
            self.requests_made += 1
        try:
            response = self._http.request(method, url, preload_content=False, **kwargs)
        except MaxRetryError as exc:
            raise UpstreamError(f"{url}: {_describe(exc.reason or exc)} (after {self.retry.attempts} attempts)") from exc
        except TransportError as exc:
            raise UpstreamError(f"{url}: {_describe(exc)}") from exc
        try:
            yield response
            response.drain_conn()  # the rest of an error page, so the connection can be reused
        except BaseException:
            response.close()  # a body abandoned midway: never reuse that connection
            raise
        finally:
            response.release_conn()

    def _read_body(self, response: urllib3.BaseHTTPResponse, url: str, deadline: float) -> bytes:
        parts = []
        for chunk in response.stream(CHUNK):
            parts.append(chunk)
            if time.monotonic() > deadline:
                raise UpstreamError(f"{url}: took longer than global-timeout ({self.global_timeout:g}s)")
        return b"".join(parts)

    def _request(self, method: str, url: str, accept_status: tuple[int, ...] = (200,), **kwargs: Any) -> Response:
        """One request with body-level retries; the body is read only for ``accept_status``."""
        last_error: Exception | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                self.retry.sleep(attempt - 1)
            deadline = time.monotonic() + self.global_timeout
            try:
                with self._response(method, url, **kwargs) as response:
                    if response.status not in accept_status:
                        if response.status in RETRY_STATUSES:
                            # urllib3 has already spent the retries on this status
                            raise UpstreamError(f"{url}: HTTP {response.status} after {self.retry.attempts} attempts")
                        return Response(response.status, response.headers)
                    body = self._read_body(response, url, deadline)
                    return Response(response.status, response.headers, body)
            except BODY_ERRORS as exc:
                last_error = exc
                logger.debug("Retrying %s %s after %s", method, url, _describe(exc))
        raise UpstreamError(f"{url}: {_describe(last_error)}")

    # -- XML-RPC ---------------------------------------------------------------------
    def xmlrpc(self, method: str, *params: Any) -> Any:
        body = xmlrpc.client.dumps(params, method).encode()
        response = self._request(
            "POST", f"{self.master}/pypi", accept_status=(200,), body=body, headers={"Content-Type": "text/xml"}
        )
        if response.status != 200:
            raise MethodUnavailable(f"XML-RPC {method}: HTTP {response.status} from {self.master}/pypi")
        try:
            (result,), _ = xmlrpc.client.loads(response.body)
        except (xmlrpc.client.Fault, xmlrpc.client.ResponseError, Exception) as exc:
            raise MethodUnavailable(f"XML-RPC {method}: unusable answer ({_describe(exc)})") from exc
        return result

    def changelog_last_serial(self) -> int:
        return int(self.xmlrpc("changelog_last_serial"))

    def list_packages_with_serial(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.xmlrpc("list_packages_with_serial").items()}

    def changelog_since(self, serial: int, until: int) -> dict[str, int]:
        """Project -> highest serial of every change after ``serial``, paging until ``until``."""
        changed: dict[str, int] = {}
        while serial < until:
            entries = self.xmlrpc("changelog_since_serial", serial)
            if not entries:
                break
            for name, _version, _when, _action, entry_serial in entries:
                changed[name] = max(changed.get(name, 0), int(entry_serial))
            newest = max(int(e[4]) for e in entries)
            if newest <= serial:
                break
            serial = newest
        return changed

    # -- simple API ------------------------------------------------------------------
    def simple_listing(self) -> tuple[int, dict[str, int]]:
        """The PEP 691 root listing: (last serial, {name: serial})."""
        url = f"{self.master}/simple/"
        doc = self._json_or_unavailable(self._request("GET", url, headers={"Accept": SIMPLE_JSON}), url)
        try:
            projects = {p["name"]: int(p["_last-serial"]) for p in doc["projects"]}
            return int(doc["meta"]["_last-serial"]), projects
        except (KeyError, TypeError, ValueError) as exc:
            raise MethodUnavailable(f"{url}: PEP 691 listing without serials") from exc

    def html_listing(self) -> list[str]:
        """Project names from the HTML root listing (PEP 503): the link texts."""
        from .htmllinks import link_texts

        url = f"{self.master}/simple/"
        response = self._request("GET", url, headers={"Accept": "text/html"})
        if response.status != 200:
            raise MethodUnavailable(f"{url}: HTTP {response.status}")
        return link_texts(response.body.decode("utf-8", "replace"))

    def project_page_serial(self, name: str) -> int | None:
        """A project's serial, or None when it does not exist.

        Asked of its PEP 691 page: the ``X-PyPI-Last-Serial`` header, else ``_last-serial``
        in the JSON, else the ``<!--SERIAL N-->`` comment of an HTML page; when the page
        carries none of them, the JSON API document's ``last_serial``.
        """
        url = f"{self.master}/simple/{quote(name)}/"
        response = self._request("GET", url, accept_status=(200, 404), headers={"Accept": SIMPLE_JSON})
        if response.status == 404:
            return None
        header = response.header("X-PyPI-Last-Serial")
        if header.isdigit():
            return int(header)
        if "json" in response.header("Content-Type"):
            try:
                return int(json.loads(response.body)["meta"]["_last-serial"])
            except (ValueError, KeyError, TypeError):
                pass
        else:
            match = _HTML_SERIAL.search(response.body[-200:])
            if match:
                return int(match.group(1))
        try:
            return self.project(name).serial
        except ProjectGone:
            return None

    @staticmethod
    def _json_or_unavailable(response: Response, url: str) -> Any:
        if response.status != 200:
            raise MethodUnavailable(f"{url}: HTTP {response.status}")
        if "json" not in response.header("Content-Type"):
            raise MethodUnavailable(f"{url}: answered {response.header('Content-Type')!r}, not JSON")
        try:
            return json.loads(response.body)
        except ValueError as exc:
            raise MethodUnavailable(f"{url}: not valid JSON") from exc

    # -- JSON API --------------------------------------------------------------------
    def project(self, name: str, expected_serial: int = 0) -> Project:
        """A project's metadata, no older than ``expected_serial`` (retried while stale).

        The serial is ``X-PyPI-Last-Serial`` when present, else ``last_serial`` in the body:
        proxies that strip the header do not make a page stale.
        """
        url = f"{self.master}/pypi/{quote(name)}/json"
        serial = 0
        for attempt in range(self.retry.attempts):
            if attempt:
                self.retry.sleep(attempt)
            response = self._request("GET", url, accept_status=(200, 404))
            if response.status == 404:
                raise ProjectGone(f"{name}: the upstream has no such project (HTTP 404)")
            if response.status != 200:
                raise UpstreamError(f"{name}: HTTP {response.status} from {url}")
            try:
                doc = json.loads(response.body)
                header = response.header("X-PyPI-Last-Serial")
                serial = int(header) if header.isdigit() else int(doc.get("last_serial") or 0)
                project = Project.from_json(doc, serial, url)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise UpstreamError(f"{name}: malformed JSON API document ({_describe(exc)})") from exc
            if serial >= expected_serial:
                return project
            logger.debug("%s: page at serial %d, expected %d; retrying", name, serial, expected_serial)
        raise StaleResponse(f"{name}: upstream keeps serving serial {serial}, older than the expected {expected_serial}")

    # -- files -----------------------------------------------------------------------
    def file_urls(self, url: str) -> list[str]:
        """Where to fetch a file from: the download mirror first (unless disabled), then ``url``."""
        if not self.download_mirror:
            return [url]
        parts = urlsplit(url)
        base = urlsplit(self.download_mirror)
        mirrored = urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, ""))
        return [mirrored] if self.download_mirror_no_fallback else [mirrored, url]

    def fetch(self, url: str) -> bytes:
        """A small document (e.g. a ``.metadata`` file), retried like everything else."""
        response = self._request("GET", url)
        if response.status != 200:
            raise UpstreamError(f"{url}: HTTP {response.status}")
        return response.body

    def download(
        self,
        url: str,
        open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]],
        sha256: str,
    ) -> int:
        """Stream ``url`` into a fresh ``open_dest()`` per attempt, checking its sha256.

        ``open_dest`` must discard what was written when the block raises (Storage.writer
        does), so a failed attempt leaves nothing behind. Returns the bytes written.
        """
        last: Exception | None = None
        for candidate in self.file_urls(url):
            for attempt in range(self.retry.attempts):
                if attempt:
                    self.retry.sleep(attempt - 1)
                try:
                    return self._download_once(candidate, open_dest, sha256)
                except _RetryAfter as exc:
                    last = exc
                    if exc.seconds:
                        time.sleep(exc.seconds)
                    logger.debug("Retrying %s after %s", candidate, _describe(exc))
                except (HashMismatch, *BODY_ERRORS, *DIRECT_ERRORS) as exc:
                    last = exc
                    logger.debug("Retrying %s after %s", candidate, _describe(exc))
                except UpstreamError as exc:
                    last = exc
                    break  # an HTTP error status or a dead connection: urllib3 has retried it
        if isinstance(last, HashMismatch):
            raise HashMismatch(f"{url}: {last}")
        raise UpstreamError(f"{url}: {_describe(last)}")

    def _download_once(
        self,
        url: str,
        open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]],
        sha256: str,
    ) -> int:
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        proxied = self._proxied.get(key)
        if proxied is None:  # asking the environment costs ~200 us: once per host
            proxied = self._proxied[key] = bool(_proxy_for(url, self._proxy))
        if proxied:
            return self._download_pooled(url, open_dest, sha256)
        return self._download_direct(url, open_dest, sha256)

    def _connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        key = (scheme, host, port)
        connections: dict[tuple[str, str, int | None], http.client.HTTPConnection] = self._direct.__dict__.setdefault(
            "connections", {}
        )
        conn = connections.get(key)
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=_tls_context())
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            connections[key] = conn
        return conn

    def _download_direct(
        self,
        url: str,
        open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]],
        sha256: str,
    ) -> int:
        """One attempt over this thread's own keep-alive connection (no proxy)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"{url}: not an http(s) URL")
        conn = self._connection(parts.scheme, parts.hostname, parts.port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline = time.monotonic() + self.global_timeout
        with self._lock:
            self.requests_made += 1
        try:
            conn.request("GET", target, headers={"User-Agent": USER_AGENT})
            response = conn.getresponse()
            if response.status != 200:
                response.read()
                if response.status in RETRY_STATUSES:
                    raise _RetryAfter(f"HTTP {response.status}", _retry_after(response.getheader("Retry-After")))
                raise UpstreamError(f"HTTP {response.status}")
            written = self._write_verified(_body_chunks(response), open_dest, sha256, deadline)
            if response.will_close:
                conn.close()
            return written
        except BaseException:
            conn.close()  # never reuse a connection whose answer was not read to the end
            raise

    def _download_pooled(
        self,
        url: str,
        open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]],
        sha256: str,
    ) -> int:
        deadline = time.monotonic() + self.global_timeout
        with self._response("GET", url) as response:
            if response.status != 200:
                raise UpstreamError(f"HTTP {response.status}")
            return self._write_verified(response.stream(CHUNK), open_dest, sha256, deadline)

    def _write_verified(
        self,
        chunks: Iterable[bytes | memoryview],
        open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]],
        sha256: str,
        deadline: float,
    ) -> int:
        """Write a body to ``open_dest()`` while hashing it; an error inside leaves nothing behind."""
        digest = hashlib.sha256()
        written = 0
        with open_dest() as fh:
            for chunk in chunks:
                digest.update(chunk)
                fh.write(chunk)
                written += len(chunk)
                if time.monotonic() > deadline:
                    raise UpstreamError(f"took longer than global-timeout ({self.global_timeout:g}s)")
            if digest.hexdigest() != sha256:
                raise HashMismatch(f"sha256 {digest.hexdigest()} does not match the expected {sha256}")
        return written


class _RetryAfter(UpstreamError):
    """A 429/5xx answer on the direct download path: retried after ``seconds`` (or backoff)."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


def _body_chunks(response: http.client.HTTPResponse) -> Iterator[memoryview]:
    """The body through one reused buffer (no copies); IncompleteRead if it ends short."""
    buffer = memoryview(bytearray(CHUNK))
    while count := response.readinto(buffer):
        yield buffer[:count]
    if response.length:  # the body ended before Content-Length said it would
        raise http.client.IncompleteRead(b"", response.length)


#: What a direct download may raise that is worth another attempt.
DIRECT_ERRORS = (OSError, http.client.HTTPException)


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta seconds only), capped; 0 when absent."""
    try:
        return min(max(float(value or 0), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return 0.0


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _describe(exc: BaseException | None) -> str:
    """A one-line reason for a log line: the innermost useful message."""
    if exc is None:
        return "unknown error"
    text = str(exc).strip() or type(exc).__name__
    return _CONNECTION_REPR.sub("", text.splitlines()[0])[:300]


#: The ``HTTPConnection(host='...', port=443): `` urllib3 puts before a connection error: the URL says it.
_CONNECTION_REPR = re.compile(r"^\w*Connection(?:Pool)?\(host=[^)]*\): ")
