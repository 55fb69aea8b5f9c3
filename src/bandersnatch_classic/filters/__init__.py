"""Filters: which projects, releases and files a mirror keeps.

The config syntax and meaning are the reference tool's (``[plugins] enabled`` plus one
section per filter family), so an existing config filters the same way here; where this
module deliberately differs, docs/filters.md says so. Filters are plain classes chosen
from the config by name; nothing is registered process-wide.

Four kinds, applied in this order by :meth:`FilterSet.filter_project`:

- *project* filters decide on the name alone, before anything is fetched;
- *metadata* filters decide on the whole JSON document of a project;
- *release* filters drop versions;
- *file* filters drop single files.

``latest_release`` runs last, on the versions that still have files, so that ``keep = 3``
keeps three releases the mirror can actually serve.
"""

from __future__ import annotations

import configparser
import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name
from packaging.version import Version

from ..errors import ConfigError
from ..models import Project, ReleaseFile

if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

logger = logging.getLogger(__name__)
from ._config import _words
from .metadata import RegexProjectMetadata, RegexReleaseFileMetadata, SizeProjectMetadata, VersionRangeReleaseFileMetadata, VersionsCountProjectMetadata
from .names import AllowlistProject, BlocklistProject, ProjectRequirements, RegexProject
from .platforms import ExcludePlatform
from .releases import AllowlistRelease, BlocklistRelease, LatestRelease, PrereleaseRelease, ProjectRequirementsPinned, RegexRelease
from ._config import parse_size, read_requirements


PROJECT_FILTERS = (AllowlistProject, BlocklistProject, RegexProject, ProjectRequirements)
METADATA_FILTERS = (RegexProjectMetadata, SizeProjectMetadata, VersionsCountProjectMetadata)
RELEASE_FILTERS = (AllowlistRelease, BlocklistRelease, PrereleaseRelease, RegexRelease, ProjectRequirementsPinned)
FILE_FILTERS = (ExcludePlatform, RegexReleaseFileMetadata, VersionRangeReleaseFileMetadata)
ALL_FILTERS: dict[str, type] = {
    cls.name: cls for cls in (*PROJECT_FILTERS, *METADATA_FILTERS, *RELEASE_FILTERS, LatestRelease, *FILE_FILTERS)
}
_ALLOWLISTS = (AllowlistProject, ProjectRequirements)
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


def _idle(f: Any) -> str | None:
    """Why an enabled filter can drop nothing with this config, or None."""
    if isinstance(f, AllowlistProject) and not f.names:
        return "[allowlist] packages names no project, so every project is allowed"
    if isinstance(f, ProjectRequirements) and not f.names:
        return "[allowlist] requirements name no project, so every project is allowed"
    if isinstance(f, BlocklistProject) and not f.names:
        return "[blocklist] packages names no project (without a version specifier)"
    if isinstance(f, (RegexProject, RegexRelease)) and not f.patterns:
        return f"[filter_regex] {'packages' if isinstance(f, RegexProject) else 'releases'} is empty"
    if isinstance(f, SizeProjectMetadata) and f.limit <= 0:
        return "[size_project_metadata] max_package_size is not set"
    if isinstance(f, VersionsCountProjectMetadata) and not (f.minimum or f.maximum):
        return "[versions_count_project_metadata] sets neither min_versions nor max_versions"
    if isinstance(f, (RegexProjectMetadata, RegexReleaseFileMetadata)) and not f.conditions:
        return f"[{f.name}] has no keys"
    if isinstance(f, VersionRangeReleaseFileMetadata) and not f.ranges:
        return "[version_range_release_file_metadata] has no keys"
    if isinstance(f, (AllowlistRelease, BlocklistRelease)) and not f.specifiers:
        section = "allowlist" if isinstance(f, AllowlistRelease) else "blocklist"
        return f"[{section}] packages has no line with a version specifier"
    if isinstance(f, ProjectRequirementsPinned) and not f.wanted:
        return "[allowlist] requirements name no project"
    if isinstance(f, LatestRelease) and not f.keep:
        return "[latest_release] keep is 0 or not set"
    if isinstance(f, ExcludePlatform) and not (f.fragments or f.types or f.pythons):
        return "[blocklist] platforms is empty"
    return None


