"""A fast synthetic upstream for the benchmarks: XML-RPC, PEP 691 listing, JSON API, files.

File bytes are generated, never stored on disk: every file of a corpus is a shared block
followed by a short unique tail, so its sha256 is the shared block's hash state copied and
fed the tail, and a 50 MiB body goes out in two ``sendall`` calls from memory. The HTTP
handling is a minimal HTTP/1.1 loop (keep-alive, one write per small answer) so that the
upstream costs far less CPU than the clients it serves; it reports its own CPU seconds.

Two switches make it behave like a real upstream on a real network: ``--latency-ms N``
delays every answer by N ms (a round trip; connections are kept alive as a real client's
are), and ``--display-names`` gives projects non-canonical names (``Bench_000001``) whose
JSON API page, asked for by any other spelling, answers with a 301 to the display name.

Control endpoints: ``/_stats`` (CPU seconds and requests since the last reset),
``/_reset``, ``/_change?n=10`` (a new release with one new file in each of n projects),
``/_manifest`` (every file path with its sha256, for checking mirrors).

usage: python benchmarks/upstream.py CORPUS [--scale F] [--latency-ms N] [--display-names]
       (prints "port N" when ready)
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import re
import resource
import socket
import socketserver
import sys
import threading
import time
import xmlrpc.client
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

#: name -> (projects, releases per project, files per release, (min size, max size), metadata)
CORPORA = {
    "a": (2000, 10, 3, (16_000, 24_000), True),
    "b": (50, 1, 2, (50 << 20, 50 << 20), False),
    "c": (100_000, 1, 1, (200, 400), False),
    "d": (1_000_000, 1, 1, (200, 400), False),
}


@dataclass(slots=True)
class File:
    path: str
    filename: str
    size: int
    tail: bytes
    sha256: str
    metadata: bytes | None


@dataclass(slots=True)
class Project:
    name: str
    serial: int
    releases: dict[str, list[File]] = field(default_factory=dict)


class Corpus:
    def __init__(self, kind: str, scale: float = 1.0, display_names: bool = False) -> None:
        count, releases, files, (low, high), metadata = CORPORA[kind]
        self.count = max(1, int(count * scale))
        self.block = hashlib.shake_256(b"bandersnatch-benchmark").digest(high)
        self.block_view = memoryview(self.block)
        self.metadata = metadata
        self.low, self.high = low, high
        self.serial = 0
        self.projects: dict[str, Project] = {}
        self.by_canonical: dict[str, Project] = {}
        self.files: dict[str, File] = {}
        self._prefix_states: dict[int, "hashlib._Hash"] = {}
        self.lock = threading.Lock()
        #: ``(serial, name)`` of every change in serial order: the changelog, asked by bisection.
        self.log: list[tuple[int, str]] = []
        for p in range(self.count):
            name = f"Bench_{p:06d}" if display_names else f"bench-{p:06d}"
            self.serial += 1
            project = self.projects[name] = self.by_canonical[canonical(name)] = Project(name, self.serial)
            self.log.append((self.serial, name))
            for r in range(releases):
                for f in range(files):
                    self._add_file(project, f"{r}.0", f)

    def _state(self, length: int) -> "hashlib._Hash":
        state = self._prefix_states.get(length)
        if state is None:
            state = self._prefix_states[length] = hashlib.sha256(self.block_view[:length])
        return state

    def _add_file(self, project: Project, version: str, index: int) -> None:
        span = self.high - self.low
        n = len(self.files)
        size = self.low + (n * 7919) % (span + 1) if span else self.low
        size -= size % 64 if size > 4096 else 0  # a few hundred distinct prefix lengths at most
        tail = f"{project.name}/{version}/{index}/{n}".encode().ljust(48, b".")
        digest = self._state(size - len(tail)).copy()
        digest.update(tail)
        sha = digest.hexdigest()
        filename = f"{project.name.replace('-', '_')}-{version}-{index}-py3-none-any.whl"
        path = f"/packages/{sha[:2]}/{sha[2:4]}/{sha[4:60]}/{filename}"
        metadata = f"Metadata-Version: 2.1\nName: {project.name}\nVersion: {version}\n".encode() if self.metadata else None
        file = File(path, filename, size, tail, sha, metadata)
        project.releases.setdefault(version, []).append(file)
        self.files[path] = file

    def change(self, n: int) -> list[str]:
        """A new release with one file in each of ``n`` projects spread over the corpus."""
        with self.lock:
            names = list(self.projects)[:: max(1, len(self.projects) // n)][:n]
            for name in names:
                project = self.projects[name]
                version = f"{len(project.releases) + 100}.0"
                self._add_file(project, version, 0)
                self.serial += 1
                project.serial = self.serial
                self.log.append((self.serial, name))
            return names

    def json_doc(self, project: Project, base: str) -> bytes:
        releases = {}
        for version, files in project.releases.items():
            releases[version] = [
                {
                    "filename": f.filename,
                    "url": base + f.path,
                    "digests": {"sha256": f.sha256},
                    "size": f.size,
                    "packagetype": "bdist_wheel",
                    "python_version": "py3",
                    "requires_python": ">=3.8",
                    "upload_time_iso_8601": "2024-01-02T03:04:05.000000Z",
                    "upload_time": "2024-01-02T03:04:05",
                    "yanked": False,
                    "yanked_reason": None,
                    "core-metadata": {"sha256": hashlib.sha256(f.metadata).hexdigest()} if f.metadata else False,
                    "data-dist-info-metadata": {"sha256": hashlib.sha256(f.metadata).hexdigest()} if f.metadata else False,
                }
                for f in files
            ]
        latest = list(releases)[-1]
        doc = {"info": {"name": project.name, "version": latest}, "last_serial": project.serial,
               "releases": releases, "urls": releases[latest]}
        return json.dumps(doc).encode()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Handler(socketserver.StreamRequestHandler):
    corpus: Corpus
    stats: dict[str, int]
    latency: float = 0.0
    rbufsize = 1 << 16

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        base = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
        while True:
            try:
                line = self.rfile.readline(65537)
            except OSError:
                return
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers = {}
            while True:
                h = self.rfile.readline(65537)
                if h in (b"\r\n", b"\n", b""):
                    break
                key, _, value = h.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = self.rfile.read(int(headers.get("content-length", 0) or 0)) if method == "POST" else b""
            self.stats["requests"] += 1
            if self.latency and not target.startswith("/_"):
                time.sleep(self.latency)
            self.route(method, target, headers, body, base)

    def send(self, status: str, body: bytes | memoryview, ctype: str = "application/octet-stream",
             extra: str = "", tail: bytes = b"", head_only: bool = False) -> None:
        length = len(body) + len(tail)
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\n{extra}\r\n").encode()
        if head_only:
            self.wfile.write(head)
        elif length < 1 << 16:
            self.wfile.write(head + bytes(body) + tail)
        else:
            self.connection.sendall(head)
            self.connection.sendall(body)
            if tail:
                self.connection.sendall(tail)

    def route(self, method: str, target: str, headers: dict[str, str], body: bytes, base: str) -> None:
        corpus = self.corpus
        path = urlsplit(target).path
        if method == "POST":
            params, name = xmlrpc.client.loads(body)
            with corpus.lock:
                if name == "changelog_last_serial":
                    result: object = corpus.serial
                elif name == "list_packages_with_serial":
                    result = {p.name: p.serial for p in corpus.projects.values()}
                else:
                    start = bisect.bisect_right(corpus.log, (int(params[0]), "\uffff"))
                    result = [[name, "", 0, "change", serial] for serial, name in corpus.log[start:]]
            return self.send("200 OK", xmlrpc.client.dumps((result,), methodresponse=True).encode(), "text/xml")
        head_only = method == "HEAD"
        if path.startswith("/packages/"):
            meta = path.endswith(".metadata")
            file = corpus.files.get(path[:-9] if meta else path)
            if file is None or (meta and file.metadata is None):
                return self.send("404 Not Found", b"")
            if meta:
                return self.send("200 OK", file.metadata, head_only=head_only)
            return self.send("200 OK", corpus.block_view[: file.size - len(file.tail)], tail=file.tail, head_only=head_only)
        if path.startswith("/pypi/") and path.endswith("/json"):
            asked = path[6:-5].strip("/")
            project = corpus.by_canonical.get(canonical(asked))
            if project is None:
                return self.send("404 Not Found", b"{}", "application/json")
            if asked != project.name:
                return self.send("301 Moved Permanently", b"", "text/plain", f"Location: {base}/pypi/{project.name}/json\r\n")
            return self.send("200 OK", corpus.json_doc(project, base), "application/json",
                             f"X-PyPI-Last-Serial: {project.serial}\r\n")
        if path in ("/simple", "/simple/"):
            with corpus.lock:
                doc = {"meta": {"api-version": "1.1", "_last-serial": corpus.serial},
                       "projects": [{"name": p.name, "_last-serial": p.serial} for p in corpus.projects.values()]}
            if "json" in headers.get("accept", ""):
                return self.send("200 OK", json.dumps(doc).encode(), "application/vnd.pypi.simple.v1+json",
                                 f"X-PyPI-Last-Serial: {corpus.serial}\r\n")
            links = "".join(f'<a href="{p.name}/">{p.name}</a>\n' for p in corpus.projects.values())
            return self.send("200 OK", f"<html><body>\n{links}</body></html>".encode(), "text/html")
        if path.startswith("/simple/"):
            project = corpus.by_canonical.get(canonical(path[8:].strip("/")))
            if project is None:
                return self.send("404 Not Found", b"")
            files = [f for fs in project.releases.values() for f in fs]
            doc = {"meta": {"api-version": "1.1", "_last-serial": project.serial}, "name": project.name,
                   "versions": list(project.releases),
                   "files": [{"filename": f.filename, "url": base + f.path, "hashes": {"sha256": f.sha256}} for f in files]}
            return self.send("200 OK", json.dumps(doc).encode(), "application/vnd.pypi.simple.v1+json",
                             f"X-PyPI-Last-Serial: {project.serial}\r\n")
        if path == "/_stats":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            stats = {"cpu": usage.ru_utime + usage.ru_stime - self.stats["cpu_base"], "requests": self.stats["requests"] - 1}
            return self.send("200 OK", json.dumps(stats).encode(), "application/json")
        if path == "/_reset":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            self.stats["cpu_base"] = usage.ru_utime + usage.ru_stime
            self.stats["requests"] = 0
            return self.send("200 OK", b"{}", "application/json")
        if path == "/_change":
            n = int(parse_qs(urlsplit(target).query).get("n", ["10"])[0])
            return self.send("200 OK", json.dumps(corpus.change(n)).encode(), "application/json")
        if path == "/_manifest":
            with corpus.lock:
                manifest = {p[1:]: f.sha256 for p, f in corpus.files.items()}
                for p, f in corpus.files.items():
                    if f.metadata is not None:
                        manifest[p[1:] + ".metadata"] = hashlib.sha256(f.metadata).hexdigest()
            return self.send("200 OK", json.dumps({"files": manifest, "projects": list(corpus.projects)}).encode(),
                             "application/json")
        self.send("404 Not Found", b"")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", choices=sorted(CORPORA))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay every answer by this round trip")
    parser.add_argument("--display-names", action="store_true", help="non-canonical names; JSON API redirects to them")
    args = parser.parse_args()
    corpus = Corpus(args.corpus, args.scale, args.display_names)
    handler = type("H", (Handler,), {"corpus": corpus, "stats": {"requests": 0, "cpu_base": 0.0},
                                     "latency": args.latency_ms / 1000})
    server = Server(("127.0.0.1", args.port), handler)
    print(f"port {server.server_address[1]} projects {corpus.count} files {len(corpus.files)}", flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
