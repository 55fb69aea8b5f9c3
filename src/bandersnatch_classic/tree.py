"""A mirror's directory tree as an upstream: ``master = file:///srv/copy`` (or a plain path).

An air-gapped mirror syncs from a copy of another mirror on a disk. The copy is read
through :class:`TreeAdapter`, a ``requests`` transport adapter mounted for ``file://``
URLs on the :class:`~bandersnatch_classic.transport.Transport`'s session, so discovery,
the JSON API, downloads, retries and digest checks are the ones every upstream gets. The
adapter answers the way ``bandersnatch serve`` does over the same tree: PEP 691
negotiation on ``/simple/``, any spelling of a name for ``/pypi/<name>/json`` and
``/simple/<name>/``, the pages of a ``hash-index`` tree, 404 for anything absent and 405
for anything but GET and HEAD. Nothing outside the tree is read: paths are decoded once,
``.``/``..`` segments are refused, and symlinks must resolve inside the tree.

The tree is a mirror directory (``<path>/web/simple`` exists) or its ``web/`` directory.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from .errors import ConfigError, UnsafePath
from .layout import PAGE_HTML, PAGE_V1_JSON
from .models import check_project_name
from .pages import JSON_CONTENT_TYPE

SCHEME = "file://"


def tree_url(value: str) -> str | None:
    """The ``file://`` URL of a ``master`` naming a directory tree, or None for any other value.

    ``file:///path`` and ``file://localhost/path`` are taken, and so is a plain absolute
    path. Raises :class:`ConfigError` for a ``file:`` URL with another host or a relative path.
    """
    if value.startswith("/"):
        return Path(value).as_uri().rstrip("/")
    if not value.lower().startswith("file:"):
        return None
    parts = urlsplit(value)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ConfigError(f"[mirror] master = {value!r} is not allowed; use file:///absolute/path or an absolute path")
    return Path(unquote(parts.path)).as_uri().rstrip("/")


def is_tree(master: str) -> bool:
    return master.startswith(SCHEME)


class TreeAdapter(BaseAdapter):
    """Answers ``file://`` requests below one directory tree as ``bandersnatch serve`` would."""

    def __init__(self, master: str) -> None:
        super().__init__()
        self.root = Path(unquote(urlsplit(master).path))

    def close(self) -> None:
        pass

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """One answer: 200 with the file streamed, or 404/405 with a short text body."""
        if request.method not in ("GET", "HEAD"):
            return self._answer(request, 405, body=b"GET and HEAD only\n")
        found = self._locate(request)
        if found is None:
            return self._answer(request, 404, body=b"not found\n")
        path, ctype = found
        try:
            fh = open(path, "rb")
        except OSError:
            return self._answer(request, 404, body=b"not found\n")
        size = os.fstat(fh.fileno()).st_size
        if request.method == "HEAD":
            fh.close()
            return self._answer(request, 200, ctype, size=size)
        return self._answer(request, 200, ctype, fh, size)

    def _answer(
        self, request: requests.PreparedRequest, status: int, ctype: str = "text/plain",
        fh: Any = None, size: int | None = None, body: bytes = b"",
    ) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response.reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
        response.raw = fh if fh is not None else io.BytesIO(body)
        length = size if size is not None else len(body)
        response.headers = CaseInsensitiveDict({"Content-Type": ctype, "Content-Length": str(length)})
        response.url = str(request.url)
        response.request = request
        return response

    # -- where a request's file is -------------------------------------------------------
    def _web(self) -> Path:
        """The served directory: ``<root>/web`` for a mirror directory, else the root itself."""
        web = self.root / "web"
        return web if (web / "simple").is_dir() else self.root

    def _locate(self, request: requests.PreparedRequest) -> tuple[Path, str] | None:
        """The file answering ``request``, inside the tree, and its type; None when there is none."""
        url_path = urlsplit(str(request.url)).path
        root_path = self.root.as_posix().rstrip("/")
        if not (url_path == root_path or url_path.startswith(f"{root_path}/")):
            return None
        try:
            rel = unquote(url_path[len(root_path):], errors="strict")
        except UnicodeDecodeError:
            return None
        parts = [p for p in rel.split("/") if p]
        if any(p in (".", "..") or "\\" in p or "\x00" in p for p in parts):
            return None
        web = self._web()
        if parts[:1] == ["simple"] and len(parts) <= 2:
            accept = request.headers.get("Accept") or ""
            wants_json = JSON_CONTENT_TYPE in accept or "latest+json" in accept
            page, ctype = (PAGE_V1_JSON, JSON_CONTENT_TYPE) if wants_json else (PAGE_HTML, "text/html; charset=utf-8")
            if len(parts) == 1:
                return _found(web, web / "simple" / page, ctype)
            canonical = _canonical(parts[1])
            if canonical is None:
                return None
            return _found(web, web / "simple" / canonical / page, ctype) or _found(
                web, web / "simple" / canonical[0] / canonical / page, ctype
            )
        if parts[:1] == ["pypi"] and parts[-1:] == ["json"] and len(parts) == 3:
            canonical = _canonical(parts[1])
            return _found(web, web / "pypi" / canonical / "json", "application/json") if canonical else None
        return _found(web, web.joinpath(*parts), "application/octet-stream") if parts else None


def _canonical(name: str) -> str | None:
    try:
        return check_project_name(name)
    except UnsafePath:
        return None


def _found(web: Path, path: Path, ctype: str) -> tuple[Path, str] | None:
    """``(path, ctype)`` when ``path`` is a regular file whose real location is inside ``web``."""
    try:
        resolved = path.resolve()
        real_web = web.resolve()
    except (OSError, RuntimeError):
        return None
    return (resolved, ctype) if resolved.is_relative_to(real_web) and resolved.is_file() else None
