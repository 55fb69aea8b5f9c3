"""SIGKILL ``bandersnatch mirror`` at many moments; the mirror must never serve a bad file."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import filelock
import pytest

from .conftest import MirrorHarness
from .test_mirror import assert_mirror_equals_upstream
from .upstream import Corpus, UpstreamServer, bulk_corpus

#: Kill when the upstream sees its k-th request of the run: the XML-RPC calls, JSON
#: documents, file downloads and the page writes between them. Each run resumes what the
#: last one left (100 projects, 400 files, ~500 requests in all), so the points add up.
KILL_POINTS: list[int | str] = [1, 2, 3, 5, "big", 9, 14, 20, 28, 37, 48, "big"]
#: Files big enough to be written in several chunks, sent slowly: "big" kills the run
#: while one of them is half written.
BIG = 3 << 20


def check_served_paths(h: MirrorHarness) -> None:
    """No served path holds a partial or wrong file; every page parses."""
    files = {path.lstrip("/"): f.sha256 for path, f in h.corpus.files().items()}
    web = h.dir / "web"
    for path in (web / "packages").rglob("*") if (web / "packages").exists() else []:
        if path.is_file() and not path.name.endswith(".tmp"):
            rel = str(path.relative_to(web))
            assert rel in files, f"unexpected file {rel}"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == files[rel], f"partial or wrong {rel}"
    for path in (web / "simple").rglob("*") if (web / "simple").exists() else []:
        if path.name.endswith(".tmp") or not path.is_file():
            continue
        text = path.read_text()
        if path.name.endswith("v1_json"):
            json.loads(text)
        else:
            assert text.startswith("<!DOCTYPE html>") and "</html>" in text, path
            HTMLParser().feed(text)
    for path in (web / "json").glob("*") if (web / "json").exists() else []:
        if not path.name.endswith(".tmp"):
            json.loads(path.read_text())
    for name in ("status", "generation"):
        if (h.dir / name).exists():
            assert (h.dir / name).read_text().isdigit()


def run_and_kill(h: MirrorHarness, kill_at: int | str, whole_group: bool = True) -> int | None:
    """Start the CLI; SIGKILL it when the upstream sees its ``kill_at``-th request.

    ``kill_at = "big"``: kill it while a big file's body is half sent.
    """
    seen = 0
    lock = threading.Lock()
    proc: subprocess.Popen[str] | None = None
    killed = threading.Event()

    def kill() -> None:
        with lock:
            if proc is not None and not killed.is_set():
                if whole_group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    os.kill(proc.pid, signal.SIGKILL)
                killed.set()

    def on_request(_method: str, _path: str) -> None:
        nonlocal seen
        with lock:
            seen += 1
            hit = seen == kill_at
        if hit:
            kill()

    h.upstream.on_request = on_request
    if kill_at == "big":  # while a big file's body is half sent
        h.upstream.on_trickle = kill
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bandersnatch_classic", "-c", str(h.conf), "mirror"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        code = proc.wait(timeout=120)
    finally:
        h.upstream.on_request = h.upstream.on_trickle = None
    return None if killed.is_set() else code


@pytest.fixture
def bulk_upstream() -> UpstreamServer:
    corpus = Corpus()
    for i in range(2):  # listed first: the first "big" kill comes early
        corpus.add_file(f"big-{i}", "1.0", f"big_{i}-1.0.tar.gz", bytes([i]) * BIG)
    bulk_corpus(100, releases=2, files=2, size=3000, corpus=corpus)
    for i in range(2, 4):
        corpus.add_file(f"big-{i}", "1.0", f"big_{i}-1.0.tar.gz", bytes([i]) * BIG)
    with UpstreamServer(corpus) as server:
        server.fault(r"/big_", "trickle", times=None, seconds=0.4)
        yield server


def test_killed_anywhere_the_mirror_stays_consistent_and_completes(tmp_path: Path, bulk_upstream: UpstreamServer) -> None:
    h = MirrorHarness(tmp_path, bulk_upstream)
    h.configure({"workers": "4"})
    corpus = h.corpus
    kills = 0
    for index, point in enumerate(KILL_POINTS):
        if index == len(KILL_POINTS) // 2:  # the upstream moves on while we keep crashing
            for p in range(0, 100, 7):
                corpus.add_file(f"bulk-{p:04d}", "9.0", f"bulk_{p:04d}-9.0.tar.gz")
            corpus.delete_project("bulk-0099")
        code = run_and_kill(h, point)
        kills += code is None
        check_served_paths(h)
    assert kills >= 11
    result = h.cli("mirror")
    assert result.returncode == 0, result.stderr
    assert_mirror_equals_upstream(h)
    assert int((h.dir / "status").read_text()) == corpus.serial
    assert not (h.dir / "todo").exists()


def test_killing_only_the_main_process_keeps_the_lock_with_its_workers(tmp_path: Path, bulk_upstream: UpstreamServer) -> None:
    """Forked workers inherit the lock: a run started while they finish must not run beside them."""
    h = MirrorHarness(tmp_path, bulk_upstream)
    h.configure({"workers": "2"})
    assert run_and_kill(h, "big", whole_group=False) is None  # a worker is mid-download
    with pytest.raises(filelock.Timeout):  # the orphaned workers still hold the lock
        filelock.FileLock(str(h.dir / ".lock"), timeout=0).acquire()
    check_served_paths(h)
    for _ in range(60):  # they stop soon: nothing new is started once the main process is gone
        if h.cli("mirror").returncode != 3:
            break
        time.sleep(0.5)
    result = h.cli("mirror")
    assert result.returncode == 0, result.stderr
    assert_mirror_equals_upstream(h)
