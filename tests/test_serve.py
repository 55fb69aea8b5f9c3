"""``bandersnatch serve``: negotiation, safety, and real installs with pip and uv over HTTP.

The mirror is built by hand (a real wheel, pages from :mod:`bandersnatch_classic.pages`),
so these tests need no upstream and no sync.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bandersnatch_classic import pages, routing
from bandersnatch_classic import serve as serve_module
from bandersnatch_classic.models import Project, ReleaseFile
from bandersnatch_classic.routing import SIMPLE_HTML, SIMPLE_JSON, negotiate
from bandersnatch_classic.serve import make_server
from bandersnatch_classic.storage import FilesystemStorage

UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
WHEEL_NAME = "mypkg-1.0-py3-none-any.whl"
METADATA = "Metadata-Version: 2.1\nName: mypkg\nVersion: 1.0\n"
PIP_ACCEPT = f"{SIMPLE_JSON}, {SIMPLE_HTML}; q=0.1, text/html; q=0.01"
SECRET = b"TOP-SECRET-CONTENT"


# -- the mirror --------------------------------------------------------------------------
def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel() -> bytes:
    """A tiny valid wheel: ``mypkg`` with ``VALUE = 42``."""
    files = {
        "mypkg/__init__.py": b"VALUE = 42\n",
        "mypkg-1.0.dist-info/METADATA": METADATA.encode(),
        "mypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    record += "mypkg-1.0.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("mypkg-1.0.dist-info/RECORD", record)
    return buffer.getvalue()


class Mirror:
    """A hand-built ``web/`` directory holding one project, ``mypkg``."""

    def __init__(self, root: Path, hash_index: bool = False) -> None:
        self.web = root / "web"
        self.hash_index = hash_index
        self.wheel = build_wheel()
        digest = hashlib.sha256(self.wheel).hexdigest()
        self.wheel_path = f"packages/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{WHEEL_NAME}"
        wheel_file = self.web / self.wheel_path
        wheel_file.parent.mkdir(parents=True)
        wheel_file.write_bytes(self.wheel)
        Path(f"{wheel_file}.metadata").write_bytes(METADATA.encode())
        release = ReleaseFile(
            filename=WHEEL_NAME,
            url="/" + self.wheel_path,
            sha256=digest,
            size=len(self.wheel),
            version="1.0",
            packagetype="bdist_wheel",
            requires_python=">=3.8",
            metadata_sha256=hashlib.sha256(METADATA.encode()).hexdigest(),
        )
        project = Project(name="mypkg", serial=7, releases={"1.0": [release]}, info={"name": "mypkg"})
        self.project_dir = self.web / "simple" / ("m/mypkg" if hash_index else "mypkg")
        self.project_dir.mkdir(parents=True)
        html = pages.project_html(project)
        self.pages = {
            "index.html": html,
            "index.v1_html": html,
            "index.v1_json": pages.project_json(project),
        }
        for name, text in self.pages.items():
            (self.project_dir / name).write_text(text)
        root_html = pages.root_html([("mypkg", "mypkg", 7)])
        (self.web / "simple" / "index.html").write_text(root_html)
        (self.web / "simple" / "index.v1_html").write_text(root_html)
        (self.web / "simple" / "index.v1_json").write_text(pages.root_json([("mypkg", "mypkg", 7)], 7))
        (self.web / "pypi" / "mypkg").mkdir(parents=True)
        (self.web / "pypi" / "mypkg" / "json").write_text(json.dumps({"info": {"name": "mypkg"}, "last_serial": 7}))
        (self.web / "json").mkdir()
        (self.web / "json" / "mypkg").symlink_to("../pypi/mypkg/json")  # as the sync writes it
        (self.web / "last-modified").write_text("20240101T00:00:00\n")

    def drop_json(self) -> None:
        for page in self.web.glob("simple/**/index.v1_json"):
            page.unlink()


class Running:
    """A server on 127.0.0.1 on a free port, in a thread."""

    def __init__(self, web: Path, hash_index: bool = False) -> None:
        self.server = make_server(web, "127.0.0.1", 0, hash_index)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def index(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def request(
        self, path: str, accept: str | None = None, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
            if accept is not None:
                conn.putheader("Accept", accept)
            for key, value in (headers or {}).items():
                conn.putheader(key, value)
            conn.endheaders()
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()

    def raw(self, request_target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
        """Send a request line byte for byte (no client-side normalisation); (status, whole answer)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(method + b" " + request_target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        answer = b"".join(chunks)
        return int(answer.split(b" ", 2)[1]), answer

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(tmp_path: Path) -> Mirror:
    return Mirror(tmp_path / "mirror")


@pytest.fixture
def server(mirror: Mirror) -> Iterator[Running]:
    running = Running(mirror.web)
    yield running
    running.stop()


# -- negotiation -----------------------------------------------------------------------
ALL = {"text/html", SIMPLE_HTML, SIMPLE_JSON}


@pytest.mark.parametrize(
    ("accept", "available", "expected"),
    [
        (None, ALL, "text/html"),
        ("", ALL, "text/html"),
        ("*/*", ALL, "text/html"),
        ("*/*", {SIMPLE_JSON}, SIMPLE_JSON),
        (SIMPLE_JSON, ALL, SIMPLE_JSON),
        (SIMPLE_HTML, ALL, SIMPLE_HTML),
        ("text/html", ALL, "text/html"),
        ("TEXT/HTML", ALL, "text/html"),
        (PIP_ACCEPT, ALL, SIMPLE_JSON),
        (PIP_ACCEPT, {"text/html", SIMPLE_HTML}, SIMPLE_HTML),
        (f"{SIMPLE_JSON};q=0.1, text/html", ALL, "text/html"),
        (f"text/html;q=0.5, {SIMPLE_JSON};q=0.9", ALL, SIMPLE_JSON),
        (f"{SIMPLE_JSON}, text/html", ALL, SIMPLE_JSON),  # equal q: the client's order
        (f"text/html, {SIMPLE_JSON}", ALL, "text/html"),
        (f"{SIMPLE_JSON}, text/html;q=0.01", {"text/html"}, "text/html"),
        ("application/vnd.pypi.simple.latest+json", ALL, SIMPLE_JSON),
        ("application/vnd.pypi.simple.latest+html", ALL, SIMPLE_HTML),
        ("application/*", ALL, SIMPLE_HTML),
        ("text/*", {SIMPLE_JSON, "text/html"}, "text/html"),
        ("text/html;q=0, */*", ALL, SIMPLE_HTML),  # q=0 excludes, even with */*
        (f"*/*;q=0.1, {SIMPLE_JSON};q=0.5", ALL, SIMPLE_JSON),
        ("application/json", ALL, None),
        ("text/html;q=0", ALL, None),
        ("text/*", {SIMPLE_JSON}, None),
        (SIMPLE_JSON, {"text/html", SIMPLE_HTML}, None),
        ("text/html;q=nonsense", ALL, None),
    ],
)
def test_negotiate(accept: str | None, available: set[str], expected: str | None) -> None:
    assert negotiate(accept, available) == expected


@pytest.mark.parametrize("path", ["/simple/mypkg/", "/simple/"])
def test_simple_pages_negotiate_on_accept(server: Running, mirror: Mirror, path: str) -> None:
    directory = mirror.project_dir if path != "/simple/" else mirror.web / "simple"
    cases = [
        (SIMPLE_JSON, SIMPLE_JSON, "index.v1_json"),
        (PIP_ACCEPT, SIMPLE_JSON, "index.v1_json"),
        (SIMPLE_HTML, SIMPLE_HTML, "index.v1_html"),
        ("text/html", "text/html; charset=utf-8", "index.html"),
        (None, "text/html; charset=utf-8", "index.html"),
        ("*/*", "text/html; charset=utf-8", "index.html"),
        (f"{SIMPLE_JSON};q=0.2, text/html;q=0.8", "text/html; charset=utf-8", "index.html"),
    ]
    for accept, ctype, filename in cases:
        response, body = server.request(path, accept)
        assert response.status == 200, accept
        assert response.getheader("Content-Type") == ctype, accept
        assert response.getheader("Vary") == "Accept"
        assert body == (directory / filename).read_bytes()
        assert response.getheader("Content-Length") == str(len(body))
    response, body = server.request(path, "application/json")
    assert response.status == 406 and response.getheader("Vary") is None
    assert b"text/html" in body  # says what there is


def test_json_page_is_what_the_renderer_wrote(server: Running) -> None:
    response, body = server.request("/simple/mypkg/", SIMPLE_JSON)
    page = json.loads(body)
    assert page["name"] == "mypkg" and page["files"][0]["url"].endswith(WHEEL_NAME)
    assert page["files"][0]["core-metadata"]["sha256"]


def test_missing_formats_fall_back_or_406(server: Running, mirror: Mirror) -> None:
    (mirror.project_dir / "index.v1_html").unlink()
    response, body = server.request("/simple/mypkg/", SIMPLE_HTML)  # falls back to index.html
    assert response.status == 200 and response.getheader("Content-Type") == SIMPLE_HTML
    assert body == (mirror.project_dir / "index.html").read_bytes()
    mirror.drop_json()
    response, _ = server.request("/simple/mypkg/", PIP_ACCEPT)
    assert response.status == 200 and response.getheader("Content-Type") == SIMPLE_HTML
    response, _ = server.request("/simple/mypkg/", SIMPLE_JSON)
    assert response.status == 406
    response, _ = server.request("/simple/", SIMPLE_JSON)
    assert response.status == 406


def test_unknown_project_is_404(server: Running) -> None:
    for accept in (None, SIMPLE_JSON):
        assert server.request("/simple/nothing-here/", accept)[0].status == 404
    assert server.request("/simple/-not-a-name-/")[0].status == 404


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/simple/MyPkg/", "/simple/mypkg/"),
        ("/simple/My_Pkg/", "/simple/my-pkg/"),
        ("/simple/my.pkg/", "/simple/my-pkg/"),
        ("/simple/Foo__Bar/?x=1", "/simple/foo-bar/"),
        ("/simple/mypkg", "/simple/mypkg/"),
        ("/simple/MyPkg", "/simple/mypkg/"),
        ("/simple", "/simple/"),
    ],
)
def test_non_canonical_names_redirect(server: Running, path: str, location: str) -> None:
    response, body = server.request(path)
    assert response.status == 301 and response.getheader("Location") == location and body == b""


