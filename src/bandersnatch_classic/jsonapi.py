"""The JSON API answers ``serve`` makes from a project's stored document: the project's own
spelling of its name and versions, and ``/pypi/<name>/<version>/json``. Pure functions."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from packaging.version import InvalidVersion, Version

from .errors import UnsafePath
from .models import check_project_name


def own_name(doc: dict[str, Any], canonical: str) -> str:
    """The project's own spelling of its name (``info.name``), when it is one of ``canonical``."""
    info = doc.get("info")
    name = info.get("name") if isinstance(info, dict) else None
    try:
        if isinstance(name, str) and check_project_name(name) == canonical:
            return name
    except UnsafePath:
        pass
    return canonical


def own_version(version: str, releases: dict[str, Any]) -> str | None:
    """The release key ``version`` names: itself, or one equal to it as a PEP 440 version."""
    if version in releases:
        return version
    try:
        wanted = Version(version)
    except InvalidVersion:
        return None
    for key in releases:
        try:
            if Version(key) == wanted:
                return key
        except InvalidVersion:
            continue
    return None


def api_path(name: str, version: str | None) -> str:
    """The URL path of a JSON API answer."""
    return f"/pypi/{quote(name)}/json" if version is None else f"/pypi/{quote(name)}/{quote(version)}/json"


def release_document(doc: dict[str, Any], name: str, version: str) -> dict[str, Any]:
    """``/pypi/<name>/<version>/json`` from the project's stored document.

    The mirror stores one document per project, whose ``info`` (and ``vulnerabilities``)
    describe its latest release: for that release they are given whole; for an earlier one
    ``info`` holds only what the document says of it (name, version, the files'
    ``requires_python`` and yanked state), nothing made up.
    """
    files = list(doc["releases"].get(version) or [])
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    answer: dict[str, Any]
    if info.get("version") == version:
        answer = {"info": info, "last_serial": doc.get("last_serial"), "urls": files}
        if "vulnerabilities" in doc:
            answer["vulnerabilities"] = doc["vulnerabilities"]
        return answer
    yanked = [f for f in files if f.get("yanked")]
    short = {
        "name": name,
        "version": version,
        "requires_python": next((f["requires_python"] for f in files if f.get("requires_python")), None),
        "yanked": bool(files) and len(yanked) == len(files),
        "yanked_reason": next((f["yanked_reason"] for f in yanked if f.get("yanked_reason")), None),
    }
    return {"info": short, "last_serial": doc.get("last_serial"), "urls": files}
