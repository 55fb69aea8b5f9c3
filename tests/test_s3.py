"""The S3 backend against a real S3-speaking server on 127.0.0.1 (moto's standalone server).

One server for the module; each test gets its own bucket. Runs go through the command
line (in this process, or a subprocess where a run is killed), so the configuration,
pre-flight, the lock and the storage are exercised as an operator would.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from .conftest import MirrorHarness
from .test_kill import check_served_paths, run_and_kill
from .test_mirror import assert_mirror_equals_upstream
from .test_serve import Running
from .upstream import Corpus, UpstreamServer, bulk_corpus

boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (pip install -e '.[test]')")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]')")

from botocore.config import Config as BotoConfig  # noqa: E402

from bandersnatch_classic.s3 import Limits, S3Storage  # noqa: E402
from bandersnatch_classic.s3_lock import LOCK_KEY, Lease, S3Lock  # noqa: E402
from bandersnatch_classic.serve import make_storage_server  # noqa: E402

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
_buckets = itertools.count()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the whole module."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    try:
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
    except Exception as exc:  # noqa: BLE001  # any reason it cannot start is a reason to skip
        pytest.skip(f"the moto S3 server could not start on 127.0.0.1: {exc}")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class Bucket:
    """A fresh bucket on the test server and direct access to its keys."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.name = f"mirror-{next(_buckets)}"
        self.prefix = "pypi"
        self.client = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
        self.client.create_bucket(Bucket=self.name)

    def section(self, **extra: str) -> str:
        keys = {**CREDENTIALS, "endpoint_url": self.endpoint, "signature_version": "s3v4",
                "config_param_connect_timeout": "5", "config_param_tcp_keepalive": "true", **extra}
        return "[s3]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())

    def keys(self) -> dict[str, int]:
        """Every key under the prefix (relative to it) and its size."""
        out: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=f"{self.prefix}/"):
            for item in page.get("Contents", []):
                out[item["Key"][len(self.prefix) + 1:]] = item["Size"]
        return out

    def get(self, rel: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=f"{self.prefix}/{rel}")["Body"].read()

    def put(self, rel: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=f"{self.prefix}/{rel}", Body=data)

    def delete(self, rel: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=f"{self.prefix}/{rel}")

    def copy_out(self, directory: Path) -> Path:
        """The bucket copied out key by key into ``directory``."""
        for rel in self.keys():
            path = directory / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.get(rel))
        return directory

    def storage(self, limits: Limits | None = None) -> S3Storage:
        def client(limits: Limits) -> Any:
            config = BotoConfig(**limits.botocore())
            return boto3.client("s3", endpoint_url=self.endpoint, config=config, **CREDENTIALS)

        return S3Storage(self.name, self.prefix, client, limits)


def s3_harness(root: Path, upstream: UpstreamServer, bucket: Bucket, **s3_keys: str) -> MirrorHarness:
    root.mkdir(parents=True, exist_ok=True)
    h = MirrorHarness(root, upstream)
    h.configure({"storage-backend": "s3", "directory": f"/{bucket.name}/{bucket.prefix}"}, bucket.section(**s3_keys))
    return h


def s3_and_disk_harnesses(tmp_path: Path, upstream: UpstreamServer, bucket: Bucket) -> tuple[MirrorHarness, MirrorHarness]:
    """Two mirrors of the same upstream: one in the bucket, one in a directory, to compare."""
    (tmp_path / "disk").mkdir()
    return s3_harness(tmp_path / "s3", upstream, bucket), MirrorHarness(tmp_path / "disk", upstream)


@pytest.fixture
def bucket(endpoint: str) -> Bucket:
    return Bucket(endpoint)


@pytest.fixture
def s3h(tmp_path: Path, upstream: UpstreamServer, bucket: Bucket) -> MirrorHarness:
    return s3_harness(tmp_path / "s3", upstream, bucket)


def check_bucket_served(h: MirrorHarness, bucket: Bucket) -> None:
    """No key under web/ holds a partial or wrong file; every page parses; no temporaries."""
    copy = bucket.copy_out(h.root / "copied")
    check_served_paths(SimpleNamespace(corpus=h.corpus, dir=copy))  # type: ignore[arg-type]
    assert not [key for key in bucket.keys() if key.endswith(".tmp")]