def test_redirect_then_page(server: Running) -> None:
    response, _ = server.request("/simple/MYPKG/", SIMPLE_JSON)
    response, body = server.request(response.getheader("Location"), SIMPLE_JSON)
    assert response.status == 200 and json.loads(body)["name"] == "mypkg"


# -- files -----------------------------------------------------------------------------
def test_files_are_served_with_headers(server: Running, mirror: Mirror) -> None:
    response, body = server.request("/" + mirror.wheel_path)
    assert response.status == 200 and body == mirror.wheel
    assert response.getheader("Content-Type") == "application/octet-stream"
    assert response.getheader("Content-Length") == str(len(mirror.wheel))
    mtime = (mirror.web / mirror.wheel_path).stat().st_mtime
    assert response.getheader("Last-Modified") == email.utils.formatdate(mtime, usegmt=True)
    assert response.getheader("Vary") is None

    response, body = server.request("/" + mirror.wheel_path + ".metadata")
    assert response.status == 200 and body == METADATA.encode()
    assert response.getheader("Content-Type") == "application/octet-stream"

    for path in ("/json/mypkg", "/pypi/mypkg/json"):
        response, body = server.request(path)
        assert response.status == 200 and response.getheader("Content-Type") == "application/json"
        assert json.loads(body)["info"]["name"] == "mypkg"

    response, _ = server.request("/last-modified")
    assert response.getheader("Content-Type").startswith("text/plain")
    response, _ = server.request("/simple/mypkg/index.v1_json")
    assert response.status == 200 and response.getheader("Content-Type") == SIMPLE_JSON


