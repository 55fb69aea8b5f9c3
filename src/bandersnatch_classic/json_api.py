"""The JSON API dialect: one project's metadata (``/pypi/<name>/json``), no older than promised."""

from __future__ import annotations

import json
from urllib.parse import quote

from packaging.utils import canonicalize_name

from .errors import ProjectGone, StaleResponse, UnusableEntry, UpstreamError
from .models import Project
from .transport import Transport, describe
from .tree import is_tree


class JsonApi:
    """The upstream's JSON API documents."""

    def __init__(self, transport: Transport, master: str) -> None:
        self.transport = transport
        self.master = master
        #: The documents live at the normalized names only: the upstream is a static server
        #: over a mirror's ``web/`` (found out by the PEP 691 listing, see SimpleApi.listing).
        self.canonical_names = False

    def project(self, name: str, expected_serial: int = 0) -> Project:
        """A project's metadata, no older than ``expected_serial``: a stale document is asked
        again by the transport's retry policy, like a body cut short."""
        url = f"{self.master}/pypi/{quote(canonicalize_name(name) if self.canonical_names else name)}/json"
        return self.transport.retry.run(url, lambda: self._project_once(name, url, expected_serial))

    def _project_once(self, name: str, url: str, expected_serial: int) -> Project:
        """The document, parsed. Its serial is ``X-PyPI-Last-Serial`` when present, else
        ``last_serial`` in the body: proxies that strip the header do not make a page stale."""
        transport = self.transport
        response = transport.fetch_once("GET", url, accept=(200, 404), limit=transport.max_document_size)
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
            raise UpstreamError(f"{name}: malformed JSON API document ({describe(exc)})") from exc
        if serial < expected_serial:
            raise StaleResponse(
                f"{name}: upstream keeps serving serial {serial}, older than the expected {expected_serial}"
            )
        return project

    def _below_root(self, url: str) -> str:
        """A tree's document URL as a path below the tree (``/pypi/<name>/json``): the relative
        file URLs in it then resolve to ``/packages/...``, the path a file has in every mirror."""
        if is_tree(self.master) and url.startswith(f"{self.master}/"):
            return url[len(self.master):]
        return url
