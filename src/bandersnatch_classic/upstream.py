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

Nothing the upstream sends is trusted further than it must be. With ``allow-non-https``
off, no redirect from https to anything else is followed, on any request (the session
refuses it where requests looks for the next hop, see :class:`_Session`). Project
documents and pages are read in chunks and refused past ``max-document-size``, and a
document nested too deeply to parse is refused too: each fails its project only
(:class:`UnusableEntry`). A listing that cannot be parsed makes the upstream unusable.
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
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import requests
from packaging.utils import canonicalize_name
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from . import __version__
from .config import DEFAULT_MAX_DOCUMENT_SIZE, MirrorConfig, human_size
from .errors import (
    HashMismatch, NotServed, ProjectGone, RedirectRefused, StaleResponse, UnusableEntry, UpstreamError,
)
from .layout import ROOT_JSON, served_path
from .models import Project
from .pages import JSON_CONTENT_TYPE as SIMPLE_JSON
from .tree import SCHEME as TREE_SCHEME, TreeAdapter, is_tree

logger = logging.getLogger(__name__)

USER_AGENT = f"bandersnatch-classic/{__version__} (requests/{requests.__version__})"
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: The XML-RPC changelog's action for a deleted project.
REMOVE_PROJECT = "remove project"
_HTML_SERIAL = re.compile(rb"<!--SERIAL (\d+)-->")
CHUNK = 1 << 20
#: The rest of an error page is read (so that the connection can be reused) up to this size;
#: a longer one is dropped with its connection.
ERROR_PAGE_LIMIT = 64 << 10
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


