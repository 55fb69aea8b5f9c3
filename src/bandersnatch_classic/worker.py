"""A sync worker: a pool of threads over projects and their files, reporting typed results.

A :class:`Worker` runs two kinds of task: *project* tasks fetch a project's metadata,
filter it and plan its downloads; *file* tasks download one file each. A project's pages
are written by whichever task finishes its last file, so the files of one project
download in parallel and no thread ever waits on another.

A worker runs in a thread of the main process or in a forked process. Either way it
changes nothing but the files it writes: it reports what became of each project as one
of the small result types below, through one queue, and only the main process applies
them (:mod:`bandersnatch_classic.applier`: project records, the report, ``todo``
checkpoints, removals, stop-on-error). A write by a forked
worker to the mirror's records would be lost when the process ends.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from .config import MirrorConfig
from .dependencies import DependencyPolicy, Edge, requirements_of
from .errors import HashMismatch, LocalIOError, NotServed, ProjectGone, UnsafePath, UpstreamError
from .filters import FilterSet
from .models import Project, check_project_name
from .package import Download, check_name_fits, plan_downloads, publish, unserved_metadata
from .progress import in_worker_process, plural
from .sidecars import Sidecar, sidecars_of
from .storage import Storage
from .upstream import Upstream

logger = logging.getLogger(__name__)

#: What fails one project and nothing more: the upstream's answer or its data (a name, a
#: path, a document it cannot be mirrored from). Any other exception is a bug: the run
#: stops starting new work and exits 70 (:class:`Crashed`), never "project failed".
PROJECT_FAILURES = (UpstreamError, UnsafePath)

#: One project to sync: (canonical name, serial wanted, the name to ask the upstream for).
Item = tuple[str, int, str]


@dataclass(frozen=True)
class Synced:
    """The project's files and pages are in place at ``serial``."""

    name: str
    canonical: str
    display: str
    serial: int
    files: int
    bytes: int
    written: list[str] = field(default_factory=list)
    #: Requirement edges of the kept releases (resolve-dependencies only).
    requires: list[Edge] = field(default_factory=list)
    #: ``.metadata`` sidecars the upstream advertises but did not serve.
    missing: list[Sidecar] = field(default_factory=list)
    #: The versions the mirror keeps (resolve-dependencies only: what the edges into it can use).
    versions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Skipped:
    """The filters drop the whole project."""

    name: str


@dataclass(frozen=True)
class Gone:
    """The upstream's JSON API answers 404 for the project, however it was asked.

    The main process decides what that means: a removal when the upstream's listing or
    changelog says so too (within max-removals), else a failure.
    """

    name: str
    canonical: str
    #: The spellings asked, in order (the display name, then the normalized one).
    asked: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failed:
    """The project failed (the upstream, its data); it is retried next run."""

    name: str
    reason: str


@dataclass(frozen=True)
class LocalError:
    """A local I/O error (disk full, permission...) stopped the project and, with it, the run."""

    name: str
    reason: str
    #: Which kind (a storage server's error, a lost lock): the run's one line says so.
    kind: type[LocalIOError] = LocalIOError


@dataclass(frozen=True)
class Crashed:
    """An exception the code does not expect (a bug) stopped the project: the run starts
    nothing new and exits 70. ``details`` is the traceback, as text so that it crosses
    from a worker process."""

    #: The project, or "" for a bug outside any one project's tasks.
    name: str
    details: str


@dataclass(frozen=True)
class Unfinished:
    """The run stopped before the project's downloads were done (not a failure)."""

    name: str


@dataclass(frozen=True)
class Exited:
    """The worker has reported everything it took and stopped."""


Result = Union[Synced, Skipped, Gone, Failed, LocalError, Crashed, Unfinished, Exited]


class Job:
    """One project in flight: its metadata and how many of its downloads are still open."""

    def __init__(self, name: str, serial: int, asked: str) -> None:
        self.name = name
        self.serial = serial
        #: The spelling the upstream is asked for: its display name where known, since the
        #: JSON API answers any other spelling with a redirect (a round trip per project).
        self.asked = asked
        self.project: Project | None = None
        self.pending = 0
        self.files = 0
        self.bytes = 0
        self.written: list[str] = []
        #: ``.metadata`` sidecars the upstream did not serve (paths below the mirror).
        self.missing: list[str] = []
        #: Why the first of them was not served (the one WARNING line per project says it).
        self.missing_reason = ""
        self.error: str | None = None
        self.local_error: LocalIOError | None = None
        #: The traceback of an exception no one expected in one of its downloads.
        self.bug: str | None = None
        self.unfinished = False