def _check_sections(parser: configparser.ConfigParser, enabled: list[str]) -> None:
    """Warn about keys no filter reads and about sections no enabled filter reads."""
    defaults = parser.defaults()
    for section, known in _KNOWN_KEYS.items():
        if parser.has_section(section):
            for key in parser[section]:
                if key not in known and key not in defaults:
                    logger.warning("Unknown key %r in [%s] is ignored", key, section)
    for section, users in _SECTION_USERS.items():
        if parser.has_section(section) and not set(users) & set(enabled):
            logger.warning(
                "[%s] has no effect: enable %s in [plugins] enabled", section, " or ".join(users)
            )
    if parser.has_section("blocklist") and parser.has_option("blocklist", "platforms") and "exclude_platform" not in enabled:
        logger.warning("[blocklist] platforms has no effect: enable exclude_platform in [plugins] enabled")


class FilterSet:
    """The filters one config enables, applied to names and to fetched projects."""

    def __init__(self, filters: Iterable[Any] = ()) -> None:
        self.filters = list(filters)
        self.active = [f.name for f in self.filters]
        self._projects = [f for f in self.filters if isinstance(f, PROJECT_FILTERS)]
        self._metadata = [f for f in self.filters if isinstance(f, METADATA_FILTERS)]
        self._releases = [f for f in self.filters if isinstance(f, RELEASE_FILTERS)]
        self._latest = [f for f in self.filters if isinstance(f, LatestRelease)]
        self._files = [f for f in self.filters if isinstance(f, FILE_FILTERS)]

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> FilterSet:
        """The filters of ``[plugins] enabled`` (names, or ``all``); none without [plugins].

        Raises :class:`ConfigError` (one line naming section, key and value) for an unknown
        filter name or a value a filter cannot use.
        """
        names = [n.lower() for n in _words(parser, "plugins", "enabled")] if parser.has_section("plugins") else []
        names_given = list(names)
        if "all" in names:
            names = list(ALL_FILTERS)
        chosen = []
        for name in dict.fromkeys(names):
            if name not in ALL_FILTERS:
                hint = f"renamed {_RENAMED[name]}" if name in _RENAMED else f"use all or some of {', '.join(ALL_FILTERS)}"
                raise ConfigError(f"[plugins] enabled: unknown filter {name!r}; {hint}")
            chosen.append(ALL_FILTERS[name](parser))
        filters = cls(chosen)
        if not parser.has_section("plugins") and any(parser.has_section(s) for s in _KNOWN_KEYS.keys() | _SECTION_USERS.keys()):
            logger.warning("Filter sections are set but [plugins] enabled is missing: no filter runs")
        elif parser.has_section("plugins"):
            _check_sections(parser, filters.active)
        explicit = "all" not in names_given
        for f in filters.filters:
            reason = _idle(f)
            if reason:  # worth a warning when named on purpose; expected of most filters under "all"
                logger.log(logging.WARNING if explicit else logging.DEBUG, "%s is enabled but does nothing: %s", f.name, reason)
        return filters

    def allows_name(self, name: str) -> bool:
        """Whether every project filter lets ``name`` (any spelling) be mirrored."""
        return all(f.allows(name) for f in self._projects)

    def allowlist(self) -> set[str] | None:
        """The only projects (canonical names) this mirror may hold when an allowlist filter
        lists some; None when the whole upstream is eligible."""
        lists = [f.names for f in self._projects if isinstance(f, _ALLOWLISTS) and f.names]
        if not lists:
            return None
        names = set().union(*lists)
        return {n for n in names if self.allows_name(n)}

    def extras(self) -> dict[str, set[str]]:
        """Project (canonical) -> the extras the allowlists ask for, e.g. ``requests[socks]``."""
        out: dict[str, set[str]] = {}
        for f in self._projects:
            for name, extras in getattr(f, "extras", {}).items():
                out.setdefault(name, set()).update(extras)
        return out

    def allow_more(self, names: Iterable[str]) -> None:
        """Widen the allowlists by ``names`` (canonical): dependencies of allowlisted projects."""
        names = [canonicalize_name(n) for n in names]
        for f in self._projects:
            if isinstance(f, _ALLOWLISTS) and f.names:
                f.names.update(names)

    def allows_dependency(self, name: str) -> bool:
        """Whether a dependency may be mirrored: every project filter but the allowlists agrees."""
        return all(f.allows(name) for f in self._projects if not isinstance(f, _ALLOWLISTS))

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
        return True
