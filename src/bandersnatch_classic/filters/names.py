"""Name filters."""

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
from ._config import _lines, _requirement, _regexes, read_requirements


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

