"""Where bytes come from: a package index speaking the APIs of the public index.

:class:`Upstream` is what the engine asks of an index. It holds one
:class:`~bandersnatch_classic.transport.Transport` (the session, the one request path, the
retry policy, the limits) and the dialects that read its answers, each in its own module:
XML-RPC (``xmlrpc_api.py``), the PEP 691 listing and pages (``simple_api.py``), the PEP 503
HTML listing (``html_api.py``) and the JSON API (``json_api.py``). Files come through the
transport too, from the download mirror first when one is configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

from .config import MirrorConfig
from .errors import UpstreamError
from .html_api import HtmlApi
from .json_api import JsonApi
from .models import Project
from .simple_api import SimpleApi
from .transport import PageValidators, RetryPolicy, Transport
from .xmlrpc_api import XmlRpcApi

__all__ = ["PageValidators", "RetryPolicy", "Upstream"]


class Upstream:
    """A package index that speaks the APIs of the public index."""

    @classmethod
    def from_config(cls, config: MirrorConfig, retry: RetryPolicy | None = None) -> Upstream:
        """The upstream ``[mirror]`` names, with its timeouts, proxy and download mirror."""
        transport = Transport(
            config.master.rstrip("/"),
            timeout=config.timeout,
            global_timeout=config.global_timeout,
            proxy=config.proxy,
            retry=retry or RetryPolicy(),
            pool_size=config.workers,
            allow_non_https=config.allow_non_https,
            max_document_size=config.max_document_size,
        )
        return cls(transport, config.download_mirror, config.download_mirror_no_fallback)

    def __init__(self, transport: Transport, download_mirror: str = "", download_mirror_no_fallback: bool = False) -> None:
        self.transport = transport
        self.master = transport.master
        self.download_mirror = download_mirror.rstrip("/")
        self.download_mirror_no_fallback = download_mirror_no_fallback
        self.xmlrpc = XmlRpcApi(self.transport, self.master)
        self.json = JsonApi(self.transport, self.master)
        self.simple = SimpleApi(self.transport, self.master, self.json)
        self.html = HtmlApi(self.transport, self.master)

    def close(self) -> None:
        """Close every pooled connection (a forked worker process does, first)."""
        self.transport.close()

    # -- discovery -------------------------------------------------------------------------
    def changelog_last_serial(self) -> int:
        return self.xmlrpc.changelog_last_serial()

    def list_packages_with_serial(self) -> dict[str, int]:
        return self.xmlrpc.list_packages_with_serial()

    def changelog_since(self, serial: int, until: int) -> tuple[dict[str, int], set[str]]:
        return self.xmlrpc.changelog_since(serial, until)

    def simple_listing(self, known: PageValidators | None = None) -> tuple[int, dict[str, int], PageValidators] | None:
        return self.simple.listing(known)

    def listing_serial(self) -> int:
        return self.simple.listing_serial()

    def project_page_serial(self, name: str, known: PageValidators | None = None) -> PageValidators | None:
        return self.simple.project_page_serial(name, known)

    def html_listing(self, known: PageValidators | None = None) -> tuple[list[str], PageValidators] | None:
        return self.html.listing(known)

    # -- projects and files ----------------------------------------------------------------
    def project(self, name: str, expected_serial: int = 0) -> Project:
        return self.json.project(name, expected_serial)

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

    def download(self, url: str, open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]], sha256: str) -> int:
        """Stream a file into ``open_dest()``, checking its sha256 (see Transport.download);
        when the download mirror fails it, from the upstream. Returns the bytes written."""
        failed: UpstreamError | None = None
        for candidate in self.file_urls(url):
            try:
                return self.transport.download(candidate, open_dest, sha256)
            except UpstreamError as exc:
                failed = exc
        assert failed is not None
        raise failed
