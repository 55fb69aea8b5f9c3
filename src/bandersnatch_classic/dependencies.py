"""``[allowlist] resolve-dependencies``: mirror what the allowlisted projects need to install.

A partial mirror of ``requests`` alone cannot install ``requests``: pip also needs
``urllib3``, ``idna``, ``certifi`` and ``charset-normalizer`` from the same index. With
``resolve-dependencies = true`` a run reads the requirements of every release it keeps --
the ``Requires-Dist`` lines of the PEP 658 ``.metadata`` files it has mirrored, else the JSON
API's ``info.requires_dist`` for the current release -- evaluates their environment markers
for the target environments the operator names, and mirrors the projects they name too,
until nothing new turns up.

Each requirement is an :class:`Edge` (the line, and which release or sdist asked for it).
Names are not enough: ``jinja2`` needs ``flit_core<4`` to build while ``latest_release keep = 2``
keeps only ``flit_core`` 4.x. So the engine gives the filters the specifiers every edge puts
on a project (:meth:`~bandersnatch_classic.filters.FilterSet.with_pins`), and they keep the
newest release satisfying each one even where a release filter would drop it. An edge nothing
can satisfy is said once per run with the chain that reached it (:func:`describe`).
"""

from __future__ import annotations

import configparser
import logging
import platform
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO


from . import layout
from .config import parse_bool
from .errors import ConfigError, LocalIOError
from .models import Project, ReleaseFile
from .storage import Storage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

logger = logging.getLogger(__name__)

#: Marker variables of each platform an operator can name.
PLATFORMS = {
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    "windows": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
    "macos": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"},
    "freebsd": {"sys_platform": "freebsd14", "platform_system": "FreeBSD", "os_name": "posix"},
}


class DependencyPolicy:
    """The target environments whose dependencies a mirror must hold."""

    def __init__(self, python_versions: Iterable[str], platforms: Iterable[str], build: bool = False) -> None:
        from packaging.markers import default_environment  # here: runs without the feature skip it

        #: Also the build requirements of every mirrored sdist (resolve-build-dependencies).
        self.build = build
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
        """The policy of ``[allowlist]``, or None when ``resolve-dependencies`` and
        ``resolve-build-dependencies`` are both off (the latter implies the former: a build
        dependency needs its own dependencies to run)."""
        wanted = parser.get("allowlist", "resolve-dependencies", fallback=None)
        build_wanted = parser.get("allowlist", "resolve-build-dependencies", fallback=None)
        build = parse_bool(build_wanted, "[allowlist] resolve-build-dependencies", False)
        if not parse_bool(wanted, "[allowlist] resolve-dependencies", False) and not build:
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
        return cls(versions, platforms, build)

    def needed(self, edges: Iterable[Edge], extras: Iterable[str]) -> list[tuple[Requirement, Edge]]:
        """The edges whose markers hold in a target environment (with ``extras`` of the
        project they come from), each with its parsed requirement."""
        from packaging.requirements import InvalidRequirement, Requirement

        out: list[tuple[Requirement, Edge]] = []
        runtime = [{**env, "extra": extra} for env in self.environments for extra in ("", *extras)]
        build = [{**env, "extra": ""} for env in self.environments]
        for edge in edges:
            try:
                req = Requirement(edge.requirement)
            except InvalidRequirement:
                continue  # an upstream's broken metadata line says nothing we can use
            contexts = build if edge.build else runtime
            if req.marker is None or any(req.marker.evaluate(ctx) for ctx in contexts):
                out.append((req, edge))
        return out


@dataclass(frozen=True)
class Edge:
    """One requirement of a mirrored project: the line, and which release asked for it.

    ``origin`` is ``"jinja2 3.1.6"`` for a runtime requirement of that release, or
    ``"platformdirs 4.5.0 (sdist)"`` with ``build`` for a build requirement of its sdist.
    """

    requirement: str
    origin: str
    build: bool = False

    def describe(self) -> str:
        return f"{'build requirement' if self.build else 'requirement'} of {self.origin}"


def satisfying(specifier: SpecifierSet, versions: Iterable[str]) -> list[str]:
    """The ``versions`` pip could take for ``specifier``: pre-releases only when it names one or
    nothing else matches; versions that are not PEP 440 never (pip ignores them too)."""
    from packaging.version import InvalidVersion, Version

    valid = []
    for version in versions:
        try:
            Version(version)
        except InvalidVersion:
            continue
        valid.append(version)
    return list(specifier.filter(valid))