def test_quoted_file_names(server: Running, mirror: Mirror) -> None:
    quoted = "/" + mirror.wheel_path.replace("mypkg-1.0", "mypkg%2D1%2E0")
    response, body = server.request(quoted)
    assert response.status == 200 and body == mirror.wheel


def test_big_file_is_streamed_whole(server: Running, mirror: Mirror) -> None:
    big = mirror.web / "packages" / "bi" / "gg" / "big.tar.gz"
    big.parent.mkdir(parents=True)
    data = os.urandom(3 << 20)
    big.write_bytes(data)
    response, body = server.request("/packages/bi/gg/big.tar.gz")
    assert response.status == 200 and body == data


def test_head(server: Running, mirror: Mirror) -> None:
    response, body = server.request("/" + mirror.wheel_path, method="HEAD")
    assert response.status == 200 and body == b""
    assert response.getheader("Content-Length") == str(len(mirror.wheel))
    response, body = server.request("/simple/mypkg/", SIMPLE_JSON, method="HEAD")
    assert response.status == 200 and body == b"" and response.getheader("Content-Type") == SIMPLE_JSON
    assert response.getheader("Content-Length") == str(len(mirror.pages["index.v1_json"]))
    response, body = server.request("/nothing", method="HEAD")
    assert response.status == 404 and body == b""


