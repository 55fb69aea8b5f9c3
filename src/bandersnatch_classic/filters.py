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
import functools
import glob
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .config import did_you_mean, parse_bool
from .errors import ConfigError
from .models import Project, ReleaseFile

if TYPE_CHECKING:  # imported where used: most configs need neither, and every run starts faster
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

logger = logging.getLogger(__name__)


# -- reading the config ----------------------------------------------------------------------
#: A ``#`` comment: at the start of a line or after whitespace (so ``a#b`` in a regex survives).
_COMMENT = re.compile(r"(?:^|\s)#.*$")


def _lines(parser: configparser.ConfigParser, section: str, key: str) -> list[str]:
    """A multi-line value: one item per line, comments and blank lines dropped."""
    return _split_lines(parser.get(section, key, fallback="") or "")


def _split_lines(raw: str) -> list[str]:
    items = []
    for line in raw.splitlines():
        line = _COMMENT.sub("", line).strip()
        if line:
            items.append(line)
    return items


def _words(parser: configparser.ConfigParser, section: str, key: str) -> list[str]:
    """A list value whose items may also share a line, separated by whitespace."""
    return [word for line in _lines(parser, section, key) for word in line.split()]


def _requirement(line: str, where: str) -> Requirement:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(line)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(
            f"{where}: {line!r} is not allowed; use a project name with an optional PEP 440 specifier "
            f"such as foo>=1.0 ({reason})"
        ) from exc


def _regexes(values: Iterable[str], where: str) -> list[re.Pattern[str]]:
    patterns = []
    for value in values:
        try:
            patterns.append(re.compile(value))
        except re.error as exc:
            raise ConfigError(f"{where}: {value!r} is not a valid regular expression ({exc})") from exc
    return patterns


_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(?:([KMGTPE])(?:i?B)?|B|bytes?)?$", re.IGNORECASE)


def parse_size(text: str, where: str) -> int:
    """``500``, ``10K``, ``1.5G``, ``2GiB``, ``1 GB`` -> bytes (powers of 1024, as the reference tool)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ConfigError(
            f"{where} = {text!r} is not a size; use bytes or a number with K, M, G, T or P (e.g. 500M, 1G)"
        )
    number, unit = float(match.group(1)), (match.group(2) or "").upper()
    return int(number * 1024 ** ("KMGTPE".index(unit) + 1)) if unit else int(number)


def _int(parser: configparser.ConfigParser, section: str, key: str, default: int) -> int:
    raw = parser.get(section, key, fallback=None)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"[{section}] {key} = {raw.strip()!r} is not allowed; use a whole number 0 or more")
    return value


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(specifier: SpecifierSet, version: str) -> bool:
    """Whether ``version`` lies in ``specifier``, pre-releases included; False if it does not parse."""
    try:
        return specifier.contains(version, prereleases=True)
    except InvalidVersion:  # older packaging raises where newer returns False
        return False


def _walk(document: Any, path: str) -> Any:
    """The value at a dotted path (``info.classifiers``), or None when any step is missing."""
    node = document
    for part in path.split("."):
        if isinstance(node, Mapping) and node.get(part) is not None:
            node = node[part]
        else:
            return None
    return node


def _strings(value: Any) -> list[str]:
    """A metadata value as the list of strings regexes see; [] when it is null or empty."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = list(value.values())
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if item is None:
            continue
        text = ("true" if item else "false") if isinstance(item, bool) else str(item)
        if text != "":
            out.append(text)
    return out


# -- project filters (name only) ---------------------------------------------------------------
class AllowlistProject:
    """``[allowlist] packages``: mirror only the listed projects (every line, specifier or not)."""

    name = "allowlist_project"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        reqs = [_requirement(line, "[allowlist] packages") for line in _lines(parser, "allowlist", "packages")]
        self.names = {canonicalize_name(r.name) for r in reqs}
        self.extras = _extras_of(reqs)

    def allows(self, name: str) -> bool:
        return not self.names or canonicalize_name(name) in self.names


