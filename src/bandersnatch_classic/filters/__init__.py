"""Filters: which projects, releases and files a mirror keeps.

The config syntax and meaning are the reference tool's (``[plugins] enabled`` plus one
section per filter family), so an existing config filters the same way here; where this
package deliberately differs, docs/filters.md says so. Filters are plain classes chosen
from the config by name; nothing is registered process-wide.

Four kinds, applied in this order by :meth:`FilterSet.filter_project`:

- *project* filters decide on the name alone, before anything is fetched;
- *metadata* filters decide on the whole JSON document of a project;
- *release* filters drop versions;
- *file* filters drop single files.

``latest_release`` runs last, on the versions that still have files, so that ``keep = 3``
keeps three releases the mirror can actually serve.

This package holds the registry (which config name is which class, and which sections and
keys exist) and :class:`FilterSet`; the filters live by kind in :mod:`.names`,
:mod:`.releases`, :mod:`.platforms` and :mod:`.metadata`, and reading their settings in
:mod:`._config`. Each filter is built from typed values, by its ``from_config`` from the INI
sections or directly, and says through ``idle()`` why it would drop nothing.

A :class:`FilterSet` is never changed once built: the dependencies resolve-dependencies lets
through the allowlists make a new set (:meth:`FilterSet.with_allowed`), so what a worker
forked from the engine applies is exactly the set the engine held when it forked. So do the
requirement edges that pin versions (:meth:`FilterSet.with_pins`): a project that an edge needs
keeps the newest release satisfying it, whatever the release filters chose, so that pip can
install and build the closure from the mirror alone (the blocklists still win).
"""

from __future__ import annotations

import configparser
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name

from ..errors import ConfigError
from ..models import Project
from ._config import canonical_names, check_sections, idle_error, parse_size, words
from .metadata import (
    RegexProjectMetadata,
    RegexReleaseFileMetadata,
    SizeProjectMetadata,
    VersionRangeReleaseFileMetadata,
    VersionsCountProjectMetadata,
)
from .names import AllowlistProject, BlocklistProject, NameAllowlist, ProjectRequirements, RegexProject
from .platforms import ExcludePlatform
from .releases import (
    AllowlistRelease,
    BlocklistRelease,
    LatestRelease,
    PrereleaseRelease,
    ProjectRequirementsPinned,
    RegexRelease,
)

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

__all__ = ["ALL_FILTERS", "FilterSet", "parse_size"]

logger = logging.getLogger(__name__)

PROJECT_FILTERS = (AllowlistProject, BlocklistProject, RegexProject, ProjectRequirements)
METADATA_FILTERS = (RegexProjectMetadata, SizeProjectMetadata, VersionsCountProjectMetadata)
RELEASE_FILTERS = (AllowlistRelease, BlocklistRelease, PrereleaseRelease, RegexRelease, ProjectRequirementsPinned)
FILE_FILTERS = (ExcludePlatform, RegexReleaseFileMetadata, VersionRangeReleaseFileMetadata)
ALL_FILTERS: dict[str, type[Any]] = {
    cls.name: cls for cls in (*PROJECT_FILTERS, *METADATA_FILTERS, *RELEASE_FILTERS, LatestRelease, *FILE_FILTERS)
}
#: Old names the reference tool dropped, for a helpful error.
_RENAMED = {
    "whitelist_project": "allowlist_project",
    "whitelist_release": "allowlist_release",
    "blacklist_project": "blocklist_project",
    "blacklist_release": "blocklist_release",
}
#: The keys each fixed-key filter section knows (sections of free dotted paths are not listed).
_KNOWN_KEYS = {
    "plugins": {"enabled"},
    "allowlist": {
        "packages", "requirements_path", "requirements", "resolve-dependencies", "resolve-build-dependencies",
        "python-versions", "platforms",
    },
    "blocklist": {"packages", "platforms"},
    "filter_regex": {"packages", "releases"},
    "filter_prerelease": {"packages"},
    "latest_release": {"keep", "sort_by"},
    "size_project_metadata": {"max_package_size"},
    "versions_count_project_metadata": {"min_versions", "max_versions"},
}
#: Sections read by one filter only (or two): set while no such filter is enabled, they do nothing.
_SECTION_USERS = {
    "filter_regex": ("regex_project", "regex_release"),
    "filter_prerelease": ("prerelease_release",),
    "latest_release": ("latest_release",),
    "size_project_metadata": ("size_project_metadata",),
    "versions_count_project_metadata": ("versions_count_project_metadata",),
    "regex_project_metadata": ("regex_project_metadata",),
    "regex_release_file_metadata": ("regex_release_file_metadata",),
    "version_range_release_file_metadata": ("version_range_release_file_metadata",),
}
#: Keys of the shared sections, by the filters that read them.
_KEY_USERS = {
    ("allowlist", "packages"): ("allowlist_project", "allowlist_release"),
    ("allowlist", "requirements"): ("project_requirements", "project_requirements_pinned"),
    ("blocklist", "packages"): ("blocklist_project", "blocklist_release"),
    ("blocklist", "platforms"): ("exclude_platform",),
}