def test_if_modified_since(server: Running, mirror: Mirror) -> None:
    path = "/" + mirror.wheel_path
    last_modified = server.request(path)[0].getheader("Last-Modified")
    response, body = server.request(path, headers={"If-Modified-Since": last_modified})
    assert response.status == 304 and body == b""
    earlier = email.utils.formatdate(time.time() - 86400 * 365 * 30, usegmt=True)
    response, body = server.request(path, headers={"If-Modified-Since": earlier})
    assert response.status == 200 and body == mirror.wheel
    response, _ = server.request(path, headers={"If-Modified-Since": "garbage"})
    assert response.status == 200
    response, _ = server.request("/simple/mypkg/", SIMPLE_JSON, headers={"If-Modified-Since": last_modified})
    assert response.status == 304 and response.getheader("Vary") == "Accept"


def test_no_directory_listings(server: Running, mirror: Mirror) -> None:
    for path in ("/", "/packages/", "/packages", "/" + mirror.wheel_path.rsplit("/", 1)[0] + "/", "/pypi/mypkg/"):
        assert server.request(path)[0].status == 404, path


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
def test_only_get_and_head(server: Running, method: str) -> None:
    response, _ = server.request("/simple/mypkg/", method=method)
    assert response.status == 405 and response.getheader("Allow") == "GET, HEAD"


def test_keep_alive(server: Running, mirror: Mirror) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.connect()
        first = conn.sock
        for path in ("/simple/mypkg/", "/" + mirror.wheel_path, "/missing", "/simple/mypkg/"):
            conn.request("GET", path)
            conn.getresponse().read()
            # http.client reconnects by itself after a close: the socket must be the first one
            assert conn.sock is first, path
    finally:
        conn.close()


def test_answers_are_not_held_back_by_nagle(mirror: Mirror) -> None:
    """Headers and body are separate writes: without TCP_NODELAY each keep-alive answer waits
    for the client's delayed ACK (40 ms), 20 requests a second."""
    server = make_server(mirror.web, "127.0.0.1", 0)
    nodelay: list[int] = []
    base = server.RequestHandlerClass

    def handle(self: Any) -> None:
        nodelay.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        base.handle(self)

    server.RequestHandlerClass = type("Probing", (base,), {"handle": handle})
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("GET", "/" + mirror.wheel_path)
        assert conn.getresponse().read() == mirror.wheel
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert nodelay and all(nodelay), nodelay


# -- nothing outside web/ --------------------------------------------------------------
@pytest.fixture
def escape_targets(mirror: Mirror, tmp_path: Path) -> Mirror:
    """Secrets next to and above ``web/``, and symlinks in ``web/`` pointing at them."""
    for where in (tmp_path / "secret", tmp_path / "mirror" / "secret", tmp_path / "mirror" / "mirror.conf"):
        where.write_bytes(SECRET)
    outside = tmp_path / "outside-project"
    outside.mkdir()
    for name in ("index.html", "index.v1_json"):
        (outside / name).write_bytes(SECRET)
    (mirror.web / "link-out").symlink_to(tmp_path)
    (mirror.web / "packages" / "evil.whl").symlink_to(tmp_path / "secret")
    (mirror.web / "simple" / "evil").symlink_to(outside)
    (mirror.project_dir / "index.v1_html").unlink()
    (mirror.project_dir / "index.v1_html").symlink_to(tmp_path / "secret")
    return mirror


@pytest.mark.parametrize(
    "target",
    [
        b"/../secret",
        b"/../../secret",
        b"/simple/../../secret",
        b"/%2e%2e/secret",
        b"/%2E%2E/%2e%2e/secret",
        b"/.%2e/mirror.conf",
        b"/packages/..%2f..%2fsecret",
        b"/packages/%2e%2e%2f%2e%2e%2fsecret",
        b"/simple/..%5c..%5csecret",
        b"/simple/..\\..\\secret",
        b"/packages\\..\\..\\secret",
        b"/simple/%2e%2e/",
        b"/simple/%2E%2E",
        b"/simple/./",
        b"/%00",
        b"/packages/%00/../../secret",
        b"/secret%00.whl",
        b"/%c0%ae%c0%ae/secret",
        b"/%252e%252e/secret",
        b"//secret",
        b"//etc/passwd",
        b"/etc/passwd",
        b"secret",
        b"../secret",
        b"http://127.0.0.1/../secret",
        b"/link-out/secret",
        b"/link-out/mirror/secret",
        b"/packages/evil.whl",
        b"/simple/evil/",
        b"/simple/evil/index.html",
    ],
)
def test_nothing_outside_web_is_reachable(escape_targets: Mirror, target: bytes) -> None:
    running = Running(escape_targets.web)
    try:
        for method in (b"GET", b"HEAD"):
            status, answer = running.raw(target, method)
            assert status in (400, 404) and SECRET not in answer, (method, answer[:200])
        for accept in (SIMPLE_JSON, "text/html"):
            response, body = running.request(target.decode(), accept)
            assert response.status in (400, 404) and SECRET not in body
    finally:
        running.stop()


