"""``bandersnatch status``, the run history and the metrics file, through the command line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bandersnatch_classic.health import render_status

from .conftest import MirrorHarness
from .test_kill import run_and_kill
from .test_local_io import small_disk  # noqa: F401 - a fixture

STATUS_KEYS = {
    "directory", "mirrored", "healthy", "exit_status", "problems", "serial", "upstream_serial",
    "upstream_method", "upstream_unavailable", "upstream_error", "lag_serials", "last_success",
    "last_success_age_seconds", "last_run", "todo", "failing", "projects", "projects_json_bytes",
    "missing_metadata", "generation", "generation_current", "runs_recorded", "max_lag",
    "max_success_age_seconds", "unsatisfied_requirements", "upstream_serial_source",
}
LAST_RUN_KEYS = {
    "command", "state", "started", "finished", "duration_seconds", "exit_status", "method", "synced",
    "removed", "failed", "files", "bytes", "serial",
}


def status(h: MirrorHarness, *extra: str) -> tuple[int, dict[str, Any], subprocess.CompletedProcess[str]]:
    result = h.cli("status", "--json", *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result


def metrics(path: Path) -> dict[str, float]:
    """The metrics file, parsed by Prometheus' own parser: name -> value (labels dropped)."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            out[sample.name] = sample.value
    return out


def history(h: MirrorHarness) -> list[dict[str, Any]]:
    return json.loads((h.dir / "run-history.json").read_text())["runs"]


def served_bytes(h: MirrorHarness) -> int:
    return sum(p.stat().st_size for p in (h.dir / "web" / "packages").rglob("*") if p.is_file())


# -- fresh -----------------------------------------------------------------------------------
def test_status_of_a_directory_that_is_not_a_mirror_yet_exits_2_and_says_so(harness: MirrorHarness) -> None:
    code, doc, result = status(harness)
    assert code == 2 and doc["mirrored"] is False and doc["healthy"] is False
    assert "not a mirror yet" in doc["problems"][0]
    assert harness.upstream.requests == []  # nothing to compare: the upstream is not asked
    assert not harness.dir.exists()  # status creates nothing
    human = harness.cli("status")
    assert human.returncode == 2 and "NOT A MIRROR YET" in human.stdout
    assert human.stderr.count("\n") == 1 and "not a mirror yet" in human.stderr


