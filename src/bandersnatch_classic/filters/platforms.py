"""``exclude_platform``: drop files built only for platforms or Pythons the mirror does not serve.

A file's platform and Python come from its wheel tags where it has them, and otherwise from
its JSON ``packagetype``/``python_version`` and its file name, the way installers of old
(``.exe``, ``.msi``, ``.dmg``, ``.rpm``, ``-py2.7`` eggs) named them. What cannot be told apart
is kept: a source distribution or a ``none-any`` wheel serves every platform, and dropping a
file some user needs is worse than keeping one nobody does.
"""

from __future__ import annotations

import configparser
import logging
import re
from collections.abc import Iterable

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from ..errors import ConfigError
from ..models import Project, ReleaseFile
from ._config import words

logger = logging.getLogger(__name__)

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

    def __init__(
        self,
        fragments: Iterable[str] = (),
        types: Iterable[str] = (),
        endings: Iterable[str] = (),
        pythons: Iterable[Python] = (),
    ) -> None:
        self.fragments = list(fragments)
        self.types = set(types)
        self.endings = tuple(endings)
        self.pythons = list(pythons)

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> ExcludePlatform:
        fragments: list[str] = []
        types: set[str] = set()
        endings: tuple[str, ...] = ()
        pythons: list[Python] = []
        for entry in (e.lower() for e in words(parser, "blocklist", "platforms")):
            entry = _PLATFORM_ALIASES.get(entry, entry)
            match = _PY_ENTRY.match(entry)
            if match:
                pythons.append((match.group(1), match.group(2)))
            elif entry in _PLATFORMS:
                more_fragments, more_types, more_endings = _PLATFORMS[entry]
                fragments += more_fragments
                types |= set(more_types)
                endings += more_endings
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
                fragments.append(entry)
        return cls(fragments, types, endings, pythons)

    def idle(self) -> str | None:
        return None if self.fragments or self.types or self.pythons else "[blocklist] platforms is empty"

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

