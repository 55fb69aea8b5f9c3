"""Bugs are bugs: an exception the code does not expect is never a failed project.

The run stops starting new work, keeps what was done (records, todo), exits 70 and logs the
traceback once; the next run, without the bug, finishes the mirror. And a run's state is its
own: a second sync on the same Mirror starts clean.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from bandersnatch_classic import pages, worker
from bandersnatch_classic.models import Project

from .conftest import MirrorHarness
from .test_mirror import assert_mirror_equals_upstream
from .upstream import bulk_corpus

INJECTED = "injected bug in page writing"


def _break_pages_of(monkeypatch: pytest.MonkeyPatch, victim: str) -> None:
    """Make rendering ``victim``'s HTML page raise an exception nothing expects."""
    real = pages.project_html

    def broken(project: Project, *args: Any, **kwargs: Any) -> str:
        if project.canonical == victim:
            raise RuntimeError(INJECTED)
        return real(project, *args, **kwargs)

    monkeypatch.setattr(pages, "project_html", broken)


def _bug(result: Any, victim: str) -> None:
    """Exit 70, the traceback once, the project not called failed, the summary says why it stopped."""
    assert result.returncode == 70, result.stderr
    assert result.stderr.count("Traceback (most recent call last)") == 1, result.stderr
    assert result.stderr.count(f"RuntimeError: {INJECTED}") == 1
    assert "Internal error (a bug" in result.stderr and victim in result.stderr
    assert "failed: " not in result.stderr and "Failed: " not in result.stderr
    summary = [line for line in result.stderr.splitlines() if " INFO: Summary: " in line]
    assert len(summary) == 1 and "0 failed" in summary[0] and "stopped: internal error" in summary[0]


def test_a_bug_in_page_writing_exits_70_and_loses_nothing(harness: MirrorHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.configure({"workers": "1"})
    assert harness.main("mirror").returncode == 0
    before = harness.web("simple/small/index.html").read_bytes()
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.corpus.add_file("Tiny-Lib", "3.0", "tiny_lib-3.0.tar.gz")
    _break_pages_of(monkeypatch, "small")
    result = harness.main("mirror")
    _bug(result, "small")
    assert harness.web("simple/small/index.html").read_bytes() == before  # what was mirrored stays
    assert "small" in (harness.dir / "todo").read_text().split()
    monkeypatch.undo()
    again = harness.main("mirror")
    assert again.returncode == 0, again.stderr
    assert_mirror_equals_upstream(harness)
    assert not (harness.dir / "todo").exists()


def test_a_bug_in_a_worker_process_exits_70_and_loses_nothing(harness: MirrorHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    bulk_corpus(120, releases=1, files=1, size=256, corpus=harness.corpus)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # 120 projects, 3 workers: two forked processes
    _break_pages_of(monkeypatch, "bulk-0007")
    result = harness.main("--debug", "mirror")
    assert "in 2 worker processes" in result.stderr
    _bug(result, "bulk-0007")
    assert "bulk-0007" in (harness.dir / "todo").read_text().split()
    monkeypatch.undo()
    again = harness.main("mirror")
    assert again.returncode == 0, again.stderr
    assert_mirror_equals_upstream(harness)


def test_a_second_sync_on_one_mirror_starts_clean(harness: MirrorHarness) -> None:
    """``verify`` syncs twice with one Mirror: a first sync stopped by stop-on-error must not
    stop the second, nor lend it its failures."""
    harness.configure({"stop-on-error": "true", "workers": "1"})
    harness.upstream.fault(r"^/pypi/small/json$", "status", times=None, status=500)
    with harness.mirror() as mirror:
        first = mirror.sync_projects(["small"])
        assert first.stopped and "small" in first.failed and first.synced == 0
        second = mirror.sync_projects(["Tiny-Lib"])
    assert second.synced == 1 and not second.failed and not second.stopped
    assert harness.web("simple/tiny-lib/index.html").exists()


def test_a_bug_outside_any_project_task_exits_70(harness: MirrorHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the worker's own loop (not in one project's tasks) stops the run the same way."""

    def broken(*args: Any) -> None:
        raise RuntimeError(INJECTED)

    monkeypatch.setattr(worker.Job, "__init__", broken)
    result = harness.main("mirror")
    assert result.returncode == 70, result.stderr
    assert result.stderr.count("Traceback (most recent call last)") == 1, result.stderr
    assert "Internal error (a bug" in result.stderr and f"RuntimeError: {INJECTED}" in result.stderr
    assert not (harness.dir / "status").exists() and (harness.dir / "todo").exists()
    monkeypatch.undo()
    again = harness.main("mirror")
    assert again.returncode == 0, again.stderr
    assert_mirror_equals_upstream(harness)