def test_the_served_storage_follows_no_link_out_of_web(escape_targets: Mirror, tmp_path: Path) -> None:
    """What ``serve`` reads through (``storage_from_config(..., reads_below="web")``): links that
    stay inside ``web/`` are followed, links out of it are not there; the engine's reads are unchanged."""
    served = FilesystemStorage(tmp_path / "mirror", reads_below="web")
    assert served.stat("web/packages/evil.whl") is None
    assert served.read_text("web/link-out/secret") is None
    assert not served.exists("web/link-out/mirror/secret")
    assert served.sha256("web/simple/evil/index.html") is None
    with pytest.raises(FileNotFoundError):
        served.read_bytes("web/simple/mypkg/index.v1_html")
    with pytest.raises(FileNotFoundError), served.open("web/link-out/mirror/mirror.conf"):
        pass
    assert served.read_bytes("web/json/mypkg") == (escape_targets.web / "pypi/mypkg/json").read_bytes()
    assert FilesystemStorage(tmp_path / "mirror").read_bytes("web/packages/evil.whl") == SECRET


def test_symlink_out_is_not_used_as_a_format(escape_targets: Mirror) -> None:
    running = Running(escape_targets.web)
    try:
        response, body = running.request("/simple/mypkg/", SIMPLE_HTML)  # v1_html links outside
        assert response.status == 200 and SECRET not in body
        assert body == (escape_targets.project_dir / "index.html").read_bytes()
    finally:
        running.stop()


# -- hash-index --------------------------------------------------------------------------
def test_hash_index_layout(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "mirror", hash_index=True)
    running = Running(mirror.web, hash_index=True)
    try:
        response, body = running.request("/simple/mypkg/", SIMPLE_JSON)
        assert response.status == 200 and body == (mirror.web / "simple/m/mypkg/index.v1_json").read_bytes()
        response, body = running.request("/simple/mypkg/")
        assert response.status == 200 and body == (mirror.web / "simple/m/mypkg/index.html").read_bytes()
        response, _ = running.request("/simple/MyPkg/")
        assert response.status == 301 and response.getheader("Location") == "/simple/mypkg/"
        assert running.request("/simple/m/")[0].status == 404
        assert running.request("/simple/", SIMPLE_JSON)[0].status == 200
        wheel_url = json.loads(running.request("/simple/mypkg/", SIMPLE_JSON)[1])["files"][0]["url"]
        assert wheel_url.startswith("../../packages/")  # relative to the URL, not to the directory
        assert running.request("/simple/mypkg/" + wheel_url)[0].status == 404  # clients resolve it, not us
        assert running.request("/" + mirror.wheel_path)[1] == mirror.wheel
    finally:
        running.stop()
    flat = Running(mirror.web, hash_index=False)  # the same tree served without the option
    try:
        assert flat.request("/simple/mypkg/")[0].status == 404
    finally:
        flat.stop()


# -- logging and serve() -----------------------------------------------------------------
def test_one_log_line_per_request(server: Running, mirror: Mirror, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bandersnatch_classic.serve")
    server.request("/simple/mypkg/", SIMPLE_JSON)
    server.request("/nothing")
    server.request("/simple/mypkg/", method="POST")
    lines = [r for r in caplog.records if r.name == "bandersnatch_classic.serve"]
    assert len(lines) == 3, [r.getMessage() for r in lines]
    assert '"GET /simple/mypkg/ HTTP/1.1" 200' in lines[0].getMessage()
    assert SIMPLE_JSON in lines[0].getMessage()
    assert '"GET /nothing HTTP/1.1" 404' in lines[1].getMessage()
    assert '"POST /simple/mypkg/ HTTP/1.1" 405' in lines[2].getMessage()
    caplog.clear()
    server.raw(b"/simple/MyPkg\x1b[2J/")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "bandersnatch_classic.serve"]
    assert "\x1b" not in line and "\\x1b" in line and " 404 " in line
    server.raw(b"/simple/MyPkg")
    assert caplog.records[-1].getMessage().endswith("301 0 -> /simple/mypkg/")


