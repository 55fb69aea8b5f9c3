"""Publishing the root: the root index, rendered from the project records, and the diff file."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable

from . import layout, pages
from .config import MirrorConfig
from .errors import LocalIOError
from .state import MirrorState
from .storage import Storage


def write_root(config: MirrorConfig, storage: Storage, state: MirrorState, serial: int) -> list[str]:
    """Render the root index from the project records (never from a directory scan), save the
    records, and return the paths that changed."""
    written: list[str] = []
    write_html = config.write_html and (state.names_changed or not storage.exists(layout.ROOT_HTML[0]))
    records = state.projects.rows() if write_html or config.write_json else []
    if write_html:
        html = pages.root_html(records).encode()
        written += [path for path in layout.ROOT_HTML if storage.write_if_changed(path, html)]
    if config.write_json:
        page = pages.root_json(records, serial).encode()
        if storage.write_if_changed(layout.ROOT_JSON, page):
            written.append(layout.ROOT_JSON)
    state.save_projects()
    return written


def write_diff_file(config: MirrorConfig, storage: Storage, written: Iterable[str]) -> None:
    """``diff-file``, after a ``mirror`` or ``sync`` run (not the syncs of ``verify
    --json-update``): the paths the run wrote, one per line, replacing the last run's list
    (a run that wrote nothing leaves it empty), as the reference tool does; offline-copy
    scripts feed it to ``rsync --files-from``. ``diff-append-epoch``: a new file per run,
    ``<diff-file>-<unix time>``. Written to a temporary name and renamed into place, so a
    reader never sees half a list."""
    if not config.diff_file:
        return
    path = config.diff_file
    if config.diff_append_epoch:
        path = f"{path}-{int(time.time())}"
    lines = "".join(f"{storage.display(p)}\n" for p in sorted(set(written)))
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as fh:
            fh.write(lines)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise LocalIOError.of(path, exc) from exc
