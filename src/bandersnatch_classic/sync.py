"""The sync engine: bring a mirror (Storage) up to date with an upstream (Upstream).

One pool of ``workers`` threads runs two kinds of task: *project* tasks fetch a
project's metadata, filter it and plan its downloads; *file* tasks download one file
each. A project's pages are written by whichever task finishes its last file, so the
files of one project download in parallel and no worker ever waits on another.

Progress is recorded so that a run killed at any moment loses nothing: ``todo`` holds
the target serial and the projects still to do, rewritten (atomically, in batches every
few seconds) as projects finish; ``status`` moves to the target only at the end.
Projects that fail stay in ``todo`` with the status serial advanced past them, and the
next run retries them together with whatever changed since (see docs/operations.md).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import filelock
from packaging.utils import canonicalize_name

from . import pages
from .config import MirrorConfig
from .discovery import discover
from .errors import LockHeld, ProjectGone
from .filters import FilterSet
from .package import Download, plan_downloads, publish, unpublish
from .state import MirrorState, Todo
from .storage import Storage
from .upstream import Upstream

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 2.0


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

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        seconds = time.monotonic() - self.started
        via = f" via {self.method}" if self.method else ""
        return (
            f"Summary: {self.synced} projects synced, {len(self.failed)} failed, {self.removed} removed; "
            f"{self.files} files, {_human(self.bytes)} downloaded in {seconds:.1f}s; serial {self.serial}{via}"
        )


@contextlib.contextmanager
def mirror_lock(directory: Path) -> Iterator[None]:
    """Hold ``<directory>/.lock`` for the whole run; a second run gets :class:`LockHeld`."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(directory / ".lock"), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise LockHeld(f"another run holds {directory / '.lock'}; not starting a second one") from exc
    try:
        yield
    finally:
        lock.release()


class _Job:
    """One project in flight: its metadata and how many of its downloads are still open."""

    def __init__(self, name: str, serial: int) -> None:
        self.name = name
        self.serial = serial
        self.project = None
        self.pending = 0
        self.error: str | None = None


