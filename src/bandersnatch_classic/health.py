"""The mirror's health: the run history, ``bandersnatch status`` and the Prometheus textfile.

Every ``mirror`` and ``sync`` run adds a record to ``run-history.json`` in the mirror
directory when it starts (``finished`` null) and completes it when it ends, whatever the
exit status. A run killed outright (SIGKILL, power loss) never completes its record, so
``status`` can tell such a run from one that finished: the truth survives a crash. The file
keeps the last :data:`HISTORY_LENGTH` runs and is replaced atomically, like every state file.

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
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict

from .config import MirrorConfig
from .errors import LocalIOError, StateError, UpstreamError
from .progress import human
from .sidecars import MISSING_FILE
from .state import GENERATION, PROJECTS_FILE, MirrorState, Todo
from .storage import Storage
from .sync import Report
from .upstream import Upstream

logger = logging.getLogger(__name__)

HISTORY_FILE = "run-history.json"
#: Runs kept in the history.
HISTORY_LENGTH = 50
#: ``status`` names the projects that failed in each of this many last finished runs.
FAILING_RUNS = 3
#: ``status --json`` lists at most this many of the todo's projects (``count`` says how many there are).
TODO_LISTED = 1000

EXIT_OK, EXIT_UNHEALTHY, EXIT_NOT_A_MIRROR, EXIT_UPSTREAM = 0, 1, 2, 4


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


# -- the history -------------------------------------------------------------------------
def read_history(storage: Storage) -> list[RunRecord]:
    """The recorded runs, oldest first; an unreadable history reads as empty (with a warning)."""
    text = storage.read_text(HISTORY_FILE)
    if not text:
        return []
    try:
        runs = json.loads(text)["runs"]
        if not isinstance(runs, list) or not all(isinstance(r, dict) and "started" in r for r in runs):
            raise ValueError("not a list of runs")
        return runs
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("Ignoring the corrupt run history %s (%s)", storage.display(HISTORY_FILE), exc)
        return []


def _write_history(storage: Storage, runs: list[RunRecord]) -> None:
    data = json.dumps({"runs": runs[-HISTORY_LENGTH:]}, indent=1, sort_keys=True) + "\n"
    storage.write_bytes(HISTORY_FILE, data.encode())


class RunRecorder:
    """Records one ``mirror``/``sync`` run: :meth:`start` before it, :meth:`finish` after, always.

    Neither ever stops the run: a history or metrics file that cannot be written is a
    warning (the run's own writes meet the same disk and report it with their exit status).
    """

    def __init__(self, storage: Storage, config: MirrorConfig, command: str, report: Report) -> None:
        self.storage = storage
        self.config = config
        self.command = command
        self.report = report
        self.record: RunRecord = {
            "command": command, "pid": os.getpid(), "host": socket.gethostname(),
            "started": report.started_at.timestamp(), "finished": None, "exit_status": None,
            "method": "", "synced": 0, "removed": 0, "failed": {}, "files": 0, "bytes": 0,
            "serial": 0, "upstream_serial": None,
        }

    def start(self) -> None:
        try:
            runs = read_history(self.storage)
            self.record["serial"] = _serial(self.storage) or 0
            _write_history(self.storage, [*runs, self.record])
        except (LocalIOError, OSError) as exc:
            logger.warning("Could not record the run's start in %s: %s", HISTORY_FILE, exc)

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
        )
        runs: list[RunRecord] = []
        try:
            runs = [r for r in read_history(self.storage) if not _same_run(r, self.record)] + [self.record]
            _write_history(self.storage, runs)
        except (LocalIOError, OSError) as exc:
            logger.warning("Could not record the run in %s: %s", HISTORY_FILE, exc)
            runs = [self.record]
        if self.config.metrics_file:
            try:
                write_metrics(Path(self.config.metrics_file), render_metrics(runs, _todo_count(self.storage)))
            except (LocalIOError, OSError) as exc:
                logger.warning("Could not write the metrics file %s: %s", self.config.metrics_file, exc)


def _same_run(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.get("pid") == b["pid"] and a.get("host") == b["host"] and a.get("started") == b["started"]


def _serial(storage: Storage) -> int | None:
    """The mirror's serial for a run record (None when unreadable: the record keeps the last one known)."""
    try:
        return MirrorState(storage).status
    except (StateError, LocalIOError) as exc:
        logger.warning("Could not read the mirror's serial for the run history: %s", exc)
        return None


def _todo(storage: Storage) -> Todo | None:
    text = storage.read_text("todo")
    try:
        return Todo.parse(text) if text else None
    except ValueError:
        return None


def _todo_count(storage: Storage) -> int:
    todo = _todo(storage)
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
    return next((r["upstream_serial"] for r in reversed(runs) if r.get("upstream_serial") is not None), None)


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
            f"not asked: an allowlist mirror using {method} takes its serial from its projects' pages, "
            "one request each"
        )
    if method == "simple":
        return upstream.listing_serial(), ""
    if method == "html":
        return None, "not available: the html discovery method has no index serial"
    return None, "not asked: api-method = auto has not found a working method against this master yet"


