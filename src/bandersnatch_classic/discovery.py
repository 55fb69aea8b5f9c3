"""Decide what a run must sync: which projects, and the serial the mirror reaches after.

Three ways to ask the upstream (``api-method``):

- ``xmlrpc``: ``changelog_last_serial`` and ``changelog_since_serial`` (incremental), or
  ``list_packages_with_serial`` (full). One or two requests when nothing changed.
- ``simple``: the PEP 691 JSON root listing with a serial per project; the projects whose
  serial is above the mirror's are synced. One request per run.
- ``html``: the PEP 503 root listing (names only). New names are synced; for known names
  the serial is asked of each project's PEP 691 page, so a run costs one request per
  listed project.

The root listing and the project pages are asked conditionally (``If-None-Match``,
``If-Modified-Since``) with the validators of the upstream's last answer, kept in
``page-validators.json`` (:data:`~bandersnatch_classic.statefiles.VALIDATORS`): an unchanged
listing or page costs a 304 and no body, and its serial is the one that answer gave. A full
run (``--force-check``, a first run) asks without them.

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

from .errors import MethodUnavailable, RedirectRefused, UnsafePath, UnusableEntry, UpstreamError
from .models import check_project_name
from .package import check_name_fits
from .transport import PageValidators
from .upstream import Upstream

logger = logging.getLogger(__name__)

METHOD_ORDER = ("xmlrpc", "simple", "html")
#: A listing that took longer than this is worth a line at INFO even on a quiet run.
SLOW_LISTING_SECONDS = 5.0
#: The key of the root listing among the validators (no project name has a slash).
ROOT = "/"


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
    #: Canonical name (or :data:`ROOT`) -> the validators of the upstream's last answer for
    #: that page: what the engine keeps once the plan is accepted, for the next run.
    validators: dict[str, PageValidators] = field(default_factory=dict)

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
    validators: Mapping[str, PageValidators] | None = None,
) -> Plan:
    """Ask the upstream what changed since ``status`` (everything when ``full``).

    ``known`` is the mirror's canonical name -> (display name, serial) records;
    ``remembered`` the method that worked last time, which ``auto`` tries first;
    ``validators`` those of the upstream's last answers, to ask its pages conditionally.
    """
    kept = {} if full else dict(validators or {})
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
            seen = dict(kept)  # updated by the discoverer with every answer it gets
            if allowlist is not None:
                plan = _by_name(upstream, name, status, known, allowlist, full, seen)
            else:
                plan = _DISCOVERERS[name](upstream, status, known, full, seen)
            plan.validators = seen
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


def _xmlrpc(
    upstream: Upstream, status: int, known: Mapping[str, tuple[str, int]], full: bool, seen: dict[str, PageValidators]
) -> Plan:
    target = upstream.changelog_last_serial()
    if full or not status:
        listing = _read_listing("xmlrpc", upstream.list_packages_with_serial, announce=True)
        listed = _canonical(listing)
        return Plan("xmlrpc", target, listing, _missing(known, listed), exact_target=True, listed=listed)
    if target <= status:  # the upstream's own serial, also when below ours (the run does not believe ours then)
        return Plan("xmlrpc", target, {}, set(), exact_target=True)
    changed, deleted = upstream.changelog_since(status, target)
    return Plan("xmlrpc", target, changed, set(), exact_target=True, deleted=deleted)


def _simple(
    upstream: Upstream, status: int, known: Mapping[str, tuple[str, int]], full: bool, seen: dict[str, PageValidators]
) -> Plan:
    answer = _read_listing("simple", lambda: upstream.simple_listing(seen.get(ROOT)), announce=full or not status)
    if answer is None:  # 304: the listing is the one the last accepted plan came from
        return Plan("simple", max(seen[ROOT].serial, status), {}, set(), exact_target=True)
    target, listing, seen[ROOT] = answer
    floor = 0 if full else status
    changed = {n: s for n, s in listing.items() if s > floor or canonicalize_name(n) not in known}
    listed = _canonical(listing)
    return Plan("simple", target, changed, _missing(known, listed), exact_target=True, listed=listed)


def _html(
    upstream: Upstream, status: int, known: Mapping[str, tuple[str, int]], full: bool, seen: dict[str, PageValidators]
) -> Plan:
    answer = _read_listing("html", lambda: upstream.html_listing(seen.get(ROOT)), announce=full or not status)
    if answer is None:  # 304: the same names as when the last accepted plan was made
        names = [display for display, _serial in known.values()]
    else:
        names, seen[ROOT] = answer
    projects, top = _serials_by_name(upstream, names, known, full, seen)
    listed = _canonical(names)
    return Plan("html", max(top, status), projects, _missing(known, listed), listed=listed)


def _by_name(
    upstream: Upstream,
    method: str,
    status: int,
    known: Mapping[str, tuple[str, int]],
    allowlist: set[str],
    full: bool,
    seen: dict[str, PageValidators],
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
    projects, top = _serials_by_name(upstream, sorted(allowlist), known, full, seen)
    return Plan(method, max(top, status), projects, set())


def _serials_by_name(
    upstream: Upstream,
    names: Iterable[str],
    known: Mapping[str, tuple[str, int]],
    full: bool,
    seen: dict[str, PageValidators],
) -> tuple[dict[str, int], int]:
    """Ask each known project's PEP 691 page for its serial (conditionally, with the
    validators in ``seen``, which the answers update); new names are synced as they are.

    Returns the projects to sync (name -> serial) and the highest serial seen.
    """
    projects: dict[str, int] = {}
    top = 0
    for name in names:
        canonical = canonicalize_name(name)
        record = known.get(canonical)
        if record is None or full:
            projects[name] = 0
            continue
        try:
            page = upstream.project_page_serial(name, seen.get(canonical))
        except (UnusableEntry, RedirectRefused) as exc:  # the JSON API document decides, or fails the project
            logger.debug("%s: %s", name, exc)
            seen.pop(canonical, None)
            projects[name] = 0
            continue
        if page is None:
            seen.pop(canonical, None)
        else:
            seen[canonical] = page
        serial = page.serial if page is not None else None
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
    if listing is None:
        logger.debug("The project listing (%s) has not changed since the last run (304)", method)
        return None
    names = listing if isinstance(listing, dict) else listing[1] if method == "simple" else listing[0]
    count = len(names)
    level = logging.INFO if announce or seconds >= SLOW_LISTING_SECONDS else logging.DEBUG
    logger.log(level, "Read the project listing (%s): %s projects in %.1fs", method, f"{count:,}", seconds)
    return listing


def _canonical(names: Iterable[str]) -> set[str]:
    return {canonicalize_name(n) for n in names}


def _missing(known: Mapping[str, tuple[str, int]], listed: set[str]) -> set[str]:
    """The mirror's projects the listing (canonical names) does not name."""
    return {c for c in known if c not in listed}


_DISCOVERERS = {"xmlrpc": _xmlrpc, "simple": _simple, "html": _html}