class _Session(requests.Session):
    """A session that refuses to follow a redirect from https to anything but https.

    requests follows redirects itself (``Session.send`` and ``resolve_redirects``, which
    the file downloads call directly); every hop's target is asked of
    :meth:`get_redirect_target`, so refusing there covers every request.
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
        """The validators of ``response``. ``Last-Modified`` counts whole seconds, so a page
        changed again within the second it was answered in would look unchanged: it is kept
        only when the answer's ``Date`` is a whole second or more after it."""
        return cls(serial, response.header("ETag"), _settled(response.header("Last-Modified"), response.header("Date")))


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
            allow_non_https=config.allow_non_https,
            max_document_size=config.max_document_size,
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
        allow_non_https: bool = False,
        max_document_size: int = DEFAULT_MAX_DOCUMENT_SIZE,
    ) -> None:
        self.master = master.rstrip("/")
        self.timeout = timeout
        self.global_timeout = global_timeout
        self.download_mirror = download_mirror.rstrip("/")
        self.download_mirror_no_fallback = download_mirror_no_fallback
        self.retry = retry
        self.allow_non_https = allow_non_https
        #: The largest project document (JSON API, project page) read, in bytes.
        self.max_document_size = max_document_size
        self._lock = threading.Lock()
        self.requests_made = 0
        self._proxy = proxy
        self._pool_size = max(1, pool_size)
        #: The upstream is a mirror's web/ on a static server (no negotiation): its listing is
        #: a file, its JSON API documents live at the normalized names (see simple_listing).
        self.static_tree = False
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

    def _read_body(self, response: requests.Response, url: str, deadline: float, limit: int | None = None) -> bytes:
        """The body, read in chunks; past ``limit`` bytes it is refused (:class:`UnusableEntry`)
        without reading more (before reading anything when ``Content-Length`` says so)."""
        declared = response.headers.get("Content-Length", "")
        if limit is not None and declared.isdigit() and int(declared) > limit:
            raise self._too_large(url, limit, int(declared))
        parts = []
        size = 0
        for chunk in response.iter_content(CHUNK):
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                raise self._too_large(url, limit)
            if time.monotonic() > deadline:
                raise UpstreamError(f"{url}: took longer than global-timeout ({self.global_timeout:g}s)")
        return b"".join(parts)

    @staticmethod
    def _too_large(url: str, limit: int, declared: int | None = None) -> UnusableEntry:
        size = f"{human_size(declared)}, " if declared is not None else ""
        return UnusableEntry(f"{url}: the document is larger ({size}more than max-document-size = {human_size(limit)})")

    def _request(
        self,
        method: str,
        url: str,
        accept_status: tuple[int, ...] = (200,),
        limit: int | None = None,
        only_type: str = "",
        **kwargs: Any,
    ) -> Response:
        """One request with body-level retries; the body is read only for ``accept_status``
        (and, with ``only_type``, only when the Content-Type contains it), and refused past
        ``limit`` bytes."""
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
                        _drain(response)
                        return Response(response.status_code, response.headers)
                    if only_type not in response.headers.get("Content-Type", ""):
                        return Response(response.status_code, response.headers)  # closed unread
                    body = self._read_body(response, url, deadline, limit)
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

    def changelog_since(self, serial: int, until: int) -> tuple[dict[str, int], set[str]]:
        """Every change after ``serial``, paging until ``until``: project -> highest serial,
        and the canonical names whose last change is their removal ("remove project")."""
        changed: dict[str, int] = {}
        last_action: dict[str, tuple[int, str]] = {}
        while serial < until:
            entries = self.xmlrpc("changelog_since_serial", serial)
            if not entries:
                break
            try:
                for name, _version, _when, action, entry_serial in entries:
                    changed[str(name)] = max(changed.get(str(name), 0), int(entry_serial))
                    canonical = canonicalize_name(str(name))
                    if int(entry_serial) >= last_action.get(canonical, (0, ""))[0]:
                        last_action[canonical] = (int(entry_serial), str(action or ""))
                newest = max(int(e[4]) for e in entries)
            except (TypeError, ValueError, IndexError) as exc:
                raise UpstreamError(f"XML-RPC changelog_since_serial: unusable answer ({_describe(exc)})") from exc
            if newest <= serial:
                break
            serial = newest
        removed = {c for c, (_, action) in last_action.items() if action.startswith(REMOVE_PROJECT)}
        return changed, removed

    # -- simple API ------------------------------------------------------------------
    def simple_listing(self, known: PageValidators | None = None) -> tuple[int, dict[str, int], PageValidators] | None:
        """The PEP 691 root listing: (last serial, {name: serial}, its validators); None when
        ``known`` (the validators of an earlier answer) says it has not changed (304).

        A static server over a mirror's ``web/`` cannot negotiate and answers HTML (its body
        is not read): the listing is then asked as the file it is there,
        ``/simple/index.v1_json``, whatever its content type.
        """
        url = f"{self.master}/simple/"
        headers = {"Accept": SIMPLE_JSON, **(known.headers() if known else {})}
        response = self._request(
            "GET", url, accept_status=(200, 304) if known else (200,), headers=headers, only_type="json"
        )
        if response.status == 304:
            return None
        if response.status == 200 and "json" not in response.header("Content-Type"):
            url = f"{self.master}/{served_path(ROOT_JSON)}"
            response = self._request("GET", url, accept_status=(200, 404))
            if response.status == 200:
                response.headers = {**response.headers, "Content-Type": SIMPLE_JSON}
                self.static_tree = True
        doc = self._json_or_unavailable(response, url)
        try:
            projects = {_string(p["name"]): int(p["_last-serial"]) for p in doc["projects"]}
            serial = int(doc["meta"]["_last-serial"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MethodUnavailable(f"{url}: PEP 691 listing without serials") from exc
        if self.static_tree:  # the validators of index.v1_json would be sent to /simple/ next time
            return serial, projects, PageValidators(serial)
        return serial, projects, PageValidators.of(response, serial)

    def listing_serial(self) -> int:
        """The index's serial from one request for the PEP 691 root listing.

        The ``X-PyPI-Last-Serial`` header when the upstream sends it: the (large) body is
        then not read. Otherwise the listing's ``meta._last-serial``; from a static server
        over a mirror's ``web/`` (an HTML answer, unread), that of ``/simple/index.v1_json``.
        """
        url = f"{self.master}/simple/"
        with self._response("GET", url, headers={"Accept": SIMPLE_JSON}) as response:
            if response.status_code != 200:
                raise MethodUnavailable(f"{url}: HTTP {response.status_code}")
            header = response.headers.get("X-PyPI-Last-Serial", "")
            if header.isdigit():
                return int(header)
            answered = response.headers.get("Content-Type", "")
            if "json" in answered:  # do not read a large HTML listing
                try:
                    body = self._read_body(response, url, time.monotonic() + self.global_timeout)
                    return int(json.loads(body)["meta"]["_last-serial"])
                except BODY_ERRORS as exc:
                    raise UpstreamError(f"{url}: {_describe(exc)}") from exc
                except RecursionError as exc:
                    raise UpstreamError(f"{url}: the listing is nested too deeply to parse") from exc
                except (ValueError, KeyError, TypeError) as exc:
                    raise MethodUnavailable(f"{url}: no serial in the header or the PEP 691 listing") from exc
        # A static server over a mirror's web/ (no negotiation): the listing file has the serial.
        static = self._request("GET", f"{self.master}/{served_path(ROOT_JSON)}", accept_status=(200, 404))
        try:
            if static.status == 200:
                return int(json.loads(static.body)["meta"]["_last-serial"])
        except (ValueError, KeyError, TypeError, RecursionError):
            pass
        raise MethodUnavailable(f"{url}: no X-PyPI-Last-Serial header, and answered {answered!r}, not JSON")

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
        response = self._request(
            "GET", url, accept_status=(200, 304, 404), limit=self.max_document_size, headers=headers
        )
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
            except (ValueError, KeyError, TypeError, RecursionError):
                pass  # the JSON API document says, or fails the project
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
        # It claims JSON: a body that does not parse is a broken upstream, not a missing method.
        try:
            return json.loads(response.body)
        except RecursionError as exc:
            raise UpstreamError(f"{url}: the listing is nested too deeply to parse") from exc
        except ValueError as exc:
            raise UpstreamError(f"{url}: the listing is not valid JSON ({_describe(exc)})") from exc

    # -- JSON API --------------------------------------------------------------------
    def project(self, name: str, expected_serial: int = 0) -> Project:
        """A project's metadata, no older than ``expected_serial`` (retried while stale).

        The serial is ``X-PyPI-Last-Serial`` when present, else ``last_serial`` in the body:
        proxies that strip the header do not make a page stale.
        """
        url = f"{self.master}/pypi/{quote(canonicalize_name(name) if self.static_tree else name)}/json"
        serial = 0
        for attempt in range(self.retry.attempts):
            if attempt:
                self.retry.sleep(attempt)
            response = self._request("GET", url, accept_status=(200, 404), limit=self.max_document_size)
            if response.status == 404:
                raise ProjectGone(f"{name}: the upstream has no such project (HTTP 404)")
            if response.status != 200:
                raise UpstreamError(f"{name}: HTTP {response.status} from {url}")
            try:
                doc = json.loads(response.body)
                header = response.header("X-PyPI-Last-Serial")
                serial = int(header) if header.isdigit() else int(doc.get("last_serial") or 0)
                project = Project.from_json(doc, serial, self._below_root(response.url or url))
            except RecursionError as exc:
                raise UnusableEntry(f"{url}: the document is nested too deeply to parse") from exc
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise UpstreamError(f"{name}: malformed JSON API document ({_describe(exc)})") from exc
            if serial >= expected_serial:
                return project
            logger.debug("%s: page at serial %d, expected %d; retrying", name, serial, expected_serial)
        raise StaleResponse(f"{name}: upstream keeps serving serial {serial}, older than the expected {expected_serial}")

    def _below_root(self, url: str) -> str:
        """A tree's document URL as a path below the tree (``/pypi/<name>/json``): the relative
        file URLs in it then resolve to ``/packages/...``, the path a file has in every mirror."""
        if is_tree(self.master) and url.startswith(f"{self.master}/"):
            return url[len(self.master):]
        return url

    # -- files -----------------------------------------------------------------------
    def file_urls(self, url: str) -> list[str]:
        """Where to fetch a file from: the download mirror first (unless disabled), then ``url``
        (a path, as a tree's documents give them, below the upstream's root)."""
        if url.startswith("/"):
            url = f"{self.master}{url}"
        if not self.download_mirror:
            return [url]
        parts = urlsplit(url)
        base = urlsplit(self.download_mirror)
        mirrored = urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, ""))
        return [mirrored] if self.download_mirror_no_fallback else [mirrored, url]

    def fetch(self, url: str) -> bytes:
        """A small document (e.g. a ``.metadata`` file), retried like everything else."""
        response = self._request("GET", url, limit=self.max_document_size)
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
        if isinstance(last, (HashMismatch, NotServed, RedirectRefused)):
            raise type(last)(str(last) if isinstance(last, RedirectRefused) else f"{url}: {last}")
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


def _drain(response: requests.Response) -> None:
    """Read the rest of a small error page, so that its connection can be reused; a large
    or unsized one is left unread (its connection is then closed, not reused)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) <= ERROR_PAGE_LIMIT:
        response.content


def _string(value: Any) -> str:
    """``value`` if it is a string: a listing's names must be."""
    if not isinstance(value, str):
        raise TypeError(f"a name that is not a string: {value!r:.60}")
    return value


def _settled(last_modified: str, date: str) -> str:
    """``last_modified`` when ``date`` (the answer's time) is at least a second later, else ""."""
    try:
        settled = parsedate_to_datetime(date) > parsedate_to_datetime(last_modified)
    except (TypeError, ValueError):
        return ""
    return last_modified if settled else ""


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
