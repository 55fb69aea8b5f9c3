"""Metadata filters: decide on a project's JSON document, or on one file's entry in it.

The project metadata filters run once the document is fetched and before any version is
looked at; the release-file metadata filters run per file, after the release filters. Both
regex filters share one condition language: each key of their section is a dotted path into
the document, optionally prefixed with tags (``all:``, ``not-null:``, ``search:`` ...), and its
lines are regexes. A missing path is a null, never an error: upstreams leave fields out.
"""

from __future__ import annotations

import configparser
import functools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from packaging.version import Version

from ..config import parse_bool
from ..errors import ConfigError
from ..models import Project, ReleaseFile
from ._config import canonical_names, parse_size, parse_version, regexes, split_lines, whole_number
from .names import AllowlistProject

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

logger = logging.getLogger(__name__)


# -- the condition language ------------------------------------------------------------------
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


class Condition:
    """One ``[tag:...]dotted.path = regexes`` line of a regex metadata section.

    Tags: ``any`` (default), ``all``, ``none`` choose how values and regexes combine;
    ``match-null`` (default) / ``not-null`` say whether a missing or empty field passes;
    ``search`` finds a regex anywhere in a value instead of at its start.
    """

    def __init__(
        self,
        path: str,
        patterns: Sequence[re.Pattern[str]],
        mode: str = "any",
        nulls_match: bool = True,
        search: bool = False,
        key: str | None = None,
    ) -> None:
        self.path = path
        self.patterns = list(patterns)
        self.mode = mode
        self.nulls_match = nulls_match
        self.key = key or path  # as the config wrote it, for the log
        self.search = search

    def use_search(self) -> None:
        """Find the regexes anywhere in a value (``search = true`` in the section)."""
        self.search = True

    def _test(self, pattern: re.Pattern[str], value: str) -> bool:
        found = pattern.search(value) if self.search else pattern.match(value)
        return found is not None

    @classmethod
    def parse(cls, key: str, values: list[str], section: str) -> Condition:
        *tags, path = (part.strip() for part in key.split(":"))
        mode, nulls_match, search = "any", True, False
        for tag in tags:
            lowered = tag.lower()
            if lowered in ("any", "all", "none"):
                mode = lowered
            elif lowered in ("match-null", "not-null"):
                nulls_match = lowered == "match-null"
            elif lowered == "search":
                search = True
            else:
                raise ConfigError(
                    f"[{section}] {key}: unknown tag {tag!r}; use any, all, none, match-null, not-null or search"
                )
        if not path:
            raise ConfigError(f"[{section}] {key}: no field path after the tags; use e.g. info.classifiers")
        if not values:
            raise ConfigError(f"[{section}] {key} has no regular expression; give one or more, one per line")
        return cls(path, regexes(values, f"[{section}] {key}"), mode, nulls_match, search, key)

    def holds(self, document: Mapping[str, Any]) -> bool:
        values = _strings(_walk(document, self.path))
        if not values:
            return self.nulls_match
        if self.mode == "all":  # as the reference tool: every value matches every regex
            return all(self._test(p, v) for p in self.patterns for v in values)
        found = any(self._test(p, v) for p in self.patterns for v in values)
        return not found if self.mode == "none" else found


_TAG_WORDS = frozenset({"any", "all", "none", "match-null", "not-null", "search"})


#: ``search = true`` in a regex metadata section: every line of it finds its regexes anywhere
#: in a value (``re.search``), as the reference tool's key of that name does.
SEARCH_KEY = "search"


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
        if key in defaults or key == SEARCH_KEY:
            continue
        value = parser.get(section, key, fallback="") or ""
        if key.strip().lower() in _TAG_WORDS:
            raise ConfigError(f"[{section}] {key} is a tag without a field path; use tag:dotted.path = values")
        items.append((key, split_lines(value)))
    return items


def _conditions(parser: configparser.ConfigParser, section: str) -> list[Condition]:
    search = parse_bool(parser.get(section, SEARCH_KEY, fallback=None), f"[{section}] {SEARCH_KEY}", False)
    conditions = [Condition.parse(key, values, section) for key, values in _tagged_items(parser, section)]
    if search:
        for condition in conditions:
            condition.use_search()
    return conditions


class _RegexConditions:
    """A regex metadata filter: the conditions its section (named as the filter) lists."""

    name = ""

    def __init__(self, conditions: Iterable[Condition]) -> None:
        self.conditions = list(conditions)

    @classmethod
    def from_config(cls: type[_C], parser: configparser.ConfigParser) -> _C:
        return cls(_conditions(parser, cls.name))

    def idle(self) -> str | None:
        return None if self.conditions else f"[{self.name}] has no keys"


_C = TypeVar("_C", bound=_RegexConditions)