def status_report(
    storage: Storage, config: MirrorConfig, upstream: Upstream, allowlist: bool
) -> tuple[dict[str, Any], int]:
    """The ``status`` document and its exit status."""
    now = time.time()
    runs = read_history(storage)
    state = MirrorState(storage)
    todo = _todo(storage)
    doc: dict[str, Any] = {"directory": str(config.directory)}
    if not storage.exists("status") and not runs and todo is None:
        doc.update(mirrored=False, healthy=False, exit_status=EXIT_NOT_A_MIRROR,
                   problems=[f"{config.directory} is not a mirror yet: run `bandersnatch mirror` first"])
        return doc, EXIT_NOT_A_MIRROR

    mirror_serial = state.status  # a status file that is not a serial: StateError, exit 2
    method = config.api_method
    if method == "auto":
        method = state.remembered_method(config.master)[0]
    upstream_serial: int | None = None
    unavailable = ""
    error = ""
    try:
        upstream_serial, unavailable = ask_upstream_serial(upstream, method, allowlist)
    except UpstreamError as exc:
        error = str(exc)
    lag = max(0, upstream_serial - mirror_serial) if upstream_serial is not None else None

    problems: list[str] = []
    finished = [r for r in runs if r.get("finished") is not None]
    last = runs[-1] if runs else None
    last_view = _run_view(last) if last else None
    if last_view and last_view["state"] == "unfinished":
        problems.append(f"the last run (started {last_view['started']}) never finished: killed or crashed")
    judged = finished[-1] if finished and (last_view is None or last_view["state"] != "unfinished") else None
    if judged is not None and judged.get("exit_status") != 0:
        problems.append(f"the last run ({judged.get('command')}, started {_iso(judged['started'])}) exited with {judged.get('exit_status')}")
    if config.max_lag and lag is not None and lag > config.max_lag:
        problems.append(f"lag of {lag} serials exceeds max-lag = {config.max_lag}")
    success = _last_success(runs)
    success_age = round(now - success["finished"], 1) if success and success["finished"] is not None else None
    if config.max_success_age:
        if success_age is None:
            problems.append("no mirror run has mirrored everything yet (max-success-age is set)")
        elif success_age > config.max_success_age:
            problems.append(f"the last successful mirror run ended {_age(success_age)} ago, more than max-success-age")
    if error:
        problems.append(f"upstream unusable: {error}")

    failing_runs = finished[-FAILING_RUNS:]
    failing: dict[str, str] = {}
    if failing_runs:
        common = set(failing_runs[0].get("failed", {}))
        for run in failing_runs[1:]:
            common &= set(run.get("failed", {}))
        failing = {name: failing_runs[-1]["failed"][name] for name in sorted(common)}
    projects_text = storage.read_text(PROJECTS_FILE)
    try:
        projects = len(json.loads(projects_text)) if projects_text else None
    except ValueError:
        projects = None
    missing = storage.read_text(MISSING_FILE)
    try:
        missing_projects = json.loads(missing)["projects"] if missing else {}
    except (ValueError, KeyError, TypeError):
        missing_projects = {}
    generation = (storage.read_text("generation") or "").strip()

    exit_status = EXIT_UPSTREAM if error else EXIT_UNHEALTHY if problems else EXIT_OK
    doc.update(
        mirrored=True,
        healthy=not problems,
        exit_status=exit_status,
        problems=problems,
        serial=mirror_serial,
        upstream_serial=upstream_serial,
        upstream_method=method or None,
        upstream_unavailable=unavailable or None,
        upstream_error=error or None,
        lag_serials=lag,
        last_success=_iso(success["finished"]) if success else None,
        last_success_age_seconds=success_age,
        last_run=last_view,
        todo={
            "target": todo.target, "count": len(todo.projects), "projects": sorted(todo.projects)[:TODO_LISTED],
        } if todo else None,
        failing={"runs": len(failing_runs), "projects": failing},
        projects=projects,
        projects_json_bytes=len(projects_text.encode()) if projects_text else None,
        missing_metadata={
            "projects": len(missing_projects), "files": sum(len(v) for v in missing_projects.values()),
        },
        generation=int(generation) if generation.isdigit() else None,
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
        upstream = f"{doc['upstream_serial']} via {doc['upstream_method']}, lag {doc['lag_serials']} serials"
    else:
        upstream = f"unknown ({doc['upstream_error'] or doc['upstream_unavailable']})"
    rows += [("serial", str(doc["serial"])), ("upstream", upstream)]
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
    rows.append(("todo", f"{todo['count']} projects towards serial {todo['target']}" if todo else "none"))
    failing = doc["failing"]
    if failing["projects"]:
        rows.append((f"failing ({failing['runs']} runs)", ", ".join(failing["projects"])))
    size = f"{doc['projects']} projects" if doc["projects"] is not None else "unknown (no projects.json)"
    if doc["projects_json_bytes"]:
        size += f" (projects.json {human(doc['projects_json_bytes'])})"
    rows.append(("size", size))
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

