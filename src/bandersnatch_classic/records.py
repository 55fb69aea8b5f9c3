"""``projects.json``: the records of the mirrored projects, and how the project pages give them.

The file maps each mirrored project's canonical name to the serial its pages were written
at, or to ``[display name, serial]`` when the display name differs from the canonical one.
The root index is rendered from it (not by scanning directories), and the ``html``
discovery method compares against it. A mirror made by the reference tool has no such
file: it is rebuilt once from the ``<!--SERIAL N-->`` comments of the project pages
(:func:`scan_pages`); a corrupt one is rebuilt the same way
(:class:`~bandersnatch_classic.state.MirrorState` decides when).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from html import unescape
from typing import Union

from packaging.utils import canonicalize_name

from . import layout
from .errors import LocalIOError
from .statefiles import MAX_SERIAL
from .storage import Storage

_SERIAL_RE = re.compile(rb"<!--SERIAL (\d+)-->\s*$")
_TITLE_RE = re.compile(rb"<title>Links for (.*?)</title>")
#: A canonical project name: a record's key, and a directory name below ``web/simple``.
CANONICAL_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
#: The start of a line that is not a canonical name (in the keys joined by newlines).
_BAD_CANONICAL = re.compile(r"^(?![a-z0-9](?:[a-z0-9-]*[a-z0-9])?$)", re.MULTILINE)

#: A record as stored: the serial alone when the display name is the canonical name.
_Stored = Union[int, list]


class Records(Mapping[str, tuple[str, int]]):
    """canonical name -> (display name, serial) of every mirrored project.

    Kept in the stored form, which is what ``json`` reads and writes fastest: a mirror of
    100,000 projects loads and saves its records on every run that syncs anything.
    """

    def __init__(self, stored: dict[str, _Stored] | None = None) -> None:
        self._stored: dict[str, _Stored] = stored if stored is not None else {}

    @classmethod
    def from_json(cls, text: str) -> Records:
        """Parse ``projects.json`` (also the older ``{name: [display, serial]}`` form); ValueError if malformed."""
        stored = json.loads(text)
        if not isinstance(stored, dict):
            raise ValueError("not an object")
        for canonical, value in stored.items():
            if type(value) is int and 0 <= value <= MAX_SERIAL:
                continue
            if not (
                type(value) is list and len(value) == 2 and isinstance(value[0], str)
                and type(value[1]) is int and 0 <= value[1] <= MAX_SERIAL
            ):
                raise ValueError(f"bad record {canonical!r}: {str(value)[:40]}")
            if value[0] == canonical:
                stored[canonical] = value[1]
        if stored and _BAD_CANONICAL.search("\n".join(stored)):  # one pass in C over every name, not a call per name
            bad = next(c for c in stored if not CANONICAL_RE.fullmatch(c))
            raise ValueError(f"{bad[:40]!r} is not a canonical project name")
        return cls(stored)

    def to_json(self) -> str:
        return json.dumps(self._stored, separators=(",", ":"))

    def __getitem__(self, canonical: str) -> tuple[str, int]:
        value = self._stored[canonical]
        return (canonical, value) if type(value) is int else (value[0], value[1])

    def __contains__(self, canonical: object) -> bool:
        return canonical in self._stored

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)

    def set(self, canonical: str, display: str, serial: int) -> None:
        self._stored[canonical] = serial if display == canonical else [display, serial]

    def pop(self, canonical: str) -> bool:
        """Forget a project; True if it was recorded."""
        return self._stored.pop(canonical, None) is not None

    def rows(self) -> list[tuple[str, str, int]]:
        """``(canonical, display, serial)`` of every project, in canonical-name order."""
        stored = self._stored
        return [
            (c, c, v) if type(v) is int else (c, v[0], v[1])  # type: ignore[index]
            for c in sorted(stored)
            for v in (stored[c],)
        ]


def scan_pages(storage: Storage, hash_index: bool) -> Records:
    """The project records the pages give (a mirror made by another tool, or damaged records)."""
    found = Records()
    depth = 3 if hash_index else 2  # below web/simple: [letter/]name/index.html
    for path, _size in storage.files(layout.SIMPLE):
        parts = path[len(layout.SIMPLE) + 1 :].split("/")
        if len(parts) != depth or parts[-1] != layout.PAGE_HTML:
            continue
        canonical = canonicalize_name(parts[-2])
        if not CANONICAL_RE.fullmatch(canonical):
            continue  # not a project's directory
        try:
            record = _read_page_record(storage.read_bytes(path), parts[-2])
        except (OSError, LocalIOError):
            continue
        if record is not None:
            found.set(canonical, *record)
    return found


def _read_page_record(data: bytes, directory: str) -> tuple[str, int] | None:
    serial = _SERIAL_RE.search(data[-64:])
    title = _TITLE_RE.search(data[:512])
    if serial is None:
        return None
    name = title.group(1).decode("utf-8", "replace") if title else directory
    return unescape(name), int(serial.group(1))


def published_count(storage: Storage, root_index: str | None) -> int | None:
    """How many projects the published root index lists (None when there is none; ``root_index``
    None: whichever of the HTML and the JSON root there is).

    Counted, not parsed: one entry per ``<a `` in the HTML root, one per ``"name":`` in
    the JSON one; a root index of a million projects is counted in milliseconds.
    """
    paths = [root_index] if root_index else [layout.ROOT_HTML[0], layout.ROOT_JSON]
    for path in paths:
        try:
            data = storage.read_bytes(path)
        except FileNotFoundError:
            continue
        return data.count(b'"name":') if path == layout.ROOT_JSON else data.count(b"<a ")
    return None


def behind(records: Mapping[str, tuple[str, int]], listed: Mapping[str, int]) -> dict[str, int]:
    """Of the listed projects (name -> the upstream's serial, 0 when unknown), those the
    mirror must sync: not recorded, or recorded at a lower serial, or of unknown serial."""
    found: dict[str, int] = {}
    for name, serial in listed.items():
        record = records.get(canonicalize_name(name))
        if not serial or record is None or serial > record[1]:
            found[name] = serial
    return found
