"""``[allowlist] resolve-dependencies``: mirror what the allowlisted projects need to install.

A partial mirror of ``requests`` alone cannot install ``requests``: pip also needs
``urllib3``, ``idna``, ``certifi`` and ``charset-normalizer`` from the same index. With
``resolve-dependencies = true`` a run reads the requirements of every release it keeps --
the ``Requires-Dist`` lines of the PEP 658 ``.metadata`` files it has mirrored, else the JSON
API's ``info.requires_dist`` for the current release -- evaluates their environment markers
for the target environments the operator names, and mirrors the projects they name too,
until nothing new turns up.
"""

from __future__ import annotations

import configparser
import platform
import sys
from collections.abc import Iterable

from packaging.utils import canonicalize_name

from .config import parse_bool
from .errors import ConfigError
from .models import Project
from .storage import Storage

#: Marker variables of each platform an operator can name.
PLATFORMS = {
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    "windows": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
    "macos": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"},
    "freebsd": {"sys_platform": "freebsd14", "platform_system": "FreeBSD", "os_name": "posix"},
}


class DependencyPolicy:
    """The target environments whose dependencies a mirror must hold."""

    def __init__(self, python_versions: Iterable[str], platforms: Iterable[str]) -> None:
        from packaging.markers import default_environment  # here: runs without the feature skip it

        base = default_environment()
        self.environments: list[dict[str, str]] = []
        for version in python_versions:
            for name in platforms:
                env = {**base, **PLATFORMS[name]}
                env["python_version"] = version
                env["python_full_version"] = f"{version}.0"
                env["implementation_name"] = "cpython"
                env["platform_python_implementation"] = "CPython"
                self.environments.append(env)

    @classmethod
    def from_config(cls, parser: configparser.ConfigParser) -> DependencyPolicy | None:
        """The policy of ``[allowlist]``, or None when ``resolve-dependencies`` is off."""
        wanted = parser.get("allowlist", "resolve-dependencies", fallback=None)
        if not parse_bool(wanted, "[allowlist] resolve-dependencies", False):
            return None
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        versions = (parser.get("allowlist", "python-versions", fallback="") or here).split()
        for version in versions:
            parts = version.split(".")
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ConfigError(f"[allowlist] python-versions: {version!r} is not a Python version like 3.12")
        running = {"Linux": "linux", "Windows": "windows", "Darwin": "macos"}.get(platform.system(), "linux")
        platforms = (parser.get("allowlist", "platforms", fallback="") or running).split()
        for name in platforms:
            if name not in PLATFORMS:
                raise ConfigError(f"[allowlist] platforms: {name!r} is not one of {', '.join(PLATFORMS)}")
        return cls(versions, platforms)

    def needed(self, requirements: Iterable[str], extras: Iterable[str]) -> dict[str, set[str]]:
        """Project -> extras wanted, for requirements whose markers hold in a target environment."""
        from packaging.requirements import InvalidRequirement, Requirement

        wanted: dict[str, set[str]] = {}
        contexts = [{**env, "extra": extra} for env in self.environments for extra in ("", *extras)]
        for line in requirements:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue  # an upstream's broken metadata line says nothing we can use
            if req.marker is None or any(req.marker.evaluate(ctx) for ctx in contexts):
                wanted.setdefault(canonicalize_name(req.name), set()).update(req.extras)
        return wanted


def requirements_of(project: Project, storage: Storage) -> list[str]:
    """``Requires-Dist`` of every kept release: from its mirrored ``.metadata`` files, else
    (for the current release) from the JSON API's ``info.requires_dist``."""
    from email.parser import BytesHeaderParser

    lines: set[str] = set()
    current = str(project.info.get("version") or "")
    parser = BytesHeaderParser()
    for version, files in project.releases.items():
        found = False
        for file in files:
            if not file.metadata_sha256:
                continue
            try:
                data = storage.read_bytes(f"web/{file.path}.metadata")
            except FileNotFoundError:
                continue
            lines.update(parser.parsebytes(data).get_all("Requires-Dist") or [])
            found = True
        if not found and version == current:
            lines.update(project.info.get("requires_dist") or [])
    return sorted(lines)