class BlocklistProject:
    """``[blocklist] packages``: never mirror the listed projects (lines without a specifier;
    a line with one is for ``blocklist_release``)."""

    name = "blocklist_project"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        reqs = [_requirement(line, "[blocklist] packages") for line in _lines(parser, "blocklist", "packages")]
        self.names = {canonicalize_name(r.name) for r in reqs if not r.specifier}

    def allows(self, name: str) -> bool:
        return canonicalize_name(name) not in self.names


class RegexProject:
    """``[filter_regex] packages``: never mirror projects whose name matches a regex.

    A name is tested as given and in its canonical form, so the answer does not depend on
    which spelling of the name a listing or a JSON document used.
    """

    name = "regex_project"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.patterns = _regexes(_lines(parser, "filter_regex", "packages"), "[filter_regex] packages")

    def allows(self, name: str) -> bool:
        forms = {name, canonicalize_name(name)}
        return not any(p.match(form) for p in self.patterns for form in forms)


#: A pip option after a requirement on the same line (``foo==1.0 --hash=sha256:...``).
_PIP_OPTION = re.compile(r"\s+--[A-Za-z].*$")


def _parse_requirements(text: str, where: str) -> list[Requirement]:
    """The requirements of a requirements file; pip options, comments and what is not a
    requirement on the index (paths, URLs, ``-e``) are skipped, with a warning for the latter."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        line = _COMMENT.sub("", line)
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append((start, pending + line))
        pending = ""
    if pending:
        logical.append((start, pending))
    for number, line in logical:
        line = _PIP_OPTION.sub("", line).strip()
        if not line or line.startswith("-"):
            continue  # comments and pip options (-r, -c, -e, --index-url ...)
        try:
            out.append(Requirement(line))
        except InvalidRequirement:
            logger.warning("%s:%d: %r is not a requirement on an index; skipped", where, number, line)
    return out


def read_requirements(parser: configparser.ConfigParser) -> list[Requirement]:
    """The requirements of the ``[allowlist] requirements`` files (names or globs) below
    ``requirements_path`` (unset: relative names are relative to the working directory, as
    the reference tool does it)."""
    base = (parser.get("allowlist", "requirements_path", fallback="") or "").strip()
    requirements = []
    for pattern in _lines(parser, "allowlist", "requirements"):
        full = str(Path(base) / pattern) if base else pattern
        paths = sorted(glob.glob(full)) if glob.has_magic(pattern) else [full]
        if not paths:
            raise ConfigError(f"[allowlist] requirements: no file matches {full!r}; fix requirements or requirements_path")
        for path in paths:
            try:
                text = Path(path).read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise ConfigError(f"[allowlist] requirements: cannot read {path} ({reason})") from exc
            requirements += _parse_requirements(text, path)
    return requirements


def _extras_of(requirements: Iterable[Requirement]) -> dict[str, set[str]]:
    """Project -> the extras its lines ask for (``requests[socks]``), for resolve-dependencies."""
    extras: dict[str, set[str]] = {}
    for req in requirements:
        if req.extras:
            extras.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    return extras


class ProjectRequirements:
    """``[allowlist] requirements``: mirror only the projects named in requirements files."""

    name = "project_requirements"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        reqs = read_requirements(parser)
        self.names = {canonicalize_name(r.name) for r in reqs}
        self.extras = _extras_of(reqs)

    def allows(self, name: str) -> bool:
        return not self.names or canonicalize_name(name) in self.names


# -- metadata filters (whole project) ----------------------------------------------------------
class _Condition:
    """One ``[tag:...]dotted.path = regexes`` line of a regex metadata section.

    Tags: ``any`` (default), ``all``, ``none`` choose how values and regexes combine;
    ``match-null`` (default) / ``not-null`` say whether a missing or empty field passes;
    ``search`` finds a regex anywhere in a value instead of at its start.
    """

    def __init__(self, key: str, values: list[str], section: str) -> None:
        *tags, self.path = (part.strip() for part in key.split(":"))
        self.mode, self.nulls_match, search = "any", True, False
        for tag in tags:
            lowered = tag.lower()
            if lowered in ("any", "all", "none"):
                self.mode = lowered
            elif lowered in ("match-null", "not-null"):
                self.nulls_match = lowered == "match-null"
            elif lowered == "search":
                search = True
            else:
                raise ConfigError(
                    f"[{section}] {key}: unknown tag {tag!r}; use any, all, none, match-null, not-null or search"
                )
        if not self.path:
            raise ConfigError(f"[{section}] {key}: no field path after the tags; use e.g. info.classifiers")
        if not values:
            raise ConfigError(f"[{section}] {key} has no regular expression; give one or more, one per line")
        self.key = key
        self.patterns = _regexes(values, f"[{section}] {key}")
        self._test = (lambda p, s: p.search(s) is not None) if search else (lambda p, s: p.match(s) is not None)

    def holds(self, document: Mapping[str, Any]) -> bool:
        values = _strings(_walk(document, self.path))
        if not values:
            return self.nulls_match
        if self.mode == "all":  # as the reference tool: every value matches every regex
            return all(self._test(p, v) for p in self.patterns for v in values)
        found = any(self._test(p, v) for p in self.patterns for v in values)
        return not found if self.mode == "none" else found


_TAG_WORDS = frozenset({"any", "all", "none", "match-null", "not-null", "search"})


def _tagged_items(parser: configparser.ConfigParser, section: str) -> list[tuple[str, list[str]]]:
    """The ``[tag:...]dotted.path = values`` keys of a section, with their value lines.

    The config parser takes only ``=`` as a delimiter (as the reference tool's does), so
    ``not-null:info.license = x`` is one key; a key that is only a tag has no field path.
    """
    if not parser.has_section(section):
        return []
    defaults = parser.defaults()
    items = []
    for key in parser[section]:
        if key in defaults:
            continue
        value = parser.get(section, key, fallback="") or ""
        if key.strip().lower() in _TAG_WORDS:
            raise ConfigError(f"[{section}] {key} is a tag without a field path; use tag:dotted.path = values")
        items.append((key, _split_lines(value)))
    return items


def _conditions(parser: configparser.ConfigParser, section: str) -> list[_Condition]:
    return [_Condition(key, values, section) for key, values in _tagged_items(parser, section)]


class RegexProjectMetadata:
    """``[regex_project_metadata]``: keep projects whose JSON document satisfies every line."""

    name = "regex_project_metadata"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.conditions = _conditions(parser, "regex_project_metadata")

    def keeps(self, project: Project) -> bool:
        document = project.raw or {"info": project.info}
        for condition in self.conditions:
            if not condition.holds(document):
                logger.debug("%s: dropped by regex_project_metadata (%s)", project.name, condition.key)
                return False
        return True


class SizeProjectMetadata:
    """``[size_project_metadata] max_package_size``: drop projects whose files together are
    larger than this. Projects named in ``[allowlist] packages`` are kept whatever their size."""

    name = "size_project_metadata"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        raw = (parser.get("size_project_metadata", "max_package_size", fallback="") or "").strip()
        self.limit = parse_size(raw, "[size_project_metadata] max_package_size") if raw else 0
        self.allowed = AllowlistProject(parser).names

    def keeps(self, project: Project) -> bool:
        if self.limit <= 0 or project.canonical in self.allowed:
            return True
        total = sum(f.size for f in project.files())
        if total > self.limit:
            logger.debug("%s: %d bytes in all, more than max_package_size %d", project.name, total, self.limit)
            return False
        return True


class VersionsCountProjectMetadata:
    """``[versions_count_project_metadata] min_versions / max_versions``: drop projects with
    fewer or more versions than that, as the upstream lists them (0 or unset: no bound).
    Projects named in ``[allowlist] packages`` are kept whatever their count."""

    name = "versions_count_project_metadata"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        section = "versions_count_project_metadata"
        self.minimum = _int(parser, section, "min_versions", 0)
        self.maximum = _int(parser, section, "max_versions", 0)
        if self.maximum and self.minimum > self.maximum:
            raise ConfigError(
                f"[{section}] min_versions = {self.minimum} is more than max_versions = {self.maximum}; "
                "use a min_versions no larger than max_versions"
            )
        self.allowed = AllowlistProject(parser).names

    def keeps(self, project: Project) -> bool:
        if project.canonical in self.allowed:
            return True
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


# -- release-file filters ------------------------------------------------------------------------
#: platform name -> (platform tag fragments, packagetypes, file name endings)
_PLATFORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "windows": (("win32", "win_amd64", "win_arm64", "win_ia64", "win-amd64", "win-arm64"), ("bdist_wininst", "bdist_msi"), (".exe", ".msi")),
    "macos": (("macosx",), ("bdist_dmg",), (".dmg",)),
    "freebsd": (("freebsd",), (), ()),
    "linux": (("linux",), ("bdist_rpm",), (".rpm",)),  # linux_*, manylinux*, musllinux*
}
_PLATFORM_ALIASES = {"win": "windows", "macosx": "macos", "osx": "macos", "darwin": "macos"}
_PY_ENTRY = re.compile(r"^py(\d)(?:\.(\d+))?$")
#: A wheel's Python tag: an implementation (generic, CPython, PyPy, IronPython, Jython,
#: GraalPy) and the Python version it implements (``graalpy312`` is Python 3.12).
_PY_TAG = re.compile(r"^(?:py|cp|pp|ip|jy|graalpy)(\d)(\d*)$")
_PY_IN_NAME = re.compile(r"-py(\d)\.(\d+)(?=[.-])")
_SDIST_ENDINGS = (".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar")

Python = tuple[str, "str | None"]  # (major, minor or None for "every minor")


class ExcludePlatform:
    """``[blocklist] platforms``: drop files built only for the listed platforms or Pythons.

    Entries: ``windows``, ``macos``, ``freebsd``, ``linux``; Python versions ``pyX`` or
    ``pyX.Y``; anything else is a platform tag (``manylinux1_i686``, ``win32``) matched as a
    fragment of a wheel's platform tags or of the rest of the file name after the version.
    Source distributions and ``none-any`` wheels are never dropped.
    """

    name = "exclude_platform"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.fragments: list[str] = []
        self.types: set[str] = set()
        self.endings: tuple[str, ...] = ()
        self.pythons: list[Python] = []
        entries = [e.lower() for e in _words(parser, "blocklist", "platforms")]
        for entry in entries:
            entry = _PLATFORM_ALIASES.get(entry, entry)
            match = _PY_ENTRY.match(entry)
            if match:
                self.pythons.append((match.group(1), match.group(2)))
            elif entry in _PLATFORMS:
                fragments, types, endings = _PLATFORMS[entry]
                self.fragments += fragments
                self.types |= set(types)
                self.endings += endings
            elif entry in ("any", "none", "source", "sdist"):
                raise ConfigError(
                    f"[blocklist] platforms: {entry!r} is not allowed; use windows, macos, freebsd, linux, "
                    "pyX or pyX.Y, or a platform tag such as manylinux1_i686"
                )
            else:
                if not re.search(r"[\d_-]", entry):
                    logger.warning(
                        "[blocklist] platforms: %r is not a known platform; it is matched as a platform tag fragment", entry
                    )
                self.fragments.append(entry)

    def _excluded(self, python: Python) -> bool:
        major, minor = python
        return any(major == m and (n is None or n == minor) for m, n in self.pythons)

    @staticmethod
    def _tag_python(interpreter: str, abi: str = "") -> Python | None:
        match = _PY_TAG.match(interpreter)
        if not match:
            return None
        # cp37-abi3 runs on every CPython 3 from 3.7: only excluding all of Python 3 drops it
        minor = None if abi == "abi3" else (match.group(2) or None)
        return match.group(1), minor

    def _file_pythons(self, file: ReleaseFile, rest: str) -> list[Python]:
        """The Pythons a non-wheel file is for, from the JSON ``python_version`` or its name."""
        field = str(file.raw.get("python_version") or "").strip().lower()
        numeric = re.match(r"^(\d)(?:\.(\d+))?$", field)
        if numeric:
            return [(numeric.group(1), numeric.group(2))]
        if field and field not in ("source", "any"):
            found = [self._tag_python(tag) for tag in field.split(".")]
            if found and all(found):
                return found  # type: ignore[return-value]
        return [(m.group(1), m.group(2)) for m in _PY_IN_NAME.finditer(rest)]

    def keeps(self, project: Project, file: ReleaseFile) -> bool:
        lower = file.filename.lower()
        if file.packagetype in self.types or (self.endings and lower.endswith(self.endings)):
            return False
        if lower.endswith(".whl"):
            try:
                tags = parse_wheel_filename(file.filename)[3]
            except InvalidWheelFilename:
                tags = frozenset()
            if tags:
                if self.fragments and any(
                    t.platform != "any" and any(f in t.platform for f in self.fragments) for t in tags
                ):
                    return False
                if self.pythons:
                    pythons = [self._tag_python(t.interpreter, t.abi) for t in tags]
                    if all(p is not None and self._excluded(p) for p in pythons):
                        return False
                return True
        if file.packagetype == "sdist" or (not file.packagetype and lower.endswith(_SDIST_ENDINGS)):
            return True
        # what follows the version: "foo-1.0.win32-py2.7.exe" -> ".win32-py2.7.exe"
        marker = f"-{file.version.lower()}"
        rest = lower.split(marker, 1)[1] if marker in lower else lower
        if self.fragments and any(f in rest for f in self.fragments):
            return False
        if self.pythons:
            pythons = self._file_pythons(file, rest)
            if pythons and all(self._excluded(p) for p in pythons):
                return False
        return True


def _file_document(project: Project, file: ReleaseFile) -> dict[str, Any]:
    """What release-file metadata filters see, as the reference tool: ``info`` of the project,
    ``release`` (the version string) and ``release_file`` (the file's JSON entry)."""
    return {"info": project.info, "release": file.version, "release_file": file.raw}


class RegexReleaseFileMetadata:
    """``[regex_release_file_metadata]``: keep files whose metadata satisfies every line.

    Keys are dotted paths into ``release_file.*``, ``info.*`` or ``release``, with the
    tags of ``regex_project_metadata``.
    """

    name = "regex_release_file_metadata"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        self.conditions = _conditions(parser, "regex_release_file_metadata")

    def keeps(self, project: Project, file: ReleaseFile) -> bool:
        document = _file_document(project, file)
        return all(c.holds(document) for c in self.conditions)


#: Pythons tried when two ranges are compared (plus the bounds of the ranges themselves).
_PYTHON_GRID = tuple(Version(f"{major}.{minor}") for major, top in ((2, 7), (3, 30)) for minor in range(top + 1))


def _near(specifiers: Iterable[Any]) -> set[Version]:
    """Versions on and just past every bound of some specifiers: where two ranges can meet."""
    out: set[Version] = set()
    for spec in specifiers:
        version = _version(spec.version.removesuffix(".*"))
        if version is None:
            continue
        release = version.release
        out.add(version)
        for bumped in (
            release + (1,),
            release[:-1] + (release[-1] + 1,),
            (release[0], (release[1] if len(release) > 1 else 0) + 1),
            (release[0] + 1, 0),
        ):
            out.add(Version(".".join(map(str, bumped))))
    return out


@functools.lru_cache(maxsize=4096)
def _overlap(field: str, wanted: str) -> bool:
    """Whether two specifier sets admit a common version (tested on likely candidates)."""
    from packaging.specifiers import SpecifierSet

    a, b = SpecifierSet(field), SpecifierSet(wanted)
    candidates = set(_PYTHON_GRID) | _near(a) | _near(b)
    return any(a.contains(v, prereleases=True) and b.contains(v, prereleases=True) for v in candidates)


class _Range:
    """One key of ``[version_range_release_file_metadata]``: a field and the versions or
    ranges it must meet."""

    def __init__(self, key: str, values: list[str], nulls_match: bool, section: str) -> None:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        *tags, self.path = (part.strip() for part in key.split(":"))
        self.nulls_match = nulls_match
        for tag in tags:
            if tag.lower() in ("match-null", "not-null"):
                self.nulls_match = tag.lower() == "match-null"
            else:
                raise ConfigError(f"[{section}] {key}: unknown tag {tag!r}; use match-null or not-null")
        if not self.path:
            raise ConfigError(f"[{section}] {key}: no field path after the tags; use e.g. release_file.requires_python")
        if not values:
            raise ConfigError(f"[{section}] {key} is empty; give versions (3.8) or PEP 440 specifiers (>=3.8), one per line")
        self.key = key
        self.versions: list[Version] = []
        self.ranges: list[SpecifierSet] = []
        for value in values:
            value = value.strip().strip("\"'")
            version = _version(value)
            if version is not None:
                self.versions.append(version)
                continue
            try:
                self.ranges.append(SpecifierSet(value))
            except InvalidSpecifier:
                raise ConfigError(
                    f"[{section}] {key} = {value!r} is not allowed; use versions (3.8) or PEP 440 specifiers "
                    "(>=3.8), one per line"
                ) from None
        self._cache: dict[str, bool] = {}

    def holds(self, document: Mapping[str, Any]) -> bool:
        value = _walk(document, self.path)
        if value is None or value == "" or value == []:
            return self.nulls_match
        text = str(value).strip()
        known = self._cache.get(text)
        if known is None:
            known = self._cache[text] = self._meets(text)
        return known

    def _meets(self, text: str) -> bool:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            admitted = SpecifierSet(text)  # a range such as requires_python
        except InvalidSpecifier:
            version = _version(text)  # a version such as release or info.version
            if version is None:
                logger.debug("%s = %r is neither a version nor a specifier: kept", self.path, text)
                return True
            return version in self.versions or any(r.contains(version, prereleases=True) for r in self.ranges)
        if not admitted:
            return True  # an empty specifier admits every version
        return any(admitted.contains(v, prereleases=True) for v in self.versions) or any(
            _overlap(str(admitted), str(r)) for r in self.ranges
        )


class VersionRangeReleaseFileMetadata:
    """``[version_range_release_file_metadata]``: keep files whose field meets a version range.

    ``release_file.requires_python = 3.9`` (versions, one per line, as the reference tool)
    keeps files whose ``requires_python`` admits one of those versions; a specifier such as
    ``>=3.9`` keeps files whose range overlaps it. A field holding a version (``release``)
    must equal one of the versions or lie in one of the ranges. Files without the field are
    kept unless ``nulls_match = false`` or the key has the ``not-null:`` tag.
    """

    name = "version_range_release_file_metadata"

    def __init__(self, parser: configparser.ConfigParser) -> None:
        section = "version_range_release_file_metadata"
        self.ranges: list[_Range] = []
        if not parser.has_section(section):
            return
        nulls_match = parse_bool(parser.get(section, "nulls_match", fallback=None), f"[{section}] nulls_match", True)
        for key, values in _tagged_items(parser, section):
            if key != "nulls_match":
                self.ranges.append(_Range(key, values, nulls_match, section))

    def keeps(self, project: Project, file: ReleaseFile) -> bool:
        document = _file_document(project, file)
        return all(r.holds(document) for r in self.ranges)


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
                    logger.warning("Unknown key %r in [%s] is ignored%s", key, section, did_you_mean(key, known))
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
