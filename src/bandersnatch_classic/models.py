"""The nouns that flow between upstream, filters, pages and storage.

A :class:`Project` is built from one JSON API document (``/pypi/<name>/json``) and is
what filters trim and pages render. It keeps the raw document so that ``json = true``
can store what the upstream said, minus what filters removed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urljoin

from packaging.utils import canonicalize_name

from .errors import UnsafePath


#: The keys under which a JSON API file entry gives its core metadata digest (PEP 658/714).
METADATA_KEYS = ("core-metadata", "data-dist-info-metadata", "dist-info-metadata")


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseFile:
    """One downloadable file of one release, as the JSON API describes it."""

    filename: str
    url: str
    sha256: str
    size: int
    version: str
    packagetype: str = ""
    upload_time: datetime | None = None
    requires_python: str | None = None
    yanked: bool = False
    yanked_reason: str | None = None
    #: sha256 of the PEP 658 core metadata file, or None when the upstream has none.
    metadata_sha256: str | None = None
    #: The file's entry in the JSON document, for metadata filters.
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, version: str, entry: Mapping[str, Any], base: str = "") -> ReleaseFile:
        """A file from its JSON API entry; a relative ``url`` is resolved against ``base``."""
        digests = entry.get("digests") or {}
        core = entry.get("core-metadata", entry.get("data-dist-info-metadata"))
        metadata_sha256 = core.get("sha256") if isinstance(core, Mapping) else None
        uploaded = entry.get("upload_time_iso_8601") or entry.get("upload_time")
        return cls(
            filename=str(entry["filename"]),
            url=urljoin(base, str(entry["url"])) if base else str(entry["url"]),
            sha256=str(digests["sha256"]).lower(),
            size=int(entry.get("size") or 0),
            version=version,
            packagetype=str(entry.get("packagetype") or ""),
            upload_time=_parse_time(uploaded),
            requires_python=entry.get("requires_python") or None,
            yanked=bool(entry.get("yanked", False)),
            yanked_reason=entry.get("yanked_reason") or None,
            metadata_sha256=metadata_sha256,
            raw=entry,
        )


@dataclasses.dataclass(slots=True)
class Project:
    """One project's metadata: what a sync downloads and what its pages list."""

    name: str
    serial: int
    #: version -> files; a version may have no files (it is still listed in PEP 700 ``versions``).
    releases: dict[str, list[ReleaseFile]]
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: The whole JSON API document as the upstream sent it.
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    #: Files whose core metadata the mirror does not serve (see :meth:`drop_metadata`).
    without_metadata: set[str] = dataclasses.field(default_factory=set, repr=False)

    @property
    def canonical(self) -> str:
        return canonicalize_name(self.name)

    def files(self) -> Iterator[ReleaseFile]:
        """Every file of every release, in release order then upstream order."""
        for files in self.releases.values():
            yield from files

    def drop_metadata(self, filenames: Iterable[str]) -> None:
        """Forget the core metadata of these files: the mirror does not hold their ``.metadata``.

        Pages rendered afterwards carry no metadata attribute for them, and the stored
        document says ``false`` where the upstream gave a digest, as the JSON API does for
        a file without metadata.
        """
        drop = set(filenames)
        if not drop:
            return
        self.without_metadata |= drop
        for version, files in self.releases.items():
            self.releases[version] = [
                dataclasses.replace(f, metadata_sha256=None) if f.filename in drop else f for f in files
            ]

    def document(self) -> dict[str, Any]:
        """The JSON API document to store: the upstream's, with only the kept releases and files."""
        kept = {f.filename for f in self.files()}
        upstream = self.raw.get("releases") or {}
        doc = dict(self.raw)
        doc["releases"] = {
            v: [self._entry(e) for e in upstream.get(v, []) if e.get("filename") in kept] for v in self.releases
        }
        doc["urls"] = [self._entry(e) for e in self.raw.get("urls") or [] if e.get("filename") in kept]
        return doc

    def _entry(self, entry: Mapping[str, Any]) -> Mapping[str, Any]:
        """A file's stored entry: the upstream's, without metadata digests the mirror cannot back."""
        if entry.get("filename") not in self.without_metadata:
            return entry
        return {**entry, **{k: False for k in METADATA_KEYS if k in entry}, "core-metadata": False}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], serial: int | None = None, base: str = "") -> Project:
        """Build a project from a JSON API document.

        ``serial`` overrides ``last_serial`` from the body (e.g. from the
        ``X-PyPI-Last-Serial`` header). ``base`` is the document's own URL, against which
        relative file URLs are resolved (some proxies and mirrors answer with those).
        """
        info = doc.get("info") or {}
        releases = {
            str(version): [ReleaseFile.from_json(str(version), e, base) for e in entries or []]
            for version, entries in (doc.get("releases") or {}).items()
        }
        if serial is None:
            serial = int(doc.get("last_serial") or 0)
        return cls(name=str(info.get("name") or ""), serial=serial, releases=releases, info=info, raw=doc)


#: A valid project name (PEP 508): what the public index accepts, and all a path may hold.
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


def check_project_name(name: str) -> str:
    """Return the canonical form of ``name``; raise :class:`UnsafePath` if it is not a valid name.

    Names become directory names (``web/simple/<name>/``), so a name from the upstream
    that is not a valid project name is refused before it reaches a path.
    """
    if not _VALID_NAME.match(name):
        raise UnsafePath(f"{name!r} is not a valid project name")
    return canonicalize_name(name)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        from dateutil.parser import isoparse  # here: a run with nothing to do never needs it

        parsed = isoparse(str(value))
    except (ValueError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed
