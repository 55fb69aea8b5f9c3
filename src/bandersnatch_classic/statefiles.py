"""The on-disk contract of the mirror's own files: the name and format of every state file,
and the one reader and writer of each.

Pre-flight, ``status``, ``verify``, the S3 backend and the engine ask this module for a
state file's name; nothing else spells one. The files (all in the mirror directory, beside
``web/``; docs/design.md, "The on-disk contract"):

==========================  ===========================================================
``.lock``                   held by a run (a file lock; on S3 a lease object)
``generation``              the layout's generation, a whole number
``status``                  the serial every change up to which is mirrored
``todo``                    an unfinished run's target serial, then ``<project> <serial>`` lines
``projects.json``           the project records (:mod:`~bandersnatch_classic.records`)
``upstream-method``         ``<method> <unix time> <master>``: what ``api-method = auto`` found
``run-history.json``        ``{"runs": [RunRecord, ...]}``, the last :data:`HISTORY_LENGTH` runs
``missing-metadata``        ``{"checked": time, "projects": {name: [[path, url, sha256]]}}``
``verify-progress``         the projects an interrupted ``verify`` already checked, one a line
``page-validators.json``    ``{"pages": {project: {"etag", "last_modified", "serial"}}}``
``dependencies.json``       ``{"edges": {project: [[requirement, origin, build]]}, "versions": {...}}``
==========================  ===========================================================

``web/last-modified`` is served, so its path is the layout's (:data:`LAST_MODIFIED`).

Nothing here is trusted as read. Every state file goes through :func:`read_state_text` and
a parser that refuses what no run writes (bytes that are not UTF-8, truncation, a serial
that is negative, not a number or beyond any index's); the refusal is a
:class:`~bandersnatch_classic.errors.DamagedState` naming the file and the fault, which the
caller turns into one log line and a repair (docs/operations.md, "Damaged state").
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from . import layout
from .dependencies import Edge
from .errors import DamagedState, StateError
from .storage import Storage

if TYPE_CHECKING:
    from .upstream import PageValidators

logger = logging.getLogger(__name__)

# -- the names ---------------------------------------------------------------------------
LOCK = ".lock"
GENERATION_FILE = "generation"
STATUS = "status"
TODO = "todo"
PROJECTS = "projects.json"
#: The records changed since ``projects.json`` was last written whole, one JSON object per
#: save (``{canonical: stored record, or null when forgotten}``), applied in order on top of
#: it. A run that changes ten records writes a line, not a million; the journal is folded
#: into ``projects.json`` when it outgrows an eighth of it (:meth:`MirrorState.save_projects`).
JOURNAL = "projects.journal"
#: The size of ``projects.json`` (about 4,000 projects) below which it is always written whole.
JOURNAL_FROM = 1 << 16
METHOD = "upstream-method"
HISTORY = "run-history.json"
MISSING_METADATA = "missing-metadata"
VERIFY_PROGRESS = "verify-progress"
VALIDATORS = "page-validators.json"
DEPENDENCIES = "dependencies.json"
#: Served to clients as well, so its path is the layout's.
LAST_MODIFIED = layout.LAST_MODIFIED
#: The mirror's own files, each read and replaced by a run.
STATE_FILES = (
    LOCK, GENERATION_FILE, STATUS, TODO, PROJECTS, JOURNAL, METHOD, HISTORY, MISSING_METADATA, VERIFY_PROGRESS,
    VALIDATORS, DEPENDENCIES,
)
#: The state files written in place rather than replaced (so they must be writable themselves).
WRITTEN_IN_PLACE = (LOCK,)
#: A directory holding any of these has seen a ``mirror`` or ``sync`` run.
RUN_MARKS = (STATUS, TODO, HISTORY)

# -- the formats -------------------------------------------------------------------------
GENERATION = 5
#: Older generations of the reference tool's layout: readable, but need a full sync.
OLD_GENERATIONS = (3, 4)
#: How long a remembered method is trusted before ``auto`` probes the others again.
REPROBE_SECONDS = 86400
#: The discovery methods ``upstream-method`` may name.
METHODS = ("xmlrpc", "simple", "html")
#: Serials are 64-bit integers on the upstream: a state file holding more is damaged.
MAX_SERIAL = 2**63 - 1
#: Runs kept in the history.
HISTORY_LENGTH = 50
#: Times in the state files are Unix seconds before this (the year 2242): anything else is damage.
TIME_LIMIT = 2**33

_DIGITS_RE = re.compile(r"[0-9]+")
#: A project name as ``todo`` holds it (the project-name rule of the packaging specifications).
_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
#: What a recorded sidecar may be: a ``.metadata`` file below ``web/packages`` (the storage
#: refuses ``..``), its sha256, and a canonical project name. Anything else is damage: a
#: retry writes to that path.
_SIDECAR_RE = re.compile(rf"{layout.PACKAGES}/[^\0]+\{layout.METADATA_SUFFIX}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SIDECAR_PROJECT_RE = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")

#: One recorded sidecar: (path below the mirror, upstream URL, sha256).
Sidecar = tuple[str, str, str]


def read_state_text(storage: Storage, rel: str) -> str | None:
    """The text of the state file ``rel``, or None when there is none.

    The one place a state file is read: bytes that are not UTF-8 raise
    :class:`DamagedState` (naming the file and the first bad byte) instead of a
    ``UnicodeDecodeError``; the callers' parsers refuse what else is wrong the same way.
    """
    try:
        return storage.read_text(rel)
    except UnicodeDecodeError as exc:
        raise DamagedState(
            storage.display(rel), f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from None


def parse_serial(text: str) -> int:
    """A serial as the state files hold it; ValueError saying what is wrong (``holds 'x', not a serial``)."""
    value = text.strip()
    if not value:
        raise ValueError("is empty")
    if not _DIGITS_RE.fullmatch(value):
        raise ValueError(f"holds {shown(value)}, not a serial")
    serial = int(value)
    if serial > MAX_SERIAL:
        raise ValueError(f"holds {shown(value)}, beyond any index's serial")
    return serial


def shown(text: str) -> str:
    """``text`` quoted for a log line, cut short when long."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


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
        """Parse a todo file; ValueError saying what is wrong (a truncated or hand-edited file)."""
        lines = text.splitlines()
        if not lines:
            raise ValueError("is empty")
        try:
            target = parse_serial(lines[0])
        except ValueError as exc:
            raise ValueError(f"line 1 {exc}") from None
        projects = {}
        for number, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) != 2 or not _NAME_RE.fullmatch(parts[0]):
                    raise ValueError
                projects[parts[0]] = parse_serial(parts[1])
            except ValueError:
                raise ValueError(f"line {number} holds {shown(line)}, not '<project> <serial>'") from None
        return cls(target, projects)


