"""Project filters: decide on a project's name alone, before anything about it is fetched.

They are the cheapest filters and the only ones discovery can use (a name from a listing or a
changelog is all it has), so an allowlist also bounds what a run asks the upstream for. Every
name is compared in canonical form: listings, changelogs and JSON documents spell names
differently, and the answer must not depend on which one a name came from.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from ._config import FilterRegexes, canonical_names, read_requirements, requirements

if TYPE_CHECKING:
    from packaging.requirements import Requirement


def _extras_of(reqs: Iterable[Requirement]) -> dict[str, set[str]]:
    """Project -> the extras its lines ask for (``requests[socks]``), for resolve-dependencies."""
    extras: dict[str, set[str]] = {}
    for req in reqs:
        if req.extras:
            extras.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    return extras


class NameAllowlist:
    """Mirror only the listed projects; an empty list allows every project.

    The two allowlists (config lines and requirements files) differ only in where the names
    come from; :class:`FilterSet` widens both by the dependencies it admits.
    """

    def __init__(self, names: Iterable[str] = (), extras: Mapping[str, Iterable[str]] | None = None) -> None:
        self.names = canonical_names(names)
        self.extras = {canonicalize_name(n): frozenset(e) for n, e in (extras or {}).items()}

    def allows(self, name: str) -> bool:
        return not self.names or canonicalize_name(name) in self.names


class AllowlistProject(NameAllowlist):
    """``[allowlist] packages``: mirror only the listed projects (every line, specifier or not)."""

    name = "allowlist_project"

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> AllowlistProject:
        reqs = requirements(parser, "allowlist")
        return cls((r.name for r in reqs), _extras_of(reqs))

    def idle(self) -> str | None:
        return None if self.names else "[allowlist] packages names no project, so every project is allowed"


class ProjectRequirements(NameAllowlist):
    """``[allowlist] requirements``: mirror only the projects named in requirements files."""

    name = "project_requirements"

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> ProjectRequirements:
        reqs = read_requirements(parser)
        return cls((r.name for r in reqs), _extras_of(reqs))

    def idle(self) -> str | None:
        return None if self.names else "[allowlist] requirements name no project, so every project is allowed"


class BlocklistProject:
    """``[blocklist] packages``: never mirror the listed projects (lines without a specifier;
    a line with one is for ``blocklist_release``)."""

    name = "blocklist_project"

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = canonical_names(names)

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> BlocklistProject:
        return cls(r.name for r in requirements(parser, "blocklist") if not r.specifier)

    def idle(self) -> str | None:
        return None if self.names else "[blocklist] packages names no project (without a version specifier)"

    def allows(self, name: str) -> bool:
        return canonicalize_name(name) not in self.names


class RegexProject(FilterRegexes):
    """``[filter_regex] packages``: never mirror projects whose name matches a regex.

    A name is tested as given and in its canonical form, so the answer does not depend on
    which spelling of the name a listing or a JSON document used.
    """

    name = "regex_project"
    key = "packages"

    def allows(self, name: str) -> bool:
        forms = {name, canonicalize_name(name)}
        return not any(p.match(form) for p in self.patterns for form in forms)
