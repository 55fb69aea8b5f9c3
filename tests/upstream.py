"""A real upstream for the tests: an HTTP server on 127.0.0.1 speaking the public index's APIs.

It serves a :class:`Corpus` the tests define and change between runs:

- XML-RPC at ``/pypi``: ``changelog_last_serial``, ``list_packages_with_serial``,
  ``changelog_since_serial`` (capped like the real one, so clients must page);
- the JSON API at ``/pypi/<name>/json`` with ``X-PyPI-Last-Serial``;
- the simple API at ``/simple/`` and ``/simple/<name>/`` (PEP 691 JSON or PEP 503 HTML);
- the files and their PEP 658 ``.metadata`` under ``/packages/``.

Switches make it behave like the upstreams met in the wild (``xmlrpc_enabled``,
``simple_json_enabled``, ``root_json_enabled``, ``serial_header``, ``relative_urls``,
``unserved_sidecars``, ``bad_sidecars``, ``whole_second_times``, ``redirect_to_display_name``,
``redirect_files``, ``credentials``, ``page_validators``, ``downgrade_to``, ``canonical_json_api_only``,
``padded_documents``, ``nested_documents``, ``listing_body``, ``send_content_length``;
over TLS with ``tls=``), and :meth:`UpstreamServer.fault` injects
faults (error statuses with ``Retry-After``, connection resets, truncated and corrupted
bodies, hung and trickled answers, stale JSON pages) on chosen paths. Every request is logged, so tests can
count what a run asked for.

Each response goes out in a single ``send``: a response written in pieces meets Nagle's
algorithm and delayed ACKs on loopback and costs ~40 ms per request.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import io
import json
import re
import socket
import ssl
import threading
import time
import xmlrpc.client
import zipfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name
from packaging.version import Version

EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


@dataclasses.dataclass
class File:
    filename: str
    content: bytes
    upload_time: datetime
    requires_python: str | None = None
    yanked: bool | str = False
    metadata: bytes | None = None
    #: Overrides the URL path the JSON API announces (for hostile-upstream tests).
    url_path: str | None = None
    #: Overrides the announced sha256 (for hash-mismatch tests).
    announced_sha256: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def path(self) -> str:
        """Where the file lives, shaped like the public index's blake2b paths."""
        if self.url_path is not None:
            return self.url_path
        digest = hashlib.blake2b(self.content, digest_size=32).hexdigest()
        return f"/packages/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{self.filename}"

    @property
    def packagetype(self) -> str:
        return "bdist_wheel" if self.filename.endswith(".whl") else "sdist"


@dataclasses.dataclass
class ProjectSpec:
    name: str
    serial: int = 0
    releases: dict[str, list[File]] = dataclasses.field(default_factory=dict)
    #: ``info.requires_dist`` of the JSON API (the current release's requirements).
    requires_dist: list[str] | None = None


