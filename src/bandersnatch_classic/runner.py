"""The process/thread runner: hand a todo's projects to workers, apply what they report.

Python runs one thread at a time, and a full sync spends most of its CPU in Python
(HTTP parsing, bookkeeping). So a large run forks one worker process per core, each
with its share of the ``workers`` threads, taking projects from one shared cursor; a
small run keeps one worker in-process. Either way every worker reports each project as
a typed result through one queue, and only the main process applies the results
(:mod:`bandersnatch_classic.applier`), checkpointing ``todo`` every few seconds.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .applier import apply
from .progress import Progress
from .state import Todo
from .worker import Exited, Item, Result, SharedCursor, Worker, run_worker, run_worker_process

if TYPE_CHECKING:
    from .run import Run

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 2.0
#: Below this many projects, forking worker processes costs more than it saves.
MIN_PROJECTS_PER_PROCESS = 50


class Runner:
    """One pass of workers over one todo (a run's projects, or one dependency round)."""

    def __init__(self, run: Run, todo: Todo, checkpoint: bool) -> None:
        self.run = run
        self.todo = todo
        self.checkpoint = checkpoint
        # loaded before forking, so that every worker inherits them; a run that defers loading
        # them has no todo of an earlier run: every name it syncs was listed, as the upstream spells it
        records: Mapping[str, tuple[str, int]] = {} if run.state.deferred else run.state.projects
        self.items: list[Item] = [(name, serial, _display_name(run, name, records)) for name, serial in todo.projects.items()]
        processes = _process_count(run.config.workers, len(self.items))
        self.context = multiprocessing.get_context("fork") if processes > 1 else None
        self.stop: Any = self.context.Event() if self.context else threading.Event()
        self.results: Any = self.context.Queue() if self.context else queue.SimpleQueue()
        self.runners = self._start(processes)
        #: Projects done with since the last checkpoint.
        self.finished: list[str] = []
        self.interrupted = False

    def _start(self, processes: int) -> list[Any]:
        """Start the workers: one thread in this process, or ``processes`` forked ones."""
        workers = self.run.config.workers
        if self.context is None:
            worker = self._worker(workers)
            thread = threading.Thread(target=run_worker, args=(worker, self.items), name="worker", daemon=True)
            thread.start()
            return [thread]
        share, extra = divmod(workers, processes)
        cursor = SharedCursor(self.items, self.context)
        gc.freeze()  # the workers inherit the parent's objects: keep the collector off their pages
        runners = []
        for index in range(processes):
            process = self.context.Process(target=run_worker_process, args=(self._worker(share + (index < extra)), cursor))
            process.start()
            runners.append(process)
        logger.debug("Syncing %d projects in %d worker processes", len(self.items), processes)
        return runners

    def _worker(self, threads: int) -> Worker:
        """A worker with the filter set in force now (dependencies widen it between rounds)."""
        run = self.run
        return Worker(run.config, run.upstream, run.storage, run.filters, run.dependencies, threads, self.results.put, self.stop)

    def wait(self) -> None:
        """Apply every result until every worker has exited, then checkpoint.

        Ctrl-C or SIGTERM: the workers finish what they hold and start nothing new (a second
        one leaves at once). An exception in this process stops the workers the same way.
        """
        run, report = self.run, self.run.report
        progress = Progress(len(self.items), run.config.progress_interval)
        files, size, done = report.files, report.bytes, 0
        last_checkpoint = time.monotonic()
        running = len(self.runners)
        try:
            while running:
                try:
                    result = self._next(lambda: progress.update(done, report.files - files, report.bytes - size))
                    if result is None:
                        break
                    if isinstance(result, Exited):
                        running -= 1
                        continue
                    if apply(run, result, self.stop):
                        self.finished.append(result.name)
                    done += 1
                    progress.update(done, report.files - files, report.bytes - size)
                    if self.checkpoint and self.finished and time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                        run.checkpoint(self.todo, self.finished)
                        self.finished, last_checkpoint = [], time.monotonic()
                except KeyboardInterrupt:
                    if self.interrupted:
                        raise  # a second one: leave now
                    self.interrupted = True
                    run.halt(self.stop, "interrupted")
        except BaseException:
            self.stop.set()
            raise
        progress.close()
        self._finish()

    def _next(self, idle: Any) -> Result | None:
        """The next result; None when every worker is gone, some without saying so."""
        run = self.run
        while True:
            if not run.stopped and run.lock_lost() is not None:
                run.halt(self.stop)  # the storage refuses the workers' writes now: start nothing new
            try:
                return self.results.get(timeout=1.0)
            except queue.Empty:
                idle()
                if any(r.is_alive() for r in self.runners):
                    continue
            try:  # every worker is gone: take what they left
                return self.results.get(timeout=0.1)
            except queue.Empty:
                return None

    def _finish(self) -> None:
        """Join the workers; record what finished (the rest stays in ``todo``)."""
        run = self.run
        for runner in self.runners:
            runner.join()
        lost = run.lock_lost()
        if lost is not None:
            raise lost
        if self.checkpoint:
            run.checkpoint(self.todo, self.finished)
        else:
            for name in self.finished:
                self.todo.projects.pop(name, None)
            run.sidecars.save()
        for runner in self.runners:
            if getattr(runner, "exitcode", 0):
                logger.error("A worker process ended with status %s; its unfinished projects stay in todo", runner.exitcode)
        if self.interrupted:
            raise KeyboardInterrupt


def sync(run: Run, todo: Todo, checkpoint: bool = True) -> None:
    """Sync every project of ``todo``; failures end up in the report, not as exceptions.

    Finished projects are removed from ``todo.projects``; what is left at the end failed,
    or was never started because the run stopped.
    """
    if run.stopped:
        return  # stop-on-error, a local I/O error or a bug: no new work, not even dependencies
    Runner(run, todo, checkpoint).wait()


def _display_name(run: Run, canonical: str, records: Mapping[str, tuple[str, int]]) -> str:
    """The name to ask the upstream for: the recorded or listed display name, else canonical."""
    record = records.get(canonical)
    return record[0] if record is not None else run.listed.get(canonical, canonical)


def _process_count(workers: int, projects: int) -> int:
    """How many worker processes: one per core, never more than threads or than useful."""
    if not hasattr(os, "fork"):
        return 1
    return max(1, min(os.cpu_count() or 1, workers, projects // MIN_PROJECTS_PER_PROCESS))
