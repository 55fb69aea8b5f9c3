"""A mirror is an upstream: tier 2 syncs from tier 1 through ``serve``, a static web server
over ``web/`` and a copied tree (``file://``), every byte from tier 1 and none from the origin.

The origin is the test upstream; tier 1 mirrors it; tier 2 mirrors tier 1. Each tier-2
mirror is compared file by file with tier 1 (apart from ``web/last-modified``) and its files
with the origin's, and the origin's request log must stay empty during every tier-2 run.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
import shutil
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bandersnatch_classic import tree
from bandersnatch_classic.serve import make_server

from .conftest import MirrorHarness
from .upstream import Corpus, UpstreamServer, bulk_corpus, standard_corpus

#: What tier 2 may hold that tier 1 does not have the same: the time of its last good run.
NOT_COMPARED = {"last-modified"}


def origin_corpus() -> Corpus:
    return bulk_corpus(6, releases=2, files=1, size=512, corpus=standard_corpus())


@pytest.fixture
def origin() -> Iterator[UpstreamServer]:
    with UpstreamServer(origin_corpus()) as server:
        yield server


def tier(root: Path, master: str) -> MirrorHarness:
    """A mirror of ``master`` (the next tier down), configured as an operator would."""
    root.mkdir(parents=True, exist_ok=True)
    harness = MirrorHarness(root, types.SimpleNamespace(url=master))  # type: ignore[arg-type]
    harness.configure({"max-removals": "50%"})
    return harness


@pytest.fixture
def tier1(tmp_path: Path, origin: UpstreamServer) -> MirrorHarness:
    (tmp_path / "tier1").mkdir()
    harness = MirrorHarness(tmp_path / "tier1", origin)
    harness.configure({"max-removals": "50%"})
    run = harness.main("mirror")
    assert run.returncode == 0, run.stderr
    return harness


def snapshot(web: Path) -> dict[str, tuple[bool, bytes]]:
    """Every file below ``web``: relative path -> (is a symlink, bytes)."""
    return {
        str(p.relative_to(web)): (p.is_symlink(), p.read_bytes())
        for p in sorted(web.rglob("*"))
        if p.is_file() and str(p.relative_to(web)) not in NOT_COMPARED
    }


def assert_same_mirror(tier1: MirrorHarness, tier2: MirrorHarness, origin: UpstreamServer) -> None:
    """Tier 2 serves what tier 1 serves, byte for byte, and holds every file of the origin."""
    first, second = snapshot(tier1.dir / "web"), snapshot(tier2.dir / "web")
    assert sorted(second) == sorted(first)
    assert [p for p in first if first[p] != second[p]] == []
    held = tier2.package_files()
    assert held == tier1.package_files()
    assert held.items() >= tier1.expected_files().items()  # every file the origin has (and the removed project's)
    # Downstream never reaches around: no file URL the mirror serves names the origin.
    for path, (_, data) in first.items():
        if path.startswith(("json/", "pypi/", "simple/")):
            assert origin.url.encode() not in data, path


# -- the three ways tier 1 is an upstream -------------------------------------------------
@contextlib.contextmanager
def through_serve(tier1: MirrorHarness) -> Iterator[tuple[str, Callable[[], int]]]:
    """Tier 1's ``serve`` in this process on a loopback port: (master, requests so far)."""
    server = make_server(tier1.dir / "web", "127.0.0.1", 0)
    seen: list[str] = []
    base = server.RequestHandlerClass

    def log_request(self: Any, code: Any = "-", size: Any = "-") -> None:
        seen.append(self.requestline)
        base.log_request(self, code, size)

    server.RequestHandlerClass = type("Counting", (base,), {"log_request": log_request})
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", lambda: len(seen)
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def through_static_server(tier1: MirrorHarness) -> Iterator[tuple[str, Callable[[], int]]]:
    """``python3 -m http.server`` over tier 1's ``web/`` (a subprocess on a free port)."""
    log = tier1.root / "http-server.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(tier1.dir / "web")],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
    try:
        assert process.stdout is not None
        port = re.search(r"port (\d+)", process.stdout.readline())
        assert port, "http.server did not say where it listens"
        requests = re.compile(r'"(GET|HEAD|POST) ')
        yield f"http://127.0.0.1:{port.group(1)}", lambda: len(requests.findall(log.read_text()))
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def through_copy(tier1: MirrorHarness, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Callable[[], int]]]:
    """A copy of tier 1's directory (as carried to an air-gapped site), as ``file://``.

    The copy is taken again before each tier-2 run (``refresh``); requests are counted at
    the tree's transport adapter."""
    copy = tier1.root / "carried"
    seen: list[str] = []
    send = tree.TreeAdapter.send

    def counting(self: tree.TreeAdapter, request: Any, **kwargs: Any) -> Any:
        seen.append(str(request.url))
        return send(self, request, **kwargs)

    monkeypatch.setattr(tree.TreeAdapter, "send", counting)
    refresh_copy(tier1, copy)
    yield copy.as_uri(), lambda: len(seen)


