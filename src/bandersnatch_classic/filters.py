"""Filters: which projects, releases and files a mirror keeps.

The config syntax and meaning are the reference tool's (``[plugins] enabled`` plus one
section per filter family), so an existing config filters the same way here. Filters are
plain classes chosen from the config by name; nothing is registered process-wide.

Four kinds, applied in this order:

- *project* filters decide on the name alone, before anything is fetched;
- *metadata* filters decide on the whole JSON document of a project;
- *release* filters drop versions;
- *file* filters drop single files.
"""

from __future__ import annotations

import configparser
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .errors import ConfigError
from .models import Project, ReleaseFile

if TYPE_CHECKING:  # imported where used: most configs need neither, and every run starts faster
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

logger = logging.getLogger(__name__)


# -- reading the config ----------------------------------------------------------------------
def _lines(parser: configparser.ConfigParser, section: str, key: str) -> list[str]:
    """A multi-line list value: one item per line (or whitespace), ``#`` comments dropped."""
    raw = parser.get(section, key, fallback="") or ""
    items = []
    for line in raw.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            items.append(line)
    return items


def _requirement(line: str, where: str) -> Requirement:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(line)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"{where}: {line!r} is not a project name with an optional PEP 440 specifier ({reason})") from exc


def _regexes(values: Iterable[str], where: str) -> list[re.Pattern[str]]:
    patterns = []
    for value in values:
        try:
            patterns.append(re.compile(value))
        except re.error as exc:
            raise ConfigError(f"{where}: {value!r} is not a valid regular expression ({exc})") from exc
    return patterns


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)\s*$", re.IGNORECASE)