# -- healthy ---------------------------------------------------------------------------------
def test_a_healthy_mirror_reports_every_key_and_writes_metrics_that_match_the_run(harness: MirrorHarness, tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "bandersnatch.prom"
    prom.parent.mkdir()
    harness.configure({"metrics-file": str(prom)})
    before = time.time()
    assert harness.cli("mirror").returncode == 0
    after = time.time()
    corpus = harness.corpus

    values = metrics(prom)
    assert values["bandersnatch_last_run_info"] == 1
    assert before <= values["bandersnatch_last_run_start_timestamp_seconds"] <= after
    assert 0 <= values["bandersnatch_last_run_duration_seconds"] <= after - before
    assert values["bandersnatch_last_run_exit_status"] == 0
    assert values["bandersnatch_last_run_projects_synced"] == len(corpus.projects)
    assert values["bandersnatch_last_run_projects_failed"] == 0
    assert values["bandersnatch_last_run_downloaded_files"] == len(harness.expected_files())
    assert values["bandersnatch_last_run_downloaded_bytes"] == served_bytes(harness)
    assert values["bandersnatch_serial"] == corpus.serial == int((harness.dir / "status").read_text())
    assert values["bandersnatch_upstream_serial"] == corpus.serial
    assert values["bandersnatch_lag_serials"] == 0
    assert values["bandersnatch_todo_projects"] == 0
    assert before <= values["bandersnatch_last_success_timestamp_seconds"] <= after
    assert not list(prom.parent.glob(".*.tmp"))
    assert 'command="mirror",method="xmlrpc"' in prom.read_text()

    harness.upstream.clear()
    code, doc, result = status(harness)
    assert code == 0, result.stderr
    assert set(doc) == STATUS_KEYS and set(doc["last_run"]) == LAST_RUN_KEYS
    assert harness.upstream.requests == [("POST", "/pypi")]  # one request: changelog_last_serial
    assert doc["healthy"] is True and doc["problems"] == []
    assert doc["serial"] == doc["upstream_serial"] == corpus.serial and doc["lag_serials"] == 0
    assert doc["upstream_method"] == "xmlrpc"
    run = doc["last_run"]
    assert run["state"] == "finished" and run["exit_status"] == 0 and run["command"] == "mirror"
    assert run["synced"] == len(corpus.projects) and run["failed"] == {} and run["method"] == "xmlrpc"
    assert run["files"] == len(harness.expected_files()) and run["bytes"] == served_bytes(harness)
    assert 0 <= doc["last_success_age_seconds"] < 60
    assert doc["todo"] is None and doc["failing"] == {"runs": 1, "projects": {}}
    assert doc["projects"] == len(corpus.projects)
    assert doc["projects_json_bytes"] == (harness.dir / "projects.json").stat().st_size
    assert doc["generation"] == doc["generation_current"] and doc["runs_recorded"] == 1

    human = harness.cli("status")
    assert human.returncode == 0 and human.stderr == ""
    lines = dict(line.split(None, 1) for line in human.stdout.splitlines() if not line.startswith(" "))
    assert lines["health"] == "ok" and lines["serial"] == str(corpus.serial)
    assert lines["upstream"].startswith(f"{corpus.serial} via xmlrpc, lag 0")


def test_status_with_the_simple_method_makes_one_request_header_or_body(harness: MirrorHarness) -> None:
    harness.configure({"api-method": "simple"})
    assert harness.cli("mirror").returncode == 0
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    for header in (True, False):
        harness.upstream.serial_header = header
        harness.upstream.clear()
        code, doc, _ = status(harness)
        assert code == 0 and doc["upstream_serial"] == harness.corpus.serial and doc["lag_serials"] == 1
        assert harness.upstream.requests == [("GET", "/simple/")]
    harness.upstream.root_json_enabled = False  # an HTML root listing and no header: no serial to be had
    code, doc, result = status(harness)
    assert code == 4 and "not JSON" in doc["upstream_error"] and result.stderr.count("\n") == 1


def test_status_with_html_or_an_allowlist_asks_nothing_and_says_why(harness: MirrorHarness) -> None:
    harness.configure({"api-method": "html"})
    (harness.dir).mkdir()
    (harness.dir / "status").write_text("100\n")  # a mirror no run of this tool has recorded
    code, doc, _ = status(harness)
    assert code == 0 and doc["upstream_serial"] is None and doc["lag_serials"] is None
    assert "html" in doc["upstream_unavailable"] and harness.upstream.requests == []
    harness.configure({"api-method": "simple"}, sections="[plugins]\nenabled = allowlist_project\n[allowlist]\npackages = small\n")
    code, doc, _ = status(harness)
    assert code == 0 and "allowlist" in doc["upstream_unavailable"] and harness.upstream.requests == []
    assert doc["upstream_serial_source"] is None and "unknown (not asked now: an allowlist mirror" in status_text(harness)


@pytest.mark.parametrize("method", ["simple", "html"])
def test_status_of_an_allowlist_mirror_reports_the_lag_its_last_run_learned(harness: MirrorHarness, method: str) -> None:
    """No index serial in one request: the lag is measured against the serials its last run learned."""
    h = harness
    h.configure({"api-method": method}, sections="[plugins]\nenabled = allowlist_project\n[allowlist]\npackages =\n    small\n    tiny-lib\n")
    assert h.cli("mirror").returncode == 0
    mirrored = int((h.dir / "status").read_text())
    h.corpus.touch("small")
    h.upstream.fault(r"^/pypi/small/json$", "status", times=None, status=500)
    assert h.cli("mirror").returncode == 1  # small failed: the mirror stays at its serial
    h.upstream.clear()
    code, doc, _ = status(h)
    assert h.upstream.requests == []  # nothing asked: measured from what the last run learned
    assert doc["serial"] == mirrored and doc["upstream_serial"] == h.corpus.serial
    assert doc["lag_serials"] == h.corpus.serial - mirrored > 0
    assert doc["upstream_serial_source"].startswith("learned by the last run")
    assert f"lag {doc['lag_serials']} serials (learned by the last run" in status_text(h)


def status_text(h: MirrorHarness) -> str:
    return h.cli("status").stdout


# -- lagging ---------------------------------------------------------------------------------
def test_a_lagging_mirror_reports_the_lag_and_fails_past_max_lag_or_max_success_age(harness: MirrorHarness) -> None:
    assert harness.cli("mirror").returncode == 0
    mirrored = harness.corpus.serial
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.corpus.add_file("small", "0.5", "small-0.5.tar.gz")
    code, doc, _ = status(harness)
    lag = harness.corpus.serial - mirrored
    assert code == 0 and lag >= 2  # max-lag is off by default
    assert doc["serial"] == mirrored and doc["upstream_serial"] == harness.corpus.serial and doc["lag_serials"] == lag

    harness.configure({"max-lag": str(lag - 1)})
    code, doc, result = status(harness)
    assert code == 1 and not doc["healthy"] and f"exceeds max-lag = {lag - 1}" in doc["problems"][0]
    assert result.stderr.count("\n") == 1 and "unhealthy" in result.stderr
    harness.configure({"max-lag": str(lag)})
    assert status(harness)[0] == 0

    # the last success two hours ago (the history rewritten), max-success-age one hour
    runs = history(harness)
    runs[-1]["finished"] -= 7200
    (harness.dir / "run-history.json").write_text(json.dumps({"runs": runs}))
    harness.configure({"max-success-age": "1h"})
    code, doc, _ = status(harness)
    assert code == 1 and doc["max_success_age_seconds"] == 3600 and doc["last_success_age_seconds"] >= 7200
    assert "max-success-age" in doc["problems"][0]
    human = harness.cli("status")
    assert "2h 0m ago" in human.stdout and "UNHEALTHY" in human.stdout


# -- failing ---------------------------------------------------------------------------------
def test_a_failing_mirror_names_the_project_in_status_and_metrics(harness: MirrorHarness, tmp_path: Path) -> None:
    prom = tmp_path / "bandersnatch.prom"
    harness.configure({"metrics-file": str(prom)})
    harness.upstream.fault(r"small-0\.2\.tar\.gz$", "corrupt", times=None)
    for run in range(2):  # each run spends the retries of the corrupt file (about 3 s)
        assert harness.cli("mirror").returncode == 1
        values = metrics(prom)
        assert values["bandersnatch_last_run_exit_status"] == 1
        assert values["bandersnatch_last_run_projects_failed"] == 1
        assert values["bandersnatch_todo_projects"] == 1
        assert values["bandersnatch_serial"] == 0  # a first run that failed moves no status
        assert values["bandersnatch_lag_serials"] == harness.corpus.serial
        assert "bandersnatch_last_success_timestamp_seconds" not in values
        code, doc, result = status(harness)
        assert code == 1 and not doc["healthy"]
        assert doc["last_run"]["failed"].keys() == {"small"} and "sha256" in doc["last_run"]["failed"]["small"]
        assert doc["todo"]["count"] == 1 and doc["todo"]["projects"] == ["small"]
        assert doc["failing"] == {"runs": run + 1, "projects": {"small": doc["last_run"]["failed"]["small"]}}
        assert doc["last_success"] is None
    assert "exited with 1" in doc["problems"][0]
    human = harness.cli("status")
    assert human.returncode == 1
    assert any(line.startswith("failed ") and "small: " in line for line in human.stdout.splitlines())
    assert any(line.startswith("failing (2 runs)") and line.endswith(" small") for line in human.stdout.splitlines())

    harness.upstream.clear()  # the upstream repairs the file: the next run is healthy again
    assert harness.cli("mirror").returncode == 0
    code, doc, _ = status(harness)
    assert code == 0 and doc["failing"]["projects"] == {} and doc["todo"] is None


# -- killed, interrupted, refused ------------------------------------------------------------
def test_a_killed_run_shows_as_never_finished(harness: MirrorHarness, tmp_path: Path) -> None:
    prom = tmp_path / "bandersnatch.prom"
    harness.configure({"metrics-file": str(prom)})
    assert harness.cli("mirror").returncode == 0
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    assert run_and_kill(harness, 2) is None  # SIGKILL while it asks the upstream what changed
    written = prom.read_text()
    code, doc, result = status(harness)
    assert code == 1 and doc["last_run"]["state"] == "unfinished" and doc["last_run"]["finished"] is None
    assert doc["last_run"]["exit_status"] is None and "never finished" in doc["problems"][0]
    assert doc["runs_recorded"] == 2 and doc["last_success"] is not None  # the run before still counts
    assert "never finished (killed or crashed)" in harness.cli("status").stdout
    assert prom.read_text() == written  # a killed run cannot write its end: the metrics stay the last run's

    assert harness.cli("mirror").returncode == 0  # the next run resumes and completes
    code, doc, _ = status(harness)
    assert code == 0 and doc["lag_serials"] == 0
    assert [r["exit_status"] for r in history(harness)] == [0, None, 0]


def test_an_interrupted_run_is_recorded_with_status_130(harness: MirrorHarness, tmp_path: Path) -> None:
    """SIGTERM to the CLI mid-run (at the upstream's second request): exit 130, recorded, metrics written."""
    prom = tmp_path / "bandersnatch.prom"
    harness.configure({"metrics-file": str(prom)})
    proc: subprocess.Popen[str] | None = None
    sent = []

    def on_request(_method: str, _path: str) -> None:
        if len(harness.upstream.requests) == 2 and proc is not None and not sent:
            sent.append(True)
            os.kill(proc.pid, signal.SIGTERM)

    harness.upstream.on_request = on_request
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bandersnatch_classic", "-c", str(harness.conf), "mirror"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        assert proc.wait(timeout=60) == 130
    finally:
        harness.upstream.on_request = None
    assert sent and history(harness)[-1]["exit_status"] == 130
    assert metrics(prom)["bandersnatch_last_run_exit_status"] == 130
    code, doc, _ = status(harness)
    assert code == 1 and doc["last_run"]["state"] == "finished" and doc["last_run"]["exit_status"] == 130


def test_a_refused_listing_is_recorded_and_sync_runs_too(harness: MirrorHarness, tmp_path: Path) -> None:
    prom = tmp_path / "bandersnatch.prom"
    harness.configure({"metrics-file": str(prom)})
    assert harness.cli("mirror").returncode == 0
    harness.upstream.listing_limit = 0
    assert harness.cli("mirror", "--force-check").returncode == 4
    assert history(harness)[-1]["exit_status"] == 4 and metrics(prom)["bandersnatch_last_run_exit_status"] == 4
    assert status(harness)[0] == 1
    harness.upstream.listing_limit = None
    assert harness.cli("sync", "small").returncode == 0
    last = history(harness)[-1]
    assert last["command"] == "sync" and last["exit_status"] == 0 and last["synced"] == 1
    assert 'command="sync"' in prom.read_text()
    assert metrics(prom)["bandersnatch_upstream_serial"] == harness.corpus.serial  # seen by the last mirror run


def test_a_run_stopped_by_a_full_disk_is_recorded_with_status_5(harness: MirrorHarness, small_disk: Path, tmp_path: Path) -> None:
    prom = tmp_path / "bandersnatch.prom"
    harness.corpus.add_file("big", "1.0", "big-1.0.tar.gz", os.urandom(1_000_000))
    harness.configure({"directory": str(small_disk / "pypi"), "workers": "1", "metrics-file": str(prom)})
    harness.dir = small_disk / "pypi"
    assert harness.cli("mirror").returncode == 5
    assert history(harness)[-1]["exit_status"] == 5 and metrics(prom)["bandersnatch_last_run_exit_status"] == 5
    code, doc, _ = status(harness)
    assert code == 1 and "exited with 5" in doc["problems"][0] and "big" in doc["todo"]["projects"]


# -- the history itself ----------------------------------------------------------------------
def test_the_history_keeps_the_last_50_runs_and_survives_a_corrupt_file(harness: MirrorHarness) -> None:
    harness.dir.mkdir()
    old = {"command": "mirror", "pid": 1, "host": "elsewhere", "started": 1.0, "finished": 2.0, "exit_status": 0,
           "method": "xmlrpc", "synced": 0, "removed": 0, "failed": {}, "files": 0, "bytes": 0, "serial": 0,
           "upstream_serial": 0}
    (harness.dir / "run-history.json").write_text(json.dumps({"runs": [dict(old, started=float(i)) for i in range(50)]}))
    assert harness.cli("mirror").returncode == 0
    runs = history(harness)
    assert len(runs) == 50 and runs[0]["started"] == 1.0 and runs[-1]["synced"] == len(harness.corpus.projects)

    (harness.dir / "run-history.json").write_text("{not json")
    code, doc, result = status(harness)
    assert code == 1 and doc["runs_recorded"] == 0 and "run-history.json is not a run history" in result.stderr
    assert result.stderr.count("\n") == 1 and "the next mirror run starts a new history" in doc["problems"][0]
    mirrored = harness.cli("mirror")
    assert mirrored.returncode == 0 and mirrored.stderr.count("starting a new history") == 1
    assert len(history(harness)) == 1


# -- the upstream unreachable, pre-flight ----------------------------------------------------
def test_an_unreachable_upstream_exits_4_with_one_line(harness: MirrorHarness) -> None:
    assert harness.cli("mirror").returncode == 0
    harness.upstream.stop()  # nothing listens on its port any more
    code, doc, result = status(harness)
    assert code == 4 and doc["upstream_serial"] is None and "Connection refused" in doc["upstream_error"]
    assert result.stderr.count("\n") == 1 and f"Upstream unusable: {harness.upstream.url}/pypi" in result.stderr
    assert "upstream unusable" in render_status(doc)  # the human form of the same document


def test_preflight_refuses_a_metrics_file_in_a_missing_folder(harness: MirrorHarness, tmp_path: Path) -> None:
    harness.configure({"metrics-file": str(tmp_path / "nowhere" / "bandersnatch.prom")})
    result = harness.cli("mirror")
    assert result.returncode == 2 and "[mirror] metrics-file" in result.stderr and "does not exist" in result.stderr
    assert not harness.dir.exists()


def test_a_run_in_progress_shows_as_running_and_health_is_judged_on_the_run_before(harness: MirrorHarness) -> None:
    """A record without an end whose process is alive on this host (here: the test itself) is running."""
    assert harness.cli("mirror").returncode == 0
    runs = history(harness)
    alive = dict(runs[-1], pid=os.getpid(), host=socket.gethostname(), started=time.time(), finished=None, exit_status=None)
    (harness.dir / "run-history.json").write_text(json.dumps({"runs": [*runs, alive]}))
    code, doc, _ = status(harness)
    assert code == 0 and doc["last_run"]["state"] == "running" and doc["problems"] == []
    assert "still running" in harness.cli("status").stdout
    elsewhere = dict(alive, host="another-host")  # a record of a run on another host cannot be checked: not running
    (harness.dir / "run-history.json").write_text(json.dumps({"runs": [*runs, elsewhere]}))
    code, doc, _ = status(harness)
    assert code == 1 and doc["last_run"]["state"] == "unfinished"


def test_bad_health_thresholds_are_one_line_usage_errors(harness: MirrorHarness) -> None:
    for key, value in (("max-success-age", "soon"), ("max-lag", "-1")):
        harness.configure({key: value})
        result = harness.cli("status")
        assert result.returncode == 2 and f"[mirror] {key} = " in result.stderr and result.stderr.count("\n") == 1
        harness.configure({key: None})
    harness.configure({"max-success-age": "90m", "max-lag": "500"})
    assert harness.cli("mirror").returncode == 0
    code, doc, _ = status(harness)
    assert code == 0 and doc["max_success_age_seconds"] == 5400 and doc["max_lag"] == 500
