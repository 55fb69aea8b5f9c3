"""The sync engine: bring a mirror (Storage) up to date with an upstream (Upstream).

:class:`Mirror` is a mirror directory or bucket with its state, its upstream, filters and
dependency policy, built in one place (:meth:`Mirror.from_config`). Each ``mirror`` or
``sync`` it runs is a :class:`~bandersnatch_classic.run.Run`, which holds that run's state
and reads in four verbs: plan (:mod:`.plan`), sync (:mod:`.runner`, :mod:`.applier`,
:mod:`.removals`, :mod:`.rounds`), publish the root (:mod:`.rootindex`), wrap up.
``verify`` and ``delete`` use its single-project methods.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import filelock

from . import layout
from .config import Config, MirrorConfig
from .dependencies import DependencyPolicy
from .errors import ConfigError, LocalIOError, LockHeld
from .filters import FilterSet
from .models import Project
from .package import publish
from .rootindex import write_diff_file, write_root
from .run import Report, Run
from .sidecars import MissingSidecars
from .state import MirrorState
from .statefiles import LOCK
from .storage import Storage, storage_from_config
from .upstream import RetryPolicy, Upstream

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def mirror_lock(directory: Path) -> Iterator[None]:
    """Hold ``<directory>/.lock`` for the whole run; a second run gets :class:`LockHeld`."""
    lock = filelock.FileLock(str(directory / LOCK), timeout=0)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except filelock.Timeout as exc:
        raise LockHeld(f"another run holds {directory / LOCK}; not starting a second one") from exc
    except OSError as exc:  # pre-flight checked; this is a race with whoever changed it since
        raise LocalIOError.of(str(directory / LOCK), exc) from exc
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
    """A mirror directory (or bucket), its state, and the upstream, filters and dependency
    policy its runs use. Each run gets a fresh :class:`~bandersnatch_classic.run.Run`."""

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
        #: The configured filters; a run widens its own copy as dependencies are admitted.
        self.filters = filters
        self.dependencies = dependencies
        self.state = MirrorState(storage, config.hash_index, layout.ROOT_HTML[0] if config.write_html else layout.ROOT_JSON)
        self.sidecars = MissingSidecars(storage)
        #: The report of the last run (an empty one before the first).
        self.report = Report()

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
    def run(
        self, force_check: bool = False, cleanup_todo: bool = False, allow_mass_removal: bool = False,
        report: Report | None = None,
    ) -> Report:
        """The ``mirror`` command: sync everything that changed since the last run
        (see :meth:`Run.mirror_all`); ``report``: the one to fill (a new one by default).

        Raises :class:`UnsafeListing` (nothing touched) when the listing would remove more
        projects than ``max-removals`` allows, unless ``allow_mass_removal``.
        """
        return self._new_run(report, allow_mass_removal).mirror_all(force_check, cleanup_todo)

    def sync_projects(self, names: Iterable[str], write_root: bool = True, report: Report | None = None) -> Report:
        """The ``sync`` command: sync the named projects now; ``status`` and ``todo`` stay."""
        return self._new_run(report).sync_named(names, write_root)

    def _new_run(self, report: Report | None, allow_mass_removal: bool = False) -> Run:
        self.report = report if report is not None else Report()
        return Run(self, self.report, allow_mass_removal)

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

    def write_root(self) -> None:
        """Rewrite the root index from the project records, and save the records (after ``delete``)."""
        self.report.written += write_root(self.config, self.storage, self.state, self.state.status)
        self.sidecars.save()

    def write_diff_file(self) -> None:
        """Write ``diff-file`` with the paths the last run wrote (see :func:`rootindex.write_diff_file`)."""
        write_diff_file(self.config, self.storage, self.report.written)