def parse_size(text: str, where: str) -> int:
    """``500``, ``10K``, ``1.5G``, ``2GiB`` -> bytes (powers of 1024, as the reference tool)."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{where}: {text!r} is not a size (a number with an optional K, M, G, T or P)")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** ("KMGTP".index(unit) + 1)) if unit else int(number)


def _int(parser: configparser.ConfigParser, section: str, key: str, default: int) -> int:
    raw = parser.get(section, key, fallback=None)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"[{section}] {key} = {raw!r}: expected a whole number >= 0") from None
    if value < 0:
        raise ConfigError(f"[{section}] {key} = {raw!r}: expected a whole number >= 0")
    return value


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


# -- project filters (name only) ---------------------------------------------------------------
class AllowlistProject:
    """``[allowlist] packages``: mirror only the listed projects."""

    name = "allowlist_project"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.names = {
            canonicalize_name(_requirement(line, "[allowlist] packages").name) for line in _lines(parser, "allowlist", "packages")
        }

    def allows(self, name: str) -> bool:
        return not self.names or canonicalize_name(name) in self.names


class BlocklistProject:
    """``[blocklist] packages``: never mirror the listed projects (lines without a specifier)."""

    name = "blocklist_project"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        reqs = [_requirement(line, "[blocklist] packages") for line in _lines(parser, "blocklist", "packages")]
        self.names = {canonicalize_name(r.name) for r in reqs if not r.specifier}

    def allows(self, name: str) -> bool:
        return canonicalize_name(name) not in self.names


class RegexProject:
    """``[filter_regex] packages``: never mirror projects whose name matches a regex."""

    name = "regex_project"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.patterns = _regexes(_lines(parser, "filter_regex", "packages"), "[filter_regex] packages")

    def allows(self, name: str) -> bool:
        return not any(p.match(name) for p in self.patterns)


def read_requirements(parser: configparser.ConfigParser) -> list[Requirement]:
    """The requirements of ``[allowlist] requirements`` files (globs) below ``requirements_path``."""
    base = Path(parser.get("allowlist", "requirements_path", fallback="") or ".")
    requirements = []
    for pattern in _lines(parser, "allowlist", "requirements"):
        matches = sorted(base.glob(pattern)) if any(c in pattern for c in "*?[") else [base / pattern]
        if not matches:
            raise ConfigError(f"[allowlist] requirements: no file matches {str(base / pattern)!r}")
        for path in matches:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"[allowlist] requirements: cannot read {path} ({exc.strerror})") from exc
            for number, line in enumerate(text.splitlines(), 1):
                line = line.split(" #", 1)[0].strip()
                if not line or line.startswith(("#", "-")):
                    continue  # comments and pip options (-r, -e, --index-url ...)
                line = line.split(";", 1)[0].strip() if "@" not in line else line
                requirements.append(_requirement(line.rstrip("\\").strip(), f"{path}:{number}"))
    return requirements


class ProjectRequirements:
    """``[allowlist] requirements``: mirror only the projects named in requirements files."""

    name = "project_requirements"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.names = {canonicalize_name(r.name) for r in read_requirements(parser)}

    def allows(self, name: str) -> bool:
        return not self.names or canonicalize_name(name) in self.names


# -- metadata filters (whole project) ----------------------------------------------------------
_TAGS = {"all", "any", "none", "match-null", "not-null", "search"}


class _Condition:
    """One ``[tags:]dotted.path = regexes`` line of a metadata section."""

    def __init__(self, key: str, values: list[str], section: str) -> None:
        *tags, self.path = key.split(":")
        unknown = set(tags) - _TAGS
        if unknown:
            raise ConfigError(f"[{section}] {key}: unknown tag {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(_TAGS))})")
        self.mode = next((t for t in ("all", "none") if t in tags), "any")
        self.match_null = "match-null" in tags
        self.search = "search" in tags
        self.patterns = _regexes(values, f"[{section}] {key}")

    def holds(self, document: Mapping[str, Any]) -> bool:
        value: Any = document
        for part in self.path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None or value == [] or value == "":
            return self.match_null
        items = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        test: Callable[[str], bool] = (
            (lambda s: any(p.search(s) for p in self.patterns))
            if self.search
            else (lambda s: any(p.match(s) for p in self.patterns))
        )
        if self.mode == "all":
            return all(test(i) for i in items)
        if self.mode == "none":
            return not any(test(i) for i in items)
        return any(test(i) for i in items)


def _conditions(parser: configparser.ConfigParser, section: str) -> list[_Condition]:
    if not parser.has_section(section):
        return []
    return [_Condition(key, _lines(parser, section, key), section) for key in parser[section] if key not in parser.defaults()]


class RegexProjectMetadata:
    """``[regex_project_metadata]``: keep projects whose JSON metadata matches every line."""

    name = "regex_project_metadata"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.conditions = _conditions(parser, "regex_project_metadata")

    def keeps(self, project: Project) -> bool:
        return all(c.holds(project.raw) for c in self.conditions)


class SizeProjectMetadata:
    """``[size_project_metadata] max_package_size``: drop projects larger than this in all.

    Projects named in ``[allowlist] packages`` are kept whatever their size.
    """

    name = "size_project_metadata"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        raw = parser.get("size_project_metadata", "max_package_size", fallback="") or ""
        self.limit = parse_size(raw, "[size_project_metadata] max_package_size") if raw.strip() else 0
        self.allowed = AllowlistProject(parser).names

    def keeps(self, project: Project) -> bool:
        if not self.limit or project.canonical in self.allowed:
            return True
        return sum(f.size for f in project.files()) <= self.limit


class VersionsCountProjectMetadata:
    """``[versions_count_project_metadata] min_versions / max_versions``: drop projects with
    fewer or more versions than that (0: no bound)."""

    name = "versions_count_project_metadata"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        section = "versions_count_project_metadata"
        self.minimum = _int(parser, section, "min_versions", 0)
        self.maximum = _int(parser, section, "max_versions", 0)

    def keeps(self, project: Project) -> bool:
        count = len(project.releases)
        return count >= self.minimum and (not self.maximum or count <= self.maximum)


# -- release filters -----------------------------------------------------------------------------
def _specifiers(parser: configparser.ConfigParser, section: str) -> dict[str, list[SpecifierSet]]:
    out: dict[str, list[SpecifierSet]] = {}
    for line in _lines(parser, section, "packages"):
        req = _requirement(line, f"[{section}] packages")
        if req.specifier:
            out.setdefault(canonicalize_name(req.name), []).append(req.specifier)
    return out


class AllowlistRelease:
    """``[allowlist] packages`` lines with a specifier (``foo>=1.0``): keep only those versions."""

    name = "allowlist_release"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.specifiers = _specifiers(parser, "allowlist")

    def keeps(self, project: Project, version: str) -> bool:
        specs = self.specifiers.get(project.canonical)
        return not specs or any(s.contains(version, prereleases=True) for s in specs)


class BlocklistRelease:
    """``[blocklist] packages`` lines with a specifier (``foo<1.0``): drop those versions."""

    name = "blocklist_release"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.specifiers = _specifiers(parser, "blocklist")

    def keeps(self, project: Project, version: str) -> bool:
        specs = self.specifiers.get(project.canonical)
        return not specs or not any(s.contains(version, prereleases=True) for s in specs)


class PrereleaseRelease:
    """Drop pre-releases and development releases (of ``[filter_prerelease] packages`` only, if set)."""

    name = "prerelease_release"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.only = {canonicalize_name(n) for n in _lines(parser, "filter_prerelease", "packages")}

    def keeps(self, project: Project, version: str) -> bool:
        if self.only and project.canonical not in self.only:
            return True
        parsed = _version(version)
        return parsed is None or not parsed.is_prerelease


class RegexRelease:
    """``[filter_regex] releases``: drop versions that match a regex."""

    name = "regex_release"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.patterns = _regexes(_lines(parser, "filter_regex", "releases"), "[filter_regex] releases")

    def keeps(self, project: Project, version: str) -> bool:
        return not any(p.match(version) for p in self.patterns)


class ProjectRequirementsPinned:
    """Keep only the versions pinned (``==``) in the requirements files, for pinned projects."""

    name = "project_requirements_pinned"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.pinned: dict[str, list[SpecifierSet]] = {}
        for req in read_requirements(parser):
            if any(s.operator in ("==", "===") for s in req.specifier):
                self.pinned.setdefault(canonicalize_name(req.name), []).append(req.specifier)

    def keeps(self, project: Project, version: str) -> bool:
        specs = self.pinned.get(project.canonical)
        return not specs or any(s.contains(version, prereleases=True) for s in specs)


class LatestRelease:
    """``[latest_release] keep = N``: keep the N latest versions (by ``sort_by = version | time``),
    and always the project's current version."""

    name = "latest_release"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.keep = _int(parser, "latest_release", "keep", 0)
        self.sort_by = (parser.get("latest_release", "sort_by", fallback="version") or "version").strip()
        if self.sort_by not in ("version", "time"):
            raise ConfigError(f"[latest_release] sort_by = {self.sort_by!r}: expected version or time")

    def select(self, project: Project) -> None:
        if not self.keep or len(project.releases) <= self.keep:
            return

        def version_key(v: str) -> tuple[int, Any]:
            parsed = _version(v)
            return (1, parsed) if parsed is not None else (0, v)

        def time_key(v: str) -> str:
            times = [f.upload_time.isoformat() for f in project.releases[v] if f.upload_time]
            return max(times) if times else ""

        ordered = sorted(project.releases, key=version_key if self.sort_by == "version" else time_key)
        kept = set(ordered[-self.keep :])
        current = str(project.info.get("version") or "")
        if current in project.releases:
            kept.add(current)
        for version in list(project.releases):
            if version not in kept:
                del project.releases[version]


