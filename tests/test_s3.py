"""The S3 backend against a real S3-speaking server on 127.0.0.1 (moto's standalone server).

One server for the module; each test gets its own bucket. Runs go through the command
line (in this process, or a subprocess where a run is killed), so the configuration,
pre-flight, the lock and the storage are exercised as an operator would.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from .conftest import MirrorHarness
from .test_kill import check_served_paths, run_and_kill
from .test_mirror import assert_mirror_equals_upstream
from .test_serve import Running
from .upstream import Corpus, UpstreamServer, bulk_corpus

boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (pip install -e '.[test]')")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]')")

from botocore.config import Config as BotoConfig  # noqa: E402

from bandersnatch_classic.s3 import LOCK_KEY, Lease, Limits, S3Lock, S3Storage  # noqa: E402
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

    def section(self) -> str:
        keys = {**CREDENTIALS, "endpoint_url": self.endpoint, "signature_version": "s3v4",
                "config_param_connect_timeout": "5", "config_param_tcp_keepalive": "true"}
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


def s3_harness(root: Path, upstream: UpstreamServer, bucket: Bucket) -> MirrorHarness:
    root.mkdir(parents=True, exist_ok=True)
    h = MirrorHarness(root, upstream)
    h.configure({"storage-backend": "s3", "directory": f"/{bucket.name}/{bucket.prefix}"}, bucket.section())
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
            rel = re.sub(r"/index_(\d+)_[^/]+\.html$", r"/index_\1.html", rel)
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
            assert (got[0].status, got[0].getheader("Content-Type"), got[0].getheader("Vary"), got[1]) == (
                want[0].status, want[0].getheader("Content-Type"), want[0].getheader("Vary"), want[1]), path
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
