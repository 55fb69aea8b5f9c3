"""Progress of long runs: steady log lines that read well in syslog, a live line on a terminal, listing timings."""

from __future__ import annotations

import logging
import os
import pty
import re
import select
import subprocess
import sys

import pytest

from bandersnatch_classic.progress import Progress

from .conftest import MirrorHarness
from .upstream import bulk_corpus

PROGRESS = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO: Progress: (\d+)/(\d+) projects \((\d+)%\), [\d,]+ files, "
    r"[\d.]+ [KMGT]?B; [\d.]+ projects/s, [\d.]+ [KMGT]?B/s; ETA (\d+[hms][\d]*[ms]?|unknown)$"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_and_not_between(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = Progress(total=100, interval=60, clock=clock)
    with caplog.at_level(logging.INFO, logger="bandersnatch_classic.progress"):
        for done in range(1, 101):
            clock.now += 3  # a project every 3 s: a line every 20 projects
            progress.update(done, files=done * 2, size=done * 1_000_000)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5
    assert lines[0] == (
        "Progress: 20/100 projects (20%), 40 files, 20.0 MB; 0.3 projects/s, 333.3 KB/s; ETA 4m00s"
    )
    assert lines[-1].startswith("Progress: 100/100 projects (100%)") and lines[-1].endswith("ETA 0s")


def test_the_cli_logs_progress_lines_fit_for_syslog(harness: MirrorHarness) -> None:
    bulk_corpus(12, releases=1, files=1, corpus=harness.corpus)
    harness.configure({"progress-interval": "0"})  # a line after every project
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    lines = [m for m in map(PROGRESS.match, result.stderr.splitlines()) if m]
    assert lines, result.stderr
    totals = {int(m.group(2)) for m in lines}
    assert totals == {15}
    done = [int(m.group(1)) for m in lines]
    assert done == sorted(done) and done[-1] == 15


def test_a_short_run_logs_no_progress_line(harness: MirrorHarness) -> None:
    result = harness.main("mirror")  # default interval: 60 s
    assert result.returncode == 0 and "Progress:" not in result.stderr


def test_a_first_run_says_it_reads_the_listing_and_how_long_it_took(harness: MirrorHarness) -> None:
    harness.configure({"api-method": "simple"})
    result = harness.main("mirror")
    assert "Reading the upstream's project listing (simple)" in result.stderr
    assert re.search(r"Read the project listing \(simple\): 3 projects in \d+\.\ds", result.stderr)
    again = harness.main("mirror")  # an incremental run with a quick listing keeps quiet about it
    assert "listing" not in again.stderr


def _screen(text: str) -> list[str]:
    """The lines a terminal shows for ``text``: ``\r`` returns to column 0, ``ESC [K`` clears the rest."""
    lines = [""]
    for char in text.replace("\r\n", "\n").replace("\x1b[K", ""):
        if char == "\r":
            lines[-1] = ""
        elif char == "\n":
            lines.append("")
        else:
            lines[-1] += char
    return lines


def test_a_terminal_gets_a_live_progress_line(harness: MirrorHarness) -> None:
    """stderr on a pseudo-terminal: the status line is redrawn in place, log lines print above it.

    100 projects: two forked worker processes log too, and must not write over the status line.
    """
    bulk_corpus(97, releases=1, files=1, size=256, corpus=harness.corpus)
    harness.configure({"progress-interval": "3600"})  # no log lines: only the live display
    master, slave = pty.openpty()
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bandersnatch_classic", "-c", str(harness.conf), "mirror"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env,
    )
    os.close(slave)
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert proc.wait(60) == 0
    text = output.decode()
    assert "\r\x1b[K" in text and re.search(r"\d+/100 projects \(\d+%\)", text)
    assert "Progress:" not in text
    screen = [line for line in _screen(text) if line]
    log_line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+: ")
    assert all(log_line.match(line) for line in screen), [line for line in screen if not log_line.match(line)][:3]
    assert "Summary: 100 projects synced" in screen[-1]
    assert sum("synced at serial" in line for line in screen) == 100
