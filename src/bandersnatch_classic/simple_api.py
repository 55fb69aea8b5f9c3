"""The PEP 691 dialect: the JSON root listing with a serial per project, and project pages' serials.

A static server over a mirror's ``web/`` cannot negotiate: it answers the HTML listing to a
PEP 691 request. Its JSON listing is then asked as the file it is there
(``/simple/index.v1_json``), and its JSON API documents live at the normalized names.
A listing that claims JSON but does not parse makes the upstream unusable, not the method.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from .errors import MethodUnavailable, ProjectGone, UpstreamError
from .html_api import page_serial
from .json_api import JsonApi
from .layout import ROOT_JSON, served_path
from .pages import JSON_CONTENT_TYPE as SIMPLE_JSON
from .transport import BODY_ERRORS, PageValidators, Response, Transport, conditional, describe


class SimpleApi:
    """The upstream's PEP 691 root listing and project pages (``/simple/``)."""

    def __init__(self, transport: Transport, master: str, json_api: JsonApi) -> None:
        self.transport = transport
        self.master = master
        self.url = f"{master}/simple/"
        #: Asked for a project's serial when its page carries none.
        self.json_api = json_api

    def listing(self, known: PageValidators | None = None) -> tuple[int, dict[str, int], PageValidators] | None:
        """The root listing: (last serial, {name: serial}, its validators); None when ``known``
        (the validators of an earlier answer) says it has not changed (304). An HTML answer
        (a static server) is not read: ``/simple/index.v1_json`` is asked instead."""
        url = self.url
        response = self.transport.fetch(
            "GET", url, accept=(200, 304) if known else (200,), headers=conditional(known, SIMPLE_JSON), only_type="json"
        )
        if response.status == 304:
            return None
        static = response.status == 200 and "json" not in response.header("Content-Type")
        if static:
            url = f"{self.master}/{served_path(ROOT_JSON)}"
            response = self.transport.fetch("GET", url, accept=(200, 404))
            if response.status == 200:
                response.headers = {**response.headers, "Content-Type": SIMPLE_JSON}
                self.json_api.canonical_names = True
        doc = _json_or_unavailable(response, url)
        try:
            projects = {_string(p["name"]): int(p["_last-serial"]) for p in doc["projects"]}
            serial = int(doc["meta"]["_last-serial"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MethodUnavailable(f"{url}: PEP 691 listing without serials") from exc
        if static:  # the validators of index.v1_json would be sent to /simple/ next time
            return serial, projects, PageValidators(serial)
        return serial, projects, PageValidators.of(response, serial)

    def listing_serial(self) -> int:
        """The index's serial from one request for the root listing.

        The ``X-PyPI-Last-Serial`` header when the upstream sends it: the (large) body is
        then not read. Otherwise the listing's ``meta._last-serial``; from a static server
        over a mirror's ``web/`` (an HTML answer, unread), that of ``/simple/index.v1_json``.
        """
        url = self.url
        with self.transport.open("GET", url, headers={"Accept": SIMPLE_JSON}) as response:
            if response.status_code != 200:
                raise MethodUnavailable(f"{url}: HTTP {response.status_code}")
            header = response.headers.get("X-PyPI-Last-Serial", "")
            if header.isdigit():
                return int(header)
            answered = response.headers.get("Content-Type", "")
            if "json" in answered:  # do not read a large HTML listing
                try:
                    body = b"".join(self.transport.chunks(response, url, self.transport.deadline()))
                    return int(json.loads(body)["meta"]["_last-serial"])
                except BODY_ERRORS as exc:
                    raise UpstreamError(f"{url}: {describe(exc)}") from exc
                except RecursionError as exc:
                    raise UpstreamError(f"{url}: the listing is nested too deeply to parse") from exc
                except (ValueError, KeyError, TypeError) as exc:
                    raise MethodUnavailable(f"{url}: no serial in the header or the PEP 691 listing") from exc
        static = self.transport.fetch("GET", f"{self.master}/{served_path(ROOT_JSON)}", accept=(200, 404))
        try:
            if static.status == 200:
                return int(json.loads(static.body)["meta"]["_last-serial"])
        except (ValueError, KeyError, TypeError, RecursionError):
            pass
        raise MethodUnavailable(f"{url}: no X-PyPI-Last-Serial header, and answered {answered!r}, not JSON")

    def project_page_serial(self, name: str, known: PageValidators | None = None) -> PageValidators | None:
        """A project's serial (with its page's validators), or None when it does not exist.

        Asked of its page: the ``X-PyPI-Last-Serial`` header, else ``_last-serial`` in the
        JSON, else the ``<!--SERIAL N-->`` comment of an HTML page; when the page carries
        none of them, the JSON API document's ``last_serial``. With ``known`` (the
        validators of the last answer) the page is asked conditionally, and a 304 answers
        ``known``: the page, and so the serial, has not changed.
        """
        response = self.transport.fetch(
            "GET", f"{self.url}{quote(name)}/", accept=(200, 304, 404),
            limit=self.transport.max_document_size, headers=conditional(known, SIMPLE_JSON),
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
            serial = page_serial(response.body)
            if serial is not None:
                return serial
        try:
            return self.json_api.project(name).serial
        except ProjectGone:
            return None


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
        raise UpstreamError(f"{url}: the listing is not valid JSON ({describe(exc)})") from exc


def _string(value: Any) -> str:
    """``value`` if it is a string: a listing's names must be."""
    if not isinstance(value, str):
        raise TypeError(f"a name that is not a string: {value!r:.60}")
    return value
