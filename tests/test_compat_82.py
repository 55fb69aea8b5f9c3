"""Configurations written for bandersnatch 8.2 run as they are (issue 21, item 5).

Every test goes through the command line against the test upstream; the reference tool's
two shipped files are in ``tests/fixtures`` as key-for-key copies with comments of our own.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import MirrorHarness
from .test_filters import fh, mirrored_projects  # noqa: F401  # fh: a fixture
from .upstream import UpstreamServer

FIXTURES = Path(__file__).parent / "fixtures"


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " WARNING: " in line or " ERROR: " in line]


def errors_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR: " in line]


# -- the shipped files -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["reference-8.2-defaults.conf", "reference-8.2-example.conf"])
def test_the_reference_tools_shipped_configs_run_without_a_warning(harness: MirrorHarness, name: str) -> None:
    text = (FIXTURES / name).read_text()
    conf = harness.root / name
    conf.write_text(text.replace("@DIRECTORY@", str(harness.dir)).replace("@UPSTREAM@", harness.upstream.url))
    for command in (["mirror"], ["mirror"], ["verify"], ["sync", "small"]):
        result = harness.main(*command, config=conf)
        assert result.returncode == 0, result.stderr
        assert warnings_in(result.stderr) == [], result.stderr
    assert harness.package_files() == harness.expected_files()


# -- verifiers ----------------------------------------------------------------------------------
def test_verifiers_is_the_number_of_verify_threads(harness: MirrorHarness) -> None:
    harness.configure({"verifiers": "3"})
    assert harness.main("mirror").returncode == 0
    result = harness.main("--debug", "verify")
    assert result.returncode == 0 and warnings_in(result.stderr) == [], result.stderr
    assert "with 3 threads" in result.stderr
    result = harness.main("--debug", "verify", "--workers", "2")  # the command line wins
    assert "with 2 threads" in result.stderr
    harness.configure({"verifiers": "0"})
    result = harness.main("verify")
    assert result.returncode == 2
    assert errors_in(result.stderr) == [next(line for line in result.stderr.splitlines() if "verifiers = '0'" in line)]


# -- diff-file ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("{{mirror_directory}}/mirrored-files", "mirrored-files"),
        ("{{ mirror_directory }}", "mirrored-files"),  # a directory: the file in it is mirrored-files
        ("%(directory)s/new-files", "new-files"),
        ("{{paths_lists}}/changes", "changes"),
    ],
)
def test_the_diff_file_is_rewritten_each_run(harness: MirrorHarness, value: str, name: str) -> None:
    harness.dir.mkdir()
    harness.configure({"diff-file": value}, sections=f"[paths]\nlists = {harness.dir}\n" if "paths" in value else "")
    assert harness.main("mirror").returncode == 0
    diff = harness.dir / name
    first = diff.read_text().splitlines()
    assert str(harness.web("simple/small/index.html")) in first
    assert all(Path(line).is_file() for line in first)

    result = harness.main("mirror")  # nothing changed upstream: an empty list
    assert result.returncode == 0 and warnings_in(result.stderr) == []
    assert diff.read_text() == ""

    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    assert harness.main("mirror").returncode == 0
    listed = diff.read_text().splitlines()
    assert any(line.endswith("/small-0.4.tar.gz") for line in listed)
    assert not any("tiny" in line for line in listed) and len(listed) < len(first)

    assert harness.main("sync", "small").returncode == 0  # a sync run that changed nothing
    assert diff.read_text() == ""


def test_diff_append_epoch_writes_one_file_per_run(harness: MirrorHarness, tmp_path: Path) -> None:
    harness.configure({"diff-file": str(tmp_path / "new-files"), "diff-append-epoch": "true"})
    assert harness.main("mirror").returncode == 0
    time.sleep(1.05)  # the name holds the second: the next run's must differ
    assert harness.main("mirror").returncode == 0
    written = sorted(tmp_path.glob("new-files-*"))
    assert len(written) == 2 and not (tmp_path / "new-files").exists()
    assert written[0].read_text() != "" and written[1].read_text() == ""


def test_a_diff_file_reference_to_nothing_is_refused(harness: MirrorHarness) -> None:
    harness.configure({"diff-file": "{{mirror_nothing}}/files"})
    result = harness.main("mirror")
    assert result.returncode == 2
    assert len(errors_in(result.stderr)) == 1 and "[mirror] nothing" in result.stderr
    harness.configure({"diff-file": "%(nothing)s/files"})
    result = harness.main("mirror")
    assert result.returncode == 2 and "%(nothing)s" in result.stderr


# -- keep_index_versions ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JSON", "ALL", "HTML"])
def test_keep_index_versions_for_every_page_format_prunes_what_the_reference_left(harness: MirrorHarness, fmt: str) -> None:
    harness.configure({"keep_index_versions": "2", "simple-format": fmt})
    # What bandersnatch 8.2 left: a version of each page file, index.v1_* linking them.
    simple = harness.web("simple/small")
    (simple / "versions").mkdir(parents=True)
    for suffix in ("html", "v1_html", "v1_json"):
        for serial in (1, 2, 3):
            (simple / "versions" / f"index_{serial}_2024-01-01T00:00:0{serial}.000000Z.{suffix}").write_text("old")
        (simple / f"index.{suffix}" if suffix != "html" else simple / "index.html").symlink_to(
            f"versions/index_3_2024-01-01T00:00:03.000000Z.{suffix}")
    assert harness.main("mirror").returncode == 0
    for version in ("0.4", "0.5"):
        harness.corpus.add_file("small", version, f"small-{version}.tar.gz")
        assert harness.main("mirror").returncode == 0

    kept = sorted(p.name for p in (simple / "versions").iterdir())
    old = {name.rsplit(".", 1)[1] for name in kept if re.match(r"index_[123]_", name)}
    new = sorted(name.rsplit(".", 1)[1] for name in kept if not re.match(r"index_[123]_", name))
    # A format written keeps its 2 newest versions, none of the reference's; the reference's
    # .v1_html versions go once index.v1_html links an HTML version; a format not written
    # (the operator's choice) keeps what the reference left.
    assert new == {"ALL": ["html", "html", "v1_json", "v1_json"], "JSON": ["v1_json", "v1_json"],
                   "HTML": ["html", "html"]}[fmt], kept
    assert old == {"ALL": set(), "JSON": {"html", "v1_html"}, "HTML": {"v1_json"}}[fmt], kept
    if fmt != "HTML":
        page = simple / "index.v1_json"
        assert page.is_symlink() and json.loads(page.read_text())["versions"][-1] == "0.5"
    if fmt != "JSON":
        for name in ("index.html", "index.v1_html"):
            assert (simple / name).is_symlink() and "small-0.5.tar.gz" in (simple / name).read_text()


# -- search = true ----------------------------------------------------------------------------------
def test_search_true_finds_the_regex_anywhere(fh: MirrorHarness) -> None:  # noqa: F811
    section = "[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\ninfo.summary =\n    (Alpha|Beta) project\n"
    fh.configure(sections=section + "search = false\n")  # at the start only: "The Alpha project" does not match
    result = fh.main("mirror")
    assert result.returncode == 0 and warnings_in(result.stderr) == [], result.stderr
    assert mirrored_projects(fh) == []
    fh.configure(sections=section + "search = true\n")
    result = fh.main("mirror", "--force-check")
    assert result.returncode == 0 and warnings_in(result.stderr) == [], result.stderr
    assert mirrored_projects(fh) == ["alpha", "beta"]


# -- delete --workers / --skip-json-fetch -------------------------------------------------------------
def test_delete_accepts_the_reference_tools_workers_and_skip_json_fetch(harness: MirrorHarness) -> None:
    assert harness.main("mirror").returncode == 0
    requests = harness.upstream.count()
    result = harness.main("delete", "--workers", "4", "--skip-json-fetch", "small")
    assert result.returncode == 0 and warnings_in(result.stderr) == [], result.stderr
    assert not harness.web("simple/small").exists()
    assert harness.upstream.count() == requests  # delete asks the upstream nothing
    result = harness.main("delete", "--workers", "x", "tiny-lib")
    assert result.returncode == 2 and "'x' is not allowed" in result.stderr


# -- cleanup = true ----------------------------------------------------------------------------------
@pytest.mark.parametrize("hash_index", [False, True])
def test_cleanup_removes_the_pre_4_0_page_directories(harness: MirrorHarness, hash_index: bool) -> None:
    harness.configure({"cleanup": "true", "hash-index": str(hash_index).lower()})
    simple = harness.web("simple")

    def at(name: str) -> Path:
        return simple / name[0] / name if hash_index else simple / name

    legacy = [at("Foo.Bar_Baz"), at("foo.bar-baz"), at("Tiny-Lib")]
    for directory in legacy:
        (directory / "versions").mkdir(parents=True)
        (directory / "index.html").write_text("old")
    untouched = at("Unrelated.Name")  # no project of this run: stays, as in the reference tool
    untouched.mkdir(parents=True)
    result = harness.main("mirror")
    assert result.returncode == 0 and warnings_in(result.stderr) == [], result.stderr
    assert [d for d in legacy if d.exists()] == [] and untouched.is_dir()
    assert sum("removed the legacy page directory" in line for line in result.stderr.splitlines()) == 3
    for canonical in ("foo-bar-baz", "small", "tiny-lib"):
        assert (at(canonical) / "index.html").is_file()
    assert harness.package_files() == harness.expected_files()


# -- SOCKS proxies ------------------------------------------------------------------------------------
class Socks5Proxy:
    """A SOCKS5 proxy on 127.0.0.1 (no authentication, CONNECT only) that counts its tunnels."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"socks5://127.0.0.1:{self.listener.getsockname()[1]}"
        self.tunnels = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        def take(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = client.recv(n - len(data))
                if not chunk:
                    raise OSError("closed")
                data += chunk
            return data

        try:
            _version, methods = take(2)
            take(methods)
            client.sendall(b"\x05\x00")
            _version, command, _, kind = take(4)
            host = socket.inet_ntoa(take(4)) if kind == 1 else take(take(1)[0]).decode()
            (port,) = struct.unpack("!H", take(2))
            assert command == 1
            target = socket.create_connection((host, port))
            self.tunnels += 1
            client.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", port))
        except (OSError, AssertionError, ValueError):
            client.close()
            return
        threading.Thread(target=self._pipe, args=(target, client), daemon=True).start()
        self._pipe(client, target)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def socks_proxy() -> Iterator[Socks5Proxy]:
    proxy = Socks5Proxy()
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_socks5_proxy_carries_the_run(harness: MirrorHarness, socks_proxy: Socks5Proxy) -> None:
    pytest.importorskip("socks", reason="PySocks is not installed (pip install -e '.[test]')")
    harness.configure({"proxy": socks_proxy.url})
    result = harness.main("mirror")
    assert result.returncode == 0 and warnings_in(result.stderr) == [], result.stderr
    assert socks_proxy.tunnels > 0
    assert harness.package_files() == harness.expected_files()


def test_a_socks_proxy_without_pysocks_is_one_config_error(
    harness: MirrorHarness, socks_proxy: Socks5Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "socks", None)  # as if PySocks were not installed
    harness.configure({"proxy": socks_proxy.url})
    result = harness.main("mirror")
    assert result.returncode == 2
    assert errors_in(result.stderr) == [
        line for line in result.stderr.splitlines() if "pip install 'bandersnatch-classic[socks]'" in line
    ]
    assert socks_proxy.tunnels == 0 and harness.upstream.count() == 0


# -- [s3] config_param_* and max_attempts ------------------------------------------------------------
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (pip install -e '.[test]')")
from .test_s3 import Bucket, endpoint, s3_harness  # noqa: E402,F401  # endpoint: a fixture


def test_s3_config_params_reach_every_object_written(tmp_path: Path, upstream: UpstreamServer, endpoint: str) -> None:  # noqa: F811
    bucket = Bucket(endpoint)
    h = s3_harness(tmp_path, upstream, bucket)
    h.configure(sections=bucket.section() + "config_param_ServerSideEncryption = AES256\n"
                "config_param_StorageClass = STANDARD_IA\nmax_attempts = 3\n")
    result = h.main("mirror")
    assert result.returncode == 0 and warnings_in(result.stderr) == [], result.stderr
    keys = bucket.keys()
    assert any(key.endswith(".tar.gz") for key in keys) and "web/pypi/small/json" in keys  # a file, a link copy
    for key in keys:
        if key == ".lock":
            continue
        head = bucket.client.head_object(Bucket=bucket.name, Key=f"{bucket.prefix}/{key}")
        assert head.get("ServerSideEncryption") == "AES256", key
        assert head.get("StorageClass") == "STANDARD_IA", key
    h.configure(sections=bucket.section() + "config_param_Colour = blue\n")
    result = h.main("mirror")
    assert result.returncode == 2 and "config_param_Colour" in result.stderr and len(errors_in(result.stderr)) == 1


class SlowDownServer:
    """An S3 endpoint that answers every request 503 Slow Down, counting them."""

    def __init__(self) -> None:
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _slow_down(self) -> None:
                owner.requests += 1
                body = b"" if self.command == "HEAD" else (
                    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                    b"<Message>Please reduce your request rate.</Message></Error>"
                )
                self.send_response(503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET = do_PUT = do_POST = _slow_down

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()


def test_s3_max_attempts_is_the_number_of_retries(harness: MirrorHarness) -> None:
    endpoint = SlowDownServer()
    try:
        harness.configure(
            {"storage-backend": "s3", "directory": "/slow-bucket/pypi"},
            sections=f"[s3]\nendpoint_url = {endpoint.url}\naws_access_key_id = testing\n"
            "aws_secret_access_key = testing\nregion_name = us-east-1\nmax_attempts = 1\n",
        )
        result = harness.main("mirror")
        assert result.returncode == 2 and "slow-bucket" in result.stderr
        assert endpoint.requests == 2  # the first attempt and one retry
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()


def test_the_reference_tools_keys_are_documented() -> None:
    """Every key of the shipped files has an entry in docs/configuration.md, and the table of
    differences is linked from the README and the configuration reference."""
    docs = Path(__file__).parent.parent / "docs"
    reference = (docs / "configuration.md").read_text()
    for name in ("reference-8.2-defaults.conf", "reference-8.2-example.conf"):
        for key in re.findall(r"^([\w-]+) =", (FIXTURES / name).read_text(), re.M):
            assert f"`{key}`" in reference or f"`{key.replace('-', '_')}`" in reference, key
    assert "coming-from-8.2.md" in reference
    assert "docs/coming-from-8.2.md" in (docs.parent / "README.md").read_text()