# -- release-file filters ------------------------------------------------------------------------
_PLATFORMS = {
    "windows": ("win32", "win_amd64", "win_arm64", "win-amd64", "win_ia64", "win-arm64"),
    "macos": ("macosx",),
    "freebsd": ("freebsd",),
    "linux": ("linux", "manylinux", "musllinux"),
}
_PLATFORM_TYPES = {"windows": ("bdist_wininst", "bdist_msi"), "macos": ("bdist_dmg",)}
_PYTAG = re.compile(r"^py(\d)(?:\.(\d+))?$")


class ExcludePlatform:
    """``[blocklist] platforms``: drop files built only for the listed platforms or Pythons.

    Entries: ``windows``, ``macos``, ``freebsd``, ``linux``; Python versions such as
    ``py2``, ``py2.7`` or ``py3.7``; anything else is a platform tag (``manylinux1_i686``).
    Source distributions and ``none-any`` wheels are never dropped by platform.
    """

    name = "exclude_platform"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.fragments: list[str] = []
        self.types: set[str] = set()
        self.pythons: list[tuple[str, str | None]] = []
        for entry in (e.lower() for e in _lines(parser, "blocklist", "platforms")):
            match = _PYTAG.match(entry)
            if match:
                self.pythons.append((match.group(1), match.group(2)))
            elif entry in _PLATFORMS:
                self.fragments += _PLATFORMS[entry]
                self.types |= set(_PLATFORM_TYPES.get(entry, ()))
            else:
                self.fragments.append(entry)

    def _python_excluded(self, tag: str) -> bool:
        match = re.match(r"^(?:py|cp|pp|ip|jy)(\d)(\d*)$", tag)
        if not match:
            return False
        major, minor = match.group(1), match.group(2)
        return any(major == m and (n is None or n == minor) for m, n in self.pythons)

    def keeps(self, project: Project, file: ReleaseFile) -> bool:
        if file.packagetype in self.types:
            return False
        name = file.filename.lower()
        if name.endswith(".whl"):
            try:
                tags = parse_wheel_filename(file.filename)[3]
            except InvalidWheelFilename:
                tags = frozenset()
            if tags:
                platforms = {t.platform for t in tags}
                interpreters = {t.interpreter for t in tags}
                if platforms != {"any"} and all(any(f in p for f in self.fragments) for p in platforms):
                    return False
                return not (self.pythons and all(self._python_excluded(i) for i in interpreters))
        if name.endswith((".exe", ".msi")) and "win32" in self.fragments:
            return False
        if file.packagetype not in ("sdist", "") and any(f in name for f in self.fragments):
            return False
        version = str(file.raw.get("python_version") or "")
        if self.pythons and version not in ("", "source", "any"):
            tag = version if version.startswith(("py", "cp")) else "py" + version.replace(".", "")
            return not self._python_excluded(tag)
        return True