class Corpus:
    """The upstream's content, with a changelog that every change appends to."""

    def __init__(self) -> None:
        self.projects: dict[str, ProjectSpec] = {}
        self.changelog: list[tuple[str, str | None, int, str, int]] = []
        self.serial = 100
        self._lock = threading.RLock()

    # -- changes ---------------------------------------------------------------------
    def _bump(self, name: str, version: str | None, action: str) -> int:
        self.serial += 1
        self.changelog.append((name, version, int(EPOCH.timestamp()) + self.serial, action, self.serial))
        spec = self.projects.get(canonicalize_name(name))
        if spec is not None:
            spec.serial = self.serial
        return self.serial

    def get(self, name: str) -> ProjectSpec | None:
        return self.projects.get(canonicalize_name(name))

    def add_file(
        self,
        name: str,
        version: str,
        filename: str | None = None,
        content: bytes | None = None,
        *,
        metadata: bool | bytes = False,
        **fields: Any,
    ) -> File:
        """Add a file to a release (creating project and release as needed)."""
        with self._lock:
            canonical = canonicalize_name(name)
            spec = self.projects.setdefault(canonical, ProjectSpec(name))
            if filename is None:
                filename = f"{canonical.replace('-', '_')}-{version}.tar.gz"
            if content is None:
                content = f"{name} {version} {filename}\n".encode() * 50
            if metadata is True:
                metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
            fields.setdefault("upload_time", EPOCH + timedelta(hours=self.serial))
            file = File(filename, content, metadata=metadata or None, **fields)
            spec.releases.setdefault(version, []).append(file)
            self._bump(name, version, f"add file {filename}")
            return file

    def add_release(self, name: str, version: str) -> None:
        """A release with no files (listed in PEP 700 ``versions`` only)."""
        with self._lock:
            spec = self.projects.setdefault(canonicalize_name(name), ProjectSpec(name))
            spec.releases.setdefault(version, [])
            self._bump(name, version, "new release")

    def yank(self, name: str, version: str, reason: str | bool = True) -> None:
        with self._lock:
            for file in self.projects[canonicalize_name(name)].releases[version]:
                file.yanked = reason
            self._bump(name, version, "yank release" if reason else "unyank release")

    def remove_file(self, name: str, filename: str) -> None:
        with self._lock:
            spec = self.projects[canonicalize_name(name)]
            for files in spec.releases.values():
                files[:] = [f for f in files if f.filename != filename]
            self._bump(name, None, f"remove file {filename}")

    def remove_release(self, name: str, version: str) -> None:
        with self._lock:
            del self.projects[canonicalize_name(name)].releases[version]
            self._bump(name, version, "remove release")

    def delete_project(self, name: str) -> None:
        with self._lock:
            self._bump(name, None, "remove project")
            del self.projects[canonicalize_name(name)]

    def touch(self, name: str) -> None:
        """A change that alters nothing a mirror stores (e.g. a description edit)."""
        with self._lock:
            self._bump(name, None, "update description")

    # -- views -----------------------------------------------------------------------
    def files(self) -> dict[str, File]:
        """Every file by its URL path (plus ``.metadata`` documents as File-like entries)."""
        with self._lock:
            out: dict[str, File] = {}
            for spec in self.projects.values():
                for files in spec.releases.values():
                    for f in files:
                        out[f.path] = f
            return out

    def json_doc(self, spec: ProjectSpec, base: str) -> dict[str, Any]:
        releases = {version: [self._file_entry(f, version, base) for f in files] for version, files in spec.releases.items()}
        latest = list(spec.releases)[-1] if spec.releases else ""
        return {
            "info": {"name": spec.name, "version": latest, "summary": f"The {spec.name} project",
                     "requires_dist": spec.requires_dist},
            "last_serial": spec.serial,
            "releases": releases,
            "urls": releases.get(latest, []),
            "vulnerabilities": [],
        }

    @staticmethod
    def _file_entry(f: File, version: str, base: str) -> dict[str, Any]:
        core: Any = {"sha256": hashlib.sha256(f.metadata).hexdigest()} if f.metadata else False
        return {
            "filename": f.filename,
            "url": base + f.path,
            "digests": {
                "sha256": f.announced_sha256 or f.sha256,
                "md5": hashlib.md5(f.content).hexdigest(),
                "blake2b_256": hashlib.blake2b(f.content, digest_size=32).hexdigest(),
            },
            "size": len(f.content),
            "packagetype": f.packagetype,
            "python_version": "py3" if f.packagetype == "bdist_wheel" else "source",
            "requires_python": f.requires_python,
            "upload_time": f.upload_time.strftime("%Y-%m-%dT%H:%M:%S"),
            "upload_time_iso_8601": f.upload_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "yanked": bool(f.yanked),
            "yanked_reason": f.yanked if isinstance(f.yanked, str) else None,
            "core-metadata": core,
            "data-dist-info-metadata": core,
            "version": version,
        }

    def simple_project(self, spec: ProjectSpec, base: str) -> dict[str, Any]:
        files = []
        for version, entries in spec.releases.items():
            for f in entries:
                files.append(
                    {
                        "filename": f.filename,
                        "url": base + f.path,
                        "hashes": {"sha256": f.sha256},
                        "requires-python": f.requires_python,
                        "size": len(f.content),
                        "upload-time": f.upload_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        "yanked": f.yanked,
                        "core-metadata": {"sha256": hashlib.sha256(f.metadata).hexdigest()} if f.metadata else False,
                    }
                )
        return {
            "meta": {"api-version": "1.1", "_last-serial": spec.serial},
            "name": canonicalize_name(spec.name),
            "versions": sorted(spec.releases, key=Version),  # the public index lists them ascending
            "files": files,
        }


