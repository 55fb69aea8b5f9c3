"""Reading filter settings from the INI config: the helpers every filter's ``from_config`` uses.

The filters themselves take typed values (names, compiled regexes, specifier sets, byte
counts); turning config text into those values, and every message that names a section, a key
and a bad value, happens here and in the ``from_config`` methods, so that a config mistake is
one line naming what to fix, and a filter can be built without any config at all.

:class:`FilterRegexes` is here rather than with a kind of filter because ``[filter_regex]``
configures two kinds at once: a name filter and a release filter.
"""

from __future__ import annotations

import configparser
import difflib
import glob
import logging
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..config import did_you_mean
from ..errors import ConfigError

if TYPE_CHECKING:  # imported where used: most configs need neither, and every run starts faster
    from packaging.requirements import Requirement

logger = logging.getLogger(__name__)

#: A ``#`` comment: at the start of a line or after whitespace (so ``a#b`` in a regex survives).
_COMMENT = re.compile(r"(?:^|\s)#.*$")


def lines(parser: configparser.ConfigParser, section: str, key: str) -> list[str]:
    """A multi-line value: one item per line, comments and blank lines dropped."""
    return split_lines(parser.get(section, key, fallback="") or "")


def split_lines(raw: str) -> list[str]:
    items = []
    for line in raw.splitlines():
        line = _COMMENT.sub("", line).strip()
        if line:
            items.append(line)
    return items


def words(parser: configparser.ConfigParser, section: str, key: str) -> list[str]:
    """A list value whose items may also share a line, separated by whitespace."""
    return [word for line in lines(parser, section, key) for word in line.split()]


def requirement(line: str, where: str) -> Requirement:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(line)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(
            f"{where}: {line!r} is not allowed; use a project name with an optional PEP 440 specifier "
            f"such as foo>=1.0 ({reason})"
        ) from exc


def requirements(parser: configparser.ConfigParser, section: str) -> list[Requirement]:
    """The ``packages`` lines of ``[allowlist]`` or ``[blocklist]`` as requirements."""
    return [requirement(line, f"[{section}] packages") for line in lines(parser, section, "packages")]


def regexes(values: Iterable[str], where: str) -> list[re.Pattern[str]]:
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


def whole_number(parser: configparser.ConfigParser, section: str, key: str, default: int) -> int:
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


def parse_version(text: str) -> Version | None:
    """``text`` as a PEP 440 version, or None when it is not one."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


class FilterRegexes:
    """What ``regex_project`` and ``regex_release`` share: the regexes of one ``[filter_regex]``
    key (``packages`` or ``releases``), each matched from the start of a name or version."""

    key = ""

    def __init__(self, patterns: Iterable[re.Pattern[str]] = ()) -> None:
        self.patterns = list(patterns)

    @classmethod
    def from_config(cls: type[_R], parser: configparser.ConfigParser) -> _R:
        return cls(regexes(lines(parser, "filter_regex", cls.key), f"[filter_regex] {cls.key}"))

    def idle(self) -> str | None:
        return None if self.patterns else f"[filter_regex] {self.key} is empty"


_R = TypeVar("_R", bound=FilterRegexes)


# -- requirements files ------------------------------------------------------------------------
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
    found = []
    for pattern in lines(parser, "allowlist", "requirements"):
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
            found += _parse_requirements(text, path)
    return found


# -- sections and keys ---------------------------------------------------------------------------
def check_sections(
    parser: configparser.ConfigParser,
    enabled: Collection[str],
    known_keys: Mapping[str, Collection[str]],
    section_users: Mapping[str, Collection[str]],
    key_users: Mapping[tuple[str, str], Collection[str]],
) -> None:
    """Warn about keys no filter reads, and about sections and keys no enabled filter reads."""
    defaults = parser.defaults()
    for section, known in known_keys.items():
        if parser.has_section(section):
            for key in parser[section]:
                if key not in known and key not in defaults:
                    logger.warning("Unknown key %r in [%s] is ignored%s", key, section, did_you_mean(key, known))
    for section, users in section_users.items():
        if parser.has_section(section) and not set(users) & set(enabled):
            logger.warning(
                "[%s] has no effect: enable %s in [plugins] enabled", section, " or ".join(users)
            )
    for (section, key), users in key_users.items():
        if parser.has_option(section, key) and key not in defaults and not set(users) & set(enabled):
            logger.warning("[%s] %s has no effect: enable %s in [plugins] enabled", section, key, " or ".join(users))


#: ``[section]`` or ``[section] key`` at the start of an ``idle()`` reason.
_IDLE_WHERE = re.compile(r"^\[([^\]]+)\](?: ([\w.-]+))?")


def idle_error(
    parser: configparser.ConfigParser, name: str, reason: str, known_keys: Mapping[str, Collection[str]],
    sections: Collection[str],
) -> ConfigError:
    """The one-line error for filter ``name``, named in ``[plugins] enabled`` but idle for ``reason``.

    An enabled filter that drops nothing is almost always a typo (``[allowlists]``, ``package =``)
    and for an allowlist it means mirroring the whole index, so the run stops before any
    request. The line names the section (and key) the filter reads and, when the config has a
    close spelling of either, asks whether that was meant.
    """
    hint, where = "", name
    match = _IDLE_WHERE.match(reason)
    if match:
        section, key = match.group(1), match.group(2)
        where = f"[{section}]"
        if not parser.has_section(section):
            others = [s for s in parser.sections() if s != "mirror" and s not in sections]
            close = difflib.get_close_matches(section, others, n=1, cutoff=0.75)
            hint = f" (the config has [{close[0]}]: did you mean [{section}]?)" if close else f" (there is no [{section}] section)"
        elif key in known_keys.get(section, ()) and not parser.has_option(section, key):
            keys = [k for k in parser[section] if k not in parser.defaults()]
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
            hint = f" ([{section}] has {close[0]!r}: did you mean {key!r}?)" if close else f" ([{section}] has no {key})"
    return ConfigError(
        f"{name} is enabled but does nothing: {reason}{hint}; fix {where} or remove {name} from [plugins] enabled"
    )


def canonical_names(names: Iterable[str]) -> frozenset[str]:
    """Names in canonical form, so that a filter answers alike for every spelling."""
    return frozenset(canonicalize_name(n) for n in names)