class RegexReleaseFileMetadata:
    """``[regex_release_file_metadata]``: keep files whose JSON entry matches every line.

    Keys are dotted paths into the file's entry (``release_file.packagetype``), with the
    same tags as ``regex_project_metadata``.
    """

    name = "regex_release_file_metadata"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.conditions = _conditions(parser, "regex_release_file_metadata")

    def keeps(self, project: Project, file: ReleaseFile) -> bool:
        document = {"release_file": file.raw, "info": project.info, "release": {"version": file.version}}
        return all(c.holds(document) for c in self.conditions)


class VersionRangeReleaseFileMetadata:
    """``[version_range_release_file_metadata]``: keep files whose field is in a version range.

    ``release_file.requires_python = >=3.8`` keeps files whose ``requires_python`` admits
    some Python in that range; a field holding a version (``info.version``) must satisfy
    the specifier. ``nulls_match = true`` (default) keeps files that lack the field.
    """

    name = "version_range_release_file_metadata"
    _PYTHONS = [Version(f"{major}.{minor}") for major, top in ((2, 7), (3, 30)) for minor in range(top + 1)]

    def __init__(self, parser: configparser.ConfigParser) -> None:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        section = "version_range_release_file_metadata"
        self.nulls_match = True
        self.ranges: dict[str, SpecifierSet] = {}
        if not parser.has_section(section):
            return
        for key, value in parser[section].items():
            if key == "nulls_match":
                self.nulls_match = value.strip().lower() in ("1", "true", "yes", "on")
                continue
            try:
                self.ranges[key] = SpecifierSet(value.strip().strip("\"'"))
            except InvalidSpecifier as exc:
                raise ConfigError(f"[{section}] {key} = {value!r} is not a PEP 440 specifier ({exc})") from exc

    def keeps(self, project: Project, file: ReleaseFile) -> bool:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        document = {"release_file": file.raw, "info": project.info, "release": {"version": file.version}}
        for path, wanted in self.ranges.items():
            value: Any = document
            for part in path.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            if not value:
                if not self.nulls_match:
                    return False
                continue
            version = _version(str(value))
            if version is not None:
                if not wanted.contains(version, prereleases=True):
                    return False
                continue
            try:
                admitted = SpecifierSet(str(value))
            except InvalidSpecifier:
                continue  # an unparsable field says nothing either way
            if not any(wanted.contains(v) and admitted.contains(v) for v in self._PYTHONS):
                return False
        return True