def describe(req: Requirement) -> str:
    """A requirement as an edge's message names it: name, extras, specifier; no marker."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def requirements_of(project: Project, storage: Storage, build: bool = False) -> list[Edge]:
    """The requirements of every kept release: ``Requires-Dist`` of its mirrored ``.metadata``
    files, else (for the current release) the JSON API's ``info.requires_dist``; with
    ``build``, also the build requirements of every mirrored sdist (:func:`build_requirements`)."""
    from email.parser import BytesHeaderParser

    edges: set[Edge] = set()
    current = str(project.info.get("version") or "")
    parser = BytesHeaderParser()
    for version, files in project.releases.items():
        origin = f"{project.name} {version}"
        found = False
        for file in files:
            if not file.metadata_sha256:
                continue
            try:
                data = storage.read_bytes(layout.metadata_path(layout.file_path(file)))
            except FileNotFoundError:
                continue
            edges.update(Edge(line, origin) for line in parser.parsebytes(data).get_all("Requires-Dist") or [])
            found = True
        if not found and version == current:
            edges.update(Edge(line, origin) for line in project.info.get("requires_dist") or [])
        if build:
            for file in files:
                if not is_sdist(file):
                    continue
                try:
                    with storage.open(layout.file_path(file)) as archive:
                        lines = build_requirements(archive, file.filename)
                except FileNotFoundError:
                    continue
                except LocalIOError as exc:
                    logger.warning("%s: cannot read the sdist for its build requirements (%s)", file.filename, exc)
                    continue
                edges.update(Edge(line, f"{origin} (sdist)", build=True) for line in lines)
    return sorted(edges, key=lambda e: (e.origin, e.build, e.requirement))


#: What a source tree without ``[build-system] requires`` builds with (PEP 517/518): the
#: setuptools legacy backend, as pip installs it.
DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8.0", "wheel")
#: A pyproject.toml larger than this is not read (a hostile archive must not fill memory).
MAX_PYPROJECT = 1 << 20
_SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


def is_sdist(file: ReleaseFile) -> bool:
    return file.packagetype == "sdist" or (not file.packagetype and file.filename.lower().endswith(_SDIST_SUFFIXES))


def build_requirements(source: Path | BinaryIO, filename: str = "") -> list[str]:
    """``[build-system] requires`` of the ``pyproject.toml`` at the top of an sdist (tar or
    zip; a path, or an open file and its ``filename``); the PEP 517/518 default (setuptools,
    wheel) when there is none. An archive that cannot be read gives nothing (logged): it
    cannot be built either."""
    name = filename or getattr(source, "name", "")
    name = name.rsplit("/", 1)[-1]
    try:
        text = _read_pyproject(source, name)
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, ValueError) as exc:
        logger.warning("%s: cannot read the sdist for its build requirements (%s)", name, exc)
        return []
    if text is None:
        return list(DEFAULT_BUILD_REQUIRES)
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        logger.warning("%s: pyproject.toml is not valid TOML (%s); no build requirements read", name, exc)
        return []
    system = data.get("build-system")
    requires = system.get("requires") if isinstance(system, dict) else None
    if not isinstance(requires, list):
        return list(DEFAULT_BUILD_REQUIRES)
    return [r for r in requires if isinstance(r, str)]


def _read_pyproject(source: Path | BinaryIO, name: str) -> str | None:
    """The text of ``<top>/pyproject.toml`` in an sdist, or None when it has none."""
    if name.lower().endswith(".zip"):
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                if _is_top_pyproject(info.filename) and not info.is_dir():
                    if info.file_size > MAX_PYPROJECT:
                        raise ValueError("pyproject.toml is too large")
                    return archive.read(info).decode("utf-8")
        return None
    opened = tarfile.open(source, "r:*") if isinstance(source, Path) else tarfile.open(fileobj=source, mode="r:*")
    with opened as archive:
        for member in archive:
            if member.isfile() and _is_top_pyproject(member.name):
                if member.size > MAX_PYPROJECT:
                    raise ValueError("pyproject.toml is too large")
                handle = archive.extractfile(member)
                return handle.read().decode("utf-8") if handle is not None else None
    return None


def _is_top_pyproject(name: str) -> bool:
    parts = name.lstrip("./").split("/")
    return len(parts) == 2 and parts[1] == "pyproject.toml"
