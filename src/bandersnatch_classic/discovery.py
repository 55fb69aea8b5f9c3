"""Decide what a run must sync: which projects, and the serial the mirror reaches after.

Three ways to ask the upstream (``api-method``):

- ``xmlrpc``: ``changelog_last_serial`` and ``changelog_since_serial`` (incremental), or
  ``list_packages_with_serial`` (full). One or two requests when nothing changed.
- ``simple``: the PEP 691 JSON root listing with a serial per project; the projects whose
  serial is above the mirror's are synced. One request per run.
- ``html``: the PEP 503 root listing (names only). New names are synced; for known names
  the serial is asked of each project's PEP 691 page, so a run costs one request per
  listed project (conditional on nothing: the listing has no serials to compare).

``auto`` tries them in that order and moves on when the upstream answers 405, 404 or not
JSON; the method that worked is remembered by the mirror (``upstream-method``) and tried
first next time, so a run against an upstream without XML-RPC does not ask for it every
time. Allowlist mirrors never fetch a listing: they ask for their projects by name.

Reading the listing of a large index takes seconds (900,000 names): a full run says so
before and after, and any run says how long it took when it was slow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import canonicalize_name

from .errors import RedirectRefused, UnsafePath, UnusableEntry, UpstreamError
from .models import check_project_name
from .package import check_name_fits
from .upstream import MethodUnavailable, Upstream

logger = logging.getLogger(__name__)

METHOD_ORDER = ("xmlrpc", "simple", "html")
#: A listing that took longer than this is worth a line at INFO even on a quiet run.
SLOW_LISTING_SECONDS = 5.0


@dataclass
class Plan:
    """What one run will do."""

    method: str
    #: The serial the mirror is at once every project below is synced.
    target: int
    #: project name -> the serial its metadata must have at least (0: any).
    projects: dict[str, int]
    #: Canonical names of mirrored projects the upstream no longer lists.
    removed: set[str]
    #: Names the upstream listed that are not valid project names, with the reason.
    rejected: dict[str, str] = field(default_factory=dict)
    #: Whether ``target`` is the upstream's own serial (XML-RPC, the PEP 691 listing). When
    #: it is not (serials asked project by project), the projects' serials may raise it.
    #: When it is, they must not: a project that changed during the run would otherwise
    #: carry the mirror past changes of other projects that it never saw.
    exact_target: bool = False
    #: Methods ``auto`` tried first that the upstream does not offer, with the reason.
    unavailable: dict[str, str] = field(default_factory=dict)
    #: Canonical names of every project the upstream's listing names in this run; None when
    #: discovery read no listing (the XML-RPC changelog, an allowlist asked by name).
    listed: set[str] | None = None
    #: Canonical names the XML-RPC changelog says were removed ("remove project").
    deleted: set[str] = field(default_factory=set)

    def removal_is_said(self, canonical: str) -> bool:
        """Whether the upstream itself says ``canonical`` is gone: its changelog removed it,
        or its listing does not name it. A JSON API 404 alone is no such word."""
        return canonical in self.deleted or (self.listed is not None and canonical not in self.listed)


def discover(
    upstream: Upstream,
    method: str,
    status: int,
    known: Mapping[str, tuple[str, int]],
    allows: Callable[[str], bool],
    allowlist: set[str] | None,
    full: bool,
    remembered: str = "",
) -> Plan:
    """Ask the upstream what changed since ``status`` (everything when ``full``).

    ``known`` is the mirror's canonical name -> (display name, serial) records;
    ``remembered`` the method that worked last time, which ``auto`` tries first.
    """
    if method != "auto":
        methods: tuple[str, ...] = (method,)
    elif remembered in METHOD_ORDER:
        methods = (remembered, *(m for m in METHOD_ORDER if m != remembered))
    else:
        methods = METHOD_ORDER
    last_error: Exception | None = None
    unavailable: dict[str, str] = {}
    for name in methods:
        try:
            if allowlist is not None:
                plan = _by_name(upstream, name, status, known, allowlist, full)
            else:
                plan = _DISCOVERERS[name](upstream, status, known, full)
        except MethodUnavailable as exc:
            if method != "auto":
                raise
            logger.debug("Upstream method %s unavailable (%s); trying the next", name, exc)
            unavailable[name] = str(exc)
            last_error = exc
            continue
        plan.unavailable = unavailable
        for project in list(plan.projects):
            try:
                check_project_name(project)
                check_name_fits(project)
            except (UnsafePath, UnusableEntry) as exc:
                plan.rejected[project] = str(exc)
                del plan.projects[project]
        plan.projects = {n: s for n, s in plan.projects.items() if allows(n)}
        logger.debug(
            "Using %s: %d projects to sync, target serial %d", plan.method, len(plan.projects), plan.target
        )
        return plan
    raise UpstreamError(f"no discovery method worked against {upstream.master}: {last_error}")


def _xmlrpc(upstream: Upstream, status: int, known: Mapping[str, tuple[str, int]], full: bool) -> Plan:
    target = upstream.changelog_last_serial()
    if full or not status:
        listing = _read_listing("xmlrpc", upstream.list_packages_with_serial, announce=True)
        listed = _canonical(listing)
        return Plan("xmlrpc", target, listing, _missing(known, listed), exact_target=True, listed=listed)
    if target <= status:  # the upstream's own serial, also when below ours (the run does not believe ours then)
        return Plan("xmlrpc", target, {}, set(), exact_target=True)
    changed, deleted = upstream.changelog_since(status, target)
    return Plan("xmlrpc", target, changed, set(), exact_target=True, deleted=deleted)


def _simple(upstream: Upstream, status: int, known: Mapping[str, tuple[str, int]], full: bool) -> Plan:
    target, listing = _read_listing("simple", upstream.simple_listing, announce=full or not status)
    floor = 0 if full else status
    changed = {n: s for n, s in listing.items() if s > floor or canonicalize_name(n) not in known}
    listed = _canonical(listing)
    return Plan("simple", target, changed, _missing(known, listed), exact_target=True, listed=listed)


def _html(upstream: Upstream, status: int, known: Mapping[str, tuple[str, int]], full: bool) -> Plan:
    names = _read_listing("html", upstream.html_listing, announce=full or not status)
    projects, top = _serials_by_name(upstream, names, known, full)
    listed = _canonical(names)
    return Plan("html", max(top, status), projects, _missing(known, listed), listed=listed)


def _by_name(
    upstream: Upstream,
    method: str,
    status: int,
    known: Mapping[str, tuple[str, int]],
    allowlist: set[str],
    full: bool,
) -> Plan:
    """Discovery for allowlist mirrors: no listing, only the named projects."""
    if method == "xmlrpc":
        target = upstream.changelog_last_serial()
        if full or not status:
            return Plan("xmlrpc", target, dict.fromkeys(sorted(allowlist), 0), set(), exact_target=True)
        changed, deleted = upstream.changelog_since(status, target) if target > status else ({}, set())
        projects = {n: s for n, s in changed.items() if canonicalize_name(n) in allowlist}
        projects.update({n: 0 for n in allowlist if n not in known})
        return Plan("xmlrpc", target, projects, set(), exact_target=True, deleted=deleted)
    projects, top = _serials_by_name(upstream, sorted(allowlist), known, full)
    return Plan(method, max(top, status), projects, set())


def _serials_by_name(
    upstream: Upstream, names: Iterable[str], known: Mapping[str, tuple[str, int]], full: bool
) -> tuple[dict[str, int], int]:
    """Ask each known project's PEP 691 page for its serial; new names are synced as they are.

    Returns the projects to sync (name -> serial) and the highest serial seen.
    """
    projects: dict[str, int] = {}
    top = 0
    for name in names:
        record = known.get(canonicalize_name(name))
        if record is None or full:
            projects[name] = 0
            continue
        try:
            serial = upstream.project_page_serial(name)
        except (UnusableEntry, RedirectRefused) as exc:  # the JSON API document decides, or fails the project
            logger.debug("%s: %s", name, exc)
            projects[name] = 0
            continue
        if serial is None or serial > record[1]:
            projects[name] = serial or 0
        top = max(top, serial or 0, record[1])
    return projects, top


def _read_listing(method: str, read: Callable[[], Any], announce: bool) -> Any:
    """``read()`` the upstream's listing, saying so first on full runs and how long it took when it matters."""
    if announce:
        logger.info("Reading the upstream's project listing (%s); a large index takes a while", method)
    started = time.monotonic()
    listing = read()
    seconds = time.monotonic() - started
    count = len(listing[1] if isinstance(listing, tuple) else listing)
    level = logging.INFO if announce or seconds >= SLOW_LISTING_SECONDS else logging.DEBUG
    logger.log(level, "Read the project listing (%s): %s projects in %.1fs", method, f"{count:,}", seconds)
    return listing


def _canonical(names: Iterable[str]) -> set[str]:
    return {canonicalize_name(n) for n in names}


def _missing(known: Mapping[str, tuple[str, int]], listed: set[str]) -> set[str]:
    """The mirror's projects the listing (canonical names) does not name."""
    return {c for c in known if c not in listed}


_DISCOVERERS = {"xmlrpc": _xmlrpc, "simple": _simple, "html": _html}