class RunRecord(TypedDict):
    """One run in ``run-history.json`` (times are Unix seconds)."""

    command: str
    pid: int
    host: str
    started: float
    finished: float | None
    exit_status: int | None
    method: str
    synced: int
    removed: int
    failed: dict[str, str]
    files: int
    bytes: int
    serial: int
    upstream_serial: int | None
    #: Requirement edges nothing in the mirror satisfies (resolve-dependencies), one line each.
    unsatisfied: list[str]


#: The type each field of a run record must have when present (bool is refused as a number).
_RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "command": (str,), "pid": (int,), "host": (str,), "started": (int, float), "finished": (int, float, type(None)),
    "exit_status": (int, type(None)), "method": (str,), "synced": (int,), "removed": (int,), "failed": (dict,),
    "files": (int,), "bytes": (int,), "serial": (int, type(None)), "upstream_serial": (int, type(None)),
}


def _run_problem(run: Any) -> str:
    """What makes ``run`` not a run record ("" if nothing)."""
    if not isinstance(run, dict) or "started" not in run:
        return "not a run record"
    for key, types in _RUN_FIELDS.items():
        value = run.get(key)
        if key in run and (isinstance(value, bool) or not isinstance(value, types)):
            return f"{key!r} is {value!r:.40}"
    for key in ("started", "finished"):
        value = run.get(key)
        if value is not None and not 0 <= value < TIME_LIMIT:
            return f"{key!r} is {value!r:.40}, not a time"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in run.get("failed", {}).items()):
        return "'failed' is not a map of names to reasons"
    return ""


def _parse_missing(text: str) -> tuple[float, dict[str, list[Sidecar]]]:
    """``missing-metadata`` parsed; ValueError (or another parse error) when it is not what a run writes."""
    data = json.loads(text)
    checked = float(data["checked"])
    if not 0 <= checked < TIME_LIMIT:
        raise ValueError(f"'checked' is {checked}, not a time")
    projects = {str(k): [(str(p), str(u), str(h)) for p, u, h in v] for k, v in data["projects"].items()}
    for canonical, sidecars in projects.items():
        for path, _url, sha256 in sidecars:
            if not (_SIDECAR_RE.fullmatch(path) and _SHA256_RE.fullmatch(sha256) and _SIDECAR_PROJECT_RE.fullmatch(canonical)):
                raise ValueError(f"{canonical!r:.40}: {path!r:.60} is not a .metadata file below {layout.PACKAGES}")
    return checked, projects