class FilterSet:
    """The filters one config enables, applied to names and to fetched projects.

    ``admitted`` names (any spelling) pass the allowlists as if listed there: the dependencies
    of allowlisted projects. Every other filter still applies to them.
    """

    def __init__(
        self,
        filters: Iterable[Any] = (),
        admitted: Iterable[str] = (),
        pins: Mapping[str, Iterable[SpecifierSet]] | None = None,
    ) -> None:
        self.filters = list(filters)
        self.active = [f.name for f in self.filters]
        self._admitted = canonical_names(admitted)
        #: Canonical project -> the specifiers requirement edges put on it (see :meth:`with_pins`).
        self.pins: dict[str, tuple[SpecifierSet, ...]] = {
            canonicalize_name(k): tuple(v) for k, v in (pins or {}).items()
        }
        self._allowlists = [f for f in self.filters if isinstance(f, NameAllowlist)]
        self._others = [f for f in self.filters if isinstance(f, PROJECT_FILTERS) and not isinstance(f, NameAllowlist)]
        self._metadata = [f for f in self.filters if isinstance(f, METADATA_FILTERS)]
        self._releases = [f for f in self.filters if isinstance(f, RELEASE_FILTERS)]
        #: The release filters an edge does not override: what the operator blocked stays out.
        self._blocked = [f for f in self._releases if isinstance(f, BlocklistRelease)]
        self._latest = [f for f in self.filters if isinstance(f, LatestRelease)]
        self._files = [f for f in self.filters if isinstance(f, FILE_FILTERS)]

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> FilterSet:
        """The filters of ``[plugins] enabled`` (names, or ``all``); none without [plugins].

        Raises :class:`ConfigError` (one line naming section, key and value) for an unknown
        filter name, a value a filter cannot use, or a filter named in ``enabled`` whose
        settings make it drop nothing (an allowlist that lists no project would mirror the
        whole index).
        """
        names = [n.lower() for n in words(parser, "plugins", "enabled")] if parser.has_section("plugins") else []
        names_given = list(names)
        if "all" in names:
            names = list(ALL_FILTERS)
        chosen = []
        for name in dict.fromkeys(names):
            if name not in ALL_FILTERS:
                hint = f"renamed {_RENAMED[name]}" if name in _RENAMED else f"use all or some of {', '.join(ALL_FILTERS)}"
                raise ConfigError(f"[plugins] enabled: unknown filter {name!r}; {hint}")
            chosen.append(ALL_FILTERS[name].from_config(parser))
        filters = cls(chosen)
        if not parser.has_section("plugins") and any(parser.has_section(s) for s in _KNOWN_KEYS.keys() | _SECTION_USERS.keys()):
            logger.warning("Filter sections are set but [plugins] enabled is missing: no filter runs")
        elif parser.has_section("plugins"):
            check_sections(parser, filters.active, _KNOWN_KEYS, _SECTION_USERS, _KEY_USERS)
        for f in filters.filters:
            reason = f.idle()
            if reason and "all" not in names_given:  # named on purpose, it drops nothing: a typo, stop here
                raise idle_error(parser, f.name, reason, _KNOWN_KEYS, _KNOWN_KEYS.keys() | _SECTION_USERS.keys())
            if reason:  # expected of most filters under "all"
                logger.debug("%s is enabled but does nothing: %s", f.name, reason)
        return filters

    def with_allowed(self, names: Iterable[str]) -> FilterSet:
        """This set, with ``names`` (dependencies of allowlisted projects) also let through
        the allowlists; this set stays as it is."""
        return FilterSet(self.filters, self._admitted | canonical_names(names), self.pins)

    def with_pins(self, pins: Mapping[str, Iterable[SpecifierSet]]) -> FilterSet:
        """This set, with ``pins`` (canonical project -> the specifiers of the requirement edges
        that reach it) in place of its own: :meth:`filter_project` keeps, for each specifier,
        the newest release satisfying it that has a file the filters keep."""
        return FilterSet(self.filters, self._admitted, pins)

    def is_listed(self, name: str) -> bool:
        """Whether ``name`` is on an allowlist itself (not a dependency let through)."""
        canonical = canonicalize_name(name)
        return any(canonical in f.names for f in self._allowlists)

    def _allowlisted(self, name: str) -> bool:
        return all(f.allows(name) for f in self._allowlists) or canonicalize_name(name) in self._admitted

    def allows_name(self, name: str) -> bool:
        """Whether every project filter lets ``name`` (any spelling) be mirrored."""
        return self._allowlisted(name) and self.allows_dependency(name)

    def allowlist(self) -> set[str] | None:
        """The only projects (canonical names) this mirror may hold when an allowlist filter
        lists some; None when the whole upstream is eligible."""
        lists = [f.names | self._admitted for f in self._allowlists if f.names]
        if not lists:
            return None
        names = set().union(*lists)
        return {n for n in names if self.allows_name(n)}

    def extras(self) -> dict[str, set[str]]:
        """Project (canonical) -> the extras the allowlists ask for, e.g. ``requests[socks]``."""
        out: dict[str, set[str]] = {}
        for f in self._allowlists:
            for name, extras in f.extras.items():
                out.setdefault(name, set()).update(extras)
        return out

    def allows_dependency(self, name: str) -> bool:
        """Whether a dependency may be mirrored: every project filter but the allowlists agrees."""
        return all(f.allows(name) for f in self._others)

    def filter_project(self, project: Project) -> bool:
        """Trim ``project`` in place; False when it must not be mirrored at all.

        Order: project filters on the name, metadata filters on the whole document, release
        filters on each version, file filters on each file (a version that loses all its
        files goes; one the upstream lists without files stays), then ``latest_release``.
        """
        if not self.allows_name(project.name):
            return False
        for f in self._metadata:
            if not f.keeps(project):
                return False
        pins = self.pins.get(project.canonical, ())
        upstream = dict(project.releases) if pins else {}
        if self._releases:
            for version in list(project.releases):
                if not all(f.keeps(project, version) for f in self._releases):
                    del project.releases[version]
        if self._files:
            for version, files in list(project.releases.items()):
                kept = [file for file in files if all(f.keeps(project, file) for f in self._files)]
                if files and not kept:
                    del project.releases[version]
                else:
                    project.releases[version] = kept
        for latest in self._latest:
            latest.select(project)
        for specifier in pins:
            self._satisfy(project, upstream, specifier)
        return True

    def _satisfy(self, project: Project, upstream: dict[str, list[Any]], specifier: SpecifierSet) -> None:
        """Put back the newest release of ``upstream`` that satisfies ``specifier`` (as pip
        chooses: pre-releases only when the specifier names one or nothing else matches),
        unless a kept release already does. Only releases the blocklist keeps, with at least
        one file the file filters keep that is not yanked, qualify."""
        from packaging.version import Version

        from ..dependencies import satisfying

        if satisfying(specifier, project.releases):
            return
        candidates: dict[str, list[Any]] = {}
        for version, files in upstream.items():
            if not all(f.keeps(project, version) for f in self._blocked):
                continue
            kept = [file for file in files if all(f.keeps(project, file) for f in self._files)]
            if any(not file.yanked for file in kept):
                candidates[version] = kept
        best = max(satisfying(specifier, candidates), key=Version, default=None)
        if best is not None:
            project.releases[best] = candidates[best]