PROJECT_FILTERS = (AllowlistProject, BlocklistProject, RegexProject, ProjectRequirements)
METADATA_FILTERS = (RegexProjectMetadata, SizeProjectMetadata, VersionsCountProjectMetadata)
RELEASE_FILTERS = (AllowlistRelease, BlocklistRelease, PrereleaseRelease, RegexRelease, ProjectRequirementsPinned)
FILE_FILTERS = (ExcludePlatform, RegexReleaseFileMetadata, VersionRangeReleaseFileMetadata)
ALL_FILTERS: dict[str, type] = {
    cls.name: cls for cls in (*PROJECT_FILTERS, *METADATA_FILTERS, *RELEASE_FILTERS, LatestRelease, *FILE_FILTERS)
}


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
        """The filters of ``[plugins] enabled`` (names, or ``all``); none without [plugins]."""
        names = _lines(parser, "plugins", "enabled") if parser.has_section("plugins") else []
        if "all" in names:
            names = list(ALL_FILTERS)
        chosen = []
        for name in dict.fromkeys(names):
            if name not in ALL_FILTERS:
                raise ConfigError(
                    f"[plugins] enabled: unknown filter {name!r} (known: all, {', '.join(sorted(ALL_FILTERS))})"
                )
            chosen.append(ALL_FILTERS[name](parser))
        return cls(chosen)

    def allows_name(self, name: str) -> bool:
        return all(f.allows(name) for f in self._projects)

    def allowlist(self) -> set[str] | None:
        """The only projects this mirror may hold, when an allowlist says so (else None)."""
        lists = [f.names for f in self._projects if isinstance(f, (AllowlistProject, ProjectRequirements)) and f.names]
        if not lists:
            return None
        names = set().union(*lists)
        return {n for n in names if self.allows_name(n)}

    def allow_more(self, names: Iterable[str]) -> None:
        """Widen the allowlists by ``names`` (canonical): dependencies of allowlisted projects."""
        for f in self._projects:
            if isinstance(f, (AllowlistProject, ProjectRequirements)) and f.names:
                f.names.update(names)

    def allows_dependency(self, name: str) -> bool:
        """Whether a dependency may be mirrored: every project filter but the allowlists agrees."""
        return all(f.allows(name) for f in self._projects if not isinstance(f, (AllowlistProject, ProjectRequirements)))

    def filter_project(self, project: Project) -> bool:
        """Trim ``project`` in place; False when it must not be mirrored at all."""
        if not self.allows_name(project.name):
            return False
        if not all(f.keeps(project) for f in self._metadata):
            return False
        if self._releases:
            for version in list(project.releases):
                if not all(f.keeps(project, version) for f in self._releases):
                    del project.releases[version]
        for latest in self._latest:
            latest.select(project)
        if self._files:
            for version, files in project.releases.items():
                project.releases[version] = [f for f in files if all(k.keeps(project, f) for k in self._files)]
        return True