class Mirror:
    """A mirror directory, its state, and the worker pool that fills it."""

    def __init__(
        self,
        config: MirrorConfig,
        upstream: Upstream,
        storage: Storage,
        filters: FilterSet,
    ) -> None:
        self.config = config
        self.upstream = upstream
        self.storage = storage
        self.filters = filters
        self.state = MirrorState(storage, config.hash_index)
        self._lock = threading.Lock()
        self._done: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()
        self._stopping = False
        self._report = Report()
        self._pool: ThreadPoolExecutor | None = None

    # -- the two entry points ----------------------------------------------------------
    def run(self, force_check: bool = False, cleanup_todo: bool = False) -> Report:
        """The ``mirror`` command: sync everything that changed since the last run."""
        report = self._report
        full = self.state.check_generation() or force_check
        known = self.state.projects  # loaded here, before any worker thread needs it
        status = self.state.status
        if cleanup_todo:
            self.state.remove_todo()
        todo = self.state.read_todo()
        if todo is not None and todo.target > status:
            logger.info("Resuming an unfinished run: %d projects left towards serial %d", len(todo.projects), todo.target)
            report.method, target, work, removed = "todo", todo.target, dict(todo.projects), set()
        else:
            plan = discover(
                self.upstream,
                self.config.api_method,
                status,
                known,
                self.filters.allows_name,
                self.filters.allowlist(),
                full or not status,
            )
            report.method, target, removed = plan.method, plan.target, plan.removed
            work = _merge(todo.projects if todo else {}, plan.projects)
            if todo:
                logger.info("Retrying %d projects that failed in an earlier run", len(todo.projects))
        report.serial = target
        if not work and not removed and target == status and self.storage.exists("status"):
            logger.info("Nothing to do: the mirror is at serial %d", status)
            return report

        self.state.write_generation()
        todo = Todo(target, work)
        self.state.write_todo(todo)
        for canonical in sorted(removed):
            logger.info("%s: gone from the upstream listing; removing it from the index", canonical)
            report.written += unpublish(canonical, self.config, self.storage, self.state)
            report.removed += 1
        self._sync(todo)

        self._write_root(target)
        if todo.projects:
            self.state.write_todo(todo)  # what failed, or was never started after stop-on-error
        else:
            self.state.remove_todo()
        if not self._stopping:
            # Failed projects stay in todo; the next run retries them with what changed since.
            self.state.write_status(target)
        if not report.failed and not self._stopping:
            stamp = report.started_at.strftime("%Y%m%dT%H:%M:%S\n")
            self.storage.write_bytes("web/last-modified", stamp.encode())
        self._write_diff_file()
        return report

    def sync_projects(self, names: Iterable[str], write_root: bool = True) -> Report:
        """The ``sync`` command: sync the named projects now; ``status`` and ``todo`` stay."""
        work = {canonicalize_name(n): 0 for n in names if self.filters.allows_name(n)}
        self.state.projects  # loaded here, before any worker thread needs it
        self._sync(Todo(self.state.status, work), checkpoint=False)
        if write_root:
            self._write_root(self.state.status)
        return self._report

    # -- the pool ------------------------------------------------------------------------
    def _sync(self, todo: Todo, checkpoint: bool = True) -> None:
        """Sync every project of ``todo``; failures end up in the report, not as exceptions."""
        report = self._report
        pending = iter(list(todo.projects.items()))
        in_flight = 0
        max_in_flight = self.config.workers * 4
        last_checkpoint = time.monotonic()
        finished: list[str] = []
        with ThreadPoolExecutor(self.config.workers, thread_name_prefix="sync") as pool:
            self._pool = pool
            while True:
                while not self._stopping and in_flight < max_in_flight:
                    item = next(pending, None)
                    if item is None:
                        break
                    pool.submit(self._project_task, _Job(*item))
                    in_flight += 1
                if in_flight == 0:
                    break
                name, error = self._done.get()
                in_flight -= 1
                if error is None:
                    finished.append(name)
                else:
                    report.failed[name] = error
                    logger.error("%s: failed: %s", name, error)
                    if self.config.stop_on_error:
                        logger.error("Stopping at the first failure (stop-on-error = true)")
                        self._stopping = True
                if checkpoint and finished and time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                    self._checkpoint(todo, finished)
                    finished = []
                    last_checkpoint = time.monotonic()
        if checkpoint and finished:
            self._checkpoint(todo, finished)
        elif finished:
            self.state.save_projects()

    def _checkpoint(self, todo: Todo, finished: list[str]) -> None:
        """Record finished projects: their records first, then the shorter todo."""
        self.state.save_projects()
        for name in finished:
            todo.projects.pop(name, None)
        self.state.write_todo(todo)

    def _project_task(self, job: _Job) -> None:
        try:
            try:
                project = self.upstream.project(job.name, job.serial)
            except ProjectGone:
                canonical = canonicalize_name(job.name)
                if canonical in self.state.projects or self.storage.exists(self.state.simple_dir(canonical)):
                    logger.info("%s: deleted upstream; removing it from the index", job.name)
                    self._record_written(unpublish(canonical, self.config, self.storage, self.state))
                    with self._lock:
                        self._report.removed += 1
                self._done.put((job.name, None))
                return
            if not self.filters.filter_project(project):
                logger.debug("%s: dropped by filters", job.name)
                self._done.put((job.name, None))
                return
            job.project = project
            downloads = plan_downloads(project, self.config, self.storage)
        except Exception as exc:  # every failure must reach the main thread
            self._done.put((job.name, _reason(exc)))
            return
        if not downloads:
            self._finish(job)
            return
        job.pending = len(downloads)
        assert self._pool is not None
        for download in downloads:
            self._pool.submit(self._file_task, job, download)

    def _file_task(self, job: _Job, download: Download) -> None:
        if job.error is None and not self._stopping:
            try:
                size = download.fetch(self.upstream, self.storage)
                logger.debug("Downloaded %s (%d bytes)", download.path, size)
                with self._lock:
                    self._report.files += 1
                    self._report.bytes += size
                    self._report.written.append(download.path)
            except Exception as exc:
                job.error = job.error or _reason(exc)
        elif job.error is None:
            job.error = "not finished: the run stopped"
        with self._lock:
            job.pending -= 1
            last = job.pending == 0
        if last:
            self._finish(job)

    def _finish(self, job: _Job) -> None:
        if job.error is not None:
            self._done.put((job.name, job.error))
            return
        try:
            assert job.project is not None
            written = publish(job.project, self.config, self.storage, self.state)
        except Exception as exc:
            self._done.put((job.name, _reason(exc)))
            return
        self._record_written(written)
        with self._lock:
            self._report.synced += 1
        logger.info("%s: synced at serial %d", job.project.name, job.project.serial)
        self._done.put((job.name, None))

    def _record_written(self, paths: list[str]) -> None:
        with self._lock:
            self._report.written.extend(paths)

    # -- end of run ----------------------------------------------------------------------
    def _write_root(self, serial: int) -> None:
        """Render the root index from the project records (never from a directory scan)."""
        records = sorted(self.state.projects.items())
        if self.config.write_html:
            html = pages.root_html((c, d) for c, (d, _) in records).encode()
            for name in ("index.html", "index.v1_html"):
                if self.storage.write_if_changed(f"web/simple/{name}", html):
                    self._report.written.append(f"web/simple/{name}")
        if self.config.write_json:
            page = pages.root_json(((d, s) for _, (d, s) in records), serial).encode()
            if self.storage.write_if_changed("web/simple/index.v1_json", page):
                self._report.written.append("web/simple/index.v1_json")
        self.state.save_projects()

    def _write_diff_file(self) -> None:
        if not self.config.diff_file:
            return
        path = self.config.diff_file
        if self.config.diff_append_epoch:
            path = f"{path}-{int(time.time())}"
        lines = "".join(f"{self.storage.path(p)}\n" for p in sorted(set(self._report.written)))
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(lines)


def sync(
    upstream: Upstream,
    storage: Storage,
    config: MirrorConfig,
    filters: FilterSet,
    *,
    force_check: bool = False,
    cleanup_todo: bool = False,
) -> Report:
    """Bring ``storage`` up to date with ``upstream`` under the mirror lock."""
    with mirror_lock(storage.root):
        return Mirror(config, upstream, storage, filters).run(force_check, cleanup_todo)


def _merge(*works: dict[str, int]) -> dict[str, int]:
    """Union of project -> serial maps by canonical name, keeping the highest serial."""
    merged: dict[str, int] = {}
    for work in works:
        for name, serial in work.items():
            canonical = canonicalize_name(name)
            merged[canonical] = max(merged.get(canonical, 0), serial)
    return merged


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"
