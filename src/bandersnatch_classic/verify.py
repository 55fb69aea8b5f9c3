"""``verify`` and ``delete``: keep a large mirror honest.

``verify`` reads what each mirrored project should hold from the mirror itself (the stored
JSON document, else the PEP 691 page, else the HTML page -- so mirrors made by the
reference tool verify too), hashes every file on every core (hashlib releases the GIL),
re-syncs the projects with missing or corrupt files, and with ``--delete`` removes what no
project references any more. Progress is kept in ``<directory>/verify-progress`` (projects
already hashed), so an interrupted verify resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

from . import layout, pages
from .errors import EXIT_FAILED, EXIT_OK, BandersnatchError, DamagedState
from .layout import Expected
from .models import Project
from .progress import human as _human
from .storage import Storage
from .sync import Mirror

logger = logging.getLogger(__name__)

#: Projects checked together: their files are hashed in parallel.
BATCH = 256


@dataclass
class VerifyReport:
    started: float = field(default_factory=time.monotonic)
    projects: int = 0
    files: int = 0
    bytes_hashed: int = 0
    broken: dict[str, list[str]] = field(default_factory=dict)  # project -> bad paths
    unfixed: dict[str, str] = field(default_factory=dict)
    unowned: dict[str, int] = field(default_factory=dict)  # path -> size
    pages_fixed: list[str] = field(default_factory=list)
    #: Broken files a re-check after the repair found right (or no longer referenced).
    fixed_files: int = 0
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.broken or self.unfixed or self.unowned or self.pages_fixed else EXIT_OK

    def summary(self) -> str:
        seconds = time.monotonic() - self.started
        rate = self.bytes_hashed / seconds / 1e6 if seconds else 0.0
        bad = sum(len(v) for v in self.broken.values())
        verb = "would fix" if self.dry_run else "fixed"
        files_verb = verb if self.dry_run else f"{self.fixed_files} fixed"
        outcome = "clean" if not self.exit_code else ("found problems" if self.dry_run else "repaired")
        if self.unfixed:
            outcome = f"{len(self.unfixed)} projects could not be fixed"
        removed = "would delete" if self.dry_run else "deleted"
        return (
            f"Verify: {outcome}; {self.projects} projects, {self.files} files, {_human(self.bytes_hashed)} hashed "
            f"in {seconds:.1f}s ({rate:.0f} MB/s); {bad} missing or corrupt files in {len(self.broken)} projects "
            f"({files_verb}), {len(self.pages_fixed)} pages {verb}, {len(self.unowned)} unowned files "
            f"({_human(sum(self.unowned.values()))}) {removed}"
        )


def stored_project(storage: Storage, canonical: str) -> Project | None:
    """The project as its stored JSON document (``web/json/<name>``) describes it, if there is one.

    File URLs relative to the document (as some upstreams give them) are resolved against
    the document's path on the upstream, ``/pypi/<name>/json``, as ``mirror`` did.
    """
    doc = storage.read_text(layout.json_path(canonical))
    return Project.from_json(json.loads(doc), base=f"/pypi/{canonical}/json") if doc is not None else None


def _expected(mirror: Mirror, canonical: str, project: Project | None) -> Expected:
    """What the mirror should hold of a project (see :func:`layout.referenced_files`)."""
    return _held(mirror, layout.referenced_files(mirror.storage, canonical, mirror.config.hash_index, project))


def _held(mirror: Mirror, expected: Expected) -> Expected:
    """What of ``expected`` the mirror holds itself: with ``release-files = false`` only the
    ``.metadata`` files (the pages link the release files elsewhere)."""
    if mirror.config.release_files:
        return expected
    return {path: want for path, want in expected.items() if path.endswith(layout.METADATA_SUFFIX)}


def _check(storage: Storage, path: str, sha256: str | None, size: int | None, read: bool = False) -> tuple[bool, int]:
    """(file is right, bytes hashed). ``read``: hash the bytes even where the backend keeps
    a stored hash (an object store's metadata), which would not show bytes gone bad."""
    stat = storage.stat(path)
    if stat is None or (size is not None and stat.st_size != size):
        return False, 0
    if sha256 is None:
        return True, 0
    return (storage.read_sha256(path) if read else storage.sha256(path)) == sha256, stat.st_size


def _drop_hidden_corruption(storage: Storage, report: VerifyReport) -> None:
    """Delete the broken files whose stored hash still claims them right: a re-sync, which
    trusts the stored hash, would keep them. (On a filesystem no broken file is one.)"""
    for canonical, paths in report.broken.items():
        for path in paths:
            stat = storage.stat(path)
            if stat is not None and storage.sha256(path) != storage.read_sha256(path):
                logger.warning("%s: %s holds other bytes than its stored hash says; replacing it", canonical, path)
                storage.delete(path)


def verify(
    mirror: Mirror,
    *,
    delete: bool = False,
    dry_run: bool = False,
    json_update: bool = False,
    workers: int = 0,
    read: bool = False,
) -> VerifyReport:
    """Check every file of every mirrored project; repair, and with ``delete`` reclaim.
    ``read``: hash every file's bytes, also where the backend stores hashes (``--read``)."""
    state = mirror.state
    state.check_status()
    report = VerifyReport(dry_run=dry_run)
    names = sorted(state.projects)
    if json_update and not dry_run:
        logger.info("Refreshing the metadata of %d projects from the upstream", len(names))
        synced = mirror.sync_projects(names)
        for name, reason in synced.failed.items():
            report.unfixed[name] = reason
        names = sorted(state.projects)  # projects gone upstream were forgotten
    threads = workers or (os.cpu_count() or 1) * 2
    scan = _Scan(mirror, report, read, done=_read_progress(mirror) if not dry_run else set())
    scan.run(names, threads)
    if not dry_run:
        _repair(mirror, report, scan.referenced, threads, read)
    if delete and scan.unreadable:
        logger.error(
            "Not deleting unreferenced files: what %d projects reference is unknown (e.g. %s)",
            len(scan.unreadable),
            min(scan.unreadable),
        )
    elif delete:
        _reclaim(mirror.storage, report, scan.referenced, dry_run)
    if dry_run:
        _log_would(report)
    else:
        state.remove_verify_progress()
    return report


class _Scan:
    """One pass over the mirrored projects: what each should hold, and whether it does."""

    def __init__(self, mirror: Mirror, report: VerifyReport, read: bool, done: set[str]) -> None:
        self.mirror, self.storage, self.report, self.read = mirror, mirror.storage, report, read
        #: Projects already checked (by an interrupted verify, or by this one).
        self.done = done
        if done:
            logger.info("Resuming an interrupted verify: %d projects were already checked", len(done))
        #: Every path a project references.
        self.referenced: set[str] = set()
        #: Projects whose files are unknown: nothing may be deleted as unreferenced then.
        self.unreadable: set[str] = set()

    def run(self, names: list[str], threads: int) -> None:
        logger.debug("Verifying %d projects with %d threads", len(names), threads)
        last_save = time.monotonic()
        with ThreadPoolExecutor(threads, thread_name_prefix="verify") as pool:
            # Projects go in batches, so that the pool hashes many files at once even when
            # every project has only a few small ones.
            for start in range(0, len(names), BATCH):
                self._batch(pool, names[start : start + BATCH])
                if not self.report.dry_run and time.monotonic() - last_save > 5:
                    self.mirror.state.write_verify_progress(self.done)
                    last_save = time.monotonic()

    def _batch(self, pool: ThreadPoolExecutor, names: list[str]) -> None:
        report, storage, read = self.report, self.storage, self.read
        batch: list[tuple[str, str, str | None, int | None]] = []
        stored = {}
        for canonical in names:
            try:
                project = stored_project(storage, canonical)
                expected = _expected(self.mirror, canonical, project)
            except (ValueError, KeyError, TypeError, BandersnatchError) as exc:
                logger.error("%s: cannot read what the mirror holds for it: %s", canonical, exc)
                report.unfixed[canonical] = f"unreadable page or document: {exc}"
                self.unreadable.add(canonical)
                continue
            stored[canonical] = project
            self.referenced.update(expected)
            report.projects += 1
            if canonical not in self.done:
                batch += [(canonical, path, sha, size) for path, (sha, size) in expected.items()]
        results = pool.map(lambda item: _check(storage, item[1], item[2], item[3], read), batch)
        for (canonical, path, _, _), (ok, hashed) in zip(batch, results):
            report.files += 1
            report.bytes_hashed += hashed
            if not ok:
                report.broken.setdefault(canonical, []).append(path)
        for canonical, project in stored.items():
            if canonical in self.done:
                continue
            if canonical in report.broken:
                bad = report.broken[canonical]
                logger.warning("%s: %d missing or corrupt files, e.g. %s", canonical, len(bad), bad[0])
            if _page_disagrees(self.mirror, canonical, project):
                report.pages_fixed.append(canonical)
            self.done.add(canonical)


def _repair(mirror: Mirror, report: VerifyReport, referenced: set[str], threads: int, read: bool) -> None:
    """Rewrite the pages that disagree, fetch what is missing or corrupt, and check the result;
    what the repair brought in is added to ``referenced``."""
    repair = set(report.broken)
    for canonical in report.pages_fixed:
        if canonical in repair or not _rewrite_pages(mirror, canonical):
            repair.add(canonical)
    if report.pages_fixed:
        mirror.state.save_projects()
    if mirror.config.core_metadata:
        repair |= mirror.retry_sidecars(threads, always=True)  # served now: pages to rewrite
    if read:
        _drop_hidden_corruption(mirror.storage, report)
    if repair:
        logger.info("Re-syncing %d projects to repair them", len(repair))
        synced = mirror.sync_projects(sorted(repair))
        report.unfixed.update(synced.failed)
        for canonical in sorted(repair):  # what the repair brought in is referenced too
            referenced.update(_recheck(mirror, canonical, report))


def _reclaim(storage: Storage, report: VerifyReport, referenced: set[str], dry_run: bool) -> None:
    """Delete (or with ``dry_run`` count) every file below ``web/packages`` no project references."""
    for path, size in storage.files(layout.PACKAGES):
        if path in referenced:
            continue
        report.unowned[path] = size
        if not dry_run:
            storage.delete(path)
            logger.info("Deleted %s (%s)", path, _human(size))  # every one, as `delete` names what it removes
    if not dry_run:
        storage.remove_empty_dirs(layout.PACKAGES, keep_top=True)


def _log_would(report: VerifyReport) -> None:
    """What a dry run would delete and fetch."""
    for path, size in sorted(report.unowned.items())[:1000]:
        logger.info("Would delete %s (%s)", path, _human(size))
    for canonical, paths in sorted(report.broken.items()):
        for path in paths:
            logger.info("Would fetch %s (project %s)", path, canonical)


def _rewrite_pages(mirror: Mirror, canonical: str) -> bool:
    """Render a project's pages again from its stored document, without asking the upstream.

    For a project whose files are all right but whose pages disagree with the document
    (e.g. pages written by an older version of this tool): a re-sync would cost a request
    per project for nothing the upstream has to say. Returns whether the pages agree now.
    """
    project = stored_project(mirror.storage, canonical)
    if project is None:
        return False
    try:
        mirror.publish(project)
    except (OSError, BandersnatchError) as exc:
        logger.warning("%s: could not rewrite its pages from the stored document (%s); re-syncing it", canonical, exc)
        return False
    return not _page_disagrees(mirror, canonical, stored_project(mirror.storage, canonical))


def _recheck(mirror: Mirror, canonical: str, report: VerifyReport) -> Expected:
    """Check a repaired project again; count as fixed only what is right now.

    A file found broken is fixed when it is right now, or when the project no longer
    references it (e.g. a ``.metadata`` the upstream cannot serve, which the rewritten page
    no longer offers). Returns what the project references after the repair.
    """
    storage = mirror.storage
    try:
        project = stored_project(storage, canonical)
        expected = _expected(mirror, canonical, project)
    except (ValueError, KeyError, TypeError, BandersnatchError) as exc:
        report.unfixed.setdefault(canonical, f"unreadable after the repair: {exc}")
        return {}
    still = []
    for path in report.broken.get(canonical, []):
        if path in expected and not _check(storage, path, *expected[path])[0]:
            still.append(path)
    report.fixed_files += len(report.broken.get(canonical, [])) - len(still)
    if still:
        logger.error("%s: %d files still missing or corrupt after the repair, e.g. %s", canonical, len(still), still[0])
        report.unfixed.setdefault(canonical, f"{len(still)} files still missing or corrupt after the repair")
    if canonical in report.pages_fixed and _page_disagrees(mirror, canonical, project):
        report.unfixed.setdefault(canonical, "its page still disagrees with the stored metadata")
    return expected


def _page_disagrees(mirror: Mirror, canonical: str, project: Project | None) -> bool:
    """Whether the HTML page differs from what the stored JSON document (``project``) renders to."""
    storage, config = mirror.storage, mirror.config
    if project is None or not config.write_html or config.keep_index_versions:
        return False
    page = storage.read_text(f"{layout.simple_dir(canonical, config.hash_index)}/{layout.PAGE_HTML}")
    expected = pages.project_html(project, config.root_uri, config.digest_name, config.links_upstream)
    if page != expected:
        logger.warning("%s: the page disagrees with the stored metadata", canonical)
        return True
    return False


def _read_progress(mirror: Mirror) -> set[str]:
    """The projects an interrupted verify already checked; a damaged file is named and the
    verify starts from the beginning (it only costs time)."""
    try:
        return mirror.state.verify_progress()
    except DamagedState as damage:
        logger.warning("%s", damage.named("checking every project from the beginning"))
        return set()


def delete_projects(mirror: Mirror, names: Iterable[str], dry_run: bool = False) -> list[str]:
    """Remove projects entirely: files, ``.metadata``, pages, JSON documents, root entries."""
    removed: list[str] = []
    mirror.state.check_status()
    for name in names:
        canonical = canonicalize_name(name)
        if canonical not in mirror.state.projects and not layout.is_mirrored(mirror.storage, canonical, mirror.config.hash_index):
            raise BandersnatchError(f"{name}: not in this mirror")
        project = stored_project(mirror.storage, canonical)
        removed += mirror.remove_project(canonical, files=True, project=project, dry_run=dry_run)
    if not dry_run:
        mirror.write_root()
    return removed
