"""Planning a ``mirror`` run: where it starts, what changed upstream, what to sync and remove.

An unfinished run (killed, or with projects that failed) left ``todo``: everything up to its
target was discovered already, so its projects are resumed and only what changed since is
asked for. The plan also decides what is removed (the listing's word, within
``max-removals``), and which projects' pages must be rewritten (sidecars served again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from .discovery import ROOT, Plan, discover
from .progress import plural
from .state import MirrorState, StartPoint, Todo

if TYPE_CHECKING:
    from .run import Run

logger = logging.getLogger(__name__)


@dataclass
class RunPlan:
    """What one ``mirror`` run will do."""

    start: StartPoint
    #: What discovery found (its method, listing, removals, validators).
    found: Plan
    #: The serial the mirror is at once ``work`` is done.
    target: int
    #: canonical name -> the serial its metadata must have at least (0: any).
    work: dict[str, int]

    @property
    def idle(self) -> bool:
        """Nothing to sync, remove or record: the mirror is at the upstream's serial."""
        return not self.work and not self.found.removed and self.target == self.start.status


class Records(Mapping[str, tuple[str, int]]):
    """The mirror's project records, read from disk on first use."""

    def __init__(self, state: MirrorState) -> None:
        self._state = state

    def __getitem__(self, key: str) -> tuple[str, int]:
        return self._state.projects[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state.projects)

    def __len__(self) -> int:
        return len(self._state.projects)


def plan(run: Run, force_check: bool, cleanup_todo: bool) -> RunPlan:
    """Read the start point, ask the upstream what changed, and decide the run's work.

    Raises :class:`~bandersnatch_classic.errors.UnsafeListing` (nothing touched) when the
    listing would remove more projects than ``max-removals`` allows.
    """
    auto = run.config.api_method == "auto"
    start = run.state.start(force_check, cleanup_todo, run.upstream.master if auto else None)
    known = Records(run.state)  # read only if discovery needs it: a no-change run does not
    if run.dependencies is not None:
        run.filters = run.filters.with_allowed(known)  # dependencies found by earlier runs stay mirrored
    run.report.serial = start.status  # what the summary says if the run stops early
    todo = start.todo
    resuming = todo is not None and (todo.target > start.status or bool(todo.projects))
    if todo is not None and resuming:
        _drop_excluded(run, todo)
        logger.info(
            "Resuming an unfinished run: %s left%s", plural(len(todo.projects), "project"),
            f" towards serial {todo.target}" if todo.target else "",
        )
    found = _discover(run, start, known, resuming)
    run.report.method = found.method
    run.removals.word = found
    if found.listed is None and found.method == "xmlrpc" and start.since > start.status:
        run.removals.earlier_span = (start.status, start.since)
    if found.removed:
        run.removals.check_listing(found.method, found.removed, len(known))
    for name, reason in found.rejected.items():
        run.report.failed[name] = f"refused: {reason}"
    target = max(found.target, start.since)
    recovered = run.mirror.retry_sidecars(run.config.workers, always=start.full)  # served now: pages to rewrite
    run.listed = {canonicalize_name(name): name for name in found.projects}
    work = _merge(todo.projects if todo else {}, found.projects, dict.fromkeys(recovered, 0))
    run.report.serial = target
    if auto and (found.method != start.remembered or not start.fresh):
        _remember_method(run, found, changed=found.method != start.remembered)
    return RunPlan(start, found, target, work)


def _discover(run: Run, start: StartPoint, known: Records, resuming: bool) -> Plan:
    """Ask the upstream what changed since the start point (again, from where the mirror's
    serials can be believed, when they are ahead of the upstream's)."""

    def ask() -> Plan:
        return discover(
            run.upstream,
            run.config.api_method,
            start.since,
            known,
            run.filters.allows_name,
            run.filters.allowlist(),
            # resuming a first run: what it synced is known now
            start.full or start.compare or not (start.since or resuming),
            start.remembered if start.fresh else "",
            validators,
        )

    validators = run.state.read_validators()
    found = ask()
    if found.exact_target and run.state.distrust_ahead(start, found.target):
        found = ask()  # from where the mirror's serials can be believed
    if start.compare and not start.full:  # status not believed: the records say what changed
        found.projects = run.state.behind_records(found.projects)
    return found


def _drop_excluded(run: Run, todo: Todo) -> None:
    """Take out of an unfinished run's ``todo`` the names today's filters exclude, before any
    request: a fixed typo in an allowlist must not leave a run asking for the whole index.
    What such a run already mirrored stays (``bandersnatch delete`` removes it).

    With resolve-dependencies the todo may hold dependencies that failed, which are outside
    the allowlists by nature: there only the other project filters (blocklists) decide."""
    allows = run.filters.allows_name if run.dependencies is None else run.filters.allows_dependency
    excluded = [name for name in todo.projects if not allows(name)]
    for name in excluded:
        del todo.projects[name]
    if excluded:
        logger.info(
            "Dropped %s the filters now exclude from the unfinished run's todo",
            plural(len(excluded), "project"),
        )


def keep_validators(run: Run, found: Plan, root: bool = True) -> None:
    """Keep the validators of the pages this plan came from, for conditional requests
    next run: the mirrored projects' (their serials are compared with the records, so a
    304 never hides a change), and with ``root`` the listing's. A 304 for the listing
    says nothing changed since it was read, so it is kept only when everything that
    listing asked for is done (after todo is written is not enough)."""
    if found.validators or run.state.has_validators():
        known = run.state.projects
        run.state.write_validators({k: v for k, v in found.validators.items() if (root and k == ROOT) or k in known})


def _remember_method(run: Run, found: Plan, changed: bool) -> None:
    """Note which method worked, so that the next runs ask for it first (one request, not three)."""
    tried = "; ".join(f"{m} unavailable: {why}" for m, why in found.unavailable.items())
    logger.log(logging.INFO if changed else logging.DEBUG, "Upstream method: %s%s", found.method, f" ({tried})" if tried else "")
    run.state.remember_method(found.method, run.upstream.master)


def _merge(*works: dict[str, int]) -> dict[str, int]:
    """Union of project -> serial maps by canonical name, keeping the highest serial."""
    merged: dict[str, int] = {}
    for work in works:
        for name, serial in work.items():
            canonical = canonicalize_name(name)
            merged[canonical] = max(merged.get(canonical, 0), serial)
    return merged
