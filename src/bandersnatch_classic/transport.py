"""How requests reach the upstream: one ``requests`` session, one request path, one retry policy.

Every request (an XML-RPC call, an API document, a file) is sent by :meth:`Transport.open`,
so the upstream is reached the way a requests user expects: proxies from ``[mirror] proxy``
or the environment (``https_proxy``, ``NO_PROXY``), CA bundles from ``REQUESTS_CA_BUNDLE``,
credentials from ``.netrc``. The session's ``HTTPAdapter`` keeps up to ``workers``
connections alive per host; a ``file://`` upstream (a copied mirror tree) is answered by
:class:`~bandersnatch_classic.tree.TreeAdapter`, mounted on the same session.

One :class:`RetryPolicy` decides how hard to try, at two layers with the same backoff.
urllib3's ``Retry``, mounted in the adapter, retries what happens before a body arrives:
connection errors and 429/500/502/503/504, honouring ``Retry-After`` (capped).
:meth:`RetryPolicy.run` retries what it cannot: a body cut short, a connection reset or a
stall mid-body, and answers the dialects refuse as not yet right (:data:`RETRIED_ANSWERS`:
a file whose digest is wrong, a document older than the serial promised). A local error
(the disk is full, a write is refused) is none of these: it comes from the storage layer
as ``LocalIOError``, and is neither retried nor turned into an ``UpstreamError``.

Nothing the upstream sends is trusted further than it must be. With ``allow-non-https``
off, no redirect from https to anything else is followed (the session refuses it where
requests looks for the next hop, see :class:`_Session`). Bodies are read in chunks, under
``global-timeout``, and documents are refused past ``max-document-size``
(:class:`~bandersnatch_classic.errors.UnusableEntry`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from itertools import takewhile
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from . import __version__
from .config import DEFAULT_MAX_DOCUMENT_SIZE, human_size
from .errors import HashMismatch, NotServed, RedirectRefused, StaleResponse, UnusableEntry, UpstreamError
from .tree import SCHEME as TREE_SCHEME, TreeAdapter, is_tree

logger = logging.getLogger(__name__)

T = TypeVar("T")

USER_AGENT = f"bandersnatch-classic/{__version__} (requests/{requests.__version__})"
RETRY_STATUSES = (429, 500, 502, 503, 504)
CHUNK = 1 << 20
#: The rest of an error page is read (so that the connection can be reused) up to this size;
#: a longer one is dropped with its connection.
ERROR_PAGE_LIMIT = 64 << 10
#: A hostile or confused upstream must not park us for hours with Retry-After.
MAX_RETRY_AFTER = 60.0
#: Errors of a body in flight (cut short, reset, stalled, undecodable): the adapter has
#: already handed the response over, so these are retried by :meth:`RetryPolicy.run`.
BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.ContentDecodingError,
    ProtocolError,
    ReadTimeoutError,
)
#: Answers that arrived whole but are not right yet: asked again, like a body cut short.
RETRIED_ANSWERS = (HashMismatch, StaleResponse)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per request, and the base of the exponential backoff
    (the n-th retry waits ``backoff * 2**(n-1)`` seconds, at both layers)."""

    attempts: int = 4
    backoff: float = 0.5

    def adapter_retry(self) -> Retry:
        """The urllib3 ``Retry`` for the adapter: connection errors and :data:`RETRY_STATUSES`."""
        return _AdapterRetry(
            total=self.attempts - 1,
            backoff_factor=self.backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # our POSTs (XML-RPC reads) are safe to repeat
            respect_retry_after_header=True,
            raise_on_status=False,
        )

    def run(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it returns, retrying :data:`BODY_ERRORS` and :data:`RETRIED_ANSWERS`.

        After the last attempt, a retried answer is raised as it is; a body error becomes an
        ``UpstreamError`` naming ``what``. Anything else is not retried and propagates.
        """
        last: Exception | None = None
        for n in range(self.attempts):
            if n:
                time.sleep(backoff_delay(self.backoff, n))
            try:
                return attempt()
            except (*BODY_ERRORS, *RETRIED_ANSWERS) as exc:
                last = exc
                logger.debug("Retrying %s after %s", what, describe(exc))
        if isinstance(last, UpstreamError):
            raise last
        raise UpstreamError(f"{what}: {describe(_cause(last))}") from last


def backoff_delay(base: float, retry: int) -> float:
    """Seconds before the ``retry``-th retry (1, 2, ...): ``base``, then doubling."""
    return base * (2 ** (retry - 1)) if retry > 0 else 0.0


class _AdapterRetry(Retry):
    """urllib3's ``Retry`` with :class:`RetryPolicy`'s backoff and a cap on ``Retry-After``."""

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, MAX_RETRY_AFTER)

    def get_backoff_time(self) -> float:
        errors = len(list(takewhile(lambda h: h.redirect_location is None, reversed(self.history))))
        return min(self.backoff_max, backoff_delay(self.backoff_factor, errors))


class _Session(requests.Session):
    """A session that refuses to follow a redirect from https to anything but https.

    Every redirect :meth:`Transport.open` follows goes through ``resolve_redirects``, which
    asks each hop's target of :meth:`get_redirect_target`: refusing there covers every request.
    """

    allow_non_https = False

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target is None or self.allow_non_https or urlsplit(resp.url).scheme != "https":
            return target
        following = urljoin(resp.url, target)
        if urlsplit(following).scheme != "https":
            resp.close()
            raise RedirectRefused(
                f"{resp.url}: redirected to {following}, not https; refused (allow-non-https = false)"
            )
        return target


@dataclass
class Response:
    """What the dialects need of an answer: status, headers, and (when read) the body."""

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
        """The validators of ``response``. ``Last-Modified`` counts whole seconds, so a page
        changed again within the second it was answered in would look unchanged: it is kept
        only when the answer's ``Date`` is a whole second or more after it."""
        return cls(serial, response.header("ETag"), _settled(response.header("Last-Modified"), response.header("Date")))


def conditional(known: PageValidators | None, accept: str) -> dict[str, str]:
    """The headers of a request for a page last answered with ``known`` (None: never)."""
    return {"Accept": accept, **(known.headers() if known else {})}


#: origin -> what ``Session.request`` would use there: adapter options, headers, auth.
_Settings = tuple[dict[str, Any], CaseInsensitiveDict, Any]


class Transport:
    """Sends requests to one upstream and reads their answers (see the module's docstring)."""

    def __init__(
        self,
        master: str,
        *,
        timeout: float = 10.0,
        global_timeout: float = 1800.0,
        proxy: str = "",
        retry: RetryPolicy = RetryPolicy(),
        pool_size: int = 10,
        allow_non_https: bool = False,
        max_document_size: int = DEFAULT_MAX_DOCUMENT_SIZE,
    ) -> None:
        self.master = master
        self.timeout = timeout
        self.global_timeout = global_timeout
        self.retry = retry
        self.allow_non_https = allow_non_https
        #: The largest document (a listing page, a JSON API document) read, in bytes.
        self.max_document_size = max_document_size
        self._proxy = proxy
        self._pool_size = max(1, pool_size)
        self._session = self._new_session()
        self._origins: dict[str, _Settings] = {}

    def _new_session(self) -> requests.Session:
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self._pool_size, max_retries=self.retry.adapter_retry())
        session = _Session()
        session.allow_non_https = self.allow_non_https
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        if self._proxy:
            session.proxies = {"http": self._proxy, "https": self._proxy}
        if is_tree(self.master):
            session.mount(TREE_SCHEME, TreeAdapter(self.master))
        return session

    def close(self) -> None:
        """Close every pooled connection; the next request opens a new one.

        A forked worker process calls this first, so that it never shares a socket with
        its parent.
        """
        self._session.close()
        self._session = self._new_session()
        self._origins = {}

    # -- the one request path ------------------------------------------------------------
    @contextlib.contextmanager
    def open(
        self, method: str, url: str, headers: dict[str, str] | None = None, data: bytes | None = None
    ) -> Iterator[requests.Response]:
        """A streaming answer to one request, redirects followed; connection-level retries
        have already happened.

        ``Session.request`` reads the environment (proxies, ``NO_PROXY``, CA bundle,
        ``.netrc``) and merges settings, cookies and hooks on every call: three quarters of
        the CPU of a small file's download. Here the session works out its settings once
        per origin (:meth:`_settings`), and each request goes straight to the session's
        adapter (its connection pool and its retries). A redirect is followed by the
        session from the answer already received, as ``Session.request`` would.
        """
        options, merged, auth = self._settings(url)
        if headers:
            merged = CaseInsensitiveDict(merged)
            merged.update(headers)
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=url, headers=merged, data=data, auth=auth)
        try:
            response = self._session.get_adapter(url).send(prepared, stream=True, timeout=self.timeout, **options)
            if response.is_redirect:
                *_, response = self._session.resolve_redirects(
                    response, prepared, stream=True, timeout=self.timeout, **options
                )
        except requests.RequestException as exc:
            raise UpstreamError(f"{url}: {describe(_cause(exc))} (after {self.retry.attempts} attempts)") from exc
        # A body read to its end gives the connection back to the pool when closed; one
        # abandoned midway (an error, a wrong digest) is closed, never reused.
        with contextlib.closing(response):
            yield response

    def _settings(self, url: str) -> _Settings:
        """What ``Session.request`` would use for ``url``'s origin, worked out once."""
        key = "/".join(url.split("/", 3)[:3])
        settings = self._origins.get(key)
        if settings is None:
            session = self._session
            options = session.merge_environment_settings(url, {}, True, None, None)
            options.pop("stream", None)
            auth = session.auth or (requests.utils.get_netrc_auth(url) if session.trust_env else None)
            settings = self._origins[key] = (options, CaseInsensitiveDict(session.headers), auth)
        return settings

    def chunks(self, response: requests.Response, url: str, deadline: float, limit: int | None = None) -> Iterator[bytes]:
        """The body in chunks, under ``global-timeout``; past ``limit`` bytes it is refused
        (:class:`UnusableEntry`) without reading more (before reading anything when
        ``Content-Length`` says so)."""
        declared = response.headers.get("Content-Length", "")
        if limit is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(url, limit, int(declared))
        size = 0
        for chunk in response.iter_content(CHUNK):
            size += len(chunk)
            if limit is not None and size > limit:
                raise _too_large(url, limit)
            if time.monotonic() > deadline:
                raise UpstreamError(f"{url}: took longer than global-timeout ({self.global_timeout:g}s)")
            yield chunk

    def deadline(self) -> float:
        """When a request started now must have been read whole (``global-timeout``)."""
        return time.monotonic() + self.global_timeout

    # -- documents and files ---------------------------------------------------------------
    def fetch(self, method: str, url: str, **kwargs: Any) -> Response:
        """:meth:`fetch_once`, retried by the policy."""
        return self.retry.run(url, lambda: self.fetch_once(method, url, **kwargs))

    def fetch_once(
        self,
        method: str,
        url: str,
        *,
        accept: tuple[int, ...] = (200,),
        limit: int | None = None,
        only_type: str = "",
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Response:
        """One answer; its body is read only for an ``accept`` status (and, with
        ``only_type``, only when the Content-Type contains it), and refused past ``limit``."""
        deadline = self.deadline()
        with self.open(method, url, headers, data) as response:
            status = response.status_code
            if status not in accept:
                if status in RETRY_STATUSES:  # the adapter has already spent the retries on it
                    raise UpstreamError(f"{url}: HTTP {status} after {self.retry.attempts} attempts")
                _drain(response)
                return Response(status, response.headers, url=response.url)
            if only_type not in response.headers.get("Content-Type", ""):
                return Response(status, response.headers, url=response.url)  # closed unread
            body = b"".join(self.chunks(response, url, deadline, limit))
            return Response(status, response.headers, body, response.url)

    def download(self, url: str, open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]], sha256: str) -> int:
        """Stream ``url`` into a fresh ``open_dest()`` per attempt, checking its sha256.

        ``open_dest`` must discard what was written when the block raises (Storage.writer
        does), so a failed attempt leaves nothing behind. Returns the bytes written.
        """
        return self.retry.run(url, lambda: self._download_once(url, open_dest, sha256))

    def _download_once(self, url: str, open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]], sha256: str) -> int:
        deadline = self.deadline()
        with self.open("GET", url) as response:
            if response.status_code != 200:
                _drain(response)
                status = response.status_code
                raise (NotServed if status in (404, 410) else UpstreamError)(f"{url}: HTTP {status}")
            digest = hashlib.sha256()
            written = 0
            with open_dest() as fh:
                for chunk in self.chunks(response, url, deadline):
                    digest.update(chunk)
                    fh.write(chunk)
                    written += len(chunk)
                if digest.hexdigest() != sha256:
                    raise HashMismatch(f"{url}: sha256 {digest.hexdigest()} does not match the expected {sha256}")
        return written


