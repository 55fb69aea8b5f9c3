"""The sync engine: bring a mirror (Storage) up to date with an upstream (Upstream).

:class:`Mirror` decides what to sync (discovery, ``todo``), hands the projects to
:class:`~bandersnatch_classic.worker.Worker` s, and applies what they report.

Python runs one thread at a time, and a full sync spends most of its CPU in Python
(HTTP parsing, bookkeeping). So a large run forks one worker process per core, each
with its share of the ``workers`` threads, taking projects from one shared cursor; a
small run keeps one worker in-process. Either way every worker reports each project as
a typed result through one queue, and only :class:`Mirror`, in the main process, applies
the results: project records, the report, ``todo`` checkpoints, removals, stop-on-error.

Progress is recorded so that a run killed at any moment loses nothing: ``todo`` holds
the target serial and the projects still to do, rewritten (atomically, in batches every
few seconds) as projects finish; ``status`` moves to the target only when nothing is
left. Projects that fail stay in ``todo`` and ``status`` stays where it was; the next run
retries them together with whatever changed after the todo's target, so the rest of the
mirror keeps advancing (see docs/operations.md).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock
from packaging.utils import canonicalize_name

from . import layout, pages
from .config import Config, MirrorConfig
from .dependencies import DependencyPolicy, Edge, describe, satisfying
from .discovery import ROOT, Plan, discover
from .errors import ConfigError, LocalIOError, LockHeld, UnsafeListing, UpstreamError, UpstreamKnowsNone
from .filters import FilterSet
from .models import Project
from .package import publish
from .progress import Progress, human as _human, plural
from .sidecars import MissingSidecars
from .state import VALIDATORS_FILE, MirrorState, Todo
from .storage import Storage, storage_from_config
from .upstream import RetryPolicy, Upstream
from .worker import (
    Exited, Failed, Gone, Item, LocalError, Result, SharedCursor, Skipped, Synced, Unfinished, Worker, run_worker,
    run_worker_process,
)

if TYPE_CHECKING:
    from packaging.requirements import Requirement

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 2.0
#: Below this many projects, forking worker processes costs more than it saves.
MIN_PROJECTS_PER_PROCESS = 50

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

    #: Projects the filters dropped after fetching them (metadata filters, a renamed project).
    skipped: int = 0
    #: Projects left in ``todo`` when the run ended (failed or not reached), and why the run stopped early.
    left: int = 0
    stopped: str = ""

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

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


@contextlib.contextmanager
def mirror_lock(directory: Path) -> Iterator[None]:
    """Hold ``<directory>/.lock`` for the whole run; a second run gets :class:`LockHeld`."""
    lock = filelock.FileLock(str(directory / ".lock"), timeout=0)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except filelock.Timeout as exc:
        raise LockHeld(f"another run holds {directory / '.lock'}; not starting a second one") from exc
    except OSError as exc:  # pre-flight checked; this is a race with whoever changed it since
        raise LocalIOError.of(str(directory / ".lock"), exc) from exc
    # filelock closes its descriptor in forked children, so a worker process orphaned by a
    # killed run would go on writing unlocked. A duplicate of the descriptor shares the
    # lock and stays open in the children: the lock lasts as long as any of them.
    fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    inherited = os.dup(fd) if isinstance(fd, int) else None
    try:
        yield
    finally:
        if inherited is not None:
            os.close(inherited)
        lock.release()


class Mirror:
    """A mirror directory, its state, and the workers that fill it."""

    def __init__(
        self,
        config: MirrorConfig,
        upstream: Upstream,
        storage: Storage,
        filters: FilterSet,
        dependencies: DependencyPolicy | None = None,
    ) -> None:
        self.config = config
        self.upstream = upstream
        self.storage = storage
        #: Replaced by a wider set, never changed, as dependencies are admitted: workers
        #: take the set in force when they start.
        self.filters = filters
        self.dependencies = dependencies
        #: resolve-dependencies: the requirement edges of every mirrored project and the
        #: versions each keeps (dependencies.json, updated by what this run syncs).
        self._edges: dict[str, list[Edge]] = {}
        self._versions: dict[str, list[str]] = {}
        #: Projects the filters dropped whole in this run.
        self._skipped: set[str] = set()
        self.state = MirrorState(storage, config.hash_index, layout.ROOT_HTML[0] if config.write_html else layout.ROOT_JSON)
        self.sidecars = MissingSidecars(storage)
        self.report = Report()
        self._stopped = False
        self._highest_serial = 0
        #: canonical -> the name the upstream's listing or changelog gave this run.
        self._listed: dict[str, str] = {}
        #: The first local I/O error a worker met: the run stops and raises it at the end.
        self.local_error: LocalIOError | None = None
        #: Accept more removals in this run than ``max-removals`` allows (``--allow-mass-removal``).
        self.allow_mass_removal = False
        self._removal_limit: int | None = None
        #: Why the run stopped removing projects the upstream answers 404 for (raised at the end).
        self._refused: str | None = None
        #: What the upstream said in this run besides the projects (its listing, its changelog's
        #: removals): the word a removal needs. ``sync`` reads none: no 404 removes there.
        self._word = Plan("", 0, {}, set())
        #: Projects whose JSON API answered 404 without the upstream's word for a removal:
        #: name -> why it fails (None: nothing to fail, the mirror never held it).
        self._not_found: dict[str, str | None] = {}
        #: Projects the upstream answered for (synced, filtered, failed otherwise, removed).
        self._answered = 0
        #: Set when every project asked was answered with 404 (raised at the end).
        self._knows_none: str | None = None
        #: A resumed XML-RPC run: the changelog span (status, todo target) its todo came from,
        #: and (asked once, when a 404 needs it) the removals that span holds.
        self._earlier_span: tuple[int, int] | None = None
        self._earlier_removals: set[str] | None = None

    @classmethod
    def from_config(cls, loaded: Config, retry: RetryPolicy | None = None) -> Mirror:
        """The mirror a configuration describes: its upstream, storage, filters and
        dependency policy. The one place they are built (the CLI and the tests use it);
        :meth:`close` the mirror when done. ``retry``: how the upstream retries (tests
        pass a fast one)."""
        config = loaded.mirror
        filters = FilterSet.from_config(loaded.parser)
        dependencies = DependencyPolicy.from_config(loaded.parser)
        if filters.active:
            logger.debug("Filters enabled: %s", ", ".join(filters.active))
        if dependencies is not None and filters.allowlist() is None:
            raise ConfigError(
                f"[allowlist] {'resolve-build-dependencies' if dependencies.build else 'resolve-dependencies'} = true "
                "needs an allowlist "
                "(allowlist_project or project_requirements with packages listed)"
            )
        return cls(config, Upstream.from_config(config, retry), storage_from_config(loaded), filters, dependencies)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The run lock: the backend's own when it has one (a bucket's lock object), else
        :func:`mirror_lock` on the mirror directory."""
        own = getattr(self.storage, "lock", None)
        return own() if callable(own) else mirror_lock(self.config.directory)

    def close(self) -> None:
        """Close the upstream's connections."""
        self.upstream.close()

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the two entry points ----------------------------------------------------------
    def run(self, force_check: bool = False, cleanup_todo: bool = False, allow_mass_removal: bool = False) -> Report:
        """The ``mirror`` command: sync everything that changed since the last run.

        Raises :class:`UnsafeListing` (nothing touched) when the listing would remove more
        projects than ``max-removals`` allows, unless ``allow_mass_removal``.
        """
        report = self.report
        self.allow_mass_removal = allow_mass_removal
        auto = self.config.api_method == "auto"
        start = self.state.start(force_check, cleanup_todo, self.upstream.master if auto else None)
        known = _Records(self.state)  # read only if discovery needs it: a no-change run does not
        if self.dependencies is not None:
            self.filters = self.filters.with_allowed(known)  # dependencies found by earlier runs stay mirrored
        report.serial = start.status  # what the summary says if the run stops early
        # An unfinished run (killed, or with projects that failed) left ``todo``: everything
        # up to its target was discovered already, so resume its projects and ask only for
        # what changed since. The status serial stays where it was until nothing is left.
        todo = start.todo
        resuming = todo is not None and (todo.target > start.status or bool(todo.projects))
        if todo is not None and resuming:
            self._drop_excluded(todo)
            logger.info(
                "Resuming an unfinished run: %s left%s", plural(len(todo.projects), "project"),
                f" towards serial {todo.target}" if todo.target else "",
            )

        validators = self.state.read_validators()

        def ask() -> Plan:
            return discover(
                self.upstream,
                self.config.api_method,
                start.since,
                known,
                self.filters.allows_name,
                self.filters.allowlist(),
                # resuming a first run: what it synced is known now
                start.full or start.compare or not (start.since or resuming),
                start.remembered if start.fresh else "",
                validators,
            )

        plan = ask()
        if plan.exact_target and self.state.distrust_ahead(start, plan.target):
            plan = ask()  # from where the mirror's serials can be believed
        if start.compare and not start.full:  # status not believed: the records say what changed
            plan.projects = self.state.behind_records(plan.projects)
        status, todo, since, full = start.status, start.todo, start.since, start.full
        remembered, fresh = start.remembered, start.fresh
        report.method, removed = plan.method, plan.removed
        self._word = plan
        if plan.listed is None and plan.method == "xmlrpc" and since > status:
            self._earlier_span = (status, since)
        if removed and not allow_mass_removal:
            self._check_removals(plan.method, removed, len(known))
        for name, reason in plan.rejected.items():
            report.failed[name] = f"refused: {reason}"
        target = max(plan.target, since)
        recovered = self.retry_sidecars(self.config.workers, always=full)  # served now: pages to rewrite
        self._listed = {canonicalize_name(name): name for name in plan.projects}
        work = _merge(todo.projects if todo else {}, plan.projects, dict.fromkeys(recovered, 0))
        report.serial = target
        if auto and (plan.method != remembered or not fresh):
            self._remember_method(plan, changed=plan.method != remembered)
        if not work and not removed and target == status and self.storage.exists("status") and not self.state.repaired:
            logger.debug("Nothing to do: the mirror is at serial %d", status)
            self.write_diff_file()  # empty: this run wrote nothing
            self._keep_validators(plan)
            return report

        logger.info(
            "%s to sync%s via %s%s",
            plural(len(work), "project"), f", {len(removed)} to remove" if removed else "", plan.method,
            f", towards serial {target}" if target else "",
        )
        self.state.write_generation()
        todo = Todo(target, work)
        self.state.write_todo(todo)
        self._keep_validators(plan, root=False)  # the listing's only once all it asked for is done
        for canonical in sorted(removed):
            logger.info("%s: gone from the upstream listing; removing it from the index", canonical)
            self._unpublish(canonical)
        self._pin_dependencies()
        self._sync(todo)
        self._sync_dependencies(todo, set(work))
        self._settle_not_found(every_404_is_unusable=True)
        self._raise_stop_reason()

        if not plan.exact_target:  # serials were learnt from the projects themselves
            target = max(target, self._highest_serial)
        report.serial = target
        self._write_root(target)
        if not todo.projects:
            self.state.write_status(target)
            self.state.remove_todo()
            if not report.gone:  # a project removed while still listed comes back with the whole listing
                self._keep_validators(plan)
        else:
            # todo holds what failed or was never started (after a stop): the next run
            # retries those together with what changed after ``target``; status stays put.
            # The target may have grown from the projects' own serials (a first run that
            # asked no listing for serials starts at 0): without it the next run would see
            # no progress and sync everything again.
            todo.target = target
            self.state.write_todo(todo)
        report.left = len(todo.projects)
        if not report.failed and not self._stopped:
            self.storage.write_bytes(layout.LAST_MODIFIED, report.started_at.strftime("%Y%m%dT%H:%M:%S\n").encode())
        self.write_diff_file()
        return report

    def _drop_excluded(self, todo: Todo) -> None:
        """Take out of an unfinished run's ``todo`` the names today's filters exclude, before any
        request: a fixed typo in an allowlist must not leave a run asking for the whole index.
        What such a run already mirrored stays (``bandersnatch delete`` removes it).

        With resolve-dependencies the todo may hold dependencies that failed, which are outside
        the allowlists by nature: there only the other project filters (blocklists) decide."""
        allows = self.filters.allows_name if self.dependencies is None else self.filters.allows_dependency
        excluded = [name for name in todo.projects if not allows(name)]
        for name in excluded:
            del todo.projects[name]
        if excluded:
            logger.info(
                "Dropped %s the filters now exclude from the unfinished run's todo",
                plural(len(excluded), "project"),
            )

    def _check_removals(self, method: str, removed: set[str], mirrored: int) -> None:
        """Refuse a listing that would remove too much of the mirror: an outage page, a broken proxy."""
        limit = self.config.removal_limit(mirrored)
        if len(removed) <= limit and len(removed) < mirrored:
            return
        examples = ", ".join(sorted(removed)[:5]) + (", ..." if len(removed) > 5 else "")
        if len(removed) == mirrored:
            why = f"it lists none of the mirror's {mirrored} projects ({examples})"
        else:
            why = (
                f"it lacks {len(removed)} of the mirror's {mirrored} projects ({examples}), more than "
                f"max-removals = {self.config.max_removals} allows in one run ({limit})"
            )
        raise UnsafeListing(
            f"refusing the upstream's listing (via {method}): {why}; nothing was removed or synced. "
            "If the upstream really deleted them, run once with `bandersnatch mirror --allow-mass-removal`"
        )

    def _keep_validators(self, plan: Plan, root: bool = True) -> None:
        """Keep the validators of the pages this plan came from, for conditional requests
        next run: the mirrored projects' (their serials are compared with the records, so a
        304 never hides a change), and with ``root`` the listing's. A 304 for the listing
        says nothing changed since it was read, so it is kept only when everything that
        listing asked for is done (after todo is written is not enough)."""
        if plan.validators or self.storage.exists(VALIDATORS_FILE):
            known = self.state.projects
            self.state.write_validators({k: v for k, v in plan.validators.items() if (root and k == ROOT) or k in known})

    def _remember_method(self, plan: Plan, changed: bool) -> None:
        """Note which method worked, so that the next runs ask for it first (one request, not three)."""
        tried = "; ".join(f"{m} unavailable: {why}" for m, why in plan.unavailable.items())
        logger.log(logging.INFO if changed else logging.DEBUG, "Upstream method: %s%s", plan.method, f" ({tried})" if tried else "")
        self.state.remember_method(plan.method, self.upstream.master)

    def sync_projects(self, names: Iterable[str], write_root: bool = True) -> Report:
        """The ``sync`` command: sync the named projects now; ``status`` and ``todo`` stay."""
        if self.dependencies is not None:
            self.filters = self.filters.with_allowed(_Records(self.state))  # dependencies found by earlier runs
        work = {canonicalize_name(n): 0 for n in names if self.filters.allows_name(n)}
        todo = Todo(self.state.status, work)
        self.report.serial = todo.target
        self._pin_dependencies()
        self._sync(todo, checkpoint=False)
        self._sync_dependencies(todo, set(work), checkpoint=False)
        self._settle_not_found(every_404_is_unusable=False)
        self._raise_stop_reason()
        if write_root:
            self._write_root(self.state.status)
        else:
            self.state.save_projects()
        return self.report

    def _pin_dependencies(self) -> None:
        """Before the first sync: read the edges earlier runs found, so that a dependency
        synced again (it changed upstream) keeps the releases they need."""
        if self.dependencies is None:
            return
        self._edges, self._versions = self.state.read_dependencies()
        self._pins(self._needs())

    def _needs(self) -> list[tuple[str, Requirement, Edge]]:
        """Every edge of every mirrored project whose markers hold, as (requirer, requirement,
        edge), with the extras the allowlists and the edges themselves ask for."""
        assert self.dependencies is not None
        extras = self.filters.extras()  # requests[socks] in the allowlist: PySocks too
        while True:
            needs = [
                (name, req, edge)
                for name, edges in sorted(self._edges.items())
                if name in self.state.projects
                for req, edge in self.dependencies.needed(edges, extras.get(name, ()))
            ]
            grown = False
            for _, req, _ in needs:
                dep = canonicalize_name(req.name)
                if not req.extras <= extras.get(dep, set()):
                    extras.setdefault(dep, set()).update(req.extras)
                    grown = True  # more extras asked of a project: look at its requirements again
            if not grown:
                return needs

    def _pins(self, needs: list[tuple[str, Requirement, Edge]]) -> dict[str, frozenset[str]]:
        """Give the filters the specifiers the edges put on each project; return them."""
        from packaging.specifiers import SpecifierSet

        pins: dict[str, set[str]] = {}
        for _, req, _ in needs:
            if req.specifier:
                pins.setdefault(canonicalize_name(req.name), set()).add(str(req.specifier))
        self.filters = self.filters.with_pins({d: [SpecifierSet(s) for s in sorted(v)] for d, v in pins.items()})
        return {d: frozenset(v) for d, v in pins.items()}

    def _satisfied(self, dep: str, specifiers: frozenset[str]) -> bool:
        """Whether the versions ``dep`` keeps satisfy every specifier (unknown versions: no)."""
        from packaging.specifiers import SpecifierSet

        versions = self._versions.get(dep)
        if versions is None:
            return False
        return all(satisfying(SpecifierSet(s), versions) for s in specifiers)

    def _sync_dependencies(self, todo: Todo, attempted: set[str], checkpoint: bool = True) -> None:
        """Sync, round after round, what the edges of what is mirrored need: projects not
        mirrored yet, and mirrored ones whose kept releases satisfy no release an edge asks
        for (synced again with the edges' specifiers). Then say what nothing can satisfy."""
        if self.dependencies is None:
            return
        resynced: dict[str, frozenset[str]] = {}
        while True:
            needs = self._needs()
            pins = self._pins(needs)
            wanted = sorted({canonicalize_name(req.name) for _, req, _ in needs})
            allowed = [d for d in wanted if self.filters.allows_dependency(d)]
            new = [d for d in allowed if d not in attempted and d not in self.state.projects]
            again = [
                d for d in allowed
                if d in self.state.projects and d in pins and resynced.get(d) != pins[d] and not self._satisfied(d, pins[d])
            ]
            if not new and not again:
                break
            if new:
                logger.info("Dependencies: %d more projects to mirror: %s", len(new), ", ".join(new[:20]))
            if again:
                logger.info(
                    "Dependencies: %d projects to sync again for releases their dependents need: %s",
                    len(again), ", ".join(again[:20]),
                )
            self._save_dependencies()  # a run killed in a round keeps the edges found so far
            attempted.update(new)
            resynced.update((d, pins[d]) for d in again)
            self.filters = self.filters.with_allowed(new)  # workers started from here on see them
            round_ = Todo(todo.target, dict.fromkeys(new + again, 0))
            todo.projects.update(round_.projects)
            if checkpoint:
                self.state.write_todo(todo)
            self._sync(round_, checkpoint=False)
            for name in set(new + again) - round_.projects.keys():  # finished; what failed stays in todo
                todo.projects.pop(name, None)
        self._report_unsatisfied(needs)
        self._save_dependencies()

    def _save_dependencies(self) -> None:
        """Write dependencies.json: the edges and kept versions of the mirrored projects."""
        mirrored = self.state.projects
        self.state.write_dependencies(
            {k: v for k, v in self._edges.items() if k in mirrored}, {k: v for k, v in self._versions.items() if k in mirrored}
        )

    def _report_unsatisfied(self, needs: list[tuple[str, Requirement, Edge]]) -> None:
        """Say once each edge nothing can satisfy, with the chain of edges that reached it."""
        failed = {canonicalize_name(n) for n in self.report.failed}
        via: dict[str, tuple[Requirement, Edge, str]] = {}
        for requirer, req, edge in needs:
            via.setdefault(canonicalize_name(req.name), (req, edge, requirer))

        def chain(requirer: str, seen: frozenset[str]) -> str:
            if self.filters.is_listed(requirer) or requirer in seen or requirer not in via:
                return ""
            req, edge, up = via[requirer]
            return f" <- {describe(req)}, {edge.describe()}" + chain(up, seen | {requirer})

        lines: list[str] = []
        for requirer, req, edge in needs:
            dep = canonicalize_name(req.name)
            if not self.filters.allows_dependency(dep) or dep in failed:
                continue  # blocklisted: never pulled in; failed: said already, retried next run
            if dep in self.report.gone:
                why = "the upstream has no such project"
            elif dep in self._skipped:
                why = "the filters drop the whole project"
            elif dep in self.state.projects and req.specifier and not satisfying(req.specifier, self._versions.get(dep, [])):
                why = f"no release of {dep} satisfies it with a file the filters keep"
            else:
                continue
            lines.append(f"{describe(req)}, {edge.describe()}{chain(requirer, frozenset())}: {why}")
        for line in sorted(set(lines)):
            logger.warning("%s", line)
            self.report.unsatisfied.append(line)

    # -- running the workers -------------------------------------------------------------
    def _sync(self, todo: Todo, checkpoint: bool = True) -> None:
        """Sync every project of ``todo``; failures end up in the report, not as exceptions.

        Finished projects are removed from ``todo.projects``; what is left at the end
        failed, or was never started because the run stopped.
        """
        if self._stopped:
            return  # stop-on-error or a local I/O error: no new work, not even dependencies
        records = self.state.projects  # loaded before forking, so that every worker inherits it
        items: list[Item] = [(name, serial, self._display_name(name, records)) for name, serial in todo.projects.items()]
        processes = _process_count(self.config.workers, len(items))
        context = multiprocessing.get_context("fork") if processes > 1 else None
        stop = context.Event() if context else threading.Event()
        results: Any = context.Queue() if context else queue.SimpleQueue()
        runners = self._start(items, processes, context, stop, results)
        last_checkpoint = time.monotonic()
        finished: list[str] = []
        running = len(runners)
        report, done = self.report, 0
        files, size = report.files, report.bytes
        progress = Progress(len(items), self.config.progress_interval)
        interrupted = False
        while running:
            try:
                if not self._stopped and self._lock_lost() is not None:
                    self._stopped = True  # the storage refuses the workers' writes now: start nothing new
                    stop.set()
                try:
                    result = results.get(timeout=1.0)
                except queue.Empty:
                    progress.update(done, report.files - files, report.bytes - size)
                    if any(r.is_alive() for r in runners):
                        continue
                    try:  # every worker is gone, some without saying so: take what they left
                        result = results.get(timeout=0.1)
                    except queue.Empty:
                        break
                if isinstance(result, Exited):
                    running -= 1
                    continue
                if self._apply(result, stop):
                    finished.append(result.name)
                done += 1
                progress.update(done, report.files - files, report.bytes - size)
                if checkpoint and finished and time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                    self._checkpoint(todo, finished)
                    finished, last_checkpoint = [], time.monotonic()
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the workers finish what they hold, nothing new
                if interrupted:
                    raise  # a second one: leave now
                interrupted = self._stopped = True
                self.report.stopped = self.report.stopped or "interrupted"
                stop.set()
        progress.close()
        for runner in runners:
            runner.join()
        lost = self._lock_lost()
        if lost is not None:
            raise lost
        if checkpoint:
            self._checkpoint(todo, finished)
        else:
            for name in finished:
                todo.projects.pop(name, None)
            self.sidecars.save()
        for runner in runners:
            if getattr(runner, "exitcode", 0):
                logger.error("A worker process ended with status %s; its unfinished projects stay in todo", runner.exitcode)
        if interrupted:
            raise KeyboardInterrupt

    def _start(self, items: list[Item], processes: int, context: Any, stop: Any, results: Any) -> list[Any]:
        """Start the workers: one thread in this process, or ``processes`` forked ones."""
        if context is None:
            worker = self._worker(self.config.workers, results.put, stop)
            thread = threading.Thread(target=run_worker, args=(worker, items), name="worker", daemon=True)
            thread.start()
            return [thread]
        share, extra = divmod(self.config.workers, processes)
        cursor = SharedCursor(items, context)
        gc.freeze()  # the workers inherit the parent's objects: keep the collector off their pages
        runners = []
        for index in range(processes):
            worker = self._worker(share + (index < extra), results.put, stop)
            process = context.Process(target=run_worker_process, args=(worker, cursor))
            process.start()
            runners.append(process)
        logger.debug("Syncing %d projects in %d worker processes", len(items), processes)
        return runners

    def _worker(self, threads: int, emit: Any, stop: Any) -> Worker:
        """A worker with the filter set in force now (dependencies widen it between rounds)."""
        return Worker(self.config, self.upstream, self.storage, self.filters, self.dependencies, threads, emit, stop)

    def _display_name(self, canonical: str, records: Mapping[str, tuple[str, int]]) -> str:
        """The name to ask the upstream for: the recorded or listed display name, else canonical."""
        record = records.get(canonical)
        return record[0] if record is not None else self._listed.get(canonical, canonical)

    def _apply(self, result: Result, stop: Any) -> bool:
        """Apply one worker result; return True when the project is done with (not failed)."""
        report = self.report
        if isinstance(result, (Synced, Skipped, Failed)):
            self._answered += 1
        if isinstance(result, Synced):
            self.state.record(result.canonical, result.display, result.serial)
            self.sidecars.set(result.canonical, result.missing)
            if self.dependencies is not None:
                self._edges[result.canonical] = result.requires
                self._versions[result.canonical] = result.versions
            self._highest_serial = max(self._highest_serial, result.serial)
            report.synced += 1
            report.files += result.files
            report.bytes += result.bytes
            if self.config.diff_file:
                report.written += result.written
            if self.config.cleanup:
                self._remove_legacy_dirs(result.display, result.canonical)
        elif isinstance(result, Skipped):
            report.skipped += 1
            self.sidecars.forget(canonicalize_name(result.name))
            self._skipped.add(canonicalize_name(result.name))
        elif isinstance(result, Gone):
            return self._apply_gone(result, stop)
        elif isinstance(result, Unfinished):
            return False  # stays in todo
        elif isinstance(result, LocalError):
            self.local_error = self.local_error or result.kind(result.reason)
            self._stopped = True
            report.stopped = report.stopped or "local I/O error"
            stop.set()
            return False
        elif isinstance(result, Failed):
            report.failed[result.name] = result.reason
            logger.error("%s: failed: %s", result.name, result.reason)
            if self.config.stop_on_error and not self._stopped:
                logger.error("Stopping at the first failure (stop-on-error = true)")
                self._stopped = True
                report.stopped = report.stopped or "stop-on-error = true and a project failed"
                stop.set()
            return False
        return True

    def _apply_gone(self, result: Gone, stop: Any) -> bool:
        """A project whose JSON API answered 404: a removal only on the upstream's word.

        The changelog removing it, or the listing no longer naming it, is that word; a 404
        alone is not (a proxy, a broken API, a name the API spells differently). Otherwise a
        project the listing names, or the mirror holds, fails and stays in todo.
        """
        canonical = result.canonical
        self.report.gone.add(canonical)
        held = canonical in self.state.projects or layout.is_mirrored(self.storage, canonical, self.config.hash_index)
        asked = " and ".join(result.asked) or result.name
        if self._removal_is_said(canonical):
            self._answered += 1
            if not held:
                return True
            if not self._may_remove(stop):
                return False  # stays in todo
            logger.info("%s: deleted upstream; removing it from the index", result.name)
            self._unpublish(canonical)
            return True
        if self._word.listed is not None:
            why: str | None = f"the upstream lists it but its JSON API answers 404 (asked as {asked})"
        elif held:
            why = (
                f"the upstream's JSON API answers 404 (asked as {asked}), but neither its listing nor its "
                "changelog says it was removed: the mirror keeps it (`bandersnatch delete` removes it)"
            )
        else:
            self._not_found[result.name] = None  # never mirrored: nothing to fail or remove
            return True
        self._not_found[result.name] = why
        if self.config.stop_on_error and not self._stopped:
            logger.error("Stopping at the first failure (stop-on-error = true): %s: %s", result.name, why)
            self._stopped = True
            stop.set()
        return False  # stays in todo

    def _removal_is_said(self, canonical: str) -> bool:
        """Whether the upstream's listing or changelog says ``canonical`` was removed; for a
        resumed run, the changelog its todo came from counts too (asked once, when needed)."""
        if self._word.removal_is_said(canonical):
            return True
        if self._earlier_span is None:
            return False
        if self._earlier_removals is None:
            try:
                _changed, self._earlier_removals = self.upstream.changelog_since(*self._earlier_span)
            except UpstreamError as exc:  # no word, then: the project fails and is asked again next run
                logger.warning("Could not read the changelog again to tell removals from failures: %s", exc)
                self._earlier_removals = set()
        return canonical in self._earlier_removals

    def _settle_not_found(self, every_404_is_unusable: bool) -> None:
        """At the end of the syncing: the projects answered with 404 fail, named (or, for names
        the mirror never held, are warned about when allowlisted). When every project asked was
        a 404, the upstream may be unusable instead (``mirror`` only; ``sync`` names each)."""
        if not self._not_found:
            return
        allowlist = self.filters.allowlist()
        # Nothing but 404s is an unusable upstream when the mirror holds nothing it ever answered
        # for (a wrong master or allowlist), or when it denies more of what it lists or the
        # mirror holds than max-removals would let go (a proxy that does not forward the JSON
        # API). One project denied, or an allowlisted name it lacks, is that project's failure
        # or a warning.
        held = len(self.state.projects)
        denied = sum(why is not None for why in self._not_found.values())
        too_many = not held or denied > self.config.removal_limit(held)
        if every_404_is_unusable and not self._answered and too_many:
            names = sorted(self._not_found)
            examples = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            also = " and the allowlist's names" if allowlist is not None else ""
            self._knows_none = (
                f"the upstream's JSON API answers 404 for every project asked ({len(names)}: {examples}); "
                f"nothing was removed; check [mirror] master = {self.upstream.master}{also}"
            )
            self._stopped = True
            return
        for name, why in sorted(self._not_found.items()):
            if why is not None:
                self.report.failed[name] = why
                logger.error("%s: failed: %s", name, why)
            elif allowlist is not None and self.filters.is_listed(canonicalize_name(name)):
                logger.warning("%s: allowlisted, but the upstream has no such project; check its spelling", name)

    def _unpublish(self, canonical: str) -> None:
        """Take a project the upstream no longer has out of the index (files stay unless
        ``delete_missing_packages``)."""
        self.report.written += self.remove_project(canonical, files=self.config.delete_missing_packages)
        self.report.removed += 1

    def _may_remove(self, stop: Any) -> bool:
        """Whether one more project the upstream answers 404 for may be removed in this run.

        An upstream that answers 404 for everything (a proxy that does not forward the JSON
        API, say) must not empty the mirror project by project: past ``max-removals`` the run
        stops, removes nothing more, and exits 4.
        """
        if self._removal_limit is None:
            self._removal_limit = self.config.removal_limit(len(self.state.projects) + self.report.removed)
        if self.allow_mass_removal or self.report.removed < self._removal_limit:
            return True
        if self._refused is None:
            self._refused = (
                f"the upstream removes more of the mirror's projects (its JSON API answers 404, its changelog or "
                f"listing agrees) than max-removals = {self.config.max_removals} allows in one run "
                f"({self._removal_limit}); the run stopped and removed no more (they stay in todo). If the upstream "
                "really deleted them, run once with `bandersnatch mirror --allow-mass-removal`"
            )
            self._stopped = True
            self.report.stopped = self.report.stopped or "too many projects answered 404 (max-removals)"
            stop.set()
        return False

    def _raise_stop_reason(self) -> None:
        """After a local I/O error, too many removals or nothing but 404s, keep what was done
        (root index, records; todo is kept) and stop."""
        lost = self._lock_lost()
        if lost is not None:
            raise lost  # the storage refuses every write now
        if self.local_error is None and self._refused is None and self._knows_none is None:
            return
        with contextlib.suppress(LocalIOError):  # the disk that failed may refuse this too
            self._write_root(self.state.status)
        with contextlib.suppress(LocalIOError):
            self.state.save_projects()
        if self.local_error is not None:
            raise self.local_error
        if self._refused is not None:
            raise UnsafeListing(self._refused)
        raise UpstreamKnowsNone(self._knows_none)

    def _lock_lost(self) -> LocalIOError | None:
        """Why this run can no longer prove that it holds its lock (a leased lock on a bucket
        that was taken over, or not renewed in time), or None."""
        check = getattr(self.storage, "lock_lost", None)
        return check() if callable(check) else None

    def _checkpoint(self, todo: Todo, finished: list[str]) -> None:
        """Record finished projects: their records first, then the shorter todo."""
        self.state.save_projects()
        self.sidecars.save()
        for name in finished:
            todo.projects.pop(name, None)
        self.state.write_todo(todo)
        self.report.left = len(todo.projects)

    # -- single projects, for verify and delete ---------------------------------------------
    def publish(self, project: Project) -> list[str]:
        """Write a project's pages from ``project`` (already filtered) and record it."""
        written = publish(project, self.config, self.storage)
        self.state.record(project.canonical, project.name, project.serial)
        return written

    def remove_project(
        self, canonical: str, files: bool, project: Project | None = None, dry_run: bool = False
    ) -> list[str]:
        """Remove a project from the mirror (see :func:`layout.remove_project`) and forget it."""
        removed = layout.remove_project(self.storage, canonical, self.config.hash_index, files, project, dry_run)
        if not dry_run:
            self.state.forget(canonical)
            self.sidecars.forget(canonical)
        return removed

    def retry_sidecars(self, workers: int, always: bool = False) -> set[str]:
        """Ask the upstream again for the ``.metadata`` files it did not serve; return the
        projects that now have all theirs (their pages need rewriting)."""
        return self.sidecars.retry(self.upstream, workers, always=always)

    # -- end of run ----------------------------------------------------------------------
    def write_root(self) -> None:
        """Rewrite the root index from the project records, and save the records (after ``delete``)."""
        self._write_root(self.state.status)
        self.sidecars.save()

    def _write_root(self, serial: int) -> None:
        """Render the root index from the project records (never from a directory scan)."""
        write_html = self.config.write_html and (
            self.state.names_changed or not self.storage.exists(layout.ROOT_HTML[0])
        )
        records = self.state.projects.rows() if write_html or self.config.write_json else []
        if write_html:
            html = pages.root_html(records).encode()
            for path in layout.ROOT_HTML:
                if self.storage.write_if_changed(path, html):
                    self.report.written.append(path)
        if self.config.write_json:
            page = pages.root_json(records, serial).encode()
            if self.storage.write_if_changed(layout.ROOT_JSON, page):
                self.report.written.append(layout.ROOT_JSON)
        self.state.save_projects()

    def _remove_legacy_dirs(self, display: str, canonical: str) -> None:
        """``cleanup = true``: remove the project's page directories of bandersnatch before 4.0
        (non-normalized names), as the reference tool does for each project it syncs. One that
        is the current directory under another spelling (a case-insensitive file system) stays."""
        current = layout.simple_dir(canonical, self.config.hash_index)
        for legacy in layout.legacy_dirs(display, self.config.hash_index):
            if not self.storage.exists(legacy) or _same_dir(self.storage, legacy, current):
                continue
            self.storage.delete_tree(legacy)
            logger.info("%s: removed the legacy page directory %s (cleanup = true)", display, legacy)

    def write_diff_file(self) -> None:
        """``diff-file``, after a ``mirror`` or ``sync`` run (not the syncs of ``verify
        --json-update``): the paths the run wrote, one per line, replacing the last run's list
        (a run that wrote nothing leaves it empty), as the reference tool does; offline-copy
        scripts feed it to ``rsync --files-from``. ``diff-append-epoch``: a new file per run,
        ``<diff-file>-<unix time>``. Written to a temporary name and renamed into place, so a
        reader never sees half a list."""
        if not self.config.diff_file:
            return
        path = self.config.diff_file
        if self.config.diff_append_epoch:
            path = f"{path}-{int(time.time())}"
        lines = "".join(f"{self.storage.display(p)}\n" for p in sorted(set(self.report.written)))
        temporary = f"{path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as fh:
                fh.write(lines)
            os.replace(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise LocalIOError.of(path, exc) from exc


class _Records(Mapping[str, tuple[str, int]]):
    """The mirror's project records, read from disk on first use."""

    def __init__(self, state: MirrorState) -> None:
        self._state = state

    def __getitem__(self, key: str) -> tuple[str, int]:
        return self._state.projects[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state.projects)

    def __len__(self) -> int:
        return len(self._state.projects)


def _same_dir(storage: Storage, one: str, other: str) -> bool:
    """Whether two mirror paths are one directory (on a case-insensitive file system);
    never for object storage, whose keys are case-sensitive."""
    try:
        return os.path.samefile(storage.display(one), storage.display(other))
    except (OSError, ValueError):
        return False


def _process_count(workers: int, projects: int) -> int:
    """How many worker processes: one per core, never more than threads or than useful."""
    if not hasattr(os, "fork"):
        return 1
    return max(1, min(os.cpu_count() or 1, workers, projects // MIN_PROJECTS_PER_PROCESS))


def _merge(*works: dict[str, int]) -> dict[str, int]:
    """Union of project -> serial maps by canonical name, keeping the highest serial."""
    merged: dict[str, int] = {}
    for work in works:
        for name, serial in work.items():
            canonical = canonicalize_name(name)
            merged[canonical] = max(merged.get(canonical, 0), serial)
    return merged