class Worker:
    """Syncs a list of projects with a pool of threads, reporting each one through ``emit``."""

    def __init__(
        self,
        config: MirrorConfig,
        upstream: Upstream,
        storage: Storage,
        filters: FilterSet,
        dependencies: DependencyPolicy | None,
        threads: int,
        emit: Callable[[Result], None],
        stop: Any,
    ) -> None:
        self.config = config
        self.upstream = upstream
        self.storage = storage
        self.filters = filters
        self.dependencies = dependencies
        self.threads = threads
        self.emit = emit
        self.stop = stop
        self._lock = threading.Lock()
        self._capacity = threads * 4  # projects in flight, bounding memory
        self._slots = threading.Semaphore(self._capacity)
        self._pool: ThreadPoolExecutor | None = None

    def run(self, items: Iterable[Item]) -> None:
        pending = iter(items)
        with ThreadPoolExecutor(self.threads, thread_name_prefix="sync") as pool:
            self._pool = pool
            while True:
                # A slot first, then a project: with a shared cursor, a project taken
                # before a thread is free for it would wait here while another process idles.
                self._slots.acquire()
                item = None if self.stop.is_set() else next(pending, None)
                if item is None:
                    self._slots.release()
                    break
                pool.submit(self._project_task, Job(*item))
            # Every project gives its slot back once reported: holding them all means the
            # last one is done, and no task will submit to the pool after it shuts down.
            for _ in range(self._capacity):
                self._slots.acquire()

    def _report(self, result: Result) -> None:
        self.emit(result)
        self._slots.release()

    def _project_task(self, job: Job) -> None:
        try:
            canonical = check_project_name(job.name)
            check_name_fits(job.name)
            project = self._fetch_project(job, canonical)
            if project is None:
                return
            if check_project_name(project.name) != canonical:
                raise UnsafePath(f"the upstream answered for {job.name!r} with project {project.name!r}")
            if not self.filters.filter_project(project):
                logger.debug("%s: dropped by filters", job.name)
                self._report(Skipped(job.name))
                return
            job.project = project
            downloads = plan_downloads(project, self.config, self.storage)
        except LocalIOError as exc:
            self._stop_local(job, exc)
            return
        except PROJECT_FAILURES as exc:
            self._report(Failed(job.name, reason(exc)))
            return
        except Exception:  # a bug; reported all the same, or the run never ends
            self._crash(job, traceback.format_exc())
            return
        if not downloads:
            self._finish(job)
            return
        job.pending = len(downloads)
        assert self._pool is not None
        for download in downloads:
            self._pool.submit(self._file_task, job, download)

    def _fetch_project(self, job: Job, canonical: str) -> Project | None:
        """The project's JSON API document; on a 404 for a display name, asked again by the
        normalized name (as some upstreams answer only that). None when both say 404: it is
        reported as :class:`Gone`."""
        asked = [job.asked]
        if job.asked != canonical:
            asked.append(canonical)
        for spelling in asked:
            try:
                return self.upstream.project(spelling, job.serial)
            except ProjectGone:
                logger.debug("%s: the upstream's JSON API answers 404 for %r", job.name, spelling)
        self._report(Gone(job.name, canonical, tuple(asked)))
        return None

    def _file_task(self, job: Job, download: Download) -> None:
        if job.error is None and not self.stop.is_set():
            try:
                size = download.fetch(self.upstream, self.storage)
                logger.debug("Downloaded %s (%d bytes)", download.path, size)
                with self._lock:
                    job.files += 1
                    job.bytes += size
                    job.written.append(download.path)
            except (NotServed, HashMismatch) as exc:
                if not download.sidecar:
                    job.error = job.error or reason(exc)
                else:
                    logger.debug("%s: %s; mirrored without it", job.name, exc)
                    with self._lock:
                        job.missing.append(download.path)
                        job.missing_reason = job.missing_reason or str(exc)
            except LocalIOError as exc:
                job.local_error = job.local_error or exc
                self.stop.set()
            except PROJECT_FAILURES as exc:
                job.error = job.error or reason(exc)
            except Exception:
                job.bug = job.bug or traceback.format_exc()
                self.stop.set()
        else:
            job.unfinished = True
        with self._lock:
            job.pending -= 1
            last = job.pending == 0
        if last:
            self._finish(job)

    def _stop_local(self, job: Job, exc: LocalIOError) -> None:
        """Nothing more can be written: start no new work, and say why."""
        self.stop.set()
        self._report(LocalError(job.name, str(exc), type(exc)))

    def _crash(self, job: Job, details: str) -> None:
        """A bug: start no new work, and hand the traceback to the main process."""
        self.stop.set()
        self._report(Crashed(job.name, details))

    def _finish(self, job: Job) -> None:
        if job.bug is not None:
            self._crash(job, job.bug)
            return
        if job.local_error is not None:
            self._report(LocalError(job.name, str(job.local_error), type(job.local_error)))
            return
        if job.error is not None:
            self._report(Failed(job.name, job.error))
            return
        if job.unfinished:
            self._report(Unfinished(job.name))
            return
        project = job.project
        assert project is not None
        if job.missing:  # one line per project, not per file: a proxy without sidecars has thousands
            logger.warning(
                "%s: the upstream did not serve %s (%s%s); mirrored without them, their pages offer no core "
                "metadata for those files (asked again daily)",
                job.name, plural(len(job.missing), ".metadata file"), job.missing_reason,
                "; --debug names every file" if len(job.missing) > 1 else "",
            )
        try:
            unserved = unserved_metadata(project, self.config, self.storage, job.missing)
            project.drop_metadata(f.filename for f in unserved)
            missing = sidecars_of(unserved) if self.config.core_metadata else []
            job.written += publish(project, self.config, self.storage)
            policy = self.dependencies
            requires = requirements_of(project, self.storage, policy.build) if policy is not None else []
            versions = list(project.releases) if policy is not None else []
        except LocalIOError as exc:
            self._stop_local(job, exc)
            return
        except PROJECT_FAILURES as exc:
            self._report(Failed(job.name, reason(exc)))
            return
        except Exception:
            self._crash(job, traceback.format_exc())
            return
        logger.info("%s: synced at serial %d", project.name, project.serial)
        self._report(
            Synced(
                job.name, project.canonical, project.name, project.serial, job.files, job.bytes, job.written, requires,
                missing, versions,
            )
        )


