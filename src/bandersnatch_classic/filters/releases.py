"""Release filters."""

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
from ._config import _lines, _words, _requirement, _regexes, _int, _version, _in_range, read_requirements


# -- release filters -----------------------------------------------------------------------------
def _specifiers(parser: configparser.ConfigParser, section: str) -> dict[str, list[SpecifierSet]]:
    out: dict[str, list[SpecifierSet]] = {}
    for line in _lines(parser, section, "packages"):
        req = _requirement(line, f"[{section}] packages")
        if req.specifier:
            out.setdefault(canonicalize_name(req.name), []).append(req.specifier)
    return out


class AllowlistRelease:
    """``[allowlist] packages`` lines with a specifier (``foo>=1.0``): keep only those versions
    of ``foo``; a version is kept when it matches any of the project's lines."""

    name = "allowlist_release"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.specifiers = _specifiers(parser, "allowlist")

    def keeps(self, project: Project, version: str) -> bool:
        specs = self.specifiers.get(project.canonical)
        return not specs or any(_in_range(s, version) for s in specs)


class BlocklistRelease:
    """``[blocklist] packages`` lines with a specifier (``foo<1.0``): drop those versions."""

    name = "blocklist_release"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.specifiers = _specifiers(parser, "blocklist")

    def keeps(self, project: Project, version: str) -> bool:
        specs = self.specifiers.get(project.canonical)
        return not specs or not any(_in_range(s, version) for s in specs)


class PrereleaseRelease:
    """Drop pre-releases and development releases (of ``[filter_prerelease] packages`` only, if set)."""

    name = "prerelease_release"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.only = {canonicalize_name(n) for n in _words(parser, "filter_prerelease", "packages")}

    def keeps(self, project: Project, version: str) -> bool:
        if self.only and project.canonical not in self.only:
            return True
        parsed = _version(version)
        return parsed is None or not parsed.is_prerelease


class RegexRelease:
    """``[filter_regex] releases``: drop versions that match a regex (from their start)."""

    name = "regex_release"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.patterns = _regexes(_lines(parser, "filter_regex", "releases"), "[filter_regex] releases")

    def keeps(self, project: Project, version: str) -> bool:
        return not any(p.match(version) for p in self.patterns)


class ProjectRequirementsPinned:
    """Keep only the versions the requirements files ask for: ``foo==1.2`` keeps 1.2 of foo,
    ``foo>=2`` keeps 2 and later; a project listed once without a specifier keeps everything."""

    name = "project_requirements_pinned"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.wanted: dict[str, list[SpecifierSet] | None] = {}
        for req in read_requirements(parser):
            name = canonicalize_name(req.name)
            if not req.specifier:
                self.wanted[name] = None  # some file wants every version
            elif self.wanted.get(name, []) is not None:
                self.wanted.setdefault(name, []).append(req.specifier)  # type: ignore[union-attr]

    def keeps(self, project: Project, version: str) -> bool:
        specs = self.wanted.get(project.canonical)
        return not specs or any(_in_range(s, version) for s in specs)


class LatestRelease:
    """``[latest_release] keep = N``: keep the N latest versions (by ``sort_by = version | time``).

    As the reference tool, the project's current version (``info.version``) is always among
    them: when it is not one of the N latest it takes the place of the oldest of those.
    """

    name = "latest_release"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.keep = _int(parser, "latest_release", "keep", 0)
        sort_by = (parser.get("latest_release", "sort_by", fallback="") or "version").strip().lower()
        if sort_by not in ("version", "time"):
            raise ConfigError(f"[latest_release] sort_by = {sort_by!r} is not allowed; use version or time")
        self.sort_by = sort_by

    def select(self, project: Project) -> None:
        if not self.keep or len(project.releases) <= self.keep:
            return

        def version_key(v: str) -> tuple[int, Any]:
            parsed = _version(v)
            return (1, parsed) if parsed is not None else (0, v)

        def time_key(v: str) -> tuple[str, tuple[int, Any]]:
            times = [f.upload_time.isoformat() for f in project.releases[v] if f.upload_time]
            return (min(times) if times else "", version_key(v))  # a release's time: its first upload

        ordered = sorted(project.releases, key=version_key if self.sort_by == "version" else time_key)
        kept = ordered[-self.keep :]
        current = str(project.info.get("version") or "")
        if current in project.releases and current not in kept:
            kept[0] = current
        keep = set(kept)
        for version in list(project.releases):
            if version not in keep:
                del project.releases[version]