# -- project metadata filters ------------------------------------------------------------------
class RegexProjectMetadata(_RegexConditions):
    """``[regex_project_metadata]``: keep projects whose JSON document satisfies every line."""

    name = "regex_project_metadata"

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

    def __init__(self, limit: int, allowed: Iterable[str] = ()) -> None:
        self.limit = limit
        self.allowed = canonical_names(allowed)

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> SizeProjectMetadata:
        raw = (parser.get(cls.name, "max_package_size", fallback="") or "").strip()
        limit = parse_size(raw, f"[{cls.name}] max_package_size") if raw else 0
        return cls(limit, AllowlistProject.from_config(parser).names)

    def idle(self) -> str | None:
        return None if self.limit > 0 else "[size_project_metadata] max_package_size is not set"

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

    def __init__(self, minimum: int = 0, maximum: int = 0, allowed: Iterable[str] = ()) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.allowed = canonical_names(allowed)

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> VersionsCountProjectMetadata:
        minimum = whole_number(parser, cls.name, "min_versions", 0)
        maximum = whole_number(parser, cls.name, "max_versions", 0)
        if maximum and minimum > maximum:
            raise ConfigError(
                f"[{cls.name}] min_versions = {minimum} is more than max_versions = {maximum}; "
                "use a min_versions no larger than max_versions"
            )
        return cls(minimum, maximum, AllowlistProject.from_config(parser).names)

    def idle(self) -> str | None:
        if self.minimum or self.maximum:
            return None
        return "[versions_count_project_metadata] sets neither min_versions nor max_versions"

    def keeps(self, project: Project) -> bool:
        if project.canonical in self.allowed:
            return True
        count = len(project.releases)
        return count >= self.minimum and (not self.maximum or count <= self.maximum)


# -- release-file metadata filters -------------------------------------------------------------
def _file_document(project: Project, file: ReleaseFile) -> dict[str, Any]:
    """What release-file metadata filters see, as the reference tool: ``info`` of the project,
    ``release`` (the version string) and ``release_file`` (the file's JSON entry)."""
    return {"info": project.info, "release": file.version, "release_file": file.raw}


class RegexReleaseFileMetadata(_RegexConditions):
    """``[regex_release_file_metadata]``: keep files whose metadata satisfies every line.

    Keys are dotted paths into ``release_file.*``, ``info.*`` or ``release``, with the
    tags of ``regex_project_metadata``.
    """

    name = "regex_release_file_metadata"

    def keeps(self, project: Project, file: ReleaseFile) -> bool:
        document = _file_document(project, file)
        return all(c.holds(document) for c in self.conditions)


#: Pythons tried when two ranges are compared (plus the bounds of the ranges themselves).
_PYTHON_GRID = tuple(Version(f"{major}.{minor}") for major, top in ((2, 7), (3, 30)) for minor in range(top + 1))


def _near(specifiers: Iterable[Any]) -> set[Version]:
    """Versions on and just past every bound of some specifiers: where two ranges can meet."""
    out: set[Version] = set()
    for spec in specifiers:
        version = parse_version(spec.version.removesuffix(".*"))
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


class VersionRange:
    """One key of ``[version_range_release_file_metadata]``: a field and the versions or
    ranges it must meet."""

    def __init__(
        self,
        path: str,
        versions: Iterable[Version] = (),
        ranges: Iterable[SpecifierSet] = (),
        nulls_match: bool = True,
        key: str | None = None,
    ) -> None:
        self.path = path
        self.versions = list(versions)
        self.ranges = list(ranges)
        self.nulls_match = nulls_match
        self.key = key or path
        self._cache: dict[str, bool] = {}  # field value -> the answer: many files share one

    @classmethod
    def parse(cls, key: str, values: list[str], nulls_match: bool, section: str) -> VersionRange:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        *tags, path = (part.strip() for part in key.split(":"))
        for tag in tags:
            if tag.lower() in ("match-null", "not-null"):
                nulls_match = tag.lower() == "match-null"
            else:
                raise ConfigError(f"[{section}] {key}: unknown tag {tag!r}; use match-null or not-null")
        if not path:
            raise ConfigError(f"[{section}] {key}: no field path after the tags; use e.g. release_file.requires_python")
        if not values:
            raise ConfigError(f"[{section}] {key} is empty; give versions (3.8) or PEP 440 specifiers (>=3.8), one per line")
        versions: list[Version] = []
        ranges: list[SpecifierSet] = []
        for value in values:
            value = value.strip().strip("\"'")
            version = parse_version(value)
            if version is not None:
                versions.append(version)
                continue
            try:
                ranges.append(SpecifierSet(value))
            except InvalidSpecifier:
                raise ConfigError(
                    f"[{section}] {key} = {value!r} is not allowed; use versions (3.8) or PEP 440 specifiers "
                    "(>=3.8), one per line"
                ) from None
        return cls(path, versions, ranges, nulls_match, key)

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
            version = parse_version(text)  # a version such as release or info.version
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

    def __init__(self, ranges: Iterable[VersionRange]) -> None:
        self.ranges = list(ranges)

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> VersionRangeReleaseFileMetadata:
        section = cls.name
        if not parser.has_section(section):
            return cls(())
        nulls_match = parse_bool(parser.get(section, "nulls_match", fallback=None), f"[{section}] nulls_match", True)
        return cls(
            VersionRange.parse(key, values, nulls_match, section)
            for key, values in _tagged_items(parser, section)
            if key != "nulls_match"
        )

    def idle(self) -> str | None:
        return None if self.ranges else f"[{self.name}] has no keys"

    def keeps(self, project: Project, file: ReleaseFile) -> bool:
        document = _file_document(project, file)
        return all(r.holds(document) for r in self.ranges)
