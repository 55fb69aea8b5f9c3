"""The mirror's own records: ``generation``, ``status``, ``todo``, ``projects.json`` and ``upstream-method``.

``projects.json`` maps each mirrored project's canonical name to the serial its pages were
written at, or to ``[display name, serial]`` when the display name differs from the canonical
one. The root index is rendered from it (not by scanning directories), and the ``html``
discovery method compares against it. A mirror made by the reference tool has no such file:
it is rebuilt once from the ``<!--SERIAL N-->`` comments of the project pages; a corrupt one
is rebuilt the same way.

Nothing here is trusted as read. Every state file goes through :func:`read_state_text` and
a parser that refuses what no run writes (bytes that are not UTF-8, truncation, a serial
that is negative, not a number or beyond any index's); the refusal is a
:class:`~bandersnatch_classic.errors.DamagedState` naming the file and the fault, and
:meth:`MirrorState.start` turns each one into one log line and a repair (docs/operations.md,
"Damaged state"). The project records repair themselves when loaded: a corrupt file, or one
that lists fewer projects than the published root index (see :meth:`MirrorState._load_projects`),
is completed from the project pages, which are the truth for what the mirror holds.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html import unescape
from typing import Union

from packaging.utils import canonicalize_name

from . import layout
from .errors import DamagedState, LocalIOError, StateError
from .storage import Storage

logger = logging.getLogger(__name__)

GENERATION = 5
#: Older generations of the reference tool's layout: readable, but need a full sync.
OLD_GENERATIONS = (3, 4)
PROJECTS_FILE = "projects.json"
#: The records changed since ``projects.json`` was last written whole, one JSON object per
#: save (``{canonical: stored record, or null when forgotten}``), applied in order on top of
#: it. A run that changes ten records writes a line, not a million; the journal is folded
#: into ``projects.json`` when it outgrows an eighth of it (:meth:`MirrorState.save_projects`).
JOURNAL_FILE = "projects.journal"
#: The size of ``projects.json`` (about 4,000 projects) below which it is always written whole.
JOURNAL_FROM = 1 << 16
#: ``<method> <unix time of the probe> <master>``: what ``api-method = auto`` found works.
METHOD_FILE = "upstream-method"
#: How long a remembered method is trusted before ``auto`` probes the others again.
REPROBE_SECONDS = 86400

#: Serials are 64-bit integers on the upstream: a state file holding more is damaged.
MAX_SERIAL = 2**63 - 1

_SERIAL_RE = re.compile(rb"<!--SERIAL (\d+)-->\s*$")
_DIGITS_RE = re.compile(r"[0-9]+")
#: A project name as ``todo`` holds it (the project-name rule of the packaging specifications).
_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_TITLE_RE = re.compile(rb"<title>Links for (.*?)</title>")
#: A canonical project name: a record's key, and a directory name below ``web/simple``.
_CANONICAL_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
#: The start of a line that is not a canonical name (in the keys joined by newlines).
_BAD_CANONICAL = re.compile(r"^(?![a-z0-9](?:[a-z0-9-]*[a-z0-9])?$)", re.MULTILINE)


@dataclass
class Todo:
    """Work of an unfinished run: the serial it aims at and the projects still to sync."""

    target: int
    projects: dict[str, int] = field(default_factory=dict)

    def render(self) -> str:
        lines = [str(self.target)] + [f"{name} {serial}" for name, serial in self.projects.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Todo:
        """Parse a todo file; ValueError saying what is wrong (a truncated or hand-edited file)."""
        lines = text.splitlines()
        if not lines:
            raise ValueError("is empty")
        try:
            target = parse_serial(lines[0])
        except ValueError as exc:
            raise ValueError(f"line 1 {exc}") from None
        projects = {}
        for number, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) != 2 or not _NAME_RE.fullmatch(parts[0]):
                    raise ValueError
                projects[parts[0]] = parse_serial(parts[1])
            except ValueError:
                raise ValueError(f"line {number} holds {_shown(line)}, not '<project> <serial>'") from None
        return cls(target, projects)


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
        bad = next(c for c in stored if not _CANONICAL_RE.fullmatch(c))
        raise ValueError(f"{bad[:40]!r} is not a canonical project name")
    return stored


def read_state_text(storage: Storage, rel: str) -> str | None:
    """The text of the state file ``rel``, or None when there is none.

    The one place a state file is read: bytes that are not UTF-8 raise
    :class:`DamagedState` (naming the file and the first bad byte) instead of a
    ``UnicodeDecodeError``; the callers' parsers refuse what else is wrong the same way.
    """
    try:
        return storage.read_text(rel)
    except UnicodeDecodeError as exc:
        raise DamagedState(
            storage.display(rel), f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from None


def parse_serial(text: str) -> int:
    """A serial as the state files hold it; ValueError saying what is wrong (``holds 'x', not a serial``)."""
    value = text.strip()
    if not value:
        raise ValueError("is empty")
    if not _DIGITS_RE.fullmatch(value):
        raise ValueError(f"holds {_shown(value)}, not a serial")
    serial = int(value)
    if serial > MAX_SERIAL:
        raise ValueError(f"holds {_shown(value)}, beyond any index's serial")
    return serial


def _shown(text: str) -> str:
    """``text`` quoted for a log line, cut short when long."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