class SharedCursor:
    """The projects of a run, handed out one at a time to whichever worker process asks.

    Dealing the projects out up front would end a run on its slowest process: with 3
    threads over 2 processes, the one-thread process takes twice as long, and on a real
    network the run ends on one connection. Every forked process inherits the list; only
    the position is shared.
    """

    def __init__(self, items: list[Item], context: Any) -> None:
        self._items = items
        self._next = context.Value("q", 0)

    def __iter__(self) -> Iterator[Item]:
        while True:
            with self._next.get_lock():
                index = self._next.value
                self._next.value = index + 1
            if index >= len(self._items):
                return
            yield self._items[index]


def run_worker(worker: Worker, items: Iterable[Item]) -> None:
    """Run ``worker`` over ``items``, then say so (:class:`Exited`). A bug outside any one
    project's tasks stops the run the same way as one inside (:class:`Crashed`, exit 70)."""
    try:
        worker.run(items)
    except Exception:
        worker.stop.set()
        worker.emit(Crashed("", traceback.format_exc()))
    finally:
        worker.emit(Exited())


def run_worker_process(worker: Worker, items: Iterable[Item]) -> None:
    """Entry point of a forked worker: fresh connections, then the same thread engine.

    Ctrl-C and SIGTERM are the main process's to handle: it sets ``stop``, and a worker
    finishes what it holds. (A worker whose main process is killed outright stops too.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    in_worker_process()
    worker.upstream.close()
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(), worker.stop), daemon=True).start()
    run_worker(worker, items)


def _stop_when_orphaned(parent: int, stop: Any) -> None:
    """A worker whose main process was killed finishes what it holds and starts nothing new."""
    while os.getppid() == parent:
        time.sleep(0.5)
    logger.error("The main process is gone; this worker stops after its downloads in flight")
    stop.set()


def reason(exc: BaseException) -> str:
    """One line on why a project failed: the exception's type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
