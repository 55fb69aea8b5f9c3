"""``bandersnatch serve``: negotiation, safety, and real installs with pip and uv over HTTP."""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bandersnatch_classic.serve import make_server, negotiate

from .conftest import MirrorHarness
from .upstream import UpstreamServer, make_wheel

UV = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))


@pytest.fixture
def mirror(tmp_path: Path, upstream: UpstreamServer) -> MirrorHarness:
    filename, data, meta = make_wheel("Served-Pkg", "1.0", "VALUE = 'served'\n")
    upstream.corpus.add_file("Served-Pkg", "1.0", filename, data, metadata=meta)
    h = MirrorHarness(tmp_path, upstream)
    return h


def start(web: Path, hash_index: bool = False):
    server = make_server(web, "127.0.0.1", 0, hash_index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def get(server, path: str, accept: str | None = None, method: str = "GET") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.putrequest(method, path, skip_accept_encoding=True)
    if accept is not None:
        conn.putheader("Accept", accept)
    conn.endheaders()
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def test_negotiate_honours_q_values() -> None:
    both = {"text/html", "application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+html"}
    assert negotiate("", both) == "text/html"
    assert negotiate("*/*", both) == "text/html"
    assert negotiate("application/vnd.pypi.simple.v1+json", both) == "application/vnd.pypi.simple.v1+json"
    assert negotiate("application/vnd.pypi.simple.v1+json;q=0.1, text/html", both) == "text/html"
    assert negotiate("application/vnd.pypi.simple.v1+json, text/html;q=0.01", {"text/html"}) == "text/html"
    assert negotiate("application/json", both) is None
    assert negotiate("text/html;q=0", both) is None


def test_content_negotiation_and_headers(mirror: MirrorHarness) -> None:
    assert mirror.run().exit_code == 0
    server = start(mirror.dir / "web")
    try:
        r = get(server, "/simple/served-pkg/", "application/vnd.pypi.simple.v1+json")
        assert r.status == 200 and r.getheader("Content-Type") == "application/vnd.pypi.simple.v1+json"
        assert json.loads(r.body)["name"] == "served-pkg" and r.getheader("Vary") == "Accept"
        r = get(server, "/simple/served-pkg/")
        assert r.status == 200 and r.getheader("Content-Type") == "text/html; charset=utf-8"
        assert r.body == mirror.web("simple/served-pkg/index.html").read_bytes()
        r = get(server, "/simple/served-pkg/", "application/vnd.pypi.simple.v1+html")
        assert r.getheader("Content-Type") == "application/vnd.pypi.simple.v1+html"
        assert get(server, "/simple/served-pkg/", "application/xml").status == 406
        assert get(server, "/simple/", "application/vnd.pypi.simple.v1+json").status == 200
        r = get(server, "/simple/Served_Pkg/")
        assert r.status == 301 and r.getheader("Location") == "/simple/served-pkg/"
        assert get(server, "/simple/served-pkg").status == 301
        assert get(server, "/simple/nothing-here/").status == 404
        wheel = next(p for p in mirror.package_files() if p.endswith(".whl"))
        r = get(server, "/" + wheel)
        assert r.status == 200 and r.body == (mirror.dir / "web" / wheel).read_bytes()
        assert r.getheader("Content-Length") == str(len(r.body)) and r.getheader("Last-Modified")
        head = get(server, "/" + wheel, method="HEAD")
        assert head.status == 200 and head.body == b"" and head.getheader("Content-Length") == str(len(r.body))
        assert get(server, "/" + wheel + ".metadata").body.startswith(b"Metadata-Version")
        assert get(server, "/json/served-pkg").getheader("Content-Type") == "application/json"
        assert get(server, "/pypi/served-pkg/json").status == 200
        assert get(server, "/simple/served-pkg/", method="POST").status == 405
        assert get(server, "/packages/").status == 404  # no directory listings
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "path",
    ["/../mirror.conf", "/%2e%2e/%2e%2e/etc/passwd", "/packages/..%2f..%2f..%2fetc/passwd", "/simple/..%5c..%5cx/",
     "/packages/%00", "//etc/passwd", "/link-out/secret"],
)
def test_nothing_outside_web_is_reachable(tmp_path: Path, path: str) -> None:
    web = tmp_path / "web"
    (web / "simple").mkdir(parents=True)
    (web / "simple" / "index.html").write_text("<!DOCTYPE html>")
    (tmp_path / "secret").write_text("secret")
    (tmp_path / "mirror.conf").write_text("secret")
    (web / "link-out").symlink_to(tmp_path)
    server = start(web)
    try:
        r = get(server, path)
        assert r.status in (301, 404) and b"secret" not in r.body
    finally:
        server.shutdown()


def test_hash_index_layout(mirror: MirrorHarness) -> None:
    mirror.configure({"hash-index": "true"})
    mirror.run()
    server = start(mirror.dir / "web", hash_index=True)
    try:
        r = get(server, "/simple/served-pkg/", "application/vnd.pypi.simple.v1+json")
        assert r.status == 200 and json.loads(r.body)["name"] == "served-pkg"
    finally:
        server.shutdown()


def _install(tool: str, index: str, target: Path) -> None:
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    if tool == "pip":
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "--disable-pip-version-check",
               "--index-url", index, "--target", str(target), "served-pkg"]
    else:
        cmd = [UV, "pip", "install", "--no-cache", "--python", sys.executable, "--index-url", index,
               "--target", str(target), "served-pkg"]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=180)
    out = subprocess.run([sys.executable, "-c", "import served_pkg; print(served_pkg.VALUE)"],
                         env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "served"


@pytest.mark.parametrize("tool", ["pip", "uv"])
@pytest.mark.parametrize("fmt", ["JSON", "HTML"])
def test_real_clients_install_over_http(mirror: MirrorHarness, tmp_path: Path, tool: str, fmt: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    if tool == "uv" and not Path(UV).exists():
        pytest.fail("uv is a test dependency and must be installed")
    mirror.configure({"simple-format": fmt})
    assert mirror.run().exit_code == 0
    server = start(mirror.dir / "web")
    caplog.set_level(logging.DEBUG, logger="bandersnatch_classic.serve")
    try:
        _install(tool, f"http://127.0.0.1:{server.server_address[1]}/simple/", tmp_path / f"site-{tool}")
    finally:
        server.shutdown()
    served = [r.getMessage() for r in caplog.records if "/simple/served-pkg/ served as" in r.getMessage()]
    expected = "application/vnd.pypi.simple.v1+json" if fmt == "JSON" else "html"
    assert served and all(expected in line for line in served), served
