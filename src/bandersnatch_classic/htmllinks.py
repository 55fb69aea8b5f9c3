"""Read the link texts of a PEP 503 root listing (for upstreams that only serve HTML)."""

from __future__ import annotations

from html.parser import HTMLParser


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