def comparable(directory: Path) -> dict[str, Any]:
    """A mirror directory's files by path, links followed, without what holds the time of a run
    (the kept page versions are named by serial only: their names hold the time too)."""
    volatile = {".lock", "run-history.json", "web/last-modified", "upstream-method"}
    out: dict[str, Any] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel not in volatile:
            rel = re.sub(r"/index_(\d+)_[^/]+\.(html|v1_json)$", r"/index_\1.\2", rel)
            out[rel] = json.loads(path.read_bytes()) if rel == "projects.json" else path.read_bytes()
    return out


def test_full_and_incremental_sync_copy_out_to_the_filesystem_mirror(
    tmp_path: Path, upstream: UpstreamServer, bucket: Bucket
) -> None:
    s3h, disk = s3_and_disk_harnesses(tmp_path, upstream, bucket)
    for h in (s3h, disk):
        h.configure({"keep_index_versions": "2"})
        result = h.main("mirror")
        assert result.returncode == 0, result.stderr
    assert comparable(bucket.copy_out(tmp_path / "copy1")) == comparable(disk.dir)
    assert bucket.storage().is_link("web/simple/small/index.html")

    upstream.corpus.add_file("small", "0.9", "small-0.9.tar.gz")
    for h in (s3h, disk):
        result = h.main("mirror")
        assert result.returncode == 0, result.stderr
    copy = bucket.copy_out(tmp_path / "copy2")
    assert comparable(copy) == comparable(disk.dir)
    assert "small-0.9.tar.gz" in (copy / "web/simple/small/index.html").read_text()
    assert int((copy / "status").read_text()) == upstream.corpus.serial
    assert LOCK_KEY not in bucket.keys()  # released at the end of the run
    stored = bucket.client.head_object(Bucket=bucket.name, Key=f"{bucket.prefix}/web/{next(iter(s3h.expected_files()))}")
    assert stored["Metadata"]["sha256"] == next(iter(s3h.expected_files().values()))


def test_status_reads_the_bucket(s3h: MirrorHarness) -> None:
    assert s3h.main("mirror").returncode == 0
    result = s3h.main("status", "--json")
    assert result.returncode == 0, result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "bandersnatch_classic", "-c", str(s3h.conf), "status", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["serial"] == s3h.corpus.serial


def test_verify_repairs_a_deleted_and_a_corrupted_object_then_delete(s3h: MirrorHarness, bucket: Bucket) -> None:
    assert s3h.main("mirror").returncode == 0
    files = sorted(s3h.expected_files())
    gone, corrupt = f"web/{files[0]}", f"web/{files[1]}"
    bucket.delete(gone)
    bucket.put(corrupt, b"corrupt")  # a PUT without our metadata: its sha256 is read from the bytes
    bucket.put("web/packages/st/ray/stray.tar.gz", b"nobody links me")
    result = s3h.main("verify", "--delete")
    assert result.returncode == 1, result.stderr  # it found something wrong
    assert "2 missing or corrupt files in 1 projects (2 fixed)" in result.stderr and "1 unowned" in result.stderr
    for rel in (gone, corrupt):
        assert hashlib.sha256(bucket.get(rel)).hexdigest() == s3h.expected_files()[rel[4:]]
    assert "web/packages/st/ray/stray.tar.gz" not in bucket.keys()
    assert s3h.main("verify").returncode == 0

    result = s3h.main("delete", "tiny-lib")
    assert result.returncode == 0, result.stderr
    keys = bucket.keys()
    assert not [key for key in keys if "tiny" in key.replace("_", "-").lower()]
    assert "tiny-lib" not in bucket.get("web/simple/index.html").decode()


def test_a_second_run_finds_the_lock_held(s3h: MirrorHarness, bucket: Bucket) -> None:
    with S3Lock(bucket.storage()):
        result = s3h.main("mirror")
        assert result.returncode == 3, result.stderr
        assert "another run holds" in result.stderr and LOCK_KEY in result.stderr
    assert not bucket.keys().get("status")  # nothing was written
    assert s3h.main("mirror").returncode == 0  # released


