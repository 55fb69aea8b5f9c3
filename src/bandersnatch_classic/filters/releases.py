"""Release filters: which versions of a project stay, decided on the version string.

They run after the metadata filters and before the file filters, on every version the
upstream lists; ``latest_release`` is the exception and runs last (see :class:`LatestRelease`).
Specifier tests include pre-releases: a line ``foo>=1.0`` in a config means every version from
1.0, and ``2.0rc1`` is one of them.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

from ..errors import ConfigError
from ..models import Project
from ._config import FilterRegexes, canonical_names, parse_version, read_requirements, requirements, whole_number, words

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

#: Project (any spelling) -> the specifier sets its lines give; a version is wanted when any admits it.
Specifiers = Mapping[str, Iterable["SpecifierSet"]]


def _by_project(specifiers: Specifiers) -> dict[str, tuple[SpecifierSet, ...]]:
    return {canonicalize_name(name): tuple(specs) for name, specs in specifiers.items()}


def admits(specifiers: Iterable[SpecifierSet], version: str) -> bool:
    """Whether any of ``specifiers`` admits ``version``, pre-releases included; False for a
    version that does not parse."""
    for specifier in specifiers:
        try:
            if specifier.contains(version, prereleases=True):
                return True
        except InvalidVersion:  # older packaging raises where newer returns False
            continue
    return False


class _PackagesSpecifiers:
    """The ``[section] packages`` lines with a specifier, by project: what the allowlist and
    blocklist release filters read (the lines without one are the project filters')."""

    section = ""

    def __init__(self, specifiers: Specifiers) -> None:
        self.specifiers = _by_project(specifiers)

    @classmethod
    def from_config(cls: type[_S], parser: configparser.ConfigParser) -> _S:
        found: dict[str, list[SpecifierSet]] = {}
        for req in requirements(parser, cls.section):
            if req.specifier:
                found.setdefault(canonicalize_name(req.name), []).append(req.specifier)
        return cls(found)

    def idle(self) -> str | None:
        return None if self.specifiers else f"[{self.section}] packages has no line with a version specifier"


_S = TypeVar("_S", bound=_PackagesSpecifiers)


class AllowlistRelease(_PackagesSpecifiers):
    """``[allowlist] packages`` lines with a specifier (``foo>=1.0``): keep only those versions
    of ``foo``; a version is kept when it matches any of the project's lines."""

    name = "allowlist_release"
    section = "allowlist"

    def keeps(self, project: Project, version: str) -> bool:
        specs = self.specifiers.get(project.canonical)
        return not specs or admits(specs, version)


class BlocklistRelease(_PackagesSpecifiers):
    """``[blocklist] packages`` lines with a specifier (``foo<1.0``): drop those versions."""

    name = "blocklist_release"
    section = "blocklist"

    def keeps(self, project: Project, version: str) -> bool:
        return not admits(self.specifiers.get(project.canonical, ()), version)


class PrereleaseRelease:
    """Drop pre-releases and development releases (of ``[filter_prerelease] packages`` only, if set)."""

    name = "prerelease_release"

    def __init__(self, only: Iterable[str] = ()) -> None:
        self.only = canonical_names(only)

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> PrereleaseRelease:
        return cls(words(parser, "filter_prerelease", "packages"))

    def idle(self) -> str | None:
        return None  # without a list it applies to every project

    def keeps(self, project: Project, version: str) -> bool:
        if self.only and project.canonical not in self.only:
            return True
        parsed = parse_version(version)
        return parsed is None or not parsed.is_prerelease


class RegexRelease(FilterRegexes):
    """``[filter_regex] releases``: drop versions that match a regex (from their start)."""

    name = "regex_release"
    key = "releases"

    def keeps(self, project: Project, version: str) -> bool:
        return not any(p.match(version) for p in self.patterns)


class ProjectRequirementsPinned:
    """Keep only the versions the requirements files ask for: ``foo==1.2`` keeps 1.2 of foo,
    ``foo>=2`` keeps 2 and later; a project listed once without a specifier keeps everything.

    ``wanted`` maps every project the files name to its specifiers, none for every version.
    """

    name = "project_requirements_pinned"

    def __init__(self, wanted: Specifiers) -> None:
        self.wanted = _by_project(wanted)

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> ProjectRequirementsPinned:
        wanted: dict[str, list[SpecifierSet] | None] = {}
        for req in read_requirements(parser):
            name = canonicalize_name(req.name)
            if not req.specifier:
                wanted[name] = None  # some file wants every version
            elif wanted.get(name, []) is not None:
                wanted.setdefault(name, []).append(req.specifier)  # type: ignore[union-attr]
        return cls({name: specs or () for name, specs in wanted.items()})

    def idle(self) -> str | None:
        return None if self.wanted else "[allowlist] requirements name no project"

    def keeps(self, project: Project, version: str) -> bool:
        specs = self.wanted.get(project.canonical)
        return not specs or admits(specs, version)


class LatestRelease:
    """``[latest_release] keep = N``: keep the N latest versions (by ``sort_by = version | time``).

    As the reference tool, the project's current version (``info.version``) is always among
    them: when it is not one of the N latest it takes the place of the oldest of those.
    """

    name = "latest_release"

    def __init__(self, keep: int, sort_by: str = "version") -> None:
        self.keep = keep
        self.sort_by = sort_by

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> LatestRelease:
        keep = whole_number(parser, "latest_release", "keep", 0)
        sort_by = (parser.get("latest_release", "sort_by", fallback="") or "version").strip().lower()
        if sort_by not in ("version", "time"):
            raise ConfigError(f"[latest_release] sort_by = {sort_by!r} is not allowed; use version or time")
        return cls(keep, sort_by)

    def idle(self) -> str | None:
        return None if self.keep else "[latest_release] keep is 0 or not set"

    def select(self, project: Project) -> None:
        if not self.keep or len(project.releases) <= self.keep:
            return

        def version_key(v: str) -> tuple[int, Any]:
            parsed = parse_version(v)
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
        for v in list(project.releases):
            if v not in keep:
                del project.releases[v]