@dataclass
class StartPoint:
    """Where a ``mirror`` run starts, as :meth:`MirrorState.start` read it (damage named and repaired)."""

    #: The serial every change up to which is mirrored (0 after damage: nothing is assumed).
    status: int
    #: An unfinished run's work, if one left it.
    todo: Todo | None
    #: Whether every project must be synced again (``--force-check``, an old or damaged generation).
    full: bool
    #: The discovery method ``auto`` found working last ("" if none), and whether that was recent.
    remembered: str = ""
    fresh: bool = True
    #: Whether ``status`` (or ``todo``) could not be believed: the run reads the whole listing
    #: and syncs what :meth:`MirrorState.behind_records` keeps of it.
    compare: bool = False

    @property
    def since(self) -> int:
        """The serial to ask the upstream for changes after: an unfinished run's target, else ``status``."""
        return self.todo.target if self.todo is not None and self.todo.target > self.status else self.status


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


class MirrorState:
    """Reads and writes the state files of one mirror directory."""

    def __init__(self, storage: Storage, hash_index: bool = False, root_index: str | None = None) -> None:
        self.storage = storage
        #: Where the project pages are, for rebuilding the records from them.
        self.hash_index = hash_index
        #: The published root index the records are checked against when loaded (None:
        #: whichever of the HTML and the JSON root there is).
        self.root_index = root_index
        self._projects: Records | None = None
        #: Whether a project was added, renamed or removed since loading (the root HTML lists names).
        self.names_changed = False
        #: canonical name -> (display name, serial) of every project recorded in this run: the
        #: root entries to set or insert when the root pages are edited in place.
        self.recorded: dict[str, tuple[str, int]] = {}
        #: The projects forgotten in this run: the root entries to take out.
        self.forgotten: set[str] = set()
        self._unsaved = False
        #: The records changed since the last save (None: forgotten), for the journal; with
        #: ``_whole``, the records were rebuilt or repaired and ``projects.json`` is written whole.
        self._changes: dict[str, _Stored | None] = {}
        self._whole = False
        #: ``projects.journal`` as read or last written (and whether there is one, readable or
        #: not), and the length of ``projects.json``.
        self._journal = ""
        self._journal_on_disk = False
        self._base_size = 0
        #: Whether :meth:`record` and :meth:`forget` keep changes without loading the records
        #: (:meth:`_may_defer`; None: not asked yet), and whether the run started clean.
        self._deferred: bool | None = None
        self._clean_start = False
        self._lock = threading.RLock()  # workers record projects while the main thread saves

    # -- where a run starts ------------------------------------------------------------
    def start(self, force_check: bool = False, cleanup_todo: bool = False, master: str | None = None) -> StartPoint:
        """Read ``generation``, ``status``, ``todo`` and (with ``master``, for ``api-method =
        auto``) ``upstream-method`` for a ``mirror`` run, under its lock.

        Damage in any of them is named in one warning and repaired here, never believed:

        - ``generation`` unreadable: a full check (as for an older generation), which writes it anew;
        - ``status`` unreadable: set to 0 at once, and the run compares the whole listing with
          the records (:meth:`behind_records`). The serial says which changes the mirror
          holds; with it unknown, the records say it project by project. A run killed after
          writing its ``todo`` is resumed from it (0 is below its target);
        - ``todo`` unreadable: discarded, and the same comparison, which finds what it held
          (a project in it has a record older than its serial upstream, or none);
        - ``upstream-method`` unreadable: ignored, ``auto`` probes the methods again.
        """
        full, compare = force_check, False
        try:
            full = self.check_generation() or full
        except DamagedState as damage:
            logger.warning("%s", damage.named(f"checking every project (a full check), then writing generation {GENERATION}"))
            full = True
        try:
            status = self.status
        except DamagedState as damage:
            logger.warning("%s", damage.named(_DISTRUSTED))
            self.write_status(0)
            status, compare = 0, True
        if cleanup_todo:
            self.remove_todo()
        try:
            todo = self.read_todo()
        except DamagedState as damage:
            logger.warning("%s", damage.named(f"discarded it; {_COMPARED}, which finds what it held"))
            self.remove_todo()
            todo, compare = None, True
        point = StartPoint(status, todo, full, compare=compare)
        self._clean_start = point.todo is None and not point.full and not point.compare
        if master is not None:
            try:
                point.remembered, point.fresh = self.remembered_method(master)
            except DamagedState as damage:
                logger.warning("%s", damage.named("ignored it; the upstream's methods are probed again"))
                point.remembered, point.fresh = "", False
        return point

    def distrust_ahead(self, point: StartPoint, upstream_serial: int) -> bool:
        """Whether ``point`` is ahead of the upstream's own serial: then it is not believed
        (one warning), ``point`` is moved to where a run may safely start, and the caller
        asks the upstream again.

        A mirror cannot hold changes its upstream has not made: a ``status`` above the
        upstream's serial is damage (a hand edit, a restored upstream, another upstream),
        and believing it would skip every change up to it. It is handled as an unreadable
        ``status``: set to 0, the listing compared with the records. A ``todo`` target above it is dropped: the
        ``status`` serial is sound, so the run asks for the changes after it and syncs the
        todo's projects.
        """
        if point.status > upstream_serial:
            logger.warning(
                "%s holds serial %d, ahead of the upstream's serial %d; %s",
                self.storage.display("status"), point.status, upstream_serial, _DISTRUSTED,
            )
            self.write_status(0)
            point.status, point.compare = 0, True
            if point.todo is not None:
                point.todo.target = 0
            return True
        if point.todo is not None and point.todo.target > upstream_serial:
            logger.warning(
                "%s aims at serial %d, ahead of the upstream's serial %d; not believed: its %d projects are "
                "synced and the changes after the status serial %d are asked for",
                self.storage.display("todo"), point.todo.target, upstream_serial, len(point.todo.projects), point.status,
            )
            point.todo.target = point.status
            return True
        return False

    def _may_defer(self) -> bool:
        """Whether this run records projects without loading the records first (:meth:`record`).

        On a large mirror (``projects.json`` of :data:`JOURNAL_FROM` or more) a ``mirror`` run
        that started clean (no ``todo`` of an unfinished run, ``status`` and ``generation``
        believed) and finds the journal readable: its changes go to the journal, and the
        records are loaded (and checked against the root index) only when the run needs them:
        when a root page cannot be edited in place, a removal limit is asked for, or the
        journal is folded. A small run then neither parses nor rewrites a million records.
        Asked when a run first records (a no-change run asks nothing).
        """
        if not self._clean_start:
            return False
        stat = self.storage.stat(PROJECTS_FILE)
        if stat is None or stat.st_size < JOURNAL_FROM:
            return False
        try:
            text = read_state_text(self.storage, JOURNAL_FILE)
            self._journal_on_disk = text is not None
            journal = text or ""
            Records().apply_journal(journal)
        except (DamagedState, ValueError):
            return False  # loading the records names the damage and repairs it
        self._journal, self._base_size = journal, stat.st_size
        return True

    # -- generation and status -------------------------------------------------------
    @property
    def generation(self) -> int | None:
        """The number in ``generation`` (None when there is none); :class:`DamagedState` when it holds none."""
        text = read_state_text(self.storage, "generation")
        if text is None:
            return None
        try:
            return parse_serial(text)
        except ValueError as exc:
            raise DamagedState(self.storage.display("generation"), str(exc).replace("serial", "generation")) from None

    def check_generation(self) -> bool:
        """Validate ``generation``; return True when an old layout needs a full sync.

        Raises :class:`DamagedState` when it holds no whole number (a run can repair
        that), :class:`StateError` for a generation this tool does not know (a newer
        tool's mirror: not touched).
        """
        generation = self.generation
        if generation is None or generation == GENERATION:
            return False
        if generation in OLD_GENERATIONS:
            logger.warning("Mirror generation %s is older than %s: forcing a full sync", generation, GENERATION)
            return True
        raise StateError(
            f"{self.storage.display('generation')} says generation {generation}; this tool knows "
            f"generation {GENERATION} (and reads {', '.join(map(str, OLD_GENERATIONS))})"
        )

    def write_generation(self) -> None:
        self.storage.write_if_changed("generation", str(GENERATION).encode())

    @property
    def status(self) -> int:
        """The serial in ``status`` (0 when there is none); :class:`DamagedState` when it holds no serial."""
        text = read_state_text(self.storage, "status")
        if text is None:
            return 0
        try:
            return parse_serial(text)
        except ValueError as exc:
            raise DamagedState(self.storage.display("status"), str(exc)) from None

    def check_status(self) -> None:
        """For commands that do not repair state (``verify``, ``delete``): a damaged ``status``
        stops them before any work (exit 2; ``mirror`` repairs it), instead of halfway, at
        the root index."""
        self.status  # noqa: B018 - read for the DamagedState it may raise

    def write_status(self, serial: int) -> None:
        self.storage.write_if_changed("status", str(serial).encode())

    # -- the discovery method that worked ------------------------------------------
    def remembered_method(self, master: str) -> tuple[str, bool]:
        """The method ``auto`` last found working against ``master`` ("" if none), and whether
        that was less than a day ago (else the others are probed again).

        A file for another master is simply not used (the configuration changed); one that
        is not ``<method> <time> <master>`` raises :class:`DamagedState`.
        """
        text = read_state_text(self.storage, METHOD_FILE)
        if text is None:
            return "", False
        parts = text.split()
        if len(parts) != 3 or parts[0] not in _METHODS or not _DIGITS_RE.fullmatch(parts[1]):
            raise DamagedState(self.storage.display(METHOD_FILE), f"holds {_shown(text.strip())}, not '<method> <time> <master>'")
        if parts[2] != master:
            return "", False
        age = time.time() - int(parts[1])
        return parts[0], 0 <= age < REPROBE_SECONDS

    def remember_method(self, method: str, master: str) -> None:
        self.storage.write_bytes(METHOD_FILE, f"{method} {int(time.time())} {master}\n".encode())

    # -- todo ------------------------------------------------------------------------
    def read_todo(self) -> Todo | None:
        """The unfinished run's work, None when there is none; :class:`DamagedState` when unreadable."""
        text = read_state_text(self.storage, "todo")
        if text is None:
            return None
        try:
            return Todo.parse(text)
        except ValueError as exc:
            raise DamagedState(self.storage.display("todo"), str(exc)) from None

    def write_todo(self, todo: Todo) -> None:
        self.storage.write_bytes("todo", todo.render().encode())

    def remove_todo(self) -> None:
        self.storage.delete("todo")

    # -- per-project records ---------------------------------------------------------
    @property
    def projects(self) -> Records:
        """The records of every mirrored project (change them through :meth:`record` and :meth:`forget`)."""
        with self._lock:
            if self._projects is None:
                self._projects = self._load_projects()
                if self._deferred:  # what this run recorded before they were loaded goes on top
                    self._deferred = False
                    self._projects.apply(self._changes)
                    # the names the projects recorded so far had are not known (saved changes are in
                    # the journal just read): the root HTML is rewritten
                    self.names_changed = self.names_changed or bool(self.recorded) or bool(self._changes)
            return self._projects

    @property
    def deferred(self) -> bool:
        """Whether this run records without having loaded the records (:meth:`_may_defer`)."""
        with self._lock:
            if self._projects is not None:
                return False
            if self._deferred is None:
                self._deferred = self._may_defer()
            return self._deferred

    def record_count(self) -> int | None:
        """How many projects are recorded; None when a deferred run has not loaded the records."""
        with self._lock:
            return None if self.deferred else len(self.projects)

    @property
    def repaired(self) -> bool:
        """Whether the loaded records were repaired and are not saved yet (a run with nothing
        else to do must still write them, and the root index)."""
        return self._projects is not None and self._unsaved

    def _load_projects(self) -> Records:
        """Read ``projects.json``; rebuild or complete it from the pages when it cannot be right.

        Pages are the truth for what the mirror holds; the records are its cheap index. They
        are checked against the published root index, which a run renders from them: fewer
        records than root entries means records were lost (the file replaced, truncated to
        a valid document, restored from an old copy), since a project leaves the records
        only with its pages and the root index is rewritten in the same run. Only then are
        the pages scanned (every project directory, minutes on a large mirror) and what the
        records lack restored from them. The usual run pays one sequential read of the root
        index, which the run reads anyway to compare before rewriting it; no directory is
        listed. A record set with no published root index to compare with (a new mirror,
        or one whose root index is gone) is trusted: the root index it gives is the first.
        """
        try:
            records = self.stored_records()
            if records is None:
                records = self._scan_pages()
                if records:
                    logger.info(
                        "Rebuilt the records of %d projects from their pages (%s was missing)",
                        len(records), self.storage.display(PROJECTS_FILE),
                    )
                self._unsaved = self._whole = True  # the rebuilt records are worth keeping
                return records
        except DamagedState as damage:
            records = self._scan_pages()
            logger.warning("%s", damage.named(f"rebuilt it from the project pages: {len(records)} projects"))
            self._unsaved = self._whole = self.names_changed = True
            return records
        published = self.published_count()
        if published is not None and len(records) < published:
            found = self._scan_pages()
            restored = [c for c in found if c not in records]
            for canonical in restored:
                records.set(canonical, *found[canonical])
            if restored:
                logger.warning(
                    "%s lists %d projects but the root index lists %d: records were lost; restored %d from the project "
                    "pages (the pages are what the mirror holds), %d projects now",
                    self.storage.display(PROJECTS_FILE), len(records) - len(restored), published, len(restored),
                    len(records),
                )
            else:  # e.g. a run stopped after removing projects, before it rewrote the root index
                logger.info(
                    "The root index lists %d projects, the records and the project pages %d: writing it anew",
                    published, len(records),
                )
            self._unsaved = self._whole = self.names_changed = True  # the root index is rewritten from what the pages say
        return records

    def stored_records(self) -> Records | None:
        """``projects.json`` as stored, with ``projects.journal`` applied (None when there is no
        ``projects.json``); :class:`DamagedState` naming the file that is not a set of records."""
        text = read_state_text(self.storage, PROJECTS_FILE)
        if text is None:
            return None
        try:
            records = Records.from_json(text)
        except ValueError as exc:  # also a truncated document
            raise DamagedState(self.storage.display(PROJECTS_FILE), f"is not a set of project records ({exc})") from None
        try:
            journal_text = read_state_text(self.storage, JOURNAL_FILE)
        except DamagedState:
            self._journal_on_disk = True  # removed when the rebuilt records are saved
            raise
        self._journal_on_disk = journal_text is not None
        journal = journal_text or ""
        try:
            records.apply_journal(journal)
        except ValueError as exc:
            raise DamagedState(self.storage.display(JOURNAL_FILE), f"is not a journal of project records ({exc})") from None
        self._journal, self._base_size = journal, len(text)
        return records

    def published_count(self) -> int | None:
        """How many projects the published root index lists (None when there is none).

        Counted, not parsed: one entry per ``<a `` in the HTML root, one per ``"name":`` in
        the JSON one; a root index of a million projects is counted in milliseconds.
        """
        paths = [self.root_index] if self.root_index else [layout.ROOT_HTML[0], layout.ROOT_JSON]
        for path in paths:
            try:
                data = self.storage.read_bytes(path)
            except FileNotFoundError:
                continue
            return data.count(b'"name":') if path == layout.ROOT_JSON else data.count(b"<a ")
        return None

    def behind_records(self, listed: Mapping[str, int]) -> dict[str, int]:
        """Of the listed projects (name -> the upstream's serial, 0 when unknown), those the
        mirror must sync: not recorded, or recorded at a lower serial, or of unknown serial.

        What a run uses instead of ``status`` when it cannot believe it: a record holds the
        serial the project's pages were written at, with every file they link, so a project
        listed at that serial or below has not changed since. One listing and the records,
        instead of a request for every project.
        """
        records = self.projects
        behind: dict[str, int] = {}
        for name, serial in listed.items():
            record = records.get(canonicalize_name(name))
            if not serial or record is None or serial > record[1]:
                behind[name] = serial
        return behind

    def record(self, canonical: str, name: str, serial: int) -> None:
        with self._lock:
            self.forgotten.discard(canonical)
            if self.deferred:
                self.recorded[canonical] = (name, serial)
                self._changes[canonical] = serial if name == canonical else [name, serial]
                self._unsaved = True
                return
            old = self.projects.get(canonical)
            if old is None or old[0] != name:
                self.names_changed = True
            self.recorded[canonical] = (name, serial)
            if old != (name, serial):
                self.projects.set(canonical, name, serial)
                self._changes[canonical] = self.projects.stored(canonical)
                self._unsaved = True

    def forget(self, canonical: str) -> None:
        with self._lock:
            self.recorded.pop(canonical, None)
            self.forgotten.add(canonical)
            if self.deferred:
                self._changes[canonical] = None
                self.names_changed = self._unsaved = True
                return
            if self.projects.pop(canonical):
                self.names_changed = self._unsaved = True
                self._changes[canonical] = None

    def save_projects(self) -> None:
        """Save the records if one changed since they were read or last saved.

        The changes are appended to ``projects.journal`` (rewritten with one more line), so
        that a run that changes ten records of a million does not serialize and write all of
        them. ``projects.json`` is written whole instead, and the journal removed, when the
        records were rebuilt or repaired, when it is small (:data:`JOURNAL_FROM`), and when
        the journal would outgrow an eighth of it. The journal is removed first: a run that
        stops between the two leaves ``projects.json`` as it was, which the check against the
        root index repairs from the pages, never a journal that a newer ``projects.json``
        would replay wrongly.
        """
        with self._lock:
            if not self._unsaved:
                return
            journal = self._journal + json.dumps(self._changes, separators=(",", ":")) + "\n"
            whole = self._whole or self._base_size < JOURNAL_FROM or len(journal) > self._base_size // 8
            data = self.projects.to_json() if whole else journal
            stale, self._journal_on_disk = whole and self._journal_on_disk, not whole
            self._unsaved = self._whole = False
            self._changes = {}
            self._journal = "" if whole else journal
            if whole:
                self._base_size = len(data)
        if not whole:
            self.storage.write_bytes(JOURNAL_FILE, data.encode())
            return
        if stale:
            self.storage.delete(JOURNAL_FILE)
        self.storage.write_bytes(PROJECTS_FILE, data.encode())

    def _scan_pages(self) -> Records:
        """The project records the pages give (a mirror made by another tool, or damaged records)."""
        found = Records()
        depth = 3 if self.hash_index else 2  # below web/simple: [letter/]name/index.html
        for path, _size in self.storage.files(layout.SIMPLE):
            parts = path[len(layout.SIMPLE) + 1 :].split("/")
            if len(parts) != depth or parts[-1] != layout.PAGE_HTML:
                continue
            canonical = canonicalize_name(parts[-2])
            if not _CANONICAL_RE.fullmatch(canonical):
                continue  # not a project's directory
            try:
                record = _read_page_record(self.storage.read_bytes(path), parts[-2])
            except (OSError, LocalIOError):
                continue
            if record is not None:
                found.set(canonical, *record)
        return found


#: How a run finds what changed when it cannot believe ``status`` or ``todo``.
_COMPARED = "the serial of every project the upstream lists is compared with the mirror's records"
#: What a run does with a ``status`` it cannot believe.
_DISTRUSTED = f"not believed: the serial is set to 0 and {_COMPARED}"
#: The discovery methods ``upstream-method`` may name.
_METHODS = ("xmlrpc", "simple", "html")


def _read_page_record(data: bytes, directory: str) -> tuple[str, int] | None:
    serial = _SERIAL_RE.search(data[-64:])
    title = _TITLE_RE.search(data[:512])
    if serial is None:
        return None
    name = title.group(1).decode("utf-8", "replace") if title else directory
    return unescape(name), int(serial.group(1))
