"""``.metadata`` sidecars the upstream advertises but cannot serve.

A PEP 658 ``.metadata`` file is optional: pip and uv fall back to the release file when a
page offers none. So a sidecar that answers 404 or 410, or whose digest stays wrong, never
fails its project: the release file is mirrored, its page entries carry no metadata
attribute, and the sidecar is recorded here, in ``<directory>/missing-metadata``.

Once a day a ``mirror`` run, and every ``verify``, asks the upstream again for the recorded
sidecars only (one small request each); a project whose sidecars come through is synced
again so that its pages offer them. The project's next change upstream retries them as
well. Not more often: a mirror run from cron every few minutes should cost one request when
nothing changed, and a whole-index mirror behind such a proxy can record thousands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from . import layout
from .errors import DamagedState, UpstreamError
from .models import ReleaseFile
from .progress import plural
from .statefiles import Sidecar, StateFiles
from .storage import Storage
from .upstream import Upstream

logger = logging.getLogger(__name__)

#: How long after the last try a mirror run asks for the recorded sidecars again.
RETRY_SECONDS = 24 * 3600


def sidecars_of(files: Iterable[ReleaseFile]) -> list[Sidecar]:
    """The sidecar records of these files (which must advertise core metadata)."""
    return [
        (layout.metadata_path(layout.file_path(f)), layout.metadata_path(f.url), str(f.metadata_sha256)) for f in files
    ]


class MissingSidecars:
    """canonical project name -> the sidecars of its mirrored files that the upstream did not serve."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.files = StateFiles(storage)
        self._loaded: dict[str, list[Sidecar]] | None = None
        self._changed = False
        #: When the recorded sidecars were last asked for (epoch seconds).
        self._checked = 0.0

    @property
    def projects(self) -> dict[str, list[Sidecar]]:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> dict[str, list[Sidecar]]:
        """The recorded sidecars. A damaged file is removed with one warning: the pages offer
        only sidecars the mirror holds, so nothing promised is lost; what it recorded is asked
        for again when its project changes, or by ``mirror --force-check``."""
        try:
            self._checked, projects = self.files.missing_sidecars()
        except DamagedState as damage:
            logger.warning("%s", damage.named(
                "removed it: the pages offer only the .metadata files the mirror holds; "
                "`bandersnatch mirror --force-check` asks for the others again"
            ))
            self.files.remove_missing_sidecars()
            return {}
        return projects

    def set(self, canonical: str, sidecars: Iterable[Sidecar]) -> None:
        """Record the sidecars ``canonical`` lacks after a sync (none: forget the project)."""
        entries = [tuple(s) for s in sidecars]
        if entries:
            if self.projects.get(canonical) != entries:
                self.projects[canonical] = entries
                self._changed = True
                self._checked = self._checked or time.time()  # just tried: the next try in a day
        elif canonical in self.projects:
            del self.projects[canonical]
            self._changed = True

    def forget(self, canonical: str) -> None:
        self.set(canonical, [])

    def save(self) -> None:
        if not self._changed:
            return
        self.files.write_missing_sidecars(self._checked, self.projects)
        self._changed = False

    def retry(self, upstream: Upstream, workers: int, always: bool = False) -> set[str]:
        """Ask the upstream again for every recorded sidecar; return the projects now complete.

        Only when the last try is :data:`RETRY_SECONDS` old, unless ``always``. A sidecar
        that comes through is stored (verified against its digest); its project must be
        synced again for its pages to offer it.
        """
        pending = [(c, s) for c, sidecars in self.projects.items() for s in sidecars]
        if not pending or (not always and time.time() - self._checked < RETRY_SECONDS):
            return set()
        self._checked, self._changed = time.time(), True

        def fetch(item: tuple[str, Sidecar]) -> bool:
            _, (path, url, sha256) = item
            if self.storage.sha256(path) == sha256:
                return True
            try:
                upstream.download(url, lambda: self.storage.writer(path), sha256)
            except UpstreamError as exc:
                logger.debug("Still missing: %s (%s)", url, exc)
                return False
            return True

        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="sidecar") as pool:
            results = list(pool.map(fetch, pending))
        incomplete = {c for (c, _), ok in zip(pending, results) if not ok}
        complete = set(self.projects) - incomplete
        logger.info(
            "Asked again for %s: %s now %s all theirs",
            plural(len(pending), "missing .metadata file"), plural(len(complete), "project"),
            "has" if len(complete) == 1 else "have",
        )
        return complete