def test_a_stale_lease_is_taken_over_and_a_taken_lease_is_lost(s3h: MirrorHarness, bucket: Bucket) -> None:
    dead = {"owner": "elsewhere:1:x", "expires": time.time() - 1000}  # > 2 lease periods of 60 s ago
    bucket.put(LOCK_KEY, json.dumps(dead).encode())
    result = s3h.main("mirror")
    assert result.returncode == 0, result.stderr
    assert "Taking over the lock of elsewhere:1:x" in result.stderr

    recent = {"owner": "elsewhere:2:y", "expires": time.time() - 60}  # expired, not stale yet
    bucket.put(LOCK_KEY, json.dumps(recent).encode())
    assert s3h.main("mirror").returncode == 3
    bucket.delete(LOCK_KEY)

    lock = S3Lock(bucket.storage())
    lock.acquire()
    assert lock.renew() and json.loads(bucket.get(LOCK_KEY))["owner"] == lock.owner
    bucket.put(LOCK_KEY, json.dumps({"owner": "thief", "expires": time.time() + 60}).encode())
    assert not lock.renew() and lock.storage.lease.state() == Lease.TAKEN
    lock.release()
    assert json.loads(bucket.get(LOCK_KEY))["owner"] == "thief"  # not ours to delete
    bucket.delete(LOCK_KEY)
    lock = S3Lock(bucket.storage())
    lock.acquire()
    bucket.delete(LOCK_KEY)  # deleted under the holder
    assert not lock.renew() and lock.storage.lease.state() == Lease.TAKEN


def test_killed_runs_leave_no_partial_object_and_resume(tmp_path: Path, bucket: Bucket) -> None:
    corpus = Corpus()
    bulk_corpus(30, releases=1, files=2, size=3000, corpus=corpus)
    with UpstreamServer(corpus) as server:
        h = s3_harness(tmp_path, server, bucket)
        h.configure({"workers": "2"})
        kills = 0
        for point in (2, 9, 25, 40):
            kills += run_and_kill(h, point) is None
            check_bucket_served(h, bucket)
            assert LOCK_KEY in bucket.keys()  # the killed run's: taken over, its process is gone
        assert kills == 4
        result = h.cli("mirror")
        assert result.returncode == 0, result.stderr
        h.dir = bucket.copy_out(tmp_path / "final")
        assert_mirror_equals_upstream(h)
        assert not bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads")


