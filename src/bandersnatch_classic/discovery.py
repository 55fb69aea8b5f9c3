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
JSON. Allowlist mirrors never fetch a listing: they ask for their projects by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

from .errors import UnsafePath, UpstreamError
from .models import check_project_name
from .upstream import MethodUnavailable, Upstream

logger = logging.getLogger(__name__)

METHOD_ORDER = ("xmlrpc", "simple", "html")


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


def discover(
    upstream: Upstream,
    method: str,
    status: int,
    known: Mapping[str, tuple[str, int]],
    allows: Callable[[str], bool],
    allowlist: set[str] | None,
    full: bool,
) -> Plan:
    """Ask the upstream what changed since ``status`` (everything when ``full``).

    ``known`` is the mirror's canonical name -> (display name, serial) records.
    """
    methods = METHOD_ORDER if method == "auto" else (method,)
    last_error: Exception | None = None
    for name in methods:
        try:
            if allowlist is not None:
                plan = _by_name(upstream, name, status, known, allowlist, full)
            else:
                plan = _DISCOVERERS[name](upstream, status, known, full)
        except MethodUnavailable as exc:
            if method != "auto":
                raise
            logger.info("Upstream method %s unavailable (%s); trying the next", name, exc)
            last_error = exc
            continue
        for project in list(plan.projects):
            try:
                check_project_name(project)
            except UnsafePath as exc:
                plan.rejected[project] = str(exc)
                del plan.projects[project]
        plan.projects = {n: s for n, s in plan.projects.items() if allows(n)}
        logger.info(
            "Using %s: %d projects to sync, target serial %d", plan.method, len(plan.projects), plan.target
        )
        return plan
    raise UpstreamError(f"no discovery method worked against {upstream.master}: {last_error}")


def _xmlrpc(upstream: Upstream, status: int, known: Mapping[str, tuple[str, int]], full: bool) -> Plan:
    target = upstream.changelog_last_serial()
    if full or not status:
        listing = upstream.list_packages_with_serial()
        return Plan("xmlrpc", target, listing, _missing(known, listing), exact_target=True)
    if target <= status:
        return Plan("xmlrpc", status, {}, set(), exact_target=True)
    return Plan("xmlrpc", target, upstream.changelog_since(status, target), set(), exact_target=True)


def _simple(upstream: Upstream, status: int, known: Mapping[str, tuple[str, int]], full: bool) -> Plan:
    target, listing = upstream.simple_listing()
    floor = 0 if full else status
    changed = {n: s for n, s in listing.items() if s > floor or canonicalize_name(n) not in known}
    return Plan("simple", max(target, status), changed, _missing(known, listing), exact_target=True)


def _html(upstream: Upstream, status: int, known: Mapping[str, tuple[str, int]], full: bool) -> Plan:
    names = upstream.html_listing()
    projects, top = _serials_by_name(upstream, names, known, full)
    return Plan("html", max(top, status), projects, _missing(known, names))


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
        changed = upstream.changelog_since(status, target) if target > status else {}
        projects = {n: s for n, s in changed.items() if canonicalize_name(n) in allowlist}
        projects.update({n: 0 for n in allowlist if n not in known})
        return Plan("xmlrpc", max(target, status), projects, set(), exact_target=True)
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
        serial = upstream.project_page_serial(name)
        if serial is None or serial > record[1]:
            projects[name] = serial or 0
        top = max(top, serial or 0, record[1])
    return projects, top


def _missing(known: Mapping[str, tuple[str, int]], listed: Iterable[str]) -> set[str]:
    upstream_names = {canonicalize_name(n) for n in listed}
    return {c for c in known if c not in upstream_names}


_DISCOVERERS = {"xmlrpc": _xmlrpc, "simple": _simple, "html": _html}
