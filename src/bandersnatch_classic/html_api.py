"""The PEP 503 HTML dialect: the names of the root listing, and a project page's serial comment.

For upstreams that serve only HTML (``api-method = html``): the listing has no serials, so
a known project's serial is asked of its page (see :meth:`SimpleApi.project_page_serial
<bandersnatch_classic.simple_api.SimpleApi.project_page_serial>`).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from .errors import MethodUnavailable
from .transport import PageValidators, Transport, conditional

_HTML_SERIAL = re.compile(rb"<!--SERIAL (\d+)-->")


class HtmlApi:
    """The upstream's PEP 503 root listing."""

    def __init__(self, transport: Transport, master: str) -> None:
        self.transport = transport
        self.url = f"{master}/simple/"

    def listing(self, known: PageValidators | None = None) -> tuple[list[str], PageValidators] | None:
        """Project names from the root listing: the link texts, and the listing's validators;
        None when ``known`` says it has not changed (304)."""
        headers = conditional(known, "text/html")
        response = self.transport.fetch("GET", self.url, accept=(200, 304) if known else (200,), headers=headers)
        if response.status == 304:
            return None
        if response.status != 200:
            raise MethodUnavailable(f"{self.url}: HTTP {response.status}")
        return link_texts(response.body.decode("utf-8", "replace")), PageValidators.of(response, 0)


def page_serial(body: bytes) -> int | None:
    """The serial of a project page from its ``<!--SERIAL N-->`` comment (at its end), if any."""
    match = _HTML_SERIAL.search(body[-200:])
    return int(match.group(1)) if match else None


class _LinkTexts(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._current: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._current = []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            text = "".join(self._current).strip()
            if text:
                self.texts.append(text)
            self._current = None


def link_texts(html: str) -> list[str]:
    """The text of every ``<a>`` element, in page order."""
    parser = _LinkTexts()
    parser.feed(html)
    parser.close()
    return parser.texts
