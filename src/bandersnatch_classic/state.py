"""The mirror's own records: ``generation``, ``status``, ``todo``, ``projects.json``,
``upstream-method``, ``dependencies.json`` and ``page-validators.json``.

``projects.json`` maps each mirrored project's canonical name to the serial its pages were
written at, or to ``[display name, serial]`` when the display name differs from the canonical
one. The root index is rendered from it (not by scanning directories), and the ``html``
discovery method compares against it. A mirror made by the reference tool has no such file:
it is rebuilt once from the ``<!--SERIAL N-->`` comments of the project pages; a corrupt one
is rebuilt the same way.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html import unescape
from typing import TYPE_CHECKING, Any, Union

from packaging.utils import canonicalize_name

from . import layout
from .dependencies import Edge
from .errors import LocalIOError, StateError
from .storage import Storage

if TYPE_CHECKING:
    from .upstream import PageValidators

logger = logging.getLogger(__name__)

GENERATION = 5
#: Older generations of the reference tool's layout: readable, but need a full sync.
OLD_GENERATIONS = (3, 4)
PROJECTS_FILE = "projects.json"
#: ``<method> <unix time of the probe> <master>``: what ``api-method = auto`` found works.
METHOD_FILE = "upstream-method"
#: resolve-dependencies: ``{"edges": {project: [[requirement, origin, build], ...]},
#: "versions": {project: [kept version, ...]}}``, the requirement edges of every mirrored
#: project and the releases each keeps, so that a later run still keeps what they need.
DEPENDENCIES_FILE = "dependencies.json"
#: Conditional requests for project pages (``simple``/``html`` discovery, allowlist mirrors):
#: ``{"pages": {project: {"etag": str, "last_modified": str, "serial": int}}}``, from the
#: upstream's last answer for each page.
VALIDATORS_FILE = "page-validators.json"
#: How long a remembered method is trusted before ``auto`` probes the others again.
REPROBE_SECONDS = 86400

_SERIAL_RE = re.compile(rb"<!--SERIAL (\d+)-->\s*$")
_TITLE_RE = re.compile(rb"<title>Links for (.*?)</title>")


@dataclass
class Todo:
    """Work of an unfinished run: the serial it aims at and the projects still to sync."""

    target: int
    projects: dict[str, int] = field(default_factory=dict)

    def render(self) -> str:
        lines = [str(self.target)] + [f"{name} {serial}" for name, serial in self.projects.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Todo:
        lines = text.splitlines()
        if not lines:
            raise ValueError("empty")
        target = int(lines[0])
        projects = {}
        for line in lines[1:]:
            if not line.strip():
                continue
            name, serial = line.split()
            projects[name] = int(serial)
        return cls(target, projects)


#: A record as stored: the serial alone when the display name is the canonical name.
_Stored = Union[int, list]


class Records(Mapping[str, tuple[str, int]]):
    """canonical name -> (display name, serial) of every mirrored project.

    Kept in the stored form, which is what ``json`` reads and writes fastest: a mirror of
    100,000 projects loads and saves its records on every run that syncs anything.
    """

    def __init__(self, stored: dict[str, _Stored] | None = None) -> None:
        self._stored: dict[str, _Stored] = stored if stored is not None else {}

    @classmethod
    def from_json(cls, text: str) -> Records:
        """Parse ``projects.json`` (also the older ``{name: [display, serial]}`` form); ValueError if malformed."""
        stored = json.loads(text)
        if not isinstance(stored, dict):
            raise ValueError("not an object")
        for canonical, value in stored.items():
            if type(value) is int:
                continue
            if not (type(value) is list and len(value) == 2 and isinstance(value[0], str) and type(value[1]) is int):
                raise ValueError(f"bad record {value!r}")
            if value[0] == canonical:
                stored[canonical] = value[1]
        return cls(stored)

    def to_json(self) -> str:
        return json.dumps(self._stored, separators=(",", ":"))

    def __getitem__(self, canonical: str) -> tuple[str, int]:
        value = self._stored[canonical]
        return (canonical, value) if type(value) is int else (value[0], value[1])

    def __contains__(self, canonical: object) -> bool:
        return canonical in self._stored

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)

    def set(self, canonical: str, display: str, serial: int) -> None:
        self._stored[canonical] = serial if display == canonical else [display, serial]

    def pop(self, canonical: str) -> bool:
        """Forget a project; True if it was recorded."""
        return self._stored.pop(canonical, None) is not None

    def rows(self) -> list[tuple[str, str, int]]:
        """``(canonical, display, serial)`` of every project, in canonical-name order."""
        stored = self._stored
        return [
            (c, c, v) if type(v) is int else (c, v[0], v[1])  # type: ignore[index]
            for c in sorted(stored)
            for v in (stored[c],)
        ]


class MirrorState:
    """Reads and writes the state files of one mirror directory."""

    def __init__(self, storage: Storage, hash_index: bool = False) -> None:
        self.storage = storage
        #: Where the project pages are, for rebuilding the records from them.
        self.hash_index = hash_index
        self._projects: Records | None = None
        #: Whether a project was added, renamed or removed since loading (the root HTML lists names).
        self.names_changed = False
        self._unsaved = False
        self._lock = threading.RLock()  # workers record projects while the main thread saves

    # -- generation and status -------------------------------------------------------
    def check_generation(self) -> bool:
        """Validate ``generation``; return True when an old layout needs a full sync."""
        text = self.storage.read_text("generation")
        if text is None:
            return False
        try:
            generation = int(text.strip())
        except ValueError:
            generation = None
        if generation == GENERATION:
            return False
        if generation in OLD_GENERATIONS:
            logger.warning("Mirror generation %s is older than %s: forcing a full sync", generation, GENERATION)
            return True
        raise StateError(
            f"{self.storage.display('generation')} says generation {text.strip()!r}; this tool knows "
            f"generation {GENERATION} (and reads {', '.join(map(str, OLD_GENERATIONS))})"
        )

    def write_generation(self) -> None:
        self.storage.write_if_changed("generation", str(GENERATION).encode())

    @property
    def status(self) -> int:
        text = self.storage.read_text("status")
        if text is None or not text.strip():
            return 0
        try:
            return int(text.strip())
        except ValueError as exc:
            raise StateError(f"{self.storage.display('status')} holds {text.strip()!r}, not a serial") from exc

    def write_status(self, serial: int) -> None:
        self.storage.write_if_changed("status", str(serial).encode())

    # -- the discovery method that worked ------------------------------------------
    def remembered_method(self, master: str) -> tuple[str, bool]:
        """The method ``auto`` last found working against ``master`` ("" if none), and whether
        that was less than a day ago (else the others are probed again)."""
        text = self.storage.read_text(METHOD_FILE) or ""
        parts = text.split()
        if len(parts) != 3 or parts[2] != master or not parts[1].isdigit():
            return "", False
        return parts[0], time.time() - int(parts[1]) < REPROBE_SECONDS

    def remember_method(self, method: str, master: str) -> None:
        self.storage.write_bytes(METHOD_FILE, f"{method} {int(time.time())} {master}\n".encode())

    # -- requirement edges (resolve-dependencies) -----------------------------------
    def read_dependencies(self) -> tuple[dict[str, list[Edge]], dict[str, list[str]]]:
        """The edges of every mirrored project and the versions each keeps (empty when unknown)."""
        doc = self._read_json(DEPENDENCIES_FILE)
        try:
            edges = {str(k): [Edge(str(r), str(o), bool(b)) for r, o, b in v] for k, v in doc.get("edges", {}).items()}
            versions = {str(k): [str(x) for x in v] for k, v in doc.get("versions", {}).items()}
        except (AttributeError, TypeError, ValueError) as exc:
            logger.warning("Ignoring the corrupt %s (%s)", self.storage.display(DEPENDENCIES_FILE), exc)
            return {}, {}
        return edges, versions

    def write_dependencies(self, edges: Mapping[str, list[Edge]], versions: Mapping[str, list[str]]) -> None:
        doc = {
            "edges": {k: [[e.requirement, e.origin, e.build] for e in v] for k, v in sorted(edges.items())},
            "versions": dict(sorted(versions.items())),
        }
        self.storage.write_if_changed(DEPENDENCIES_FILE, (json.dumps(doc, indent=1) + "\n").encode())

    # -- validators of project pages ------------------------------------------------
    def read_validators(self) -> dict[str, PageValidators]:
        """Project (or ``/``, the root listing) -> the validators of its page's last answer."""
        from .upstream import PageValidators

        pages = self._read_json(VALIDATORS_FILE).get("pages", {})
        if not isinstance(pages, dict):
            return {}
        return {
            str(k): PageValidators(v["serial"], str(v.get("etag") or ""), str(v.get("last_modified") or ""))
            for k, v in pages.items()
            if isinstance(v, dict) and isinstance(v.get("serial"), int)
        }

    def write_validators(self, pages: Mapping[str, PageValidators]) -> None:
        doc = {k: {"etag": v.etag, "last_modified": v.last_modified, "serial": v.serial} for k, v in sorted(pages.items())}
        self.storage.write_if_changed(VALIDATORS_FILE, (json.dumps({"pages": doc}, indent=1) + "\n").encode())

    def _read_json(self, path: str) -> dict[str, Any]:
        """A JSON state file as a dict; missing or corrupt reads as empty (a corrupt one with a warning)."""
        text = self.storage.read_text(path)
        if not text:
            return {}
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            return doc
        except ValueError as exc:
            logger.warning("Ignoring the corrupt %s (%s)", self.storage.display(path), exc)
            return {}

    # -- todo ------------------------------------------------------------------------
    def read_todo(self) -> Todo | None:
        text = self.storage.read_text("todo")
        if text is None:
            return None
        try:
            return Todo.parse(text)
        except ValueError:
            logger.warning("Discarding corrupt todo file %s", self.storage.display("todo"))
            self.remove_todo()
            return None

    def write_todo(self, todo: Todo) -> None:
        self.storage.write_bytes("todo", todo.render().encode())

    def remove_todo(self) -> None:
        self.storage.delete("todo")

    # -- per-project records ---------------------------------------------------------
    @property
    def projects(self) -> Records:
        """The records of every mirrored project (change them through :meth:`record` and :meth:`forget`)."""
        with self._lock:
            if self._projects is None:
                self._projects = self._load_projects()
            return self._projects

    def _load_projects(self) -> Records:
        try:
            text = self.storage.read_text(PROJECTS_FILE)
            if text is not None:
                return Records.from_json(text)
        except ValueError as exc:  # also undecodable bytes
            logger.warning("%s is corrupt (%s); rebuilding it from the project pages", self.storage.display(PROJECTS_FILE), exc)
        self._unsaved = True  # the rebuilt records are worth keeping
        return self._scan_pages()

    def record(self, canonical: str, name: str, serial: int) -> None:
        with self._lock:
            old = self.projects.get(canonical)
            if old is None or old[0] != name:
                self.names_changed = True
            if old != (name, serial):
                self.projects.set(canonical, name, serial)
                self._unsaved = True

    def forget(self, canonical: str) -> None:
        with self._lock:
            if self.projects.pop(canonical):
                self.names_changed = self._unsaved = True

    def save_projects(self) -> None:
        """Write ``projects.json`` if a record changed since it was read or last written."""
        with self._lock:
            if not self._unsaved:
                return
            data = self.projects.to_json()
            self._unsaved = False
        self.storage.write_bytes(PROJECTS_FILE, data.encode())

    def _scan_pages(self) -> Records:
        """Rebuild the project records from existing pages (a mirror made by another tool)."""
        found = Records()
        depth = 3 if self.hash_index else 2  # below web/simple: [letter/]name/index.html
        for path, _size in self.storage.files(layout.SIMPLE):
            parts = path[len(layout.SIMPLE) + 1 :].split("/")
            if len(parts) != depth or parts[-1] != layout.PAGE_HTML:
                continue
            try:
                record = _read_page_record(self.storage.read_bytes(path), parts[-2])
            except (OSError, LocalIOError):
                continue
            if record is not None:
                found.set(canonicalize_name(parts[-2]), *record)
        if found:
            logger.info("Rebuilt the records of %d projects from their pages", len(found))
        return found


def _read_page_record(data: bytes, directory: str) -> tuple[str, int] | None:
    serial = _SERIAL_RE.search(data[-64:])
    title = _TITLE_RE.search(data[:512])
    if serial is None:
        return None
    name = title.group(1).decode("utf-8", "replace") if title else directory
    return unescape(name), int(serial.group(1))