def test_unreachable_bucket_and_missing_boto3_exit_2(s3h: MirrorHarness, bucket: Bucket) -> None:
    s3h.configure({"directory": "/no-such-bucket/pypi"})
    result = s3h.main("mirror")
    assert result.returncode == 2 and "no-such-bucket" in result.stderr and "not reachable" in result.stderr
    s3h.configure({"directory": f"/{bucket.name}/pypi"})
    code = (
        "import sys; sys.modules['boto3'] = None\n"
        "from bandersnatch_classic.cli import main\n"
        f"sys.exit(main(['-c', {str(s3h.conf)!r}, 'mirror']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "pip install 'bandersnatch-classic[s3]'" in errors[0]
    result = s3h.main("serve")  # the bucket is empty
    assert result.returncode == 2 and "no simple index yet" in result.stderr, result.stderr


class BucketRunning(Running):
    """``serve`` from a bucket on 127.0.0.1 on a free port, in a thread."""

    def __init__(self, storage: S3Storage) -> None:
        self.server = make_storage_server(storage, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()


def test_serve_from_the_bucket_answers_as_serve_from_the_directory(
    tmp_path: Path, upstream: UpstreamServer, bucket: Bucket
) -> None:
    s3h, disk = s3_and_disk_harnesses(tmp_path, upstream, bucket)
    for h in (s3h, disk):
        assert h.main("mirror").returncode == 0
    package = next(iter(s3h.expected_files()))
    from_bucket, from_disk = BucketRunning(bucket.storage()), Running(disk.dir / "web")
    try:
        for path, accept in [
            ("/simple/", None), ("/simple/", "application/vnd.pypi.simple.v1+json"),
            ("/simple/small/", "application/vnd.pypi.simple.v1+json;q=0.5, text/html"),
            ("/simple/small/", "application/vnd.pypi.simple.v1+html"), ("/simple/Small/", None),
            ("/simple/small/", "image/png"), ("/simple/nothing/", None), (f"/{package}", None),
            ("/json/small", None), ("/pypi/small/json", None), ("/packages/no/such.whl", None),
        ]:
            got, want = from_bucket.request(path, accept), from_disk.request(path, accept)
            # JSON API answers name the server they came from in their file URLs
            got_body = got[1].replace(f"127.0.0.1:{from_bucket.port}".encode(), b"HOST")
            want_body = want[1].replace(f"127.0.0.1:{from_disk.port}".encode(), b"HOST")
            assert (got[0].status, got[0].getheader("Content-Type"), got[0].getheader("Vary"), got_body) == (
                want[0].status, want[0].getheader("Content-Type"), want[0].getheader("Vary"), want_body), path
            assert got[0].getheader("X-PyPI-Last-Serial") == want[0].getheader("X-PyPI-Last-Serial"), path
        response, body = from_bucket.request(f"/{package}", method="HEAD")
        assert response.status == 200 and body == b"" and int(response.getheader("Content-Length")) > 0
        stamp = response.getheader("Last-Modified")
        response, _ = from_bucket.request(f"/{package}", headers={"If-Modified-Since": stamp})
        assert response.status == 304
    finally:
        for running in (from_bucket, from_disk):
            running.server.shutdown()
            running.server.server_close()


def test_verify_read_finds_bytes_gone_bad_under_a_right_stored_hash(s3h: MirrorHarness, bucket: Bucket) -> None:
    assert s3h.main("mirror").returncode == 0
    rel, sha = next(iter(s3h.expected_files().items()))
    key = f"{bucket.prefix}/web/{rel}"
    size = len(bucket.get(f"web/{rel}"))
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=b"x" * size, Metadata={"sha256": sha})
    assert s3h.main("verify").returncode == 0  # size and stored hash: it cannot see this
    result = s3h.main("verify", "--read")
    assert result.returncode == 1 and "1 missing or corrupt files in 1 projects (1 fixed)" in result.stderr, result.stderr
    assert hashlib.sha256(bucket.get(f"web/{rel}")).hexdigest() == sha
    assert s3h.main("verify", "--read").returncode == 0


def test_a_large_file_goes_up_as_a_completed_multipart_upload(
    tmp_path: Path, bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bandersnatch_classic import s3

    monkeypatch.setattr(s3, "MULTIPART", 5 << 20)  # S3's smallest part, instead of 64 MiB
    data = bytes(range(256)) * (45 << 10)  # 11.25 MiB: three parts
    corpus = Corpus()
    corpus.add_file("large", "1.0", "large-1.0.tar.gz", data)
    with UpstreamServer(corpus) as server:
        h = s3_harness(tmp_path, server, bucket)
        result = h.main("mirror")
        assert result.returncode == 0, result.stderr
        (rel, sha), = [(path, sha) for path, sha in h.expected_files().items() if path.endswith(".tar.gz")]
        head = bucket.client.head_object(Bucket=bucket.name, Key=f"{bucket.prefix}/web/{rel}")
        assert head["ETag"].endswith('-3"') and head["Metadata"]["sha256"] == sha  # three parts, completed
        assert hashlib.sha256(bucket.get(f"web/{rel}")).hexdigest() == sha
        assert not bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads")


# -- one writer: a lost lease, a killed holder's workers, a hung server -----------------------
def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.05) -> Any:
    """Poll ``condition`` until it answers something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = condition()
        if answer:
            return answer
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


class Gate:
    """Holds the upstream's answers while closed, counting the requests it holds: a run
    whose every worker thread waits here is not in the middle of writing to the bucket."""

    def __init__(self, upstream: UpstreamServer) -> None:
        self.open = threading.Event()
        self.open.set()
        self.waiting = 0
        self._lock = threading.Lock()
        upstream.on_request = self._hold

    def _hold(self, _method: str, _path: str) -> None:
        if self.open.is_set():
            return
        with self._lock:
            self.waiting += 1
        self.open.wait(60)
        with self._lock:
            self.waiting -= 1


def start_run(h: MirrorHarness, log: Path) -> subprocess.Popen[bytes]:
    """``bandersnatch mirror`` as a subprocess in its own process group, its log in ``log``."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "bandersnatch_classic", "-c", str(h.conf), "mirror"],
            stdout=subprocess.DEVNULL, stderr=fh, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR: " in line]


def bucket_state(bucket: Bucket) -> dict[str, tuple[str, Any]]:
    """Every key under the prefix with its ETag and time of last write."""
    out = {}
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=f"{bucket.prefix}/"):
        for item in page.get("Contents", []):
            out[item["Key"]] = (item["ETag"], item["LastModified"])
    return out


