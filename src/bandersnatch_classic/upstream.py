"""Where bytes come from: the upstream index over HTTP (XML-RPC, JSON API, simple API, files).

Every request goes through one ``requests.Session``, so the upstream is reached the way a
requests user expects: proxies from ``[mirror] proxy`` or the environment (``https_proxy``,
``NO_PROXY``), CA bundles from ``REQUESTS_CA_BUNDLE``, credentials from ``.netrc``. Its
``HTTPAdapter`` keeps up to ``workers`` connections alive per host, and file bodies stream
through the same pool.

Retries come in two layers. urllib3's ``Retry``, mounted in the adapter, retries what
happens before a body arrives: connection errors and 429/500/502/503/504, honouring
``Retry-After`` (capped). What it cannot retry -- a body cut short, a connection reset or a
stall mid-body, a file whose digest is wrong, a page older than the serial we were
promised -- is retried here, with the same exponential backoff. A local error (the disk
is full, a write is refused) is none of these: it comes from the storage layer as
``LocalIOError``, and is neither retried nor turned into an ``UpstreamError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from . import __version__
from .config import MirrorConfig
from .errors import HashMismatch, NotServed, ProjectGone, StaleResponse, UpstreamError
from .models import Project
from .pages import JSON_CONTENT_TYPE as SIMPLE_JSON

logger = logging.getLogger(__name__)

USER_AGENT = f"bandersnatch-classic/{__version__} (requests/{requests.__version__})"
RETRY_STATUSES = (429, 500, 502, 503, 504)
_HTML_SERIAL = re.compile(rb"<!--SERIAL (\d+)-->")
CHUNK = 1 << 20
#: A hostile or confused upstream must not park us for hours with Retry-After.
MAX_RETRY_AFTER = 60.0
#: Errors of a body in flight (cut short, reset, stalled, undecodable): the adapter has
#: already handed the response over, so these are retried here. Local OSErrors are not here.
BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.ContentDecodingError,
    ProtocolError,
    ReadTimeoutError,
)


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
    #: Where the answer came from, after redirects: relative links resolve against it.
    url: str = ""

    def header(self, name: str) -> str:
        return str(self.headers.get(name) or "")


@dataclass(frozen=True)
class PageValidators:
    """What the upstream's last answer for a page said: the serial it gave, and its ``ETag``
    and ``Last-Modified``, to ask for the page again conditionally. An unchanged page then
    costs a 304 and no body (issue 22: a no-op run of an allowlist mirror asks every page)."""

    serial: int
    etag: str = ""
    last_modified: str = ""

    def headers(self) -> dict[str, str]:
        """``If-None-Match`` and ``If-Modified-Since`` for what the last answer gave."""
        out = {"If-None-Match": self.etag} if self.etag else {}
        if self.last_modified:
            out["If-Modified-Since"] = self.last_modified
        return out

    @classmethod
    def of(cls, response: Response, serial: int) -> PageValidators:
        return cls(serial, response.header("ETag"), response.header("Last-Modified"))


class Upstream:
    """A package index that speaks the APIs of the public index."""

    @classmethod
    def from_config(cls, config: MirrorConfig, retry: RetryPolicy | None = None) -> Upstream:
        """The upstream ``[mirror]`` names, with its timeouts, proxy and download mirror."""
        return cls(
            config.master,
            timeout=config.timeout,
            global_timeout=config.global_timeout,
            proxy=config.proxy,
            download_mirror=config.download_mirror,
            download_mirror_no_fallback=config.download_mirror_no_fallback,
            retry=retry or RetryPolicy(),
            pool_size=config.workers,
        )

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
        self._proxy = proxy
        self._pool_size = max(1, pool_size)
        self._session = self._new_session()
        #: origin -> the session's settings for it (see _file_response).
        self._origins: dict[str, tuple[dict[str, Any], dict[str, str], Any]] = {}

    def _new_session(self) -> requests.Session:
        retries = _CappedRetry(
            total=self.retry.attempts - 1,
            backoff_factor=self.retry.backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # our POSTs (XML-RPC reads) are safe to repeat
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self._pool_size, max_retries=retries)
        session = requests.Session()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        if self._proxy:
            session.proxies = {"http": self._proxy, "https": self._proxy}
        return session

    def close(self) -> None:
        """Close every pooled connection; the next request opens a new one.

        A forked worker process calls this first, so that it never shares a socket with
        its parent.
        """
        self._session.close()
        self._session = self._new_session()
        self._origins = {}

    # -- one request -----------------------------------------------------------------
    @contextlib.contextmanager
    def _response(self, method: str, url: str, **kwargs: Any) -> Iterator[requests.Response]:
        """A streaming response; connection-level retries have already happened."""
        with self._lock:
            self.requests_made += 1
        try:
            response = self._session.request(method, url, stream=True, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise UpstreamError(f"{url}: {_describe(_cause(exc))} (after {self.retry.attempts} attempts)") from exc
        # A body read to its end gives the connection back to the pool when closed; one
        # abandoned midway (an error, a wrong digest) is closed, never reused.
        with contextlib.closing(response):
            yield response

    def _read_body(self, response: requests.Response, url: str, deadline: float) -> bytes:
        parts = []
        for chunk in response.iter_content(CHUNK):
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
                    if response.status_code not in accept_status:
                        if response.status_code in RETRY_STATUSES:
                            # the adapter has already spent the retries on this status
                            raise UpstreamError(f"{url}: HTTP {response.status_code} after {self.retry.attempts} attempts")
                        response.content  # the rest of an error page, so the connection can be reused
                        return Response(response.status_code, response.headers)
                    body = self._read_body(response, url, deadline)
                    return Response(response.status_code, response.headers, body, response.url)
            except BODY_ERRORS as exc:
                last_error = exc
                logger.debug("Retrying %s %s after %s", method, url, _describe(exc))
        raise UpstreamError(f"{url}: {_describe(_cause(last_error))}")

    # -- XML-RPC ---------------------------------------------------------------------
    def xmlrpc(self, method: str, *params: Any) -> Any:
        body = xmlrpc.client.dumps(params, method).encode()
        response = self._request(
            "POST", f"{self.master}/pypi", accept_status=(200,), data=body, headers={"Content-Type": "text/xml"}
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
    def simple_listing(self, known: PageValidators | None = None) -> tuple[int, dict[str, int], PageValidators] | None:
        """The PEP 691 root listing: (last serial, {name: serial}, its validators); None when
        ``known`` (the validators of an earlier answer) says it has not changed (304)."""
        url = f"{self.master}/simple/"
        headers = {"Accept": SIMPLE_JSON, **(known.headers() if known else {})}
        response = self._request("GET", url, accept_status=(200, 304) if known else (200,), headers=headers)
        if response.status == 304:
            return None
        doc = self._json_or_unavailable(response, url)
        try:
            projects = {p["name"]: int(p["_last-serial"]) for p in doc["projects"]}
            serial = int(doc["meta"]["_last-serial"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MethodUnavailable(f"{url}: PEP 691 listing without serials") from exc
        return serial, projects, PageValidators.of(response, serial)

    def listing_serial(self) -> int:
        """The index's serial from one request for the PEP 691 root listing.

        The ``X-PyPI-Last-Serial`` header when the upstream sends it: the (large) body is
        then not read. Otherwise the listing's ``meta._last-serial``.
        """
        url = f"{self.master}/simple/"
        with self._response("GET", url, headers={"Accept": SIMPLE_JSON}) as response:
            if response.status_code != 200:
                raise MethodUnavailable(f"{url}: HTTP {response.status_code}")
            header = response.headers.get("X-PyPI-Last-Serial", "")
            if header.isdigit():
                return int(header)
            if "json" not in response.headers.get("Content-Type", ""):  # do not read a large HTML listing
                raise MethodUnavailable(
                    f"{url}: no X-PyPI-Last-Serial header, and answered {response.headers.get('Content-Type')!r}, not JSON"
                )
            try:
                body = self._read_body(response, url, time.monotonic() + self.global_timeout)
                return int(json.loads(body)["meta"]["_last-serial"])
            except BODY_ERRORS as exc:
                raise UpstreamError(f"{url}: {_describe(exc)}") from exc
            except (ValueError, KeyError, TypeError) as exc:
                raise MethodUnavailable(f"{url}: no serial in the header or the PEP 691 listing") from exc

    def html_listing(self, known: PageValidators | None = None) -> tuple[list[str], PageValidators] | None:
        """Project names from the HTML root listing (PEP 503): the link texts, and the
        listing's validators; None when ``known`` says it has not changed (304)."""
        from .htmllinks import link_texts

        url = f"{self.master}/simple/"
        headers = {"Accept": "text/html", **(known.headers() if known else {})}
        response = self._request("GET", url, accept_status=(200, 304) if known else (200,), headers=headers)
        if response.status == 304:
            return None
        if response.status != 200:
            raise MethodUnavailable(f"{url}: HTTP {response.status}")
        return link_texts(response.body.decode("utf-8", "replace")), PageValidators.of(response, 0)

    def project_page_serial(self, name: str, known: PageValidators | None = None) -> PageValidators | None:
        """A project's serial (with its page's validators), or None when it does not exist.

        Asked of its PEP 691 page: the ``X-PyPI-Last-Serial`` header, else ``_last-serial``
        in the JSON, else the ``<!--SERIAL N-->`` comment of an HTML page; when the page
        carries none of them, the JSON API document's ``last_serial``. With ``known`` (the
        validators of the last answer) the page is asked conditionally, and a 304 answers
        ``known``: the page, and so the serial, has not changed.
        """
        url = f"{self.master}/simple/{quote(name)}/"
        headers = {"Accept": SIMPLE_JSON, **(known.headers() if known else {})}
        response = self._request("GET", url, accept_status=(200, 304, 404), headers=headers)
        if response.status == 304 and known is not None:
            return known
        serial = self._page_serial(name, response) if response.status == 200 else None
        return PageValidators.of(response, serial) if serial is not None else None

    def _page_serial(self, name: str, response: Response) -> int | None:
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
                project = Project.from_json(doc, serial, response.url or url)
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
                except (HashMismatch, *BODY_ERRORS) as exc:
                    last = exc
                    logger.debug("Retrying %s after %s", candidate, _describe(exc))
                except UpstreamError as exc:
                    last = exc
                    break  # an HTTP error status or a dead connection: the adapter has retried it
        if isinstance(last, (HashMismatch, NotServed)):
            raise type(last)(f"{url}: {last}")
        raise UpstreamError(f"{url}: {_describe(_cause(last))}")

    def _download_once(
        self,
        url: str,
        open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]],
        sha256: str,
    ) -> int:
        deadline = time.monotonic() + self.global_timeout
        with self._file_response(url) as response:
            if response.status_code != 200:
                raise _status_error(response.status_code)
            return self._write_verified(response.iter_content(CHUNK), open_dest, sha256, deadline)

    @contextlib.contextmanager
    def _file_response(self, url: str) -> Iterator[requests.Response]:
        """A file's answer, sent straight through the session's adapter.

        ``Session.request`` reads the environment (proxies, ``NO_PROXY``, CA bundle,
        ``.netrc``) and merges settings, cookies and hooks on every call: three quarters of
        the CPU of a small file's download. Files are nearly all of a full sync's requests,
        so here the session's settings for each origin are worked out once, by the
        session itself, and every file goes through the session's adapter (its connection
        pool and its retries). A redirect is followed by the session from the answer already
        received, as ``Session.request`` would (the redirecting URL is not asked twice).
        """
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        settings = self._origins.get(key)
        if settings is None:
            settings = self._origins[key] = self._session_settings(url)
        send_options, headers, auth = settings
        prepared = requests.PreparedRequest()
        prepared.prepare(method="GET", url=url, headers=headers, auth=auth)
        with self._lock:
            self.requests_made += 1
        try:
            response = self._session.get_adapter(url).send(prepared, stream=True, timeout=self.timeout, **send_options)
            if response.is_redirect:  # the session follows it from here, as Session.request would
                hops = self._session.resolve_redirects(response, prepared, stream=True, timeout=self.timeout, **send_options)
                *_, response = hops  # the last answer is the file's
        except requests.RequestException as exc:
            raise UpstreamError(f"{url}: {_describe(_cause(exc))}") from exc
        with contextlib.closing(response):
            yield response

    def _session_settings(self, url: str) -> tuple[dict[str, Any], dict[str, str], Any]:
        """What ``Session.request`` would use for ``url``: adapter options, headers, auth."""
        session = self._session
        options = session.merge_environment_settings(url, {}, True, None, None)
        options.pop("stream", None)
        auth = session.auth or (requests.utils.get_netrc_auth(url) if session.trust_env else None)
        return options, dict(session.headers), auth

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


def _status_error(status: int) -> UpstreamError:
    """The error for a file answered with ``status``: :class:`NotServed` for 404 and 410."""
    return NotServed(f"HTTP {status}") if status in (404, 410) else UpstreamError(f"HTTP {status}")


def _cause(exc: BaseException | None) -> BaseException | None:
    """The innermost error of a requests/urllib3 chain (e.g. the refused connection under the retries)."""
    seen = 0
    while exc is not None and seen < 8:
        inner = getattr(exc, "reason", None) or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None)
        if not isinstance(inner, BaseException):
            return exc
        exc, seen = inner, seen + 1
    return exc


def _describe(exc: BaseException | None) -> str:
    """A one-line reason for a log line: the innermost useful message."""
    if exc is None:
        return "unknown error"
    text = str(exc).strip() or type(exc).__name__
    return _CONNECTION_REPR.sub("", text.splitlines()[0])[:300]


#: The ``HTTPConnection(host='...', port=443): `` urllib3 puts before a connection error: the URL says it.
_CONNECTION_REPR = re.compile(r"^\w*Connection(?:Pool)?\(host=[^)]*\): ")