class StateFiles:
    """The readers and writers of one mirror's state files (records: :class:`~bandersnatch_classic.state.MirrorState`)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def display(self, name: str) -> str:
        """How a state file is named in a log line (its path, or its bucket key)."""
        return self.storage.display(name)

    def has_run(self) -> bool:
        """Whether a ``mirror`` or ``sync`` run has left its files here."""
        return any(self.storage.exists(name) for name in RUN_MARKS)

    def size(self, name: str) -> int | None:
        """The size in bytes of the state file ``name`` (None when there is none)."""
        stat = self.storage.stat(name)
        return stat.st_size if stat is not None else None

    def _damage(self, name: str, problem: str) -> DamagedState:
        return DamagedState(self.storage.display(name), problem)

    # -- generation and status -------------------------------------------------------
    @property
    def generation(self) -> int | None:
        """The number in ``generation`` (None when there is none); :class:`DamagedState` when it holds none."""
        text = read_state_text(self.storage, GENERATION_FILE)
        if text is None:
            return None
        try:
            return parse_serial(text)
        except ValueError as exc:
            raise self._damage(GENERATION_FILE, str(exc).replace("serial", "generation")) from None

    def check_generation(self) -> bool:
        """Validate ``generation``; return True when an old layout needs a full sync.

        Raises :class:`DamagedState` when it holds no whole number (a run can repair
        that), :class:`StateError` for a generation this tool does not know (a newer
        tool's mirror: not touched).
        """
        generation = self.generation
        if generation is None or generation == GENERATION:
            return False
        if generation in OLD_GENERATIONS:
            logger.warning("Mirror generation %s is older than %s: forcing a full sync", generation, GENERATION)
            return True
        raise StateError(
            f"{self.storage.display(GENERATION_FILE)} says generation {generation}; this tool knows "
            f"generation {GENERATION} (and reads {', '.join(map(str, OLD_GENERATIONS))})"
        )

    def write_generation(self) -> None:
        self.storage.write_if_changed(GENERATION_FILE, str(GENERATION).encode())

    @property
    def status(self) -> int:
        """The serial in ``status`` (0 when there is none); :class:`DamagedState` when it holds no serial."""
        text = read_state_text(self.storage, STATUS)
        if text is None:
            return 0
        try:
            return parse_serial(text)
        except ValueError as exc:
            raise self._damage(STATUS, str(exc)) from None

    def check_status(self) -> None:
        """For commands that do not repair state (``verify``, ``delete``): a damaged ``status``
        stops them before any work (exit 2; ``mirror`` repairs it), instead of halfway, at
        the root index."""
        self.status  # noqa: B018 - read for the DamagedState it may raise

    def write_status(self, serial: int) -> None:
        self.storage.write_if_changed(STATUS, str(serial).encode())

    # -- todo ------------------------------------------------------------------------
    def read_todo(self) -> Todo | None:
        """The unfinished run's work, None when there is none; :class:`DamagedState` when unreadable."""
        text = read_state_text(self.storage, TODO)
        if text is None:
            return None
        try:
            return Todo.parse(text)
        except ValueError as exc:
            raise self._damage(TODO, str(exc)) from None

    def write_todo(self, todo: Todo) -> None:
        self.storage.write_bytes(TODO, todo.render().encode())

    def remove_todo(self) -> None:
        self.storage.delete(TODO)

    # -- the discovery method that worked ------------------------------------------
    def remembered_method(self, master: str) -> tuple[str, bool]:
        """The method ``auto`` last found working against ``master`` ("" if none), and whether
        that was less than a day ago (else the others are probed again).

        A file for another master is simply not used (the configuration changed); one that
        is not ``<method> <time> <master>`` raises :class:`DamagedState`.
        """
        text = read_state_text(self.storage, METHOD)
        if text is None:
            return "", False
        parts = text.split()
        if len(parts) != 3 or parts[0] not in METHODS or not _DIGITS_RE.fullmatch(parts[1]):
            raise self._damage(METHOD, f"holds {shown(text.strip())}, not '<method> <time> <master>'")
        if parts[2] != master:
            return "", False
        age = time.time() - int(parts[1])
        return parts[0], 0 <= age < REPROBE_SECONDS

    def remember_method(self, method: str, master: str) -> None:
        self.storage.write_bytes(METHOD, f"{method} {int(time.time())} {master}\n".encode())

    # -- the run history ---------------------------------------------------------------
    def history(self) -> list[RunRecord]:
        """The recorded runs, oldest first; :class:`DamagedState` when the file is not a history
        this tool writes (each record is checked: a wrong type would crash ``status``)."""
        text = read_state_text(self.storage, HISTORY)
        if not text:
            return []
        try:
            runs = json.loads(text)["runs"]
            if not isinstance(runs, list):
                raise ValueError("'runs' is not a list")
            for number, run in enumerate(runs, 1):
                problem = _run_problem(run)
                if problem:
                    raise ValueError(f"run {number}: {problem}")
        except (ValueError, KeyError, TypeError) as exc:
            raise self._damage(HISTORY, f"is not a run history ({exc!s:.80})") from None
        return runs

    def write_history(self, runs: list[RunRecord]) -> None:
        """Keep the last :data:`HISTORY_LENGTH` of ``runs``."""
        data = json.dumps({"runs": runs[-HISTORY_LENGTH:]}, indent=1, sort_keys=True) + "\n"
        self.storage.write_bytes(HISTORY, data.encode())

    # -- .metadata sidecars the upstream did not serve ---------------------------------
    def missing_sidecars(self) -> tuple[float, dict[str, list[Sidecar]]]:
        """``missing-metadata``: (when last asked, canonical -> sidecars); (0, {}) when there is
        none, :class:`DamagedState` when it is not what a run writes."""
        text = read_state_text(self.storage, MISSING_METADATA)
        if not text:
            return 0.0, {}
        try:
            return _parse_missing(text)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self._damage(MISSING_METADATA, f"is not a record of missing .metadata files ({exc!s:.120})") from None

    def write_missing_sidecars(self, checked: float, projects: Mapping[str, list[Sidecar]]) -> None:
        """Record the sidecars still missing (none: the file is removed)."""
        if not projects:
            self.remove_missing_sidecars()
            return
        document = {"checked": int(checked), "projects": projects}
        self.storage.write_bytes(MISSING_METADATA, json.dumps(document, indent=0, sort_keys=True).encode())

    def remove_missing_sidecars(self) -> None:
        self.storage.delete(MISSING_METADATA)

    # -- an interrupted verify ---------------------------------------------------------
    def verify_progress(self) -> set[str]:
        """The projects an interrupted ``verify`` already checked; :class:`DamagedState` when unreadable."""
        text = read_state_text(self.storage, VERIFY_PROGRESS)
        return set(text.split()) if text else set()

    def write_verify_progress(self, done: set[str]) -> None:
        self.storage.write_bytes(VERIFY_PROGRESS, "\n".join(sorted(done)).encode())

    def remove_verify_progress(self) -> None:
        self.storage.delete(VERIFY_PROGRESS)

    # -- requirement edges (resolve-dependencies) -----------------------------------
    def read_dependencies(self) -> tuple[dict[str, list[Edge]], dict[str, list[str]]]:
        """The edges of every mirrored project and the versions each keeps (empty when unknown)."""
        doc = self._read_json(DEPENDENCIES)
        try:
            edges = {str(k): [Edge(str(r), str(o), bool(b)) for r, o, b in v] for k, v in doc.get("edges", {}).items()}
            versions = {str(k): [str(x) for x in v] for k, v in doc.get("versions", {}).items()}
        except (AttributeError, TypeError, ValueError) as exc:
            logger.warning("Ignoring the corrupt %s (%s)", self.storage.display(DEPENDENCIES), exc)
            return {}, {}
        return edges, versions

    def write_dependencies(self, edges: Mapping[str, list[Edge]], versions: Mapping[str, list[str]]) -> None:
        doc = {
            "edges": {k: [[e.requirement, e.origin, e.build] for e in v] for k, v in sorted(edges.items())},
            "versions": dict(sorted(versions.items())),
        }
        self.storage.write_if_changed(DEPENDENCIES, (json.dumps(doc, indent=1) + "\n").encode())

    # -- validators of project pages ------------------------------------------------
    def read_validators(self) -> dict[str, PageValidators]:
        """Project (or ``/``, the root listing) -> the validators of its page's last answer."""
        from .upstream import PageValidators

        pages = self._read_json(VALIDATORS).get("pages", {})
        if not isinstance(pages, dict):
            return {}
        return {
            str(k): PageValidators(v["serial"], str(v.get("etag") or ""), str(v.get("last_modified") or ""))
            for k, v in pages.items()
            if isinstance(v, dict) and isinstance(v.get("serial"), int)
        }

    def has_validators(self) -> bool:
        return self.storage.exists(VALIDATORS)

    def write_validators(self, pages: Mapping[str, PageValidators]) -> None:
        doc = {k: {"etag": v.etag, "last_modified": v.last_modified, "serial": v.serial} for k, v in sorted(pages.items())}
        self.storage.write_if_changed(VALIDATORS, (json.dumps({"pages": doc}, indent=1) + "\n").encode())

    def _read_json(self, path: str) -> dict[str, Any]:
        """A JSON state file as a dict; missing or corrupt reads as empty (a corrupt one with a warning)."""
        try:
            text = read_state_text(self.storage, path)
        except DamagedState as exc:
            logger.warning("%s %s; ignored it (it is rebuilt by this run)", exc.path, exc.problem)
            return {}
        if not text:
            return {}
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            return doc
        except (ValueError, RecursionError) as exc:
            logger.warning("Ignoring the corrupt %s (%s)", self.storage.display(path), exc)
            return {}
