"""The result applier: what the main process does with each project a worker reports.

Workers change nothing but the files they write; only :func:`apply`, in the main process,
changes the run's records, report and stop flag (see :mod:`bandersnatch_classic.worker`).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name

from . import layout
from .storage import Storage
from .worker import Crashed, Failed, Gone, LocalError, Result, Skipped, Synced, Unfinished

if TYPE_CHECKING:
    from .run import Run

logger = logging.getLogger(__name__)


def apply(run: Run, result: Result, stop: Any) -> bool:
    """Apply one worker result; return True when the project is done with (not failed)."""
    report = run.report
    if isinstance(result, (Synced, Skipped, Failed)):
        run.removals.answered += 1
    if isinstance(result, Synced):
        _apply_synced(run, result)
    elif isinstance(result, Skipped):
        report.skipped += 1
        run.sidecars.forget(canonicalize_name(result.name))
        run.skipped.add(canonicalize_name(result.name))
    elif isinstance(result, Gone):
        return run.removals.apply_gone(result, stop)
    elif isinstance(result, Unfinished):
        return False  # stays in todo
    elif isinstance(result, LocalError):
        run.local_error = run.local_error or result.kind(result.reason)
        run.halt(stop, "local I/O error")
        return False
    elif isinstance(result, Crashed):
        run.bug = run.bug or result  # the first one is the one to report; the others stay in todo
        run.halt(stop, "internal error")
        return False
    elif isinstance(result, Failed):
        report.failed[result.name] = result.reason
        logger.error("%s: failed: %s", result.name, result.reason)
        if run.config.stop_on_error and not run.stopped:
            logger.error("Stopping at the first failure (stop-on-error = true)")
            run.halt(stop, "stop-on-error = true and a project failed")
        return False
    return True


def _apply_synced(run: Run, result: Synced) -> None:
    """Record a synced project, count it, and (``cleanup``) remove its legacy directories."""
    report, config = run.report, run.config
    run.state.record(result.canonical, result.display, result.serial)
    run.sidecars.set(result.canonical, result.missing)
    if run.dependencies is not None:
        run.rounds.note(result)
    run.highest_serial = max(run.highest_serial, result.serial)
    report.synced += 1
    report.files += result.files
    report.bytes += result.bytes
    if config.diff_file:
        report.written += result.written
    if config.cleanup:
        _remove_legacy_dirs(run, result.display, result.canonical)


def _remove_legacy_dirs(run: Run, display: str, canonical: str) -> None:
    """``cleanup = true``: remove the project's page directories of bandersnatch before 4.0
    (non-normalized names), as the reference tool does for each project it syncs. One that
    is the current directory under another spelling (a case-insensitive file system) stays."""
    storage, hash_index = run.storage, run.config.hash_index
    current = layout.simple_dir(canonical, hash_index)
    for legacy in layout.legacy_dirs(display, hash_index):
        if not storage.exists(legacy) or _same_dir(storage, legacy, current):
            continue
        storage.delete_tree(legacy)
        logger.info("%s: removed the legacy page directory %s (cleanup = true)", display, legacy)


def _same_dir(storage: Storage, one: str, other: str) -> bool:
    """Whether two mirror paths are one directory (on a case-insensitive file system);
    never for object storage, whose keys are case-sensitive."""
    try:
        return os.path.samefile(storage.display(one), storage.display(other))
    except (OSError, ValueError):
        return False
