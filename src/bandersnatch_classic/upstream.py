"""Where bytes come from: the upstream index over HTTP (XML-RPC, JSON API, simple API, files).

Retries come in two layers. urllib3's ``Retry`` (mounted through requests) retries what
happens before a body arrives: connection errors and 429/500/502/503/504, honouring
``Retry-After``. What urllib3 cannot retry -- a body cut short, a connection reset mid-body,
a file whose digest is wrong, a page older than the serial we were promised -- is retried
here, with the same exponential backoff.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import __version__
from .errors import HashMismatch, ProjectGone, StaleResponse, UpstreamError
from .models import Project

logger = logging.getLogger(__name__)

USER_AGENT = f"bandersnatch-classic/{__version__} (+requests/{requests.__version__})"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
RETRY_STATUSES = (429, 500, 502, 503, 504)
CHUNK = 1 << 20
#: A hostile or confused upstream must not park us for hours with Retry-After.
MAX_RETRY_AFTER = 60.0
#: Errors of a body in flight: urllib3 has already handed the response over, so we retry.
BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ContentDecodingError,
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
        self.proxies = {"http": proxy, "https": proxy} if proxy else None
        self.download_mirror = download_mirror.rstrip("/")
        self.download_mirror_no_fallback = download_mirror_no_fallback
        self.retry = retry
        self.pool_size = pool_size
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self.requests_made = 0

    # -- connection handling ---------------------------------------------------------
    def session(self) -> requests.Session:
        """This thread's session: one per worker, so connections are reused, never shared."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            retries = _CappedRetry(
                total=self.retry.attempts - 1,
                backoff_factor=self.retry.backoff,
                status_forcelist=RETRY_STATUSES,
                allowed_methods=None,  # our POSTs (XML-RPC reads) are safe to repeat
                respect_retry_after_header=True,
                raise_on_status=False,
            )
            adapter = HTTPAdapter(max_retries=retries, pool_maxsize=self.pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = USER_AGENT
            if self.proxies:
                session.proxies.update(self.proxies)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    @contextlib.contextmanager
    def _response(self, method: str, url: str, **kwargs: Any) -> Iterator[requests.Response]:
        with self._lock:
            self.requests_made += 1
        response = self.session().request(method, url, timeout=self.timeout, stream=True, **kwargs)
        try:
            yield response
        finally:
            response.close()

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        parts = []
        for chunk in response.iter_content(CHUNK):
            parts.append(chunk)
            if time.monotonic() > deadline:
                raise UpstreamError(f"{response.url}: took longer than global-timeout ({self.global_timeout:g}s)")
        return b"".join(parts)

    def _request(self, method: str, url: str, accept_status: tuple[int, ...] = (200,), **kwargs: Any) -> tuple[requests.Response, bytes]:
        """One request with body-level retries; returns the response and its whole body."""
        last_error: Exception | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                self.retry.sleep(attempt - 1)
            deadline = time.monotonic() + self.global_timeout
            try:
                with self._response(method, url, **kwargs) as response:
                    if response.status_code not in accept_status:
                        if response.status_code in RETRY_STATUSES:
                            last_error = UpstreamError(f"{url}: HTTP {response.status_code} after retries")
                            break  # urllib3 already spent the retries on this status
                        return response, b""
                    return response, self._read_body(response, deadline)
            except BODY_ERRORS as exc:
                last_error = exc
                logger.debug("Retrying %s %s after %s", method, url, exc)
            except requests.exceptions.RetryError as exc:
                last_error = exc
                break
            except requests.exceptions.RequestException as exc:
                raise UpstreamError(f"{url}: {exc}") from exc
        raise UpstreamError(f"{url}: {_describe(last_error)}")

    # -- XML-RPC ---------------------------------------------------------------------
    def xmlrpc(self, method: str, *params: Any) -> Any:
        body = xmlrpc.client.dumps(params, method).encode()
        response, data = self._request(
            "POST", f"{self.master}/pypi", data=body, headers={"Content-Type": "text/xml"}
        )
        if response.status_code != 200:
            raise MethodUnavailable(f"XML-RPC {method}: HTTP {response.status_code} from {self.master}/pypi")
        try:
            (result,), _ = xmlrpc.client.loads(data)
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
        response, data = self._request("GET", url, headers={"Accept": SIMPLE_JSON})
        doc = self._json_or_unavailable(response, data, url)
        try:
            projects = {p["name"]: int(p["_last-serial"]) for p in doc["projects"]}
            return int(doc["meta"]["_last-serial"]), projects
        except (KeyError, TypeError, ValueError) as exc:
            raise MethodUnavailable(f"{url}: PEP 691 listing without serials") from exc

    def html_listing(self) -> list[str]:
        """Project names from the HTML root listing (PEP 503): the link texts."""
        from .htmllinks import link_texts

        url = f"{self.master}/simple/"
        response, data = self._request("GET", url, headers={"Accept": "text/html"})
        if response.status_code != 200:
            raise MethodUnavailable(f"{url}: HTTP {response.status_code}")
        return link_texts(data.decode(response.encoding or "utf-8", "replace"))

    def project_page_serial(self, name: str) -> int | None:
        """A project's serial from its PEP 691 page, or None when it does not exist."""
        url = f"{self.master}/simple/{quote(name)}/"
        response, data = self._request("GET", url, accept_status=(200, 404), headers={"Accept": SIMPLE_JSON})
        if response.status_code == 404:
            return None
        header = response.headers.get("X-PyPI-Last-Serial")
        if header and header.isdigit():
            return int(header)
        doc = self._json_or_unavailable(response, data, url)
        return int(doc["meta"]["_last-serial"])

    @staticmethod
    def _json_or_unavailable(response: requests.Response, data: bytes, url: str) -> Any:
        if response.status_code != 200:
            raise MethodUnavailable(f"{url}: HTTP {response.status_code}")
        if "json" not in response.headers.get("Content-Type", ""):
            raise MethodUnavailable(f"{url}: answered {response.headers.get('Content-Type')!r}, not JSON")
        try:
            return json.loads(data)
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
            response, data = self._request("GET", url, accept_status=(200, 404))
            if response.status_code == 404:
                raise ProjectGone(f"{name}: the upstream has no such project (HTTP 404)")
            try:
                doc = json.loads(data)
                header = response.headers.get("X-PyPI-Last-Serial", "")
                serial = int(header) if header.isdigit() else int(doc.get("last_serial") or 0)
                project = Project.from_json(doc, serial)
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
        response, data = self._request("GET", url)
        return data

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
                except (UpstreamError, requests.exceptions.RequestException) as exc:
                    last = exc
                    break  # an HTTP error status: urllib3 has already retried it
        if isinstance(last, HashMismatch):
            raise HashMismatch(f"{url}: {last}")
        raise UpstreamError(f"{url}: {_describe(last)}")

    def _download_once(
        self,
        url: str,
        open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]],
        sha256: str,
    ) -> int:
        deadline = time.monotonic() + self.global_timeout
        with self._response("GET", url) as response:
            if response.status_code != 200:
                raise UpstreamError(f"HTTP {response.status_code}")
            digest = hashlib.sha256()
            written = 0
            with open_dest() as fh:
                for chunk in response.iter_content(CHUNK):
                    digest.update(chunk)
                    fh.write(chunk)
                    written += len(chunk)
                    if time.monotonic() > deadline:
                        raise UpstreamError(f"took longer than global-timeout ({self.global_timeout:g}s)")
                if digest.hexdigest() != sha256:
                    raise HashMismatch(f"sha256 {digest.hexdigest()} does not match the expected {sha256}")
        return written


def _describe(exc: BaseException | None) -> str:
    """A one-line reason for a log line: the innermost useful message."""
    if exc is None:
        return "unknown error"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
