"""An upstream in memory: the test corpus answering the calls the engine makes of an Upstream.

For tests of the engine's own logic (what to sync, remove, record, retry) that need no
sockets. It speaks the XML-RPC methods only (``changelog_last_serial``,
``list_packages_with_serial``, ``changelog_since``), the JSON API (``project``) and file
downloads, with the same errors as the real one. Everything about HTTP -- transports,
faults, redirects, the other discovery methods -- stays with the loopback server of
``tests/upstream.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import BinaryIO
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from bandersnatch_classic.errors import HashMismatch, MethodUnavailable, NotServed, ProjectGone
from bandersnatch_classic.models import Project

from .upstream import Corpus


class MemoryUpstream:
    """The corpus as an upstream at ``master``."""

    def __init__(self, corpus: Corpus, master: str = "https://upstream.invalid") -> None:
        self.corpus = corpus
        self.master = master
        #: Paths asked for, in order, like the loopback server's request log.
        self.asked: list[str] = []

    def close(self) -> None:
        pass

    def changelog_last_serial(self) -> int:
        return self.corpus.serial

    def list_packages_with_serial(self) -> dict[str, int]:
        return {spec.name: spec.serial for spec in self.corpus.projects.values()}

    def changelog_since(self, serial: int, until: int) -> tuple[dict[str, int], set[str]]:
        changed: dict[str, int] = {}
        last: dict[str, str] = {}
        for name, _version, _when, action, entry_serial in self.corpus.changelog:
            if serial < entry_serial <= until:
                changed[name] = max(changed.get(name, 0), entry_serial)
                last[canonicalize_name(name)] = action
        return changed, {c for c, action in last.items() if action == "remove project"}

    def simple_listing(self) -> tuple[int, dict[str, int]]:
        raise MethodUnavailable("the memory upstream speaks XML-RPC only")

    def html_listing(self) -> list[str]:
        raise MethodUnavailable("the memory upstream speaks XML-RPC only")

    def project_page_serial(self, name: str) -> int | None:
        raise MethodUnavailable("the memory upstream speaks XML-RPC only")

    def project(self, name: str, expected_serial: int = 0) -> Project:
        url = f"{self.master}/pypi/{name}/json"
        self.asked.append(urlsplit(url).path)
        spec = self.corpus.get(name)
        if spec is None:
            raise ProjectGone(f"{name}: the upstream has no such project (HTTP 404)")
        return Project.from_json(self.corpus.json_doc(spec, self.master), spec.serial, url)

    def download(self, url: str, open_dest: Callable[[], contextlib.AbstractContextManager[BinaryIO]], sha256: str) -> int:
        path = urlsplit(url).path
        self.asked.append(path)
        files = self.corpus.files()
        if path.endswith(".metadata") and path[: -len(".metadata")] in files:
            data = files[path[: -len(".metadata")]].metadata
        else:
            data = files[path].content if path in files else None
        if data is None:
            raise NotServed(f"{url}: HTTP 404")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise HashMismatch(f"{url}: sha256 {hashlib.sha256(data).hexdigest()}, expected {sha256}")
        with open_dest() as fh:
            fh.write(data)
        return len(data)
