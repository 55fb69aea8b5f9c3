"""Where a run starts, and the project records: :class:`MirrorState`, the state of one mirror.

It reads and writes every state file through :class:`~bandersnatch_classic.statefiles.StateFiles`
(the owner of their names and formats) and adds what a run decides from them:
:meth:`MirrorState.start` reads ``generation``, ``status``, ``todo`` and ``upstream-method``
and turns damage in each into one log line and a repair (docs/operations.md, "Damaged
state"); the project records (``projects.json``, :mod:`~bandersnatch_classic.records`)
repair themselves when loaded: a corrupt file, or one that lists fewer projects than the
published root index (see :meth:`MirrorState._load_projects`), is completed from the project
pages, which are the truth for what the mirror holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from . import records as project_records
from .errors import DamagedState
from .records import Records
from .statefiles import GENERATION, PROJECTS, STATUS, TODO, StateFiles, Todo
from .storage import Storage

__all__ = ["MirrorState", "Records", "StartPoint", "Todo"]

logger = logging.getLogger(__name__)


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


class MirrorState(StateFiles):
    """The state of one mirror directory: its state files, where a run starts, the project records."""

    def __init__(self, storage: Storage, hash_index: bool = False, root_index: str | None = None) -> None:
        super().__init__(storage)
        #: Where the project pages are, for rebuilding the records from them.
        self.hash_index = hash_index
        #: The published root index the records are checked against when loaded (None:
        #: whichever of the HTML and the JSON root there is).
        self.root_index = root_index
        self._projects: Records | None = None
        self._file = project_records.RecordsFile(storage)
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
        self._changes: dict[str, object] = {}
        self._whole = False
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
                self.storage.display(STATUS), point.status, upstream_serial, _DISTRUSTED,
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
                self.storage.display(TODO), point.todo.target, upstream_serial, len(point.todo.projects), point.status,
            )
            point.todo.target = point.status
            return True
        return False

    # -- per-project records ---------------------------------------------------------
    @property
    def projects(self) -> Records:
        """The records of every mirrored project (change them through :meth:`record` and :meth:`forget`)."""
        with self._lock:
            if self._projects is None:
                self._projects = self._load_projects()
                if self._deferred:  # what this run recorded before they were loaded goes on top
                    self._deferred = False
                    self._projects.apply(self._changes)  # type: ignore[arg-type]
                    # the names the projects recorded so far had are not known (saved changes are in
                    # the journal just read): the root HTML is rewritten
                    self.names_changed = self.names_changed or bool(self.recorded) or bool(self._changes)
            return self._projects

    @property
    def deferred(self) -> bool:
        """Whether this run records projects without loading the records first.

        On a large mirror a ``mirror`` run that started clean (no ``todo`` of an unfinished
        run, ``status`` and ``generation`` believed) and finds the journal readable
        (:meth:`RecordsFile.journal_usable`): its changes go to the journal, and the records
        are loaded (and checked against the root index) only when the run needs them: when a
        root page cannot be edited in place, a removal limit is asked for, or the journal is
        folded. A small run then neither parses nor rewrites a million records. Asked when a
        run first records (a no-change run asks nothing).
        """
        with self._lock:
            if self._projects is not None:
                return False
            if self._deferred is None:
                self._deferred = self._clean_start and self._file.journal_usable()
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
                records = project_records.scan_pages(self.storage, self.hash_index)
                if records:
                    logger.info(
                        "Rebuilt the records of %d projects from their pages (%s was missing)",
                        len(records), self.storage.display(PROJECTS),
                    )
                self._unsaved = self._whole = True  # the rebuilt records are worth keeping
                return records
        except DamagedState as damage:
            records = project_records.scan_pages(self.storage, self.hash_index)
            logger.warning("%s", damage.named(f"rebuilt it from the project pages: {len(records)} projects"))
            self._unsaved = self._whole = self.names_changed = True
            return records
        published = self.published_count()
        if published is not None and len(records) < published:
            self._restore_lost(records, published)
        return records

    def _restore_lost(self, records: Records, published: int) -> None:
        """Complete ``records``, which list fewer projects than the root index (``published``), from the pages."""
        found = project_records.scan_pages(self.storage, self.hash_index)
        restored = [c for c in found if c not in records]
        for canonical in restored:
            records.set(canonical, *found[canonical])
        if restored:
            logger.warning(
                "%s lists %d projects but the root index lists %d: records were lost; restored %d from the project "
                "pages (the pages are what the mirror holds), %d projects now",
                self.storage.display(PROJECTS), len(records) - len(restored), published, len(restored),
                len(records),
            )
        else:  # e.g. a run stopped after removing projects, before it rewrote the root index
            logger.info(
                "The root index lists %d projects, the records and the project pages %d: writing it anew",
                published, len(records),
            )
        self._unsaved = self._whole = self.names_changed = True  # the root index is rewritten from what the pages say

    def stored_records(self) -> Records | None:
        """``projects.json`` as stored, with ``projects.journal`` applied (None when there is no
        ``projects.json``); :class:`DamagedState` naming the file that is not a set of records."""
        return self._file.read()

    def published_count(self) -> int | None:
        """How many projects the published root index lists (None when there is none)."""
        return project_records.published_count(self.storage, self.root_index)

    def behind_records(self, listed: Mapping[str, int]) -> dict[str, int]:
        """Of the listed projects (name -> the upstream's serial, 0 when unknown), those the
        mirror must sync: not recorded, or recorded at a lower serial, or of unknown serial.

        What a run uses instead of ``status`` when it cannot believe it: a record holds the
        serial the project's pages were written at, with every file they link, so a project
        listed at that serial or below has not changed since. One listing and the records,
        instead of a request for every project.
        """
        return project_records.behind(self.projects, listed)

    def record(self, canonical: str, name: str, serial: int) -> None:
        with self._lock:
            self.forgotten.discard(canonical)
            self.recorded[canonical] = (name, serial)
            if self.deferred:
                self._changes[canonical] = serial if name == canonical else [name, serial]
                self._unsaved = True
                return
            old = self.projects.get(canonical)
            if old is None or old[0] != name:
                self.names_changed = True
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
        """Save the records if one changed since they were read or last saved: a line of
        ``projects.journal``, or ``projects.json`` whole (:class:`RecordsFile`)."""
        with self._lock:
            if not self._unsaved:
                return
            changes = self._changes
            whole = self._file.needs_whole(changes, self._whole)  # type: ignore[arg-type]
            records = self.projects if whole else self._projects  # a deferred run loads them to write them whole
            self._unsaved = self._whole = False
            self._changes = {}
        self._file.save(records, changes, whole)  # type: ignore[arg-type]


#: How a run finds what changed when it cannot believe ``status`` or ``todo``.
_COMPARED = "the serial of every project the upstream lists is compared with the mirror's records"
#: What a run does with a ``status`` it cannot believe.
_DISTRUSTED = f"not believed: the serial is set to 0 and {_COMPARED}"


