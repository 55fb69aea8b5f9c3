"""Config helpers of the filters."""

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
import glob
from pathlib import Path
from packaging.version import InvalidVersion


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

