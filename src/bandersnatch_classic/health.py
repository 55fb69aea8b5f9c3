"""The mirror's health: the run history, ``bandersnatch status`` and the Prometheus textfile.

Every ``mirror`` and ``sync`` run adds a record to ``run-history.json`` in the mirror
directory when it starts (``finished`` null) and completes it when it ends, whatever the
exit status. A run killed outright (SIGKILL, power loss) never completes its record, so
``status`` can tell such a run from one that finished: the truth survives a crash. The file
keeps the last :data:`~bandersnatch_classic.statefiles.HISTORY_LENGTH` runs and is replaced atomically, like every state file.

``status`` reads only the state files (no directory walk) and asks the upstream at most one
question: its current serial, with the discovery method the mirror uses. After each run,
``[mirror] metrics-file`` gets the same facts in the Prometheus text format, written to a
temporary name and renamed, as node_exporter's textfile collector expects. Every metric is
a gauge of the last run or of the mirror's state (no counters: a deleted history would reset
them, and Prometheus derives rates from the gauges' changes where it matters).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from . import layout
from .config import MirrorConfig
from .errors import EXIT_FAILED, EXIT_OK, EXIT_UPSTREAM, EXIT_USAGE, DamagedState, LocalIOError, StateError, UpstreamError
from .progress import human, plural
from .state import MirrorState
from .statefiles import GENERATION, HISTORY, PROJECTS, STATUS, TODO, RunRecord, Sidecar, StateFiles, Todo
from .storage import Storage
from .run import Report
from .upstream import Upstream

logger = logging.getLogger(__name__)

#: ``status`` names the projects that failed in each of this many last finished runs.
FAILING_RUNS = 3
#: ``status --json`` lists at most this many of the todo's projects (``count`` says how many there are).
TODO_LISTED = 1000

#: ``status`` exits with the statuses every command uses (errors.py), in its own words.
EXIT_UNHEALTHY, EXIT_NOT_A_MIRROR = EXIT_FAILED, EXIT_USAGE
#: What the next ``mirror`` run does about a serial it cannot believe.
_COMPARE = "compares the serial of every project the upstream lists with the mirror's records"

T = TypeVar("T")


class RunRecorder:
    """Records one ``mirror``/``sync`` run: :meth:`start` before it, :meth:`finish` after, always.

    Neither ever stops the run: a history or metrics file that cannot be written is a
    warning (the run's own writes meet the same disk and report it with their exit status).
    """

    def __init__(self, storage: Storage, config: MirrorConfig, command: str, report: Report) -> None:
        self.storage = storage
        self.files = StateFiles(storage)
        self.config = config
        self.command = command
        self.report = report
        self.record: RunRecord = {
            "command": command, "pid": os.getpid(), "host": socket.gethostname(),
            "started": report.started_at.timestamp(), "finished": None, "exit_status": None,
            "method": "", "synced": 0, "removed": 0, "failed": {}, "files": 0, "bytes": 0,
            "serial": 0, "upstream_serial": None, "unsatisfied": [],
        }

    def start(self) -> None:
        try:
            try:
                runs = self.files.history()
            except DamagedState as damage:
                logger.warning("%s", damage.named("starting a new history"))
                runs = []
            self.record["serial"] = _serial(self.storage) or 0
            self.files.write_history([*runs, self.record])
        except (LocalIOError, OSError) as exc:
            logger.warning("Could not record the run's start in %s: %s", HISTORY, exc)

    def finish(self, exit_status: int) -> None:
        """Complete the record with what the run did; write the metrics file."""
        report = self.report
        serial = _serial(self.storage)
        self.record.update(
            finished=time.time(), exit_status=exit_status, method=report.method, synced=report.synced,
            removed=report.removed, failed=dict(sorted(report.failed.items())), files=report.files,
            bytes=report.bytes, serial=serial if serial is not None else self.record["serial"],
            # the target of a mirror run that asked the upstream: the upstream's serial then
            upstream_serial=report.serial if self.command == "mirror" and report.method else None,
            unsatisfied=list(report.unsatisfied),
        )
        runs: list[RunRecord] = []
        try:
            try:
                kept = [r for r in self.files.history() if not _same_run(r, self.record)]
            except DamagedState:  # named by start(), or damaged again since: the history starts anew
                kept = []
            runs = [*kept, self.record]
            self.files.write_history(runs)
        except (LocalIOError, OSError) as exc:
            logger.warning("Could not record the run in %s: %s", HISTORY, exc)
            runs = [self.record]
        if self.config.metrics_file:
            try:
                write_metrics(Path(self.config.metrics_file), render_metrics(runs, _todo_count(self.storage)))
            except (LocalIOError, OSError) as exc:
                logger.warning("Could not write the metrics file %s: %s", self.config.metrics_file, exc)


def _same_run(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.get("pid") == b["pid"] and a.get("host") == b["host"] and a.get("started") == b["started"]


def _serial(storage: Storage) -> int | None:
    """The mirror's serial for a run record (None when unreadable: the record keeps the last one known).

    A damaged ``status`` is named by the run itself, not here."""
    try:
        return StateFiles(storage).status
    except DamagedState:
        return None
    except (StateError, LocalIOError) as exc:
        logger.warning("Could not read the mirror's serial for the run history: %s", exc)
        return None


def _todo_count(storage: Storage) -> int:
    try:
        todo = StateFiles(storage).read_todo()
    except DamagedState:
        return 0
    return len(todo.projects) if todo else 0


def _running(record: Mapping[str, Any]) -> bool:
    """Whether the process of an unfinished record still runs (on this host)."""
    if record.get("finished") is not None or record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _last_success(runs: list[RunRecord]) -> RunRecord | None:
    """The last ``mirror`` run that mirrored everything (exit 0)."""
    return next((r for r in reversed(runs) if r.get("command") == "mirror" and r.get("exit_status") == 0), None)


def _upstream_seen(runs: list[RunRecord]) -> int | None:
    run = _last_learned(runs)
    return run["upstream_serial"] if run is not None else None


def _last_learned(runs: list[RunRecord]) -> RunRecord | None:
    """The last run that learned the upstream's serial (a ``mirror`` run that asked)."""
    return next((r for r in reversed(runs) if r.get("upstream_serial") is not None), None)


# -- the metrics file --------------------------------------------------------------------
_METRICS: dict[str, str] = {
    "bandersnatch_last_run_info": "The last mirror/sync run's command and discovery method (always 1).",
    "bandersnatch_last_run_start_timestamp_seconds": "When the last run started (Unix time).",
    "bandersnatch_last_run_duration_seconds": "How long the last run took.",
    "bandersnatch_last_run_exit_status": "The last run's exit status (0 everything mirrored; see docs/operations.md).",
    "bandersnatch_last_run_projects_synced": "Projects the last run synced.",
    "bandersnatch_last_run_projects_failed": "Projects that failed in the last run (retried next run).",
    "bandersnatch_last_run_projects_removed": "Projects the last run removed.",
    "bandersnatch_last_run_downloaded_files": "Files the last run downloaded.",
    "bandersnatch_last_run_downloaded_bytes": "Bytes the last run downloaded.",
    "bandersnatch_last_success_timestamp_seconds": "When the last mirror run that mirrored everything ended (Unix time).",
    "bandersnatch_serial": "The serial the mirror is complete up to (its status file).",
    "bandersnatch_upstream_serial": "The upstream's serial seen by the last mirror run that asked.",
    "bandersnatch_lag_serials": "How many serials the mirror is behind the upstream serial seen.",
    "bandersnatch_todo_projects": "Projects left in todo (failed or not reached), retried next run.",
}


def render_metrics(runs: list[RunRecord], todo_projects: int) -> str:
    """The Prometheus text exposition of the last run (``runs[-1]``) and of the mirror's state."""
    last = runs[-1]
    values: dict[str, tuple[str, float]] = {}  # name -> (labels, value)

    def put(name: str, value: float | None, labels: str = "") -> None:
        if value is not None:
            values[name] = (labels, value)

    method = str(last.get("method") or "")
    put("bandersnatch_last_run_info", 1, f'{{command="{last["command"]}",method="{method}"}}')
    put("bandersnatch_last_run_start_timestamp_seconds", last["started"])
    if last["finished"] is not None:
        put("bandersnatch_last_run_duration_seconds", round(last["finished"] - last["started"], 3))
    put("bandersnatch_last_run_exit_status", last["exit_status"])
    put("bandersnatch_last_run_projects_synced", last["synced"])
    put("bandersnatch_last_run_projects_failed", len(last["failed"]))
    put("bandersnatch_last_run_projects_removed", last["removed"])
    put("bandersnatch_last_run_downloaded_files", last["files"])
    put("bandersnatch_last_run_downloaded_bytes", last["bytes"])
    success = _last_success(runs)
    put("bandersnatch_last_success_timestamp_seconds", success["finished"] if success else None)
    put("bandersnatch_serial", last["serial"])
    upstream = _upstream_seen(runs)
    put("bandersnatch_upstream_serial", upstream)
    put("bandersnatch_lag_serials", max(0, upstream - last["serial"]) if upstream is not None else None)
    put("bandersnatch_todo_projects", todo_projects)
    lines = []
    for name, (labels, value) in values.items():
        lines += [f"# HELP {name} {_METRICS[name]}", f"# TYPE {name} gauge", f"{name}{labels} {_number(value)}"]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_metrics(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a temporary file in its folder, then a rename (textfile collector rule)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(temporary, 0o644)  # node_exporter usually runs as another user
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# -- status ------------------------------------------------------------------------------
def _iso(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds")


def _run_view(record: RunRecord) -> dict[str, Any]:
    finished = record.get("finished")
    state = "finished" if finished is not None else ("running" if _running(record) else "unfinished")
    return {
        "command": record.get("command"),
        "state": state,
        "started": _iso(record["started"]),
        "finished": _iso(finished),
        "duration_seconds": round(finished - record["started"], 3) if finished is not None else None,
        "exit_status": record.get("exit_status"),
        "method": record.get("method") or None,
        "synced": record.get("synced", 0),
        "removed": record.get("removed", 0),
        "failed": record.get("failed", {}),
        "files": record.get("files", 0),
        "bytes": record.get("bytes", 0),
        "serial": record.get("serial"),
    }


def ask_upstream_serial(upstream: Upstream, method: str, allowlist: bool) -> tuple[int | None, str]:
    """One request for the upstream's serial with ``method``: (serial, "") or (None, why not).

    Raises :class:`UpstreamError` when the request fails.
    """
    if method == "xmlrpc":
        return upstream.changelog_last_serial(), ""
    if allowlist:
        return None, (
            f"not asked now: an allowlist mirror using {method} learns its serials from its projects' pages, "
            "one request each, in a mirror run"
        )
    if method == "simple":
        return upstream.listing_serial(), ""
    if method == "html":
        return None, "not asked now: the html discovery method has no index serial; a mirror run learns its projects' from their pages"
    return None, "not asked: api-method = auto has not found a working method against this master yet"


@dataclass
class _Read:
    """What ``status`` read of the state files; each damaged one is ``None`` (or empty) and named in ``damage``."""

    runs: list[RunRecord]
    serial: int | None
    todo: Todo | None
    generation: int | None
    records: int | None
    missing: dict[str, list[Sidecar]]
    method: str
    damage: list[str] = field(default_factory=list)


@dataclass
class _Upstream:
    """The upstream's serial as ``status`` knows it."""

    serial: int | None = None
    #: How it is known: "asked now", "learned by the last run (...)", or None.
    source: str | None = None
    #: Why it was not asked ("" when it was).
    unavailable: str = ""
    #: Why asking failed ("" when it did not).
    error: str = ""


def _read_state(state: MirrorState, config: MirrorConfig) -> _Read:
    """Every state file ``status`` reports on, through the state's owner; damage named with
    what the next mirror run does about it."""
    damage: list[str] = []

    def read(what: Callable[[], T], default: T, repair: str) -> T:
        try:
            return what()
        except DamagedState as exc:
            damage.append(exc.named(f"the next mirror run {repair}"))
            return default

    runs = read(state.history, [], "starts a new history")
    serial: int | None = read(lambda: state.status, None, _COMPARE)
    todo = read(state.read_todo, None, f"discards it and {_COMPARE}")
    generation = read(lambda: state.generation, None, "checks every project (a full check)")
    records = read(state.stored_records, None, "rebuilds it from the project pages")
    published = state.published_count()
    if records is not None and published is not None and len(records) < published:
        damage.append(
            f"{state.display(PROJECTS)} lists {len(records)} projects but the root index lists {published}: "
            "records were lost; the next mirror run restores them from the project pages"
        )
    missing = read(lambda: state.missing_sidecars()[1], {}, "removes it")
    method = config.api_method
    if method == "auto":
        method = read(lambda: state.remembered_method(config.master)[0], "", "probes the upstream's methods again")
    count = len(records) if records is not None else None
    return _Read(runs, serial, todo, generation, count, missing, method, damage)


def _ask_upstream(upstream: Upstream, read: _Read, allowlist: bool) -> _Upstream:
    """The upstream's serial: asked now, else (an allowlist or html mirror) as its last run learned it."""
    known = _Upstream()
    try:
        known.serial, known.unavailable = ask_upstream_serial(upstream, read.method, allowlist)
    except UpstreamError as exc:
        known.error = str(exc)
    known.source = "asked now" if known.serial is not None else None
    learned = _last_learned(read.runs) if read.method in ("simple", "html") and known.serial is None and not known.error else None
    if learned is not None:
        # an allowlist or html mirror has no index serial to ask for in one request; its last
        # run learned its projects' serials from their pages, and its target is the newest
        known.serial, known.source = learned["upstream_serial"], f"learned by the last run ({_iso(learned['started'])})"
    return known


def _ahead(state: MirrorState, read: _Read, upstream_serial: int | None) -> list[str]:
    """``status`` or ``todo`` ahead of the upstream's serial: damage, as a mirror run judges it."""
    damage = []
    if upstream_serial is not None and read.serial is not None and read.serial > upstream_serial:
        damage.append(
            f"{state.display(STATUS)} holds serial {read.serial}, ahead of the upstream's serial "
            f"{upstream_serial}; not believed: the next mirror run {_COMPARE}"
        )
    if upstream_serial is not None and read.todo is not None and read.todo.target > upstream_serial:
        damage.append(
            f"{state.display(TODO)} aims at serial {read.todo.target}, ahead of the upstream's serial "
            f"{upstream_serial}; not believed: the next mirror run syncs its projects and asks for the changes "
            "after the status serial"
        )
    return damage


def _run_problems(runs: list[RunRecord], last_view: dict[str, Any] | None) -> list[str]:
    """The last run never finished, or the last finished one failed."""
    problems = []
    finished = [r for r in runs if r.get("finished") is not None]
    if last_view and last_view["state"] == "unfinished":
        problems.append(f"the last run (started {last_view['started']}) never finished: killed or crashed")
    judged = finished[-1] if finished and (last_view is None or last_view["state"] != "unfinished") else None
    if judged is not None and judged.get("exit_status") != 0:
        problems.append(f"the last run ({judged.get('command')}, started {_iso(judged['started'])}) exited with {judged.get('exit_status')}")
    return problems


def _limit_problems(config: MirrorConfig, lag: int | None, success_age: float | None) -> list[str]:
    """``max-lag`` and ``max-success-age`` exceeded."""
    problems = []
    if config.max_lag and lag is not None and lag > config.max_lag:
        problems.append(f"lag of {lag} serials exceeds max-lag = {config.max_lag}")
    if config.max_success_age:
        if success_age is None:
            problems.append("no mirror run has mirrored everything yet (max-success-age is set)")
        elif success_age > config.max_success_age:
            problems.append(f"the last successful mirror run ended {_age(success_age)} ago, more than max-success-age")
    return problems


def _failing(finished: list[RunRecord]) -> tuple[list[RunRecord], dict[str, str]]:
    """The last :data:`FAILING_RUNS` finished runs, and the projects that failed in each of them."""
    failing_runs = finished[-FAILING_RUNS:]
    failing: dict[str, str] = {}
    if failing_runs:
        common = set(failing_runs[0].get("failed", {}))
        for run in failing_runs[1:]:
            common &= set(run.get("failed", {}))
        failing = {name: failing_runs[-1]["failed"][name] for name in sorted(common)}
    return failing_runs, failing


def status_report(
    storage: Storage, config: MirrorConfig, upstream: Upstream, allowlist: bool
) -> tuple[dict[str, Any], int]:
    """The ``status`` document and its exit status."""
    now = time.time()
    state = MirrorState(storage, config.hash_index, layout.ROOT_HTML[0] if config.write_html else layout.ROOT_JSON)
    doc: dict[str, Any] = {"directory": str(config.directory)}
    if not state.has_run():
        doc.update(mirrored=False, healthy=False, exit_status=EXIT_NOT_A_MIRROR,
                   problems=[f"{config.directory} is not a mirror yet: run `bandersnatch mirror` first"])
        return doc, EXIT_NOT_A_MIRROR
    read = _read_state(state, config)
    known = _ask_upstream(upstream, read, allowlist)
    runs, serial, todo = read.runs, read.serial, read.todo
    lag = max(0, known.serial - serial) if known.serial is not None and serial is not None else None
    finished = [r for r in runs if r.get("finished") is not None]
    last_view = _run_view(runs[-1]) if runs else None
    success = _last_success(runs)
    success_age = round(now - success["finished"], 1) if success and success["finished"] is not None else None
    problems = _run_problems(runs, last_view) + _limit_problems(config, lag, success_age)
    if known.error:
        problems.append(f"upstream unusable: {known.error}")
    problems += read.damage + _ahead(state, read, known.serial)
    failing_runs, failing = _failing(finished)
    unsatisfied = list(finished[-1].get("unsatisfied") or []) if finished else []

    exit_status = EXIT_UPSTREAM if known.error else EXIT_UNHEALTHY if problems else EXIT_OK
    doc.update(
        mirrored=True,
        healthy=not problems,
        exit_status=exit_status,
        problems=problems,
        serial=serial,
        upstream_serial=known.serial,
        upstream_method=read.method or None,
        upstream_unavailable=known.unavailable or None,
        upstream_serial_source=known.source,
        upstream_error=known.error or None,
        lag_serials=lag,
        last_success=_iso(success["finished"]) if success else None,
        last_success_age_seconds=success_age,
        last_run=last_view,
        todo={
            "target": todo.target, "count": len(todo.projects), "projects": sorted(todo.projects)[:TODO_LISTED],
        } if todo else None,
        failing={"runs": len(failing_runs), "projects": failing},
        projects=read.records,
        projects_json_bytes=state.size(PROJECTS),
        missing_metadata={
            "projects": len(read.missing), "files": sum(len(v) for v in read.missing.values()),
        },
        unsatisfied_requirements={"count": len(unsatisfied), "edges": unsatisfied},
        generation=read.generation,
        generation_current=GENERATION,
        runs_recorded=len(runs),
        max_lag=config.max_lag or None,
        max_success_age_seconds=config.max_success_age or None,
    )
    return doc, exit_status


def _age(seconds: float) -> str:
    """``2d 3h``, ``4h 12m``, ``5m 3s`` or ``42s``: the two largest units."""
    seconds = int(seconds)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for index, (unit, size) in enumerate(units[:-1]):
        if seconds >= size:
            small, small_size = units[index + 1]
            return f"{seconds // size}{unit} {seconds % size // small_size}{small}"
    return f"{seconds}s"


def render_status(doc: Mapping[str, Any]) -> str:
    """The human summary: one aligned line per fact."""
    rows: list[tuple[str, str]] = [("mirror", doc["directory"])]
    if not doc["mirrored"]:
        rows.append(("health", "NOT A MIRROR YET: run `bandersnatch mirror` first"))
        return _aligned(rows)
    rows.append(("health", "ok" if doc["healthy"] else "UNHEALTHY: " + "; ".join(doc["problems"])))
    if doc["upstream_serial"] is not None:
        lag = f", lag {doc['lag_serials']} serials" if doc["lag_serials"] is not None else ""
        upstream = f"{doc['upstream_serial']} via {doc['upstream_method']}{lag}"
        if doc["upstream_serial_source"] != "asked now":
            upstream += f" ({doc['upstream_serial_source']}; {doc['upstream_unavailable']})"
    else:
        upstream = f"unknown ({doc['upstream_error'] or doc['upstream_unavailable']})"
    serial = str(doc["serial"]) if doc["serial"] is not None else "unreadable (see health)"
    rows += [("serial", serial), ("upstream", upstream)]
    if doc["last_success"]:
        rows.append(("last success", f"{doc['last_success']} ({_age(doc['last_success_age_seconds'])} ago)"))
    else:
        rows.append(("last success", "never"))
    run = doc["last_run"]
    if run:
        if run["state"] == "finished":
            ended = f"exit {run['exit_status']} after {run['duration_seconds']:.1f}s"
        else:
            ended = "still running" if run["state"] == "running" else "never finished (killed or crashed)"
        rows.append(("last run", f"{run['command']} started {run['started']}, {ended}"))
        if run["state"] == "finished":
            via = f" via {run['method']}" if run["method"] else ""
            rows.append(("", f"{run['synced']} synced, {len(run['failed'])} failed, {run['removed']} removed; "
                             f"{run['files']} files, {human(run['bytes'])}{via}"))
        for name, reason in run["failed"].items():
            rows.append(("failed", f"{name}: {reason}"))
    todo = doc["todo"]
    rows.append(("todo", f"{plural(todo['count'], 'project')} towards serial {todo['target']}" if todo else "none"))
    failing = doc["failing"]
    if failing["projects"]:
        rows.append((f"failing ({failing['runs']} runs)", ", ".join(failing["projects"])))
    size = plural(doc["projects"], "project") if doc["projects"] is not None else "unknown (no readable projects.json)"
    if doc["projects_json_bytes"]:
        size += f" (projects.json {human(doc['projects_json_bytes'])})"
    rows.append(("size", size))
    unsatisfied = doc["unsatisfied_requirements"]
    if unsatisfied["count"]:
        rows.append(("unsatisfied", f"{unsatisfied['count']} requirement edges the mirror cannot satisfy (last run)"))
        rows += [("", edge) for edge in unsatisfied["edges"]]
    missing = doc["missing_metadata"]
    if missing["files"]:
        rows.append(("missing metadata", f"{missing['files']} sidecars of {missing['projects']} projects"))
    return _aligned(rows)


def _aligned(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}".rstrip() for label, value in rows) + "\n"


def _silence_stdout() -> None:
    """Point stdout at /dev/null after a broken pipe, so that the interpreter's own flush at exit
    meets no broken pipe either (the recipe of the Python documentation, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (captured in tests): nothing to flush at exit
        pass
    finally:
        os.close(devnull)


def status_command(
    storage: Storage, config: MirrorConfig, upstream: Upstream, allowlist: bool, as_json: bool
) -> int:
    """``bandersnatch status``: print the report; one error line on stderr when unhealthy."""
    doc, code = status_report(storage, config, upstream, allowlist)
    try:
        print(json.dumps(doc, indent=2) if as_json else render_status(doc), end="" if not as_json else "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # ``status --json | head``: the reader has what it wanted; the status still counts
        _silence_stdout()
    if code == EXIT_NOT_A_MIRROR:
        logger.error("%s", doc["problems"][0])
    elif code == EXIT_UPSTREAM:
        logger.error("Upstream unusable: %s", doc["upstream_error"])
    elif code:
        logger.error("Mirror unhealthy: %s", "; ".join(doc["problems"]))
    return code