@dataclasses.dataclass
class Fault:
    """One injected misbehaviour: ``kind`` on requests whose path matches ``pattern``."""

    pattern: str
    kind: str  # status | reset | truncate | corrupt | hang | stale | trickle
    times: int | None = 1  # None: forever
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0

    def matches(self, path: str) -> bool:
        return re.search(self.pattern, path) is not None


class UpstreamServer:
    """The test upstream. Use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, corpus: Corpus | None = None, tls: TestCertificate | None = None) -> None:
        self.corpus = corpus or Corpus()
        #: Served over https with this certificate (trusted through ``REQUESTS_CA_BUNDLE``).
        self.tls = tls
        self.xmlrpc_enabled = True
        self.simple_json_enabled = True
        self.serial_header = True
        #: JSON API file URLs relative to the document, as some proxies answer.
        self.relative_urls = False
        #: Advertised-but-missing sidecars, as met behind a caching proxy: filename -> the
        #: status (404, 410) its ``.metadata`` answers with. The JSON API still lists the
        #: digest; the simple pages do not.
        self.unserved_sidecars: dict[str, int] = {}
        #: Filenames whose ``.metadata`` answers bytes that never match the advertised digest
        #: (the JSON API lists it, the simple pages do not).
        self.bad_sidecars: set[str] = set()
        #: False: the root listing answers HTML even to a PEP 691 request (project pages stay JSON).
        self.root_json_enabled = True
        #: Upload times without fractions when they have none (``...:47Z``), in the JSON API and
        #: the simple pages, as the public index writes old uploads.
        self.whole_second_times = False
        #: The JSON API answers any spelling but the display name with a 301 to it, as the
        #: public index does.
        self.redirect_to_display_name = False
        #: Files answer ``/packages/...`` with a 302 to ``/cdn/packages/...``, as a CDN in front may.
        self.redirect_files = False
        #: The simple pages (root and projects) carry ``ETag`` and ``Last-Modified`` and answer
        #: a matching ``If-None-Match`` or ``If-Modified-Since`` with a 304 and no body, as the
        #: public index does; False: neither, as some proxies and static servers.
        self.page_validators = True
        #: (user, password) that every request must carry as HTTP Basic auth, or get a 401.
        self.credentials: tuple[str, str] | None = None
        #: (base URL, path pattern): requests whose path matches are redirected to the same
        #: path under the base URL (an http twin of a TLS upstream: a downgrade), with 302
        #: (307 for XML-RPC's POST).
        self.downgrade_to: tuple[str, str] | None = None
        #: The JSON API answers only the normalized spelling of a name (404 for the display
        #: name), as an upstream that is itself a mirror may.
        self.canonical_json_api_only = False
        #: Canonical name -> bytes of padding in its JSON API document (``info.description``).
        self.padded_documents: dict[str, int] = {}
        #: Canonical names whose JSON API document is nested thousands of levels deep.
        self.nested_documents: set[str] = set()
        #: The root listing's body (JSON and HTML alike) instead of the real one.
        self.listing_body: bytes | None = None
        #: False: answers carry no Content-Length and end when the connection closes.
        self.send_content_length = True
        #: Requests that came in absolute form (``GET http://host/path``), as a proxy gets them.
        self.proxied_requests = 0
        #: Root listings (XML-RPC ``list_packages_with_serial``, ``/simple/`` in JSON and HTML)
        #: hold only the first N projects, as an outage page or a half-synced upstream
        #: mirror answers (0: an empty listing). None: every project.
        self.listing_limit: int | None = None
        self.changelog_cap = 50_000
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        #: Bytes sent (status lines, headers and bodies) since the last :meth:`clear`.
        self.sent_bytes = 0
        #: The XML-RPC method of every call, in order.
        self.xmlrpc_calls: list[str] = []
        self._lock = threading.Lock()
        #: Called with (method, path) before each request is answered (for kill tests).
        self.on_request: Any = None
        #: Called while a "trickle" answer is half sent: a kill there is always mid-body.
        self.on_trickle: Any = None
        #: Set when the server stops: "hang" faults wait for it, so a client's timeout
        #: always fires first, however slow the machine.
        self.released = threading.Event()
        handler = type("Handler", (_Handler,), {"upstream": self})
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> UpstreamServer:
        # A short poll: stopping waits for the next one, and every test stops a server.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fault(self, pattern: str, kind: str, times: int | None = 1, **kwargs: Any) -> Fault:
        fault = Fault(pattern, kind, times, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Forget the request log and every fault."""
        with self._lock:
            self.requests.clear()
            self.sent_bytes = 0
            self.xmlrpc_calls.clear()
            self.faults.clear()

    def count(self, prefix: str = "") -> int:
        with self._lock:
            return sum(1 for _m, p in self.requests if p.startswith(prefix))

    def counts(self) -> Counter[str]:
        """Requests by kind: xmlrpc, json, simple, file, metadata."""
        with self._lock:
            return Counter(_kind(m, p) for m, p in self.requests)

    def refuses(self, handler: BaseHTTPRequestHandler) -> bool:
        """Count proxy-form requests; answer 401 to one without the expected credentials."""
        if "://" in handler.path:
            with self._lock:
                self.proxied_requests += 1
        if self.credentials is None:
            return False
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        if handler.headers.get("Authorization") == expected:
            return False
        body = b"credentials required\n"
        handler.send_response(401)
        handler.send_header("WWW-Authenticate", 'Basic realm="test"')
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        return True

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(path) and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _log(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))
        if self.on_request is not None:
            self.on_request(method, path)


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (killed runs, injected resets) are normal here, not tracebacks."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _kind(method: str, path: str) -> str:
    if method == "POST":
        return "xmlrpc"
    if path.startswith("/pypi/"):
        return "json"
    if path.startswith("/simple"):
        return "simple"
    if path.endswith(".metadata"):
        return "metadata"
    return "file"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: UpstreamServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    # -- plumbing --------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None, fault: Fault | None = None) -> None:
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}", f"Content-Type: {ctype}"]
        if self.upstream.send_content_length:
            head.append(f"Content-Length: {len(body)}")
        else:
            head.append("Connection: close")
            self.close_connection = True
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        payload = body if self.command != "HEAD" else b""
        if fault is not None and fault.kind == "corrupt" and payload:
            payload = bytes([payload[0] ^ 0xFF]) + payload[1:]
        if fault is not None and fault.kind == "truncate":
            payload = payload[: len(payload) // 2]
            head.append("Connection: close")
            self.close_connection = True
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload
        with self.upstream._lock:
            self.upstream.sent_bytes += len(data)
        if fault is not None and fault.kind == "trickle":  # most of it, a pause, the rest
            cut = len(data) * 3 // 4
            self.wfile.write(data[:cut])
            self.wfile.flush()
            if self.upstream.on_trickle is not None:
                self.upstream.on_trickle()
            time.sleep(fault.seconds)
            data = data[cut:]
        self.wfile.write(data)
        self.wfile.flush()
        if fault is not None and fault.kind == "truncate":
            self.connection.shutdown(socket.SHUT_RDWR)

    def _apply_fault(self, path: str) -> Fault | None:
        """Handle faults that replace the answer; return those that alter it."""
        fault = self.upstream._take_fault(path)
        if fault is None:
            return None
        if fault.kind == "hang":  # no answer until the server stops; then hang up
            self.upstream.released.wait(60)
            self.close_connection = True
            return fault
        if fault.kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
            self.connection.close()
            return fault
        if fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._send(fault.status, b"injected error\n", "text/plain", headers)
            return fault
        return fault  # truncate / corrupt / stale: alter the normal answer

    # -- routing ---------------------------------------------------------------------
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        self.upstream._log("POST", path)
        if self.upstream.refuses(self):
            return
        fault = self._apply_fault("POST " + path)
        if fault is not None and fault.kind in ("reset", "status", "hang"):
            return
        if self._downgrade(path, 307):
            return
        if path.rstrip("/") != "/pypi" or not self.upstream.xmlrpc_enabled:
            self._send(405, b"XML-RPC is not available here\n", "text/plain")
            return
        params, method = xmlrpc.client.loads(body)
        self.upstream.xmlrpc_calls.append(method)
        corpus = self.upstream.corpus
        with corpus._lock:
            if method == "changelog_last_serial":
                result: Any = corpus.serial
            elif method == "list_packages_with_serial":
                listed = list(corpus.projects.values())[: self.upstream.listing_limit]
                result = {s.name: s.serial for s in listed}
            elif method == "changelog_since_serial":
                since = int(params[0])
                entries = [list(e) for e in corpus.changelog if e[4] > since]
                result = [[n, v or "", t, a, s] for n, v, t, a, s in entries[: self.upstream.changelog_cap]]
            else:
                fault_body = xmlrpc.client.dumps(xmlrpc.client.Fault(1, f"no method {method}"), methodresponse=True)
                self._send(200, fault_body.encode(), "text/xml", fault=fault)
                return
        self._send(200, xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True).encode(), "text/xml", fault=fault)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.upstream._log("GET", path)
        if self.upstream.refuses(self):
            return
        fault = self._apply_fault(path)
        if fault is not None and fault.kind in ("reset", "status", "hang"):
            return
        if self._downgrade(path, 302):
            return
        corpus = self.upstream.corpus
        base = self.upstream.url
        with corpus._lock:
            if path.startswith("/pypi/") and path.endswith("/json"):
                return self._json_api(unquote(path[len("/pypi/") : -len("/json")]).strip("/"), base, fault)
            if path in ("/simple", "/simple/"):
                return self._simple_root(fault)
            if path.startswith("/simple/"):
                return self._simple_project(unquote(path[len("/simple/") :]).strip("/"), base, fault)
            if path.startswith(("/packages/", "/cdn/packages/")):
                return self._file(path, fault)
        self._send(404, b"not found\n", "text/plain")

    def _downgrade(self, path: str, status: int) -> bool:
        """Redirect to the http twin when ``downgrade_to`` says so."""
        if self.upstream.downgrade_to is None:
            return False
        base, pattern = self.upstream.downgrade_to
        if not re.search(pattern, path):
            return False
        self._send(status, b"", "text/plain", {"Location": base + path})
        return True

    def _send_page(self, body: bytes, ctype: str, serial: int, fault: Fault | None) -> None:
        """A simple page, with validators (``page_validators``): a 304 when the client's match."""
        headers = self._serial_headers(serial)
        if self.upstream.page_validators:
            etag = '"' + hashlib.sha256(ctype.encode() + body).hexdigest()[:24] + '"'
            modified = EPOCH + timedelta(seconds=serial)
            headers.update(ETag=etag, **{"Last-Modified": format_datetime(modified, usegmt=True)})
            match = self.headers.get("If-None-Match")
            since = self.headers.get("If-Modified-Since")
            if match is not None:
                unchanged = etag in (m.strip() for m in match.split(","))
            else:
                try:
                    unchanged = since is not None and modified <= parsedate_to_datetime(since)
                except (TypeError, ValueError):
                    unchanged = False
            if unchanged:
                return self._send(304, b"", ctype, headers)
        self._send(200, body, ctype, headers, fault)

    def _serial_headers(self, serial: int) -> dict[str, str]:
        return {"X-PyPI-Last-Serial": str(serial)} if self.upstream.serial_header else {}

    def _json_api(self, name: str, base: str, fault: Fault | None) -> None:
        spec = self.upstream.corpus.get(name)
        if spec is None or (self.upstream.canonical_json_api_only and name != canonicalize_name(name)):
            return self._send(404, b'{"message": "Not Found"}', "application/json")
        canonical = canonicalize_name(spec.name)
        if canonical in self.upstream.nested_documents:
            deep = b'{"info": {"name": "' + spec.name.encode() + b'", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
            return self._send(200, deep, "application/json", self._serial_headers(spec.serial), fault)
        if self.upstream.redirect_to_display_name and name != spec.name:
            return self._send(301, b"", "text/plain", {"Location": f"{base}/pypi/{spec.name}/json"}, fault)
        doc = self.upstream.corpus.json_doc(spec, "../.." if self.upstream.relative_urls else base)
        if self.upstream.whole_second_times:
            for entry in (e for files in doc["releases"].values() for e in files):
                entry["upload_time_iso_8601"] = entry["upload_time_iso_8601"].replace(".000000Z", "Z")
        if canonical in self.upstream.padded_documents:
            doc["info"]["description"] = "x" * self.upstream.padded_documents[canonical]
        serial = spec.serial
        if fault is not None and fault.kind == "stale":
            serial -= 1
            doc["last_serial"] = serial
        self._send(200, json.dumps(doc).encode(), "application/json", self._serial_headers(serial), fault)

    def _wants_json(self) -> bool:
        return self.upstream.simple_json_enabled and SIMPLE_JSON in (self.headers.get("Accept") or "")

    def _simple_root(self, fault: Fault | None) -> None:
        corpus = self.upstream.corpus
        if self.upstream.listing_body is not None:
            ctype = SIMPLE_JSON if self._wants_json() else "text/html"
            return self._send(200, self.upstream.listing_body, ctype, self._serial_headers(corpus.serial), fault)
        specs = sorted(corpus.projects.values(), key=lambda s: canonicalize_name(s.name))[: self.upstream.listing_limit]
        if self._wants_json() and self.upstream.root_json_enabled:
            doc = {
                "meta": {"api-version": "1.1", "_last-serial": corpus.serial},
                "projects": [{"name": s.name, "_last-serial": s.serial} for s in specs],
            }
            return self._send_page(json.dumps(doc).encode(), SIMPLE_JSON, corpus.serial, fault)
        links = "".join(f'<a href="/simple/{canonicalize_name(s.name)}/">{html.escape(s.name)}</a>\n' for s in specs)
        page = f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n"
        self._send_page(page.encode(), "text/html", corpus.serial, fault)

    def _simple_project(self, name: str, base: str, fault: Fault | None) -> None:
        spec = self.upstream.corpus.get(name)
        if spec is None:
            return self._send(404, b"not found\n", "text/plain")
        doc = self.upstream.corpus.simple_project(spec, base)
        for entry in doc["files"]:
            if self.upstream.whole_second_times:
                entry["upload-time"] = entry["upload-time"].replace(".000000Z", "Z")
            if entry["filename"] in self.upstream.unserved_sidecars or entry["filename"] in self.upstream.bad_sidecars:
                entry["core-metadata"] = False
        if self._wants_json():
            return self._send_page(json.dumps(doc).encode(), SIMPLE_JSON, spec.serial, fault)
        links = "".join(f'<a href="{f["url"]}#sha256={f["hashes"]["sha256"]}">{f["filename"]}</a>\n' for f in doc["files"])
        page = f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n<!--SERIAL {spec.serial}-->"
        self._send_page(page.encode(), "text/html", spec.serial, fault)

    def _file(self, path: str, fault: Fault | None) -> None:
        if self.upstream.redirect_files and path.startswith("/packages/"):
            return self._send(302, b"", "text/plain", {"Location": f"{self.upstream.url}/cdn{path}"})
        path = path.removeprefix("/cdn")
        files = self.upstream.corpus.files()
        if path.endswith(".metadata") and path[: -len(".metadata")] in files:
            file = files[path[: -len(".metadata")]]
            if file.filename in self.upstream.unserved_sidecars:
                return self._send(self.upstream.unserved_sidecars[file.filename], b"not here\n", "text/plain")
            if file.metadata is not None:
                meta = file.metadata + (b"Tampered: yes\n" if file.filename in self.upstream.bad_sidecars else b"")
                return self._send(200, meta, "application/octet-stream", fault=fault)
        elif path in files:
            return self._send(200, files[path].content, "application/octet-stream", fault=fault)
        self._send(404, b"not found\n", "text/plain")