def test_serve_runs_until_interrupted(mirror: Mirror, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bandersnatch_classic.serve")

    def interrupted(self: object, poll_interval: float = 0.5) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(serve_module.MirrorServer, "serve_forever", interrupted)
    assert serve_module.serve(FilesystemStorage(mirror.web.parent, reads_below="web"), "127.0.0.1", 0, False) == 0
    assert any("http://127.0.0.1:" in r.getMessage() and "/simple/" in r.getMessage() for r in caplog.records)


def test_serve_without_a_mirror(tmp_path: Path) -> None:
    assert serve_module.serve(FilesystemStorage(tmp_path, reads_below="web"), "127.0.0.1", 0, False) == 2


# -- real installers over HTTP -------------------------------------------------------------
def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "PYTHON"))}
    for proxy in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(proxy, None)
    env.update(PIP_CONFIG_FILE=os.devnull, UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never",
               NO_PROXY="127.0.0.1", no_proxy="127.0.0.1", **extra)
    return env


@pytest.mark.parametrize("fmt", ["json", "html"])
@pytest.mark.parametrize("tool", ["pip", "uv"])
def test_real_installers(mirror: Mirror, tmp_path: Path, tool: str, fmt: str, caplog: pytest.LogCaptureFixture) -> None:
    if fmt == "html":
        mirror.drop_json()  # then negotiation must fall back to HTML
    target = tmp_path / "site"
    caplog.set_level(logging.INFO, logger="bandersnatch_classic.serve")
    running = Running(mirror.web)
    try:
        if tool == "pip":
            cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "--disable-pip-version-check",
                   "--no-input", "--index-url", running.index, "--target", str(target), "mypkg"]
        else:
            assert UV, "uv is a test dependency"
            cmd = [UV, "pip", "install", "--no-cache", "--python", sys.executable, "--index-url", running.index,
                   "--target", str(target), "mypkg"]
        result = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        running.stop()
    imported = subprocess.run(
        [sys.executable, "-c", "import mypkg; print(mypkg.VALUE)"],
        env=_clean_env(PYTHONPATH=str(target)), capture_output=True, text=True, timeout=60,
    )
    assert imported.stdout.strip() == "42", imported.stderr

    log = [r.getMessage() for r in caplog.records if r.name == "bandersnatch_classic.serve"]
    page = [line for line in log if '"GET /simple/mypkg/ HTTP/1.1" 200' in line]
    assert page, log
    if fmt == "json":
        assert all(line.endswith(SIMPLE_JSON) for line in page), page
    else:
        assert all(line.endswith(("text/html; charset=utf-8", SIMPLE_HTML)) for line in page), page
    assert any(f"/{mirror.wheel_path} HTTP/1.1\" 200" in line for line in log), log


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        ("/simple/mypkg/", ["simple", "mypkg"]),
        ("/simple//mypkg/?x=1#y", ["simple", "mypkg"]),
        ("/packages/a%20b.whl", ["packages", "a b.whl"]),
        ("http://127.0.0.1:8080/simple/", ["simple"]),
        ("/%2e%2e/secret", None),
        ("/simple/./", None),
        ("/a%5cb", None),
        ("/a%00", None),
        ("/packages/" + "a" * 256, None),
        ("/packages/" + "a" * 255, ["packages", "a" * 255]),
        ("/%c0%ae", None),
        ("secret", None),
        ("*", None),
    ],
)
def test_request_paths_are_checked_before_any_file_access(target: str, parts: list[str] | None) -> None:
    assert routing.request_path(target) == parts


@pytest.mark.parametrize(
    "target",
    [
        "/packages/" + "a" * 300,
        "/simple/" + "a" * 300 + "/",
        "/json/" + "b" * 300,
        "/" + "%C3%A9" * 200,  # 200 characters, 400 bytes
        "/packages/" + "/".join(["c" * 200] * 30),  # every segment fits, the whole path does not
    ],
)
def test_a_path_the_file_system_cannot_look_up_is_404_without_a_traceback(
    server: Running, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bandersnatch_classic.serve")
    status, answer = server.raw(target.encode())
    assert status == 404, answer
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    assert server.request("/simple/mypkg/")[0].status == 200  # and the server goes on