def refresh_copy(tier1: MirrorHarness, copy: Path) -> None:
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(tier1.dir, copy, symlinks=True)


UPSTREAMS = ["serve", "static", "copy"]


@contextlib.contextmanager
def tier1_as(kind: str, tier1: MirrorHarness, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Callable[[], int]]]:
    if kind == "serve":
        with through_serve(tier1) as got:
            yield got
    elif kind == "static":
        with through_static_server(tier1) as got:
            yield got
    else:
        with through_copy(tier1, monkeypatch) as got:
            yield got


@pytest.mark.parametrize("kind", UPSTREAMS)
def test_tier2_mirrors_tier1_whole_and_incrementally(
    kind: str, tier1: MirrorHarness, origin: UpstreamServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = origin.corpus
    with tier1_as(kind, tier1, monkeypatch) as (master, requests):
        tier2 = tier(tmp_path / "tier2", master)
        origin.clear()
        run = tier2.main("mirror")
        assert run.returncode == 0, run.stderr
        full = requests()
        assert origin.count() == 0, origin.requests
        assert_same_mirror(tier1, tier2, origin)
        projects = len(corpus.projects)
        files = len(tier2.package_files())
        # XML-RPC tried (not there), the listing (a static server: its HTML answer, then the
        # listing file), a document per project, each file: one request each
        listing = 2 if kind == "static" else 1
        assert full == 1 + listing + projects + files, full
        print(f"\n{kind}: tier-2 full run: {full} requests ({projects} projects, {files} files)")

        # Changes at the origin: a new release, a yanked release, a removed project.
        corpus.add_file("small", "0.4", "small-0.4.tar.gz")
        corpus.yank("Tiny-Lib", "2.0", "bad wheel")
        corpus.delete_project("bulk-0001")
        run = tier1.main("mirror")
        assert run.returncode == 0, run.stderr
        if kind == "copy":
            refresh_copy(tier1, Path(master.removeprefix("file://")))
        before = requests()
        origin.clear()
        run = tier2.main("mirror")
        assert run.returncode == 0, run.stderr
        incremental = requests() - before
        assert origin.count() == 0, origin.requests
        assert_same_mirror(tier1, tier2, origin)
        assert not (tier2.dir / "web/simple/bulk-0001").exists()
        assert "small-0.4.tar.gz" in (tier2.dir / "web/simple/small/index.html").read_text()
        tiny = tier2.json_page("tiny-lib")
        assert [f["yanked"] for f in tiny["files"] if f["filename"].endswith(".whl")] == ["bad wheel"]
        # the listing, the two changed projects' documents, the new file: not the mirror's size
        # (a static server cannot negotiate: its /simple/ answer is HTML, then the listing file)
        assert incremental == listing + 3, incremental
        print(f"{kind}: tier-2 incremental run: {incremental} requests")

        # Nothing changed: the listing alone.
        before = requests()
        assert tier2.main("mirror").returncode == 0
        assert requests() - before == listing

        # status asks tier 1 for its serial: healthy, no lag
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = tier2.main("status", "--json")
        assert status.returncode == 0, status.stderr
        health = json.loads(out.getvalue())
        assert (health["serial"], health["upstream_serial"]) == (corpus.serial, corpus.serial), health


def test_plain_path_master_is_a_tree(tier1: MirrorHarness, origin: UpstreamServer, tmp_path: Path) -> None:
    """``master = /path/to/mirror/web`` (a plain path, to ``web/`` itself) works as file:// does."""
    tier2 = tier(tmp_path / "tier2", str(tier1.dir / "web"))
    origin.clear()
    run = tier2.main("mirror")
    assert run.returncode == 0, run.stderr
    assert origin.count() == 0
    assert_same_mirror(tier1, tier2, origin)


@pytest.mark.parametrize(
    "master, message",
    [
        ("file://otherhost/srv/mirror", "use file:///absolute/path or an absolute path"),
        ("ftp://mirror.example/", "use an http(s) URL"),
    ],
)
def test_unusable_masters_are_refused(harness: MirrorHarness, master: str, message: str) -> None:
    harness.configure({"master": master})
    run = harness.main("mirror")
    assert run.returncode == 2 and message in run.stderr


def test_a_tree_never_reads_outside_itself(tmp_path: Path) -> None:
    (tmp_path / "web/simple").mkdir(parents=True)
    (tmp_path / "web/simple/index.html").write_text("<html></html>")
    (tmp_path / "secret").write_text("no")
    (tmp_path / "web/packages").mkdir()
    (tmp_path / "web/packages/link").symlink_to(tmp_path / "secret")
    import requests

    session = requests.Session()
    master = tmp_path.as_uri()
    session.mount("file://", tree.TreeAdapter(master))
    assert session.get(f"{master}/simple/").status_code == 200
    for path in ("/../secret", "/%2e%2e/secret", "/packages/link", "/packages/", "/../../etc/passwd"):
        assert session.get(f"{master}{path}").status_code == 404, path
    assert session.get("file:///etc/passwd").status_code == 404
    assert session.post(f"{master}/pypi").status_code == 405


# -- serve as the public index answers -----------------------------------------------------
def get(base: str, path: str, **headers: str) -> tuple[http.client.HTTPResponse, bytes]:
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def test_serve_answers_the_json_api_as_the_public_index(tier1: MirrorHarness, origin: UpstreamServer) -> None:
    spec = origin.corpus.get("Foo.Bar_Baz")
    assert spec is not None
    with through_serve(tier1) as (base, _):
        # serial headers on the root, the project pages (both formats) and the JSON API
        for path, accept in [("/simple/", "text/html"), ("/simple/", "application/vnd.pypi.simple.v1+json"),
                             ("/simple/foo-bar-baz/", "text/html"),
                             ("/simple/foo-bar-baz/", "application/vnd.pypi.simple.v1+json")]:
            response, _ = get(base, path, Accept=accept)
            expected = origin.corpus.serial if path == "/simple/" else spec.serial
            assert response.status == 200 and response.getheader("X-PyPI-Last-Serial") == str(expected), (path, accept)

        # a mirror without PEP 691 pages: the serial from the HTML page's SERIAL comment
        (tier1.dir / "web/simple/small/index.v1_json").unlink()
        response, _ = get(base, "/simple/small/", Accept="application/vnd.pypi.simple.v1+json, text/html;q=0.1")
        assert response.getheader("Content-Type").startswith("text/html")
        assert response.getheader("X-PyPI-Last-Serial") == str(origin.corpus.get("small").serial)  # type: ignore[union-attr]

        # any spelling of the name redirects to the project's own, whose answer is the document
        for spelling in ("foo-bar-baz", "FOO.BAR.BAZ", "foo_bar_baz"):
            response, _ = get(base, f"/pypi/{spelling}/json")
            assert response.status == 301 and response.getheader("Location") == "/pypi/Foo.Bar_Baz/json"
        response, body = get(base, "/pypi/Foo.Bar_Baz/json")
        doc = json.loads(body)
        assert response.status == 200 and response.getheader("X-PyPI-Last-Serial") == str(spec.serial)
        assert doc["info"]["name"] == "Foo.Bar_Baz" and doc["last_serial"] == spec.serial
        urls = [e["url"] for files in doc["releases"].values() for e in files]
        assert urls and all(u.startswith(f"{base}/packages/") for u in urls)  # absolute, on this server
        proxied = json.loads(get(base, "/pypi/Foo.Bar_Baz/json", Host="pypi.example", **{"X-Forwarded-Proto": "https"})[1])
        assert proxied["urls"][0]["url"].startswith("https://pypi.example/packages/")  # behind a TLS proxy
        stored = json.loads((tier1.dir / "web/json/foo-bar-baz").read_text())
        assert all(e["url"].startswith("../../packages/") for e in stored["urls"])  # relative on disk

        # ETag and If-None-Match
        etag = response.getheader("ETag")
        assert etag and get(base, "/pypi/Foo.Bar_Baz/json", **{"If-None-Match": etag})[0].status == 304
        assert get(base, "/pypi/Foo.Bar_Baz/json", **{"If-None-Match": '"other"'})[0].status == 200
        for path in ("/simple/foo-bar-baz/", "/simple/"):
            response, _ = get(base, path)
            response, body = get(base, path, **{"If-None-Match": response.getheader("ETag")})
            assert response.status == 304 and body == b"" and response.getheader("ETag")
        json_tag = get(base, "/simple/foo-bar-baz/", Accept="application/vnd.pypi.simple.v1+json")[0].getheader("ETag")
        assert json_tag != get(base, "/simple/foo-bar-baz/")[0].getheader("ETag")  # one per format

        # /pypi/<name>/<version>/json: the release, from the stored document
        response, body = get(base, "/pypi/Foo.Bar_Baz/1.0/json")
        release = json.loads(body)
        assert response.status == 200 and response.getheader("X-PyPI-Last-Serial") == str(spec.serial)
        assert sorted(f["filename"] for f in release["urls"]) == sorted(f.filename for f in spec.releases["1.0"])
        assert release["info"] == {"name": "Foo.Bar_Baz", "version": "1.0", "requires_python": ">=3.8",
                                   "yanked": False, "yanked_reason": None}
        latest = json.loads(get(base, "/pypi/Foo.Bar_Baz/1.1rc1/json")[1])
        assert latest["info"]["summary"] == "The Foo.Bar_Baz project"  # the latest release: its info whole
        assert get(base, "/pypi/foo-bar-baz/1.0.0/json")[0].getheader("Location") == "/pypi/Foo.Bar_Baz/1.0/json"
        assert get(base, "/pypi/Foo.Bar_Baz/1.0.0/json")[0].getheader("Location") == "/pypi/Foo.Bar_Baz/1.0/json"
        for path in ("/pypi/Foo.Bar_Baz/9.9/json", "/pypi/nothing/json", "/pypi/nothing/1.0/json", "/pypi/-bad-/json"):
            assert get(base, path)[0].status == 404, path


def test_serve_answers_old_documents_with_its_own_urls(tier1: MirrorHarness, origin: UpstreamServer) -> None:
    """A document stored with the upstream's URLs (by an earlier version, or the reference tool)
    is answered with this server's URL for every file the mirror holds; others stay."""
    stored = tier1.dir / "web/json/small"
    doc = json.loads(stored.read_text())
    for entries in doc["releases"].values():
        for entry in entries:
            entry["url"] = origin.url + "/" + entry["url"].removeprefix("../../")
    doc["releases"]["0.1"][0]["url"] = "https://elsewhere.example/packages/aa/bb/not-held.tar.gz"
    stored.write_text(json.dumps(doc))
    with through_serve(tier1) as (base, _):
        answer = json.loads(get(base, "/pypi/small/json")[1])
    urls = sorted(e["url"] for entries in answer["releases"].values() for e in entries)
    assert urls[-1] == "https://elsewhere.example/packages/aa/bb/not-held.tar.gz"
    assert all(u.startswith(f"{base}/packages/") for u in urls[:-1]) and len(urls) == 3


@pytest.mark.parametrize("root_uri", ["https://mirror.example", "https://mirror.example/pypi"])
def test_root_uri_is_what_stored_documents_point_at(tmp_path: Path, origin: UpstreamServer, root_uri: str) -> None:
    harness = MirrorHarness(tmp_path, origin)
    harness.configure({"root_uri": root_uri})
    assert harness.main("mirror").returncode == 0
    doc = json.loads((harness.dir / "web/json/small").read_text())
    assert {e["url"].split("/packages/")[0] for files in doc["releases"].values() for e in files} == {root_uri}
    run = harness.main("verify")  # the stored documents still say where each file is
    assert run.returncode == 0 and "Verify: clean" in run.stderr, run.stderr


# -- the reference tool downstream ----------------------------------------------------------
REFERENCE = Path(__file__).resolve().parent.parent / "benchmarks" / ".ref-venv" / "bin" / "bandersnatch"


@pytest.mark.skipif(
    not REFERENCE.exists(),
    reason="the reference tool (bandersnatch 8.2.0) is not installed; benchmarks/bench.py installs it "
    "into benchmarks/.ref-venv (tests never reach the package registry)",
)
def test_reference_tool_mirrors_from_serve(tier1: MirrorHarness, origin: UpstreamServer, tmp_path: Path) -> None:
    """bandersnatch 8.2.0 (the PEP 691 listing, then the JSON API with its serial header) from ``serve``."""
    with through_serve(tier1) as (master, requests):
        conf = tmp_path / "reference.conf"
        conf.write_text(
            f"[mirror]\ndirectory = {tmp_path / 'reference'}\nmaster = {master}\nallow-non-https = true\n"
            "timeout = 10\nglobal-timeout = 120\nworkers = 3\nhash-index = false\nstop-on-error = true\n"
            "json = true\nrelease-files = true\ncleanup = false\nsimple-format = ALL\n"
        )
        origin.clear()
        run = subprocess.run([str(REFERENCE), "-c", str(conf), "mirror"], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert origin.count() == 0
        assert requests() > 0
    reference = MirrorHarness.__new__(MirrorHarness)
    reference.dir = tmp_path / "reference"
    assert reference.package_files() == tier1.package_files()
    for name in ("foo-bar-baz", "small", "tiny-lib"):
        ours, theirs = tier1.json_page(name), reference.json_page(name)
        assert sorted(f["filename"] for f in theirs["files"]) == sorted(f["filename"] for f in ours["files"])
        assert theirs["meta"]["_last-serial"] == ours["meta"]["_last-serial"]