def _drain(response: requests.Response) -> None:
    """Read the rest of a small error page, so that its connection can be reused; a large
    or unsized one is left unread (its connection is then closed, not reused)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) <= ERROR_PAGE_LIMIT:
        response.content


def _settled(last_modified: str, date: str) -> str:
    """``last_modified`` when ``date`` (the answer's time) is at least a second later, else ""."""
    try:
        settled = parsedate_to_datetime(date) > parsedate_to_datetime(last_modified)
    except (TypeError, ValueError):
        return ""
    return last_modified if settled else ""


def _too_large(url: str, limit: int, declared: int | None = None) -> UnusableEntry:
    size = f"{human_size(declared)}, " if declared is not None else ""
    return UnusableEntry(f"{url}: the document is larger ({size}more than max-document-size = {human_size(limit)})")


def _cause(exc: BaseException | None) -> BaseException | None:
    """The innermost error of a requests/urllib3 chain (e.g. the refused connection under the retries)."""
    seen = 0
    while exc is not None and seen < 8:
        inner = getattr(exc, "reason", None) or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None)
        if not isinstance(inner, BaseException):
            return exc
        exc, seen = inner, seen + 1
    return exc


def describe(exc: BaseException | None) -> str:
    """A one-line reason for a log line: the innermost useful message."""
    if exc is None:
        return "unknown error"
    text = str(exc).strip() or type(exc).__name__
    return _CONNECTION_REPR.sub("", text.splitlines()[0])[:300]


#: The ``HTTPConnection(host='...', port=443): `` urllib3 puts before a connection error: the URL says it.
_CONNECTION_REPR = re.compile(r"^\w*Connection(?:Pool)?\(host=[^)]*\): ")