def forking_corpus() -> Corpus:
    """Enough projects for a run with workers = 2 to fork two worker processes."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: a run forks no worker processes")
    return bulk_corpus(120, releases=1, files=1, size=500)


@pytest.mark.parametrize("stopped", ["the whole run", "its main process"])
def test_a_run_stopped_past_its_lease_is_taken_over_and_writes_nothing_more(
    tmp_path: Path, bucket: Bucket, stopped: str
) -> None:
    """Stopped whole (a suspended machine), or only its main process, which renews the lease,
    while its forked workers go on: either way nothing of it lands after the lease ran out."""
    with UpstreamServer(forking_corpus()) as server:
        h = s3_harness(tmp_path, server, bucket, lock_lease_seconds="4")
        h.configure({"workers": "2"})
        gate = Gate(server)
        first = start_run(h, tmp_path / "first.log")
        try:
            wait_for(lambda: sum(k.startswith("web/simple/") for k in bucket.keys()) >= 10, "the first run to sync")
            assert len(group_members(first.pid)) >= 3  # the main process and two forked workers
            if stopped == "the whole run":
                gate.open.clear()  # every worker thread ends up waiting on the upstream, no write half sent
                wait_for(lambda: gate.waiting >= 2, "both worker processes to wait on the upstream")
                os.killpg(first.pid, signal.SIGSTOP)
                gate.open.set()
            else:
                os.kill(first.pid, signal.SIGSTOP)

            def second_run() -> subprocess.CompletedProcess[str] | None:
                result = h.cli("mirror")
                return None if result.returncode == 3 else result  # until the lease is stale

            result = wait_for(second_run, "a second run to take the lock over", every=0.5)
            assert result.returncode == 0, result.stderr
            assert "Taking over the lock of" in result.stderr and "its lease expired" in result.stderr
            before = bucket_state(bucket)
            assert f"{bucket.prefix}/{LOCK_KEY}" not in before  # the second run released it
            stamp = time.time()
            wait_for(lambda: int(time.time()) > int(stamp), "the next second")  # a later write shows in LastModified

            os.killpg(first.pid, signal.SIGCONT)
            assert first.wait(timeout=60) == 5
            wait_for(lambda: group_gone(first.pid), "the first run's workers to exit")
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                os.killpg(first.pid, signal.SIGCONT)
                first.wait()
        log = (tmp_path / "first.log").read_text()
        errors = error_lines(log)
        assert len(errors) == 1, log
        assert "Lock lost, run stopped" in errors[0] and f"S3 storage server at {bucket.endpoint}" in errors[0]
        assert "was taken over by another run" in errors[0] and "wrote nothing more" in errors[0]
        assert bucket_state(bucket) == before  # nothing written, rewritten or deleted after the takeover


def test_a_takeover_on_the_same_host_waits_for_the_killed_runs_workers(tmp_path: Path, bucket: Bucket) -> None:
    with UpstreamServer(forking_corpus()) as server:
        h = s3_harness(tmp_path, server, bucket)
        h.configure({"workers": "2"})
        gate = Gate(server)
        first = start_run(h, tmp_path / "first.log")
        try:
            wait_for(lambda: sum(k.startswith("web/simple/") for k in bucket.keys()) >= 10, "the first run to sync")
            gate.open.clear()
            wait_for(lambda: gate.waiting >= 2, "both worker processes to wait on the upstream")
            workers = [pid for pid in group_members(first.pid) if pid != first.pid]
            assert len(workers) >= 2
            os.kill(first.pid, signal.SIGKILL)  # the main process only: its workers live on
            first.wait()
            assert set(workers) <= set(group_members(first.pid))

            result = h.cli("mirror")
            assert result.returncode == 3, result.stderr  # not while the killed run's workers may write
            assert "another run holds" in result.stderr and LOCK_KEY in result.stderr

            gate.open.set()  # they finish what they hold and exit
            wait_for(lambda: group_gone(first.pid), "the killed run's workers to exit")
        finally:
            gate.open.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        result = h.cli("mirror")
        assert result.returncode == 0, result.stderr
        assert f"no process of its run (process group {first.pid}) is left on this host" in result.stderr
        check_bucket_served(h, bucket)
        h.dir = bucket.copy_out(tmp_path / "final")
        assert_mirror_equals_upstream(h)


class MotoProcess:
    """A moto S3 server in its own process, which a test can stop (SIGSTOP) or kill."""

    def __init__(self, log: Path) -> None:
        with open(log, "wb") as fh:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        found = wait_for(lambda: re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text()), "moto to listen")
        self.endpoint = found.group(1)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait()


@pytest.fixture
def moto_process(tmp_path: Path) -> Iterator[MotoProcess]:
    server = MotoProcess(tmp_path / "moto.log")
    try:
        yield server
    finally:
        server.close()


#: Short limits for the tests below, set through the documented [s3] keys.
SHORT = Limits(connect_timeout=2, read_timeout=2, retries=1, lease=6)


def short_limits_harness(tmp_path: Path, server: UpstreamServer, bucket: Bucket) -> MirrorHarness:
    return s3_harness(
        tmp_path, server, bucket, config_param_connect_timeout=f"{SHORT.connect_timeout:g}",
        config_param_read_timeout=f"{SHORT.read_timeout:g}", max_attempts=str(SHORT.retries),
        lock_lease_seconds=f"{SHORT.lease:g}",
    )


def test_a_hung_storage_server_fails_the_run_within_the_documented_bound(
    tmp_path: Path, moto_process: MotoProcess
) -> None:
    bucket = Bucket(moto_process.endpoint)
    with UpstreamServer(bulk_corpus(100, releases=1, files=2, size=500)) as server:
        server.on_request = lambda _method, _path: time.sleep(0.01)  # a run of some seconds
        h = short_limits_harness(tmp_path, server, bucket)
        run = start_run(h, tmp_path / "run.log")
        try:
            wait_for(lambda: sum(k.startswith("web/packages/") for k in bucket.keys()) >= 5, "the run to sync")
            moto_process.process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
            hung = time.monotonic()
            assert run.poll() is None, "the run ended before the server hung"
            code = run.wait(timeout=SHORT.stop_bound() + 60)
            took = time.monotonic() - hung
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
            moto_process.process.send_signal(signal.SIGCONT)
    log = (tmp_path / "run.log").read_text()
    assert code == 5, log
    assert took <= SHORT.stop_bound() + 10, f"{took:.1f}s, bound {SHORT.stop_bound():g}s\n{log}"
    errors = error_lines(log)
    assert len(errors) == 1, log
    assert f"S3 storage server at {moto_process.endpoint}" in errors[0] and "Local I/O error" not in errors[0]


def test_a_storage_server_that_goes_away_is_named_not_the_local_disk(
    tmp_path: Path, moto_process: MotoProcess
) -> None:
    bucket = Bucket(moto_process.endpoint)
    with UpstreamServer(bulk_corpus(20, releases=1, files=1, size=500)) as server:
        h = short_limits_harness(tmp_path, server, bucket)
        seen = itertools.count()
        server.on_request = lambda _m, _p: next(seen) == 15 and moto_process.process.kill()
        result = h.main("mirror")
    assert result.returncode == 5, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert errors[0].split(" ERROR: ")[1].startswith(
        "Storage server error, run stopped (unfinished projects stay in todo): "
        f"S3 storage server at {moto_process.endpoint}: "
    ), errors[0]


def test_the_limits_are_checked_and_bound_every_request(s3h: MirrorHarness, bucket: Bucket) -> None:
    for key, value in (("max_attempts", "-1"), ("max_attempts", "1.5"), ("lock_lease_seconds", "0.5"),
                       ("config_param_read_timeout", "soon")):
        s3h.configure(sections=bucket.section(**{key: value}))
        result = s3h.main("mirror")
        assert result.returncode == 2, result.stderr
        errors = error_lines(result.stderr)
        assert len(errors) == 1 and f"[s3] {key} = {value} is not allowed" in errors[0], result.stderr
    defaults = S3Storage.from_config(SimpleNamespace(directory=f"/{bucket.name}/pypi"), _parser(bucket.section()))
    config = defaults.client.meta.config
    assert (config.connect_timeout, config.read_timeout, config.retries["total_max_attempts"]) == (5, 20, 3)
    assert defaults.limits.lease == 60 and defaults.limits.stop_bound() == 2 * 3 * 25 + 120
    lock = defaults.lock_client().meta.config
    assert (lock.connect_timeout, lock.read_timeout, lock.retries["total_max_attempts"]) == (5, 15, 2)


def _parser(text: str) -> Any:
    import configparser

    parser = configparser.ConfigParser()
    parser.read_string(text)
    return parser
