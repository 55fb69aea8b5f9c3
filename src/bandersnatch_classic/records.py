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
from .errors import DamagedState, LocalIOError
from .statefiles import JOURNAL, JOURNAL_FROM, MAX_SERIAL, PROJECTS, read_state_text
from .storage import Storage

_SERIAL_RE = re.compile(rb"<!--SERIAL (\d+)-->\s*$")
_TITLE_RE = re.compile(rb"<title>Links for (.*?)</title>")
#: A canonical project name: a record's key, and a directory name below ``web/simple``.
CANONICAL_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
#: The start of a line that is not a canonical name (in the keys joined by newlines).
_BAD_CANONICAL = re.compile(r"^(?![a-z0-9](?:[a-z0-9-]*[a-z0-9])?$)", re.MULTILINE)

#: A record as stored: the serial alone when the display name is the canonical name.
_Stored = Union[int, list]


def _checked(stored: object) -> dict[str, _Stored]:
    """``stored`` if it is a set of records as ``projects.json`` holds them (records whose
    display name is the canonical one reduced to the serial); ValueError saying what is not.

    Most records are a bare serial: their types and range are checked in C (``map``,
    ``min``, ``max``), so that a million records cost no Python call each; the names in
    one regex pass over the joined keys.
    """
    if not isinstance(stored, dict):
        raise ValueError("not an object")
    values = stored.values()
    kinds = set(map(type, values))
    serials = values if kinds == {int} else [v for v in values if type(v) is int]
    if serials and (min(serials) < 0 or max(serials) > MAX_SERIAL):
        bad = next(c for c, v in stored.items() if type(v) is int and not 0 <= v <= MAX_SERIAL)
        raise ValueError(f"bad record {bad!r}: {str(stored[bad])[:40]}")
    if kinds != {int}:
        for canonical in [c for c, v in stored.items() if type(v) is not int]:
            value = stored[canonical]
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
    return stored


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
        return cls(_checked(json.loads(text)))

    def apply_journal(self, journal: str) -> None:
        """Apply the lines of ``projects.journal`` in order; ValueError naming the first bad line."""
        for number, line in enumerate(journal.splitlines(), 1):
            try:
                changes = json.loads(line)
                if not isinstance(changes, dict):
                    raise ValueError("not an object")
                _checked({c: v for c, v in changes.items() if v is not None})
            except ValueError as exc:
                raise ValueError(f"line {number}: {exc}") from None
            self.apply(changes)

    def apply(self, changes: Mapping[str, _Stored | None]) -> None:
        """Set the checked stored ``changes`` (None: forget the project)."""
        for canonical, value in changes.items():
            if value is None:
                self._stored.pop(canonical, None)
            else:
                self._stored[canonical] = value[1] if type(value) is list and value[0] == canonical else value

    def stored(self, canonical: str) -> _Stored | None:
        """A record as ``projects.json`` holds it (None when there is none)."""
        return self._stored.get(canonical)

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


class RecordsFile:
    """``projects.json`` and ``projects.journal`` on a storage: the records as stored, and
    their changes saved as a journal line or the whole file.

    The journal holds the records changed since ``projects.json`` was last written whole,
    one JSON object per save (``{canonical: stored record, or null when forgotten}``),
    applied in order on top of it, so that a run that changes ten records of a million
    does not serialize and write all of them.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        #: ``projects.journal`` as read or last written, whether there is one (readable or
        #: not), and the length of ``projects.json``.
        self._journal = ""
        self._journal_on_disk = False
        self._base_size = 0

    def read(self) -> Records | None:
        """``projects.json`` as stored, with ``projects.journal`` applied (None when there is no
        ``projects.json``); :class:`DamagedState` naming the file that is not a set of records."""
        text = read_state_text(self.storage, PROJECTS)
        if text is None:
            return None
        try:
            records = Records.from_json(text)
        except ValueError as exc:  # also a truncated document
            raise DamagedState(self.storage.display(PROJECTS), f"is not a set of project records ({exc})") from None
        try:
            journal_text = read_state_text(self.storage, JOURNAL)
        except DamagedState:
            self._journal_on_disk = True  # removed when the rebuilt records are saved
            raise
        self._journal_on_disk = journal_text is not None
        journal = journal_text or ""
        try:
            records.apply_journal(journal)
        except ValueError as exc:
            raise DamagedState(self.storage.display(JOURNAL), f"is not a journal of project records ({exc})") from None
        self._journal, self._base_size = journal, len(text)
        return records

    def journal_usable(self) -> bool:
        """Whether ``projects.json`` is large enough to keep changes in the journal
        (:data:`~bandersnatch_classic.statefiles.JOURNAL_FROM` or more) and the journal reads
        as one; nothing is parsed but the journal."""
        stat = self.storage.stat(PROJECTS)
        if stat is None or stat.st_size < JOURNAL_FROM:
            return False
        try:
            text = read_state_text(self.storage, JOURNAL)
            self._journal_on_disk = text is not None
            journal = text or ""
            Records().apply_journal(journal)
        except (DamagedState, ValueError):
            return False  # loading the records names the damage and repairs it
        self._journal, self._base_size = journal, stat.st_size
        return True

    def needs_whole(self, changes: Mapping[str, _Stored | None], repaired: bool) -> bool:
        """Whether saving ``changes`` writes ``projects.json`` whole: after a repair (the records
        were rebuilt), while it is small, or when the journal would outgrow an eighth of it."""
        return repaired or self._base_size < JOURNAL_FROM or len(self._journal) + len(_line(changes)) > self._base_size // 8

    def save(self, records: Records | None, changes: Mapping[str, _Stored | None], whole: bool) -> None:
        """Save ``changes`` as a journal line, or ``records`` whole (``whole``, from
        :meth:`needs_whole`; ``records`` is then required) and the journal removed. The
        journal is removed first: a run that stops between the two leaves ``projects.json``
        as it was, which the check against the root index repairs from the pages, never a
        journal that a newer ``projects.json`` would replay wrongly.
        """
        if not whole:
            self._journal += _line(changes)
            self._journal_on_disk = True
            self.storage.write_bytes(JOURNAL, self._journal.encode())
            return
        assert records is not None, "the records are loaded to be written whole"
        data = records.to_json()
        stale, self._journal_on_disk, self._journal, self._base_size = self._journal_on_disk, False, "", len(data)
        if stale:
            self.storage.delete(JOURNAL)
        self.storage.write_bytes(PROJECTS, data.encode())


def _line(changes: Mapping[str, _Stored | None]) -> str:
    """One line of ``projects.journal``."""
    return json.dumps(changes, separators=(",", ":")) + "\n"
