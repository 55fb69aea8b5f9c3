"""Cron-friendly runs through the CLI: one line when nothing changed, one request, nothing silent, one code per meaning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bandersnatch_classic import cli, errors

from .conftest import MirrorHarness


def _lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stderr.strip().splitlines()


@pytest.mark.parametrize("method", ["xmlrpc", "simple", "auto"])
def test_a_no_change_run_prints_one_line_and_makes_one_request(harness: MirrorHarness, method: str) -> None:
    harness.configure({"api-method": method})
    assert harness.main("mirror").returncode == 0
    harness.upstream.clear()
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    lines = _lines(result)
    assert len(lines) == 1 and " INFO: Summary: 0 projects synced, 0 failed, 0 removed" in lines[0], lines
    assert harness.upstream.count() == 1


def test_auto_remembers_the_method_that_worked(harness: MirrorHarness) -> None:
    """Without XML-RPC, auto asks for it once, then goes straight to the JSON listing."""
    harness.upstream.xmlrpc_enabled = False
    first = harness.main("mirror")
    assert first.returncode == 0, first.stderr
    assert "Upstream method: simple (xmlrpc unavailable" in first.stderr
    assert (harness.dir / "upstream-method").read_text().split()[0] == "simple"
    for _ in range(2):
        harness.upstream.clear()
        result = harness.main("mirror")
        assert result.returncode == 0 and len(_lines(result)) == 1, result.stderr
        assert harness.upstream.counts() == {"simple": 1}


def test_auto_probes_again_when_the_remembered_method_stops_working(harness: MirrorHarness) -> None:
    harness.upstream.xmlrpc_enabled = False
    assert harness.main("mirror").returncode == 0
    harness.upstream.simple_json_enabled = False  # only the HTML listing is left
    harness.corpus.touch("small")
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert "Upstream method: html" in result.stderr
    assert (harness.dir / "upstream-method").read_text().split()[0] == "html"


def test_a_stale_memory_is_probed_again(harness: MirrorHarness) -> None:
    """Once a day auto asks the preferred methods again: XML-RPC may be back."""
    harness.upstream.xmlrpc_enabled = False
    assert harness.main("mirror").returncode == 0
    memo = harness.dir / "upstream-method"
    method, _, master = memo.read_text().split()
    memo.write_text(f"{method} 1000 {master}\n")  # probed long ago
    harness.upstream.xmlrpc_enabled = True
    harness.upstream.clear()
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert memo.read_text().split()[0] == "xmlrpc" and harness.upstream.counts()["xmlrpc"] >= 1


def test_an_unreachable_upstream_gives_one_plain_error_and_the_summary(harness: MirrorHarness) -> None:
    harness.configure({"master": "http://127.0.0.1:9", "timeout": "1"})
    result = harness.main("mirror", timeout=60)
    assert result.returncode == 4
    lines = _lines(result)
    assert len(lines) == 2, lines
    assert " ERROR: Upstream unusable: http://127.0.0.1:9/pypi: " in lines[0] and "Connection refused" in lines[0]
    assert "Retrying" not in result.stderr and "HTTPConnection(" not in result.stderr
    assert " INFO: Summary: " in lines[1]


def test_sync_of_a_name_the_upstream_lacks_fails_naming_it(harness: MirrorHarness) -> None:
    assert harness.main("mirror").returncode == 0
    result = harness.main("sync", "small", "no-such-project")
    assert result.returncode == 1, result.stderr
    errors = [line for line in _lines(result) if " ERROR: " in line]
    assert len(errors) == 1 and "no-such-project" in errors[0] and "no such project" in errors[0]
    assert "1 failed" in _lines(result)[-1]


def test_sync_of_a_name_the_filters_exclude_fails_naming_it(harness: MirrorHarness) -> None:
    harness.configure(sections="[plugins]\nenabled = blocklist_project\n[blocklist]\npackages = small\n")
    result = harness.main("sync", "small")
    assert result.returncode == 1 and "small" in result.stderr and "filters" in result.stderr


def test_an_allowlisted_name_the_upstream_lacks_is_a_warning_on_every_run(harness: MirrorHarness) -> None:
    harness.configure(sections="[plugins]\nenabled = allowlist_project\n[allowlist]\npackages =\n    small\n    smal\n")
    for _ in range(2):
        result = harness.main("mirror")
        assert result.returncode == 0, result.stderr
        warnings = [line for line in _lines(result) if " WARNING: " in line]
        assert len(warnings) == 1 and "smal:" in warnings[0] and "no such project" in warnings[0]


@pytest.mark.parametrize("suffix", ["/simple/", "/simple", "/pypi"])
def test_a_master_naming_an_api_is_normalised_with_a_warning(harness: MirrorHarness, suffix: str) -> None:
    harness.configure({"master": harness.upstream.url + suffix})
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in _lines(result) if " WARNING: " in line]
    assert len(warnings) == 1 and f"set master = {harness.upstream.url}" in warnings[0]
    assert "Summary: 3 projects synced" in result.stderr


def test_another_run_holding_the_lock_exits_3(harness: MirrorHarness) -> None:
    from bandersnatch_classic.sync import mirror_lock

    with mirror_lock(harness.dir):
        result = harness.cli("mirror")
    assert result.returncode == 3 and ".lock" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_run_exits_130_with_the_summary_and_keeps_todo(harness: MirrorHarness, sig: int) -> None:
    """The signal arrives while the run waits on a file; the run stops, says so, and resumes next time."""
    arrived, release = threading.Event(), threading.Event()

    def hold_files(method: str, path: str) -> None:
        if path.startswith("/packages/"):
            arrived.set()
            release.wait(30)

    harness.upstream.on_request = hold_files
    cmd = [sys.executable, "-m", "bandersnatch_classic", "-c", str(harness.conf), "mirror"]
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
    try:
        assert arrived.wait(30)
        proc.send_signal(sig)
        release.set()
        _, stderr = proc.communicate(timeout=60)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    harness.upstream.on_request = None
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert any("ERROR: Interrupted" in line for line in lines) and "Summary: " in lines[-1]
    assert "Traceback" not in stderr
    assert (harness.dir / "todo").exists()
    assert harness.main("mirror").returncode == 0


def test_first_run_exits_6(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_logging: None) -> None:
    """Only at the default path (no -c): a path given with -c that does not exist is a typo (exit 2)."""
    from bandersnatch_classic import config as configuration

    monkeypatch.setattr(configuration, "DEFAULT_CONFIG_PATH", tmp_path / "new.conf")
    assert cli.main(["mirror"]) == 6 and (tmp_path / "new.conf").exists()


@pytest.mark.parametrize(
    "exc, status",
    [
        (errors.ConfigError("x"), 2),
        (errors.StateError("x"), 2),
        (errors.LockHeld("x"), 3),
        (errors.UpstreamError("x"), 4),
        (errors.UnsafeListing("x"), 4),
        (errors.LocalIOError("x"), 5),
        (KeyboardInterrupt(), 130),
        (RuntimeError("a bug"), 70),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_every_stop_has_its_own_exit_status(exc: BaseException, status: int, caplog: pytest.LogCaptureFixture) -> None:
    assert cli.exit_status(exc) == status
    # another run holding the lock is doing the work: worth a line, not an error
    assert len(caplog.records) == 1 and caplog.records[0].levelname == ("WARNING" if status == 3 else "ERROR")
    assert (caplog.records[0].exc_info is not None) == (status == 70)  # only a bug gets a traceback