# -- TLS ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TestCertificate:
    """A self-signed certificate for 127.0.0.1: its own CA, so ``REQUESTS_CA_BUNDLE=cert`` trusts it."""

    cert: str
    key: str

    __test__ = False  # not a test class, for pytest

    @classmethod
    def create(cls, directory: Any) -> TestCertificate:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.now(timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        cert_path, key_path = f"{directory}/upstream-cert.pem", f"{directory}/upstream-key.pem"
        with open(cert_path, "wb") as fh:
            fh.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return cls(cert_path, key_path)


# -- building blocks for corpora ---------------------------------------------------------
def make_wheel(name: str, version: str, module_source: str = "VALUE = 42\n", requires: list[str] | None = None) -> tuple[str, bytes, bytes]:
    """A small valid wheel: (filename, wheel bytes, METADATA bytes)."""
    dist = canonicalize_name(name).replace("-", "_")
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    extras = sorted({m for r in requires or [] for m in re.findall(r"""extra\s*==\s*["']([^"']+)["']""", r)})
    metadata += "".join(f"Provides-Extra: {e}\n" for e in extras)
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires or [])
    files = {
        f"{dist}/__init__.py": module_source.encode(),
        f"{dist}-{version}.dist-info/METADATA": metadata.encode(),
        f"{dist}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record_name = f"{dist}-{version}.dist-info/RECORD"
    record = ""
    for arcname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{arcname},sha256={digest},{len(data)}\n"
    record += f"{record_name},,\n"
    files[record_name] = record.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in files.items():
            info = zipfile.ZipInfo(arcname, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return f"{dist}-{version}-py3-none-any.whl", buffer.getvalue(), metadata.encode()


def standard_corpus() -> Corpus:
    """Names that need normalising, yanked files, requires-python, wheels with metadata."""
    corpus = Corpus()
    wheel, data, meta = make_wheel("Foo.Bar_Baz", "1.0")
    corpus.add_file("Foo.Bar_Baz", "1.0", wheel, data, metadata=meta, requires_python=">=3.8")
    corpus.add_file("Foo.Bar_Baz", "1.0", "Foo.Bar_Baz-1.0.tar.gz", requires_python=">=3.8")
    corpus.add_file("Foo.Bar_Baz", "1.1rc1", "foo_bar_baz-1.1rc1.tar.gz", requires_python="<4,>=3.8")
    corpus.add_file("small", "0.1", "small-0.1.tar.gz")
    corpus.add_file("small", "0.2", "small-0.2.tar.gz")
    corpus.yank("small", "0.1", "broken build")
    corpus.add_file("small", "0.3", "small-0.3.tar.gz", yanked=True)
    wheel, data, meta = make_wheel("Tiny-Lib", "2.0")
    corpus.add_file("Tiny-Lib", "2.0", wheel, data, metadata=meta)
    corpus.add_release("Tiny-Lib", "0.0.1")
    return corpus


def bulk_corpus(projects: int, releases: int = 2, files: int = 2, size: int = 2048, corpus: Corpus | None = None) -> Corpus:
    """A bigger synthetic corpus (or more of ``corpus``): ``projects x releases x files`` files of ``size`` bytes."""
    corpus = corpus or Corpus()
    for p in range(projects):
        name = f"bulk-{p:04d}"
        for r in range(releases):
            for f in range(files):
                filename = f"bulk_{p:04d}-{r}.0-f{f}.tar.gz"
                seed = f"{name}/{r}/{f}".encode()
                content = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
                corpus.add_file(name, f"{r}.0", filename, content)
    return corpus


def make_sdist(name: str, version: str, build_requires: list[str] | None = None, fmt: str = "tar.gz",
               pyproject: str | None = None, *, requires: list[str] | None = None, module_source: str = "VALUE = 42\n",
               backend: str = "setuptools.build_meta") -> tuple[str, bytes]:
    """A small sdist (``tar.gz`` or ``zip``): (filename, bytes). ``build_requires`` becomes the
    ``[build-system] requires`` of a real ``pyproject.toml`` (with ``backend``); None and no
    ``pyproject`` text: an sdist without one (a legacy ``setup.py`` project). ``requires``: the
    ``Requires-Dist`` lines of its PKG-INFO (what :data:`TINY_BACKEND` puts in the wheel)."""
    dist = canonicalize_name(name).replace("-", "_")
    top = f"{dist}-{version}"
    pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    pkg_info += "".join(f"Requires-Dist: {r}\n" for r in requires or [])
    files = {f"{top}/PKG-INFO": pkg_info.encode(), f"{top}/{dist}/__init__.py": module_source.encode()}
    if build_requires is not None:
        listed = ", ".join(json.dumps(r) for r in build_requires)
        pyproject = f'[build-system]\nrequires = [{listed}]\nbuild-backend = "{backend}"\n\n' \
                    f'[project]\nname = "{name}"\nversion = "{version}"\n'
    if pyproject is not None:
        files[f"{top}/pyproject.toml"] = pyproject.encode()
    else:
        files[f"{top}/setup.py"] = f"from setuptools import setup\nsetup(name={name!r}, version={version!r})\n".encode()
    # a nested pyproject.toml must not be taken for the sdist's own
    files[f"{top}/tests/fixture/pyproject.toml"] = b'[build-system]\nrequires = ["nested-only"]\n'
    buffer = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for arcname, data in files.items():
                archive.writestr(zipfile.ZipInfo(arcname, date_time=(2024, 1, 1, 0, 0, 0)), data)
    else:
        import tarfile

        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            # the sdist's own pyproject.toml last: found by reading through the archive
            for arcname, data in sorted(files.items(), key=lambda item: item[0] == f"{top}/pyproject.toml"):
                info = tarfile.TarInfo(arcname)
                info.size, info.mtime = len(data), int(EPOCH.timestamp())
                archive.addfile(info, io.BytesIO(data))
    return f"{top}.{fmt}", buffer.getvalue()


#: A PEP 517 build backend small enough to ship in the test corpus (project ``tinybackend``):
#: it builds a wheel of the package directory of an sdist made by :func:`make_sdist`, with the
#: name, version and ``Requires-Dist`` of its PKG-INFO. Its own sdist builds itself
#: (``backend-path``), as flit_core's does, so ``pip wheel --no-binary :all:`` can build it.
TINY_BACKEND = """\
import base64, hashlib, os, zipfile

def _pkg_info():
    with open("PKG-INFO", encoding="utf-8") as fh:
        return fh.read()

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    text = _pkg_info()
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    name, version = fields["Name"], fields["Version"]
    dist = name.lower().replace("-", "_").replace(".", "_")
    files = {}
    for root, _dirs, names in os.walk(dist):
        for n in sorted(names):
            if n.endswith(".py"):
                path = os.path.join(root, n)
                with open(path, "rb") as fh:
                    files[path.replace(os.sep, "/")] = fh.read()
    info = dist + "-" + version + ".dist-info"
    files[info + "/METADATA"] = text.encode()
    files[info + "/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: tinybackend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    record = ""
    for arcname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += arcname + ",sha256=" + digest + "," + str(len(data)) + "\\n"
    files[info + "/RECORD"] = (record + info + "/RECORD,,\\n").encode()
    filename = dist + "-" + version + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
        for arcname, data in files.items():
            archive.writestr(arcname, data)
    return filename
"""


def add_built_project(corpus: Corpus, name: str, version: str, build_requires: list[str],
                      requires: list[str] | None = None) -> None:
    """A release with a wheel (with PEP 658 metadata) and an sdist built by ``tinybackend``."""
    wheel, data, meta = make_wheel(name, version, requires=requires)
    corpus.add_file(name, version, wheel, data, metadata=meta)
    filename, data = make_sdist(name, version, build_requires, requires=requires, backend="tinybackend")
    corpus.add_file(name, version, filename, data)


def closure_corpus() -> Corpus:
    """Projects that pin old releases of their build backend and of runtime dependencies, so
    that ``latest_release keep = 1`` alone would leave pip unable to build or install them:

    - ``app`` builds with ``tinybackend<2`` and needs ``libdep<2``; ``libdep`` 1.5 needs
      ``leaf==1.0`` (both have newer releases, and ``libdep`` a newer pre-release);
    - ``tool`` builds with ``tinybackend>=2``.
    """
    corpus = Corpus()
    for version in ("1.0", "2.0"):
        wheel, data, meta = make_wheel("tinybackend", version, module_source=TINY_BACKEND)
        corpus.add_file("tinybackend", version, wheel, data, metadata=meta)
        pyproject = '[build-system]\nrequires = []\nbuild-backend = "tinybackend"\nbackend-path = ["."]\n'
        filename, data = make_sdist("tinybackend", version, pyproject=pyproject, module_source=TINY_BACKEND)
        corpus.add_file("tinybackend", version, filename, data)
    add_built_project(corpus, "leaf", "1.0", ["tinybackend<2"])
    add_built_project(corpus, "leaf", "2.0", ["tinybackend"])
    add_built_project(corpus, "libdep", "1.0", ["tinybackend<2"])
    add_built_project(corpus, "libdep", "1.5", ["tinybackend>=1,<2"], ["leaf==1.0"])
    add_built_project(corpus, "libdep", "1.6rc1", ["tinybackend<2"], ["leaf==1.0"])
    add_built_project(corpus, "libdep", "2.0", ["tinybackend"])
    add_built_project(corpus, "app", "1.0", ["tinybackend<2"], ["libdep<2"])
    add_built_project(corpus, "tool", "3.0", ["tinybackend>=2"])
    return corpus
