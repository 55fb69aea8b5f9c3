"""One run of the sync engine, in four verbs: plan, sync, publish the root, wrap up.

A :class:`Run` holds everything one ``mirror`` or ``sync`` learns on the way (its report,
its filters as dependencies widen them, why it stopped, the removal guard, the dependency
rounds), so that a :class:`~bandersnatch_classic.sync.Mirror` can run twice (``verify``
does) and the second run starts clean.

Progress is recorded so that a run killed at any moment loses nothing: ``todo`` holds
the target serial and the projects still to do, rewritten (atomically, in batches every
few seconds) as projects finish; ``status`` moves to the target only when nothing is
left. Projects that fail stay in ``todo`` and ``status`` stays where it was; the next run
retries them together with whatever changed after the todo's target, so the rest of the
mirror keeps advancing (see docs/operations.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name

from . import layout, runner
from .errors import EXIT_FAILED, EXIT_OK, LocalIOError, UnsafeListing, UpstreamKnowsNone, WorkerBug
from .plan import Records, RunPlan, keep_validators, plan
from .progress import human as _human, plural
from .removals import Removals
from .rootindex import write_diff_file, write_root
from .rounds import DependencyRounds
from .state import Todo
from .statefiles import STATUS
from .worker import Crashed

if TYPE_CHECKING:
    from .sync import Mirror

logger = logging.getLogger(__name__)


@dataclass
class Report:
    """What a run did; the CLI prints :meth:`summary` and exits with :attr:`exit_code`."""

    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    method: str = ""
    synced: int = 0
    removed: int = 0
    files: int = 0
    bytes: int = 0
    serial: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    #: Canonical names the upstream answered 404 for (deleted, or never there).
    gone: set[str] = field(default_factory=set)
    #: Requirement edges nothing in the mirror can satisfy, one line each with its chain.
    unsatisfied: list[str] = field(default_factory=list)
    #: Names a ``sync`` was given that its filters exclude (not synced).
    excluded: list[str] = field(default_factory=list)

    #: Projects the filters dropped after fetching them (metadata filters, a renamed project).
    skipped: int = 0
    #: Projects left in ``todo`` when the run ended (failed or not reached), and why the run stopped early.
    left: int = 0
    stopped: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_OK

    def summary(self) -> str:
        seconds = time.monotonic() - self.started
        via = f" via {self.method}" if self.method else ""
        serial = f"serial {self.serial}{via}" if self.serial else f"serial unknown{via}"
        dropped = f", {self.skipped:,} dropped by the filters" if self.skipped else ""
        left = ""
        if self.left:
            why = f"stopped: {self.stopped}" if self.stopped else "the failed ones are retried by the next run"
            left = f"; {self.left:,} left in todo ({why})"
        return (
            f"Summary: {plural(self.synced, 'project')} synced, {len(self.failed):,} failed, "
            f"{self.removed:,} removed{dropped}; {plural(self.files, 'file')}, {_human(self.bytes)} downloaded "
            f"in {seconds:.1f}s; {serial}{left}"
        )


class Run:
    """One ``mirror`` or ``sync`` run of a mirror, with everything it learns on the way."""

    def __init__(self, mirror: Mirror, report: Report, allow_mass_removal: bool = False) -> None:
        self.mirror = mirror
        self.config, self.upstream, self.storage = mirror.config, mirror.upstream, mirror.storage
        self.state, self.sidecars, self.dependencies = mirror.state, mirror.sidecars, mirror.dependencies
        self.report = report
        #: Replaced by a wider set, never changed, as dependencies are admitted: workers
        #: take the set in force when they start.
        self.filters = mirror.filters
        self.stopped = False
        self.highest_serial = 0
        #: canonical -> the name the upstream's listing or changelog gave this run.
        self.listed: dict[str, str] = {}
        #: Projects the filters dropped whole in this run.
        self.skipped: set[str] = set()
        #: The first local I/O error a worker met: the run stops and raises it at the end.
        self.local_error: LocalIOError | None = None
        #: The first exception a worker did not expect (a bug): the run stops and exits 70.
        self.bug: Crashed | None = None
        self.removals = Removals(self, allow_mass_removal)
        self.rounds = DependencyRounds(self)

    def halt(self, stop: Any, why: str = "") -> None:
        """Start no new work (the workers finish what they hold); ``why`` goes in the summary."""
        self.stopped = True
        if why:
            self.report.stopped = self.report.stopped or why
        stop.set()

    # -- the verbs -------------------------------------------------------------------------
    def mirror_all(self, force_check: bool, cleanup_todo: bool) -> Report:
        """The ``mirror`` command: plan, sync, publish the root, wrap up."""
        planned = plan(self, force_check, cleanup_todo)
        if planned.idle and self.storage.exists(STATUS) and not self.state.repaired:
            logger.debug("Nothing to do: the mirror is at serial %d", planned.start.status)
            write_diff_file(self.config, self.storage, self.report.written)  # empty: this run wrote nothing
            keep_validators(self, planned.found)
            return self.report
        todo = self._begin(planned)
        self.sync(todo, set(planned.work), every_404_is_unusable=True)
        target = planned.target
        if not planned.found.exact_target:  # serials were learnt from the projects themselves
            target = max(target, self.highest_serial)
        self.report.serial = target
        self.publish_root(target)
        self._wrap_up(planned, todo, target)
        return self.report

    def sync_named(self, names: Iterable[str], write_root: bool) -> Report:
        """The ``sync`` command: sync the named projects now; ``status`` and ``todo`` stay."""
        if self.dependencies is not None:
            self.filters = self.filters.with_allowed(Records(self.state))  # dependencies found by earlier runs
        work: dict[str, int] = {}
        for name in names:
            if self.filters.allows_name(name):
                work[canonicalize_name(name)] = 0
            else:
                self.report.excluded.append(name)
        todo = Todo(self.state.status, work)
        self.report.serial = todo.target
        self.sync(todo, set(work), every_404_is_unusable=False, checkpoint=False)
        if write_root:
            self.publish_root(self.state.status)
        else:
            self.state.save_projects()
        return self.report

    def _begin(self, planned: RunPlan) -> Todo:
        """Say what the run will do, write its todo, and take out what the listing removed."""
        found, work, target = planned.found, planned.work, planned.target
        logger.info(
            "%s to sync%s via %s%s",
            plural(len(work), "project"), f", {len(found.removed)} to remove" if found.removed else "", found.method,
            f", towards serial {target}" if target else "",
        )
        self.state.write_generation()
        todo = Todo(target, work)
        self.state.write_todo(todo)
        keep_validators(self, found, root=False)  # the listing's only once all it asked for is done
        for canonical in sorted(found.removed):
            logger.info("%s: gone from the upstream listing; removing it from the index", canonical)
            self.removals.unpublish(canonical)
        return todo

    def sync(self, todo: Todo, attempted: set[str], every_404_is_unusable: bool, checkpoint: bool = True) -> None:
        """Sync ``todo``, then the dependency rounds; settle the 404s, and stop (raising)
        after a local I/O error, a bug, too many removals or nothing but 404s."""
        if self.dependencies is not None:
            self.rounds.pin()
        self.sync_todo(todo, checkpoint)
        if self.dependencies is not None:
            self.rounds.sync(todo, attempted, checkpoint)
        self.removals.settle_not_found(every_404_is_unusable)
        self._raise_stop_reason()

    def sync_todo(self, todo: Todo, checkpoint: bool = True) -> None:
        """Sync every project of ``todo`` with the workers (see :func:`runner.sync`)."""
        runner.sync(self, todo, checkpoint)

    def publish_root(self, serial: int) -> None:
        """Rewrite the root index from the project records, and save the records."""
        self.report.written += write_root(self.config, self.storage, self.state, serial)

    def _wrap_up(self, planned: RunPlan, todo: Todo, target: int) -> None:
        """Move ``status`` to the target when nothing is left (else keep todo for the next
        run), mark the mirror complete, and write the diff file."""
        report = self.report
        if not todo.projects:
            self.state.write_status(target)
            self.state.remove_todo()
            if not report.gone:  # a project removed while still listed comes back with the whole listing
                keep_validators(self, planned.found)
        else:
            # todo holds what failed or was never started (after a stop): the next run
            # retries those together with what changed after ``target``; status stays put.
            # The target may have grown from the projects' own serials (a first run that
            # asked no listing for serials starts at 0): without it the next run would see
            # no progress and sync everything again.
            todo.target = target
            self.state.write_todo(todo)
        report.left = len(todo.projects)
        if not report.failed and not self.stopped:
            self.storage.write_bytes(layout.LAST_MODIFIED, report.started_at.strftime("%Y%m%dT%H:%M:%S\n").encode())
        write_diff_file(self.config, self.storage, report.written)

    # -- stopping ----------------------------------------------------------------------------
    def _raise_stop_reason(self) -> None:
        """After a local I/O error, a bug, too many removals or nothing but 404s, keep what
        was done (root index, records; todo is kept) and stop."""
        lost = self.lock_lost()
        if lost is not None:
            raise lost  # the storage refuses every write now
        removals = self.removals
        if self.local_error is None and self.bug is None and removals.refused is None and removals.knows_none is None:
            return
        with contextlib.suppress(LocalIOError):  # the disk that failed may refuse this too
            self.publish_root(self.state.status)
        with contextlib.suppress(LocalIOError):
            self.state.save_projects()
        if self.bug is not None:
            raise WorkerBug(self.bug.name, self.bug.details)
        if self.local_error is not None:
            raise self.local_error
        if removals.refused is not None:
            raise UnsafeListing(removals.refused)
        raise UpstreamKnowsNone(removals.knows_none)

    def lock_lost(self) -> LocalIOError | None:
        """Why this run can no longer prove that it holds its lock (a leased lock on a bucket
        that was taken over, or not renewed in time), or None."""
        check = getattr(self.storage, "lock_lost", None)
        return check() if callable(check) else None

    def checkpoint(self, todo: Todo, finished: list[str]) -> None:
        """Record finished projects: their records first, then the shorter todo."""
        self.state.save_projects()
        self.sidecars.save()
        for name in finished:
            todo.projects.pop(name, None)
        self.state.write_todo(todo)
        self.report.left = len(todo.projects)
